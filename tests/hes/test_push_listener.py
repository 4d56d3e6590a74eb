"""The head-end's push listener against pushes of an in-process meter (its Data Readout client's
keys, its system title and sending counter, `DlmsServer.protected_notification`): stored once,
replays, forgeries, strangers and broken messages refused and counted with nothing stored,
general-block-transfer reassembly, a restart that keeps the counters, registration, alarms and
their acknowledgement on the meter, and `smartmeter hes show` reading it all back."""
from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import os
import sqlite3

import pytest
from click.testing import CliRunner
from interval_pushes import START, meter  # noqa: F401 (meter: the fixture)

from smartmeter.cli.main import main
from smartmeter.cosem import axdr
from smartmeter.cli.format import to_json
from smartmeter.cosem.data import CosemDateTime, Data, DataType
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu.ciphered import GeneralGloCiphering
from smartmeter.dlms.apdu.gbt import GeneralBlockTransfer
from smartmeter.dlms.apdu.notification import DataNotification
from smartmeter.dlms.security.suites import SecurityControl
from smartmeter.hes.push_listener import (
    AlarmAcknowledger, Keyring, Limits, ObjectLists, PushReceiver, model_object_lists, push_key_id, serve_tcp,
    serve_udp,
)
from smartmeter.hes.push_store import PushStore, format_time
from smartmeter.meter.push import METER_CONTEXT, gbt_blocks
from smartmeter.transport.aio import serve_wrapper_tcp
from smartmeter.transport.wrapper import WrapperFrame
from smartmeter.transport.wrapper_send import parse_destination, send_tcp, send_udp, wrapper_messages

SOURCE_WPORT, DATA_READOUT_WPORT = 1, 2

INTERVAL = "0-1:25.9.0.255"
INSTALLATION = "0-7:25.9.0.255"
ALARM = "0-4:25.9.0.255"
CLOCK = "0-0:1.0.0.255"
DESCRIPTORS = ("0-0:97.98.20.255", "0-0:97.98.21.255", "0-0:97.98.22.255")
# The lists the head-end is told (the listener's --objects): each names its own setup first.
LISTS = {
    INTERVAL: [(40, INTERVAL, 1, 0), (8, CLOCK, 2, 0), (3, "1-0:1.8.0.255", 2, 0), (3, "1-0:2.8.0.255", 2, 0),
               (3, "1-0:3.8.0.255", 0, 0)],
    INSTALLATION: [(40, INSTALLATION, 1, 0), (8, CLOCK, 2, 0), (1, "0-0:96.1.0.255", 2, 0), (42, "0-0:25.1.0.255", 3, 0)],
    ALARM: [(40, ALARM, 1, 0), (8, CLOCK, 2, 0)] + [(1, d, 2, 0) for d in DESCRIPTORS],
}


def ln(obis: str) -> Data:
    return Data.octet_string(Obis.parse(obis).to_bytes())


def date_time(t: float) -> bytes:
    return axdr.encode_date_time(CosemDateTime.from_datetime(dt.datetime.fromtimestamp(t, dt.timezone.utc)))


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def interval_body(t: float, import_wh: int, export_wh: int, reactive: int) -> Data:
    return Data.structure([ln(INTERVAL), Data.octet_string(date_time(t)), Data.double_long_unsigned(import_wh),
                           Data.double_long_unsigned(export_wh),
                           Data.structure([ln("1-0:3.8.0.255"), Data.double_long_unsigned(reactive),
                                           Data.structure([Data.integer(0), Data.enum(32)])])])


def interval_values(t: float, import_wh: int, export_wh: int, reactive: int) -> set[tuple]:
    """What the store must hold for one interval push: (OBIS, attribute, capture time, value as JSON)."""
    values = [(CLOCK, 2, dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat()), ("1-0:1.8.0.255", 2, import_wh),
              ("1-0:2.8.0.255", 2, export_wh), ("1-0:3.8.0.255", 2, reactive), ("1-0:3.8.0.255", 3, [0, 32])]
    return {(obis, attribute, iso(t), json.dumps(value)) for obis, attribute, value in values}


def message(apdu: bytes) -> bytes:
    return WrapperFrame(SOURCE_WPORT, DATA_READOUT_WPORT, apdu).to_bytes()


def push(meter, body: Data, t: float) -> bytes:
    """The meter's protected push of `body`, made at meter time `t`."""
    meter.now[0] = t
    return meter.server.protected_notification("data_readout", body)


@pytest.fixture
def listener(meter, tmp_path):
    keyring = Keyring.load([meter.config.data_dir / "credentials"])
    store = PushStore(tmp_path / "pushes.sqlite")
    alarms = []
    receiver = PushReceiver(keyring, store, ObjectLists(store, LISTS),
                            on_alarm=lambda p, descriptors, sender: alarms.append((p, descriptors, sender)))
    receiver.alarms = alarms
    yield receiver
    receiver.store.close()


def stored(store: PushStore) -> set[tuple]:
    return {(obis, attribute, captured, json.dumps(value)) for _, obis, attribute, _, captured, _, value
            in store.readings()}


def title(meter) -> str:
    return meter.identity.system_title.hex().upper()


# ---------------------------------------------------------------------------------------------


def test_keys_found_by_the_meters_system_title_in_its_credentials(meter):
    keyring = Keyring.load([meter.config.data_dir / "credentials"])
    keys = keyring.get(meter.identity.system_title)
    assert keys.source.name == "data_readout.json" and keys.management.name == "management.json"
    assert len(keyring) == 1


def test_pushes_arrive_decode_and_are_stored_once(meter, listener):
    t1, t2 = START + 900, START + 1800
    first, second = push(meter, interval_body(t1, 1000, 5, 70), t1), push(meter, interval_body(t2, 1250, 5, 71), t2)
    assert listener.datagram(message(first), ("127.0.0.1", 5000)) == "stored"
    assert listener.datagram(message(first), ("127.0.0.1", 5000)) == "retry"  # UDP sends every retry
    assert listener.datagram(message(second), ("127.0.0.1", 5000)) == "stored"
    assert stored(listener.store) == interval_values(t1, 1000, 5, 70) | interval_values(t2, 1250, 5, 71)
    assert listener.store.push_count(title(meter)) == 2
    rows = list(listener.store.readings(obis=["1-0:1.8.0.255"]))
    assert [(r[2], r[3]) for r in rows] == [(2, 3), (2, 3)]  # attribute and class id
    assert listener.counts["stored"] == 2 and listener.counts["retry"] == 1


def test_a_replayed_push_is_refused_and_counted(meter, listener):
    t1, t2 = START + 2700, START + 3600
    old, new = push(meter, interval_body(t1, 1, 2, 3), t1), push(meter, interval_body(t2, 4, 5, 6), t2)
    assert listener.datagram(message(new), "m") == "stored"
    assert listener.datagram(message(old), "m") == "stored"  # an older counter never seen: a late push
    assert listener.datagram(message(new), "another peer") == "retry"  # the very same message: a retry
    assert listener.datagram(message(old), "m") == "retry"
    assert stored(listener.store) == interval_values(t1, 1, 2, 3) | interval_values(t2, 4, 5, 6)
    # once the listener no longer remembers the message, the same counter again is a replay
    forgetful = PushReceiver(listener.keyring, listener.store, listener.object_lists)
    assert forgetful.datagram(message(old), "m") == "replay"
    assert forgetful.counts["replay"] == 1 and listener.store.push_count() == 2


def test_a_forged_push_is_refused_and_does_not_use_up_its_counter(meter, listener):
    t = START + 4500
    genuine = push(meter, interval_body(t, 10, 20, 30), t)
    forged = genuine[:-1] + bytes([genuine[-1] ^ 0x01])  # one bit of the GCM tag
    assert listener.datagram(message(forged), "m") == "forged"
    assert listener.store.push_count() == 0 and not stored(listener.store)
    assert listener.datagram(message(genuine), "m") == "stored"  # the forgery took nothing from it
    assert listener.counts["forged"] == 1


def test_a_push_from_an_unknown_system_title_is_refused(listener):
    stranger = GeneralGloCiphering.protect(SecurityControl(1, True, True), os.urandom(16), os.urandom(16),
                                           b"XYZ\x00\x00\x00\x00\x01", 1,
                                           DataNotification(0, date_time(START), interval_body(START, 1, 1, 1)).to_bytes())
    assert listener.datagram(message(stranger.to_bytes()), "m") == "unknown_sender"
    assert listener.counts["unknown_sender"] == 1
    assert listener.store.meters() == [] and not stored(listener.store)


def test_garbage_truncated_oversized_and_unprotected_messages_are_refused_and_counted(meter, listener):
    t = START + 5400
    good = message(push(meter, interval_body(t, 1, 2, 3), t))
    plain = message(DataNotification(0, date_time(t), interval_body(t, 1, 2, 3)).to_bytes())
    cases = {
        b"": "truncated",
        b"\x00\x01\x00": "truncated",
        b"\xff\xfe\x00" + b"garbage" * 20: "garbage",
        b"\x00\x02" + good[2:]: "garbage",  # wrapper version 2
        good[:-5]: "truncated",  # the header says more than came
        good + b"\x00": "garbage",  # more than the header says
        WrapperFrame(1, 2, good[8:-5]).to_bytes(): "truncated",  # a consistent wrapper, a cut APDU
        # a ciphered content too short for its security header
        WrapperFrame(1, 2, b"\xdb\x08" + b"KFM\x00\x00\x00\x00\x01" + b"\x03\x30\x00\x00").to_bytes(): "garbage",
        WrapperFrame(1, 2, b"\xc4\x01\x00").to_bytes(): "garbage",  # a get-response is no push
        WrapperFrame(1, 2, b"\xdb" + bytes(5000)).to_bytes(): "oversized",
        plain: "unprotected",
    }
    for data, condition in cases.items():
        assert listener.datagram(data, "m") == condition, data[:16]
    assert listener.counts == {c: list(cases.values()).count(c) for c in set(cases.values())}
    assert listener.store.meters() == [] and not stored(listener.store)
    assert listener.datagram(good, "m") == "stored"  # none of it hurt the next genuine push


def test_an_authentic_push_that_fits_no_known_list_is_counted_not_stored_and_uses_its_counter(meter, listener):
    t = START + 6300
    odd = push(meter, Data.structure([ln(INTERVAL), Data.octet_string(date_time(t))]), t)
    assert listener.datagram(message(odd), "m") == "unmapped"
    assert not stored(listener.store)
    assert listener.datagram(message(odd), "m") == "retry"
    assert PushStore(listener.store.path).counters()[key_of(listener, meter)] > 0  # the counter is kept all the same


def key_of(listener, meter) -> tuple[str, str]:
    """(meter, key id): what the listener's counters are kept by."""
    return title(meter), push_key_id(listener.keyring.get(meter.identity.system_title).ek)


def protect(listener, meter, counter: int, body: Data, t: float) -> bytes:
    """A push of the meter with the invocation counter `counter` (its keys, its system title):
    the order in which the meter's pushes arrive is the network's, not the counters'."""
    keys = listener.keyring.get(meter.identity.system_title)
    plain = DataNotification(0, date_time(t), body).to_bytes()
    return GeneralGloCiphering.protect(SecurityControl(keys.suite, True, True), keys.ek, keys.ak,
                                       meter.identity.system_title, counter, plain).to_bytes()


def test_pushes_out_of_counter_order_within_the_replay_window_are_stored_once(meter, listener):
    """Push A (counter 100) fails its first connection, alarm push B (101) arrives, A's retry
    30 s later is still accepted; each counter once; a counter 1024 or more below the highest
    accepted is refused unseen; an unmapped push uses its counter up; a forgery moves nothing."""
    t = START + 60000
    a = protect(listener, meter, 100, interval_body(t, 1, 2, 3), t)
    b = protect(listener, meter, 101, interval_body(t + 5, 4, 5, 6), t + 5)
    assert listener.datagram(message(b), "m") == "stored"
    assert listener.datagram(message(a), "m") == "stored"
    assert listener.datagram(message(protect(listener, meter, 100, interval_body(t, 9, 9, 9), t)), "m") == "replay"
    highest = 5000
    assert listener.datagram(message(protect(listener, meter, highest, interval_body(t + 900, 7, 7, 7), t + 900)),
                             "m") == "stored"
    at_floor = protect(listener, meter, highest - 1024, interval_body(t + 60, 8, 8, 8), t + 60)
    inside = protect(listener, meter, highest - 1023, interval_body(t + 120, 8, 8, 8), t + 120)
    assert listener.datagram(message(at_floor), "m") == "replay"
    assert listener.datagram(message(inside), "m") == "stored"
    odd = protect(listener, meter, highest - 10, Data.structure([ln(INTERVAL)]), t + 180)
    assert listener.datagram(message(odd), "m") == "unmapped"
    forged = protect(listener, meter, highest - 20, interval_body(t + 240, 1, 1, 1), t + 240)
    forged = forged[:-1] + bytes([forged[-1] ^ 1])
    forged_high = protect(listener, meter, highest + 5000, interval_body(t + 240, 1, 1, 1), t + 240)
    forged_high = forged_high[:-1] + bytes([forged_high[-1] ^ 1])
    assert listener.datagram(message(forged), "m") == listener.datagram(message(forged_high), "m") == "forged"
    assert listener.counters[key_of(listener, meter)] == highest  # the forgeries moved nothing
    assert listener.store.counters()[key_of(listener, meter)] == highest
    # a restarted listener knows every used counter, the unmapped one too
    restarted = PushReceiver(listener.keyring, listener.store, listener.object_lists)
    replays = [protect(listener, meter, c, interval_body(t + 300, 2, 2, 2), t + 300)
               for c in (100, 101, highest - 1023, highest - 10, highest)]
    assert [restarted.datagram(message(r), "m") for r in replays] == ["replay"] * len(replays)
    genuine = protect(listener, meter, highest - 20, interval_body(t + 240, 1, 1, 1), t + 240)
    assert restarted.datagram(message(genuine), "m") == "stored"  # the forgery took nothing from it
    assert listener.store.push_count() == 5


def test_a_body_clock_beyond_the_datetime_range_takes_the_capture_time_from_the_notification(meter, listener):
    """9999-12-31 23:59 with a deviation of +60 min lies past what a datetime holds in UTC, the
    year 999 has three digits: neither is a capture time, the notification's date-time is."""
    t = START + 61000
    for clock in ("270F0C1FFF173B0000003C00", "03E70C1FFF173B0000000000"):
        body = Data.structure([ln(INTERVAL), Data.octet_string(bytes.fromhex(clock)), Data.double_long_unsigned(1),
                               Data.double_long_unsigned(2), interval_body(t, 0, 0, 3).value[4]])
        assert listener.datagram(message(push(meter, body, t)), "m") == "stored"
        t += 900
    captured = {row[0] for row in listener.store.db.execute("SELECT capture_time FROM push")}
    assert captured == {iso(START + 61000), iso(START + 61900)}


def test_format_time_is_of_one_width_for_every_year():
    assert format_time(dt.datetime(999, 1, 2, 3, 4, 5, 678000)) == "0999-01-02T03:04:05.678Z"
    assert format_time(dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)) == "9999-12-31T23:59:59.000Z"


def test_an_error_while_storing_is_counted_and_the_meters_repetition_is_stored(meter, listener, monkeypatch):
    """Nothing escapes the listener's entry points; a push that could not be stored does not use
    up its counter, so the meter's repetition of the very same message is stored, no retry."""
    t = START + 62000
    apdu = push(meter, interval_body(t, 5, 6, 7), t)
    store_add = listener.store.add

    def failing_add(pushed):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(listener.store, "add", failing_add)
    assert listener.datagram(message(apdu), "m") == "internal"
    assert listener.frame(WrapperFrame(1, 2, apdu), "tcp peer") == "internal"
    monkeypatch.setattr(listener.store, "add", store_add)
    assert listener.datagram(message(apdu), "m") == "stored"
    assert listener.counts["internal"] == 2 and listener.counts["retry"] == 0
    assert stored(listener.store) == interval_values(t, 5, 6, 7)


def test_a_failed_commit_loses_its_pushes_and_their_counters_together(meter, tmp_path, monkeypatch):
    keyring = Keyring.load([meter.config.data_dir / "credentials"])
    store = PushStore(tmp_path / "deferred.sqlite", deferred=True)
    receiver = PushReceiver(keyring, store, ObjectLists(store, LISTS))
    t = START + 63000
    apdu = message(push(meter, interval_body(t, 8, 8, 8), t))
    assert receiver.datagram(apdu, "m") == "stored"  # not committed yet
    commit = store.flush

    def failing_commit():
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "flush", failing_commit)
    receiver._flush()
    monkeypatch.setattr(store, "flush", commit)
    assert receiver.counts["internal"] == 1 and store.push_count() == 0
    assert receiver.datagram(apdu, "m") == "stored"  # the meter's repetition
    store.close()
    assert stored(PushStore(tmp_path / "deferred.sqlite")) == interval_values(t, 8, 8, 8)


def test_lists_written_by_another_process_map_the_next_push(meter, listener):
    """`hes lists` writes a meter's lists while the listener runs: the listener had found none
    for that meter, and uses them from the next push on."""
    t = START + 66000
    body = Data.structure([Data.octet_string(date_time(t)), Data.double_long_unsigned(77)])
    assert listener.datagram(message(push(meter, body, t)), "m") == "unmapped"
    other = PushStore(listener.store.path)  # another process's connection
    other.put_object_list(title(meter), "0-2:25.9.0.255", [[8, CLOCK, 2, 0], [3, "1-0:1.8.0.255", 2, 0]], "meter",
                          iso(t))
    other.close()
    t += 900
    body = Data.structure([Data.octet_string(date_time(t)), Data.double_long_unsigned(78)])
    assert listener.datagram(message(push(meter, body, t)), "m") == "stored"
    assert {(obis, value) for _, obis, _, _, _, _, value in listener.store.readings()} == {
        (CLOCK, dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat()), ("1-0:1.8.0.255", 78)}
    assert listener.store.db.execute("SELECT kind FROM push").fetchone()[0] == "interval-2"


def test_a_deferred_commit_is_made_once_the_loop_turn_that_received_the_push_is_over(meter, tmp_path):
    """The window in which a crash loses a push the meter (over TCP) took as delivered: the rest
    of the listener's loop turn; another process sees the push right after it."""
    store = PushStore(tmp_path / "deferred.sqlite", deferred=True)
    receiver = PushReceiver(Keyring.load([meter.config.data_dir / "credentials"]), store, ObjectLists(store, LISTS))
    t = START + 67000
    apdu = push(meter, interval_body(t, 4, 4, 4), t)

    def committed() -> int:
        with sqlite3.connect(f"file:{store.path}?mode=ro", uri=True) as reader:
            return reader.execute("SELECT count(*) FROM push").fetchone()[0]

    async def scenario():
        assert receiver.frame(WrapperFrame(1, 2, apdu), ("192.0.2.9", 40000)) == "stored"
        receiver.flush_soon()
        before = committed()
        await asyncio.sleep(0)
        return before, committed()

    assert asyncio.run(scenario()) == (0, 1)
    store.close()


def blocks(apdu: bytes, size: int) -> list[bytes]:
    parts = [apdu[i:i + size] for i in range(0, len(apdu), size)]
    return [message(GeneralBlockTransfer(i == len(parts), True, 1, i, 0, part).to_bytes())
            for i, part in enumerate(parts, start=1)]


def test_general_block_transfer_is_reassembled_per_sender(meter, listener):
    t1, t2 = START + 7200, START + 8100
    a = blocks(push(meter, interval_body(t1, 7, 8, 9), t1), 40)
    b = blocks(push(meter, interval_body(t2, 17, 18, 19), t2), 50)
    assert len(a) > 2 and len(b) > 2
    # two senders' blocks interleaved; the later push completes first
    outcomes = []
    for i in range(max(len(a), len(b))):
        if i < len(b):
            outcomes.append(listener.datagram(b[i], ("10.0.0.2", 4059)))
        if i < len(a):
            outcomes.append(listener.datagram(a[i], ("10.0.0.1", 4059)))
    assert outcomes.count("stored") == 2  # a's counter is below b's, and within the replay window
    assert stored(listener.store) == interval_values(t1, 7, 8, 9) | interval_values(t2, 17, 18, 19)


def test_block_transfers_out_of_sequence_too_large_or_too_slow_are_dropped(meter, listener, tmp_path):
    t = START + 9000
    parts = blocks(push(meter, interval_body(t, 1, 1, 1), t), 30)
    assert listener.datagram(parts[0], "m") == "gbt_block"
    assert listener.datagram(parts[2], "m") == "gbt_sequence"  # block 2 missing
    assert listener.datagram(parts[1], "m") == "gbt_sequence"  # nothing under way any more
    small = PushReceiver(listener.keyring, listener.store, listener.object_lists,
                         limits=Limits(max_notification=(len(parts) - 1) * 30))
    # the blocks but the last fill the bound exactly; the last (1 to 30 bytes) exceeds it
    assert [small.datagram(p, "m") for p in parts] == ["gbt_block"] * (len(parts) - 1) + ["oversized"]
    clock = [0.0]
    slow = PushReceiver(listener.keyring, listener.store, listener.object_lists, limits=Limits(gbt_timeout=30),
                        monotonic=lambda: clock[0])
    slow.datagram(parts[0], "m")
    clock[0] = 31.0
    assert slow.datagram(parts[1], "m") == "gbt_sequence"
    assert slow.counts["gbt_timeout"] == 1
    assert not stored(listener.store)
    assert listener.datagram(parts[0], "m") == "gbt_block"  # whole, in order: fine
    assert [listener.datagram(p, "m") for p in parts[1:]][-1] == "stored"


def held(receiver) -> tuple[int, dict]:
    """Bytes of the GBT pushes under way, and how many there are from each address."""
    hosts = [sender[0] for sender, _ in receiver._reassembly]
    return (sum(sum(map(len, r.parts)) for r in receiver._reassembly.values()),
            {h: hosts.count(h) for h in set(hosts)})


def test_block_transfers_under_way_are_bounded_in_bytes_and_per_address(meter, listener):
    """A flood of partial transfers from many (spoofable) UDP sources holds no more than the byte
    budget, no more than the per-address count, and first blocks that begin no push of a known
    meter hold nothing: a genuine transfer from another address under way completes."""
    t = START + 64000
    genuine = blocks(push(meter, interval_body(t, 3, 1, 4), t), 60)
    receiver = PushReceiver(listener.keyring, listener.store, listener.object_lists,
                            limits=Limits(max_reassembly_bytes=4000, max_reassemblies_per_origin=3))
    assert receiver.datagram(genuine[0], ("192.0.2.1", 4059)) == "gbt_block"
    head = GeneralBlockTransfer.from_bytes(genuine[0][8:]).block_data[:10]  # tag, the meter's system title
    stranger = bytes([0xDB, 8]) + b"XYZ\x00\x00\x00\x00\x01"
    for i in range(300):
        fake = message(GeneralBlockTransfer(False, True, 1, 1, 0, stranger + bytes(500)).to_bytes())
        assert receiver.datagram(fake, (f"10.0.{i // 250}.{i % 250}", 4059)) == "unknown_sender"
    assert held(receiver) == (60, {"192.0.2.1": 1})
    worst = 0
    for i in range(50):  # blocks that claim the meter: held, within the bounds
        fake = message(GeneralBlockTransfer(False, True, 1, 1, 0, head + bytes(490)).to_bytes())
        assert receiver.datagram(fake, (f"10.1.0.{i % 10}", 5000 + i)) == "gbt_block"
        size, per_host = held(receiver)
        worst = max(worst, size)
        assert max(per_host.values()) <= 3
    assert 3500 < worst <= 4000  # the budget filled, never exceeded
    assert receiver.counts["gbt_evicted"] == 50 - 4000 // 500 + 1  # the genuine transfer was the oldest
    # from one address under the cap, a restarted flood leaves another address's transfer alone
    receiver = PushReceiver(listener.keyring, listener.store, listener.object_lists,
                            limits=Limits(max_reassemblies_per_origin=3))
    assert receiver.datagram(genuine[0], ("192.0.2.1", 4059)) == "gbt_block"
    for port in range(1000, 1100):
        fake = message(GeneralBlockTransfer(False, True, 1, 1, 0, head + bytes(490)).to_bytes())
        receiver.datagram(fake, ("10.2.0.1", port))
    assert held(receiver)[1] == {"192.0.2.1": 1, "10.2.0.1": 3}
    assert [receiver.datagram(b, ("192.0.2.1", 4059)) for b in genuine[1:]][-1] == "stored"


def test_expiry_drops_only_the_stale_block_transfers(meter, listener):
    t = START + 65000
    parts = blocks(push(meter, interval_body(t, 2, 7, 1), t), 60)
    clock = [0.0]
    receiver = PushReceiver(listener.keyring, listener.store, listener.object_lists, monotonic=lambda: clock[0])
    receiver.datagram(parts[0], ("192.0.2.1", 1))
    clock[0] = 20.0
    receiver.datagram(parts[0], ("192.0.2.2", 1))
    clock[0] = 31.0
    assert receiver.expire() == 1
    assert held(receiver)[1] == {"192.0.2.2": 1}
    assert [receiver.datagram(p, ("192.0.2.2", 1)) for p in parts[1:]][-1] == "stored"


def test_a_restarted_listener_still_refuses_replays(meter, listener):
    t1, t2 = START + 9900, START + 10800
    first, second = push(meter, interval_body(t1, 1, 2, 3), t1), push(meter, interval_body(t2, 3, 2, 1), t2)
    assert listener.datagram(message(second), "m") == "stored"
    assert listener.datagram(message(first), "m") == "stored"
    path = listener.store.path
    listener.store.close()
    store = PushStore(path)
    restarted = PushReceiver(Keyring.load([meter.config.data_dir / "credentials"]), store, ObjectLists(store, LISTS))
    assert restarted.datagram(message(second), "m") == "replay"  # not known as a retry any more: refused all the same
    assert restarted.datagram(message(first), "m") == "replay"  # below the highest, but used
    assert stored(store) == interval_values(t1, 1, 2, 3) | interval_values(t2, 3, 2, 1)
    t3 = START + 11700
    assert restarted.datagram(message(push(meter, interval_body(t3, 9, 9, 9), t3)), "m") == "stored"
    store.close()


def test_installation_push_registers_the_meter(meter, listener):
    t = START + 12600
    body = Data.structure([ln(INSTALLATION), Data.octet_string(date_time(t)), Data.octet_string(b"1KFM0100000001"),
                           Data.double_long_unsigned(0xC0A8011E)])  # 192.168.1.30
    assert listener.datagram(message(push(meter, body, t)), ("192.168.1.30", 4059)) == "stored"
    [(system_title, serial, address, first, last, registered, pushes)] = listener.store.meters()
    assert (system_title, serial, address, pushes) == (title(meter), "1KFM0100000001", "192.168.1.30", 1)
    assert registered == first
    kind = listener.store.db.execute("SELECT kind, setup FROM push").fetchone()
    assert kind == ("installation", INSTALLATION)


def test_an_alarm_push_is_reported_at_once(meter, listener):
    t = START + 13500
    body = Data.structure([ln(ALARM), Data.octet_string(date_time(t)), Data.double_long_unsigned(1 << 13),
                           Data.double_long_unsigned(0), Data.double_long_unsigned(0)])
    assert listener.datagram(message(push(meter, body, t)), ("127.0.0.1", 4059)) == "stored"
    [(pushed, descriptors, sender)] = listener.alarms
    assert pushed.kind == "alarm" and descriptors == {DESCRIPTORS[0]: 1 << 13, DESCRIPTORS[1]: 0, DESCRIPTORS[2]: 0}
    assert sender == ("127.0.0.1", 4059)


def test_ack_clears_the_reported_descriptor_on_the_meter_through_the_management_client(meter, listener):
    meter.alarms.raise_flag("fraud_attempt")
    reported = meter.alarms.descriptor(1)
    assert reported  # the default filter lets it through

    async def scenario():
        server = await serve_wrapper_tcp(meter.server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        lines = []
        acks = AlarmAcknowledger(listener.keyring, port, lines.append)
        acks.clear(title(meter), {DESCRIPTORS[0]: reported, DESCRIPTORS[1]: 0}, ("127.0.0.1", 40000))
        await acks.wait()
        server.close()
        return lines

    lines = asyncio.run(scenario())
    assert lines == [f"ACK meter {title(meter)}: {DESCRIPTORS[0]} cleared (0x{reported:08X})"]
    assert meter.alarms.descriptor(1) == 0


def test_every_push_of_the_meter_is_stored_as_the_meter_reads_its_objects(meter, tmp_path):
    """The meter's own pushes (its push service, its push object lists, GBT where a push exceeds
    its PDU), mapped by the model's default lists the head-end knows: each value equals what the
    object reads on the meter, at the time the push stands for."""
    store = PushStore(tmp_path / "real.sqlite")
    receiver = PushReceiver(Keyring.load([meter.config.data_dir / "credentials"]), store,
                            ObjectLists(store, None, model_object_lists()))
    directory = meter.server.directory
    expected_kinds = {INSTALLATION: "installation", "0-0:25.9.0.255": "connectivity", INTERVAL: "interval-1",
                      "0-2:25.9.0.255": "interval-2", "0-3:25.9.0.255": "interval-3", ALARM: "alarm",
                      "0-5:25.9.0.255": "power-down"}
    block_transfers = 0
    for i, (setup, kind) in enumerate(expected_kinds.items()):
        meter.now[0] = START + 40000 + 900 * i
        at = meter.now[0] - 60  # the push stands for a schedule's instant a minute before
        instance = directory.by_ln[Obis.parse(setup).to_bytes()][1]
        frames = meter.push.frames(instance, at)
        if setup == "0-2:25.9.0.255" and len(frames) == 1:  # young profiles: as a meter with a small PDU would
            frames = gbt_blocks(frames[0], 64)
        block_transfers += len(frames) > 1
        assert [receiver.datagram(message(f), ("127.0.0.1", 4059)) for f in frames][-1] == "stored", setup
        got = {(obis, attribute): (captured, value) for m, obis, attribute, _, captured, _, value
               in store.readings() if captured == iso(at)}
        assert store.db.execute("SELECT kind FROM push ORDER BY invocation_counter DESC").fetchone()[0] == kind
        for entry in instance.get(2, METER_CONTEXT).value:
            class_id, ln_, attribute, _ = (f.value for f in entry.value)
            obis = str(Obis.from_bytes(ln_))
            target = directory.by_ln[ln_][1]
            if (class_id, attribute) == (8, 2):
                assert dt.datetime.fromisoformat(got[(obis, 2)][1]).timestamp() == at  # local time, its deviation
                continue
            for index in (list(target.attributes)[1:] if attribute == 0 else [attribute]):
                read = target.get(index, METER_CONTEXT)
                if read.value is None and read.encoded is not None:  # a profile buffer, kept encoded
                    read = axdr.decode_all(read.encoded)
                if read.type != DataType.NULL_DATA:
                    assert got[(obis, index)][1] == to_json(read), (setup, obis, index)
    assert block_transfers >= 1
    [(_, serial, _, _, _, registered, pushes)] = store.meters()
    assert serial == meter.identity.serial and registered and pushes == len(expected_kinds)
    assert receiver.counts == {"stored": len(expected_kinds), "gbt_block": receiver.counts["gbt_block"]}
    store.close()


# ------------------------------------------------------------------------------ on sockets


def test_udp_and_tcp_listeners_store_pushes_and_count_refusals(meter, listener):
    t1, t2, t3 = START + 14400, START + 15300, START + 16200
    udp_push = message(push(meter, interval_body(t1, 11, 12, 13), t1))
    tcp_push = message(push(meter, interval_body(t2, 21, 22, 23), t2))
    gbt_push = blocks(push(meter, interval_body(t3, 31, 32, 33), t3), 64)

    async def scenario():
        udp = await serve_udp(listener, "127.0.0.1", 0)
        tcp = await serve_tcp(listener, "127.0.0.1", 0)
        udp_port = udp.get_extra_info("sockname")[1]
        tcp_port = tcp.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        sender, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=("127.0.0.1", udp_port))
        sender.sendto(udp_push)
        sender.sendto(b"\x00\x01garbage")
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
        data = tcp_push + b"".join(gbt_push)
        for i in range(0, len(data), 7):  # split anywhere
            writer.write(data[i:i + 7])
            await writer.drain()
        writer.write(b"\x00\x01\x00\x01\x00\x02\x00\x30" + b"cut")  # a message cut off by the close
        writer.close()
        _, writer2 = await asyncio.open_connection("127.0.0.1", tcp_port)
        writer2.write(b"\x00\x01\x00\x01\x00\x02\xff\xff")  # announces 65535 bytes: beyond the bound
        await writer2.drain()
        for _ in range(200):
            if listener.counts["stored"] == 3 and listener.counts["truncated"] == 2 \
                    and listener.counts["oversized"] == 1:
                break
            await asyncio.sleep(0.01)
        writer2.close()
        sender.close()
        udp.close()
        tcp.close()

    asyncio.run(scenario())
    assert listener.counts["stored"] == 3
    assert listener.counts["truncated"] == 2  # the short datagram, the message cut by the close
    assert listener.counts["oversized"] == 1
    assert stored(listener.store) == (interval_values(t1, 11, 12, 13) | interval_values(t2, 21, 22, 23)
                                      | interval_values(t3, 31, 32, 33))


def test_the_meters_own_sender_reaches_the_listener_over_udp_ipv6_and_tcp_ipv4(meter, listener):
    """The meter side's wrapper sender (what its push sender uses) to the destinations of §10.6:
    UDP to `[IPv6]:port` (LAN), TCP to `IPv4:port` (WAN), a push in GBT blocks on the TCP one."""
    t1, t2 = START + 17100, START + 18000
    lan = [push(meter, interval_body(t1, 41, 42, 43), t1)]
    wan = gbt_blocks(push(meter, interval_body(t2, 51, 52, 53), t2), 64)

    async def scenario():
        udp = await serve_udp(listener, "::1", 0)
        tcp = await serve_tcp(listener, "127.0.0.1", 0)
        await send_udp(parse_destination(f"[::1]:{udp.get_extra_info('sockname')[1]}"),
                       wrapper_messages(lan, SOURCE_WPORT, DATA_READOUT_WPORT))
        await send_tcp(parse_destination(f"127.0.0.1:{tcp.sockets[0].getsockname()[1]}"),
                       wrapper_messages(wan, SOURCE_WPORT, DATA_READOUT_WPORT), 5.0)
        for _ in range(200):
            if listener.counts["stored"] == 2:
                break
            await asyncio.sleep(0.01)
        udp.close()
        tcp.close()

    asyncio.run(scenario())
    assert listener.counts["stored"] == 2 and len(wan) > 1
    assert stored(listener.store) == interval_values(t1, 41, 42, 43) | interval_values(t2, 51, 52, 53)


def test_tcp_connections_are_bounded_in_number_and_idle_time(meter, listener):
    bounded = PushReceiver(listener.keyring, listener.store, listener.object_lists,
                           limits=Limits(max_connections=2, idle_timeout=1.0))
    t = START + 18900
    late = message(push(meter, interval_body(t, 61, 62, 63), t))

    async def closed(reader) -> bool:
        try:
            return await asyncio.wait_for(reader.read(1), 3.0) == b""
        except (ConnectionError, asyncio.TimeoutError):
            return True

    async def scenario():
        tcp = await serve_tcp(bounded, "127.0.0.1", 0)
        port = tcp.sockets[0].getsockname()[1]
        first = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        second = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        third = await asyncio.open_connection("127.0.0.1", port)  # the longest idle (first) makes room
        first_closed = await closed(first[0])
        assert len(tcp.connections) == 2
        third[1].write(late)  # the newest still delivers
        await third[1].drain()
        for _ in range(100):
            if bounded.counts["stored"]:
                break
            await asyncio.sleep(0.01)
        idle_closed = await closed(second[0])  # silent for more than the idle timeout
        for _, writer in (first, second, third):
            writer.close()
        tcp.close()
        return first_closed, idle_closed, tcp.connections

    first_closed, idle_closed, table = asyncio.run(scenario())
    assert first_closed and idle_closed
    assert table.displaced == 1 and table.expired >= 1
    assert bounded.counts["stored"] == 1


# ------------------------------------------------------------------------------ hes show


def test_hes_show_filters_by_meter_object_and_time(meter, listener, tmp_path):
    times = [START + 20000 + 900 * i for i in range(4)]
    for i, t in enumerate(times):
        assert listener.datagram(message(push(meter, interval_body(t, 100 * i, i, 7), t)), "m") == "stored"
    db = str(listener.store.path)
    runner = CliRunner()

    def show(*args):
        result = runner.invoke(main, ["hes", "show", "--db", db, "--json", *args])
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.output.splitlines()]

    everything = show()
    assert len(everything) == 4 * 5
    only = show("--meter", title(meter), "--obis", "1-0:1.8.0.255", "--from", iso(times[1]), "--to", iso(times[3]))
    assert [(r["capture_time"], r["value"]) for r in only] == [(iso(times[1]), 100), (iso(times[2]), 200)]
    assert show("--meter", "00" * 8) == []
    local = dt.datetime.fromtimestamp(times[2], dt.timezone(dt.timedelta(hours=1))).isoformat()
    assert [r["value"] for r in show("--obis", "1-0:1.8.0.255", "--from", local)] == [200, 300]
    out = tmp_path / "out.csv"
    result = runner.invoke(main, ["hes", "show", "--db", db, "--obis", "1-0:3.8.0.255", "--csv", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 8 and {json.loads(r["value"]) for r in rows if r["attribute"] == "2"} == {7}
    bad = runner.invoke(main, ["hes", "show", "--db", db, "--from", "yesterday"])
    assert bad.exit_code == 2 and "--from" in bad.output
    meters = runner.invoke(main, ["hes", "meters", "--db", db, "--json"])
    assert json.loads(meters.output)["pushes"] == 4
