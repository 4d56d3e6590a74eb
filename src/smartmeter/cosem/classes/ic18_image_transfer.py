"""IC 18 Image transfer, version 0 (Blue Book 4.4.6; IDIS package 2 §6.9; companion standard §7):
a firmware image sent in blocks, verified, then activated.

The transfer itself (state machine, holding file, durable bitmap) is the engine
smartmeter.meter.image_transfer.ImageTransfer, bound by the model entry

    image_transfer = "firmware.image_transfer"

This class only turns COSEM data into engine calls and the engine's refusals into results:

- data of the wrong type (or a structure of the wrong size): type-unmatched;
- image_transfer_enabled FALSE: every method read-write-denied (before its data is looked at);
- a value or request the transfer cannot take (block number or length, size 0 or too large,
  identifier empty or over 64 bytes, a second initiate of another image, verify with blocks
  missing, activate without a successful verification, a block size write after initiation or
  outside 64..1024, a failed verification): other-reason;
- activate while an activation is under way (status 5): temporary-failure.

Attribute 3 is a bit-string of one bit per block of the initiated image (empty before), 4 the
first block not received (the number of blocks once all are in), 7 the verified image
(identification, size, signature) in status 3, 5 and 6, an empty array otherwise. Verify and
activate take integer (0) (Blue Book); another integer is other-reason.
"""
from __future__ import annotations

from smartmeter.cosem.classes.base import (
    REGISTRY, CosemAccessError, DataAccessResult, InterfaceClass, RequestContext, expect, other_reason,
    structure_fields,
)
from smartmeter.cosem.data import Data, DataType
from smartmeter.meter import image_transfer
from smartmeter.meter.image_transfer import Refusal, TransferRefused

RESULTS = {
    Refusal.DISABLED: DataAccessResult.READ_WRITE_DENIED,
    Refusal.INVALID: DataAccessResult.OTHER_REASON,
    Refusal.BUSY: DataAccessResult.TEMPORARY_FAILURE,
}


def _refused(exc: TransferRefused) -> CosemAccessError:
    return CosemAccessError(RESULTS[exc.kind], exc.reason)


@REGISTRY.register
class ImageTransfer(InterfaceClass):
    class_id = 18
    version = 0
    attributes = {
        1: "logical_name", 2: "image_block_size", 3: "image_transferred_blocks_status",
        4: "image_first_not_transferred_block_number", 5: "image_transfer_enabled", 6: "image_transfer_status",
        7: "image_to_activate_info",
    }
    methods = {1: "image_transfer_initiate", 2: "image_block_transfer", 3: "image_verify", 4: "image_activate"}

    def engine(self) -> image_transfer.ImageTransfer:
        """The bound transfer engine (object-unavailable while the meter has none)."""
        key = self.config.get("image_transfer")
        engine = self.bindings.get(key) if key is not None else None
        if engine is None:
            raise CosemAccessError(DataAccessResult.OBJECT_UNAVAILABLE, f"{self.name}: {key} is not bound")
        return engine

    # -- attributes ----------------------------------------------------------------------------
    def get_image_block_size(self, ctx: RequestContext) -> Data:
        return Data.double_long_unsigned(self.engine().block_size)

    def set_image_block_size(self, value: Data, ctx: RequestContext) -> None:
        size = expect(value, DataType.DOUBLE_LONG_UNSIGNED)
        try:
            self.engine().set_block_size(size)
        except TransferRefused as exc:
            raise _refused(exc) from None

    def get_image_transferred_blocks_status(self, ctx: RequestContext) -> Data:
        return Data(DataType.BIT_STRING, self.engine().transferred_blocks())

    def get_image_first_not_transferred_block_number(self, ctx: RequestContext) -> Data:
        return Data.double_long_unsigned(self.engine().first_not_transferred())

    def get_image_transfer_enabled(self, ctx: RequestContext) -> Data:
        return Data.boolean(self.engine().enabled)

    def set_image_transfer_enabled(self, value: Data, ctx: RequestContext) -> None:
        enabled = expect(value, DataType.BOOLEAN)
        self.engine().set_enabled(enabled)

    def get_image_transfer_status(self, ctx: RequestContext) -> Data:
        return Data.enum(int(self.engine().status))

    def get_image_to_activate_info(self, ctx: RequestContext) -> Data:
        info = self.engine().image_to_activate
        if info is None:
            return Data.array([])
        return Data.array([Data.structure([
            Data.double_long_unsigned(info.size), Data.octet_string(info.identifier),
            Data.octet_string(info.signature)])])

    # -- methods -------------------------------------------------------------------------------
    def do_image_transfer_initiate(self, parameters: Data | None, ctx: RequestContext) -> None:
        engine = self._enabled_engine()
        identifier, size = structure_fields(parameters or Data.null(), 2, "image_transfer_initiate data")
        identifier = expect(identifier, DataType.OCTET_STRING)
        size = expect(size, DataType.DOUBLE_LONG_UNSIGNED)
        try:
            engine.initiate(identifier, size)
        except TransferRefused as exc:
            raise _refused(exc) from None

    def do_image_block_transfer(self, parameters: Data | None, ctx: RequestContext) -> None:
        engine = self._enabled_engine()
        number, value = structure_fields(parameters or Data.null(), 2, "image_block_transfer data")
        number = expect(number, DataType.DOUBLE_LONG_UNSIGNED)
        value = expect(value, DataType.OCTET_STRING)
        try:
            engine.transfer_block(number, value)
        except TransferRefused as exc:
            raise _refused(exc) from None

    def do_image_verify(self, parameters: Data | None, ctx: RequestContext) -> None:
        engine = self._enabled_engine()
        _integer_0(parameters, "image_verify")
        try:
            outcome = engine.verify(ctx)
        except TransferRefused as exc:
            raise _refused(exc) from None
        if not outcome.ok:
            raise other_reason(f"image verification failed: {outcome.reason}")

    def do_image_activate(self, parameters: Data | None, ctx: RequestContext) -> None:
        engine = self._enabled_engine()
        _integer_0(parameters, "image_activate")
        try:
            engine.activate(ctx)
        except TransferRefused as exc:
            raise _refused(exc) from None

    def _enabled_engine(self) -> image_transfer.ImageTransfer:
        """The engine, if it takes methods: disabled transfers refuse every method whatever its data."""
        engine = self.engine()
        if not engine.enabled:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED,
                                   f"{self.name}: image transfer is disabled (image_transfer_enabled is FALSE)")
        return engine


def _integer_0(parameters: Data | None, method: str) -> None:
    """image_verify and image_activate data ::= integer (0) (Blue Book 4.4.6)."""
    if expect(parameters or Data.null(), DataType.INTEGER) != 0:
        raise other_reason(f"{method} takes integer (0)")
