"""What every COSEM interface class shares: attribute/method tables and typed access errors.

An interface class module declares its attributes and methods once, as tables, and
implements behaviour as plain methods `get_<name>`, `set_<name>`, `do_<name>`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.results import DataAccessResult
from smartmeter.errors import EncodeError, SmartmeterError

if TYPE_CHECKING:
    from smartmeter.cosem.obis import Obis


class CosemAccessError(SmartmeterError):
    """Raised by a class to refuse an access; the server maps `result` to the response."""

    def __init__(self, result: DataAccessResult, detail: str = "") -> None:
        self.result = result
        super().__init__(f"{result.name.lower().replace('_', '-')}" + (f": {detail}" if detail else ""))


@dataclass(frozen=True, slots=True)
class Selection:
    """Selective access as the class sees it: selector number and its parameter."""

    selector: int
    parameters: Data


@dataclass
class RequestContext:
    """Who is asking: set by the server for each request."""

    client_name: str
    client_sap: int
    association: Any = None  # the server association (for the current Association LN)


@dataclass
class Binding:
    """A runtime value an attribute is bound to (named in the model file)."""

    get: Callable[[], Data]
    set: Callable[[Data], None] | None = None
    # a write that depends on who writes (authority, system title) takes the request context too
    set_with_context: Callable[[Data, "RequestContext"], None] | None = None


class InterfaceClass:
    class_id: ClassVar[int]
    version: ClassVar[int]
    # index -> attribute name (1 = logical_name for every class)
    attributes: ClassVar[dict[int, str]]
    methods: ClassVar[dict[int, str]] = {}
    # attributes a selective access may apply to: index -> allowed selectors
    selective_access: ClassVar[dict[int, tuple[int, ...]]] = {}

    def __init__(self, logical_name: "Obis", name: str, config: dict[str, Any], bindings: dict[str, Binding]) -> None:
        self.logical_name = logical_name
        self.name = name
        self.config = config
        self.bindings = bindings

    def binding(self, key: str) -> Binding:
        """The binding the model names under `key` for this object."""
        name = self.config.get(key)
        if name is None or name not in self.bindings:
            raise CosemAccessError(DataAccessResult.OBJECT_UNAVAILABLE, f"{self.name}: {key} is not bound")
        return self.bindings[name]

    # -- generic dispatch ---------------------------------------------------------------
    def get(self, index: int, ctx: RequestContext, selection: Selection | None = None) -> Data:
        name = self.attributes.get(index)
        if name is None:
            raise CosemAccessError(DataAccessResult.OBJECT_UNDEFINED, f"no attribute {index}")
        if selection is not None:
            if selection.selector not in self.selective_access.get(index, ()):
                raise CosemAccessError(DataAccessResult.SCOPE_OF_ACCESS_VIOLATED, "selective access not supported")
            return getattr(self, f"get_{name}_selected")(ctx, selection)
        if index == 1:
            return Data.octet_string(self.logical_name.to_bytes())
        return getattr(self, f"get_{name}")(ctx)

    def set(self, index: int, value: Data, ctx: RequestContext, selection: Selection | None = None) -> None:
        name = self.attributes.get(index)
        if name is None:
            raise CosemAccessError(DataAccessResult.OBJECT_UNDEFINED, f"no attribute {index}")
        setter = getattr(self, f"set_{name}", None)
        if index == 1 or setter is None or selection is not None:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, f"{name} cannot be written")
        setter(value, ctx)

    def invoke(self, index: int, parameters: Data | None, ctx: RequestContext) -> Data | None:
        name = self.methods.get(index)
        if name is None:
            raise CosemAccessError(DataAccessResult.OBJECT_UNDEFINED, f"no method {index}")
        return getattr(self, f"do_{name}")(parameters, ctx)


def expect(value: Data, *types) -> Any:
    """The Python value of `value` if its type is one of `types`, else type-unmatched."""
    if value.type not in types:
        raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, f"expected {', '.join(t.name for t in types)}")
    return value.value


def other_reason(detail: str) -> CosemAccessError:
    """A value of the right type that the object cannot take (invalid content, over a capacity)."""
    return CosemAccessError(DataAccessResult.OTHER_REASON, detail)


def type_unmatched(detail: str) -> CosemAccessError:
    return CosemAccessError(DataAccessResult.TYPE_UNMATCHED, detail)


def structure_fields(value: Data, count: int, what: str) -> tuple[Data, ...]:
    """The fields of a structure of exactly `count` (else type-unmatched)."""
    fields = expect(value, DataType.STRUCTURE)
    if len(fields) != count:
        raise type_unmatched(f"{what} is a structure of {count}")
    return fields


def object_definition(value: Data, what: str) -> tuple[int, bytes, int, int]:
    """(class_id, logical name, attribute, data_index) of a capture or push object definition:
    structure {long-unsigned, octet-string(6), integer, long-unsigned}, else type-unmatched."""
    class_id, ln, attribute, data_index = (
        expect(f, t) for f, t in zip(structure_fields(value, 4, what),
                                     (DataType.LONG_UNSIGNED, DataType.OCTET_STRING, DataType.INTEGER,
                                      DataType.LONG_UNSIGNED)))
    if len(ln) != 6:
        raise type_unmatched("logical_name is octet-string(6)")
    return class_id, bytes(ln), attribute, data_index


def date_time_octets(value: Data, octets: int, cosem_type: DataType, encode: Callable[[Any], bytes]) -> bytes:
    """The bytes of a date (5), time (4) or date-time (12) the Blue Book gives as an octet-string:
    as such, or as the DLMS type (some clients send that). A wrong length is type-unmatched, a
    value its type cannot hold other-reason."""
    if value.type == cosem_type:
        try:
            return encode(value.value)
        except EncodeError as exc:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, str(exc)) from None
    raw = expect(value, DataType.OCTET_STRING, cosem_type)
    if len(raw) != octets:
        raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED,
                               f"a {cosem_type.name.lower().replace('_', '-')} is {octets} octets")
    return raw


def store_integer_setting(store, key: str, value: Data, data_type: DataType, bounds: tuple[int, int],
                          name: str, what: str) -> None:
    """Write one range-checked integer attribute of a setup object into the meter's settings store."""
    raw = expect(value, data_type)
    low, high = bounds
    if not low <= raw <= high:
        raise CosemAccessError(DataAccessResult.OTHER_REASON, f"{name} must be {low}..{high}")
    if store is None:
        raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, f"the {what} is fixed here")
    store.put(key, raw)


@dataclass
class ClassRegistry:
    classes: dict[int, type[InterfaceClass]] = field(default_factory=dict)

    def register(self, cls: type[InterfaceClass]) -> type[InterfaceClass]:
        self.classes[cls.class_id] = cls
        return cls


REGISTRY = ClassRegistry()


class StoredSettings:
    """Mix-in of a class whose writable attributes are kept in the meter's settings store (the
    binding "settings"), under "<settings_prefix>.<logical name>.<name>": a restart keeps them.
    Without a store they are fixed: a write is refused (read-write-denied)."""

    settings_prefix: ClassVar[str]

    @property
    def _store(self):
        return self.bindings.get("settings")

    def _key(self, name: str) -> str:
        return f"{self.settings_prefix}.{self.logical_name}.{name}"

    def _stored(self, name: str) -> Any:
        return self._store.get(self._key(name)) if self._store is not None else None

    def _put(self, name: str, value: Any) -> None:
        if self._store is None:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, f"{self.name} is fixed here")
        self._store.put(self._key(name), value)

