"""The certification authority is decided inside the legal part: from its own check of the
Certification client's HLS 6 exchange (SHA-256 with the secret it holds), never from a flag the
communication side sets. Forged, replayed, released and missing claims are refused, counted
and logged (rate-limited), and change nothing. The expected f(StoC) is computed here with
hashlib from the scenario's secret (tests/authority_support.py), not by the code under test."""
from __future__ import annotations

import json
import os

import pytest

from authority_support import SERVER_TITLE, TEST_SECRET, certification_token, f_stoc
from smartmeter.legal import interface as legal
from smartmeter.legal.process import encode_command

T0 = 1_773_144_000
TITLE = "4b464d0000000007"
OTHER_TITLE = "4b464d0000000009"
EVENT_AUTHORITY_REFUSED = 214
CHALLENGE_LIFETIME = 120  # s, as documented in docs/welmec/protective-interface.md
MAX_CHALLENGES, MAX_TOKENS = 8, 4
LOG_PERIOD = 3600  # s: one log entry per refusal condition per period


@pytest.fixture
def clock():
    return [1000.0]


@pytest.fixture
def part(tmp_path, clock):
    p = legal.LegalInterface(tmp_path, monotonic=lambda: clock[0])
    p.execute(legal.ProvisionAuthoritySecret(TEST_SECRET.hex()))
    yield p
    p.close()


def legal_state(part) -> tuple:
    """What an authority claim could change: parameters, record number, mode, certification log."""
    return (part.execute(legal.ReadParameters()), part.execute(legal.ReadParameterRecordNumber()),
            part.execute(legal.ReadCertificationMode()).active, len(part.execute(legal.ReadCertificationLog())))


def authority_refusals(part) -> list[dict]:
    return [json.loads(r.fields_json) for r in part.execute(legal.ReadMetrologicalLog())
            if r.event_id == EVENT_AUTHORITY_REFUSED]


def challenge(part, title: str = TITLE, secret: bytes = TEST_SECRET) -> tuple[str, str]:
    """Open a challenge and answer it as a client holding `secret`: -> (challenge_id, f(StoC) hex)."""
    ctos = os.urandom(16)
    challenge_id, stoc_hex = part.execute(legal.OpenAuthorityChallenge(title, SERVER_TITLE.hex(), ctos.hex()))
    assert len(bytes.fromhex(stoc_hex)) >= 8
    return challenge_id, f_stoc(secret, bytes.fromhex(title), SERVER_TITLE, bytes.fromhex(stoc_hex), ctos).hex()


def assert_refused(part, command, condition: str) -> None:
    """`command` is refused, counted once, logged under `condition`, and changes nothing."""
    before, count, logged = legal_state(part), part.execute(legal.ReadRefusedCommandCount()), authority_refusals(part)
    with pytest.raises(legal.CommandRefused):
        part.execute(command)
    assert legal_state(part) == before
    assert part.execute(legal.ReadRefusedCommandCount()) == count + 1
    new = authority_refusals(part)[len(logged):]
    assert [e["condition"] for e in new] in ([condition], [])  # [] only while this condition's window is open
    assert any(e["condition"] == condition for e in authority_refusals(part))


def test_the_certification_client_proving_the_secret_starts_the_mode_and_changes_a_parameter(part, clock):
    """With f(StoC) computed from the Certification secret the legal part hands out a token and
    answers f(CtoS) the client can check; with that token the mode starts and a parameter changes."""
    ctos = os.urandom(16)
    challenge_id, stoc_hex = part.execute(legal.OpenAuthorityChallenge(TITLE, SERVER_TITLE.hex(), ctos.hex()))
    stoc = bytes.fromhex(stoc_hex)
    token, server_response = part.execute(legal.ProveAuthority(
        challenge_id, f_stoc(TEST_SECRET, bytes.fromhex(TITLE), SERVER_TITLE, stoc, ctos).hex()))
    # pass 4 as the client checks it: SHA-256(secret || SysT-S || SysT-C || CtoS || StoC)
    assert bytes.fromhex(server_response) == f_stoc(TEST_SECRET, SERVER_TITLE, bytes.fromhex(TITLE), ctos, stoc)
    assert part.execute(legal.SetCertificationMode(True, T0, TITLE, token)).active
    assert part.execute(legal.SetParameters((("meter_constant", 2000),), T0, TITLE, token)) == 1
    assert dict(part.execute(legal.ReadParameters()))["meter_constant"] == 2000
    assert part.execute(legal.ReadRefusedCommandCount()) == 0 and authority_refusals(part) == []


@pytest.mark.welmec("P7", "U7")
def test_a_forged_authority_claim_is_refused_counted_and_logged(part):
    """A token the legal part never issued, and an f(StoC) made without the Certification secret,
    are refused, counted and logged; the parameters, record number and mode stay as they were."""
    forged = os.urandom(16).hex()
    assert_refused(part, legal.SetCertificationMode(True, T0, TITLE, forged), "forged")
    assert_refused(part, legal.SetParameters((("meter_constant", 2000),), T0, TITLE, forged), "forged")
    assert_refused(part, legal.WriteCertificationObject(True, 3, 0, 0, 4000, T0, TITLE, forged), "forged")
    challenge_id, _ = challenge(part)
    _, wrong = challenge(part, secret=b"not the secret!!")
    assert_refused(part, legal.ProveAuthority(challenge_id, wrong), "forged")
    # a genuine token is bound to the client system title that won it
    token = certification_token(part, TITLE)
    assert_refused(part, legal.SetCertificationMode(True, T0, OTHER_TITLE, token), "forged")


@pytest.mark.welmec("P7", "U7")
def test_an_unauthenticated_parameter_change_or_mode_start_is_refused_counted_and_logged(part):
    """Without any authority claim, outside certification mode, a parameter change and a mode
    start are refused, counted and logged as unauthenticated; nothing changes."""
    assert_refused(part, legal.SetParameters((("meter_constant", 2000),), T0, TITLE), "unauthenticated")
    assert_refused(part, legal.SetCertificationMode(True, T0, TITLE), "unauthenticated")
    assert_refused(part, legal.WriteCertificationObject(True, 0, 0, 0, 0, T0, TITLE), "unauthenticated")
    # the secret, once held, is changed only by the authority
    assert_refused(part, legal.ProvisionAuthoritySecret(os.urandom(16).hex()), "unauthenticated")
    assert certification_token(part, TITLE)  # the old secret still holds


@pytest.mark.welmec("P7", "U7")
def test_a_replayed_certification_exchange_and_a_released_token_are_refused(part, clock):
    """A recorded (challenge, f(StoC)) played again, a challenge past its lifetime, and a token
    after its association's release are refused, counted and logged; nothing changes."""
    challenge_id, response = challenge(part)
    token, _ = part.execute(legal.ProveAuthority(challenge_id, response))
    assert_refused(part, legal.ProveAuthority(challenge_id, response), "replayed")
    late_id, late_response = challenge(part)
    clock[0] += CHALLENGE_LIFETIME + 1
    assert_refused(part, legal.ProveAuthority(late_id, late_response), "replayed")
    assert part.execute(legal.EndAuthority(token)) is True
    assert_refused(part, legal.SetCertificationMode(True, T0, TITLE, token), "forged")


@pytest.mark.welmec("P3", "P7")
@pytest.mark.parametrize("command", [
    legal.SetCertificationMode(True, T0, TITLE, "zz" * 16),
    legal.SetCertificationMode(True, T0, TITLE, "a" * 100_000),
    legal.SetParameters((("meter_constant", 2000),), T0, "00", os.urandom(16).hex()),
    legal.ProveAuthority("not an id", "00" * 32),
    legal.ProveAuthority("0" * 32, "00" * 31),
    legal.OpenAuthorityChallenge(TITLE, SERVER_TITLE.hex(), "00" * 4),
    legal.OpenAuthorityChallenge("0" * 15, SERVER_TITLE.hex(), "00" * 16),
    legal.EndAuthority("\x00" * 32),
], ids=["non-hex-token", "huge-token", "short-title", "bad-challenge-id", "short-response", "short-ctos",
        "odd-title", "nul-token"])
def test_malformed_authority_data_is_refused_counted_and_logged(part, command):
    """Malformed authority data at the protective interface is refused, counted and logged as malformed; nothing changes."""
    assert_refused(part, command, "malformed")


@pytest.mark.welmec("P3", "P7")
def test_authority_fields_of_the_wrong_type_over_the_pipe_are_refused_counted_and_logged(tmp_path):
    """Raw JSON to the real legal process: an authority token that is a boolean (the old flag), a
    number or a list is refused, counted and logged; the mode stays off and the parameters as they were."""
    client = legal.start_legal_process(tmp_path)
    try:
        before = legal_state(client)
        good = json.loads(encode_command(legal.SetCertificationMode(True, T0, TITLE, "")))
        for value in (True, 1, ["x"], None):
            good["fields"]["authority_token"] = value
            with client._lock:
                reply = client._exchange(json.dumps(good).encode())
            assert getattr(reply, "kind", None) == "refused"
        assert legal_state(client) == before
        assert client.execute(legal.ReadRefusedCommandCount()) == 4
        assert [e["condition"] for e in authority_refusals(client)] == ["malformed"]  # one line per condition
    finally:
        client.close()


@pytest.mark.welmec("P7", "U7")
def test_the_real_legal_process_decides_authority_itself(tmp_path):
    """Through the real legal process: a forged token, an unauthenticated change and a replayed
    exchange are refused, counted and logged; the genuine exchange still starts the mode."""
    client = legal.start_legal_process(tmp_path)
    try:
        client.execute(legal.ProvisionAuthoritySecret(TEST_SECRET.hex()))
        assert_refused(client, legal.SetCertificationMode(True, T0, TITLE, os.urandom(16).hex()), "forged")
        assert_refused(client, legal.SetParameters((("meter_constant", 2000),), T0, TITLE), "unauthenticated")
        challenge_id, response = challenge(client)
        token, _ = client.execute(legal.ProveAuthority(challenge_id, response))
        assert_refused(client, legal.ProveAuthority(challenge_id, response), "replayed")
        assert client.execute(legal.SetCertificationMode(True, T0, TITLE, token)).active
        assert client.execute(legal.SetParameters((("meter_constant", 2000),), T0, TITLE, token)) == 1
    finally:
        client.close()


def test_a_flood_of_forged_claims_leaves_one_log_entry_per_condition_per_period(part, clock):
    """1000 forged claims: all counted, one metrological log entry; after the period the next
    entry says how many refusals it stands for."""
    count = part.execute(legal.ReadRefusedCommandCount())
    for _ in range(1000):
        with pytest.raises(legal.CommandRefused):
            part.execute(legal.SetCertificationMode(True, T0, TITLE, os.urandom(16).hex()))
    assert part.execute(legal.ReadRefusedCommandCount()) == count + 1000
    assert [(e["condition"], e["refusals"]) for e in authority_refusals(part)] == [("forged", 1)]
    clock[0] += LOG_PERIOD
    with pytest.raises(legal.CommandRefused):
        part.execute(legal.SetCertificationMode(True, T0, TITLE, os.urandom(16).hex()))
    assert [(e["condition"], e["refusals"]) for e in authority_refusals(part)] == [("forged", 1), ("forged", 1000)]


def test_open_challenges_and_live_tokens_are_bounded(part):
    """A peer opening challenges without end holds at most 8: the oldest gives way; at most 4
    tokens live at once: the oldest ends."""
    first_id, first_response = challenge(part)
    opened = [challenge(part) for _ in range(MAX_CHALLENGES)]
    with pytest.raises(legal.CommandRefused):
        part.execute(legal.ProveAuthority(first_id, first_response))
    tokens = [part.execute(legal.ProveAuthority(*c))[0] for c in opened[-MAX_TOKENS - 1:]]
    with pytest.raises(legal.CommandRefused):
        part.execute(legal.SetCertificationMode(True, T0, TITLE, tokens[0]))
    assert part.execute(legal.SetCertificationMode(True, T0, TITLE, tokens[-1])).active


def test_a_new_secret_needs_the_authority_and_ends_the_old_tokens(part):
    """The Certification secret changes only with a token; tokens won with the old secret end."""
    token = certification_token(part, TITLE)
    new_secret = os.urandom(16)
    part.execute(legal.ProvisionAuthoritySecret(new_secret.hex(), token))
    with pytest.raises(legal.CommandRefused):
        part.execute(legal.SetCertificationMode(True, T0, TITLE, token))
    with pytest.raises(legal.CommandRefused):
        certification_token(part, TITLE)  # the old secret no longer proves anything
    assert part.execute(legal.SetCertificationMode(True, T0, TITLE, certification_token(part, TITLE, new_secret))).active
