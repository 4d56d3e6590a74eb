"""The object model as data: which objects exist, their class, version, OBIS, bindings,
and which client may read, write or execute what. Loaded from `model/<profile>.toml`."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from smartmeter.cosem.classes import load_all
from smartmeter.cosem.classes.base import REGISTRY, InterfaceClass
from smartmeter.cosem.obis import Obis
from smartmeter.errors import SmartmeterError


class ModelError(SmartmeterError):
    """The model file is inconsistent (unknown class, bad OBIS, access to a missing attribute)."""


@dataclass(frozen=True)
class Access:
    read: frozenset[int] = frozenset()
    write: frozenset[int] = frozenset()
    execute: frozenset[int] = frozenset()


NO_ACCESS = Access()


POLICY_NAMES = {
    "authenticated_request": 0x04, "encrypted_request": 0x08, "signed_request": 0x10,
    "authenticated_response": 0x20, "encrypted_response": 0x40, "signed_response": 0x80,
}


@dataclass(frozen=True)
class ClientDef:
    name: str
    sap: int
    interfaces: tuple[str, ...]
    mechanism: int  # authentication mechanism id (0 lowest … 7 HLS ECDSA)
    description: str = ""
    ciphered: bool = False  # application context LN with ciphering (3) rather than LN (1)
    security_suite: int = 0
    security_policy: int = 0  # IC 64 v1 bits
    pre_established: bool = False  # no AARQ: the association always exists (FW update client)
    push_only: bool = False  # receives pushes, never associates (CIP)


def _client(name: str, c: dict[str, Any]) -> ClientDef:
    unknown = set(c.get("security_policy", [])) - set(POLICY_NAMES)
    if unknown:
        raise ModelError(f"client {name}: unknown security_policy entries {sorted(unknown)}")
    return ClientDef(
        name, int(c["sap"]), tuple(c["interfaces"]), int(c["mechanism"]), c.get("description", ""),
        bool(c.get("ciphered", False)), int(c.get("security_suite", 0)),
        sum(POLICY_NAMES[p] for p in c.get("security_policy", [])),
        bool(c.get("pre_established", False)), bool(c.get("push_only", False)),
    )


@dataclass(frozen=True)
class ObjectDef:
    name: str
    class_id: int
    version: int
    obis: Obis
    config: dict[str, Any]
    access: dict[str, Access]

    def access_for(self, client: str) -> Access:
        return self.access.get(client, NO_ACCESS)


def _indexes(spec: Any, all_indexes: list[int], where: str) -> frozenset[int]:
    if spec == "*":
        return frozenset(all_indexes)
    if not isinstance(spec, list) or not all(isinstance(i, int) for i in spec):
        raise ModelError(f"{where}: expected '*' or a list of indexes")
    unknown = set(spec) - set(all_indexes)
    if unknown:
        raise ModelError(f"{where}: no such index {sorted(unknown)}")
    return frozenset(spec)


def _version(entry: dict[str, Any], ic: type[InterfaceClass], where: str) -> int:
    """The class version an object reports (object list): the implemented one, or an earlier one the
    standard names for this object (`version = 0`), whose attributes and methods the class serves
    alike (IC 7 version 0 and 1 differ in no attribute or method the meter has)."""
    version = entry.get("version", ic.version)
    if not isinstance(version, int) or not 0 <= version <= ic.version:
        raise ModelError(f"{where}: version must be 0..{ic.version} (what class {ic.class_id} implements)")
    return version


def _without_captures_of(o: ObjectDef, absent: set[Obis]) -> ObjectDef:
    """`o` without the capture objects (and their column types) of objects this meter does not have."""
    captures = o.config.get("capture_objects")
    if not captures or not any(Obis.parse(c[1]) in absent for c in captures):
        return o
    kept = [i for i, c in enumerate(captures) if Obis.parse(c[1]) not in absent]
    config = dict(o.config, capture_objects=[captures[i] for i in kept])
    if "column_types" in config:
        config["column_types"] = [o.config["column_types"][i] for i in kept]
    return replace(o, config=config)


def _read_profile(profile_or_path: str | Path, depth: int = 0) -> dict[str, Any]:
    """A model document; `[profile] extends = "other"` takes the other profile's objects and
    clients, with this file's clients (whole entries) and objects (by OBIS) replacing them."""
    path = Path(profile_or_path)
    if path.suffix == ".toml":
        text = path.read_text()
    else:
        text = resources.files("smartmeter.cosem.model").joinpath(f"{profile_or_path}.toml").read_text()
    doc = tomllib.loads(text)
    base_name = doc.get("profile", {}).get("extends")
    if base_name is None:
        return doc
    if depth > 4:
        raise ModelError("profiles extend each other too deeply")
    base = _read_profile(base_name, depth + 1)
    clients = dict(base.get("clients", {}), **doc.get("clients", {}))
    own = {o["obis"]: o for o in doc.get("object", [])}
    objects = [own.pop(o["obis"], o) for o in base.get("object", [])] + list(own.values())
    return {"profile": doc["profile"], "clients": clients, "object": objects}


@dataclass
class ObjectModel:
    profile: str
    clients: dict[str, ClientDef]
    objects: list[ObjectDef]

    @classmethod
    def load(cls, profile_or_path: str | Path = "ksmw") -> "ObjectModel":
        return cls.from_toml(_read_profile(profile_or_path))

    @classmethod
    def from_toml(cls, doc: dict[str, Any]) -> "ObjectModel":
        load_all()
        clients = {name: _client(name, c) for name, c in doc["clients"].items()}
        objects = []
        for entry in doc["object"]:
            where = f"object {entry.get('name', '?')} ({entry.get('obis', '?')})"
            ic = REGISTRY.classes.get(entry["class_id"])
            if ic is None:
                raise ModelError(f"{where}: class {entry['class_id']} is not implemented")
            access = {}
            for names, spec in entry.get("access", {}).items():
              for client in (n.strip() for n in names.split(",")):  # "a,b" gives both the same rights
                if client not in clients:
                    raise ModelError(f"{where}: unknown client {client!r}")
                if client in access:
                    raise ModelError(f"{where}: client {client!r} has two access entries")
                access[client] = Access(
                    _indexes(spec.get("read", []), list(ic.attributes), f"{where} read"),
                    _indexes(spec.get("write", []), list(ic.attributes), f"{where} write"),
                    _indexes(spec.get("execute", []), list(ic.methods), f"{where} execute"),
                )
            config = {k: v for k, v in entry.items() if k not in ("name", "class_id", "obis", "access", "version")}
            objects.append(ObjectDef(entry["name"], ic.class_id, _version(entry, ic, where), Obis.parse(entry["obis"]),
                                     config, access))
        obis_seen = [o.obis for o in objects]
        if len(set(obis_seen)) != len(obis_seen):
            raise ModelError("two objects share one logical name")
        return cls(doc["profile"]["name"], clients, objects)

    def for_phases(self, phases: int) -> "ObjectModel":
        """The objects a meter with `phases` phases has: an object marked `phases = 3` in the model
        (L2 and L3 values) exists on a poly-phase meter only, and a profile does not capture it there."""
        absent = {o.obis for o in self.objects if int(o.config.get("phases", 1)) > phases}
        return ObjectModel(self.profile, self.clients,
                           [_without_captures_of(o, absent) for o in self.objects if o.obis not in absent])

    def client_by_sap(self, sap: int) -> ClientDef | None:
        return next((c for c in self.clients.values() if c.sap == sap), None)

    def instantiate(self, bindings: dict[str, Any]) -> "ObjectDirectory":
        return ObjectDirectory(self, bindings)


class ObjectDirectory:
    """The model's objects, instantiated with runtime bindings, addressable by OBIS."""

    def __init__(self, model: ObjectModel, bindings: dict[str, Any]) -> None:
        self.model = model
        self.bindings = dict(bindings, model=model, directory=self)
        self.by_ln: dict[bytes, tuple[ObjectDef, InterfaceClass]] = {}
        for o in model.objects:
            instance = REGISTRY.classes[o.class_id](o.obis, o.name, o.config, self.bindings)
            self.by_ln[o.obis.to_bytes()] = (o, instance)

    def visible_to(self, client: str) -> list[tuple[ObjectDef, InterfaceClass]]:
        """Objects a client may see: those it has any access right on."""
        return [(o, inst) for o, inst in self.by_ln.values() if client in o.access]

    def find(self, class_id: int, logical_name: bytes) -> tuple[ObjectDef, InterfaceClass] | None:
        found = self.by_ln.get(bytes(logical_name))
        if found is None or found[0].class_id != class_id:
            return None
        return found
