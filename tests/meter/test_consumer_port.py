"""The H1 consumer port (companion §2.2, §4.2, §10.5; catalog §1.2, §7 "CIP") on a meter whose clock
the test moves: the push action scheduler 0-4:15.0.4.255 runs the push setup 0-6:25.9.0.255, whose
data-notification goes out encrypted for the CIP client (suite 1, policy 0x48, its own key and
sending counter) in M-Bus frames; the port paces them at 2400 Bd and ignores what arrives.

The consumer key is set as a head-end sets it: key_transfer (method 2) of 0-0:43.0.103.255 by the
Management client, wrapped with the master key of its credentials; the test's consumer then
decrypts with that key (AES-GCM counter mode written out here, no tag: what a consumer device
does) and compares every pushed value with what the Data Readout client reads."""
from __future__ import annotations

import datetime as dt
import logging
import os
import select
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from meter_sessions import SUCCESS, Sessions
from meter_site import MeterSite
from smartmeter.cosem import axdr
from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis
from smartmeter.cosem.results import DataAccessResult
from smartmeter.dlms.apdu.notification import DataNotification
from smartmeter.dlms.security.keys import KeyId, KeyTransfer, encode_key_transfer
from smartmeter.hes.credentials import load_credentials
from smartmeter.mbus.consumer_port import ConsumerApdu, ConsumerPushReader, segment_frames
from smartmeter.meter.consumer_port import AirtimePacer, ConsumerPort, ConsumerPush, consumer_destination

BERLIN = ZoneInfo("Europe/Berlin")
START = dt.datetime(2026, 6, 9, 6, 0, tzinfo=BERLIN).timestamp()
CIP_SETUP = "0-6:25.9.0.255"
CIP_SCHEDULER = "0-4:15.0.4.255"
CIP_SECURITY = "0-0:43.0.103.255"
PUSH_SCRIPTS = Obis.parse("0-0:10.0.108.255").to_bytes()
CONSUMER_KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
ANY_DATE = bytes([0xFF] * 5)
MAX_COUNTER = 0xFFFFFFFF


class RecordingPort:
    """The H1 line as ConsumerPush sees it, recorded; `busy` as the test says."""

    def __init__(self) -> None:
        self.pushes: list[list[bytes]] = []
        self.line_busy = False
        self.counts: dict[str, int] = {}

    def busy(self) -> bool:
        return self.line_busy

    def submit(self, frames) -> bool:
        if self.line_busy:
            self.skip()
            return False
        self.pushes.append(list(frames))
        return True

    def skip(self) -> None:
        self.counts["pushes_skipped"] = self.counts.get("pushes_skipped", 0) + 1


def at_times(*seconds_of_day: int) -> Data:
    """Execution times of the scheduler (every day), as hh:mm:ss."""
    return Data.array([Data.structure([Data.octet_string(bytes([s // 3600, s // 60 % 60, s % 60, 0])),
                                       Data.octet_string(ANY_DATE)]) for s in seconds_of_day])


def consumer_open(frames: list[bytes], key: bytes) -> tuple[int, DataNotification]:
    """What a consumer device does with one push: reassemble, take system title, counter and
    ciphertext from general-glo-ciphering (DB 08 title, length, SC, IC), AES-GCM without a tag."""
    reader = ConsumerPushReader()
    reader.feed(b"".join(frames))
    (item,) = reader.take()
    assert isinstance(item, ConsumerApdu)
    apdu = item.apdu
    assert apdu[0] == 0xDB and apdu[1] == 8
    title = apdu[2:10]
    length, at = (apdu[10], 11) if apdu[10] < 0x80 else (int.from_bytes(apdu[11:11 + (apdu[10] & 0x7F)], "big"),
                                                          11 + (apdu[10] & 0x7F))
    security_control, counter = apdu[at], int.from_bytes(apdu[at + 1:at + 5], "big")
    assert security_control == 0x21  # suite 1, encrypted, not authenticated (policy 0x48)
    ciphertext = apdu[at + 5:at + length]
    decryptor = Cipher(algorithms.AES(key), modes.CTR(title + counter.to_bytes(4, "big") + b"\0\0\0\2")).decryptor()
    return counter, DataNotification.from_bytes(decryptor.update(ciphertext) + decryptor.finalize())


class Site(MeterSite):
    def __init__(self, data_dir, phases: int = 1) -> None:
        super().__init__(data_dir, START, phases=phases)
        self.session = Sessions(self.meter)
        self.port = RecordingPort()
        self.exhausted: list[str] = []
        self.meter.push.h1 = ConsumerPush(self.meter.server, self.port, on_exhausted=self.exhausted.append)

    def management(self):
        return self.session("management")

    def set_consumer_key(self, key: bytes) -> int:
        master = load_credentials(Path(self.data_dir) / "credentials" / "management.json").master_key
        transfer = encode_key_transfer([KeyTransfer.wrap(master, KeyId.GLOBAL_UNICAST_ENCRYPTION, key)])
        return self.management().action(64, CIP_SECURITY, 2, transfer)

    def read(self, class_id: int, ln: bytes, attribute: int) -> Data:
        result, value = self.session("data_readout").get(class_id, str(Obis.from_bytes(ln)), attribute)
        assert result == SUCCESS
        return value

    def push_now(self) -> None:
        assert self.meter.server.run_script(PUSH_SCRIPTS, 8) == DataAccessResult.SUCCESS


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    assert s.set_consumer_key(CONSUMER_KEY) == SUCCESS
    yield s
    s.meter.close()


def plain(value: Data) -> Data:
    return axdr.decode_all(axdr.encode(value))


def test_the_cip_security_setup_reads_suite_1_and_encrypted_only(site):
    management = site.management()
    assert management.get(64, CIP_SECURITY, 2) == (SUCCESS, Data.enum(0x48))
    assert management.get(64, CIP_SECURITY, 3) == (SUCCESS, Data.enum(1))


def test_the_scheduler_pushes_at_the_written_times_and_each_push_carries_what_the_registers_read(site):
    """Execution times written over DLMS (06:00:30, 06:01:00, 06:02:15): a push at each, none
    between; each decrypts with the consumer key to the push setup's objects as read by the
    Data Readout client at that meter time; the counters rise."""
    assert site.management().set(22, CIP_SCHEDULER, 4, at_times(6 * 3600 + 30, 6 * 3600 + 60, 6 * 3600 + 135)) \
        == SUCCESS
    entries = site.read(40, Obis.parse(CIP_SETUP).to_bytes(), 2).value
    counters = []
    for due in (START + 30, START + 60, START + 135):
        before = len(site.port.pushes)
        site.run_until(due - 1, step=1)
        assert len(site.port.pushes) == before  # nothing before its time
        site.run_until(due, step=1)
        assert len(site.port.pushes) == before + 1
        counter, notification = consumer_open(site.port.pushes[-1], CONSUMER_KEY)
        counters.append(counter)
        assert notification.date_time == site.meter.clock.cosem(due)  # the meter's time when it went
        body = notification.body.value
        assert len(body) == len(entries) == 12  # single phase: the four L2/L3 entries are not there
        for value, item in zip(body, entries):
            class_id, ln, attribute, _ = (f.value for f in item.value)
            if (class_id, attribute) == (8, 2):  # the clock: the instant the push stands for
                assert value == Data.octet_string(site.meter.clock.cosem(due))
                continue
            assert plain(value) == plain(site.read(class_id, ln, attribute)), Obis.from_bytes(ln)
    assert counters == sorted(counters) and len(set(counters)) == 3
    site.run(600, step=15)
    assert len(site.port.pushes) == 3


def test_poly_phase_pushes_sixteen_entries_with_l2_and_l3(tmp_path):
    s = Site(tmp_path, phases=3)
    try:
        assert s.set_consumer_key(CONSUMER_KEY) == SUCCESS
        s.push_now()
        _, notification = consumer_open(s.port.pushes[-1], CONSUMER_KEY)
        obis = [str(Obis.from_bytes(v.value[0].value)) for v in notification.body.value[2:]]
        assert len(notification.body.value) == 16
        assert "1-0:52.7.0.255" in obis and "1-0:71.7.0.255" in obis
    finally:
        s.meter.close()


def test_an_empty_execution_time_array_switches_the_push_off(site):
    assert site.management().set(22, CIP_SCHEDULER, 4, at_times(6 * 3600 + 30)) == SUCCESS
    site.run(60, step=5)
    assert len(site.port.pushes) == 1
    assert site.management().set(22, CIP_SCHEDULER, 4, Data.array([])) == SUCCESS
    site.run(2 * 86400, step=900)  # the same time on the next days: nothing
    assert len(site.port.pushes) == 1


def test_sixty_execution_times_are_taken_sixty_one_refused(site):
    assert site.management().set(22, CIP_SCHEDULER, 4, at_times(*range(7 * 3600, 7 * 3600 + 60))) == SUCCESS
    assert site.management().set(22, CIP_SCHEDULER, 4, at_times(*range(7 * 3600, 7 * 3600 + 61))) \
        == DataAccessResult.OTHER_REASON
    assert len(site.management().get(22, CIP_SCHEDULER, 4)[1].value) == 60


def test_twenty_push_entries_are_taken_twenty_one_refused(site):
    management = site.management()
    entry = Data.structure([Data.long_unsigned(3), Data.octet_string(Obis.parse("1-0:1.8.0.255").to_bytes()),
                            Data.integer(2), Data.long_unsigned(0)])
    assert management.set(40, CIP_SETUP, 2, Data.array([entry] * 20)) == SUCCESS
    assert management.set(40, CIP_SETUP, 2, Data.array([entry] * 21)) == DataAccessResult.OTHER_REASON
    assert len(management.get(40, CIP_SETUP, 2)[1].value) == 20
    site.push_now()
    _, notification = consumer_open(site.port.pushes[-1], CONSUMER_KEY)
    assert len(notification.body.value) == 20


@pytest.mark.parametrize("destination, reason", [
    (b"0-1:24.6.0.255:FF:00", "0-1:24.6.0.255 is not the consumer port 0-2:24.6.0.255"),
    (b"0-2:24.6.0.255:05:00", "broadcast address FF, not 05"),
    (b"0-2:24.6.0.255:FF:01", "starts at 00, not 01"),
])
def test_a_destination_that_is_not_the_consumer_port_sends_nothing_and_says_why_once(site, caplog, destination,
                                                                                     reason):
    """Such a destination is refused on SET; one stored before the meter checked it there (an older
    meter's settings) is checked again at push time: only the consumer port with the broadcast
    address and the first transport CI is sent to."""
    written = Data.structure([Data.enum(201), Data.octet_string(destination), Data.enum(0)])
    assert site.management().set(40, CIP_SETUP, 3, written) == DataAccessResult.OTHER_REASON
    setup = site.meter.directory.by_ln[Obis.parse(CIP_SETUP).to_bytes()][1]
    setup._put("send_destination_and_method", {"transport": 201, "destination": destination.decode(), "message": 0})
    with caplog.at_level(logging.WARNING, logger="smartmeter.meter.consumer_port"):
        site.push_now()
        site.push_now()
    assert site.port.pushes == []
    lines = [r.getMessage() for r in caplog.records if "is not sent" in r.getMessage()]
    assert len(lines) == 1 and reason in lines[0]


def test_a_destination_of_another_form_is_refused_on_set(site):
    for text in (b"192.0.2.1:4059", b"0-2:24.6.0.255"):
        written = Data.structure([Data.enum(201), Data.octet_string(text), Data.enum(0)])
        assert site.management().set(40, CIP_SETUP, 3, written) == DataAccessResult.OTHER_REASON
    destination = site.management().get(40, CIP_SETUP, 3)[1].value
    assert destination[1] == Data.octet_string(b"0-2:24.6.0.255:FF:00")


def test_the_destination_may_be_written_with_dots():
    """Catalog §7: the text says '.' separates the fields, the example has ':'; both are the consumer port."""
    assert consumer_destination("0-2:24.6.0.255.FF.00") == consumer_destination("0-2:24.6.0.255:FF:00") == 0xFF
    for text in ("0-2:24.6.0.255", "0-2:24.6.0.255:FF", "0-2:24.6.0.255:FF:00:00", "0-2:24.6.0.256:FF:00", ""):
        with pytest.raises(ValueError):
            consumer_destination(text)


def test_a_counter_at_its_maximum_stops_the_push_raises_the_alarm_once_and_never_wraps(site, caplog):
    """The CIP client's sending counter one below the maximum: one more push goes, with
    0xFFFFFFFF; then the push stops (reported once, the stored counter stays at its end) until a
    new consumer key resets the counter, and the pushes go on from 1."""
    previous_counters = site.session._counters
    site.meter.store.set_counter("fc.tx.cip", MAX_COUNTER)  # every counter up to FFFFFFFE used
    site.restart()  # the counter as a meter finds it at its start
    site.session = Sessions(site.meter)
    site.session._counters = previous_counters  # the clients go on above the counters they used
    site.meter.push.h1 = ConsumerPush(site.meter.server, site.port, on_exhausted=site.exhausted.append)
    site.push_now()
    counter, _ = consumer_open(site.port.pushes[-1], CONSUMER_KEY)
    assert counter == MAX_COUNTER
    with caplog.at_level(logging.ERROR, logger="smartmeter.meter.consumer_port"):
        for _ in range(3):
            site.push_now()
    assert len(site.port.pushes) == 1
    assert site.exhausted == ["cip"]
    assert len([r for r in caplog.records if "maximum" in r.getMessage()]) == 1
    assert site.meter.store.counter("fc.tx.cip") == MAX_COUNTER + 1  # covers FFFFFFFF, nothing beyond
    new_key = bytes(range(100, 116))
    assert site.set_consumer_key(new_key) == SUCCESS
    site.push_now()
    counter, notification = consumer_open(site.port.pushes[-1], new_key)
    assert counter == 1 and len(notification.body.value) == 12


def test_a_push_while_the_line_is_busy_is_skipped_and_spends_no_counter(site):
    site.push_now()
    first, _ = consumer_open(site.port.pushes[-1], CONSUMER_KEY)
    site.port.line_busy = True
    site.push_now()
    site.push_now()
    site.port.line_busy = False
    site.push_now()
    second, _ = consumer_open(site.port.pushes[-1], CONSUMER_KEY)
    assert len(site.port.pushes) == 2
    assert site.port.counts["pushes_skipped"] == 2
    assert second == first + 1


def test_without_h1_the_push_says_once_that_h1_is_off(site, caplog):
    site.meter.push.h1 = None
    with caplog.at_level(logging.INFO, logger="smartmeter.meter.push"):
        for _ in range(3):
            site.push_now()
    assert len([r for r in caplog.records if "H1 consumer port is off" in r.getMessage()]) == 1
    assert site.port.pushes == []


# --- the pacing, sans-io -------------------------------------------------------------------------

def test_frames_go_one_airtime_and_a_gap_apart_and_a_push_on_a_busy_line_is_skipped():
    """11 bits per octet at 2400 Bd, 33 bit times between frames (IEC 60870-5-1 FT 1.2)."""
    pacer = AirtimePacer()
    frames = segment_frames(bytes(300))  # 2 frames: 256 and 66 octets on the line
    assert [len(f) for f in frames] == [256, 66]
    assert pacer.offer(frames, 100.0)
    assert pacer.due(100.0) == frames[0]
    second_at = 100.0 + 256 * 11 / 2400 + 33 / 2400
    assert pacer.due(second_at - 1e-6) is None
    assert abs(pacer.wait(100.0) - (second_at - 100.0)) < 1e-9
    assert not pacer.offer(frames, 101.0)  # still on the line: skipped, not queued
    assert pacer.due(second_at) == frames[1]
    free_at = second_at + 66 * 11 / 2400 + 33 / 2400
    assert pacer.busy(free_at - 1e-6) and not pacer.offer(frames, free_at - 1e-6)
    assert pacer.offer(frames, free_at)


def test_a_late_writer_keeps_the_spacing():
    pacer = AirtimePacer()
    frames = segment_frames(bytes(600))
    pacer.offer(frames, 0.0)
    assert pacer.due(5.0) == frames[0]  # handed out late
    assert pacer.due(5.0 + 256 * 11 / 2400) is None  # the gap still counts from then
    assert pacer.due(5.0 + (256 * 11 + 33) / 2400) == frames[1]


# --- the line: a real pseudo-terminal ------------------------------------------------------------

def read_until(fd: int, count: int) -> bytes:
    data = b""
    while len(data) < count:
        ready, _, _ = select.select([fd], [], [], 60)
        assert ready, f"{len(data)} of {count} octets came"
        data += os.read(fd, count - len(data))
    return data


def test_the_pty_line_carries_the_frames_ignores_what_arrives_and_skips_while_busy():
    port = ConsumerPort("pty")
    path = port.open()
    consumer = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        frames = segment_frames(bytes(range(256)) * 2)  # 512 octets: 3 frames, about 2.4 s on the line
        assert port.submit(frames)
        assert not port.submit(frames)  # the first is on the line for seconds: skipped
        os.write(consumer, b"\x10\x5b\xfe\x59\x16")  # a consumer that talks: H1 is push only
        received = read_until(consumer, sum(len(f) for f in frames))
        assert received == b"".join(frames)
        reader = ConsumerPushReader()
        reader.feed(received)
        assert [i.apdu for i in reader.take()] == [bytes(range(256)) * 2]
        hang_guard = time.monotonic() + 60  # the writer counts a frame after the consumer may have read it
        while (port.stats()["octets_received_ignored"] < 5 or port.stats()["frames_sent"] < 3) \
                and time.monotonic() < hang_guard:
            time.sleep(0.05)
        stats = port.stats()
        assert stats["pushes_offered"] == 2 and stats["pushes_skipped"] == 1
        assert stats["frames_sent"] == 3 and stats["octets_sent"] == len(received)
        assert stats["octets_received_ignored"] == 5
    finally:
        os.close(consumer)
        port.close()


def test_a_serial_device_is_opened_at_2400_bd_8e1_and_carries_the_frames():
    """A device path goes through pyserial: here the slave side of a pty this test opened (as an
    M-Bus level converter's tty), whose line settings the test reads back."""
    import termios
    import tty

    master, slave = os.openpty()
    tty.setraw(master)
    path = os.ttyname(slave)
    port = ConsumerPort(path)
    try:
        assert port.open() == path
        iflag, oflag, cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(slave)
        assert (ispeed, ospeed) == (termios.B2400, termios.B2400)
        assert cflag & termios.CSIZE == termios.CS8
        assert not cflag & termios.CSTOPB  # one stop bit
        # a pty keeps no parity setting (Linux drops PARENB on it): even parity as pyserial was told
        serial_port = port.line.port
        assert (serial_port.baudrate, serial_port.bytesize, serial_port.parity, serial_port.stopbits) == (2400, 8, "E", 1)
        frames = segment_frames(bytes(range(250)))
        assert port.submit(frames)
        assert read_until(master, sum(len(f) for f in frames)) == b"".join(frames)
    finally:
        port.close()
        os.close(slave)
        os.close(master)
