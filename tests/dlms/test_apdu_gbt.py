"""General-Block-Transfer (0xE0): block-control bits, round trips, gurux cross-check."""
from __future__ import annotations

import pathlib
import sys

import pytest
from hypothesis import given

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_apdu_common import APDU_STRATEGIES, gurux_tags, gurux_values  # noqa: E402

from smartmeter.dlms.apdu.gbt import GeneralBlockTransfer  # noqa: E402
from smartmeter.dlms.apdu.xdlms import decode_xdlms  # noqa: E402
from smartmeter.errors import DecodeError, EncodeError  # noqa: E402

INNER = bytes.fromhex("C001C100080000010000FF0200")


@pytest.mark.parametrize("last,streaming,window,control", [
    (True, False, 1, 0x81), (False, True, 63, 0x7F), (False, False, 0, 0x00), (True, True, 5, 0xC5),
])
def test_block_control_bits(last, streaming, window, control):
    g = GeneralBlockTransfer(last, streaming, window, 0x0102, 0x0304, INNER)
    b = g.to_bytes()
    assert b == bytes((0xE0, control, 0x01, 0x02, 0x03, 0x04, len(INNER))) + INNER
    assert decode_xdlms(b) == g


@pytest.mark.parametrize("bad", [
    GeneralBlockTransfer(True, False, 64, 1, 0, b""),
    GeneralBlockTransfer(True, False, -1, 1, 0, b""),
    GeneralBlockTransfer(True, False, 1, 0x10000, 0, b""),
    GeneralBlockTransfer(1, False, 1, 1, 0, b""),
])
def test_unencodable(bad):
    with pytest.raises(EncodeError):
        bad.to_bytes()


@pytest.mark.parametrize("hexstr", ["E0", "E0 81 0001 00", "E0 81 0001 0000 05 0102", "E0 81 0001 0000 00 00"])
def test_malformed(hexstr):
    with pytest.raises(DecodeError):
        decode_xdlms(bytes.fromhex(hexstr.replace(" ", "")))


@given(APDU_STRATEGIES[GeneralBlockTransfer])
def test_round_trip(apdu):
    assert GeneralBlockTransfer.from_bytes(apdu.to_bytes()) == apdu
    assert decode_xdlms(apdu.to_bytes()) == apdu


def test_gurux_reads_our_gbt():
    b = GeneralBlockTransfer(True, False, 1, 1, 0, INNER).to_bytes()
    assert gurux_tags(b)[:1] == ["GeneralBlockTransfer"]
    assert gurux_values(b, "BlockControl") == ["81"]
    assert gurux_values(b, "BlockNumber") == ["0001"]
    assert gurux_values(b, "BlockNumberAck") == ["0000"]
    assert gurux_values(b, "BlockData") == [INNER.hex().upper()]
