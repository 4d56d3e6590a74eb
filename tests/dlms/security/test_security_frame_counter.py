"""Frame counter policy and the Appendix 1 HMAC readout (security/frame_counter.py)."""
from __future__ import annotations

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
