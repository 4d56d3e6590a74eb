"""General-Block-Transfer [224] = 0xE0 (Green Book §9.3.x, §9.5).

    General-Block-Transfer ::= SEQUENCE { block-control Unsigned8, block-number Unsigned16,
                                          block-number-ack Unsigned16, block-data OCTET STRING }

block-control: bit 7 last-block, bit 6 streaming, bits 0..5 window (1..63 blocks the
sender of this APDU can receive; 0 is legal on the wire and kept as is).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from smartmeter.dlms.apdu.common import Apdu, Reader, put_bool, put_octet_string, put_u16
from smartmeter.errors import EncodeError

GENERAL_BLOCK_TRANSFER_TAG = 0xE0

__all__ = ["GENERAL_BLOCK_TRANSFER_TAG", "GeneralBlockTransfer"]

_LAST_BLOCK = 0x80
_STREAMING = 0x40
_WINDOW_MASK = 0x3F


@dataclass(frozen=True, slots=True)
class GeneralBlockTransfer(Apdu):
    last_block: bool
    streaming: bool
    window: int
    block_number: int
    block_number_ack: int
    block_data: bytes

    TAG: ClassVar[int] = GENERAL_BLOCK_TRANSFER_TAG

    def _encode_body(self, out: bytearray) -> None:
        # put_bool into a scratch buffer only to validate the flags' types.
        put_bool(bytearray(), self.last_block, "last_block")
        put_bool(bytearray(), self.streaming, "streaming")
        if type(self.window) is not int or not 0 <= self.window <= _WINDOW_MASK:
            raise EncodeError(f"window must be an int in 0..63, got {self.window!r}")
        out.append((_LAST_BLOCK if self.last_block else 0) | (_STREAMING if self.streaming else 0) | self.window)
        put_u16(out, self.block_number, "block_number")
        put_u16(out, self.block_number_ack, "block_number_ack")
        put_octet_string(out, self.block_data, "block_data")

    @classmethod
    def _decode_body(cls, r: Reader) -> "GeneralBlockTransfer":
        control = r.u8("block-control")
        return cls(
            bool(control & _LAST_BLOCK),
            bool(control & _STREAMING),
            control & _WINDOW_MASK,
            r.u16("block-number"),
            r.u16("block-number-ack"),
            r.octet_string("block-data"),
        )
