"""SET APDUs: hand-checked encodings, round trips, gurux and dlms_cosem cross-checks."""
from __future__ import annotations

import pathlib
import sys

import pytest
from hypothesis import given

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_apdu_common import APDU_STRATEGIES, CLOCK, gurux_tags, gurux_values  # noqa: E402

from smartmeter.cosem.data import Data  # noqa: E402
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor, DataAccessResult  # noqa: E402
from smartmeter.dlms.apdu.set import (  # noqa: E402
    SetRequestNormal,
    SetRequestWithDatablock,
    SetRequestWithFirstDatablock,
    SetRequestWithList,
    SetRequestWithListAndFirstDatablock,
    SetResponseDatablock,
    SetResponseLastDatablock,
    SetResponseLastDatablockWithList,
    SetResponseNormal,
    SetResponseWithList,
)
from smartmeter.dlms.apdu.xdlms import decode_xdlms  # noqa: E402
from smartmeter.errors import DecodeError, EncodeError  # noqa: E402

CLOCK_TIME = CosemAttributeDescriptor(8, CLOCK, 2)
TZ = CosemAttributeDescriptor(8, CLOCK, 3)
NOW = bytes.fromhex("07E8030F05100000FF800000")

VECTORS = [
    ("C101C1 0008 0000010000FF 02 00 090C" + NOW.hex(), SetRequestNormal(0xC1, CLOCK_TIME, None, Data.octet_string(NOW))),
    ("C102C1 0008 0000010000FF 02 00 00 00000001 02 090C",
     SetRequestWithFirstDatablock(0xC1, CLOCK_TIME, None, False, 1, b"\x09\x0c")),
    ("C103C1 01 00000002 03 000102", SetRequestWithDatablock(0xC1, True, 2, b"\x00\x01\x02")),
    ("C104C1 02 0008 0000010000FF 02 00 0008 0000010000FF 03 00 02 090C" + NOW.hex() + "10FFC4",
     SetRequestWithList(0xC1, ((CLOCK_TIME, None), (TZ, None)), (Data.octet_string(NOW), Data.long(-60)))),
    ("C105C1 01 0008 0000010000FF 02 00 00 00000001 01 09",
     SetRequestWithListAndFirstDatablock(0xC1, ((CLOCK_TIME, None),), False, 1, b"\x09")),
    ("C501C1 00", SetResponseNormal(0xC1, DataAccessResult.SUCCESS)),
    ("C501C1 03", SetResponseNormal(0xC1, DataAccessResult.READ_WRITE_DENIED)),
    ("C502C1 00000001", SetResponseDatablock(0xC1, 1)),
    ("C503C1 00 00000002", SetResponseLastDatablock(0xC1, DataAccessResult.SUCCESS, 2)),
    ("C504C1 02 00 0C 00000002",
     SetResponseLastDatablockWithList(0xC1, (DataAccessResult.SUCCESS, DataAccessResult.TYPE_UNMATCHED), 2)),
    ("C505C1 02 00 03", SetResponseWithList(0xC1, (DataAccessResult.SUCCESS, DataAccessResult.READ_WRITE_DENIED))),
]


@pytest.mark.parametrize("hexstr,apdu", VECTORS)
def test_known_encodings(hexstr, apdu):
    b = bytes.fromhex(hexstr.replace(" ", ""))
    assert apdu.to_bytes() == b
    assert type(apdu).from_bytes(b) == apdu
    assert decode_xdlms(b) == apdu


def test_list_values_and_items_may_differ_in_count_on_the_wire():
    # Two independent SEQUENCE OFs: the decoder keeps what it got, the server answers.
    apdu = SetRequestWithList(0xC1, ((CLOCK_TIME, None),), ())
    assert decode_xdlms(apdu.to_bytes()) == apdu


def test_lists_are_normalised_to_tuples():
    apdu = SetRequestWithList(0xC1, [[CLOCK_TIME, None]], [Data.null()])
    assert apdu.items == ((CLOCK_TIME, None),) and apdu.values == (Data.null(),)
    assert hash(apdu) == hash(decode_xdlms(apdu.to_bytes()))


@pytest.mark.parametrize("bad", [
    SetRequestNormal(0xC1, CLOCK_TIME, None, b"raw bytes are not Data"),
    SetRequestWithDatablock(0xC1, True, 1, "not bytes"),
    SetRequestWithList(0xC1, ((CLOCK_TIME,),), ()),
])
def test_unencodable(bad):
    with pytest.raises(EncodeError):
        bad.to_bytes()


@pytest.mark.parametrize("hexstr", [
    "C501C1 05",                      # undefined data-access-result
    "C504C1 02 00 0C 000000",         # block number cut short
    "C103C1 01 00000002 83 000001",   # 3-byte length prefix, no content
    "C106C1",                         # unknown Set-Request choice
    "C506C1 00",                      # unknown Set-Response choice
])
def test_malformed(hexstr):
    with pytest.raises(DecodeError):
        decode_xdlms(bytes.fromhex(hexstr.replace(" ", "")))


@pytest.mark.parametrize("cls", [SetRequestNormal, SetRequestWithFirstDatablock, SetRequestWithDatablock,
                                 SetRequestWithList, SetRequestWithListAndFirstDatablock, SetResponseNormal,
                                 SetResponseDatablock, SetResponseLastDatablock, SetResponseLastDatablockWithList,
                                 SetResponseWithList])
def test_round_trip(cls):
    @given(APDU_STRATEGIES[cls])
    def check(apdu):
        b = apdu.to_bytes()
        assert (b[0], b[1]) == (cls.TAG, cls.CHOICE)
        assert cls.from_bytes(b) == apdu
        assert decode_xdlms(b) == apdu

    check()


def test_gurux_reads_our_set_apdus():
    b = SetRequestNormal(0xC1, CLOCK_TIME, None, Data.octet_string(NOW)).to_bytes()
    assert gurux_tags(b)[:2] == ["SetRequest", "SetRequestNormal"]
    assert gurux_values(b, "InstanceId") == ["0000010000FF"]
    assert gurux_values(b, "OctetString") == [NOW.hex().upper()]

    b = SetRequestWithFirstDatablock(0xC1, CLOCK_TIME, None, False, 1, b"\x09\x0c").to_bytes()
    assert gurux_tags(b)[:2] == ["SetRequest", "SetRequestFirstDataBlock"]
    assert gurux_values(b, "RawData") == ["090C"]

    b = SetRequestWithDatablock(0xC1, True, 2, b"\x00\x01").to_bytes()
    assert gurux_tags(b)[:2] == ["SetRequest", "SetRequestWithDataBlock"]
    assert gurux_values(b, "LastBlock") == ["01"]
    assert gurux_values(b, "BlockNumber") == ["00000002"]
    assert gurux_values(b, "RawData") == ["0001"]

    b = SetRequestWithList(0xC1, ((CLOCK_TIME, None), (TZ, None)), (Data.octet_string(NOW), Data.long(-60))).to_bytes()
    assert gurux_tags(b)[:2] == ["SetRequest", "SetRequestWithList"]
    assert gurux_values(b, "AttributeId") == ["02", "03"]
    assert gurux_values(b, "Int16") == ["FFC4"]

    b = SetResponseNormal(0xC1, DataAccessResult.READ_WRITE_DENIED).to_bytes()
    assert gurux_tags(b)[:2] == ["SetResponse", "SetResponseNormal"]
    assert gurux_values(b, "Result") == ["ReadWriteDenied"]

    b = SetResponseDatablock(0xC1, 5).to_bytes()
    assert gurux_tags(b)[:2] == ["SetResponse", "SetResponseDataBlock"]
    assert gurux_values(b, "BlockNumber") == ["00000005"]

    b = SetResponseLastDatablock(0xC1, DataAccessResult.SUCCESS, 6).to_bytes()
    assert gurux_tags(b)[:2] == ["SetResponse", "SetResponseWithLastDataBlock"]
    assert gurux_values(b, "BlockNumber") == ["00000006"]


def test_dlms_cosem_parses_our_set_apdus():
    from dlms_cosem.protocol import xdlms

    b = SetRequestNormal(0xC1, CLOCK_TIME, None, Data.octet_string(NOW)).to_bytes()
    theirs = xdlms.SetRequestFactory.from_bytes(b)
    assert isinstance(theirs, xdlms.SetRequestNormal)
    assert theirs.cosem_attribute.interface == 8 and theirs.cosem_attribute.attribute == 2
    assert theirs.data == b"\x09\x0c" + NOW
    assert theirs.to_bytes() == b

    theirs = xdlms.SetResponseFactory.from_bytes(SetResponseNormal(0xC1, DataAccessResult.TYPE_UNMATCHED).to_bytes())
    assert isinstance(theirs, xdlms.SetResponseNormal)
    assert theirs.result == DataAccessResult.TYPE_UNMATCHED
