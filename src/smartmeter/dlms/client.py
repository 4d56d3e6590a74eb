"""The DLMS/COSEM client application layer, sans-io.

Each operation is an `Exchange`: `first()` gives the request APDU; `feed(response)` either
returns the next request APDU (block transfer in progress) or None when `result` is ready.
A driver (see `smartmeter.hes`) moves the bytes; this module never touches a socket.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smartmeter.cosem import axdr
from smartmeter.cosem.data import Data
from smartmeter.dlms.apdu import acse, action, get, set as set_
from smartmeter.dlms.apdu.common import (
    ActionResult, CosemAttributeDescriptor, CosemMethodDescriptor, DataAccessResult, SelectiveAccessDescriptor,
)
from smartmeter.dlms.apdu.errors import ConfirmedServiceError, ExceptionResponse
from smartmeter.dlms.apdu.gbt import GeneralBlockTransfer
from smartmeter.dlms.apdu.initiate import Conformance, InitiateRequest, InitiateResponse
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.errors import DecodeError, SmartmeterError

CLIENT_CONFORMANCE = (
    Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ | Conformance.BLOCK_TRANSFER_WITH_SET_OR_WRITE
    | Conformance.BLOCK_TRANSFER_WITH_ACTION | Conformance.MULTIPLE_REFERENCES | Conformance.GET | Conformance.SET
    | Conformance.SELECTIVE_ACCESS | Conformance.ACTION | Conformance.ATTRIBUTE0_SUPPORTED_WITH_GET
    | Conformance.GENERAL_BLOCK_TRANSFER | Conformance.ACCESS | Conformance.DATA_NOTIFICATION
)
INVOKE_ID_AND_PRIORITY = 0xC1  # invoke id 1, confirmed, high priority
MAX_BLOCKS = 100_000  # a server that never says "last block" cannot keep a client forever
MAX_RESPONSE = 16 * 1024 * 1024


class ClientError(SmartmeterError):
    """The meter refused or answered something this client cannot use."""


class AssociationRefused(ClientError):
    pass


class AccessDenied(ClientError):
    """A Data-Access-Result / Action-Result other than success."""

    def __init__(self, result: DataAccessResult | ActionResult, what: str) -> None:
        self.result = result
        super().__init__(f"{what}: the meter answered {result.name.lower().replace('_', '-')}")


def _unexpected(apdu: Any, what: str) -> ClientError:
    if isinstance(apdu, ExceptionResponse):
        return ClientError(f"{what}: exception-response {apdu.state_error.name.lower()} / {apdu.service_error.name.lower()}")
    if isinstance(apdu, ConfirmedServiceError):
        return ClientError(f"{what}: confirmed-service-error {apdu.error_type}/{apdu.error_value}")
    return ClientError(f"{what}: unexpected {type(apdu).__name__}")


class Exchange:
    """One request, possibly several blocks, one result."""

    what = "request"

    def __init__(self) -> None:
        self.result: Any = None
        self.done = False
        self._gbt_parts: list[bytes] = []
        self._gbt_size = 0

    def first(self) -> bytes:
        raise NotImplementedError

    def feed(self, response: bytes) -> bytes | None:
        if response[:1] == b"\xe0":
            return self._gbt(GeneralBlockTransfer.from_bytes(response))
        return self._on(decode_xdlms(response))

    def _gbt(self, block: GeneralBlockTransfer) -> bytes | None:
        self._gbt_parts.append(block.block_data)
        self._gbt_size += len(block.block_data)
        if len(self._gbt_parts) > MAX_BLOCKS or self._gbt_size > MAX_RESPONSE:
            raise ClientError(f"{self.what}: general-block-transfer response too long")
        if not block.last_block:
            return GeneralBlockTransfer(False, False, 1, 0, block.block_number, b"").to_bytes()
        whole = b"".join(self._gbt_parts)
        self._gbt_parts, self._gbt_size = [], 0
        return self.feed(whole)

    def _on(self, apdu: Any) -> bytes | None:
        raise NotImplementedError


class GetExchange(Exchange):
    def __init__(self, descriptor: CosemAttributeDescriptor, selection: SelectiveAccessDescriptor | None = None) -> None:
        super().__init__()
        self.descriptor = descriptor
        self.selection = selection
        self.what = f"GET {descriptor.class_id}/{descriptor.instance_id.hex()}/{descriptor.attribute_id}"
        self._blocks: list[bytes] = []
        self._size = 0

    def first(self) -> bytes:
        return get.GetRequestNormal(INVOKE_ID_AND_PRIORITY, self.descriptor, self.selection).to_bytes()

    def _on(self, apdu: Any) -> bytes | None:
        if isinstance(apdu, get.GetResponseNormal):
            if isinstance(apdu.result, DataAccessResult):
                raise AccessDenied(apdu.result, self.what)
            self.result, self.done = apdu.result, True
            return None
        if isinstance(apdu, get.GetResponseWithDataBlock):
            if apdu.error is not None:
                raise AccessDenied(apdu.error, self.what)
            if apdu.block_number != len(self._blocks) + 1:
                raise ClientError(f"{self.what}: block {apdu.block_number} out of order")
            self._blocks.append(apdu.raw_data or b"")
            self._size += len(apdu.raw_data or b"")
            if self._size > MAX_RESPONSE or len(self._blocks) > MAX_BLOCKS:
                raise ClientError(f"{self.what}: response too long")
            if not apdu.last_block:
                return get.GetRequestNext(INVOKE_ID_AND_PRIORITY, apdu.block_number).to_bytes()
            self.result, self.done = axdr.decode_all(b"".join(self._blocks)), True
            return None
        raise _unexpected(apdu, self.what)


class SetExchange(Exchange):
    def __init__(self, descriptor: CosemAttributeDescriptor, value: Data, max_pdu: int,
                 selection: SelectiveAccessDescriptor | None = None) -> None:
        super().__init__()
        self.descriptor, self.value, self.selection = descriptor, value, selection
        self.what = f"SET {descriptor.class_id}/{descriptor.instance_id.hex()}/{descriptor.attribute_id}"
        self._encoded = axdr.encode(value)
        self._block_size = max(16, max_pdu - 32)
        self._sent = 0
        self._block = 0

    def first(self) -> bytes:
        normal = set_.SetRequestNormal(INVOKE_ID_AND_PRIORITY, self.descriptor, self.selection, self.value).to_bytes()
        if len(normal) <= self._block_size + 16:
            self._sent = len(self._encoded)
            return normal
        return self._next_block(first=True)

    def _next_block(self, first: bool = False) -> bytes:
        chunk = self._encoded[self._sent:self._sent + self._block_size]
        self._sent += len(chunk)
        self._block += 1
        last = self._sent >= len(self._encoded)
        if first:
            return set_.SetRequestWithFirstDatablock(
                INVOKE_ID_AND_PRIORITY, self.descriptor, self.selection, last, self._block, chunk).to_bytes()
        return set_.SetRequestWithDatablock(INVOKE_ID_AND_PRIORITY, last, self._block, chunk).to_bytes()

    def _on(self, apdu: Any) -> bytes | None:
        if isinstance(apdu, set_.SetResponseDatablock) and self._sent < len(self._encoded):
            return self._next_block()
        if isinstance(apdu, (set_.SetResponseNormal, set_.SetResponseLastDatablock)):
            if apdu.result != DataAccessResult.SUCCESS:
                raise AccessDenied(apdu.result, self.what)
            self.done = True
            return None
        raise _unexpected(apdu, self.what)


class ActionExchange(Exchange):
    def __init__(self, descriptor: CosemMethodDescriptor, parameters: Data | None = None) -> None:
        super().__init__()
        self.descriptor, self.parameters = descriptor, parameters
        self.what = f"ACTION {descriptor.class_id}/{descriptor.instance_id.hex()}/{descriptor.method_id}"
        self._blocks: list[bytes] = []

    def first(self) -> bytes:
        return action.ActionRequestNormal(INVOKE_ID_AND_PRIORITY, self.descriptor, self.parameters).to_bytes()

    def _on(self, apdu: Any) -> bytes | None:
        if isinstance(apdu, action.ActionResponseNormal):
            if apdu.result != ActionResult.SUCCESS:
                raise AccessDenied(apdu.result, self.what)
            if isinstance(apdu.return_data, DataAccessResult):
                raise AccessDenied(apdu.return_data, self.what)
            self.result, self.done = apdu.return_data, True
            return None
        if isinstance(apdu, action.ActionResponseWithPblock):
            self._blocks.append(apdu.raw_data)
            if not apdu.last_block:
                return action.ActionRequestNextPblock(INVOKE_ID_AND_PRIORITY, apdu.block_number).to_bytes()
            # the blocks carry the response's action-result and optional data, re-framed here
            return self._on(action.ActionResponseNormal.from_bytes(b"\xc7\x01" + bytes([INVOKE_ID_AND_PRIORITY]) + b"".join(self._blocks)))
        raise _unexpected(apdu, self.what)


@dataclass
class Negotiated:
    conformance: Conformance
    server_max_receive_pdu_size: int
    dlms_version: int


class ClientAssociation:
    """ACSE for a client: the AARQ to send and what the AARE tells."""

    def __init__(self, *, mechanism: int = 0, conformance: Conformance = CLIENT_CONFORMANCE,
                 max_receive_pdu_size: int = 1224, calling_ap_title: bytes | None = None,
                 authentication_value: bytes | None = None) -> None:
        self.mechanism = mechanism
        self.conformance = conformance
        self.max_receive_pdu_size = max_receive_pdu_size
        self.calling_ap_title = calling_ap_title
        self.authentication_value = authentication_value
        self.negotiated: Negotiated | None = None

    def aarq(self) -> bytes:
        initiate = InitiateRequest(
            dedicated_key=None, response_allowed=True, proposed_quality_of_service=None,
            proposed_dlms_version_number=6, proposed_conformance=self.conformance,
            client_max_receive_pdu_size=self.max_receive_pdu_size,
        )
        return acse.AARQ(
            application_context_name=1, calling_ap_title=self.calling_ap_title, calling_ae_qualifier=None,
            called_ap_title=None, called_ae_qualifier=None, sender_acse_requirements=self.mechanism != 0,
            mechanism_name=self.mechanism or None, calling_authentication_value=self.authentication_value,
            user_information=initiate.to_bytes(),
        ).to_bytes()

    def on_aare(self, apdu: bytes) -> Negotiated:
        try:
            aare = acse.decode_acse(apdu)
        except DecodeError:
            if apdu[:1] in (b"\xd8", b"\x0e"):
                raise _unexpected(decode_xdlms(apdu), "association") from None
            raise
        if not isinstance(aare, acse.AARE):
            raise ClientError(f"association: expected an AARE, got {type(aare).__name__}")
        if aare.result != 0:
            detail = ""
            if aare.user_information:
                try:
                    err = decode_xdlms(aare.user_information)
                    detail = f" (initiate error {err.error_value})" if isinstance(err, ConfirmedServiceError) else ""
                except DecodeError:
                    pass
            raise AssociationRefused(
                f"the meter refused the association: result {aare.result}, diagnostic {aare.diagnostic}{detail}"
            )
        if not aare.user_information:
            raise ClientError("association: the AARE carries no InitiateResponse")
        response = InitiateResponse.from_bytes(aare.user_information)
        self.negotiated = Negotiated(
            response.negotiated_conformance, response.server_max_receive_pdu_size,
            response.negotiated_dlms_version_number,
        )
        return self.negotiated

    @staticmethod
    def rlrq() -> bytes:
        return acse.RLRQ(reason=0, user_information=None).to_bytes()
