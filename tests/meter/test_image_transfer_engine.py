"""The image transfer engine (smartmeter.meter.image_transfer; IC 18 without DLMS types): the
status machine of companion §7 / IDIS P2 §6.9, every refusal leaving everything as it was, the
resume rule, the abort by disabling, and the durability of the holding file and its bitmap over
restarts and kills.

Expectations come from the scenario: an image of `size` bytes in blocks of `block_size` has
ceil(size / block_size) blocks, each `block_size` long but the last; the verify callback used
here accepts exactly the bytes of the image the test sent (it reads the holding file back)."""
from __future__ import annotations

import base64
import hashlib
import math
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from smartmeter.meter.image_transfer import (
    DEFAULT_BLOCK_SIZE, ActivationRefused, ImageTransfer, Refusal, TransferRefused, TransferStatus, Verification,
)
from smartmeter.meter.store import MeterStore

MAX_SIZE = 1 << 20  # the engine's bound in these tests (the meter's is 16 MiB)
IDENTIFIER = b"SMFW-test-1.0.1"
SIGNATURE = bytes(range(70))
KEY = "image_transfer"
S = TransferStatus


def image_of(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def blocks_of(image: bytes, block_size: int) -> list[bytes]:
    return [image[i:i + block_size] for i in range(0, len(image), block_size)]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Meter:
    """Callbacks of the runtime: a verifier that checks the holding file against the image it
    expects, an activation that may be refused, and the events told."""

    def __init__(self, expected: bytes | None = None) -> None:
        self.expected = expected
        self.verified: list[tuple[bytes, int, object]] = []
        self.activated: list[object] = []
        self.events: list[tuple[int, object]] = []
        self.refuse_activation: str | None = None
        self.engine: ImageTransfer | None = None
        self.record_during_activation = None
        self.record_during_verify = None

    def verify(self, identifier: bytes, size: int, ctx) -> Verification:
        self.verified.append((identifier, size, ctx))
        self.record_during_verify = self.engine._store.get(KEY)
        held = self.engine.read_image()
        if self.expected is None or held != self.expected:
            return Verification(False, "digest mismatch")
        return Verification(True, "signature valid", identifier, size, SIGNATURE)

    def activate(self, ctx) -> None:
        self.activated.append(ctx)
        self.record_during_activation = self.engine._store.get(KEY)
        if self.refuse_activation is not None:
            raise ActivationRefused(self.refuse_activation)

    def on_event(self, code: int, ctx) -> None:
        self.events.append((code, ctx))


@pytest.fixture
def store(tmp_path):
    s = MeterStore(tmp_path / "meter")
    yield s
    s.close()


@pytest.fixture
def holding(tmp_path) -> Path:
    return tmp_path / "meter" / "firmware"


def start(store, holding: Path, meter: Meter, clock: Clock | None = None, max_size: int = MAX_SIZE) -> ImageTransfer:
    """One start of the meter's engine on the same store and holding directory."""
    engine = ImageTransfer(store, holding, meter.verify, meter.activate, meter.on_event, max_size,
                           clock=clock or Clock())
    meter.engine = engine
    return engine


def send_all(engine: ImageTransfer, image: bytes, block_size: int, skip=()) -> None:
    for number, block in enumerate(blocks_of(image, block_size)):
        if number not in skip:
            engine.transfer_block(number, block)


def snapshot(engine: ImageTransfer, store) -> tuple:
    """Everything a request could change: what the attributes show, the stored record, the file."""
    path = engine.image_path
    held = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode)) if path.exists() else None
    return (engine.status, engine.enabled, engine.block_size, engine.image_identifier, engine.image_size,
            engine.transferred_blocks(), engine.first_not_transferred(), engine.image_to_activate,
            engine.last_reason, store.get(KEY), held)


# -- the flow ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, block_size", [(5000, 1024), (1, 64), (64, 64), (65, 64), (4097, 512), (3072, 1024)])
def test_a_whole_transfer_verify_and_activation(store, holding, size, block_size):
    image = image_of(size)
    meter = Meter(image)
    engine = start(store, holding, meter)
    if block_size != DEFAULT_BLOCK_SIZE:
        engine.set_block_size(block_size)
    blocks = math.ceil(size / block_size)
    assert engine.initiate(IDENTIFIER, size) is False  # a new transfer, not a resumption
    assert engine.status == S.INITIATED and engine.blocks == blocks
    assert engine.transferred_blocks() == "0" * blocks and engine.first_not_transferred() == 0
    assert engine.image_path.stat().st_size == size and stat.S_IMODE(engine.image_path.stat().st_mode) == 0o600
    parts = blocks_of(image, block_size)
    assert len(parts) == blocks and len(parts[-1]) == size - (blocks - 1) * block_size
    # the last block first, then the others: the bitmap follows each one
    order = [blocks - 1] + list(range(blocks - 1))
    for k, number in enumerate(order):
        engine.transfer_block(number, parts[number])
        got = set(order[:k + 1])
        assert engine.transferred_blocks() == "".join("1" if n in got else "0" for n in range(blocks))
        assert engine.first_not_transferred() == min(set(range(blocks + 1)) - got)
    assert engine.first_not_transferred() == blocks  # all in: the number of blocks
    ctx = object()
    outcome = engine.verify(ctx)
    assert outcome.ok and engine.status == S.VERIFICATION_SUCCESSFUL
    assert meter.verified == [(IDENTIFIER, size, ctx)] and meter.events == [(17, ctx)]
    assert engine.image_to_activate == Verification(True, "signature valid", IDENTIFIER, size, SIGNATURE)
    engine.activate(ctx)
    assert meter.activated == [ctx] and engine.status == S.ACTIVATION_INITIATED
    assert engine.activation_finished(True, "") is True
    assert engine.status == S.ACTIVATION_SUCCESSFUL and engine.image_to_activate.identifier == IDENTIFIER
    assert not engine.image_path.exists()  # installed: the holding file is no longer needed
    assert meter.events == [(17, ctx)]


def test_the_largest_image_with_the_smallest_blocks(store, holding):
    """Bounded: the bitmap of the largest image in 64-byte blocks, and one byte more is refused."""
    engine = start(store, holding, Meter())
    engine.set_block_size(64)
    with pytest.raises(TransferRefused) as refused:
        engine.initiate(IDENTIFIER, MAX_SIZE + 1)
    assert refused.value.kind == Refusal.INVALID
    engine.initiate(IDENTIFIER, MAX_SIZE)
    blocks = MAX_SIZE // 64
    assert engine.blocks == blocks and engine.transferred_blocks() == "0" * blocks
    engine.transfer_block(blocks - 1, bytes(64))
    assert engine.transferred_blocks() == "0" * (blocks - 1) + "1"
    assert engine.first_not_transferred() == 0


def test_a_block_received_twice_is_overwritten(store, holding):
    image = image_of(3000)
    meter = Meter(image)
    engine = start(store, holding, meter)
    engine.initiate(IDENTIFIER, 3000)
    engine.transfer_block(1, bytes(1024))  # garbage first
    send_all(engine, image, 1024)  # then the right bytes, block 1 again
    assert engine.verify().ok


def test_a_failed_verification_is_status_4_event_51_and_drops_the_file(store, holding):
    image = image_of(2500)
    meter = Meter(image_of(2500, seed=2))  # the verifier expects another image
    engine = start(store, holding, meter)
    engine.initiate(IDENTIFIER, 2500)
    send_all(engine, image, 1024)
    ctx = object()
    outcome = engine.verify(ctx)
    assert not outcome.ok and outcome.reason == "digest mismatch"
    assert engine.status == S.VERIFICATION_FAILED and engine.last_reason == "digest mismatch"
    assert meter.events == [(51, ctx)] and engine.image_to_activate is None
    assert not engine.image_path.exists()


def test_a_success_for_another_image_than_initiated_is_a_failure(store, holding):
    """The identifier and size the transfer was initiated with are part of the verification."""
    image = image_of(700)
    meter = Meter(image)
    meter.verify = lambda identifier, size, ctx: Verification(True, "fine", b"other", size, SIGNATURE)
    engine = start(store, holding, meter)
    engine.initiate(IDENTIFIER, 700)
    send_all(engine, image, 1024)
    assert not engine.verify().ok
    assert engine.status == S.VERIFICATION_FAILED and [code for code, _ in meter.events] == [51]


def test_a_verifier_that_raises_leaves_the_transfer_initiated(store, holding):
    image = image_of(700)
    meter = Meter(image)

    def broken(identifier, size, ctx):
        raise RuntimeError("bug")

    meter.verify = broken
    engine = start(store, holding, meter)
    engine.initiate(IDENTIFIER, 700)
    send_all(engine, image, 1024)
    with pytest.raises(RuntimeError):
        engine.verify()
    assert engine.status == S.INITIATED and store.get(KEY)["status"] == 1 and meter.events == []
    engine._verify_image = Meter.verify.__get__(meter)  # the verifier fixed: verify is asked again
    assert engine.verify().ok and engine.status == S.VERIFICATION_SUCCESSFUL


def test_an_event_log_that_fails_does_not_undo_the_outcome(store, holding):
    image = image_of(100)
    meter = Meter(image)

    def failing(code, ctx):
        raise OSError("disk full")

    meter.on_event = failing
    engine = start(store, holding, meter)
    engine.initiate(IDENTIFIER, 100)
    send_all(engine, image, 1024)
    assert engine.verify().ok and store.get(KEY)["status"] == 3


def test_activation_is_stored_as_under_way_before_the_callback_runs(store, holding):
    """A kill during the installation leaves status 5 for the runtime to decide at start."""
    image = image_of(100)
    meter = Meter(image)
    engine = start(store, holding, meter)
    engine.initiate(IDENTIFIER, 100)
    send_all(engine, image, 1024)
    engine.verify()
    engine.activate()
    assert meter.record_during_activation["status"] == 5
    assert engine.image_path.read_bytes() == image  # the installation reads it
    again = start(store, holding, Meter())
    assert again.status == S.ACTIVATION_INITIATED and again.read_image() == image


def test_activation_failed_at_start_is_status_7_and_event_51(store, holding):
    image = image_of(100)
    meter = Meter(image)
    engine = start(store, holding, meter)
    engine.initiate(IDENTIFIER, 100)
    send_all(engine, image, 1024)
    engine.verify()
    engine.activate()
    restarted = start(store, holding, meter)
    assert restarted.activation_finished(False, "the new software did not come up") is True
    assert restarted.status == S.ACTIVATION_FAILED and restarted.last_reason == "the new software did not come up"
    assert meter.events[-1] == (51, None) and restarted.image_to_activate is None
    assert not restarted.image_path.exists()
    assert start(store, holding, Meter()).status == S.ACTIVATION_FAILED


@pytest.mark.parametrize("status", [S.NOT_INITIATED, S.INITIATED, S.VERIFICATION_SUCCESSFUL,
                                    S.ACTIVATION_SUCCESSFUL])
def test_activation_finished_outside_status_5_changes_nothing(store, holding, status):
    meter = Meter()
    engine = in_status(store, holding, meter, status)
    before = snapshot(engine, store)
    assert engine.activation_finished(True) is False and engine.activation_finished(False) is False
    assert snapshot(engine, store) == before


# -- every refusal changes nothing --------------------------------------------------------------------

SIZE = 2500  # three blocks of 1024: 1024, 1024, 452


def in_status(store, holding, meter: Meter, status: TransferStatus) -> ImageTransfer:
    """An engine in `status`, reached the way a client gets there (status 1: block 0 only)."""
    image = image_of(SIZE)
    meter.expected = image if status != S.VERIFICATION_FAILED else image_of(SIZE, seed=9)
    engine = start(store, holding, meter)
    if status == S.NOT_INITIATED:
        return engine
    engine.initiate(IDENTIFIER, SIZE)
    if status == S.INITIATED:
        engine.transfer_block(0, image[:1024])
        return engine
    send_all(engine, image, 1024)
    engine.verify()
    if status in (S.VERIFICATION_SUCCESSFUL, S.VERIFICATION_FAILED):
        return engine
    engine.activate()
    if status == S.ACTIVATION_INITIATED:
        return engine
    engine.activation_finished(status == S.ACTIVATION_SUCCESSFUL, "")
    return engine


ALL_STATUSES = [S.NOT_INITIATED, S.INITIATED, S.VERIFICATION_SUCCESSFUL, S.VERIFICATION_FAILED,
                S.ACTIVATION_INITIATED, S.ACTIVATION_SUCCESSFUL, S.ACTIVATION_FAILED]
GOOD_BLOCK = image_of(SIZE)[:1024]

REFUSALS = [
    # (status, what is asked, why it is refused)
    *[(s, ("initiate", b"", SIZE), Refusal.INVALID) for s in (S.NOT_INITIATED, S.INITIATED)],
    (S.NOT_INITIATED, ("initiate", b"x" * 65, SIZE), Refusal.INVALID),
    (S.NOT_INITIATED, ("initiate", IDENTIFIER, 0), Refusal.INVALID),
    (S.NOT_INITIATED, ("initiate", IDENTIFIER, MAX_SIZE + 1), Refusal.INVALID),
    (S.VERIFICATION_SUCCESSFUL, ("initiate", IDENTIFIER, MAX_SIZE + 1), Refusal.INVALID),
    (S.INITIATED, ("initiate", b"another image", SIZE), Refusal.INVALID),
    (S.INITIATED, ("initiate", IDENTIFIER, SIZE + 1), Refusal.INVALID),
    (S.ACTIVATION_INITIATED, ("initiate", IDENTIFIER, SIZE), Refusal.INVALID),
    (S.INITIATED, ("block", 3, bytes(1024)), Refusal.INVALID),  # three blocks: 0..2
    (S.INITIATED, ("block", 2**32 - 1, bytes(1024)), Refusal.INVALID),
    (S.INITIATED, ("block", 0, bytes(1023)), Refusal.INVALID),
    (S.INITIATED, ("block", 1, bytes(1025)), Refusal.INVALID),
    (S.INITIATED, ("block", 2, bytes(1024)), Refusal.INVALID),  # the last block is 452 bytes
    (S.INITIATED, ("block", 2, bytes(451)), Refusal.INVALID),
    (S.INITIATED, ("block", 1, b""), Refusal.INVALID),
    *[(s, ("block", 0, GOOD_BLOCK), Refusal.INVALID) for s in ALL_STATUSES if s != S.INITIATED],
    (S.INITIATED, ("verify",), Refusal.INVALID),  # blocks 1 and 2 are missing
    *[(s, ("verify",), Refusal.INVALID) for s in (S.NOT_INITIATED, S.VERIFICATION_FAILED, S.ACTIVATION_INITIATED,
                                                  S.ACTIVATION_SUCCESSFUL, S.ACTIVATION_FAILED)],
    *[(s, ("activate",), Refusal.INVALID) for s in (S.NOT_INITIATED, S.INITIATED, S.VERIFICATION_FAILED,
                                                    S.ACTIVATION_FAILED)],
    (S.ACTIVATION_INITIATED, ("activate",), Refusal.BUSY),
    (S.NOT_INITIATED, ("block_size", 63), Refusal.INVALID),
    (S.NOT_INITIATED, ("block_size", 1025), Refusal.INVALID),
    (S.NOT_INITIATED, ("block_size", 0), Refusal.INVALID),
    *[(s, ("block_size", 512), Refusal.INVALID) for s in (S.INITIATED, S.VERIFICATION_SUCCESSFUL,
                                                          S.VERIFICATION_FAILED, S.ACTIVATION_INITIATED)],
]


def ask(engine: ImageTransfer, request: tuple) -> None:
    what, *args = request
    {"initiate": engine.initiate, "block": engine.transfer_block, "verify": engine.verify,
     "activate": engine.activate, "block_size": engine.set_block_size}[what](*args)


@pytest.mark.parametrize("status, request_, kind", REFUSALS,
                         ids=[f"{s.name.lower()}-{r[0]}-{i}" for i, (s, r, _) in enumerate(REFUSALS)])
def test_a_refusal_changes_nothing(store, holding, status, request_, kind):
    meter = Meter()
    engine = in_status(store, holding, meter, status)
    assert engine.status == status
    before, told = snapshot(engine, store), (list(meter.verified), list(meter.activated), list(meter.events))
    with pytest.raises(TransferRefused) as refused:
        ask(engine, request_)
    assert refused.value.kind == kind and refused.value.reason
    assert snapshot(engine, store) == before
    assert (meter.verified, meter.activated, meter.events) == told
    # nor after an orderly restart
    engine.close()
    closed = snapshot(engine, store)
    assert snapshot(start(store, holding, Meter()), store) == closed


@pytest.mark.parametrize("request_", [("initiate", IDENTIFIER, SIZE), ("block", 0, GOOD_BLOCK), ("verify",),
                                      ("activate",)], ids=lambda r: r[0])
@pytest.mark.parametrize("status", [S.NOT_INITIATED, S.ACTIVATION_SUCCESSFUL])
def test_disabled_transfers_refuse_every_method(store, holding, status, request_):
    meter = Meter()
    engine = in_status(store, holding, meter, status)
    engine.set_enabled(False)
    before = snapshot(engine, store)
    with pytest.raises(TransferRefused) as refused:
        ask(engine, request_)
    assert refused.value.kind == Refusal.DISABLED
    assert snapshot(engine, store) == before


def test_a_refused_activation_stays_verified(store, holding):
    meter = Meter()
    engine = in_status(store, holding, meter, S.VERIFICATION_SUCCESSFUL)
    meter.refuse_activation = "slot busy"
    before = snapshot(engine, store)
    with pytest.raises(TransferRefused) as refused:
        engine.activate()
    assert refused.value.kind == Refusal.INVALID and "slot busy" in refused.value.reason
    assert len(meter.activated) == 1
    assert snapshot(engine, store)[:8] == before[:8]  # status 3, the image to activate shown
    assert store.get(KEY)["status"] == 3 and engine.last_reason == "slot busy"
    meter.refuse_activation = None
    engine.activate()
    assert engine.status == S.ACTIVATION_INITIATED


def test_re_invocations_that_succeed_without_doing_anything_again(store, holding):
    """verify when verified and activate when activated answer success and run nothing again."""
    meter = Meter()
    engine = in_status(store, holding, meter, S.VERIFICATION_SUCCESSFUL)
    before, verified = snapshot(engine, store), list(meter.verified)
    assert engine.verify().ok
    assert snapshot(engine, store) == before and meter.verified == verified and len(meter.events) == 1
    engine.activate()
    engine.activation_finished(True)
    before, activated = snapshot(engine, store), list(meter.activated)
    engine.activate()
    assert snapshot(engine, store) == before and meter.activated == activated


# -- initiate: resume or afresh ------------------------------------------------------------------------


def test_initiate_with_the_same_image_resumes(store, holding):
    image = image_of(SIZE)
    meter = Meter(image)
    engine = start(store, holding, meter)
    engine.initiate(IDENTIFIER, SIZE)
    engine.transfer_block(0, image[:1024])
    engine.transfer_block(2, image[2048:])
    assert engine.initiate(IDENTIFIER, SIZE) is True
    assert engine.transferred_blocks() == "101" and engine.first_not_transferred() == 1
    assert engine.image_path.read_bytes()[:1024] == image[:1024]
    # also after a restart
    engine.close()
    again = start(store, holding, meter)
    assert again.initiate(IDENTIFIER, SIZE) is True and again.transferred_blocks() == "101"
    again.transfer_block(1, image[1024:2048])
    assert again.verify().ok


@pytest.mark.parametrize("identifier, size", [(b"next", 1500), (IDENTIFIER, SIZE)], ids=["another", "the same"])
@pytest.mark.parametrize("status", [S.NOT_INITIATED, S.VERIFICATION_SUCCESSFUL, S.VERIFICATION_FAILED,
                                    S.ACTIVATION_SUCCESSFUL, S.ACTIVATION_FAILED])
def test_initiate_after_a_transfer_ended_starts_afresh(store, holding, status, identifier, size):
    """Only status 1 resumes: after a verification or an activation even the same image starts again."""
    meter = Meter()
    engine = in_status(store, holding, meter, status)
    assert engine.initiate(identifier, size) is False
    assert engine.status == S.INITIATED and engine.image_to_activate is None and engine.last_reason == ""
    blocks = math.ceil(size / 1024)
    assert engine.transferred_blocks() == "0" * blocks and engine.first_not_transferred() == 0
    assert engine.image_path.read_bytes() == bytes(size)  # nothing of the image before
    engine.close()
    assert start(store, holding, Meter()).transferred_blocks() == "0" * blocks


# -- block size ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [S.NOT_INITIATED, S.ACTIVATION_SUCCESSFUL, S.ACTIVATION_FAILED])
def test_the_block_size_is_written_before_initiation(store, holding, status):
    meter = Meter()
    engine = in_status(store, holding, meter, status)
    assert engine.block_size == DEFAULT_BLOCK_SIZE
    engine.set_block_size(64)
    engine.set_block_size(1024)
    engine.set_block_size(200)
    assert engine.block_size == 200 and start(store, holding, Meter()).block_size == 200
    engine.initiate(b"next", 1000)
    assert engine.blocks == math.ceil(1000 / 200) == 5
    with pytest.raises(TransferRefused):
        engine.transfer_block(0, bytes(1024))
    engine.transfer_block(4, bytes(1000 - 4 * 200))


# -- abort ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_disabling_aborts_in_any_status(store, holding, status):
    meter = Meter()
    engine = in_status(store, holding, meter, status)
    engine.set_enabled(False)
    assert (engine.enabled, engine.status, engine.image_identifier, engine.transferred_blocks(),
            engine.first_not_transferred(), engine.image_to_activate) == (False, S.NOT_INITIATED, None, "", 0, None)
    assert not engine.image_path.exists()
    restarted = start(store, holding, Meter())
    assert (restarted.enabled, restarted.status) == (False, S.NOT_INITIATED)
    # enabled again: a new transfer, nothing of the old one
    restarted.set_enabled(True)
    assert restarted.initiate(IDENTIFIER, SIZE) is False and restarted.transferred_blocks() == "000"
    assert start(store, holding, Meter()).enabled is True


def test_enabling_when_enabled_and_disabling_when_disabled_change_nothing(store, holding):
    engine = in_status(store, holding, Meter(), S.INITIATED)
    before = snapshot(engine, store)
    engine.set_enabled(True)
    assert snapshot(engine, store) == before
    engine.set_enabled(False)
    before = snapshot(engine, store)
    engine.set_enabled(False)
    assert snapshot(engine, store) == before


# -- durability ------------------------------------------------------------------------------------------


def test_everything_survives_an_orderly_restart(store, holding):
    image = image_of(5000)
    meter = Meter(image)
    clock = Clock()
    engine = start(store, holding, meter, clock)
    engine.set_block_size(512)
    engine.initiate(IDENTIFIER, 5000)
    send_all(engine, image, 512, skip={3, 9})
    shown = (engine.transferred_blocks(), engine.first_not_transferred())
    assert shown == ("1110111110", 3)
    engine.close()
    again = start(store, holding, meter, clock)
    assert (again.status, again.block_size, again.image_identifier, again.image_size) == (S.INITIATED, 512,
                                                                                          IDENTIFIER, 5000)
    assert (again.transferred_blocks(), again.first_not_transferred()) == shown
    again.transfer_block(3, image[3 * 512:4 * 512])
    again.transfer_block(9, image[9 * 512:])
    assert again.verify().ok
    again.close()
    verified = start(store, holding, meter, clock)
    assert verified.status == S.VERIFICATION_SUCCESSFUL and verified.image_to_activate.signature == SIGNATURE
    verified.activate()
    assert start(store, holding, meter, clock).status == S.ACTIVATION_INITIATED


def test_a_kill_loses_at_most_the_blocks_of_the_last_second(store, holding):
    """Blocks arrive every 0.3 s; the record is stored when a block finds the last store a second
    old. Killed (the engine dropped without close) after block 6 at 1.8 s: block 4 at 1.2 s found
    the store of the initiation (0 s) a second old and stored 0..4; 5 and 6 are lost."""
    image = image_of(64 * 10)
    meter = Meter(image)
    clock = Clock()
    start_time = clock.t
    engine = start(store, holding, meter, clock)
    engine.set_block_size(64)
    engine.initiate(IDENTIFIER, len(image))  # stored at start_time
    parts = blocks_of(image, 64)
    arrivals = {}
    for number in range(7):
        clock.t = start_time + 0.3 * number
        arrivals[number] = clock.t
        engine.transfer_block(number, parts[number])
    killed_at = clock.t
    # the guarantee: every block older than a second at the kill is stored, none not yet received
    restarted = start(store, holding, meter, clock)
    claimed = {n for n, bit in enumerate(restarted.transferred_blocks()) if bit == "1"}
    assert claimed <= set(arrivals)
    assert {n for n, t in arrivals.items() if killed_at - t >= 1.0} <= claimed
    # in this scenario: block 4 (at 1.2 s) found the store of 0 s a second old and stored 0..4
    assert claimed == {0, 1, 2, 3, 4}
    held = restarted.image_path.read_bytes()
    for n in claimed:  # a block the bitmap shows is on the disk
        assert held[n * 64:(n + 1) * 64] == parts[n]
    # the client resends what the bitmap shows missing
    assert restarted.first_not_transferred() == 5
    send_all(restarted, image, 64, skip=claimed)
    assert restarted.verify().ok


def test_tick_stores_the_last_blocks_of_a_stalled_transfer(store, holding):
    image = image_of(300)
    meter = Meter(image)
    clock = Clock()
    engine = start(store, holding, meter, clock)
    engine.set_block_size(100)
    engine.initiate(IDENTIFIER, 300)
    clock.t += 0.5
    engine.transfer_block(0, image[:100])
    engine.tick()  # half a second after the last store: not yet
    assert start(store, holding, Meter(), clock).transferred_blocks() == "000"
    clock.t += 0.5
    engine.tick()
    assert start(store, holding, Meter(), clock).transferred_blocks() == "100"


def test_verify_stores_the_blocks_first(store, holding):
    """The blocks are stored before the verification runs (a kill during it finds them all), and
    killed right after it the restart finds the image verified."""
    image = image_of(300)
    meter = Meter(image)
    engine = start(store, holding, meter, Clock())  # the clock stands: no store by time
    engine.set_block_size(100)
    engine.initiate(IDENTIFIER, 300)
    send_all(engine, image, 100)
    assert store.get(KEY)["status"] == 1 and start(store, holding, Meter()).transferred_blocks() == "000"
    meter.engine = engine
    engine.verify()
    during = meter.record_during_verify
    assert during["status"] == 1 and base64.b64decode(during["transfer"]["bitmap"]) == bytes([0b11100000])
    restarted = start(store, holding, meter)
    assert restarted.status == S.VERIFICATION_SUCCESSFUL and restarted.transferred_blocks() == "111"
    assert restarted.read_image() == image


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from smartmeter.meter.image_transfer import ImageTransfer
    from smartmeter.meter.store import MeterStore
    data, size, block, interval = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    engine = ImageTransfer(MeterStore(data), data / "firmware", None, None, None, 1 << 20,
                           persist_interval=interval)
    engine.set_block_size(block)
    engine.initiate(b"killed", size)
    number = 0
    while True:  # the blocks over and over until killed; each ack after its call returned
        value = bytes([number % 251 + 1]) * min(block, size - number * block)
        before = time.monotonic()
        engine.transfer_block(number, value)
        print(number, before, time.monotonic(), flush=True)
        number = (number + 1) % (-(-size // block))
        time.sleep(0.005)
""")


def test_kill_9_between_block_writes(tmp_path):
    """A real process killed with SIGKILL: every block the bitmap claims holds its bytes, and
    every block acknowledged at least one store interval before another one started is claimed
    (the record is stored at the latest with that later block)."""
    data = tmp_path / "meter"
    size, block, interval = 64 * 400, 64, 0.2
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(data), str(size), str(block), str(interval)],
                             stdout=subprocess.PIPE, text=True, env=env)
    acks = []  # (number, time before the call, time after it)
    try:
        deadline = time.monotonic() + 60
        while len(acks) < 150 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            number, before, after = line.split()
            acks.append((int(number), float(before), float(after)))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        rest = child.stdout.read()
        child.stdout.close()
    assert len(acks) == 150, "the writer did not run"
    for line in rest.splitlines():  # acknowledged after we stopped reading: received all the same
        number, before, after = line.split()
        acks.append((int(number), float(before), float(after)))
    blocks = size // block
    assert len(acks) < blocks  # one pass: every block was written once
    meter = Meter()
    restarted = start(MeterStore(data), data / "firmware", meter)
    claimed = {n for n, bit in enumerate(restarted.transferred_blocks()) if bit == "1"}
    acked = {n for n, _, _ in acks}
    in_flight = {max(acked) + 1}  # started but not acknowledged: may or may not be stored
    assert claimed <= acked | in_flight
    last_start = max(before for _, before, _ in acks)
    assert {n for n, _, after in acks if last_start - after >= interval} <= claimed
    assert len(claimed) > 0
    held = restarted.image_path.read_bytes()
    for n in claimed:
        assert held[n * block:(n + 1) * block] == bytes([n % 251 + 1]) * block, n


def test_a_missing_holding_file_makes_the_claimed_blocks_missing(store, holding):
    image = image_of(SIZE)
    meter = Meter(image)
    engine = start(store, holding, meter)
    engine.initiate(IDENTIFIER, SIZE)
    send_all(engine, image, 1024, skip={1})
    engine.close()
    engine.image_path.unlink()
    restarted = start(store, holding, meter)
    assert restarted.status == S.INITIATED and restarted.transferred_blocks() == "000"
    assert restarted.image_path.stat().st_size == SIZE
    assert restarted.initiate(IDENTIFIER, SIZE) is True  # still the transfer under way
    send_all(restarted, image, 1024)
    assert restarted.verify().ok


def test_a_truncated_holding_file_after_verification_is_transferred_again(store, holding):
    meter = Meter()
    engine = in_status(store, holding, meter, S.VERIFICATION_SUCCESSFUL)
    engine.close()
    with open(engine.image_path, "r+b") as f:
        f.truncate(100)
    restarted = start(store, holding, meter)
    assert restarted.status == S.INITIATED and restarted.image_to_activate is None
    assert restarted.transferred_blocks() == "000"


@pytest.mark.parametrize("status", [S.NOT_INITIATED, S.VERIFICATION_FAILED, S.ACTIVATION_SUCCESSFUL])
def test_a_holding_file_left_by_a_kill_is_removed_at_start(store, holding, status):
    """Killed between storing the record and deleting the file: the start deletes it."""
    engine = in_status(store, holding, Meter(), status)
    holding.mkdir(parents=True, exist_ok=True)
    engine.image_path.write_bytes(b"left over")
    start(store, holding, Meter())
    assert not engine.image_path.exists()


@pytest.mark.parametrize("record", [
    "nonsense", 7, {"version": 2}, {"version": 1},
    {"version": 1, "block_size": 10, "enabled": True, "status": 0, "reason": "", "transfer": None, "info": None},
    {"version": 1, "block_size": 1024, "enabled": "yes", "status": 0, "reason": "", "transfer": None, "info": None},
    {"version": 1, "block_size": 1024, "enabled": True, "status": 9, "reason": "", "transfer": None, "info": None},
    {"version": 1, "block_size": 1024, "enabled": True, "status": 1, "reason": "", "transfer": None, "info": None},
    {"version": 1, "block_size": 1024, "enabled": True, "status": 1, "reason": "", "info": None,
     "transfer": {"identifier": "zz", "size": 10, "block_size": 64, "bitmap": "AA=="}},
    {"version": 1, "block_size": 1024, "enabled": True, "status": 1, "reason": "", "info": None,
     "transfer": {"identifier": "41", "size": 10, "block_size": 64, "bitmap": "AAA="}},  # 2 bytes for 1 block
    {"version": 1, "block_size": 1024, "enabled": True, "status": 1, "reason": "", "info": None,
     "transfer": {"identifier": "41", "size": 10, "block_size": 64, "bitmap": "wA=="}},  # a padding bit set
    {"version": 1, "block_size": 1024, "enabled": True, "status": 1, "reason": "", "info": None,
     "transfer": {"identifier": "41", "size": MAX_SIZE + 1, "block_size": 1024, "bitmap": ""}},
    {"version": 1, "block_size": 1024, "enabled": True, "status": 3, "reason": "", "info": None,
     "transfer": {"identifier": "41", "size": 10, "block_size": 64, "bitmap": "gA=="}},  # verified without info
    {"version": 1, "block_size": 1024, "enabled": False, "status": 1, "reason": "", "info": None,
     "transfer": {"identifier": "41", "size": 10, "block_size": 64, "bitmap": "gA=="}},
])
def test_a_malformed_stored_record_is_forgotten(store, holding, record):
    """A transfer can always be done again: a record edited outside the meter does not stop it."""
    store.put(KEY, record)
    holding.mkdir(parents=True)
    (holding / "holding.img").write_bytes(bytes(10))
    engine = start(store, holding, Meter())
    assert (engine.status, engine.transferred_blocks(), engine.image_to_activate) == (S.NOT_INITIATED, "", None)
    assert not engine.image_path.exists() and store.get(KEY)["status"] == 0
    assert engine.initiate(IDENTIFIER, 10) is False


def test_the_holding_file_is_private(store, holding):
    old = os.umask(0)
    try:
        engine = start(store, holding, Meter())
        engine.initiate(IDENTIFIER, 100)
    finally:
        os.umask(old)
    assert stat.S_IMODE(engine.image_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(holding.stat().st_mode) & 0o077 == 0


def test_the_image_read_back_is_the_one_sent(store, holding):
    image = image_of(10_000)
    meter = Meter(image)
    engine = start(store, holding, meter)
    engine.initiate(IDENTIFIER, len(image))
    send_all(engine, image, 1024)
    engine.verify()
    assert hashlib.sha256(engine.read_image()).digest() == hashlib.sha256(image).digest()


def test_activation_of_an_image_not_verified_verifies_it_first(store, holding):
    """Blue Book: an image not verified before is verified as part of its activation. With every
    block in, activate runs the verification (event 17) and then the activation; with a block
    missing it is refused and changes nothing; a verification that fails ends in status 4."""
    image = image_of(3000)
    meter = Meter(expected=image)
    engine = start(store, holding, meter)
    engine.initiate(IDENTIFIER, len(image))
    send_all(engine, image, engine.block_size, skip={1})
    before = snapshot(engine, store)
    with pytest.raises(TransferRefused):
        engine.activate()
    assert snapshot(engine, store) == before and meter.verified == [] and meter.activated == []
    engine.transfer_block(1, blocks_of(image, engine.block_size)[1])
    engine.activate()
    assert [code for code, _ in meter.events] == [17] and len(meter.verified) == 1 == len(meter.activated)
    assert engine.status == S.ACTIVATION_INITIATED

    other = start(store, holding, Meter(expected=b"another image"))
    other.set_enabled(False)
    other.set_enabled(True)
    other.initiate(IDENTIFIER, len(image))
    send_all(other, image, other.block_size)
    with pytest.raises(TransferRefused) as refused:
        other.activate()
    assert "verification before the activation failed" in refused.value.reason
    assert other.status == S.VERIFICATION_FAILED
