"""The meter's side of a firmware image transfer (Blue Book IC 18 Image transfer, IDIS package 2
§6.9, companion standard §7): the state machine, the holding file and the durable block bitmap.
The interface class (cosem/classes/ic18_image_transfer.py) turns COSEM data into these calls;
nothing here knows DLMS types.

    status                    initiate           block         verify            activate
    0 not initiated           afresh -> 1        refused       refused           refused
    1 initiated               same id+size:      written       all in: 2 -> 3/4  all in: verified
                              resume, else                                       first, then -> 5
                              refused
    2 verification initiated  (only while the verification callback runs, under the lock)
    3 verification successful afresh -> 1        refused       success, nothing  -> 5
    4 verification failed     afresh -> 1        refused       refused           refused
    5 activation initiated    refused            refused       refused           busy
    6 activation successful   afresh -> 1        refused       refused           success, nothing
    7 activation failed       afresh -> 1        refused       refused           refused

With transfers disabled every method is refused as `DISABLED`; disabling aborts whatever is
under way (status 0, blocks forgotten, holding file deleted). Every refusal changes nothing.

Durability. The image is assembled in `holding_dir/holding.img` (0600, the image's size, each
block at number * block size). The state (status, identifier, size, bitmap of blocks received,
the verification outcome) is one record in the meter's settings store. Two rules keep them
consistent after a kill -9 or a power failure at any instant:

- data before the claim: the holding file is fsync'ed before a record claiming its blocks is
  stored, so a block the bitmap shows is on the disk;
- retraction before removal: a record that claims less (a new transfer, an abort) is stored
  before the holding file is replaced or deleted.

During a transfer the record is stored at most once per `persist_interval` (a block arriving
when the last store is that old stores it; `tick()`, which the runtime calls every second,
stores blocks that arrived after the last one) and always before verification. A kill thus
loses at most the last interval's blocks; the bitmap shows them missing and the client resends.
"""
from __future__ import annotations

import base64
import binascii
import logging
import os
import threading
import time
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Callable

from smartmeter.errors import SmartmeterError

log = logging.getLogger(__name__)

HOLDING_FILE = "holding.img"
STORE_KEY = "image_transfer"
RECORD_VERSION = 1
DEFAULT_BLOCK_SIZE = 1024
MIN_BLOCK_SIZE, MAX_BLOCK_SIZE = 64, 1024  # companion §7 (its "64 to 41891024" read as 64..1024)
MAX_IDENTIFIER = 64  # bytes: the image format's identifier is 1..64 ASCII characters
SIZE_LIMIT = 0xFFFFFFFF  # image_size is double-long-unsigned
PERSIST_INTERVAL = 1.0  # s


class TransferStatus(IntEnum):
    """IC 18 attribute 6 image_transfer_status."""

    NOT_INITIATED = 0
    INITIATED = 1
    VERIFICATION_INITIATED = 2
    VERIFICATION_SUCCESSFUL = 3
    VERIFICATION_FAILED = 4
    ACTIVATION_INITIATED = 5
    ACTIVATION_SUCCESSFUL = 6
    ACTIVATION_FAILED = 7


class Refusal(IntEnum):
    """Why a request is refused; the interface class maps each to a Data-Access-/Action-Result."""

    DISABLED = 1  # image_transfer_enabled is FALSE (read-write-denied)
    INVALID = 2  # not possible with this value or in this status (other-reason)
    BUSY = 3  # an activation is under way; ask again later (temporary-failure)


class TransferRefused(SmartmeterError):
    """A request the transfer does not take; nothing changed."""

    def __init__(self, reason: str, kind: Refusal = Refusal.INVALID) -> None:
        self.reason = reason
        self.kind = kind
        super().__init__(reason)


class ActivationRefused(SmartmeterError):
    """Raised by the activate callback: the verified image cannot be activated (status stays 3)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Verification:
    """What the verify callback found. On success identifier, size and signature are what
    attribute 7 image_to_activate_info shows."""

    ok: bool
    reason: str
    identifier: bytes = b""
    size: int = 0
    signature: bytes = b""


VerifyCallback = Callable[[bytes, int, Any], Verification]
ActivateCallback = Callable[[Any], None]
EventCallback = Callable[[int, Any], None]

EVENT_READY_FOR_ACTIVATION = 17  # verification successful
EVENT_VERIFICATION_FAILED = 51  # verification (or activation) failed

_METHOD_STATUSES_AFRESH = frozenset({
    TransferStatus.NOT_INITIATED, TransferStatus.VERIFICATION_SUCCESSFUL, TransferStatus.VERIFICATION_FAILED,
    TransferStatus.ACTIVATION_SUCCESSFUL, TransferStatus.ACTIVATION_FAILED,
})
_BLOCK_SIZE_LOCKED = frozenset({
    TransferStatus.INITIATED, TransferStatus.VERIFICATION_INITIATED, TransferStatus.VERIFICATION_SUCCESSFUL,
    TransferStatus.VERIFICATION_FAILED, TransferStatus.ACTIVATION_INITIATED,
})
# statuses in which the holding file is kept: the blocks are written (1), verified and waiting
# for activation (3), or being installed by the activation (5)
_HOLDING_NEEDED = frozenset({
    TransferStatus.INITIATED, TransferStatus.VERIFICATION_SUCCESSFUL, TransferStatus.ACTIVATION_INITIATED,
})


def block_count(size: int, block_size: int) -> int:
    """Blocks of an image of `size` bytes: every one `block_size` long but the last."""
    return -(-size // block_size)


@dataclass
class _Transfer:
    """The image under way (status 1..7): what initiate named and which blocks are in."""

    identifier: bytes
    size: int
    block_size: int  # as it was at initiation (attribute 2 is locked while it matters)
    bitmap: bytearray  # bit n = block n, MSB of byte 0 first (the bit-string of attribute 3)

    @property
    def blocks(self) -> int:
        return block_count(self.size, self.block_size)

    def block_length(self, number: int) -> int:
        return self.block_size if number < self.blocks - 1 else self.size - (self.blocks - 1) * self.block_size

    def has(self, number: int) -> bool:
        return bool(self.bitmap[number >> 3] & (0x80 >> (number & 7)))

    def received(self) -> int:
        return int.from_bytes(self.bitmap, "big").bit_count()

    def first_missing(self) -> int:
        """The first block not received; the number of blocks when all are in."""
        index = len(self.bitmap) - len(self.bitmap.lstrip(b"\xff"))  # the first byte with a block missing
        if index == len(self.bitmap):
            return self.blocks
        missing = self.bitmap[index] ^ 0xFF  # its highest set bit is the first block missing in the byte
        return min(index * 8 + 8 - missing.bit_length(), self.blocks)  # padding bits are 0


class ImageTransfer:
    """The transfer engine. Thread-safe: every request runs under one lock (a verification is
    synchronous and short, an ECDSA check of a few MB)."""

    def __init__(self, store, holding_dir: Path, verify: VerifyCallback, activate: ActivateCallback,
                 on_event: EventCallback, max_image_size: int, *, clock: Callable[[], float] = time.monotonic,
                 persist_interval: float = PERSIST_INTERVAL, key: str = STORE_KEY) -> None:
        if not 0 < max_image_size <= SIZE_LIMIT:
            raise ValueError(f"max_image_size must be 1..{SIZE_LIMIT}")
        self._store = store
        self.holding_dir = Path(holding_dir)
        self.image_path = self.holding_dir / HOLDING_FILE
        self._verify_image = verify
        self._activate_image = activate
        self._on_event = on_event
        self.max_image_size = max_image_size
        self._clock = clock
        self._interval = persist_interval
        self._key = key
        self._lock = threading.RLock()
        self._fd: int | None = None
        self._dirty = False  # blocks written since the record was last stored
        self._last_persist = clock()
        self.block_size = DEFAULT_BLOCK_SIZE
        self.enabled = True
        self.status = TransferStatus.NOT_INITIATED
        self._transfer: _Transfer | None = None
        self.image_to_activate: Verification | None = None  # set in status 3, 5, 6
        self.last_reason = ""  # what the last verification or activation said
        self._load()

    # -- what the attributes show ---------------------------------------------------------------
    @property
    def image_identifier(self) -> bytes | None:
        return None if self._transfer is None else self._transfer.identifier

    @property
    def image_size(self) -> int | None:
        return None if self._transfer is None else self._transfer.size

    @property
    def blocks(self) -> int:
        """The number of blocks of the initiated image (0 when nothing is initiated)."""
        return 0 if self._transfer is None else self._transfer.blocks

    def transferred_blocks(self) -> str:
        """Attribute 3: one character '0'/'1' per block, block 0 first."""
        with self._lock:
            t = self._transfer
            if t is None or not t.blocks:
                return ""
            return format(int.from_bytes(t.bitmap, "big"), f"0{len(t.bitmap) * 8}b")[:t.blocks]

    def first_not_transferred(self) -> int:
        """Attribute 4: the first block not received (the number of blocks once all are in; 0
        when nothing is initiated)."""
        with self._lock:
            return 0 if self._transfer is None else self._transfer.first_missing()

    # -- attribute writes --------------------------------------------------------------------------
    def set_block_size(self, block_size: int) -> None:
        with self._lock:
            if self.status in _BLOCK_SIZE_LOCKED:
                raise TransferRefused(f"image_block_size cannot change while the status is {self.status.value} "
                                      f"({self.status.name.lower()}); only before initiation")
            if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
                raise TransferRefused(f"image_block_size must be {MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE}")
            if block_size != self.block_size:
                self.block_size = block_size
                self._persist()

    def set_enabled(self, enabled: bool) -> None:
        """FALSE aborts whatever is under way, in any status (companion §7)."""
        with self._lock:
            if enabled:
                if not self.enabled:
                    self.enabled = True
                    self._persist()
                return
            was = self.status
            self.enabled = False
            self._forget()
            if was != TransferStatus.NOT_INITIATED:
                log.info("image transfer aborted in status %d: transfers disabled", was)

    # -- methods -----------------------------------------------------------------------------------
    def initiate(self, identifier: bytes, size: int) -> bool:
        """Method 1. -> True when it resumes the transfer under way (same identifier and size,
        status 1: the blocks received are kept), False when it starts afresh."""
        with self._lock:
            self._require_enabled()
            identifier = bytes(identifier)
            if not 0 < len(identifier) <= MAX_IDENTIFIER:
                raise TransferRefused(f"the image identifier is 1..{MAX_IDENTIFIER} bytes, not {len(identifier)}")
            if not 0 < size <= self.max_image_size:
                raise TransferRefused(f"the image size is 1..{self.max_image_size} bytes, not {size}")
            t = self._transfer
            if self.status == TransferStatus.INITIATED and t is not None:
                if (t.identifier, t.size) == (identifier, size):
                    return True
                raise TransferRefused(
                    f"a transfer of {t.identifier!r} ({t.size} bytes) is under way; to start another, "
                    f"disable the image transfer first")
            if self.status not in _METHOD_STATUSES_AFRESH:
                raise TransferRefused(f"no new transfer while the status is {self.status.value} "
                                      f"({self.status.name.lower()})")
            self._close_holding()
            self.status = TransferStatus.INITIATED
            self._transfer = _Transfer(identifier, size, self.block_size,
                                       bytearray(-(-block_count(size, self.block_size) // 8)))
            self.image_to_activate = None
            self.last_reason = ""
            self._persist()  # the record claims no block before the old file goes
            self._create_holding(size)
            return False

    def transfer_block(self, number: int, value: bytes) -> None:
        """Method 2: block `number` of the initiated image; a block received twice is overwritten."""
        with self._lock:
            self._require_enabled()
            t = self._transfer
            if self.status != TransferStatus.INITIATED or t is None:
                raise TransferRefused(f"no block is taken while the status is {self.status.value} "
                                      f"({self.status.name.lower()})")
            if not 0 <= number < t.blocks:
                raise TransferRefused(f"block {number} is beyond the image's {t.blocks} blocks (0..{t.blocks - 1})")
            wanted = t.block_length(number)
            if len(value) != wanted:
                raise TransferRefused(f"block {number} is {len(value)} bytes; it must be {wanted}")
            fd = self._holding_fd()
            written = os.pwrite(fd, value, number * t.block_size)
            if written != wanted:
                raise OSError(f"short write of block {number} to {self.image_path}")
            t.bitmap[number >> 3] |= 0x80 >> (number & 7)
            self._dirty = True
            if self._clock() - self._last_persist >= self._interval:
                self._persist()

    def verify(self, ctx: Any = None) -> Verification:
        """Method 3. Runs the verify callback once every block is in; -> what it found (status 3
        and event 17, or status 4 and event 51). Already verified (3): the earlier outcome."""
        with self._lock:
            self._require_enabled()
            t = self._transfer
            if self.status == TransferStatus.VERIFICATION_SUCCESSFUL and self.image_to_activate is not None:
                return self.image_to_activate
            if self.status != TransferStatus.INITIATED or t is None:
                raise TransferRefused(f"nothing to verify while the status is {self.status.value} "
                                      f"({self.status.name.lower()})")
            missing = t.first_missing()
            if missing < t.blocks:
                absent = t.blocks - t.received()
                raise TransferRefused(f"{absent} of {t.blocks} blocks are missing, the first is block {missing}")
            self._persist()  # what is verified is on the disk, and a restart finds it complete
            self._close_holding()
            self.status = TransferStatus.VERIFICATION_INITIATED
            try:
                outcome = self._verify_image(t.identifier, t.size, ctx)
            except BaseException:
                self.status = TransferStatus.INITIATED  # the callback failed: verify may be asked again
                raise
            outcome = self._checked(outcome, t)
            self.last_reason = outcome.reason
            if outcome.ok:
                self.status = TransferStatus.VERIFICATION_SUCCESSFUL
                self.image_to_activate = outcome
                self._persist()
                self._tell(EVENT_READY_FOR_ACTIVATION, ctx)
            else:
                self.status = TransferStatus.VERIFICATION_FAILED
                self.image_to_activate = None
                self._persist()
                self._remove_holding()
                self._tell(EVENT_VERIFICATION_FAILED, ctx)
                log.warning("firmware image %r failed verification: %s", t.identifier, outcome.reason)
            return outcome

    def activate(self, ctx: Any = None) -> None:
        """Method 4, only after a successful verification: status 5, then the activate callback
        (it installs the image and arranges the restart). ActivationRefused from it leaves
        status 3. Status 6 (activated): nothing to do; status 5 (under way): BUSY."""
        with self._lock:
            self._require_enabled()
            if self.status == TransferStatus.ACTIVATION_SUCCESSFUL:
                return
            if self.status == TransferStatus.ACTIVATION_INITIATED:
                raise TransferRefused("the activation is under way; the meter restarts on the new software",
                                      Refusal.BUSY)
            if self.status == TransferStatus.INITIATED:
                # Blue Book: an image not verified before is verified as part of its activation
                outcome = self.verify(ctx)
                if not outcome.ok:
                    raise TransferRefused(f"the verification before the activation failed: {outcome.reason}")
            if self.status != TransferStatus.VERIFICATION_SUCCESSFUL:
                raise TransferRefused(f"only a verified image is activated; the status is {self.status.value} "
                                      f"({self.status.name.lower()})")
            self.status = TransferStatus.ACTIVATION_INITIATED
            self._persist()  # a kill during the installation leaves 5: the runtime decides at start
            try:
                self._activate_image(ctx)
            except ActivationRefused as exc:
                self._back_to_verified()
                self.last_reason = exc.reason
                raise TransferRefused(f"activation refused: {exc.reason}") from None
            except BaseException:
                self._back_to_verified()
                raise

    # -- what the runtime calls --------------------------------------------------------------------
    def activation_finished(self, ok: bool, reason: str = "") -> bool:
        """At start, after an activation (status 5): the new software runs (ok, status 6) or it did
        not come up (status 7, event 51). -> False, and nothing changes, in any other status."""
        with self._lock:
            if self.status != TransferStatus.ACTIVATION_INITIATED:
                return False
            self.status = TransferStatus.ACTIVATION_SUCCESSFUL if ok else TransferStatus.ACTIVATION_FAILED
            self.last_reason = reason
            if not ok:
                self.image_to_activate = None
            self._persist()
            self._remove_holding()
            if not ok:
                self._tell(EVENT_VERIFICATION_FAILED, None)
            return True

    def read_image(self) -> bytes:
        """The transferred image (status 3 or 5: verified, the holding file complete)."""
        with self._lock:
            t = self._transfer
            if t is None or self.status not in (TransferStatus.VERIFICATION_INITIATED,
                                                 TransferStatus.VERIFICATION_SUCCESSFUL,
                                                 TransferStatus.ACTIVATION_INITIATED):
                raise TransferRefused("no complete image is held")
            with open(self.image_path, "rb") as f:
                data = f.read(t.size + 1)
            if len(data) != t.size:
                raise TransferRefused(f"the holding file has {len(data)} bytes, the image {t.size}")
            return data

    def tick(self) -> None:
        """Store blocks received since the last store once that is `persist_interval` ago (the
        runtime calls this every second, so the last blocks of a stalled transfer are kept too)."""
        with self._lock:
            if self._dirty and self._clock() - self._last_persist >= self._interval:
                self._persist()

    def close(self) -> None:
        """Store what is pending and close the holding file (an orderly stop)."""
        with self._lock:
            if self._dirty:
                self._persist()
            self._close_holding()

    # -- internals ---------------------------------------------------------------------------------
    def _require_enabled(self) -> None:
        if not self.enabled:
            raise TransferRefused("image transfer is disabled (image_transfer_enabled is FALSE)", Refusal.DISABLED)

    def _checked(self, outcome: Any, t: _Transfer) -> Verification:
        """The callback's outcome, a success only for the image that was initiated."""
        if not isinstance(outcome, Verification):
            return Verification(False, "the verification gave no outcome")
        if outcome.ok and (bytes(outcome.identifier), outcome.size) != (t.identifier, t.size):
            return Verification(False, f"the image is {outcome.identifier!r} of {outcome.size} bytes, "
                                       f"initiated were {t.identifier!r} of {t.size} bytes")
        return outcome

    def _back_to_verified(self) -> None:
        self.status = TransferStatus.VERIFICATION_SUCCESSFUL
        self._persist()

    def _tell(self, code: int, ctx: Any) -> None:
        try:
            self._on_event(code, ctx)
        except Exception:  # the outcome is stored; a failing event log must not turn it into an error
            log.exception("image transfer event %d could not be recorded", code)

    def _forget(self) -> None:
        """Back to status 0: the record first, then the file (retraction before removal)."""
        self._close_holding()
        self.status = TransferStatus.NOT_INITIATED
        self._transfer = None
        self.image_to_activate = None
        self.last_reason = ""
        self._persist()
        self._remove_holding()

    # holding file
    def _create_holding(self, size: int) -> None:
        self.holding_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._remove_holding()
        fd = os.open(self.image_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # exact, whatever the umask
            os.ftruncate(fd, size)  # sparse: blocks land at their offsets in any order
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._sync_directory()
        self._fd = fd

    def _holding_fd(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.image_path, os.O_RDWR)
        return self._fd

    def _close_holding(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _remove_holding(self) -> None:
        self._close_holding()
        try:
            self.image_path.unlink()
        except FileNotFoundError:
            pass

    def _sync_directory(self) -> None:
        try:
            fd = os.open(self.holding_dir, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass  # not every file system syncs a directory; the file itself is synced
        finally:
            os.close(fd)

    # the record
    def _persist(self) -> None:
        """Data before the claim: the holding file is synced, then the record stored."""
        if self._fd is not None:
            os.fsync(self._fd)
        self._store.put(self._key, self._record())
        self._dirty = False
        self._last_persist = self._clock()

    def _record(self) -> dict[str, Any]:
        t, info = self._transfer, self.image_to_activate
        status = self.status
        if status == TransferStatus.VERIFICATION_INITIATED:
            status = TransferStatus.INITIATED  # never stored; a restart during it verifies again
        return {
            "version": RECORD_VERSION, "block_size": self.block_size, "enabled": self.enabled,
            "status": int(status), "reason": self.last_reason,
            "transfer": None if t is None else {
                "identifier": t.identifier.hex(), "size": t.size, "block_size": t.block_size,
                "bitmap": base64.b64encode(bytes(t.bitmap)).decode("ascii")},
            "info": None if info is None else {
                "identifier": bytes(info.identifier).hex(), "size": info.size,
                "signature": bytes(info.signature).hex(), "reason": info.reason},
        }

    def _load(self) -> None:
        raw = self._store.get(self._key)
        if raw is None:
            self._remove_holding()  # a file without a record claims nothing
            return
        try:
            self._take(raw)
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
            # a transfer can always be redone; a broken record must not keep the meter from starting
            log.warning("the stored image transfer is malformed (%s): forgotten", exc)
            self.status, self._transfer, self.image_to_activate, self.last_reason = \
                TransferStatus.NOT_INITIATED, None, None, ""
            self._persist()
            self._remove_holding()
            return
        self._reconcile_holding()

    def _take(self, raw: dict) -> None:
        """The stored record, every field checked (ValueError/TypeError/KeyError otherwise)."""
        if not isinstance(raw, dict) or raw.get("version") != RECORD_VERSION:
            raise ValueError(f"record version {raw.get('version') if isinstance(raw, dict) else raw!r}")
        block_size, enabled, status = raw["block_size"], raw["enabled"], raw["status"]
        if type(block_size) is not int or not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
            raise ValueError(f"block size {block_size!r}")
        if type(enabled) is not bool or type(status) is not int:
            raise TypeError("enabled or status")
        status = TransferStatus(status)
        if status == TransferStatus.VERIFICATION_INITIATED:
            status = TransferStatus.INITIATED
        reason = raw["reason"]
        if not isinstance(reason, str):
            raise TypeError("reason")
        transfer = None
        if raw["transfer"] is not None:
            spec = raw["transfer"]
            identifier, size, tbs = bytes.fromhex(spec["identifier"]), spec["size"], spec["block_size"]
            if not 0 < len(identifier) <= MAX_IDENTIFIER or type(size) is not int or type(tbs) is not int \
                    or not 0 < size <= min(self.max_image_size, SIZE_LIMIT) \
                    or not MIN_BLOCK_SIZE <= tbs <= MAX_BLOCK_SIZE:
                raise ValueError("identifier, size or block size of the transfer")
            bitmap = bytearray(base64.b64decode(spec["bitmap"], validate=True))
            blocks = block_count(size, tbs)
            if len(bitmap) != -(-blocks // 8) or (blocks % 8 and bitmap[-1] & (0xFF >> (blocks % 8))):
                raise ValueError("the bitmap does not fit the image")
            transfer = _Transfer(identifier, size, tbs, bitmap)
        if (transfer is None) != (status == TransferStatus.NOT_INITIATED):
            raise ValueError(f"status {status.value} with{'out' if transfer is None else ''} a transfer")
        info = None
        if raw["info"] is not None:
            spec = raw["info"]
            if type(spec["size"]) is not int or not isinstance(spec["reason"], str):
                raise TypeError("image_to_activate_info")
            info = Verification(True, spec["reason"], bytes.fromhex(spec["identifier"]), spec["size"],
                                bytes.fromhex(spec["signature"]))
        if (info is not None) != (status in (TransferStatus.VERIFICATION_SUCCESSFUL,
                                             TransferStatus.ACTIVATION_INITIATED,
                                             TransferStatus.ACTIVATION_SUCCESSFUL)):
            raise ValueError(f"status {status.value} with{'out' if info is None else ''} image_to_activate_info")
        if not enabled and status != TransferStatus.NOT_INITIATED:
            raise ValueError("a transfer while transfers are disabled")
        self.block_size, self.enabled, self.status = block_size, enabled, status
        self._transfer, self.image_to_activate, self.last_reason = transfer, info, reason

    def _reconcile_holding(self) -> None:
        """After a restart: the holding file as the status needs it. A file that is missing or
        not the image's size holds none of the blocks claimed: they are received again."""
        t = self._transfer
        if self.status not in _HOLDING_NEEDED or t is None:
            self._remove_holding()  # left by a kill between storing the record and deleting it
            return
        try:
            intact = self.image_path.stat().st_size == t.size
        except FileNotFoundError:
            intact = False
        if intact:
            return
        if self.status == TransferStatus.ACTIVATION_INITIATED:
            log.warning("the holding file of the activation under way is gone; the runtime decides")
            return
        log.warning("the holding file %s is missing or truncated: the %d blocks claimed are received again",
                    self.image_path, t.received())
        self.status = TransferStatus.INITIATED
        self.image_to_activate = None
        t.bitmap = bytearray(len(t.bitmap))
        self._persist()
        self._create_holding(t.size)

