"""The object model as data: which objects exist, their class, version, OBIS, bindings,
and which client may read, write or execute what. Loaded from `model/<profile>.toml`."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ClientDef:
    name: str
    sap: int
    interfaces: tuple[str, ...]
    mechanism: int  # authentication mechanism id (0 lowest … 7 HLS ECDSA)
    description: str = ""


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


@dataclass
class ObjectModel:
    profile: str
    clients: dict[str, ClientDef]
    objects: list[ObjectDef]

    @classmethod
    def load(cls, profile_or_path: str | Path = "ksmw") -> "ObjectModel":
        path = Path(profile_or_path)
        if path.suffix == ".toml":
            text = path.read_text()
        else:
            text = resources.files("smartmeter.cosem.model").joinpath(f"{profile_or_path}.toml").read_text()
        return cls.from_toml(tomllib.loads(text))

    @classmethod
    def from_toml(cls, doc: dict[str, Any]) -> "ObjectModel":
        load_all()
        clients = {
            name: ClientDef(name, int(c["sap"]), tuple(c["interfaces"]), int(c["mechanism"]), c.get("description", ""))
            for name, c in doc["clients"].items()
        }
        objects = []
        for entry in doc["object"]:
            where = f"object {entry.get('name', '?')} ({entry.get('obis', '?')})"
            ic = REGISTRY.classes.get(entry["class_id"])
            if ic is None:
                raise ModelError(f"{where}: class {entry['class_id']} is not implemented")
            access = {}
            for client, spec in entry.get("access", {}).items():
                if client not in clients:
                    raise ModelError(f"{where}: unknown client {client!r}")
                access[client] = Access(
                    _indexes(spec.get("read", []), list(ic.attributes), f"{where} read"),
                    _indexes(spec.get("write", []), list(ic.attributes), f"{where} write"),
                    _indexes(spec.get("execute", []), list(ic.methods), f"{where} execute"),
                )
            config = {k: v for k, v in entry.items() if k not in ("name", "class_id", "obis", "access")}
            objects.append(ObjectDef(entry["name"], ic.class_id, ic.version, Obis.parse(entry["obis"]), config, access))
        obis_seen = [o.obis for o in objects]
        if len(set(obis_seen)) != len(obis_seen):
            raise ModelError("two objects share one logical name")
        return cls(doc["profile"]["name"], clients, objects)

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
