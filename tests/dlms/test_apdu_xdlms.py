"""decode_xdlms: dispatch on tag and CHOICE byte, and what it refuses."""
from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_apdu_common import sample_apdus  # noqa: E402

from smartmeter.dlms.apdu.xdlms import APDU_CLASSES, XdlmsApdu, decode_xdlms  # noqa: E402
from smartmeter.errors import DecodeError, TruncatedError  # noqa: E402

EXPECTED_DISPATCH = {
    (0xC0, 1): "GetRequestNormal", (0xC0, 2): "GetRequestNext", (0xC0, 3): "GetRequestWithList",
    (0xC4, 1): "GetResponseNormal", (0xC4, 2): "GetResponseWithDataBlock", (0xC4, 3): "GetResponseWithList",
    (0xC1, 1): "SetRequestNormal", (0xC1, 2): "SetRequestWithFirstDatablock", (0xC1, 3): "SetRequestWithDatablock",
    (0xC1, 4): "SetRequestWithList", (0xC1, 5): "SetRequestWithListAndFirstDatablock",
    (0xC5, 1): "SetResponseNormal", (0xC5, 2): "SetResponseDatablock", (0xC5, 3): "SetResponseLastDatablock",
    (0xC5, 4): "SetResponseLastDatablockWithList", (0xC5, 5): "SetResponseWithList",
    (0xC3, 1): "ActionRequestNormal", (0xC3, 2): "ActionRequestNextPblock", (0xC3, 3): "ActionRequestWithList",
    (0xC3, 4): "ActionRequestWithFirstPblock", (0xC3, 5): "ActionRequestWithListAndFirstPblock",
    (0xC3, 6): "ActionRequestWithPblock",
    (0xC7, 1): "ActionResponseNormal", (0xC7, 2): "ActionResponseWithPblock", (0xC7, 3): "ActionResponseWithList",
    (0xC7, 4): "ActionResponseNextPblock",
    (0xD9, None): "AccessRequest", (0xDA, None): "AccessResponse", (0x0F, None): "DataNotification",
    (0xE0, None): "GeneralBlockTransfer", (0xD8, None): "ExceptionResponse", (0x0E, None): "ConfirmedServiceError",
}


def test_tags_and_choices_are_the_green_book_ones():
    assert {(c.TAG, c.CHOICE): c.__name__ for c in APDU_CLASSES} == EXPECTED_DISPATCH
    assert set(XdlmsApdu.__args__) == set(APDU_CLASSES)


@pytest.mark.parametrize("apdu", sample_apdus(), ids=lambda a: type(a).__name__)
def test_dispatch_returns_the_right_class(apdu):
    b = apdu.to_bytes()
    for form in (b, bytearray(b), memoryview(b)):
        decoded = decode_xdlms(form)
        assert type(decoded) is type(apdu) and decoded == apdu


@pytest.mark.parametrize("tag", [0x60, 0x61, 0x62, 0x63, 0x01, 0x08, 0xC2, 0xC8, 0xCC, 0xDB, 0xDD, 0xDF, 0xFF])
def test_tags_not_handled_here_are_refused(tag):
    # ACSE, InitiateRequest, event-notification, ciphered APDUs are someone else's.
    with pytest.raises(DecodeError) as exc:
        decode_xdlms(bytes((tag, 1, 0xC1, 0, 0)))
    assert not isinstance(exc.value, TruncatedError)


@pytest.mark.parametrize("tag,choice", [(0xC0, 0), (0xC0, 4), (0xC1, 6), (0xC3, 7), (0xC4, 4), (0xC5, 0),
                                        (0xC7, 5)])
def test_unknown_choice_is_refused(tag, choice):
    with pytest.raises(DecodeError):
        decode_xdlms(bytes((tag, choice, 0xC1, 0, 0, 0, 0)))


def test_empty_and_tag_only_inputs_are_truncated():
    with pytest.raises(TruncatedError):
        decode_xdlms(b"")
    with pytest.raises(TruncatedError):
        decode_xdlms(b"\xC0")


def test_trailing_bytes_are_refused_with_their_offset():
    b = bytes.fromhex("C002C100000001")
    with pytest.raises(DecodeError) as exc:
        decode_xdlms(b + b"\xAA\xBB")
    assert exc.value.offset == len(b)
    assert not isinstance(exc.value, TruncatedError)


def test_error_names_the_apdu_being_decoded():
    with pytest.raises(DecodeError, match="GetResponseNormal"):
        decode_xdlms(bytes.fromhex("C401C10105"))
