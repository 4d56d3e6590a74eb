"""ACTION APDUs: hand-checked encodings, round trips, gurux and dlms_cosem cross-checks."""
from __future__ import annotations

import pathlib
import sys

import pytest
from hypothesis import given

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_apdu_common import APDU_STRATEGIES, gurux_tags, gurux_values  # noqa: E402

from smartmeter.cosem.data import Data  # noqa: E402
from smartmeter.dlms.apdu.action import (  # noqa: E402
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
from smartmeter.dlms.apdu.common import ActionResult, CosemMethodDescriptor, DataAccessResult  # noqa: E402
from smartmeter.dlms.apdu.xdlms import decode_xdlms  # noqa: E402
from smartmeter.errors import DecodeError, EncodeError  # noqa: E402

# Disconnect control (class 70, 0.0.96.3.10.255) remote_disconnect (method 1) with integer(0).
DISCONNECT = CosemMethodDescriptor(70, bytes.fromhex("0000600A00FF"), 1)
RECONNECT = CosemMethodDescriptor(70, bytes.fromhex("0000600A00FF"), 2)

VECTORS = [
    ("C301C1 0046 0000600A00FF 01 01 0F00", ActionRequestNormal(0xC1, DISCONNECT, Data.integer(0))),
    ("C301C1 0046 0000600A00FF 01 00", ActionRequestNormal(0xC1, DISCONNECT, None)),
    ("C302C1 00000001", ActionRequestNextPblock(0xC1, 1)),
    ("C303C1 02 0046 0000600A00FF 01 0046 0000600A00FF 02 02 0F00 00",
     ActionRequestWithList(0xC1, ((DISCONNECT, Data.integer(0)), (RECONNECT, None)))),
    ("C304C1 0046 0000600A00FF 01 01 00000001 02 0F00",
     ActionRequestWithFirstPblock(0xC1, DISCONNECT, True, 1, b"\x0f\x00")),
    ("C305C1 01 0046 0000600A00FF 01 00 00000001 01 0F",
     ActionRequestWithListAndFirstPblock(0xC1, (DISCONNECT,), False, 1, b"\x0f")),
    ("C306C1 01 00000002 01 00", ActionRequestWithPblock(0xC1, True, 2, b"\x00")),
    ("C701C1 00 00", ActionResponseNormal(0xC1, ActionResult.SUCCESS, None)),
    ("C701C1 00 01 00 1105", ActionResponseNormal(0xC1, ActionResult.SUCCESS, Data.unsigned(5))),
    ("C701C1 03 01 01 03", ActionResponseNormal(0xC1, ActionResult.READ_WRITE_DENIED, DataAccessResult.READ_WRITE_DENIED)),
    ("C702C1 00 00000001 02 0102", ActionResponseWithPblock(0xC1, False, 1, b"\x01\x02")),
    ("C703C1 02 00 00 0B 01 00 00", ActionResponseWithList(0xC1, ((ActionResult.SUCCESS, None),
                                                                   (ActionResult.OBJECT_UNAVAILABLE, Data.null())))),
    ("C704C1 00000003", ActionResponseNextPblock(0xC1, 3)),
]


@pytest.mark.parametrize("hexstr,apdu", VECTORS)
def test_known_encodings(hexstr, apdu):
    b = bytes.fromhex(hexstr.replace(" ", ""))
    assert apdu.to_bytes() == b
    assert type(apdu).from_bytes(b) == apdu
    assert decode_xdlms(b) == apdu


def test_with_list_none_parameters_become_null_data():
    apdu = ActionRequestWithList(0xC1, ((DISCONNECT, None),))
    assert apdu.items == ((DISCONNECT, Data.null()),)
    assert apdu == ActionRequestWithList(0xC1, ((DISCONNECT, Data.null()),))


def test_with_list_rejects_count_mismatch():
    with pytest.raises(DecodeError):
        decode_xdlms(bytes.fromhex("C303C1 01 0046 0000600A00FF 01 02 0F00 0F00".replace(" ", "")))


@pytest.mark.parametrize("hexstr", [
    "C701C1 11 00",              # 17 is not an Action-Result
    "C701C1 00 02",              # presence flag 2
    "C701C1 00 01 02",           # Get-Data-Result choice 2
    "C301C1 0046 0000600A00",    # method descriptor cut short
    "C307C1",                    # unknown Action-Request choice
    "C705C1",                    # unknown Action-Response choice
])
def test_malformed(hexstr):
    with pytest.raises(DecodeError):
        decode_xdlms(bytes.fromhex(hexstr.replace(" ", "")))


@pytest.mark.parametrize("bad", [
    ActionRequestNormal(0xC1, CosemMethodDescriptor(70, bytes(5), 1)),
    ActionRequestWithListAndFirstPblock(0xC1, ("not a descriptor",), False, 1, b""),
])
def test_unencodable(bad):
    with pytest.raises(EncodeError):
        bad.to_bytes()


@pytest.mark.parametrize("cls", [ActionRequestNormal, ActionRequestNextPblock, ActionRequestWithList,
                                 ActionRequestWithFirstPblock, ActionRequestWithListAndFirstPblock,
                                 ActionRequestWithPblock, ActionResponseNormal, ActionResponseWithPblock,
                                 ActionResponseWithList, ActionResponseNextPblock])
def test_round_trip(cls):
    @given(APDU_STRATEGIES[cls])
    def check(apdu):
        b = apdu.to_bytes()
        assert (b[0], b[1]) == (cls.TAG, cls.CHOICE)
        assert cls.from_bytes(b) == apdu
        assert decode_xdlms(b) == apdu

    check()


def test_gurux_reads_our_action_apdus():
    b = ActionRequestNormal(0xC1, DISCONNECT, Data.integer(0)).to_bytes()
    assert gurux_tags(b)[:2] == ["ActionRequest", "ActionRequestNormal"]
    assert gurux_values(b, "ClassId") == ["0046"]
    assert gurux_values(b, "InstanceId") == ["0000600A00FF"]
    assert gurux_values(b, "MethodId") == ["01"]
    assert gurux_values(b, "Int8") == ["00"]

    b = ActionResponseNormal(0xC1, ActionResult.SUCCESS, None).to_bytes()
    assert gurux_tags(b)[:2] == ["ActionResponse", "ActionResponseNormal"]
    assert gurux_values(b, "Result") == ["Success"]

    b = ActionResponseNormal(0xC1, ActionResult.SUCCESS, Data.unsigned(5)).to_bytes()
    assert gurux_values(b, "UInt8") == ["05"]

    b = ActionResponseNormal(0xC1, ActionResult.OTHER_REASON, DataAccessResult.OTHER_REASON).to_bytes()
    assert gurux_values(b, "DataAccessError") == ["OtherReason"]

    b = ActionResponseNextPblock(0xC1, 3).to_bytes()
    assert gurux_tags(b)[:2] == ["ActionResponse", "ActionResponseNextBlock"]
    assert gurux_values(b, "BlockNumber") == ["00000003"]


def test_dlms_cosem_parses_our_action_apdus():
    from dlms_cosem.protocol import xdlms

    b = ActionRequestNormal(0xC1, DISCONNECT, Data.integer(0)).to_bytes()
    theirs = xdlms.ActionRequestFactory.from_bytes(b)
    assert isinstance(theirs, xdlms.ActionRequestNormal)
    assert theirs.cosem_method.interface == 70 and theirs.cosem_method.method == 1
    assert theirs.data == b"\x0f\x00"
    assert theirs.to_bytes() == b

    theirs = xdlms.ActionResponseFactory.from_bytes(ActionResponseNormal(0xC1, ActionResult.SUCCESS).to_bytes())
    assert isinstance(theirs, xdlms.ActionResponseNormal) and theirs.status == 0

    theirs = xdlms.ActionResponseFactory.from_bytes(
        ActionResponseNormal(0xC1, ActionResult.SUCCESS, Data.unsigned(5)).to_bytes())
    assert isinstance(theirs, xdlms.ActionResponseNormalWithData)
    assert theirs.data == b"\x11\x05"

    theirs = xdlms.ActionResponseFactory.from_bytes(
        ActionResponseNormal(0xC1, ActionResult.HARDWARE_FAULT, DataAccessResult.HARDWARE_FAULT).to_bytes())
    assert isinstance(theirs, xdlms.ActionResponseNormalWithError)
    assert theirs.status == 1 and theirs.error == DataAccessResult.HARDWARE_FAULT
