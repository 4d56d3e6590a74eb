"""IC 40 Push setup, version 0 (Blue Book 4.4.8; companion standard §10, catalog §7): what a push
carries, where it goes and how it is sent; method 1 `push` sends it now.

The attributes are configuration; the push itself (reading the objects, protecting the
notification, handing it to the sender) is the bound push service's (`bindings[config["push"]]`,
smartmeter.meter.push), called as `service(setup, ctx)`. Model entry (the defaults; a write
persists in the meter's settings store, `bindings["settings"]`, and survives a restart):

    push_object_list = [[8, "0-0:1.0.0.255", 2, 0], ...]   # class_id, logical name, attribute, data_index
    send_destination_and_method = { transport = 1, destination = "", message = 0 }
    communication_window = []                              # [{ start = "hex(12)", end = "hex(12)" }]
    randomisation_start_interval = 0                       # s
    number_of_retries = 3
    repetition_delay = 30                                  # s
    push = "push.run"

What a write may hold (anything else is refused and changes nothing):

- push_object_list: at most `max_objects` (20, companion §10) object definitions, each
  structure{long-unsigned, octet-string(6), integer, long-unsigned}; each names an attribute
  (0: every attribute, Blue Book) of an object of that class in this meter. Too many, or an
  object or attribute the meter does not have: other-reason; a wrong type: type-unmatched.
- send_destination_and_method: structure{enum, octet-string, enum}. transport_service 0 (TCP)
  takes `x.x.x.x:port`, 1 (UDP) `[ipv6]:port` (companion §10.6), 201 (wired M-Bus, the consumer
  push, §10.5) the consumer port only: `0-2:24.6.0.255:FF:00` (its logical name, the broadcast
  LLA, the first transport CI; '.' or ':' between the three, catalog §7); message 0 (A-XDR
  xDLMS APDU) only. An empty destination is
  kept: the push is then not sent (the push service says so once).
- communication_window: array of structure{octet-string(12), octet-string(12)}, at most
  MAX_WINDOWS; each end a date-time pattern (wildcards allowed) as the push sender reads it
  (`push_sender.window_pattern`: no DST or last-day values).
- randomisation_start_interval, repetition_delay: long-unsigned; number_of_retries: unsigned.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass

from smartmeter.cosem.classes.base import (
    REGISTRY, InterfaceClass, RequestContext, expect, other_reason,
    StoredSettings, object_definition, store_integer_setting, structure_fields, type_unmatched,
)
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.obis import Obis
from smartmeter.meter.consumer_port import consumer_destination
from smartmeter.meter.push_sender import window_pattern
from smartmeter.transport.wrapper_send import parse_destination

TCP, UDP, WIRED_MBUS = 0, 1, 201
TRANSPORTS = (TCP, UDP, WIRED_MBUS)
A_XDR_APDU = 0  # message_type: A-XDR encoded xDLMS APDU, the only one the meter sends
MAX_OBJECTS = 20  # companion §10: at least 20 entries; §10.5: the consumer push takes up to 20
MAX_WINDOWS = 8
# IC 40 v0 integer attributes: name -> (type, range, default)
INTEGER_ATTRIBUTES = {
    "randomisation_start_interval": (DataType.LONG_UNSIGNED, (0, 0xFFFF), 0),
    "number_of_retries": (DataType.UNSIGNED, (0, 0xFF), 3),
    "repetition_delay": (DataType.LONG_UNSIGNED, (0, 0xFFFF), 30),
}


@dataclass(frozen=True, slots=True)
class PushObject:
    """One object_definition of the push_object_list."""

    class_id: int
    logical_name: bytes
    attribute_index: int
    data_index: int

    def to_data(self) -> Data:
        return Data.structure([Data.long_unsigned(self.class_id), Data.octet_string(self.logical_name),
                               Data.integer(self.attribute_index), Data.long_unsigned(self.data_index)])

    def record(self) -> list:
        return [self.class_id, str(Obis.from_bytes(self.logical_name)), self.attribute_index, self.data_index]


@dataclass(frozen=True, slots=True)
class SendDestination:
    transport_service: int
    destination: str  # as written (ASCII); "" = not configured
    message: int = A_XDR_APDU


def check_destination(transport_service: int, destination: str) -> None:
    """other-reason unless `destination` is an address of the form `transport_service` takes."""
    if not destination:
        return
    if transport_service == WIRED_MBUS:
        # the meter sends the consumer push to this one destination only (§10.5): the same rule
        # refuses the write here and the push at push time
        if not destination.isprintable() or destination != destination.strip():
            raise other_reason(f"a wired M-Bus destination is 0-2:24.6.0.255:FF:00, not {destination!r}")
        try:
            consumer_destination(destination)
        except ValueError as exc:
            raise other_reason(f"wired M-Bus: {exc}") from None
        return
    try:
        parsed = parse_destination(destination)
    except ValueError as exc:
        raise other_reason(str(exc)) from None
    wanted = socket.AF_INET if transport_service == TCP else socket.AF_INET6
    if parsed.family != wanted:
        raise other_reason("TCP pushes go to x.x.x.x:port (IPv4, WAN), UDP pushes to [ipv6]:port (LAN)")


def _window_end(value: Data) -> bytes:
    raw = expect(value, DataType.OCTET_STRING)
    if len(raw) != 12:
        raise type_unmatched("a window's start and end are date-time, octet-string(12)")
    try:
        window_pattern(raw)  # what the sender will make of it
    except ValueError as exc:  # DecodeError is one
        raise other_reason(f"communication window: {exc}") from None
    return raw


@REGISTRY.register
class PushSetup(StoredSettings, InterfaceClass):
    settings_prefix = "push_setup"
    class_id = 40
    version = 0
    attributes = {
        1: "logical_name", 2: "push_object_list", 3: "send_destination_and_method", 4: "communication_window",
        5: "randomisation_start_interval", 6: "number_of_retries", 7: "repetition_delay",
    }
    methods = {1: "push"}


    @property
    def max_objects(self) -> int:
        return int(self.config.get("max_objects", MAX_OBJECTS))

    # -- what the setup is -----------------------------------------------------------------
    def push_objects(self) -> tuple[PushObject, ...]:
        stored = self._stored("push_object_list")
        entries = stored if stored is not None else self._present(self.config.get("push_object_list", []))
        return tuple(PushObject(int(c), Obis.parse(ln).to_bytes(), int(a), int(d)) for c, ln, a, d in entries)

    def _present(self, entries: list) -> list:
        """The model's default entries of objects this meter has (an L2/L3 value on a poly-phase meter only)."""
        model = self.bindings.get("model")
        if model is None:
            return entries
        have = {str(o.obis) for o in model.objects}
        return [e for e in entries if str(Obis.parse(e[1])) in have]

    def send_destination(self) -> SendDestination:
        stored = self._stored("send_destination_and_method")
        spec = stored if stored is not None else self.config.get("send_destination_and_method", {})
        return SendDestination(int(spec.get("transport", UDP)), str(spec.get("destination", "")),
                               int(spec.get("message", A_XDR_APDU)))

    def windows(self) -> tuple[tuple[bytes, bytes], ...]:
        stored = self._stored("communication_window")
        spec = stored if stored is not None else self.config.get("communication_window", [])
        return tuple((bytes.fromhex(w["start"]), bytes.fromhex(w["end"])) for w in spec)

    def integer(self, name: str) -> int:
        _, _, default = INTEGER_ATTRIBUTES[name]
        stored = self._stored(name)
        return int(stored if stored is not None else self.config.get(name, default))

    # -- attributes ------------------------------------------------------------------------
    def get_push_object_list(self, ctx: RequestContext) -> Data:
        return Data.array(o.to_data() for o in self.push_objects())

    def set_push_object_list(self, value: Data, ctx: RequestContext) -> None:
        items = expect(value, DataType.ARRAY)
        parsed = []
        for item in items:
            parsed.append(PushObject(*object_definition(item, "an object definition")))
        if len(parsed) > self.max_objects:
            raise other_reason(f"{self.name} holds at most {self.max_objects} objects")
        directory = self.bindings.get("directory")
        for o in parsed:
            found = directory.find(o.class_id, o.logical_name) if directory is not None else None
            if directory is not None and found is None:
                raise other_reason(f"no object of class {o.class_id} {Obis.from_bytes(o.logical_name)} in this meter")
            if o.attribute_index < 0 or (found is not None and o.attribute_index
                                         and o.attribute_index not in found[1].attributes):
                raise other_reason(f"class {o.class_id} has no attribute {o.attribute_index}")
        self._put("push_object_list", [o.record() for o in parsed])

    def get_send_destination_and_method(self, ctx: RequestContext) -> Data:
        d = self.send_destination()
        return Data.structure([Data.enum(d.transport_service), Data.octet_string(d.destination.encode("ascii")),
                               Data.enum(d.message)])

    def set_send_destination_and_method(self, value: Data, ctx: RequestContext) -> None:
        transport, destination, message = (
            expect(f, t) for f, t in zip(structure_fields(value, 3, "send_destination_and_method"),
                                         (DataType.ENUM, DataType.OCTET_STRING, DataType.ENUM)))
        if transport not in TRANSPORTS:
            raise other_reason(f"transport_service {transport} is not 0 (TCP), 1 (UDP) or 201 (wired M-Bus)")
        # H1 carries the consumer information push only, and that push goes nowhere else (§10.5):
        # the setup made for the consumer port (its model default) keeps transport 201
        consumer_push = self.config.get("send_destination_and_method", {}).get("transport") == WIRED_MBUS
        if consumer_push and transport != WIRED_MBUS:
            raise other_reason("the consumer information push goes to the H1 consumer port only "
                               "(transport_service 201, 0-2:24.6.0.255:FF:00)")
        if transport == WIRED_MBUS and not consumer_push:
            raise other_reason("only the consumer information push (0-6:25.9.0.255) goes to the H1 consumer port")
        if message != A_XDR_APDU:
            raise other_reason("message_type 0 (A-XDR encoded xDLMS APDU) is the only one")
        try:
            text = bytes(destination).decode("ascii")
        except UnicodeDecodeError:
            raise other_reason("the destination is ASCII text") from None
        check_destination(transport, text)
        self._put("send_destination_and_method", {"transport": transport, "destination": text, "message": message})

    def get_communication_window(self, ctx: RequestContext) -> Data:
        return Data.array(Data.structure([Data.octet_string(s), Data.octet_string(e)]) for s, e in self.windows())

    def set_communication_window(self, value: Data, ctx: RequestContext) -> None:
        windows = [tuple(_window_end(f) for f in structure_fields(w, 2, "a window element"))
                   for w in expect(value, DataType.ARRAY)]
        if len(windows) > MAX_WINDOWS:
            raise other_reason(f"at most {MAX_WINDOWS} communication windows")
        self._put("communication_window", [{"start": s.hex(), "end": e.hex()} for s, e in windows])

    def __getattr__(self, attr: str):
        # get_/set_ of the three integer attributes
        name = attr[4:]
        if name in INTEGER_ATTRIBUTES and attr.startswith("get_"):
            return lambda ctx: Data(INTEGER_ATTRIBUTES[name][0], self.integer(name))
        if name in INTEGER_ATTRIBUTES and attr.startswith("set_"):
            data_type, bounds, _ = INTEGER_ATTRIBUTES[name]
            return lambda value, ctx: store_integer_setting(self._store, self._key(name), value, data_type, bounds,
                                                            name, self.name)
        raise AttributeError(attr)

    # -- method ------------------------------------------------------------------------------
    def do_push(self, parameters: Data | None, ctx: RequestContext) -> None:
        if expect(parameters or Data.null(), DataType.INTEGER) != 0:
            raise other_reason("push takes integer (0)")
        self.binding("push")(self, ctx)
