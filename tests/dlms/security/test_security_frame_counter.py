"""Frame counter policy and the Appendix 1 HMAC readout (security/frame_counter.py)."""
from __future__ import annotations

import copy
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secvectors import AK, CLIENT_TITLE, EK, SERVER_TITLE
from smartmeter.dlms.security.errors import (
    AuthenticationError,
    CounterExhaustedError,
    ReplayError,
    SecurityEncodeError,
)
from smartmeter.dlms.security.frame_counter import (
    FrameCounterWindow,
    TxFrameCounter,
    frame_counter_response,
    open_protected,
    verify_frame_counter_response,
)
from smartmeter.dlms.security.suites import protect_content


def test_window_accepts_only_counters_above_the_last():
    window = FrameCounterWindow(10)
    for bad in (0, 9, 10):
        with pytest.raises(ReplayError) as info:
            window.check(bad)
        assert info.value.counter == bad and info.value.last_accepted == 10
    pending = window.check(11)
    assert window.last_accepted == 10  # check alone changes nothing
    window.commit(pending)
    assert window.last_accepted == 11
    with pytest.raises(ReplayError):
        window.check(11)
    window.commit(window.check(1000))  # gaps are fine
    assert window.last_accepted == 1000


def test_fresh_window_accepts_zero_and_max_is_final():
    window = FrameCounterWindow(None)
    window.commit(window.check(0))
    window.commit(window.check(0xFFFFFFFF))
    for c in (0, 0xFFFFFFFE, 0xFFFFFFFF):
        with pytest.raises(ReplayError):
            window.check(c)
    window.reset()
    assert window.last_accepted is None
    window.check(0)


def test_stale_pending_cannot_be_committed():
    window = FrameCounterWindow(1)
    first, second = window.check(5), window.check(3)
    window.commit(first)
    with pytest.raises(SecurityEncodeError):
        window.commit(second)  # would move the window backwards
    assert window.last_accepted == 5


@pytest.mark.parametrize("bad", [-1, 1 << 32, "1", 1.0, True])
def test_counters_out_of_range_are_typed_errors(bad):
    with pytest.raises(SecurityEncodeError):
        FrameCounterWindow(0).check(bad)
    with pytest.raises(SecurityEncodeError):
        FrameCounterWindow(bad)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 0xFFFFFFFF), max_size=50))
def test_window_accepts_exactly_the_strictly_increasing_subsequence(counters):
    window = FrameCounterWindow(None)
    accepted = []
    for c in counters:
        try:
            pending = window.check(c)
        except ReplayError:
            assert accepted and c <= accepted[-1]
            continue
        window.commit(pending)
        accepted.append(c)
    assert accepted == sorted(set(accepted))


def test_sending_counter_starts_at_zero_and_refuses_after_max_without_incrementing():
    tx = TxFrameCounter(None)
    assert [tx.reserve() for _ in range(3)] == [0, 1, 2]
    tx = TxFrameCounter(0xFFFFFFFD)
    assert tx.reserve() == 0xFFFFFFFE
    assert tx.reserve() == 0xFFFFFFFF
    assert tx.exhausted
    for _ in range(3):
        with pytest.raises(CounterExhaustedError):
            tx.reserve()
    assert tx.last_used == 0xFFFFFFFF
    tx.reset()
    assert tx.reserve() == 0


def test_open_protected_persists_before_releasing():
    window = FrameCounterWindow(4)
    events = []
    content = protect_content(0x30, EK, AK, CLIENT_TITLE, 5, b"\xc0\x01")

    def persist(value):
        events.append(("persist", value, window.last_accepted))

    header, plain = open_protected(window, content, EK, AK, CLIENT_TITLE, persist)
    assert plain == b"\xc0\x01" and header.invocation_counter == 5
    # persisted while the window still showed the old value
    assert events == [("persist", 5, 4)]
    assert window.last_accepted == 5
    with pytest.raises(ReplayError):
        open_protected(window, content, EK, AK, CLIENT_TITLE, persist)
    assert len(events) == 1


def test_forged_frame_does_not_move_the_window_nor_persist():
    window = FrameCounterWindow(4)
    persisted = []
    forged = bytearray(protect_content(0x30, EK, AK, CLIENT_TITLE, 0xFFFFFFFF, b"\xc0\x01"))
    forged[-1] ^= 1
    with pytest.raises(AuthenticationError):
        open_protected(window, bytes(forged), EK, AK, CLIENT_TITLE, persisted.append)
    assert persisted == [] and window.last_accepted == 4


def test_failed_persist_releases_nothing_and_keeps_the_window():
    window = FrameCounterWindow(4)
    content = protect_content(0x30, EK, AK, CLIENT_TITLE, 5, b"\xc0\x01")

    def broken(value):
        raise OSError("disk full")

    with pytest.raises(OSError):
        open_protected(window, content, EK, AK, CLIENT_TITLE, broken)
    assert window.last_accepted == 4


# --- Appendix 1 ------------------------------------------------------------------------

CHALLENGE = bytes(range(64))


def test_frame_counter_response_is_hmac_sha256_over_titles_challenge_counter():
    expected = hmac.new(AK, SERVER_TITLE + CLIENT_TITLE + CHALLENGE + bytes.fromhex("0000012C"),
                        hashlib.sha256).digest()
    assert frame_counter_response(AK, SERVER_TITLE, CLIENT_TITLE, CHALLENGE, 300) == expected
    assert len(expected) == 32


def test_frame_counter_response_verification():
    r = frame_counter_response(AK, SERVER_TITLE, CLIENT_TITLE, CHALLENGE, 300)
    assert verify_frame_counter_response(AK, SERVER_TITLE, CLIENT_TITLE, CHALLENGE, 300, r) == 300
    for args in (
        (AK, SERVER_TITLE, CLIENT_TITLE, CHALLENGE, 301, r),  # tampered counter
        (AK, CLIENT_TITLE, SERVER_TITLE, CHALLENGE, 300, r),  # titles swapped
        (EK, SERVER_TITLE, CLIENT_TITLE, CHALLENGE, 300, r),  # other key
        (AK, SERVER_TITLE, CLIENT_TITLE, CHALLENGE[::-1], 300, r),
        (AK, SERVER_TITLE, CLIENT_TITLE, CHALLENGE, 300, r[:-1]),
    ):
        with pytest.raises(AuthenticationError):
            verify_frame_counter_response(*args)


def test_frame_counter_challenge_must_be_64_bytes():
    for n in (0, 63, 65):
        with pytest.raises(SecurityEncodeError) as info:
            frame_counter_response(AK, SERVER_TITLE, CLIENT_TITLE, bytes(n), 1)
        assert "64" in str(info.value)


# --- the meter's durable counters (SecurityContext) across power failures ---------------

from smartmeter.dlms.security.context import ClientPolicy, SecurityContext  # noqa: E402
from smartmeter.dlms.server_security import AssociationSecurity  # noqa: E402
from smartmeter.meter.store import MeterStore  # noqa: E402

POLICY = ClientPolicy("management", 1, 1, 0x6C, 7)
DOCUMENTED_SKIP_BOUND = 256  # docs/decisions.md: a power failure skips at most this many counters


class DurableStore:
    """What survives a kill -9: only what was committed with put/set_counter (one commit each).
    A "crash" is a new SecurityContext over the same store; nothing in memory survives."""

    def __init__(self) -> None:
        self.settings, self.counters, self.commits = {}, {}, 0

    def get(self, key, default=None):
        return self.settings.get(key, default)

    def put(self, key, value) -> None:
        self.settings[key] = dict(value) if isinstance(value, dict) else value
        self.commits += 1

    def counter(self, key) -> int:
        return self.counters.get(key, 0)

    def set_counter(self, key, value) -> None:
        self.counters[key] = value
        self.commits += 1


def _accept(context: SecurityContext, counter: int) -> None:
    """What `open_protected` does around an authenticated request: check, persist, commit."""
    pending = context.rx.check(counter)
    context.persist_rx(counter)
    context.rx.commit(pending)


def test_a_fresh_meter_sends_counter_1_first_and_again_after_a_key_change():
    store = DurableStore()
    context = SecurityContext(POLICY, store)
    assert context.next_tx() == 1  # dlms-cosem (a strict client) refuses a first counter 0
    assert SecurityContext(POLICY, store).next_tx() > 1  # a restart never goes back to it
    context.set_key("ek", bytes(16))
    assert context.next_tx() == 1
    association = AssociationSecurity(context, SERVER_TITLE, 1, 7)
    assert association.ded_tx.reserve() == 1  # dedicated-key counters start at 1 too
    association.set_dedicated_key(bytes(16))
    assert association.ded_tx.reserve() == 1


def test_most_set_ups_need_no_durable_commit():
    """A set-up takes three counters each way (AARQ/AARE, pass 3/4, RLRQ/RLRE). The old meter
    committed every received counter (3 commits per set-up); now most set-ups commit nothing."""
    store = DurableStore()
    context = SecurityContext(POLICY, store)
    before, client_counter, set_ups = store.commits, 0, 1000
    for _ in range(set_ups):
        for _ in range(3):
            client_counter += 1
            _accept(context, client_counter)
            context.next_tx()
    assert store.commits - before <= set_ups // 20


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("receive"), st.integers(1, 600)),  # the client's next counter, this far ahead
    st.tuples(st.just("replay"), st.integers(0, 10)),  # an old request again (index from the end)
    st.tuples(st.just("send"), st.integers(1, 300)),
    st.tuples(st.just("kill"), st.just(0)),
    st.tuples(st.just("stop"), st.just(0)),  # a clean stop (flush), then a start
), max_size=60))
def test_no_counter_reused_and_no_replay_accepted_across_kills(operations):
    store = DurableStore()
    context = SecurityContext(POLICY, store)
    accepted: list[int] = []  # every counter the meter ever accepted, in order
    sent: list[int] = []  # every counter the meter ever used
    offered = 0  # the client's highest counter so far
    last_before_kill = None
    for op, arg in operations:
        if op == "receive":
            offered += arg
            try:
                _accept(context, offered)
            except ReplayError:
                # only a counter the meter may have accepted before a kill is refused, and at most
                # one reservation block above what it really accepted
                assert last_before_kill is not None and offered <= last_before_kill + DOCUMENTED_SKIP_BOUND
                continue
            assert not accepted or offered > accepted[-1]
            accepted.append(offered)
            # durable before use: a kill right now must not let the same counter in again
            with pytest.raises(ReplayError):
                SecurityContext(POLICY, copy.deepcopy(store)).rx.check(offered)
        elif op == "replay" and accepted:
            old = accepted[-1 - min(arg, len(accepted) - 1)]
            with pytest.raises(ReplayError):
                context.rx.check(old)
        elif op == "send":
            for _ in range(arg):
                counter = context.next_tx()
                assert counter >= 1 and (not sent or counter > sent[-1])
                sent.append(counter)
            # durable before use: a kill right now continues above it (probed on a copy)
            assert SecurityContext(POLICY, copy.deepcopy(store)).next_tx() > sent[-1]
        elif op == "kill":
            context = SecurityContext(POLICY, store)
            last_before_kill = accepted[-1] if accepted else 0
        elif op == "stop":
            context.flush()
            context = SecurityContext(POLICY, store)
            # a clean stop skips nothing (unless a kill skipped already): both sides follow on
            if accepted and last_before_kill is None:
                context.rx.check(accepted[-1] + 1)
            if sent and last_before_kill is None:
                assert context.tx.last_used == sent[-1]


def test_counters_survive_reopening_the_sqlite_store_without_closing_it(tmp_path):
    """The same with the meter's real store: what set_counter committed is there after a kill
    (the store is reopened without close, as a new process would find it)."""
    first = MeterStore(tmp_path)
    context = SecurityContext(POLICY, first)
    for counter in (5, 6, 900):
        _accept(context, counter)
    used = [context.next_tx() for _ in range(300)]
    after = SecurityContext(POLICY, MeterStore(tmp_path))
    for replay in (5, 6, 900):
        with pytest.raises(ReplayError):
            after.rx.check(replay)
    assert after.next_tx() > max(used)
    first.close()


def test_a_failed_commit_releases_nothing():
    class FullDisk(DurableStore):
        def set_counter(self, key, value):
            raise OSError("disk full")

    context = SecurityContext(POLICY, FullDisk())
    content = protect_content(0x30, EK, AK, CLIENT_TITLE, 7, b"\xc0\x01")
    with pytest.raises(OSError):
        open_protected(context.rx, content, EK, AK, CLIENT_TITLE, context.persist_rx)
    assert context.rx.last_accepted is None
    with pytest.raises(OSError):
        context.next_tx()
