"""OBIS codes: every accepted text form, bytes, and one-line errors that name the expected form."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartmeter.cosem.obis import Obis, ObisError
from smartmeter.errors import SmartmeterError

ACTIVE_ENERGY_IMPORT = Obis(1, 0, 1, 8, 0, 255)


@pytest.mark.parametrize(
    "text",
    ["1-0:1.8.0.255", "1-0:1.8.0*255", "1-0:1.8.0&255", "1.0.1.8.0.255", "0100010800FF", "0100010800ff",
     "1-0:1.8.0", "1.0.1.8.0", "  1-0:1.8.0.255\n", "001-000:001.008.000.255"],
)
def test_accepted_forms(text: str) -> None:
    assert Obis.parse(text) == ACTIVE_ENERGY_IMPORT


def test_string_bytes_and_clock() -> None:
    assert str(ACTIVE_ENERGY_IMPORT) == "1-0:1.8.0.255"
    assert ACTIVE_ENERGY_IMPORT.to_bytes() == bytes.fromhex("0100010800FF")
    clock = Obis.parse("0-0:1.0.0.255")
    assert clock.to_bytes() == bytes.fromhex("0000010000FF")
    assert Obis.from_bytes(bytearray(b"\x00\x00\x01\x00\x00\xff")) == clock
    assert Obis.from_bytes(memoryview(b"\x00\x00\x01\x00\x00\xff")) == clock


@given(st.tuples(*[st.integers(0, 255)] * 6))
def test_round_trips(groups) -> None:
    obis = Obis(*groups)
    assert Obis.parse(str(obis)) == obis
    assert Obis.from_bytes(obis.to_bytes()) == obis
    assert Obis.parse(obis.to_bytes().hex()) == obis
    assert Obis.parse(".".join(map(str, groups))) == obis


@pytest.mark.parametrize(
    "text",
    ["", "1-0:1.8", "1-0:1.8.0.256", "256-0:1.8.0.255", "1-0:1.8.0.255.1", "1-0-1.8.0.255", "0100010800F",
     "0100010800FFAA", "x-0:1.8.0.255", "1-0:1.8.-1.255", "1.0.1.8", "1-0:1.8.0.1234", "１-0:1.8.0.255"],
)
def test_rejected_text_says_the_expected_form(text: str) -> None:
    with pytest.raises(ObisError) as info:
        Obis.parse(text)
    message = str(info.value)
    assert "\n" not in message
    assert "A-B:C.D.E.F" in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, SmartmeterError)


def test_rejected_values() -> None:
    with pytest.raises(ObisError):
        Obis.from_bytes(b"\x01\x00\x01\x08\x00")
    with pytest.raises(ObisError):
        Obis(1, 0, 1, 8, 0, 256)
    with pytest.raises(ObisError):
        Obis(1, 0, 1, 8, 0, True)  # type: ignore[arg-type]
    with pytest.raises(ObisError):
        Obis.parse(b"0100010800FF")  # type: ignore[arg-type]


def test_frozen_hashable_and_ordered() -> None:
    assert len({Obis.parse("1-0:1.8.0.255"), ACTIVE_ENERGY_IMPORT}) == 1
    assert Obis(1, 0, 1, 8, 0) < Obis(1, 0, 2, 8, 0)
    with pytest.raises(AttributeError):
        ACTIVE_ENERGY_IMPORT.a = 2  # type: ignore[misc]
