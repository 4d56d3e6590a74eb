"""Decode any xDLMS LN service APDU this package implements, by tag and CHOICE byte.

ACSE APDUs (AARQ/AARE/RLRQ/RLRE) and ciphered APDUs are handled elsewhere; their tags
give a DecodeError here.
"""
from __future__ import annotations

from typing import Union

from smartmeter.dlms.apdu.access import AccessRequest, AccessResponse
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
from smartmeter.dlms.apdu.common import Reader
from smartmeter.dlms.apdu.errors import ConfirmedServiceError, ExceptionResponse
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
from smartmeter.errors import DecodeError

__all__ = ["XdlmsApdu", "APDU_CLASSES", "decode_xdlms"]

XdlmsApdu = Union[
    GetRequestNormal, GetRequestNext, GetRequestWithList,
    GetResponseNormal, GetResponseWithDataBlock, GetResponseWithList,
    SetRequestNormal, SetRequestWithFirstDatablock, SetRequestWithDatablock, SetRequestWithList,
    SetRequestWithListAndFirstDatablock,
    SetResponseNormal, SetResponseDatablock, SetResponseLastDatablock, SetResponseLastDatablockWithList,
    SetResponseWithList,
    ActionRequestNormal, ActionRequestNextPblock, ActionRequestWithList, ActionRequestWithFirstPblock,
    ActionRequestWithListAndFirstPblock, ActionRequestWithPblock,
    ActionResponseNormal, ActionResponseWithPblock, ActionResponseWithList, ActionResponseNextPblock,
    AccessRequest, AccessResponse,
    DataNotification, GeneralBlockTransfer, ExceptionResponse, ConfirmedServiceError,
]

APDU_CLASSES: tuple[type, ...] = XdlmsApdu.__args__

# tag -> class for APDUs without a CHOICE byte; tag -> {choice: class} for the others.
_BY_TAG: dict[int, type] = {}
_BY_TAG_CHOICE: dict[int, dict[int, type]] = {}
for _cls in APDU_CLASSES:
    if _cls.CHOICE is None:
        _BY_TAG[_cls.TAG] = _cls
    else:
        _BY_TAG_CHOICE.setdefault(_cls.TAG, {})[_cls.CHOICE] = _cls
del _cls


def decode_xdlms(b: bytes | bytearray | memoryview) -> XdlmsApdu:
    """Exactly one APDU spanning all of `b`; DecodeError (TruncatedError when cut short)
    on an unknown tag or choice, malformed contents or trailing bytes."""
    r = Reader(b, "xDLMS APDU")
    tag = r.u8("tag")
    cls = _BY_TAG.get(tag)
    if cls is None:
        choices = _BY_TAG_CHOICE.get(tag)
        if choices is None:
            raise DecodeError("xDLMS APDU", 0, f"unknown tag 0x{tag:02X}")
        choice = r.u8("choice")
        cls = choices.get(choice)
        if cls is None:
            raise DecodeError("xDLMS APDU", 1, f"unknown choice {choice} for tag 0x{tag:02X}")
    r.what = cls.__name__
    value = cls._decode_body(r)
    r.finish()
    return value
