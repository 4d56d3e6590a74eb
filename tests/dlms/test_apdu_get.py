"""GET APDUs: published/hand-checked encodings, round trips, and two independent peers."""
from __future__ import annotations

import datetime as dt
import pathlib
import sys

import pytest
from hypothesis import given

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_apdu_common import APDU_STRATEGIES, CLOCK, LOAD_PROFILE, gurux_tags, gurux_values  # noqa: E402

from smartmeter.cosem.data import Data, DataType  # noqa: E402
from smartmeter.dlms.apdu.common import (  # noqa: E402
    CosemAttributeDescriptor,
    DataAccessResult,
    EntryDescriptor,
    RangeDescriptor,
    SelectiveAccessDescriptor,
)
from smartmeter.dlms.apdu.get import (  # noqa: E402
    GetRequestNext,
    GetRequestNormal,
    GetRequestWithList,
    GetResponseNormal,
    GetResponseWithDataBlock,
    GetResponseWithList,
)
from smartmeter.dlms.apdu.xdlms import decode_xdlms  # noqa: E402
from smartmeter.errors import DecodeError, EncodeError  # noqa: E402

CLOCK_TIME = CosemAttributeDescriptor(8, CLOCK, 2)

# (hex, object): the Green Book style examples (clock time read, invoke-id 1, priority high,
# confirmed: 0xC1) and the block-transfer shapes, each checked field by field against §9.5.
VECTORS = [
    ("C001C1 0008 0000010000FF 02 00", GetRequestNormal(0xC1, CLOCK_TIME, None)),
    ("C001 81 0001 0000600100FF 02 00", GetRequestNormal(0x81, CosemAttributeDescriptor(1, bytes.fromhex("0000600100FF"), 2))),
    ("C002C1 00000001", GetRequestNext(0xC1, 1)),
    ("C003C1 02 0008 0000010000FF 02 00 0003 0100010800FF 03 00",
     GetRequestWithList(0xC1, ((CLOCK_TIME, None),
                               (CosemAttributeDescriptor(3, bytes.fromhex("0100010800FF"), 3), None)))),
    ("C401C1 00 090C 07E3 0A 1B 07 0C 22 2D 00 FF88 00",
     GetResponseNormal(0xC1, Data.octet_string(bytes.fromhex("07E30A1B070C222D00FF8800")))),
    ("C401C1 00 06 0001E240", GetResponseNormal(0xC1, Data.double_long_unsigned(123456))),
    ("C401C1 01 04", GetResponseNormal(0xC1, DataAccessResult.OBJECT_UNDEFINED)),
    ("C401C1 01 FA", GetResponseNormal(0xC1, DataAccessResult.OTHER_REASON)),
    ("C402C1 00 00000001 00 03 010203", GetResponseWithDataBlock(0xC1, False, 1, raw_data=b"\x01\x02\x03")),
    ("C402C1 01 00000002 01 0F", GetResponseWithDataBlock(0xC1, True, 2, error=DataAccessResult.LONG_GET_ABORTED)),
    ("C403C1 02 00 1100 01 03", GetResponseWithList(0xC1, (Data.unsigned(0), DataAccessResult.READ_WRITE_DENIED))),
]


@pytest.mark.parametrize("hexstr,apdu", VECTORS, ids=lambda v: type(v).__name__ if not isinstance(v, str) else "")
def test_known_encodings(hexstr, apdu):
    b = bytes.fromhex(hexstr.replace(" ", ""))
    assert apdu.to_bytes() == b
    assert type(apdu).from_bytes(b) == apdu
    assert decode_xdlms(b) == apdu


def test_long_raw_data_uses_the_multi_byte_length():
    raw = bytes(range(256)) * 2  # 512 bytes -> 82 02 00
    b = GetResponseWithDataBlock(0xC1, False, 7, raw_data=raw).to_bytes()
    assert b[:12] == bytes.fromhex("C402C1 00 00000007 00 820200".replace(" ", ""))
    assert b[12:] == raw


def test_entry_descriptor_request():
    req = GetRequestNormal(0xC1, CosemAttributeDescriptor(7, LOAD_PROFILE, 2), EntryDescriptor(1, 0).to_access_descriptor())
    decoded = decode_xdlms(req.to_bytes())
    assert decoded.access_selection.access_selector == 2
    assert EntryDescriptor.from_data(decoded.access_selection.access_parameters) == EntryDescriptor(1, 0, 1, 0)


@pytest.mark.parametrize("bad", [
    GetResponseWithDataBlock(0xC1, False, 1),  # neither raw data nor error
    GetResponseWithDataBlock(0xC1, False, 1, raw_data=b"", error=DataAccessResult.OTHER_REASON),
    GetResponseWithDataBlock(0xC1, 1, 1, raw_data=b""),  # last_block not a bool
    GetRequestNext(0x100, 1),
    GetRequestNext(0xC1, 2**32),
    GetRequestNormal(0xC1, CosemAttributeDescriptor(8, CLOCK, 2), SelectiveAccessDescriptor(1, "not data")),
    GetRequestNormal(0xC1, ("not", "a descriptor")),
])
def test_unencodable_values_raise_encode_error(bad):
    with pytest.raises(EncodeError):
        bad.to_bytes()


def test_unknown_enum_value_in_constructor_raises_encode_error():
    with pytest.raises(EncodeError):
        GetResponseNormal(0xC1, 5)


@pytest.mark.parametrize("hexstr", [
    "C001C1 0008 0000010000FF 02 02",      # presence flag 2
    "C401C1 02 00",                          # Get-Data-Result choice 2
    "C401C1 01 05",                          # data-access-result 5 is not defined
    "C402C1 01 00000002 02 0F",              # DataBlock-G choice 2
    "C402C1 00 00000001 00 05 0102",         # raw-data longer than the bytes left
    "C403C1 05 00 1100",                     # list count beyond the bytes
    "C401C1 00 FE",                          # unknown Data tag
    "C004C1",                                # unknown Get-Request choice
    "C0",                                    # no choice byte
])
def test_malformed_inputs(hexstr):
    with pytest.raises(DecodeError):
        decode_xdlms(bytes.fromhex(hexstr.replace(" ", "")))


def test_from_bytes_rejects_a_sibling_choice():
    with pytest.raises(DecodeError):
        GetRequestNormal.from_bytes(GetRequestNext(0xC1, 1).to_bytes())


@pytest.mark.parametrize("cls", [GetRequestNormal, GetRequestNext, GetRequestWithList, GetResponseNormal,
                                 GetResponseWithDataBlock, GetResponseWithList])
def test_round_trip(cls):
    @given(APDU_STRATEGIES[cls])
    def check(apdu):
        b = apdu.to_bytes()
        assert b[0] == cls.TAG and b[1] == cls.CHOICE
        assert cls.from_bytes(b) == apdu
        assert decode_xdlms(b) == apdu

    check()


# --- gurux (independent decoder) -------------------------------------------------------

def test_gurux_reads_our_get_requests():
    b = GetRequestNormal(0xC1, CLOCK_TIME, None).to_bytes()
    assert gurux_tags(b)[:2] == ["GetRequest", "GetRequestNormal"]
    assert gurux_values(b, "InvokeIdAndPriority") == ["C1"]
    assert gurux_values(b, "ClassId") == ["0008"]
    assert gurux_values(b, "InstanceId") == ["0000010000FF"]
    assert gurux_values(b, "AttributeId") == ["02"]

    b = GetRequestNext(0xC2, 0x01020304).to_bytes()
    assert gurux_tags(b)[:2] == ["GetRequest", "GetRequestForNextDataBlock"]
    assert gurux_values(b, "BlockNumber") == ["01020304"]

    reg = CosemAttributeDescriptor(3, bytes.fromhex("0100010800FF"), 2)
    b = GetRequestWithList(0xC1, ((CLOCK_TIME, None), (reg, None))).to_bytes()
    assert gurux_tags(b)[:2] == ["GetRequest", "GetRequestWithList"]
    assert gurux_values(b, "ClassId") == ["0008", "0003"]
    assert gurux_values(b, "InstanceId") == ["0000010000FF", "0100010800FF"]


def test_gurux_reads_our_selective_access():
    sel = EntryDescriptor(1, 10, 1, 0).to_access_descriptor()
    b = GetRequestNormal(0xC1, CosemAttributeDescriptor(7, LOAD_PROFILE, 2), sel).to_bytes()
    tags = gurux_tags(b)
    assert tags[:2] == ["GetRequest", "GetRequestNormal"]
    assert gurux_values(b, "AccessSelector") == ["02"]
    assert gurux_values(b, "UInt32") == ["00000001", "0000000A"]
    assert gurux_values(b, "UInt16") == ["0001", "0000"]


def test_gurux_reads_our_get_responses():
    b = GetResponseNormal(0xC1, Data.octet_string(bytes.fromhex("07E30A1B070C222D00FF8800"))).to_bytes()
    assert gurux_tags(b)[:2] == ["GetResponse", "GetResponseNormal"]
    assert gurux_values(b, "OctetString") == ["07E30A1B070C222D00FF8800"]

    b = GetResponseNormal(0xC1, Data.structure((Data.long(-2), Data.enum(30)))).to_bytes()
    assert gurux_values(b, "Int16") == ["FFFE"]
    assert gurux_values(b, "Enum") == ["1E"]

    b = GetResponseNormal(0xC1, DataAccessResult.OBJECT_UNDEFINED).to_bytes()
    assert gurux_values(b, "DataAccessError") == ["UndefinedObject"]

    b = GetResponseWithDataBlock(0xC1, False, 1, raw_data=b"\x01\x02\x03").to_bytes()
    assert gurux_tags(b)[:2] == ["GetResponse", "GetResponsewithDataBlock"]
    assert gurux_values(b, "LastBlock") == ["00"]
    assert gurux_values(b, "RawData") == ["010203"]

    b = GetResponseWithDataBlock(0xC1, True, 2, error=DataAccessResult.LONG_GET_ABORTED).to_bytes()
    assert gurux_values(b, "LastBlock") == ["01"]
    assert gurux_values(b, "DataAccessResult") == ["LongGetOrReadAborted"]

    b = GetResponseWithList(0xC1, (Data.unsigned(5), Data.long_unsigned(7))).to_bytes()
    assert gurux_tags(b)[:2] == ["GetResponse", "GetResponseWithList"]
    assert gurux_values(b, "UInt8") == ["05"]
    assert gurux_values(b, "UInt16") == ["0007"]


# --- dlms_cosem (independent encoder and decoder) ------------------------------------

def test_dlms_cosem_parses_our_get_request():
    from dlms_cosem.protocol import xdlms

    b = GetRequestNormal(0xC1, CLOCK_TIME, None).to_bytes()
    theirs = xdlms.GetRequestFactory.from_bytes(b)
    assert isinstance(theirs, xdlms.GetRequestNormal)
    assert theirs.cosem_attribute.interface == 8
    assert theirs.cosem_attribute.instance.to_bytes() == CLOCK
    assert theirs.cosem_attribute.attribute == 2
    assert theirs.invoke_id_and_priority.invoke_id == 1
    assert theirs.invoke_id_and_priority.confirmed and theirs.invoke_id_and_priority.high_priority
    assert theirs.to_bytes() == b

    theirs = xdlms.GetRequestFactory.from_bytes(GetRequestNext(0xC1, 9).to_bytes())
    assert isinstance(theirs, xdlms.GetRequestNext) and theirs.block_number == 9


def test_we_parse_dlms_cosem_range_descriptor_request():
    from dlms_cosem import cosem, enumerations
    from dlms_cosem.cosem.capture_object import CaptureObject
    from dlms_cosem.cosem.selective_access import RangeDescriptor as TheirRange
    from dlms_cosem.protocol import xdlms

    clock_attr = cosem.CosemAttribute(enumerations.CosemInterface.CLOCK, cosem.Obis.from_bytes(CLOCK), 2)
    frm = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    to = dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)
    theirs = xdlms.GetRequestNormal(
        cosem_attribute=cosem.CosemAttribute(enumerations.CosemInterface.PROFILE_GENERIC,
                                             cosem.Obis.from_bytes(LOAD_PROFILE), 2),
        access_selection=TheirRange(CaptureObject(clock_attr, 0), frm, to),
    )
    ours = decode_xdlms(theirs.to_bytes())
    assert isinstance(ours, GetRequestNormal)
    assert ours.descriptor == CosemAttributeDescriptor(7, LOAD_PROFILE, 2)
    rng = RangeDescriptor.from_data(ours.access_selection.access_parameters)
    assert ours.access_selection.access_selector == 1
    assert rng.restricting_object == (8, CLOCK, 2, 0)
    assert rng.from_value.type == DataType.OCTET_STRING and rng.from_value.value[:4] == bytes.fromhex("07E80101")
    assert rng.to_value.value[:4] == bytes.fromhex("07E80102")
    assert rng.selected_values == ()
    assert ours.to_bytes() == theirs.to_bytes()


def test_dlms_cosem_parses_our_get_responses():
    from dlms_cosem.protocol import xdlms

    theirs = xdlms.GetResponseFactory.from_bytes(GetResponseNormal(0xC1, Data.double_long_unsigned(123456)).to_bytes())
    assert isinstance(theirs, xdlms.GetResponseNormal)
    assert theirs.data == bytes.fromhex("060001E240")

    theirs = xdlms.GetResponseFactory.from_bytes(GetResponseNormal(0xC1, DataAccessResult.READ_WRITE_DENIED).to_bytes())
    assert isinstance(theirs, xdlms.GetResponseNormalWithError)
    assert theirs.error == DataAccessResult.READ_WRITE_DENIED

    theirs = xdlms.GetResponseFactory.from_bytes(
        GetResponseWithDataBlock(0xC1, False, 3, raw_data=b"\x01\x02").to_bytes())
    assert isinstance(theirs, xdlms.GetResponseWithBlock)
    assert (theirs.block_number, theirs.data) == (3, b"\x01\x02")

    theirs = xdlms.GetResponseFactory.from_bytes(
        GetResponseWithDataBlock(0xC1, True, 4, raw_data=b"\x03").to_bytes())
    assert isinstance(theirs, xdlms.GetResponseLastBlock)
    assert (theirs.block_number, theirs.data) == (4, b"\x03")

    theirs = xdlms.GetResponseFactory.from_bytes(
        GetResponseWithDataBlock(0xC1, True, 4, error=DataAccessResult.DATA_BLOCK_NUMBER_INVALID).to_bytes())
    assert isinstance(theirs, xdlms.GetResponseLastBlockWithError)
    assert theirs.error == DataAccessResult.DATA_BLOCK_NUMBER_INVALID
