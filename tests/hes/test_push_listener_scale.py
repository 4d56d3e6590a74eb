"""1,000 simulated meters, each with its own keys and system title, pushing into one listener
process (`smartmeter hes listen`) over UDP and TCP on loopback: every push stored exactly once
with all its values, the UDP retries and pushes sent again recognised as retries, nothing stored twice."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

from smartmeter.cosem import axdr
from smartmeter.cosem.data import CosemDateTime, Data
from smartmeter.dlms.apdu.ciphered import GeneralGloCiphering
from smartmeter.dlms.apdu.notification import DataNotification
from smartmeter.dlms.security.suites import SecurityControl
from smartmeter.meter.push import gbt_blocks
from smartmeter.transport.wrapper import WrapperFrame

METERS = 1000
BATCH = 100  # meters whose pushes go out before the test waits for the listener to catch up
START = 1773144000.0
INTERVAL = "0-1:25.9.0.255"
OBJECTS = {INTERVAL: [[8, "0-0:1.0.0.255", 2, 0], [3, "1-0:1.8.0.255", 2, 0], [3, "1-0:2.8.0.255", 2, 0],
                      [1, "0-0:96.1.0.255", 2, 0]]}
PUSHES = 3  # per meter: two over UDP (each sent twice: a retry), one over TCP


class SimulatedMeter:
    def __init__(self, number: int) -> None:
        self.number = number
        self.system_title = b"SIM" + number.to_bytes(5, "big")
        self.ek, self.ak = os.urandom(16), os.urandom(16)
        self.counter = 1000 * number  # any start: the listener has never seen this meter
        self.serial = f"1SIM{number:010d}"

    def credentials(self) -> dict:
        return {"client_sap": 2, "server_sap": 1, "authentication": 5, "security_suite": 1, "security_policy": 0x6C,
                "client_system_title": "4845530000000002", "server_system_title": self.system_title.hex().upper(),
                "ek": self.ek.hex(), "ak": self.ak.hex()}

    def values(self, k: int) -> tuple[float, int, int]:
        """Push k's time, +A and -A: different for every meter and push."""
        return START + 900 * k, 1_000_000 + self.number * 100 + k, self.number + k

    def push(self, k: int, max_pdu: int = 1224) -> list[bytes]:
        t, plus, minus = self.values(k)
        stamp = axdr.encode_date_time(CosemDateTime.from_datetime(dt.datetime.fromtimestamp(t, dt.timezone.utc)))
        body = Data.structure([Data.octet_string(stamp), Data.double_long_unsigned(plus),
                               Data.double_long_unsigned(minus), Data.octet_string(self.serial.encode())])
        self.counter += 1
        apdu = GeneralGloCiphering.protect(SecurityControl(1, True, True), self.ek, self.ak, self.system_title,
                                           self.counter, DataNotification(k, stamp, body).to_bytes()).to_bytes()
        return [WrapperFrame(1, 2, part).to_bytes() for part in gbt_blocks(apdu, max_pdu)]


def start_listener(tmp_path, keys_dir, db):
    objects = tmp_path / "objects.json"
    objects.write_text(json.dumps(OBJECTS))
    process = subprocess.Popen(
        [sys.executable, "-m", "smartmeter", "hes", "listen", "--udp", "0", "--tcp", "0", "--host", "127.0.0.1",
         "--keys", str(keys_dir), "--db", str(db), "--objects", str(objects)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    found = re.search(r"UDP 127\.0\.0\.1:(\d+), TCP 127\.0\.0\.1:(\d+); keys of (\d+) meter", line)
    assert found, line
    return process, int(found[1]), int(found[2]), int(found[3])


async def wait_for_pushes(db, expected: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    count = -1
    while time.monotonic() < deadline:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            count = connection.execute("SELECT count(*) FROM push").fetchone()[0]
        if count >= expected:
            return count
        await asyncio.sleep(0.02)
    return count


async def send_tcp(port: int, messages: list[bytes]) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(messages))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def test_a_thousand_meters_push_over_udp_and_tcp_into_one_listener(tmp_path):
    meters = [SimulatedMeter(n) for n in range(1, METERS + 1)]
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    for m in meters:
        (keys_dir / f"{m.system_title.hex().upper()}.json").write_text(json.dumps(m.credentials()))
    db = tmp_path / "pushes.sqlite"
    process, udp_port, tcp_port, known = start_listener(tmp_path, keys_dir, db)
    assert known == METERS
    first_pushes = {}

    async def scenario():
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=("127.0.0.1", udp_port))
        sent = 0
        for k in (1, 2):  # UDP: every attempt sent (number_of_retries 1), a tenth in GBT blocks
            for start in range(0, METERS, BATCH):
                for m in meters[start:start + BATCH]:
                    datagrams = m.push(k, 100 if m.number % 10 == 0 else 1224)
                    if k == 1:
                        first_pushes[m.number] = datagrams
                    for _ in range(2):
                        for datagram in datagrams:
                            udp.sendto(datagram)
                sent += BATCH
                assert await wait_for_pushes(db, sent) == sent
        for start in range(0, METERS, BATCH):  # TCP: one connection per push, half of them in GBT blocks
            await asyncio.gather(*(send_tcp(tcp_port, m.push(3, 100 if m.number % 2 else 1224))
                                   for m in meters[start:start + BATCH]))
            sent += BATCH
            assert await wait_for_pushes(db, sent) == sent
        for start in range(0, METERS, BATCH):  # every meter's first push again: the same message, a retry
            for m in meters[start:start + BATCH]:
                for datagram in first_pushes[m.number]:
                    udp.sendto(datagram)
            await asyncio.sleep(0.05)
        udp.close()

    try:
        asyncio.run(scenario())
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    counts = dict((name, int(n)) for name, n in re.findall(r"(\w+) (\d+)", out.split("stopped:")[1]))
    assert counts["stored"] == METERS * PUSHES
    # the second attempt of each UDP push, and the first push sent again (the listener remembers
    # a meter's latest messages: the very same bytes are a retry, refused as such)
    assert counts["retry"] == METERS * 3
    assert set(counts) <= {"stored", "retry", "gbt_block"}

    connection = sqlite3.connect(db)
    per_meter = dict(connection.execute("SELECT meter, count(*) FROM push GROUP BY meter"))
    assert per_meter == {m.system_title.hex().upper(): PUSHES for m in meters}
    stored = {(meter, obis, captured, value) for meter, obis, captured, value in connection.execute(
        "SELECT m.system_title, s.obis, r.time, r.raw FROM reading r JOIN series s ON s.id = r.series_id "
        "JOIN meter m ON m.id = s.meter_id WHERE s.obis IN ('1-0:1.8.0.255', '1-0:2.8.0.255')")}
    expected = set()
    for m in meters:
        for k in range(1, PUSHES + 1):
            t, plus, minus = m.values(k)
            captured = dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            title = m.system_title.hex().upper()
            expected |= {(title, "1-0:1.8.0.255", captured, plus), (title, "1-0:2.8.0.255", captured, minus)}
    assert stored == expected
    # every value: the integers in reading, the rest (the clock) in reading_data
    assert connection.execute("SELECT (SELECT count(*) FROM reading) + (SELECT count(*) FROM reading_data)"
                              ).fetchone()[0] == METERS * PUSHES * len(OBJECTS[INTERVAL])
    assert connection.execute("SELECT count(*) FROM raw_push").fetchone()[0] == METERS * PUSHES
