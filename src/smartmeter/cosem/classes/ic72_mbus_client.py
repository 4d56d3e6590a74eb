"""IC 72 M-Bus client, version 1 (Blue Book 4.8.3), and the M-Bus values it fills (IC 4).

One object per submeter channel x = 1..4 (0-x:24.1.0.255, companion §4.3 / catalog §1.3). The
object holds nothing itself: the channel lives in the M2 engine (smartmeter.meter.mbus_m2, the
binding "mbus"), which persists it and drives the bus. Model entry:

    channel = 1

Attributes: 2 mbus_port_reference (octet-string: the logical name of an M-Bus master port setup,
wired 0-0:24.6.0.255 or wireless 0-1:24.6.0.255; anything else, the consumer port included, is
refused), 3 capture_definition (array of structure{DIB octet-string, VIB octet-string}: element
n fills M-Bus value n, at most 4 used, at most 8 held), 4 capture_period (double-long-unsigned s;
wireless 0), 5 primary_address (unsigned, 0 = assigned at installation, 251..255 refused), 6-9
identification_number, manufacturer_id, version, device_type (the device's address, written by
the HES before an installation, then read from the device), 10 access_number, 11 status, 13
configuration (from the device's header), 14 encryption_key_status (enum: 0 no key, 1 key set,
2 key transferred, 3 key set and transferred, 4 key in use). Attribute 12 alarm and method 4
reset_alarm are not supported (companion: "Not supported"): the model grants no access to them, so
a client gets read-write-denied; this class answers object-unavailable only where the access
rights are not checked (a local read).

Methods (data types as Gurux and the Blue Book send them): 1 slave_install (integer or unsigned:
the primary address, 0 = attribute 5 or a free one), 2 slave_deinstall, 3 capture, 5
synchronize_clock (integer), 6 data_send (array of structure{DIB, VIB, value}), 7
set_encryption_key (octet-string of 16, or empty: no key), 8 transfer_key (octet-string: the key
wrapped for the device). On a wireless channel install and capture answer other-reason
(companion §4.3); clock sync and data send have no effect there. A refused operation changes
nothing (other-reason; a value of the wrong type type-unmatched). Each other-reason refusal is
counted per condition and logged once per condition and interval (MbusM2.refused).

The M-Bus values (0-x:24.2.n.255, IC 4) are `MBusValue`: a class 4 object with `mbus_value = n`
in the model. The class registry holds one class per class id, so MBusValue takes class 4; an
extended register without `mbus_value` is served by ExtendedRegister's code unchanged.
"""
from __future__ import annotations

from smartmeter.cosem.classes.base import (
    REGISTRY, CosemAccessError, DataAccessResult, InterfaceClass, RequestContext, expect, other_reason,
    type_unmatched,
)
from smartmeter.cosem.classes.ic4_extended_register import ExtendedRegister
from smartmeter.cosem.data import Data, DataType
from smartmeter.meter.mbus_m2 import ChannelRefused, MbusM2, encode_record_value

MAX_CAPTURE_ELEMENTS = 8  # held; the first 4 fill the M-Bus values
NOT_SPECIFIED_DATE_TIME = bytes.fromhex("FFFFFFFFFFFFFFFFFF8000FF")
INT64 = (-(1 << 63), (1 << 63) - 1)
# attribute -> (channel field, type, bounds) of the device address the HES presets
IDENTITY_FIELDS = {
    6: ("identification_number", DataType.DOUBLE_LONG_UNSIGNED),
    7: ("manufacturer_id", DataType.LONG_UNSIGNED),
    8: ("version", DataType.UNSIGNED),
    9: ("device_type", DataType.UNSIGNED),
}


def _not_supported(what: str) -> CosemAccessError:
    return CosemAccessError(DataAccessResult.OBJECT_UNAVAILABLE, f"{what} is not supported (companion §4.3)")


def _zero(parameters: Data | None) -> None:
    """The data of methods 2, 3, 5 ::= integer (0) (Gurux sends integer 0)."""
    if parameters is None or parameters.type not in (DataType.INTEGER, DataType.UNSIGNED):
        raise type_unmatched("the parameter is integer (0)")


@REGISTRY.register
class MBusClient(InterfaceClass):
    class_id = 72
    version = 1
    attributes = {
        1: "logical_name", 2: "mbus_port_reference", 3: "capture_definition", 4: "capture_period",
        5: "primary_address", 6: "identification_number", 7: "manufacturer_id", 8: "version",
        9: "device_type", 10: "access_number", 11: "status", 12: "alarm", 13: "configuration",
        14: "encryption_key_status",
    }
    methods = {1: "slave_install", 2: "slave_deinstall", 3: "capture", 4: "reset_alarm", 5: "synchronize_clock",
               6: "data_send", 7: "set_encryption_key", 8: "transfer_key"}

    @property
    def engine(self) -> MbusM2:
        engine = self.bindings.get("mbus")
        if engine is None:
            raise CosemAccessError(DataAccessResult.OBJECT_UNAVAILABLE, f"{self.name}: no M2 interface")
        return engine

    @property
    def number(self) -> int:
        return int(self.config["channel"])

    @property
    def channel(self):
        return self.engine.channel(self.number)

    def _do(self, operation, *args) -> None:
        try:
            operation(self.number, *args)
        except ChannelRefused as exc:
            raise self._refused(exc.condition, str(exc)) from None

    def _refused(self, condition: str, detail: str) -> CosemAccessError:
        """other-reason for a refused operation, counted and logged by the engine (`condition`
        is a fixed text of this code, never the peer's data)."""
        engine = self.bindings.get("mbus")
        if engine is not None:
            engine.refused(self.number, condition, detail)
        return other_reason(f"{self.name}: {detail}")

    # -- attributes ---------------------------------------------------------------------------
    def get_mbus_port_reference(self, ctx: RequestContext) -> Data:
        return Data.octet_string(self.channel.port)

    def set_mbus_port_reference(self, value: Data, ctx: RequestContext) -> None:
        ln = bytes(expect(value, DataType.OCTET_STRING))
        if len(ln) != 6:
            raise type_unmatched("a logical name is octet-string(6)")
        directory = self.bindings.get("directory")
        found = directory.find(74, ln) if directory is not None else None
        if found is None or getattr(found[1], "kind", None) not in ("wired", "wireless"):
            raise self._refused("not an M2 port", "mbus_port_reference names no M2 M-Bus master port setup "
                                "of this meter")
        self._do(self.engine.set_port, ln)

    def get_capture_definition(self, ctx: RequestContext) -> Data:
        return Data.array([Data.structure([Data.octet_string(d), Data.octet_string(v)])
                           for d, v in self.channel.capture_definition])

    def set_capture_definition(self, value: Data, ctx: RequestContext) -> None:
        items = expect(value, DataType.ARRAY)
        if len(items) > MAX_CAPTURE_ELEMENTS:
            raise self._refused("too many capture elements", f"at most {MAX_CAPTURE_ELEMENTS} capture elements")
        elements = []
        for item in items:
            fields = expect(item, DataType.STRUCTURE)
            if len(fields) != 2:
                raise type_unmatched("a capture element is structure{data (DIB), value (VIB)}")
            elements.append(tuple(bytes(expect(f, DataType.OCTET_STRING)) for f in fields))
        self._do(self.engine.set_capture_definition, elements)

    def get_capture_period(self, ctx: RequestContext) -> Data:
        return Data.double_long_unsigned(self.channel.capture_period)

    def set_capture_period(self, value: Data, ctx: RequestContext) -> None:
        self._do(self.engine.set_capture_period, expect(value, DataType.DOUBLE_LONG_UNSIGNED))

    def get_primary_address(self, ctx: RequestContext) -> Data:
        return Data.unsigned(self.channel.primary_address)

    def set_primary_address(self, value: Data, ctx: RequestContext) -> None:
        self._do(self.engine.set_primary_address, expect(value, DataType.UNSIGNED))

    def _get_identity(self, index: int) -> Data:
        name, data_type = IDENTITY_FIELDS[index]
        return Data(data_type, getattr(self.channel, name))

    def _set_identity(self, index: int, value: Data) -> None:
        name, data_type = IDENTITY_FIELDS[index]
        self._do(self.engine.set_identity_field, name, expect(value, data_type))

    def get_identification_number(self, ctx): return self._get_identity(6)  # noqa: E704
    def get_manufacturer_id(self, ctx): return self._get_identity(7)  # noqa: E704
    def get_version(self, ctx): return self._get_identity(8)  # noqa: E704
    def get_device_type(self, ctx): return self._get_identity(9)  # noqa: E704
    def set_identification_number(self, value, ctx): self._set_identity(6, value)  # noqa: E704
    def set_manufacturer_id(self, value, ctx): self._set_identity(7, value)  # noqa: E704
    def set_version(self, value, ctx): self._set_identity(8, value)  # noqa: E704
    def set_device_type(self, value, ctx): self._set_identity(9, value)  # noqa: E704

    def get_access_number(self, ctx: RequestContext) -> Data:
        return Data.unsigned(self.channel.access_number)

    def get_status(self, ctx: RequestContext) -> Data:
        return Data.unsigned(self.channel.status)

    def get_alarm(self, ctx: RequestContext) -> Data:
        raise _not_supported("alarm")

    def get_configuration(self, ctx: RequestContext) -> Data:
        return Data.long_unsigned(self.channel.configuration)

    def get_encryption_key_status(self, ctx: RequestContext) -> Data:
        return Data.enum(self.channel.key_status)

    # -- methods ------------------------------------------------------------------------------
    def do_slave_install(self, parameters: Data | None, ctx: RequestContext) -> None:
        if parameters is None or parameters.type not in (DataType.INTEGER, DataType.UNSIGNED):
            raise type_unmatched("slave_install takes the primary address (unsigned or integer)")
        address = parameters.value
        if not 0 <= address <= 255:
            raise self._refused("primary address out of range", "a primary address is 0..250")
        self._do(self.engine.install, address)

    def do_slave_deinstall(self, parameters: Data | None, ctx: RequestContext) -> None:
        _zero(parameters)
        self._do(self.engine.deinstall)

    def do_capture(self, parameters: Data | None, ctx: RequestContext) -> None:
        _zero(parameters)
        self._do(self.engine.capture)

    def do_reset_alarm(self, parameters: Data | None, ctx: RequestContext) -> None:
        raise _not_supported("reset_alarm")

    def do_synchronize_clock(self, parameters: Data | None, ctx: RequestContext) -> None:
        _zero(parameters)
        self._do(self.engine.synchronize_clock)

    def do_data_send(self, parameters: Data | None, ctx: RequestContext) -> None:
        items = expect(parameters or Data.null(), DataType.ARRAY)
        if not items:
            raise self._refused("data_send without records", "data_send sends at least one record")
        records = []
        for item in items:
            fields = expect(item, DataType.STRUCTURE)
            if len(fields) != 3:
                raise type_unmatched("a data_definition_element is structure{DIB, VIB, value}")
            dib = bytes(expect(fields[0], DataType.OCTET_STRING))
            vib = bytes(expect(fields[1], DataType.OCTET_STRING))
            if not 1 <= len(dib) <= 11 or not 1 <= len(vib) <= 11:
                raise self._refused("DIB or VIB length", "a DIB and a VIB are 1..11 octets")
            try:
                records.append((dib, vib, encode_record_value(dib, fields[2])))
            except ChannelRefused as exc:
                raise self._refused(exc.condition, str(exc)) from None
        self._do(self.engine.data_send, records)

    def do_set_encryption_key(self, parameters: Data | None, ctx: RequestContext) -> None:
        key = bytes(expect(parameters or Data.null(), DataType.OCTET_STRING))
        self._do(self.engine.set_encryption_key, key)

    def do_transfer_key(self, parameters: Data | None, ctx: RequestContext) -> None:
        wrapped = bytes(expect(parameters or Data.null(), DataType.OCTET_STRING))
        self._do(self.engine.transfer_key, wrapped)


@REGISTRY.register
class MBusValue(ExtendedRegister):
    """IC 4 with `mbus_value = n` and `channel = x`: M-Bus value n of channel x; otherwise the
    extended register of ExtendedRegister. The value is a long64 (every M-Bus integer: up to 12
    BCD digits, 8-octet binary), null-data before the first read; scaler_unit comes from the
    record's VIF; status 0 = read, 1 = the record was missing from the last telegram; capture_time
    is the submeter's own time of the telegram when it sent one, else when the meter received it."""

    def _mbus(self):
        engine = self.bindings.get("mbus")
        if engine is None:
            raise CosemAccessError(DataAccessResult.OBJECT_UNAVAILABLE, f"{self.name}: no M2 interface")
        return engine.channel(int(self.config["channel"])).values[int(self.config["mbus_value"]) - 1]

    def _clock(self):
        return self.bindings.get("clock")

    def get_value(self, ctx: RequestContext) -> Data:
        if "mbus_value" not in self.config:
            return super().get_value(ctx)
        value = self._mbus().value
        if value is None or not INT64[0] <= value <= INT64[1]:
            return Data.null()
        return Data.long64(value)

    def get_scaler_unit(self, ctx: RequestContext) -> Data:
        if "mbus_value" not in self.config:
            return super().get_scaler_unit(ctx)
        v = self._mbus()
        return Data.structure([Data.integer(max(-128, min(127, v.scaler))), Data.enum(v.unit)])

    def get_status(self, ctx: RequestContext) -> Data:
        if "mbus_value" not in self.config:
            return super().get_status(ctx)
        return Data.unsigned(self._mbus().status)

    def get_capture_time(self, ctx: RequestContext) -> Data:
        if "mbus_value" not in self.config:
            return super().get_capture_time(ctx)
        t = self._mbus().capture_time
        clock = self._clock()
        if t is None or clock is None:
            return Data.octet_string(NOT_SPECIFIED_DATE_TIME)
        return Data.octet_string(clock.cosem(t))

    def do_reset(self, parameters: Data | None, ctx: RequestContext) -> None:
        if "mbus_value" not in self.config:
            return super().do_reset(parameters, ctx)
        raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, "an M-Bus value is what the submeter says")
