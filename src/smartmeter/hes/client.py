"""The head-end's high-level client: associate, list objects, read values and profiles."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Awaitable, Callable

from smartmeter.cosem import axdr
from smartmeter.cosem.data import CosemDateTime, Data, DataType
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor, CosemMethodDescriptor, SelectiveAccessDescriptor
from smartmeter.dlms.client import (
    ActionExchange, ClientAssociation, ClientError, ClientSecurity, Exchange, GetExchange, SetExchange,
)
from smartmeter.errors import DecodeError

CLOCK = Obis.parse("0-0:1.0.0.255")
CURRENT_ASSOCIATION = Obis.parse("0-0:40.0.0.255")


# Where each interface class keeps its scaler_unit, and the attributes it scales (Blue Book:
# Register and Extended register: value 2, scaler_unit 3; Demand register: current and last
# average value 2 and 3, scaler_unit 4).
SCALER_UNIT_ATTRIBUTE = {3: 3, 4: 3, 5: 4}
SCALED_ATTRIBUTES = {3: (2,), 4: (2,), 5: (2, 3)}

# Unit enumeration of the Blue Book (physical units), the ones a meter of electricity and its
# gas, water and heat submeters show.
UNIT_NAMES = {5: "h", 6: "min", 7: "s", 9: "°C", 13: "m³", 14: "m³ (corrected)", 15: "m³/h",
              16: "m³/h (corrected)", 17: "m³/d", 19: "l", 20: "kg", 25: "J", 26: "J/h", 27: "W", 28: "VA",
              29: "var", 30: "Wh", 31: "VAh", 32: "varh", 33: "A", 34: "C", 35: "V", 44: "Hz", 56: "%",
              52: "K", 255: "count"}


def unit_name(code: int) -> str:
    return UNIT_NAMES.get(code, f"unit {code}")


def parse_scaler_unit(value: Data) -> tuple[int, int] | None:
    """(scaler, unit code) of a scaler_unit structure {integer, enum}, or None if it is not one."""
    if value.type != DataType.STRUCTURE or len(value.value) != 2:
        return None
    scaler, unit = value.value
    if scaler.type != DataType.INTEGER or unit.type != DataType.ENUM:
        return None
    return scaler.value, unit.value


@dataclass(frozen=True)
class ObjectInfo:
    class_id: int
    version: int
    obis: Obis
    readable: tuple[int, ...]
    writable: tuple[int, ...]
    executable: tuple[int, ...]


def parse_object_list(value: Data) -> list[ObjectInfo]:
    """Association LN attribute 2 into ObjectInfo (access_mode bit 0 read, bit 1 write)."""
    objects = []
    try:
        for entry in value.value:
            class_id, version, ln, rights = (f.value for f in entry.value)
            attrs, methods = rights
            readable = tuple(a.value[0].value for a in attrs.value if a.value[1].value & 1)
            writable = tuple(a.value[0].value for a in attrs.value if a.value[1].value & 2)
            executable = tuple(m.value[0].value for m in methods.value if m.value[1].value)
            objects.append(ObjectInfo(class_id, version, Obis.from_bytes(ln), readable, writable, executable))
    except (TypeError, ValueError, AttributeError, IndexError):
        raise ClientError("the object list has an unexpected shape") from None
    return objects


def range_selection(from_time: dt.datetime | None, to_time: dt.datetime | None) -> SelectiveAccessDescriptor:
    """Selector 1 on the clock column: from/to as COSEM date-times (open ends become wide).

    Aware datetimes carry their UTC deviation; naive ones are meter local time."""
    low = from_time or dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    high = to_time or dt.datetime(2099, 12, 31, tzinfo=dt.timezone.utc)

    def stamp(t: dt.datetime) -> Data:
        # a naive time leaves the deviation unspecified: the meter reads it as its local time
        return Data.octet_string(axdr.encode_date_time(CosemDateTime.from_datetime(t)))

    restricting = Data.structure([
        Data.long_unsigned(8), Data.octet_string(CLOCK.to_bytes()), Data.integer(2), Data.long_unsigned(0),
    ])
    return SelectiveAccessDescriptor(1, Data.structure([restricting, stamp(low), stamp(high), Data.array([])]))


def entry_selection(first: int, last: int) -> SelectiveAccessDescriptor:
    """Selector 2: entries first..last (1-based, last 0 = up to the newest), all columns."""
    return SelectiveAccessDescriptor(2, Data.structure([
        Data.double_long_unsigned(first), Data.double_long_unsigned(last),
        Data.long_unsigned(1), Data.long_unsigned(0),
    ]))


class MeterClient:
    """One association with one meter over a link (WrapperLink or HdlcLink).

    With `security` the association is secured (ciphering context, HLS 5/6/7 pass 3/4 at
    connect, every request protected and every response checked).
    """

    def __init__(self, link, *, mechanism: int = 0, security: ClientSecurity | None = None) -> None:
        self.link = link
        self.association = ClientAssociation(mechanism=mechanism, security=security)
        self._objects: list[ObjectInfo] | None = None
        # awaited before each request is built (each may take an invocation counter): a
        # head-end whose counters come from a store tops them up here
        self.before_request: Callable[[], Awaitable[None]] | None = None

    async def __aenter__(self) -> "MeterClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def connect(self) -> None:
        await self.link.open()
        try:
            if self.before_request is not None:
                await self.before_request()
            self.association.on_aare(await self.link.exchange(self.association.aarq()))
            if self.association.needs_hls:
                await self._drive(self.association.hls_exchange())
        except BaseException:
            await self.link.close()
            raise

    async def close(self) -> None:
        try:
            if self.association.negotiated is not None:
                await self.link.exchange(self.association.release_request())
        except (ClientError, OSError, DecodeError):
            pass  # the link is going away anyway
        finally:
            await self.link.close()

    async def _drive(self, exchange: Exchange):
        hook = self.before_request
        if hook is not None:
            await hook()
        request = exchange.first()
        while request is not None:
            response = await self.link.exchange(request)
            if hook is not None:
                await hook()
            request = exchange.feed(response)
        return exchange.result

    async def run(self, exchange: Exchange):
        return await self._drive(self.association.secure(exchange))

    # -- reads ----------------------------------------------------------------------------
    async def objects(self) -> list[ObjectInfo]:
        if self._objects is None:
            value = await self.run(GetExchange(CosemAttributeDescriptor(15, CURRENT_ASSOCIATION.to_bytes(), 2)))
            self._objects = parse_object_list(value)
        return self._objects

    async def class_of(self, obis: Obis) -> int:
        for o in await self.objects():
            if o.obis == obis:
                return o.class_id
        raise ClientError(f"{obis} is not in this client's object list")

    async def get(self, obis: Obis | str, attribute: int = 2, class_id: int | None = None,
                  selection: SelectiveAccessDescriptor | None = None) -> Data:
        obis = Obis.parse(obis) if isinstance(obis, str) else obis
        class_id = class_id if class_id is not None else await self.class_of(obis)
        return await self.run(GetExchange(CosemAttributeDescriptor(class_id, obis.to_bytes(), attribute), selection))

    async def scaler_unit(self, obis: Obis | str, class_id: int | None = None) -> tuple[int, int] | None:
        """(scaler, unit code) of an object whose class has a scaler_unit, else None.

        Raises ClientError (AccessDenied) like `get` when it cannot be read, and when the
        meter answers something that is not a scaler_unit."""
        obis = Obis.parse(obis) if isinstance(obis, str) else obis
        class_id = class_id if class_id is not None else await self.class_of(obis)
        attribute = SCALER_UNIT_ATTRIBUTE.get(class_id)
        if attribute is None:
            return None
        parsed = parse_scaler_unit(await self.get(obis, attribute, class_id))
        if parsed is None:
            raise ClientError(f"{obis}:{attribute} is not a scaler_unit structure")
        return parsed

    async def set(self, obis: Obis | str, attribute: int, value: Data, class_id: int | None = None) -> None:
        obis = Obis.parse(obis) if isinstance(obis, str) else obis
        class_id = class_id if class_id is not None else await self.class_of(obis)
        pdu = self.association.negotiated.server_max_receive_pdu_size - self.association.protection_overhead
        await self.run(SetExchange(CosemAttributeDescriptor(class_id, obis.to_bytes(), attribute), value, pdu))

    async def action(self, obis: Obis | str, method: int, parameters: Data | None = None,
                     class_id: int | None = None) -> Data | None:
        obis = Obis.parse(obis) if isinstance(obis, str) else obis
        class_id = class_id if class_id is not None else await self.class_of(obis)
        return await self.run(ActionExchange(CosemMethodDescriptor(class_id, obis.to_bytes(), method), parameters))

    async def profile(self, obis: Obis | str, *, from_time: dt.datetime | None = None,
                      to_time: dt.datetime | None = None, entries: tuple[int, int] | None = None,
                      rows: bool = False) -> tuple[Data, Data | list[tuple]]:
        """(capture_objects, buffer) of a profile, whole or selected by range or by entry.

        With `rows=True` the buffer comes back as a list of row tuples (bulk-decoded), which is
        what a head-end storing thousands of entries wants; otherwise as a Data array."""
        obis = Obis.parse(obis) if isinstance(obis, str) else obis
        selection = None
        if entries is not None:
            selection = entry_selection(*entries)
        elif from_time is not None or to_time is not None:
            selection = range_selection(from_time, to_time)
        columns = await self.get(obis, 3, class_id=7)
        buffer = GetExchange(CosemAttributeDescriptor(7, obis.to_bytes(), 2), selection, rows=rows)
        return columns, await self.run(buffer)
