"""Remote firmware upgrade as the head-end drives it: the image transfer object of a meter
(IC 18 version 0, 0-0:44.0.0.255; Blue Book 4.4.6, IDIS P2 §6.9, companion standard §7).

The flow (catalog §5): read image_block_size (write it first when the caller wants another),
image_transfer_initiate(identifier, size), send the blocks the meter does not hold yet, read
image_transferred_blocks_status (3) and image_first_not_transferred_block_number (4) and send
again only what is still missing, in a bounded number of rounds, image_verify, read
image_to_activate_info (7), then image_activate now or write the activation scheduler's
execution_time (0-0:15.0.2.255). After an activation "now" the meter restarts on the new
software; `wait_for_restart` associates again until it reports the outcome (status 6 or 7).

Every step works alone on a connected client (`MeterClient`, or anything with its async
get/set/action taking class_id), so a head-end can resume, verify or activate separately.
Every refusal stops with an `UpgradeError` naming the step, the block if any, the DLMS result
and what the meter's state says about it; nothing here retries a refused request.

A second initiate with the same identifier and size while the meter's status is 1 resumes
(IDIS): the meter keeps its blocks. `upgrade` therefore reads the block bitmap right after
initiating and sends only the missing blocks, so running it again after an interruption (a
lost link, a meter restart) continues where the meter's blocks end.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import AsyncContextManager, Callable, Iterable

from smartmeter.cosem import axdr
from smartmeter.cosem.data import CosemDate, CosemDateTime, CosemTime, Data, DataType
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu.action import ActionRequestNormal
from smartmeter.dlms.apdu.common import CosemMethodDescriptor
from smartmeter.dlms.client import INVOKE_ID_AND_PRIORITY, AccessDenied, ClientError
from smartmeter.errors import DecodeError, SmartmeterError
from smartmeter.hes.connection import LinkError

__all__ = [
    "IMAGE_TRANSFER", "ACTIVATION_SCHEDULER", "ACTIVE_FIRMWARE", "Status", "UpgradeError", "TransferState",
    "ImageToActivate", "ActiveFirmware", "UpgradeReport", "block_count", "block_of", "read_state",
    "set_block_size", "initiate", "transfer", "missing_blocks", "verify", "info", "activate", "schedule",
    "wait_for_restart", "read_active_firmware", "upgrade",
]

IMAGE_TRANSFER = "0-0:44.0.0.255"
IMAGE_TRANSFER_CLASS = 18
ACTIVATION_SCHEDULER = "0-0:15.0.2.255"
SCHEDULER_CLASS = 22
EXECUTION_TIME = 4
CLOCK = "0-0:1.0.0.255"
CLOCK_CLASS = 8
# The active firmware identifier and signature of each part (catalog §5, IC 1 data), in the
# order a user reads them: the legally relevant part first.
ACTIVE_FIRMWARE = (("legal", "1-0:0.2.0.255", "1-0:0.2.8.255"),
                   ("application", "1-1:0.2.0.255", "1-1:0.2.8.255"))

# IC 18 attributes and methods
BLOCK_SIZE, BLOCKS_STATUS, FIRST_NOT_TRANSFERRED, ENABLED, STATUS, TO_ACTIVATE_INFO = 2, 3, 4, 5, 6, 7
INITIATE, BLOCK_TRANSFER, VERIFY, ACTIVATE = 1, 2, 3, 4

DEFAULT_MAX_ROUNDS = 3  # resend rounds after the first pass; a meter still missing blocks then is not converging
DEFAULT_VERIFY_TIMEOUT = 60.0  # seconds a meter may stay in "verification initiated"
DEFAULT_RESTART_TIMEOUT = 120.0  # seconds for a meter to come back after an activation
POLL_INTERVAL = 1.0
TEMPORARY_FAILURE, READ_WRITE_DENIED = 2, 3  # action-results (Green Book)
OBJECT_UNDEFINED = 4  # data-access-result: the object is not in this client's view of the model
# What a request can end with besides the meter's answer: the link went away, the answer did
# not decode or failed its security checks.
_LINK_ERRORS = (ClientError, DecodeError, LinkError, OSError, asyncio.TimeoutError)
# Padding a meter may add to the bitmap up to a whole number of bytes; more than that means it
# tracks another image.
_BITMAP_SLACK = 7
# The clients a meter of the companion standard lets upgrade it (the model's access rights).
_CLIENT_HINT = ("give the credentials of a client that may upgrade the meter: Management over the LAN, "
                "Maintenance over the optical port (--hdlc)")
_ABORT_HINT = ("abort it first: smartmeter client --credentials FILE set 0-0:44.0.0.255:5 boolean:false, "
               "then boolean:true, and upgrade again")


class Status(IntEnum):
    """image_transfer_status (attribute 6)."""

    NOT_INITIATED = 0
    INITIATED = 1
    VERIFICATION_INITIATED = 2
    VERIFICATION_SUCCESSFUL = 3
    VERIFICATION_FAILED = 4
    ACTIVATION_INITIATED = 5
    ACTIVATION_SUCCESSFUL = 6
    ACTIVATION_FAILED = 7


def status_text(status: int) -> str:
    try:
        return f"status {status} {Status(status).name.lower().replace('_', ' ')}"
    except ValueError:
        return f"status {status} (not an IC 18 status)"


def result_name(result) -> str:
    return result.name.lower().replace("_", "-")


class UpgradeError(SmartmeterError):
    """A step of the upgrade failed: `step` (the IC 18 method or attribute, "execution_time" of
    the scheduler, or "restart"), `block` (the block number, for image_block_transfer), `result`
    (the DLMS data-access- or action-result the meter answered; None when no answer came, or when
    the meter answered success and its state says otherwise), `detail` (what happened, with what
    the meter's state says) and `hint` (what to do)."""

    def __init__(self, step: str, detail: str, *, block: int | None = None, result=None, hint: str = "") -> None:
        self.step, self.detail, self.block, self.result, self.hint = step, detail, block, result, hint
        where = step if block is None else f"{step} {block}"
        super().__init__(f"{where}: {result_name(result)} ({detail})" if result is not None else f"{where}: {detail}")


@dataclass(frozen=True)
class TransferState:
    """Attributes 2..6 of the image transfer object as read."""

    block_size: int
    transferred: str  # attribute 3, a string of '0'/'1', bit 0 = block 0
    first_not_transferred: int
    enabled: bool
    status: int


@dataclass(frozen=True)
class ImageToActivate:
    """One entry of image_to_activate_info (attribute 7)."""

    size: int
    identification: bytes
    signature: bytes

    def to_dict(self) -> dict:
        return {"size": self.size, "identification": _printable(self.identification),
                "signature": self.signature.hex()}


@dataclass(frozen=True)
class ActiveFirmware:
    """A part's active firmware identifier and signature, as the meter shows them."""

    part: str
    identifier: bytes | None
    signature: bytes | None

    def to_dict(self) -> dict:
        return {"part": self.part, "identifier": None if self.identifier is None else _printable(self.identifier),
                "signature": None if self.signature is None else self.signature.hex()}


@dataclass
class UpgradeReport:
    identifier: str
    size: int
    block_size: int
    blocks: int
    already_on_meter: int = 0  # blocks the meter held at initiation (a resumed transfer)
    already_verified: bool = False  # the meter held this image verified: nothing was transferred
    sent: int = 0  # image_block_transfer requests, resends included
    resent: int = 0  # of those, blocks sent again because the meter still missed them
    rounds: int = 0  # resend rounds needed
    seconds: float = 0.0  # initiation to the last block in
    to_activate: list[ImageToActivate] = field(default_factory=list)
    activation: str | None = None  # None, "now" or "scheduled"
    scheduled_at: dt.datetime | None = None  # meter local time written to the scheduler
    status: int | None = None  # the last image_transfer_status read
    firmware: list[ActiveFirmware] = field(default_factory=list)  # after the restart

    def to_dict(self) -> dict:
        return {"identifier": self.identifier, "size": self.size, "block_size": self.block_size,
                "blocks": self.blocks, "already_on_meter": self.already_on_meter,
                "already_verified": self.already_verified, "sent": self.sent,
                "resent": self.resent, "rounds": self.rounds, "seconds": round(self.seconds, 3),
                "image_to_activate_info": [i.to_dict() for i in self.to_activate],
                "activation": self.activation,
                "scheduled_at": None if self.scheduled_at is None else self.scheduled_at.isoformat(),
                "status": self.status, "status_text": None if self.status is None else status_text(self.status),
                "active_firmware": [f.to_dict() for f in self.firmware]}


def _printable(raw: bytes) -> str:
    """An identification as text when it is printable ASCII, else as hex."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return "hex:" + raw.hex()
    return text if text.isprintable() else "hex:" + raw.hex()


# ------------------------------------------------------------------------------- blocks


def block_count(size: int, block_size: int) -> int:
    """Number of blocks of an image: ceil(size / block_size)."""
    if block_size <= 0:
        raise ValueError(f"block size {block_size} is not positive")
    return math.ceil(size / block_size)


def block_of(image: bytes, number: int, block_size: int) -> bytes:
    """Block `number`: block_size bytes, the last one what remains."""
    return bytes(image[number * block_size:(number + 1) * block_size])


def _block_request_length(block_size: int) -> int:
    """Bytes of an image_block_transfer request carrying a full block (before ciphering)."""
    descriptor = CosemMethodDescriptor(IMAGE_TRANSFER_CLASS, Obis.parse(IMAGE_TRANSFER).to_bytes(), BLOCK_TRANSFER)
    parameters = Data.structure([Data.double_long_unsigned(0), Data.octet_string(bytes(block_size))])
    return len(ActionRequestNormal(INVOKE_ID_AND_PRIORITY, descriptor, parameters).to_bytes())


def _request_room(client) -> int | None:
    """How long a request the meter takes on this association (its max PDU size less the
    ciphering), or None when the client does not say (a stand-in)."""
    association = getattr(client, "association", None)
    negotiated = getattr(association, "negotiated", None)
    if negotiated is None:
        return None
    return negotiated.server_max_receive_pdu_size - association.protection_overhead


# ---------------------------------------------------------------------------- requests


async def _get(client, attribute: int, step: str) -> Data:
    try:
        return await client.get(IMAGE_TRANSFER, attribute, class_id=IMAGE_TRANSFER_CLASS)
    except AccessDenied as exc:
        if int(exc.result) == OBJECT_UNDEFINED:
            detail = f"this client does not see the image transfer object {IMAGE_TRANSFER}"
        else:
            detail = f"reading {IMAGE_TRANSFER}:{attribute} was refused"
        raise UpgradeError(step, detail, result=exc.result,
                           hint=_CLIENT_HINT) from None
    except _LINK_ERRORS as exc:
        raise _link_error(step, exc) from None


def _link_error(step: str, exc: Exception, block: int | None = None) -> UpgradeError:
    return UpgradeError(step, str(exc).rstrip("."), block=block,
                        hint="check the meter is reachable, then run the same upgrade again: the meter keeps "
                             "the blocks it has and the transfer resumes")


def _expect(value: Data, data_type: DataType, step: str, what: str):
    if value.type != data_type:
        raise UpgradeError(step, f"{what} is {value.type.name.lower().replace('_', '-')}, "
                                 f"not {data_type.name.lower().replace('_', '-')}",
                           hint="the meter's image transfer object is not IC 18 as the Blue Book defines it")
    return value.value


async def read_status(client) -> int:
    value = await _get(client, STATUS, "image_transfer_status")
    return _expect(value, DataType.ENUM, "image_transfer_status", "image_transfer_status")


async def read_block_size(client) -> int:
    value = await _get(client, BLOCK_SIZE, "image_block_size")
    size = _expect(value, DataType.DOUBLE_LONG_UNSIGNED, "image_block_size", "image_block_size")
    if size <= 0:
        raise UpgradeError("image_block_size", "the meter's block size is 0",
                           hint="write a block size first (--block-size)")
    return size


async def read_state(client) -> TransferState:
    """Attributes 2..6 (block size, bitmap, first missing block, enabled, status)."""
    block_size = await read_block_size(client)
    bits = _expect(await _get(client, BLOCKS_STATUS, "image_transferred_blocks_status"), DataType.BIT_STRING,
                   "image_transferred_blocks_status", "image_transferred_blocks_status")
    first = _expect(await _get(client, FIRST_NOT_TRANSFERRED, "image_first_not_transferred_block_number"),
                    DataType.DOUBLE_LONG_UNSIGNED, "image_first_not_transferred_block_number",
                    "image_first_not_transferred_block_number")
    enabled = _expect(await _get(client, ENABLED, "image_transfer_enabled"), DataType.BOOLEAN,
                      "image_transfer_enabled", "image_transfer_enabled")
    return TransferState(block_size, bits, first, enabled, await read_status(client))


async def _state_or_none(client) -> TransferState | None:
    """The state for explaining a refusal; None when it cannot be read either."""
    try:
        return await read_state(client)
    except UpgradeError:
        return None


async def set_block_size(client, block_size: int) -> None:
    """Write image_block_size (the meter takes it before initiation only)."""
    step = "image_block_size"
    try:
        await client.set(IMAGE_TRANSFER, BLOCK_SIZE, Data.double_long_unsigned(block_size),
                         class_id=IMAGE_TRANSFER_CLASS)
    except AccessDenied as exc:
        state = await _state_or_none(client)
        if state is not None and Status.INITIATED <= state.status <= Status.VERIFICATION_INITIATED:
            detail = (f"a transfer is under way with blocks of {state.block_size} bytes, "
                      f"{status_text(state.status)}")
            hint = f"upgrade without --block-size to go on with {state.block_size}, or {_ABORT_HINT}"
        elif state is not None and Status.VERIFICATION_SUCCESSFUL <= state.status <= Status.ACTIVATION_INITIATED:
            detail = (f"the last transfer keeps the block size {state.block_size} until it is activated or "
                      f"aborted, {status_text(state.status)}")
            hint = f"upgrade without --block-size to go on with {state.block_size}, or {_ABORT_HINT}"
        else:
            detail = f"the meter does not take a block size of {block_size}"
            hint = "the companion standard's block sizes are 64..1024, written by a client that may upgrade"
        raise UpgradeError(step, detail, result=exc.result, hint=hint) from None
    except _LINK_ERRORS as exc:
        raise _link_error(step, exc) from None


async def _action(client, method: int, parameters: Data):
    return await client.action(IMAGE_TRANSFER, method, parameters, class_id=IMAGE_TRANSFER_CLASS)


async def initiate(client, identifier: bytes, size: int) -> None:
    """image_transfer_initiate: starts a transfer, or resumes the one under way with the same
    identifier and size."""
    step = "image_transfer_initiate"
    try:
        await _action(client, INITIATE, Data.structure([Data.octet_string(identifier),
                                                        Data.double_long_unsigned(size)]))
    except AccessDenied as exc:
        state = await _state_or_none(client)
        if state is not None and not state.enabled:
            raise UpgradeError(step, "image transfers are disabled on the meter (image_transfer_enabled FALSE)",
                               result=exc.result, hint="enable them: smartmeter client --credentials FILE set "
                                                       "0-0:44.0.0.255:5 boolean:true") from None
        if state is not None and state.status == Status.ACTIVATION_INITIATED:
            raise UpgradeError(step, f"an activation is under way, {status_text(state.status)}", result=exc.result,
                               hint="wait for the meter to restart on the new software; read 0-0:44.0.0.255:6: "
                                    "6 activation successful, 7 failed") from None
        if state is not None and Status.INITIATED <= state.status <= Status.VERIFICATION_INITIATED:
            raise UpgradeError(step, f"another transfer is under way with another identifier or size, "
                                     f"{status_text(state.status)}", result=exc.result, hint=_ABORT_HINT) from None
        raise UpgradeError(step, f"the meter does not take identifier {_printable(identifier)!r} and size {size}",
                           result=exc.result, hint="is the image within the meter's size limit, and its identifier "
                                                   "1..64 bytes? may this client initiate (Management, Maintenance)?") from None
    except _LINK_ERRORS as exc:
        raise _link_error(step, exc) from None


async def _explain_block_refusal(client, number: int, length: int, block_size: int, blocks: int) -> str:
    state = await _state_or_none(client)
    if state is None:
        return f"the block is {length} bytes; the meter's state cannot be read"
    if not state.enabled:
        return "image transfers were disabled on the meter (image_transfer_enabled FALSE): the transfer is aborted"
    if state.status != Status.INITIATED:
        return f"the transfer is not initiated any more: {status_text(state.status)}"
    if state.block_size != block_size:
        return f"the block is {length} bytes; blocks are {state.block_size}"
    if len(state.transferred) != blocks:
        return f"the meter expects {len(state.transferred)} blocks, this image has {blocks}"
    return f"the block is {length} bytes of {blocks} blocks of {block_size}"


async def transfer(client, image: bytes, block_size: int, numbers: Iterable[int],
                   sent: Callable[[int], None] | None = None) -> int:
    """image_block_transfer of each block in `numbers`; returns how many were sent. `sent(number)`
    is called after each block the meter took."""
    step = "image_block_transfer"
    blocks = block_count(len(image), block_size)
    count = 0
    for number in numbers:
        value = block_of(image, number, block_size)
        try:
            await _action(client, BLOCK_TRANSFER, Data.structure([Data.double_long_unsigned(number),
                                                                  Data.octet_string(value)]))
        except AccessDenied as exc:
            detail = await _explain_block_refusal(client, number, len(value), block_size, blocks)
            raise UpgradeError(step, detail, block=number, result=exc.result,
                               hint="run the same upgrade again: it resumes; if the transfer was aborted it "
                                    "starts afresh") from None
        except _LINK_ERRORS as exc:
            raise _link_error(step, exc, number) from None
        count += 1
        if sent is not None:
            sent(number)
    return count


async def missing_blocks(client, blocks: int) -> list[int]:
    """The blocks the meter does not hold, from attribute 3 (bitmap) and attribute 4 (first
    block not transferred) together: a block either of them calls missing is missing.

    A meter that refuses reading the bitmap is asked attribute 4 only: every block from there
    on counts as missing."""
    first = _expect(await _get(client, FIRST_NOT_TRANSFERRED, "image_first_not_transferred_block_number"),
                    DataType.DOUBLE_LONG_UNSIGNED, "image_first_not_transferred_block_number",
                    "image_first_not_transferred_block_number")
    try:
        bits_value = await client.get(IMAGE_TRANSFER, BLOCKS_STATUS, class_id=IMAGE_TRANSFER_CLASS)
    except AccessDenied:
        return list(range(first, blocks))
    except _LINK_ERRORS as exc:
        raise _link_error("image_transferred_blocks_status", exc) from None
    bits = _expect(bits_value, DataType.BIT_STRING, "image_transferred_blocks_status",
                   "image_transferred_blocks_status")
    if not blocks <= len(bits) <= blocks + _BITMAP_SLACK:
        raise UpgradeError("image_transferred_blocks_status",
                           f"the meter tracks {len(bits)} blocks, this image has {blocks}",
                           hint="another image is being transferred: " + _ABORT_HINT)
    missing = {n for n in range(blocks) if bits[n] != "1"}
    if first < blocks:
        missing.add(first)
    return sorted(missing)


async def verify(client, *, timeout: float = DEFAULT_VERIFY_TIMEOUT, poll: float = POLL_INTERVAL) -> int:
    """image_verify, then the status polled while it says "verification initiated" (a meter
    may verify in the background and answer temporary-failure meanwhile, IDIS P2 §6.9).
    Returns the status (3); a failed or refused verification raises."""
    step = "image_verify"
    try:
        await _action(client, VERIFY, Data.integer(0))
    except AccessDenied as exc:
        if int(exc.result) != TEMPORARY_FAILURE:  # verification is running: the status tells
            state = await _state_or_none(client)
            if state is not None and state.status == Status.VERIFICATION_FAILED:
                raise UpgradeError(step, _VERIFICATION_FAILED + status_text(state.status), result=exc.result,
                                   hint=_VERIFICATION_FAILED_HINT) from None
            raise UpgradeError(step, _explain_verify_refusal(state), result=exc.result,
                               hint=_verify_refusal_hint(exc)) from None
    except _LINK_ERRORS as exc:
        raise _link_error(step, exc) from None
    deadline = time.monotonic() + timeout
    status = await read_status(client)
    while status == Status.VERIFICATION_INITIATED and time.monotonic() < deadline:
        await asyncio.sleep(poll)
        status = await read_status(client)
    if status == Status.VERIFICATION_SUCCESSFUL:
        return status
    if status == Status.VERIFICATION_FAILED:
        raise UpgradeError(step, _VERIFICATION_FAILED + status_text(status), hint=_VERIFICATION_FAILED_HINT)
    if status == Status.VERIFICATION_INITIATED:
        raise UpgradeError(step, f"still verifying after {timeout:g} s: {status_text(status)}",
                           hint="read 0-0:44.0.0.255:6 later: 3 verification successful, 4 failed")
    raise UpgradeError(step, f"the meter answered success but shows {status_text(status)}",
                       hint="run the upgrade again")


_VERIFICATION_FAILED = ("the meter does not accept the image (its log names the check: signature, identifier, "
                        "size, meter type, integrity, approval of a legal part, version; or downloads are sealed "
                        "off, or its certification log is full): ")
_VERIFICATION_FAILED_HINT = ("check the image with `smartmeter fw inspect --key KEY.pem`: it must be signed with the "
                             "firmware key the meter trusts, be for its meter type and not go back in version; event "
                             "51 is in the meter's standard log")


def _explain_verify_refusal(state: TransferState | None) -> str:
    if state is None:
        return "verification refused; the meter's state cannot be read"
    if not state.enabled:
        return "image transfers are disabled on the meter (image_transfer_enabled FALSE)"
    missing = [n for n, bit in enumerate(state.transferred) if bit != "1"]
    if state.status == Status.INITIATED and missing:
        return f"{len(missing)} block(s) missing, the first {missing[0]}"
    return f"verification refused in {status_text(state.status)}"


def _verify_refusal_hint(exc: AccessDenied) -> str:
    if int(exc.result) == READ_WRITE_DENIED:  # not this client's right, or transfers disabled
        return _CLIENT_HINT + "; image transfers must be enabled"
    return "run the same upgrade again: it sends the missing blocks and verifies"


async def info(client) -> list[ImageToActivate]:
    """image_to_activate_info: what the meter will activate (after a successful verification)."""
    step = "image_to_activate_info"
    entries = _expect(await _get(client, TO_ACTIVATE_INFO, step), DataType.ARRAY, step, step)
    out = []
    for entry in entries:
        fields = _expect(entry, DataType.STRUCTURE, step, "an image_to_activate_info entry")
        if len(fields) != 3 or [f.type for f in fields] != [DataType.DOUBLE_LONG_UNSIGNED, DataType.OCTET_STRING,
                                                             DataType.OCTET_STRING]:
            raise UpgradeError(step, "an entry is not {double-long-unsigned, octet-string, octet-string}",
                               hint="the meter's image transfer object is not IC 18 as the Blue Book defines it")
        out.append(ImageToActivate(fields[0].value, bytes(fields[1].value), bytes(fields[2].value)))
    return out


async def activate(client) -> None:
    """image_activate: the meter installs the verified image and restarts on it."""
    step = "image_activate"
    try:
        await _action(client, ACTIVATE, Data.integer(0))
    except AccessDenied as exc:
        state = await _state_or_none(client)
        if state is None:
            detail = "activation refused; the meter's state cannot be read"
        elif state.status == Status.VERIFICATION_SUCCESSFUL:
            detail = f"the meter refused to install the verified image, {status_text(state.status)}"
        else:
            detail = f"activation needs a successful verification; the meter shows {status_text(state.status)}"
        raise UpgradeError(step, detail, result=exc.result,
                           hint="the meter runs its previous software; the same command tries the activation again "
                                "(the meter's log says why it refused: e.g. no room for the slot, downloads sealed "
                                "off, the image failed to start 3 times)") from None
    except _LINK_ERRORS as exc:
        raise _link_error(step, exc) from None


activate_now = activate  # for `upgrade`, whose parameter `activate` hides this function


async def read_meter_time(client) -> dt.datetime:
    """The meter clock as an aware datetime of the meter's local time (its deviation)."""
    step = "execution_time"
    try:
        value = await client.get(CLOCK, 2, class_id=CLOCK_CLASS)
    except AccessDenied as exc:
        raise UpgradeError(step, f"the meter's clock {CLOCK} cannot be read", result=exc.result,
                           hint=_CLIENT_HINT) from None
    except _LINK_ERRORS as exc:
        raise _link_error(step, exc) from None
    try:
        stamp = value.value if isinstance(value.value, CosemDateTime) else axdr.decode_date_time(value.value)
        now = stamp.to_datetime()
    except (DecodeError, ValueError, TypeError) as exc:
        raise UpgradeError(step, f"the meter's clock reads {value!r}, not a date-time ({exc})",
                           hint="set the meter's clock first") from None
    if now.tzinfo is None:
        raise UpgradeError(step, "the meter's clock has no UTC deviation",
                           hint="give the activation time as the meter's local time (without an offset)")
    return now


def execution_time_value(local: dt.datetime) -> Data:
    """IC 22 execution_time with one entry: this local date and time (weekday unspecified)."""
    time_raw = axdr.encode_time(CosemTime(local.hour, local.minute, local.second, 0))
    date_raw = axdr.encode_date(CosemDate(local.year, local.month, local.day, None))
    return Data.array([Data.structure([Data.octet_string(time_raw), Data.octet_string(date_raw)])])


async def schedule(client, when: dt.datetime) -> dt.datetime:
    """Write the activation scheduler's execution_time (0-0:15.0.2.255 attribute 4) so the
    meter activates at `when`; returns the meter local time written.

    A naive `when` is meter local time and is written as it is. An aware one is converted with
    the UTC deviation the meter's clock shows now (so across a daylight saving change give
    local time). The time must lie after the meter's clock: a scheduler never runs an
    instant that was past when it was written."""
    step = "execution_time"
    now = await read_meter_time(client)
    if when.tzinfo is not None:
        local = when.astimezone(now.tzinfo).replace(tzinfo=None)
    else:
        local = when.replace(microsecond=0)
    local = local.replace(microsecond=0)
    if local <= now.replace(tzinfo=None):
        raise UpgradeError(step, f"{local.isoformat(sep=' ')} is not after the meter's time "
                                 f"{now.replace(tzinfo=None).isoformat(sep=' ', timespec='seconds')}",
                           hint="give a later --activate time (meter local time without an offset)")
    try:
        await client.set(ACTIVATION_SCHEDULER, EXECUTION_TIME, execution_time_value(local), class_id=SCHEDULER_CLASS)
    except AccessDenied as exc:
        raise UpgradeError(step, f"writing {ACTIVATION_SCHEDULER}:{EXECUTION_TIME} ({local.isoformat(sep=' ')}) "
                                 "was refused", result=exc.result,
                           hint=_CLIENT_HINT) from None
    except _LINK_ERRORS as exc:
        raise _link_error(step, exc) from None
    return local


async def read_active_firmware(client) -> list[ActiveFirmware]:
    """The active firmware identifier and signature of each part; a part the client may not read
    or the meter does not have shows None."""
    out = []
    for part, identifier_obis, signature_obis in ACTIVE_FIRMWARE:
        values = []
        for obis in (identifier_obis, signature_obis):
            try:
                value = await client.get(obis, 2, class_id=1)
                values.append(bytes(value.value) if value.type in (DataType.OCTET_STRING,
                                                                   DataType.VISIBLE_STRING) else None)
            except AccessDenied:
                values.append(None)
        out.append(ActiveFirmware(part, *values))
    return out


# A new client for each association: `async with connect() as client` associates (MeterClient).
Connect = Callable[[], AsyncContextManager]


async def wait_for_restart(connect: Connect, *, timeout: float = DEFAULT_RESTART_TIMEOUT,
                           poll: float = POLL_INTERVAL) -> tuple[int, list[ActiveFirmware]]:
    """After image_activate: associate again and again until the meter reports how the
    activation ended (status 6 successful, or 7 failed, the previous software restored), then
    read the active firmware. Status 5 means the meter has not restarted or not reported yet."""
    step = "restart"
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            async with connect() as client:
                status = await read_status(client)
                if status not in (Status.ACTIVATION_INITIATED, Status.VERIFICATION_SUCCESSFUL):
                    firmware = await read_active_firmware(client)
                    break
                last = f"the meter shows {status_text(status)}"
        except UpgradeError as exc:
            if exc.result is not None:
                raise
            last = exc.detail
        except _LINK_ERRORS as exc:
            last = str(exc)
        if time.monotonic() + poll > deadline:
            raise UpgradeError(step, f"the meter did not report the activation within {timeout:g} s; {last}",
                               hint="read 0-0:44.0.0.255:6 later: 6 activation successful, 7 failed")
        await asyncio.sleep(poll)
    if status == Status.ACTIVATION_FAILED:
        raise UpgradeError("image_activate", "the new software did not start and the meter went back to its "
                                             f"previous software: {status_text(status)}",
                           hint="read the meter's event log for the reason")
    if status != Status.ACTIVATION_SUCCESSFUL:
        raise UpgradeError("image_activate", f"after the restart the meter shows {status_text(status)}",
                           hint="read the meter's event log; upgrade again")
    return status, firmware


# ------------------------------------------------------------------------------- whole


Progress = Callable[[int, int], None]  # (blocks the meter holds, blocks of the image)


async def upgrade(client, image: bytes, identifier: str | bytes, size: int | None = None, *,
                  signature: bytes | None = None, block_size: int | None = None,
                  activate: str | dt.datetime | None = None,
                  progress: Progress | None = None, reconnect: Connect | None = None,
                  max_rounds: int = DEFAULT_MAX_ROUNDS, verify_timeout: float = DEFAULT_VERIFY_TIMEOUT,
                  restart_timeout: float = DEFAULT_RESTART_TIMEOUT) -> UpgradeReport:
    """Transfer, verify and (optionally) activate `image` on the meter behind `client`.

    `signature`: the image's signature as image_to_activate_info shows it once verified. With it, an
    image the meter already holds verified (same identifier, size and signature) is not sent
    again; without it every upgrade transfers the image.

    `activate`: None leaves the verified image waiting (activate later, or by the scheduler);
    "now" activates at once, then, with `reconnect` (see `Connect`), waits
    for the meter to come back and reads the outcome and the active firmware; a datetime
    writes the activation scheduler (see `schedule`).
    """
    size = len(image) if size is None else size
    if size == 0:
        raise ValueError("the image is empty")
    if size != len(image):
        raise ValueError(f"size {size} is not the image's length {len(image)}")
    if isinstance(activate, str) and activate != "now":
        raise ValueError(f"activate {activate!r} is not None, 'now' or a datetime")
    identifier_bytes = identifier.encode("ascii") if isinstance(identifier, str) else bytes(identifier)
    identifier_text = identifier if isinstance(identifier, str) else _printable(identifier_bytes)

    # The same image verified and waiting (an earlier run without --activate): go straight to
    # its activation; initiating again would start afresh and send every block once more. The
    # signature tells it from another image of the same identifier and size.
    if signature is not None and await read_status(client) == Status.VERIFICATION_SUCCESSFUL:
        waiting = await info(client)
        if any((i.identification, i.size, i.signature) == (identifier_bytes, size, signature) for i in waiting):
            current = await read_block_size(client)
            report = UpgradeReport(identifier_text, size, current, block_count(size, current),
                                   already_on_meter=block_count(size, current), already_verified=True,
                                   status=Status.VERIFICATION_SUCCESSFUL, to_activate=waiting)
            if progress is not None:
                progress(report.blocks, report.blocks)
            return await _activation(client, report, activate, reconnect, restart_timeout)

    if block_size is not None:
        current = await read_block_size(client)
        if current != block_size:
            await set_block_size(client, block_size)
    block_size = await read_block_size(client)
    room = _request_room(client)
    if room is not None and _block_request_length(block_size) > room:
        raise UpgradeError("image_block_size", f"blocks of {block_size} bytes do not fit in a request of the "
                                               f"meter's {room} bytes",
                           hint=f"give a smaller --block-size (at most "
                                f"{block_size - (_block_request_length(block_size) - room)})")
    blocks = block_count(size, block_size)
    report = UpgradeReport(identifier_text, size, block_size, blocks)

    started = time.monotonic()
    await initiate(client, identifier_bytes, size)
    missing = await missing_blocks(client, blocks)
    report.already_on_meter = blocks - len(missing)
    held = report.already_on_meter
    if progress is not None:
        progress(held, blocks)

    def sent(_number: int) -> None:
        nonlocal held
        held += 1
        if progress is not None:
            progress(held, blocks)

    for round_number in range(max_rounds + 1):
        if not missing:
            break
        if round_number:
            report.rounds = round_number
            report.resent += len(missing)
        report.sent += await transfer(client, image, block_size, missing, sent)
        missing = await missing_blocks(client, blocks)
        held = blocks - len(missing)
        if progress is not None:
            progress(held, blocks)
    if missing:
        raise UpgradeError("image_block_transfer", f"{len(missing)} block(s) still missing after {max_rounds} "
                                                   f"resend round(s)",
                           block=missing[0],
                           hint="the meter does not keep the blocks it takes: check its storage and log; "
                                "run the same upgrade again to resume")
    report.seconds = time.monotonic() - started

    report.status = await verify(client, timeout=verify_timeout)
    report.to_activate = await info(client)
    return await _activation(client, report, activate, reconnect, restart_timeout)


async def _activation(client, report: UpgradeReport, activate: str | dt.datetime | None, reconnect: Connect | None,
                      restart_timeout: float) -> UpgradeReport:
    if activate is None:
        return report
    if isinstance(activate, dt.datetime):
        report.scheduled_at = await schedule(client, activate)
        report.activation = "scheduled"
        return report
    report.activation = "now"
    try:
        await activate_now(client)
    except UpgradeError as exc:
        # The meter may restart before its answer leaves it: a lost link after the request is
        # no refusal; the status after the restart tells.
        if exc.result is not None or reconnect is None:
            raise
    report.status = Status.ACTIVATION_INITIATED
    if reconnect is not None:
        report.status, report.firmware = await wait_for_restart(reconnect, timeout=restart_timeout)
    return report

