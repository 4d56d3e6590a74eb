"""`smartmeter sim mbus` as a user runs it: the printed identities are the devices a master
finds on the bus or a receiver hears on the radio, Ctrl-C stops them cleanly, and a bad
command line is one line on stderr with exit code 2."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from meterproc import free_port
from smartmeter.mbus.application import parse_telegram
from smartmeter.mbus.link import LongFrame, MbusChecksumError, decode_frame
from smartmeter.mbus.security import decrypt_frame, decrypt_mode5
from smartmeter.mbus.simulated import SimulatedSubmeter
from smartmeter.mbus.wireless import decode_wmbus

KEY = "000102030405060708090A0B0C0D0E0F"
IDENTITY = re.compile(r"^(gas|water|heat)\s+ID (\d{8})\s+manufacturer SIM \(simulated\)\s+version (\d+)\s+"
                      r"medium 0x([0-9A-F]{2}) .*?(?:primary address (\d+))?$")


def start(*args: str) -> tuple[subprocess.Popen, list[str]]:
    process = subprocess.Popen([sys.executable, "-m", "smartmeter", "sim", "mbus", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("Ctrl-C stops"):
            return process, lines
    process.wait()
    raise AssertionError("no banner: " + "\n".join(lines) + process.stderr.read())


def identities(lines: list[str]) -> list[re.Match]:
    return [m for m in (IDENTITY.match(line) for line in lines) if m]


def stop(process: subprocess.Popen) -> tuple[str, str]:
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in out + err
    return out, err


def exchange(sock: socket.socket, frame: bytes) -> bytes:
    sock.sendall(frame)
    first = sock.recv(1)
    if first == b"\xE5":
        return first
    head = first + recv_exactly(sock, 3)
    return head + recv_exactly(sock, head[1] + 2)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "the bus closed the connection"
        data += chunk
    return data


def short(c: int, a: int) -> bytes:
    return bytes((0x10, c, a, (c + a) & 0xFF, 0x16))


def test_wired_bus_holds_the_printed_devices():
    before = time.time()
    process, lines = start("gas", "water", "heat", "--wired", "--listen", "127.0.0.1:0", "--seed", "5",
                           "--address", "1", "--address", "2", "--speed", "60")
    try:
        port = int(re.search(r"on 127\.0\.0\.1:(\d+) ", lines[0]).group(1))
        found = identities(lines)
        assert [m.group(1) for m in found] == ["gas", "water", "heat"]
        assert [m.group(5) for m in found] == ["1", "2", "0"]
        # each device's install command names its channel and the identity printed above it
        commands = [line.split()[5:] for line in lines if " mbus install " in line]
        assert [c[:3] for c in commands] == [["install", "1", "--id"], ["install", "2", "--id"], ["install", "3", "--id"]]
        for command, match in zip(commands, found):
            options = dict(zip(command[2::2], command[3::2]))
            assert options["--id"] == match.group(2) and options["--manufacturer"] == "SIM"
            assert options["--medium"] == match.group(1)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for address, match in ((1, found[0]), (2, found[1])):
                assert exchange(sock, short(0x40, address)) == b"\xE5"
                frame = decode_frame(exchange(sock, short(0x7B, address)))
                telegram = parse_telegram(frame.ci, frame.data)
                assert telegram.header.identification == int(match.group(2))
                assert telegram.header.manufacturer == "SIM" and telegram.header.medium == int(match.group(4), 16)
                # the register is the seed's at a simulated time between the start and now (60x)
                volume = next(r for r in telegram.records if r.vif == 0x13).raw_value
                scenario = SimulatedSubmeter(match.group(1), seed=5)
                latest = time.time() + (time.time() - before) * 60
                assert scenario.reading(before).volume_l <= volume <= scenario.reading(latest).volume_l
            # the heat meter has primary address 0: select it by the printed identification
            heat = found[2]
            selection = bytes.fromhex(heat.group(2))[::-1] + b"\xFF\xFF" + bytes((0xFF, 0x04))
            assert exchange(sock, LongFrame(0x53, 0xFD, 0x52, selection).to_bytes()) == b"\xE5"
            frame = decode_frame(exchange(sock, short(0x5B, 0xFD)))
            assert parse_telegram(frame.ci, frame.data).header.identification == int(heat.group(2))
            # give it a primary address as an installing master does
            assert exchange(sock, LongFrame(0x73, 0xFD, 0x51, bytes((0x01, 0x7A, 9))).to_bytes()) == b"\xE5"
            assert decode_frame(exchange(sock, short(0x5B, 9))).a == 9
    finally:
        out, _ = stop(process)
    assert "heat" in out and "primary address now 9" in out and out.rstrip().endswith("simulated submeters stopped")


def test_wireless_senders_are_heard_with_the_key():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    port = receiver.getsockname()[1]
    process, lines = start("gas", "water", "--wireless", "--to", f"127.0.0.1:{port}", "--mode", "5", "--key", KEY,
                           "--interval", "0.2", "--alarm", "water:leak", "--seed", "2")
    try:
        printed = {int(m.group(2)): m.group(1) for m in identities(lines)}
        assert len(printed) == 2
        heard: dict[int, list[int]] = {}
        while len(heard) < 2 or min(len(v) for v in heard.values()) < 3:
            frame = decode_wmbus(receiver.recv(512), crc="A")  # one radio frame a datagram
            ident = int(frame.address.identification)
            assert printed[ident] == {3: "gas", 7: "water"}[frame.address.device_type]
            ci, data = decrypt_frame(frame, bytes.fromhex(KEY)).user_data
            telegram = parse_telegram(ci, data)
            assert any(r.vif == 0x13 for r in telegram.records)
            assert telegram.header.status == (0x03 if printed[ident] == "water" else 0)
            heard.setdefault(ident, []).append(frame.tpl.access_number)
        for numbers in heard.values():
            assert all((b - a) % 256 == 1 for a, b in zip(numbers, numbers[1:]))
    finally:
        stop(process)
        receiver.close()


def test_duration_stops_by_itself():
    result = subprocess.run([sys.executable, "-m", "smartmeter", "sim", "mbus", "water", "--wired", "--listen",
                             "127.0.0.1:0", "--duration", "0.5"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == ""
    assert len(identities(result.stdout.splitlines())) == 1


def busy_port():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


@pytest.mark.parametrize("args,says", [
    (["gas"], "--wired or --wireless"),
    (["gas", "--wired", "--wireless"], "--wired or --wireless"),
    (["gas", "--wireless", "--key", KEY], "--to"),
    (["gas", "--wireless", "--to", "127.0.0.1:9"], "--key"),
    (["gas", "--wireless", "--to", "127.0.0.1:9", "--key", "00ff"], "32 hex digits"),
    (["gas", "--wireless", "--to", "127.0.0.1:9", "--key", "zz" * 16], "32 hex digits"),
    (["gas", "--wireless", "--to", "nowhere", "--key", KEY], "HOST:PORT"),
    (["gas", "--wired", "--listen", "127.0.0.1:99999"], "HOST:PORT"),
    (["gas", "--wired", "--to", "127.0.0.1:9"], "--wireless"),
    (["gas", "--wireless", "--to", "127.0.0.1:9", "--key", KEY, "--master-key", KEY], "--wired"),
    (["gas", "--wired", "--master-key", "0011"], "32 hex digits"),
    (["gas", "--wired", "--key-style", "dsmr5"], "dsmr5"),
    (["gas", "--wired", "--alarm", "gas:leak"], "leak"),
    (["gas", "--wired", "--alarm", "water:leak"], "no device"),
    (["gas", "--wired", "--fault", "gas:fire"], "KIND:NAME"),
    (["gas", "gas", "--wired", "--id", "12345678", "--id", "12345678"], "same identification"),
    (["gas", "--wired", "--address", "1", "--address", "2"], "--address"),
    (["oil", "--wired"], "oil"),
    (["gas", "--wired", "--address", "251"], "251"),
    (["gas", "--wireless", "--to", "127.0.0.1:9", "--key", KEY, "--mode", "6"], "6"),
])
def test_bad_command_lines_are_one_line(args, says):
    result = subprocess.run([sys.executable, "-m", "smartmeter", "sim", "mbus", *args, "--duration", "5"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], result.stderr
    assert result.stdout == ""


def test_a_taken_port_is_one_line():
    holder = busy_port()
    try:
        result = subprocess.run([sys.executable, "-m", "smartmeter", "sim", "mbus", "gas", "--wired", "--listen",
                                 f"127.0.0.1:{holder.getsockname()[1]}", "--duration", "5"],
                                capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot listen" in lines[0] and "Traceback" not in result.stderr


def test_listen_on_a_chosen_port():
    port = free_port()
    process, lines = start("heat", "--wired", "--listen", f"127.0.0.1:{port}")
    try:
        assert f"127.0.0.1:{port}" in lines[0]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert exchange(sock, short(0x40, 0xFE)) == b"\xE5"  # test address: every slave
    finally:
        stop(process)


def test_wired_devices_take_a_transferred_key():
    """DSMR 4 vector (Open Smart Grid Platform): master FDD0..., new key FAA0FEA0..., wrapped 7B33...."""
    master = "FDD0" * 8
    new_key = bytes.fromhex("FAA0FEA0FEA0FEA0FEA0FEA0FEA0FEA0")
    wrapped = bytes.fromhex("7B3383E2C3EC9360D54A05D05517738B")
    process, lines = start("water", "--wired", "--listen", "127.0.0.1:0", "--address", "4", "--master-key", master)
    try:
        port = int(re.search(r"on 127\.0\.0\.1:(\d+)", lines[0]).group(1))
        assert "transfer_key" in lines[0]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            frame = decode_frame(exchange(sock, short(0x7B, 4)))
            assert frame.data[10:12] == b"\x00\x00"  # configuration: not encrypted yet
            command = LongFrame(0x53, 4, 0x51, bytes((0x0D, 0xFD, 0x19, 16)) + wrapped).to_bytes()
            assert exchange(sock, command) == b"\xE5"
            frame = decode_frame(exchange(sock, short(0x7B, 4)))
            header = frame.data[:12]
            assert header[11] == 0x05  # configuration field: mode 5
            address = header[4:6] + header[0:4] + header[6:8]  # M || ID || version || medium
            blocks = (header[10] >> 4) & 0x0F
            plain = decrypt_mode5(new_key, address, header[8], frame.data[12:12 + 16 * blocks])
            telegram = parse_telegram(0x72, header + plain)
            assert telegram.header.medium == 0x07 and any(r.vif == 0x13 for r in telegram.records)
    finally:
        out, _ = stop(process)
    assert "took a new key" in out


def test_alarms_and_faults_typed_while_running():
    process = subprocess.Popen([sys.executable, "-m", "smartmeter", "sim", "mbus", "gas", "water", "--wired",
                                "--listen", "127.0.0.1:0", "--address", "1", "--address", "2"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("Ctrl-C stops"):
            break
    port = int(re.search(r"on 127\.0\.0\.1:(\d+)", lines[0]).group(1))

    def typed(text: str, answers: int = 1) -> list[str]:
        process.stdin.write(text + "\n")
        process.stdin.flush()
        return [process.stdout.readline().rstrip("\n") for _ in range(answers)]

    try:
        assert typed("alarm water:leak on") == [f"alarm leak on: water {identities(lines)[1].group(2)}"]
        assert typed("alarm gas:leak on")[0].startswith("error: a gas meter has no leak alarm")
        assert typed("fault gas:bad-checksum on")[0].startswith("fault bad-checksum on: gas")
        assert typed("make coffee")[0].startswith("error:")
        status = typed("status", 2)
        assert status[0].startswith("gas#1 ID") and "faults bad-checksum" in status[0]
        assert status[1].startswith("water#2 ID") and "status 0x03" in status[1] and "alarms leak" in status[1]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            frame = decode_frame(exchange(sock, short(0x7B, 2)))
            assert frame.data[9] == 0x03  # the status byte of the long header: abnormal situation
            with pytest.raises(MbusChecksumError):
                decode_frame(exchange(sock, short(0x7B, 1)))
        typed("fault gas:bad-checksum off")
        typed("alarm water:leak off")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert decode_frame(exchange(sock, short(0x5B, 2))).data[9] == 0x00
            assert decode_frame(exchange(sock, short(0x5B, 1))).data[9] == 0x00
    finally:
        stop(process)
