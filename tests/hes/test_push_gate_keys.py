"""`hes listen --nats --store`: a push from a meter imported after the listener started, or
made under keys changed since, is held while the meter's keys are read from the store again,
then published; a forged push is refused after one look-up, and the look-ups are bounded. Keys
held longer than KEYS_FRESH are read again: keys past their grace stop fitting."""
from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

from smartmeter.cosem.data import Data
from smartmeter.dlms.apdu.ciphered import GeneralGloCiphering
from smartmeter.dlms.apdu.notification import DataNotification
from smartmeter.dlms.security.suites import SecurityControl
from smartmeter.hes.fleet import pushes
from smartmeter.hes.fleet.pushes import NatsPushGate
from smartmeter.hes.push_listener import Keyring, MeterKeys

TITLE = bytes.fromhex("4B534D0000000042")


def apdu(ek: bytes, ak: bytes, counter: int, title: bytes = TITLE) -> bytes:
    plain = DataNotification(counter, b"", Data.structure([Data.double_long_unsigned(counter)])).to_bytes()
    return GeneralGloCiphering.protect(SecurityControl(0, True, True), ek, ak, title, counter, plain).to_bytes()


def keys() -> tuple[bytes, bytes]:
    return secrets.token_bytes(16), secrets.token_bytes(16)


class Store:
    """What the store answers for meters' keys: (suite, EK, AK) of each, newest first; counts
    the meters looked up."""

    def __init__(self, found: dict[bytes, list]) -> None:
        self.found, self.lookups, self.queries = found, [], 0

    async def __call__(self, titles) -> dict:
        self.queries += 1
        self.lookups.extend(titles)
        await asyncio.sleep(0.01)
        return {t: self.found[t] for t in titles if t in self.found}


def queued(gate: NatsPushGate) -> list[tuple[str, int]]:
    out = []
    while not gate.queue.empty():
        title, counter, _, _, _, _ = gate.queue.get_nowait()
        out.append((title, counter))
    return out


def test_a_meter_imported_after_the_start_has_its_push_held_then_published():
    ek, ak = keys()
    store = Store({TITLE: [(0, ek, ak)]})

    async def scenario():
        gate = NatsPushGate(Keyring(), name="t", key_source=store)
        first = gate.notification(apdu(ek, ak, 1), "meter")
        second = gate.notification(apdu(ek, ak, 2), "meter")  # while the look-up runs: held too
        await gate.close()
        third = gate.notification(apdu(ek, ak, 3), "meter")  # the keys are known now
        return first, second, third, queued(gate), dict(gate.counts)

    first, second, third, out, counts = asyncio.run(scenario())
    assert (first, second, third) == ("held", "held", "queued")
    assert out == [(TITLE.hex().upper(), 1), (TITLE.hex().upper(), 2), (TITLE.hex().upper(), 3)]
    assert store.lookups == [TITLE] and counts["held"] == 2 and counts["queued"] == 3


def test_a_push_under_keys_changed_since_the_start_is_published_and_the_old_keys_still_fit():
    old, new = keys(), keys()
    store = Store({TITLE: [(0, *new), (0, *old)]})  # after a key change: the new ACTIVE first

    async def scenario():
        gate = NatsPushGate(Keyring([MeterKeys(TITLE, 0, *old, source=None)]), name="t", key_source=store)
        results = [gate.notification(apdu(*new, 10), "meter")]
        await gate.close()
        results.append(gate.notification(apdu(*old, 9), "meter"))  # made before the change, arriving late
        return results, queued(gate)

    results, out = asyncio.run(scenario())
    assert results == ["held", "queued"]
    assert [c for _, c in out] == [10, 9]


def test_a_push_under_a_new_key_with_a_counter_already_seen_under_the_old_one_is_published():
    """A meter starts its invocation counter again under a new key: (meter, counter) names a
    new push then, not a retry of the old one."""
    old, new = keys(), keys()
    store = Store({TITLE: [(0, *new), (0, *old)]})

    async def scenario():
        gate = NatsPushGate(Keyring([MeterKeys(TITLE, 0, *old, source=None)]), name="t", key_source=store)
        first = gate.notification(apdu(*old, 1), "meter")
        again = gate.notification(apdu(*old, 1), "meter")  # a UDP retry: the same push
        after_change = gate.notification(apdu(*new, 1), "meter")
        await gate.close()
        return first, again, after_change, gate.queue.qsize()

    first, again, after_change, queued_count = asyncio.run(scenario())
    assert (first, again, after_change) == ("queued", "retry", "held") and queued_count == 2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_keys_held_longer_than_keys_fresh_are_read_again_and_those_past_their_grace_stop_fitting():
    """The listener began with the meter's keys from the store. A key change later, and the
    grace for the old keys over, the store gives only the new ones: within KEYS_FRESH of that a
    push under the old keys no longer fits (it is refused as forged), while the meters' keys are
    read in one query, not one a meter."""
    old, new, other = keys(), keys(), keys()
    second = bytes.fromhex("4B534D0000000043")
    store = Store({TITLE: [(0, *old)], second: [(0, *other)]})
    clock = Clock()

    async def scenario():
        gate = NatsPushGate(Keyring([MeterKeys(TITLE, 0, *old, source=Path("store")),
                                     MeterKeys(second, 0, *other, source=Path("store"))]),
                            name="t", key_source=store, monotonic=clock)
        results = [gate.notification(apdu(*old, 1), "meter")]
        store.found[TITLE] = [(0, *new)]  # changed, and the old keys past their grace
        clock.now += pushes.KEYS_FRESH - 1
        results.append(gate.notification(apdu(*old, 2), "meter"))  # read less than KEYS_FRESH ago
        await gate.close()
        lookups_before = list(store.lookups)
        clock.now += 2
        results.append(gate.notification(apdu(*old, 3), "meter"))  # fits what is held; both are read again
        results.append(gate.notification(apdu(*other, 3, title=second), "meter"))
        await gate.close()
        results.append(gate.notification(apdu(*old, 4), "meter"))
        results.append(gate.notification(apdu(*new, 5), "meter"))
        return results, lookups_before, sorted(store.lookups), store.queries, dict(gate.counts)

    results, before, lookups, queries, counts = asyncio.run(scenario())
    assert results == ["queued", "queued", "queued", "queued", "forged", "queued"]
    assert before == [] and lookups == sorted([TITLE, second]) and queries == 1 and counts["forged"] == 1


def test_a_forged_push_leaves_the_keys_of_a_keys_file_in_place():
    real, forged = keys(), keys()
    store = Store({})  # the store knows nothing of this meter: its keys came from a --keys file

    async def scenario():
        gate = NatsPushGate(Keyring([MeterKeys(TITLE, 0, *real, source=None)]), name="t", key_source=store)
        refused = gate.notification(apdu(*forged, 5), "forger")
        await gate.close()
        genuine = gate.notification(apdu(*real, 6), "meter")
        return refused, genuine

    assert asyncio.run(scenario()) == ("held", "queued")


def test_a_forged_push_is_refused_after_one_look_up_and_the_next_without_one():
    real, forged = keys(), keys()
    store = Store({TITLE: [(0, *real)]})

    async def scenario():
        gate = NatsPushGate(Keyring([MeterKeys(TITLE, 0, *real, source=None)]), name="t", key_source=store)
        first = gate.notification(apdu(*forged, 5), "forger")
        await gate.close()
        second = gate.notification(apdu(*forged, 6), "forger")
        unknown = gate.notification(apdu(*forged, 7, title=b"\x01" * 8), "stranger")
        await gate.close()
        again = gate.notification(apdu(*forged, 8, title=b"\x01" * 8), "stranger")
        return first, second, unknown, again, queued(gate), dict(gate.counts)

    first, second, unknown, again, out, counts = asyncio.run(scenario())
    assert (first, second, unknown, again) == ("held", "forged", "held", "unknown_sender")
    assert out == [] and counts["forged"] == 2 and counts["unknown_sender"] == 2
    assert store.lookups == [TITLE, b"\x01" * 8]  # once a meter within the reload interval


def test_the_pushes_held_are_bounded(monkeypatch):
    monkeypatch.setattr(pushes, "HELD_PUSHES", 3)
    ek, ak = keys()
    store = Store({})

    async def scenario():
        gate = NatsPushGate(Keyring(), name="t", key_source=store)
        results = [gate.notification(apdu(ek, ak, n, title=bytes([n]) * 8), "meter") for n in range(1, 6)]
        await gate.close()
        return results, dict(gate.counts)

    results, counts = asyncio.run(scenario())
    assert results == ["held"] * 3 + ["unknown_sender"] * 2
    assert counts["unknown_sender"] == 5  # the three held ones too, once their look-up found nothing


def test_a_store_that_cannot_answer_leaves_the_held_pushes_refused_with_one_line(caplog):
    async def broken(titles) -> dict:
        raise ConnectionRefusedError("the store is down")

    ek, ak = keys()

    async def scenario():
        gate = NatsPushGate(Keyring(), name="t", key_source=broken)
        held = gate.notification(apdu(ek, ak, 1), "meter")
        await gate.close()
        return held, dict(gate.counts)

    held, counts = asyncio.run(scenario())
    assert held == "held" and counts["unknown_sender"] == 1
    assert sum("could not read the keys" in r.getMessage() for r in caplog.records) == 1


def test_a_running_listener_takes_the_pushes_of_a_meter_imported_after_it_started(head_end):
    """Real processes: `hes listen --nats --store` started with one meter in the store, a second
    imported later; the second's pushes are stored by a worker, none refused."""
    import json
    import re
    import socket
    import time

    from smartmeter.transport.wrapper import WrapperFrame

    h = head_end
    meters = [{"serial": f"LATE{i}", "system_title": f"{0x4C41544500000000 + i:016X}", "host": "127.0.0.1",
               "port": 9, "ek": secrets.token_hex(16), "ak": secrets.token_hex(16)} for i in range(2)]
    (h.tmp / "fleet.json").write_text(json.dumps({"meters": meters[:1]}))
    h.import_fleet()
    h.start_worker("--concurrency", "1")
    h.workers.append(h._spawn(["hes", "listen", "--udp", "0", "--nats", h.env["SMARTMETER_NATS"],
                               "--store", h.dsn], "listener"))
    deadline = time.monotonic() + 60
    while not (found := re.findall(r"UDP 127\.0\.0\.1:(\d+)", h.log("listener"))):
        assert time.monotonic() < deadline, h.log("listener")
        time.sleep(0.2)
    port = int(found[0])
    (h.tmp / "fleet.json").write_text(json.dumps({"meters": meters}))
    h.import_fleet()  # the second meter arrives while the listener runs
    late = meters[1]
    title, ek, ak = bytes.fromhex(late["system_title"]), bytes.fromhex(late["ek"]), bytes.fromhex(late["ak"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for counter in (1, 2, 3):
        sock.sendto(WrapperFrame(1, 0x66, apdu(ek, ak, counter, title=title)).to_bytes(), ("127.0.0.1", port))
    deadline = time.monotonic() + 60
    while len(stored := h.query("SELECT invocation_counter FROM raw_push WHERE system_title = $1", title)) < 3:
        assert time.monotonic() < deadline, (stored, h.log("listener"), h.log("worker"))
        time.sleep(0.3)
    assert sorted(r["invocation_counter"] for r in stored) == [1, 2, 3]
