"""S2 mixed indication: the meter has no display yet, so there is nothing on which non-legal
text could be confused with a legal value. What remains of S2 is shown here: the legally
relevant values the meter presents (over DLMS) are numbers produced inside the legal part, and
no text from the communication side can become, or be presented as, a legal value."""
from __future__ import annotations

import dataclasses
import typing

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytest

from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.legal import interface as legal

TITLE = "4b464d0000000007"
HEX_FIELDS = ("authority_token", "challenge_id", "client_system_title", "ctos_hex", "identifier_hex", "response_hex",
              "secret_hex", "server_system_title")


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return text.strip() == text


@pytest.mark.welmec("S2")
def test_legal_values_are_presented_with_fixed_units_from_the_model():
    """Every energy register's unit and scaler are constants of the object model (Wh/varh, scaler 0), not values any client can write."""
    model = ObjectModel.load("ksmw")
    registers = [o for o in model.objects if str(o.obis) in ("1-0:1.8.0.255", "1-0:2.8.0.255", "1-0:3.8.0.255",
                                                                 "1-0:4.8.0.255")]
    assert [(o.config["unit"], o.config["scaler"]) for o in registers] == [("Wh", 0), ("Wh", 0), ("varh", 0), ("varh", 0)]
    for o in registers:
        assert all(not access.write for access in o.access.values())


def _text_fields() -> list[tuple[type, str]]:
    out = []
    for cls in _commands():
        hints = typing.get_type_hints(cls, vars(legal))
        out += [(cls, name) for name, hint in hints.items() if str in typing.get_args(hint) or hint is str]
    return out


def _commands():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        part = legal.LegalInterface(Path(tmp))
        try:
            return part.commands
        finally:
            part.close()


@pytest.mark.welmec("S2", "S3")
def test_the_only_text_that_enters_the_legal_part_is_validated_identifiers():
    """The only free-text fields of the protective interface are hex-encoded bytes (system titles, authentication challenges, responses, secret, tokens, firmware identifiers), register names (one of four), time-change methods (one of four), load profile names (one of two), billing triggers (one of four) and the firmware key (a PEM public key, parsed)."""
    assert sorted({name for _, name in _text_fields()}) == sorted(
        HEX_FIELDS + ("method", "profile", "public_key_pem", "register", "trigger"))


@pytest.fixture(scope="module")
def part(tmp_path_factory):
    p = legal.LegalInterface(tmp_path_factory.mktemp("s2"))
    p.execute(legal.RegisterSimulatedPower(1000.0, 100.0, 10.0))
    yield p
    p.close()


@pytest.mark.welmec("S2", "S3")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=40), st.sampled_from(["123.456 kWh", "999999 Wh", "+A 1.8.0", "ff" * 8 + " kWh"])))
def test_text_from_the_communication_side_never_becomes_a_legal_value(part, text):
    """Arbitrary text (e.g. "123.456 kWh") in any text field of any command is refused or used only as a validated identifier; no legal value changes."""
    before = (part.execute(legal.ReadEnergyRegisters()), part.execute(legal.ReadParameters()),
              part.execute(legal.ReadParameterRecordNumber()))
    for cls, name in _FIELDS:
        defaults = {f.name: (0 if f.type in ("int", "float") else None) for f in dataclasses.fields(cls)}
        defaults.update({"changes": (), "time_utc": 0, "client_system_title": TITLE, "register": "a_plus",
                         "method": "set", "authority_token": "", "new_time_utc": 0.0, "reference_time_utc": 0.0,
                         "server_system_title": TITLE, "ctos_hex": "00" * 16, "challenge_id": "", "response_hex": "",
                         "secret_hex": "",
                         "active": False, "status": False, "energy_res": 0, "demand_res": 0, "led_source": 0,
                         "led_rate": 0, "profile": "lp1", "enabled": True})
        fields = {k: v for k, v in defaults.items() if k in {f.name for f in dataclasses.fields(cls)}}
        fields[name] = text
        try:
            result = part.execute(cls(**fields))
        except legal.CommandRefused:
            continue
        assert name == "register" and text in ("a_plus", "a_minus", "r_plus", "r_minus") or \
            name == "client_system_title" and _is_hex(text) and len(bytes.fromhex(text)) == 8 or \
            name == "method" and text in legal.TIME_CHANGE_METHODS or \
            name == "profile" and text in ("lp1", "lp2") or \
            name == "public_key_pem" and legal.public_key_of(text.encode()) or \
            name in HEX_FIELDS and name != "client_system_title" and _is_hex(text), (cls, name, text, result)
    assert (part.execute(legal.ReadEnergyRegisters()), part.execute(legal.ReadParameters()),
            part.execute(legal.ReadParameterRecordNumber())) == before


_FIELDS = _text_fields()
