"""Shared Hypothesis strategies and sample APDUs for the xDLMS APDU tests, and the tests of
`smartmeter.dlms.apdu.common` (descriptors, enums, selective-access parameters).

Other test modules import the strategies from here (`from test_apdu_common import ...`).
"""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartmeter.cosem.data import CosemDate, CosemDateTime, CosemTime, Data, DataType
from smartmeter.dlms.apdu.access import (
    AccessRequest,
    AccessRequestKind,
    AccessRequestSpec,
    AccessResponse,
    AccessResponseKind,
    AccessResponseSpec,
)
from smartmeter.dlms.apdu.action import (
    ActionRequestNextPblock,
    ActionRequestNormal,
    ActionRequestWithFirstPblock,
    ActionRequestWithList,
    ActionRequestWithListAndFirstPblock,
    ActionRequestWithPblock,
    ActionResponseNextPblock,
    ActionResponseNormal,
    ActionResponseWithList,
    ActionResponseWithPblock,
)
from smartmeter.dlms.apdu.common import (
    ActionResult,
    CaptureObjectDefinition,
    CosemAttributeDescriptor,
    CosemMethodDescriptor,
    DataAccessResult,
    EntryDescriptor,
    RangeDescriptor,
    SelectiveAccessDescriptor,
)
from smartmeter.dlms.apdu.errors import (
    ConfirmedServiceError,
    ConfirmedServiceErrorChoice,
    ExceptionResponse,
    ServiceError,
    ServiceErrorChoice,
    StateError,
)
from smartmeter.dlms.apdu.gbt import GeneralBlockTransfer
from smartmeter.dlms.apdu.get import (
    GetRequestNext,
    GetRequestNormal,
    GetRequestWithList,
    GetResponseNormal,
    GetResponseWithDataBlock,
    GetResponseWithList,
)
from smartmeter.dlms.apdu.notification import DataNotification
from smartmeter.dlms.apdu.set import (
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
from smartmeter.dlms.apdu.xdlms import APDU_CLASSES, decode_xdlms
from smartmeter.errors import DecodeError, EncodeError, TruncatedError

# ---------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
obis = st.binary(min_size=6, max_size=6)
# Lengths around the 0x7F/0x80 and 0xFF/0x100 boundaries of the A-XDR length form.
raw_bytes = st.one_of(st.binary(max_size=20), st.binary(min_size=126, max_size=300))

_INT_TYPES = {
    DataType.INTEGER: (-(2**7), 2**7 - 1),
    DataType.LONG: (-(2**15), 2**15 - 1),
    DataType.DOUBLE_LONG: (-(2**31), 2**31 - 1),
    DataType.LONG64: (-(2**63), 2**63 - 1),
    DataType.UNSIGNED: (0, 2**8 - 1),
    DataType.LONG_UNSIGNED: (0, 2**16 - 1),
    DataType.DOUBLE_LONG_UNSIGNED: (0, 2**32 - 1),
    DataType.LONG64_UNSIGNED: (0, 2**64 - 1),
    DataType.ENUM: (0, 2**8 - 1),
}

_date_time = st.builds(
    CosemDateTime,
    st.builds(CosemDate, st.one_of(st.none(), st.integers(1990, 2100)), st.one_of(st.none(), st.integers(1, 12)),
              st.one_of(st.none(), st.integers(1, 31)), st.one_of(st.none(), st.integers(1, 7))),
    st.builds(CosemTime, st.one_of(st.none(), st.integers(0, 23)), st.one_of(st.none(), st.integers(0, 59)),
              st.one_of(st.none(), st.integers(0, 59)), st.one_of(st.none(), st.integers(0, 99))),
    st.one_of(st.none(), st.integers(-720, 720)),
    st.one_of(st.none(), st.integers(0, 0xFE)),
)

scalar_data = st.one_of(
    st.just(Data.null()),
    st.booleans().map(Data.boolean),
    *(st.integers(lo, hi).map(lambda v, t=t: Data(t, v)) for t, (lo, hi) in _INT_TYPES.items()),
    st.binary(max_size=40).map(Data.octet_string),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20).map(Data.visible_string),
    st.text(max_size=10).map(lambda s: Data(DataType.UTF8_STRING, s)),
    st.text("01", max_size=20).map(lambda s: Data(DataType.BIT_STRING, s)),
    st.floats(width=32, allow_nan=False).map(lambda f: Data(DataType.FLOAT32, f)),
    st.floats(allow_nan=False).map(lambda f: Data(DataType.FLOAT64, f)),
    _date_time.map(lambda v: Data(DataType.DATE_TIME, v)),
)

data_values = st.recursive(
    scalar_data,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(Data.structure),
        st.lists(children, max_size=4).map(Data.array),
    ),
    max_leaves=12,
)

attribute_descriptors = st.builds(CosemAttributeDescriptor, u16, obis, u8)
method_descriptors = st.builds(CosemMethodDescriptor, u16, obis, u8)
access_descriptors = st.builds(SelectiveAccessDescriptor, u8, data_values)
optional_access = st.one_of(st.none(), access_descriptors)
attribute_items = st.lists(st.tuples(attribute_descriptors, optional_access), max_size=4).map(tuple)
data_access_results = st.sampled_from(DataAccessResult)
action_results = st.sampled_from(ActionResult)
get_data_results = st.one_of(data_values, data_access_results)
return_data = st.one_of(st.none(), data_values, data_access_results)
date_time_raw = st.one_of(st.just(b""), st.binary(min_size=12, max_size=12))

access_request_specs = st.one_of(
    st.builds(AccessRequestSpec, st.just(AccessRequestKind.GET), attribute_descriptors),
    st.builds(AccessRequestSpec, st.just(AccessRequestKind.SET), attribute_descriptors),
    st.builds(AccessRequestSpec, st.just(AccessRequestKind.ACTION), method_descriptors),
    st.builds(AccessRequestSpec, st.just(AccessRequestKind.GET_WITH_SELECTION), attribute_descriptors,
              access_descriptors),
    st.builds(AccessRequestSpec, st.just(AccessRequestKind.SET_WITH_SELECTION), attribute_descriptors,
              access_descriptors),
)
access_response_specs = st.one_of(
    st.builds(AccessResponseSpec, st.sampled_from([AccessResponseKind.GET, AccessResponseKind.SET]),
              data_access_results),
    st.builds(AccessResponseSpec, st.just(AccessResponseKind.ACTION), action_results),
)


def _tuples(s, max_size=4):
    return st.lists(s, max_size=max_size).map(tuple)


# One strategy per APDU class; test_every_class_has_a_strategy keeps this complete.
APDU_STRATEGIES = {
    GetRequestNormal: st.builds(GetRequestNormal, u8, attribute_descriptors, optional_access),
    GetRequestNext: st.builds(GetRequestNext, u8, u32),
    GetRequestWithList: st.builds(GetRequestWithList, u8, attribute_items),
    GetResponseNormal: st.builds(GetResponseNormal, u8, get_data_results),
    GetResponseWithDataBlock: st.one_of(
        st.builds(lambda i, l, n, d: GetResponseWithDataBlock(i, l, n, raw_data=d), u8, st.booleans(), u32, raw_bytes),
        st.builds(lambda i, l, n, e: GetResponseWithDataBlock(i, l, n, error=e), u8, st.booleans(), u32,
                  data_access_results),
    ),
    GetResponseWithList: st.builds(GetResponseWithList, u8, _tuples(get_data_results)),
    SetRequestNormal: st.builds(SetRequestNormal, u8, attribute_descriptors, optional_access, data_values),
    SetRequestWithFirstDatablock: st.builds(SetRequestWithFirstDatablock, u8, attribute_descriptors, optional_access,
                                            st.booleans(), u32, raw_bytes),
    SetRequestWithDatablock: st.builds(SetRequestWithDatablock, u8, st.booleans(), u32, raw_bytes),
    SetRequestWithList: st.builds(SetRequestWithList, u8, attribute_items, _tuples(data_values)),
    SetRequestWithListAndFirstDatablock: st.builds(SetRequestWithListAndFirstDatablock, u8, attribute_items,
                                                   st.booleans(), u32, raw_bytes),
    SetResponseNormal: st.builds(SetResponseNormal, u8, data_access_results),
    SetResponseDatablock: st.builds(SetResponseDatablock, u8, u32),
    SetResponseLastDatablock: st.builds(SetResponseLastDatablock, u8, data_access_results, u32),
    SetResponseLastDatablockWithList: st.builds(SetResponseLastDatablockWithList, u8, _tuples(data_access_results),
                                                u32),
    SetResponseWithList: st.builds(SetResponseWithList, u8, _tuples(data_access_results)),
    ActionRequestNormal: st.builds(ActionRequestNormal, u8, method_descriptors, st.one_of(st.none(), data_values)),
    ActionRequestNextPblock: st.builds(ActionRequestNextPblock, u8, u32),
    ActionRequestWithList: st.builds(ActionRequestWithList, u8,
                                     _tuples(st.tuples(method_descriptors, data_values))),
    ActionRequestWithFirstPblock: st.builds(ActionRequestWithFirstPblock, u8, method_descriptors, st.booleans(), u32,
                                            raw_bytes),
    ActionRequestWithListAndFirstPblock: st.builds(ActionRequestWithListAndFirstPblock, u8,
                                                   _tuples(method_descriptors), st.booleans(), u32, raw_bytes),
    ActionRequestWithPblock: st.builds(ActionRequestWithPblock, u8, st.booleans(), u32, raw_bytes),
    ActionResponseNormal: st.builds(ActionResponseNormal, u8, action_results, return_data),
    ActionResponseWithPblock: st.builds(ActionResponseWithPblock, u8, st.booleans(), u32, raw_bytes),
    ActionResponseWithList: st.builds(ActionResponseWithList, u8, _tuples(st.tuples(action_results, return_data))),
    ActionResponseNextPblock: st.builds(ActionResponseNextPblock, u8, u32),
    AccessRequest: st.builds(AccessRequest, u32, date_time_raw, _tuples(access_request_specs),
                             _tuples(data_values)),
    AccessResponse: st.builds(AccessResponse, u32, date_time_raw, _tuples(data_values), _tuples(access_response_specs),
                              st.one_of(st.none(), _tuples(access_request_specs))),
    DataNotification: st.builds(DataNotification, u32, date_time_raw, data_values),
    GeneralBlockTransfer: st.builds(GeneralBlockTransfer, st.booleans(), st.booleans(), st.integers(0, 63), u16, u16,
                                    raw_bytes),
    ExceptionResponse: st.one_of(
        st.builds(ExceptionResponse, st.sampled_from(StateError),
                  st.sampled_from([e for e in ServiceError if e != ServiceError.INVOCATION_COUNTER_ERROR])),
        st.builds(ExceptionResponse, st.sampled_from(StateError), st.just(ServiceError.INVOCATION_COUNTER_ERROR),
                  u32),
    ),
    ConfirmedServiceError: st.builds(ConfirmedServiceError, st.sampled_from(ConfirmedServiceErrorChoice),
                                     st.sampled_from(ServiceErrorChoice), u8),
}

any_apdu = st.one_of(*APDU_STRATEGIES.values())

CLOCK = bytes.fromhex("0000010000FF")
LOAD_PROFILE = bytes.fromhex("0100630100FF")


def sample_apdus() -> list:
    """A fixed, hand-written corpus covering every APDU class (seeds for the fuzzer)."""
    clock_time = CosemAttributeDescriptor(8, CLOCK, 2)
    entry = EntryDescriptor(1, 10, 1, 0).to_access_descriptor()
    rng = RangeDescriptor(
        (8, CLOCK, 2, 0),
        Data.octet_string(bytes.fromhex("07E8010100000000FF800000")),
        Data.octet_string(bytes.fromhex("07E8010200000000FF800000")),
        ((8, CLOCK, 2, 0), (3, bytes.fromhex("0100010800FF"), 2, 0)),
    ).to_access_descriptor()
    reg = Data.structure((Data.double_long_unsigned(123456), Data.octet_string(b"\x01\x02"),
                          Data.array((Data.long(-5), Data.enum(30)))))
    method = CosemMethodDescriptor(70, bytes.fromhex("0000600300FF"), 1)
    return [
        GetRequestNormal(0xC1, clock_time, None),
        GetRequestNormal(0xC1, CosemAttributeDescriptor(7, LOAD_PROFILE, 2), entry),
        GetRequestNormal(0x81, CosemAttributeDescriptor(7, LOAD_PROFILE, 2), rng),
        GetRequestNext(0xC1, 1),
        GetRequestWithList(0xC2, ((clock_time, None), (CosemAttributeDescriptor(7, LOAD_PROFILE, 2), entry))),
        GetResponseNormal(0xC1, Data.octet_string(bytes(12))),
        GetResponseNormal(0xC1, reg),
        GetResponseNormal(0xC1, DataAccessResult.OBJECT_UNDEFINED),
        GetResponseWithDataBlock(0xC1, False, 1, raw_data=bytes(range(200))),
        GetResponseWithDataBlock(0xC1, True, 2, error=DataAccessResult.LONG_GET_ABORTED),
        GetResponseWithList(0xC1, (reg, DataAccessResult.READ_WRITE_DENIED)),
        SetRequestNormal(0xC1, clock_time, None, Data.octet_string(bytes(12))),
        SetRequestNormal(0xC1, clock_time, entry, reg),
        SetRequestWithFirstDatablock(0xC1, clock_time, None, False, 1, b"\x09\x0c"),
        SetRequestWithDatablock(0xC1, True, 2, bytes(12)),
        SetRequestWithList(0xC1, ((clock_time, None), (clock_time, entry)), (reg, Data.null())),
        SetRequestWithListAndFirstDatablock(0xC1, ((clock_time, None),), False, 1, b"\x01\x01"),
        SetResponseNormal(0xC1, DataAccessResult.SUCCESS),
        SetResponseDatablock(0xC1, 1),
        SetResponseLastDatablock(0xC1, DataAccessResult.TYPE_UNMATCHED, 3),
        SetResponseLastDatablockWithList(0xC1, (DataAccessResult.SUCCESS, DataAccessResult.OTHER_REASON), 3),
        SetResponseWithList(0xC1, (DataAccessResult.SUCCESS, DataAccessResult.HARDWARE_FAULT)),
        ActionRequestNormal(0xC1, method, Data.integer(0)),
        ActionRequestNormal(0xC1, method, None),
        ActionRequestNextPblock(0xC1, 4),
        ActionRequestWithList(0xC1, ((method, Data.integer(0)), (method, None))),
        ActionRequestWithFirstPblock(0xC1, method, False, 1, b"\x0f"),
        ActionRequestWithListAndFirstPblock(0xC1, (method, method), False, 1, b"\x0f\x00"),
        ActionRequestWithPblock(0xC1, True, 2, b"\x0f\x00"),
        ActionResponseNormal(0xC1, ActionResult.SUCCESS, None),
        ActionResponseNormal(0xC1, ActionResult.SUCCESS, reg),
        ActionResponseNormal(0xC1, ActionResult.OTHER_REASON, DataAccessResult.OTHER_REASON),
        ActionResponseWithPblock(0xC1, False, 1, bytes(30)),
        ActionResponseWithList(0xC1, ((ActionResult.SUCCESS, None), (ActionResult.TYPE_UNMATCHED, reg))),
        ActionResponseNextPblock(0xC1, 1),
        AccessRequest(0x40000001, b"", (
            AccessRequestSpec(AccessRequestKind.GET, clock_time),
            AccessRequestSpec(AccessRequestKind.SET, clock_time),
            AccessRequestSpec(AccessRequestKind.ACTION, method),
            AccessRequestSpec(AccessRequestKind.GET_WITH_SELECTION, CosemAttributeDescriptor(7, LOAD_PROFILE, 2),
                              entry),
        ), (Data.null(), Data.octet_string(bytes(12)), Data.integer(0), Data.null())),
        AccessResponse(0x40000001, bytes(12), (reg, Data.null()), (
            AccessResponseSpec(AccessResponseKind.GET, DataAccessResult.SUCCESS),
            AccessResponseSpec(AccessResponseKind.ACTION, ActionResult.SUCCESS),
        )),
        AccessResponse(1, b"", (), (), (AccessRequestSpec(AccessRequestKind.GET, clock_time),)),
        DataNotification(1, b"", reg),
        DataNotification(0x80000002, bytes.fromhex("07E8030F05100000FF800000"), Data.octet_string(bytes(300))),
        GeneralBlockTransfer(True, False, 1, 1, 0, bytes.fromhex("C001C100080000010000FF0200")),
        GeneralBlockTransfer(False, True, 63, 2, 1, bytes(200)),
        ExceptionResponse(StateError.SERVICE_NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE),
        ExceptionResponse(StateError.SERVICE_UNKNOWN, ServiceError.INVOCATION_COUNTER_ERROR, 0x12345678),
        ConfirmedServiceError(ConfirmedServiceErrorChoice.INITIATE_ERROR, ServiceErrorChoice.INITIATE, 1),
    ]


# ---------------------------------------------------------------------------------------
# Tests of common.py
# ---------------------------------------------------------------------------------------


def test_every_class_has_a_strategy_and_a_sample():
    assert set(APDU_STRATEGIES) == set(APDU_CLASSES)
    assert {type(a) for a in sample_apdus()} == set(APDU_CLASSES)


def test_enum_values_match_green_book():
    assert {e.name: e.value for e in DataAccessResult} == {
        "SUCCESS": 0, "HARDWARE_FAULT": 1, "TEMPORARY_FAILURE": 2, "READ_WRITE_DENIED": 3,
        "OBJECT_UNDEFINED": 4, "OBJECT_CLASS_INCONSISTENT": 9, "OBJECT_UNAVAILABLE": 11,
        "TYPE_UNMATCHED": 12, "SCOPE_OF_ACCESS_VIOLATED": 13, "DATA_BLOCK_UNAVAILABLE": 14,
        "LONG_GET_ABORTED": 15, "NO_LONG_GET_IN_PROGRESS": 16, "LONG_SET_ABORTED": 17,
        "NO_LONG_SET_IN_PROGRESS": 18, "DATA_BLOCK_NUMBER_INVALID": 19, "OTHER_REASON": 250,
    }
    assert ActionResult.LONG_ACTION_ABORTED == 15
    assert ActionResult.NO_LONG_ACTION_IN_PROGRESS == 16
    assert ActionResult.OTHER_REASON == 250
    assert len(ActionResult) == 13


def test_attribute_descriptor_bytes():
    d = CosemAttributeDescriptor(8, CLOCK, 2)
    assert d.to_bytes() == bytes.fromhex("00080000010000FF02")
    assert CosemAttributeDescriptor.from_bytes(bytes.fromhex("00080000010000FF02")) == d
    m = CosemMethodDescriptor(70, bytes.fromhex("0000600300FF"), 1)
    assert m.to_bytes() == bytes.fromhex("00460000600300FF01")
    assert CosemMethodDescriptor.from_bytes(m.to_bytes()) == m


@pytest.mark.parametrize("bad", [
    CosemAttributeDescriptor(8, b"\x00" * 5, 2),
    CosemAttributeDescriptor(0x10000, CLOCK, 2),
    CosemAttributeDescriptor(8, CLOCK, 256),
    CosemAttributeDescriptor(8, CLOCK, -1),
    CosemAttributeDescriptor(8, "0000010000FF", 2),
])
def test_attribute_descriptor_rejects_unencodable(bad):
    with pytest.raises(EncodeError):
        bad.to_bytes()


def test_descriptor_truncated_and_trailing():
    with pytest.raises(TruncatedError):
        CosemAttributeDescriptor.from_bytes(bytes.fromhex("00080000010000FF"))
    with pytest.raises(DecodeError):
        CosemAttributeDescriptor.from_bytes(bytes.fromhex("00080000010000FF0200"))


def test_entry_descriptor_data_and_bytes():
    e = EntryDescriptor(1, 10, 2, 5)
    # Blue Book: structure { double-long-unsigned, double-long-unsigned, long-unsigned, long-unsigned }
    assert e.to_data() == Data.structure((Data.double_long_unsigned(1), Data.double_long_unsigned(10),
                                          Data.long_unsigned(2), Data.long_unsigned(5)))
    assert EntryDescriptor.from_data(e.to_data()) == e
    req = GetRequestNormal(0xC1, CosemAttributeDescriptor(7, LOAD_PROFILE, 2), e.to_access_descriptor())
    assert req.to_bytes() == bytes.fromhex(
        "C001C1" "00070100630100FF02" "01" "02" "0204" "0600000001" "060000000A" "120002" "120005")


def test_range_descriptor_data_shape():
    r = RangeDescriptor((8, CLOCK, 2, 0), Data.octet_string(b"a" * 12), Data.octet_string(b"b" * 12), ())
    d = r.to_data()
    assert d.type == DataType.STRUCTURE and len(d.value) == 4
    assert d.value[0] == Data.structure((Data.long_unsigned(8), Data.octet_string(CLOCK), Data.integer(2),
                                         Data.long_unsigned(0)))
    assert d.value[3] == Data.array(())
    assert RangeDescriptor.from_data(d) == r
    assert r.restricting_object == (8, CLOCK, 2, 0)
    assert isinstance(r.restricting_object, CaptureObjectDefinition)
    assert r.to_access_descriptor().access_selector == 1


def test_range_descriptor_accepts_other_integer_types():
    # Some clients send attribute_index as unsigned rather than integer.
    cod = Data.structure((Data.long_unsigned(8), Data.octet_string(CLOCK), Data.unsigned(2), Data.long_unsigned(0)))
    d = Data.structure((cod, Data.null(), Data.null(), Data.array((cod,))))
    r = RangeDescriptor.from_data(d)
    assert r.restricting_object == CaptureObjectDefinition(8, CLOCK, 2, 0)
    assert r.selected_values == (CaptureObjectDefinition(8, CLOCK, 2, 0),)


@pytest.mark.parametrize("bad", [
    Data.null(),
    Data.structure(()),
    Data.structure((Data.null(),) * 4),
    Data.structure((Data.structure((Data.long_unsigned(8), Data.octet_string(b"\x00" * 5), Data.integer(2),
                                    Data.long_unsigned(0))), Data.null(), Data.null(), Data.array(()))),
    Data.structure((Data.structure((Data.long_unsigned(8), Data.octet_string(CLOCK), Data.integer(2),
                                    Data.long_unsigned(0))), Data.null(), Data.null(), Data.null())),
])
def test_range_descriptor_rejects_bad_shapes(bad):
    with pytest.raises(DecodeError):
        RangeDescriptor.from_data(bad)


@pytest.mark.parametrize("bad", [Data.null(), Data.structure((Data.unsigned(1),) * 3),
                                 Data.structure((Data.octet_string(b""),) * 4)])
def test_entry_descriptor_rejects_bad_shapes(bad):
    with pytest.raises(DecodeError):
        EntryDescriptor.from_data(bad)


capture_objects = st.builds(CaptureObjectDefinition, u16, obis, st.integers(-128, 127), u16)


@given(capture_objects, scalar_data, scalar_data, st.lists(capture_objects, max_size=4).map(tuple))
def test_range_descriptor_round_trip(restricting, lo, hi, selected):
    r = RangeDescriptor(restricting, lo, hi, selected)
    assert RangeDescriptor.from_data(r.to_data()) == r


@given(u32, u32, u16, u16)
def test_entry_descriptor_round_trip(a, b, c, d):
    e = EntryDescriptor(a, b, c, d)
    assert EntryDescriptor.from_data(e.to_data()) == e


@given(any_apdu)
def test_any_apdu_round_trips_through_its_class_and_the_dispatcher(apdu):
    b = apdu.to_bytes()
    assert type(apdu).from_bytes(b) == apdu
    assert decode_xdlms(b) == apdu
    # Canonical: decoding and re-encoding gives the same bytes.
    assert decode_xdlms(b).to_bytes() == b


@pytest.mark.parametrize("apdu", sample_apdus(), ids=lambda a: type(a).__name__)
def test_samples_round_trip_and_every_strict_prefix_is_truncated(apdu):
    b = apdu.to_bytes()
    assert decode_xdlms(b) == apdu
    for n in range(len(b)):
        with pytest.raises(DecodeError):
            decode_xdlms(b[:n])
    with pytest.raises(DecodeError):
        decode_xdlms(b + b"\x00")


# ---------------------------------------------------------------------------------------
# Independent peers (test-only): gurux's translator and dlms_cosem's parsers
# ---------------------------------------------------------------------------------------


def gurux_xml(b: bytes) -> str:
    """gurux's XML rendering of one PDU; raises if gurux cannot parse it."""
    from gurux_dlms import GXByteBuffer, GXDLMSTranslator

    return GXDLMSTranslator().pduToXml(GXByteBuffer(b))


def gurux_tags(b: bytes) -> list[str]:
    import re

    return re.findall(r"<(\w+)", gurux_xml(b))


def gurux_values(b: bytes, tag: str) -> list[str]:
    """Every Value="..." gurux shows for elements named `tag`, in order."""
    import re

    return re.findall(rf'<{tag} Value="([^"]*)"', gurux_xml(b))


def test_invoke_id_and_priority_bits():
    from smartmeter.dlms.apdu.common import invoke_id_and_priority, long_invoke_id_and_priority

    assert invoke_id_and_priority(1, confirmed=True, high_priority=True) == 0xC1
    assert invoke_id_and_priority(1, confirmed=True) == 0x41
    assert invoke_id_and_priority(15, confirmed=False, high_priority=True) == 0x8F
    with pytest.raises(EncodeError):
        invoke_id_and_priority(16)
    assert long_invoke_id_and_priority(1, confirmed=True) == 0x40000001
    assert long_invoke_id_and_priority(0xFFFFFF, high_priority=True, break_on_error=True,
                                       self_descriptive=True) == 0xB0FFFFFF
    with pytest.raises(EncodeError):
        long_invoke_id_and_priority(1 << 24)


def test_invoke_id_bits_agree_with_dlms_cosem():
    from dlms_cosem.protocol.xdlms import InvokeIdAndPriority
    from dlms_cosem.protocol.xdlms.data_notification import LongInvokeIdAndPriority

    from smartmeter.dlms.apdu.common import invoke_id_and_priority, long_invoke_id_and_priority

    for iid in (0, 1, 7, 15):
        for confirmed in (False, True):
            for high in (False, True):
                theirs = InvokeIdAndPriority(iid, confirmed, high).to_bytes()
                assert theirs == bytes((invoke_id_and_priority(iid, confirmed, high),))
    theirs = LongInvokeIdAndPriority(0x123456, prioritized=True, confirmed=True, break_on_error=True).to_bytes()
    ours = long_invoke_id_and_priority(0x123456, confirmed=True, high_priority=True, break_on_error=True)
    assert theirs == ours.to_bytes(4, "big")
