"""ACCESS APDUs (0xD9 / 0xDA): hand-checked encodings, round trips, gurux cross-check."""
from __future__ import annotations

import pathlib
import sys

import pytest
from hypothesis import given

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_apdu_common import APDU_STRATEGIES, CLOCK, LOAD_PROFILE, gurux_tags, gurux_values  # noqa: E402

from smartmeter.cosem.data import Data  # noqa: E402
from smartmeter.dlms.apdu.access import (  # noqa: E402
    AccessRequest,
    AccessRequestKind,
    AccessRequestSpec,
    AccessResponse,
    AccessResponseKind,
    AccessResponseSpec,
)
from smartmeter.dlms.apdu.common import (  # noqa: E402
    ActionResult,
    CosemAttributeDescriptor,
    CosemMethodDescriptor,
    DataAccessResult,
    EntryDescriptor,
)
from smartmeter.dlms.apdu.xdlms import decode_xdlms  # noqa: E402
from smartmeter.errors import DecodeError, EncodeError  # noqa: E402

CLOCK_TIME = CosemAttributeDescriptor(8, CLOCK, 2)
BUFFER = CosemAttributeDescriptor(7, LOAD_PROFILE, 2)
DISCONNECT = CosemMethodDescriptor(70, bytes.fromhex("0000600A00FF"), 1)


def test_access_request_encoding():
    apdu = AccessRequest(0x40000001, b"", (
        AccessRequestSpec(AccessRequestKind.GET, CLOCK_TIME),
        AccessRequestSpec(AccessRequestKind.ACTION, DISCONNECT),
    ), (Data.null(), Data.integer(0)))
    expected = bytes.fromhex(
        "D9" "40000001" "00"                       # long-invoke-id, empty date-time
        "02" "01 0008 0000010000FF 02"             # 2 specs: get clock.time
        "03 0046 0000600A00FF 01"                  # action disconnect.remote_disconnect
        "02" "00" "0F00".replace(" ", ""))         # list of data: null-data, integer(0)
    assert apdu.to_bytes() == expected
    assert decode_xdlms(expected) == apdu


def test_access_request_with_selection_encoding():
    sel = EntryDescriptor(1, 1).to_access_descriptor()
    apdu = AccessRequest(7, bytes(12), (AccessRequestSpec(AccessRequestKind.GET_WITH_SELECTION, BUFFER, sel),),
                         (Data.null(),))
    b = apdu.to_bytes()
    assert b[:19] == bytes.fromhex("D9 00000007 0C".replace(" ", "") + "00" * 12 + "01")
    # spec: choice 4, descriptor, then the Selective-Access-Descriptor *without* a presence byte.
    assert b[19:29] == bytes.fromhex("04 0007 0100630100FF 02".replace(" ", ""))
    assert b[29:31] == bytes.fromhex("0202")
    assert decode_xdlms(b) == apdu


def test_access_response_encoding():
    apdu = AccessResponse(0x40000001, b"", (Data.unsigned(5), Data.null()), (
        AccessResponseSpec(AccessResponseKind.GET, DataAccessResult.SUCCESS),
        AccessResponseSpec(AccessResponseKind.ACTION, ActionResult.SUCCESS),
    ))
    expected = bytes.fromhex("DA 40000001 00 00 02 1105 00 02 0100 0300".replace(" ", ""))
    assert apdu.to_bytes() == expected
    assert decode_xdlms(expected) == apdu


def test_access_response_with_echoed_request_specs():
    apdu = AccessResponse(1, b"", (), (), (AccessRequestSpec(AccessRequestKind.SET, CLOCK_TIME),))
    assert apdu.to_bytes() == bytes.fromhex("DA 00000001 00 01 01 02 0008 0000010000FF 02 00 00".replace(" ", ""))
    assert decode_xdlms(apdu.to_bytes()) == apdu


@pytest.mark.parametrize("spec", [
    AccessRequestSpec(AccessRequestKind.ACTION, CLOCK_TIME),
    AccessRequestSpec(AccessRequestKind.GET, DISCONNECT),
    AccessRequestSpec(AccessRequestKind.GET_WITH_SELECTION, BUFFER),
    AccessRequestSpec(AccessRequestKind.GET, BUFFER, EntryDescriptor(1, 1).to_access_descriptor()),
])
def test_inconsistent_specs_cannot_be_encoded(spec):
    with pytest.raises(EncodeError):
        AccessRequest(1, b"", (spec,), (Data.null(),)).to_bytes()


def test_response_result_type_follows_kind():
    assert isinstance(AccessResponseSpec(AccessResponseKind.ACTION, 15).result, ActionResult)
    assert AccessResponseSpec(AccessResponseKind.ACTION, 15).result == ActionResult.LONG_ACTION_ABORTED
    assert AccessResponseSpec(AccessResponseKind.GET, 15).result == DataAccessResult.LONG_GET_ABORTED
    with pytest.raises(EncodeError):
        AccessResponseSpec(AccessResponseKind.ACTION, 17)  # 17 is a DataAccessResult only


@pytest.mark.parametrize("hexstr", [
    "D9 00000001 00 01 06 0008 0000010000FF 02 00",   # spec choice 6
    "D9 00000001 0C 0000",                            # date-time longer than the bytes
    "DA 00000001 00 02 00 00",                        # request-spec presence flag 2
    "DA 00000001 00 00 00 01 04 00",                  # response spec choice 4
    "DA 00000001 00 00 00 01 03 11",                  # action result 17
    "DA 00000001 00 00 00 7F",                        # 127 response specs in no bytes
])
def test_malformed(hexstr):
    with pytest.raises(DecodeError):
        decode_xdlms(bytes.fromhex(hexstr.replace(" ", "")))


@pytest.mark.parametrize("cls", [AccessRequest, AccessResponse])
def test_round_trip(cls):
    @given(APDU_STRATEGIES[cls])
    def check(apdu):
        b = apdu.to_bytes()
        assert b[0] == cls.TAG
        assert cls.from_bytes(b) == apdu
        assert decode_xdlms(b) == apdu

    check()


def test_gurux_reads_our_access_request():
    apdu = AccessRequest(0x40000001, b"", (
        AccessRequestSpec(AccessRequestKind.GET, CLOCK_TIME),
        AccessRequestSpec(AccessRequestKind.SET, CosemAttributeDescriptor(8, CLOCK, 3)),
        AccessRequestSpec(AccessRequestKind.ACTION, DISCONNECT),
    ), (Data.null(), Data.long(-60), Data.integer(0)))
    b = apdu.to_bytes()
    tags = gurux_tags(b)
    assert tags[0] == "AccessRequest"
    assert gurux_values(b, "LongInvokeIdAndPriority") == ["40000001"]
    assert [t for t in tags if t.startswith("AccessRequest") and t not in ("AccessRequest", "AccessRequestBody",
                                                                           "AccessRequestSpecification",
                                                                           "AccessRequestListOfData")] == [
        "AccessRequestGet", "AccessRequestSet", "AccessRequestAction"]
    assert gurux_values(b, "ClassId") == ["0008", "0008", "0046"]
    assert gurux_values(b, "Int16") == ["FFC4"]


def test_gurux_reads_our_access_response():
    apdu = AccessResponse(0x40000001, b"", (Data.unsigned(5), Data.null()), (
        AccessResponseSpec(AccessResponseKind.GET, DataAccessResult.SUCCESS),
        AccessResponseSpec(AccessResponseKind.ACTION, ActionResult.SUCCESS),
    ))
    b = apdu.to_bytes()
    tags = gurux_tags(b)
    assert tags[0] == "AccessResponse"
    assert "AccessResponseGet" in tags and "AccessResponseAction" in tags
    assert gurux_values(b, "UInt8") == ["05"]
    assert gurux_values(b, "Result") == ["Success", "Success"]
