"""Data-Notification [15] = 0x0F: unconfirmed push from server to client (Green Book §9.5).

    Data-Notification ::= SEQUENCE { long-invoke-id-and-priority Unsigned32,
                                     date-time OCTET STRING, notification-body Data }
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from smartmeter.cosem.data import Data
from smartmeter.dlms.apdu.common import Apdu, Reader, put_data, put_octet_string, put_u32

DATA_NOTIFICATION_TAG = 0x0F

__all__ = ["DATA_NOTIFICATION_TAG", "DataNotification"]


@dataclass(frozen=True, slots=True)
class DataNotification(Apdu):
    """`date_time` is the raw OCTET STRING: empty when absent, else normally 12 bytes of
    date-time (see `smartmeter.cosem.axdr.encode_date_time`)."""

    long_invoke_id_and_priority: int
    date_time: bytes
    body: Data

    TAG: ClassVar[int] = DATA_NOTIFICATION_TAG

    def _encode_body(self, out: bytearray) -> None:
        put_u32(out, self.long_invoke_id_and_priority, "long_invoke_id_and_priority")
        put_octet_string(out, self.date_time, "date_time")
        put_data(out, self.body, "body")

    @classmethod
    def _decode_body(cls, r: Reader) -> "DataNotification":
        return cls(r.u32("long-invoke-id-and-priority"), r.octet_string("date-time"), r.data("notification-body"))
