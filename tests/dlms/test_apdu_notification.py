"""Data-Notification (0x0F): encodings, round trips, gurux and dlms_cosem cross-checks."""
from __future__ import annotations

import datetime as dt
import pathlib
import sys

import pytest
from hypothesis import given

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_apdu_common import APDU_STRATEGIES, gurux_tags, gurux_values  # noqa: E402

from smartmeter.cosem import axdr  # noqa: E402
from smartmeter.cosem.data import CosemDateTime, Data  # noqa: E402
from smartmeter.dlms.apdu.notification import DataNotification  # noqa: E402
from smartmeter.dlms.apdu.xdlms import decode_xdlms  # noqa: E402
from smartmeter.errors import DecodeError  # noqa: E402

STAMP = bytes.fromhex("07E8030F05100000FF800000")  # 2024-03-15 Fri 16:00:00, deviation/status unspecified
BODY = Data.structure((Data.octet_string(bytes.fromhex("0100010800FF")), Data.double_long_unsigned(123456)))


def test_encoding_without_and_with_date_time():
    assert DataNotification(1, b"", Data.unsigned(5)).to_bytes() == bytes.fromhex("0F 00000001 00 1105".replace(" ", ""))
    b = DataNotification(0x80000002, STAMP, Data.unsigned(5)).to_bytes()
    assert b == bytes.fromhex("0F 80000002 0C".replace(" ", "")) + STAMP + b"\x11\x05"
    assert decode_xdlms(b) == DataNotification(0x80000002, STAMP, Data.unsigned(5))


def test_date_time_field_holds_an_axdr_date_time():
    when = CosemDateTime.from_datetime(dt.datetime(2024, 3, 15, 16, 0, tzinfo=dt.timezone.utc))
    n = DataNotification(3, axdr.encode_date_time(when), BODY)
    assert axdr.decode_date_time(decode_xdlms(n.to_bytes()).date_time) == when


@pytest.mark.parametrize("hexstr", ["0F 00000001 00", "0F 000001", "0F 00000001 0C 07E8", "0F 00000001 00 1105 00"])
def test_malformed(hexstr):
    with pytest.raises(DecodeError):
        decode_xdlms(bytes.fromhex(hexstr.replace(" ", "")))


@given(APDU_STRATEGIES[DataNotification])
def test_round_trip(apdu):
    assert DataNotification.from_bytes(apdu.to_bytes()) == apdu
    assert decode_xdlms(apdu.to_bytes()) == apdu


def test_gurux_reads_our_notification():
    b = DataNotification(0x00000007, b"", BODY).to_bytes()
    assert gurux_tags(b)[:1] == ["DataNotification"]
    assert gurux_values(b, "LongInvokeIdAndPriority") == ["00000007"]
    assert gurux_values(b, "OctetString") == ["0100010800FF"]
    assert gurux_values(b, "UInt32") == ["0001E240"]


def test_dlms_cosem_parses_our_notification():
    from dlms_cosem.protocol.xdlms import DataNotification as Theirs

    b = DataNotification(0x40000009, STAMP, BODY).to_bytes()
    theirs = Theirs.from_bytes(b)
    assert theirs.long_invoke_id_and_priority.long_invoke_id == 9
    assert theirs.long_invoke_id_and_priority.confirmed
    assert (theirs.date_time.year, theirs.date_time.month, theirs.date_time.day, theirs.date_time.hour) == (2024, 3, 15, 16)
    assert theirs.body == axdr.encode(BODY)

    theirs = Theirs.from_bytes(DataNotification(1, b"", BODY).to_bytes())
    assert theirs.date_time is None
    assert theirs.body == axdr.encode(BODY)
