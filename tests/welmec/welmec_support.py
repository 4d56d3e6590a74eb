"""Helpers shared by the WELMEC evidence tests: independent digests, meters started from a
copy of the source tree, DLMS reads with our client and with gurux, the meter's store."""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from meterproc import MeterProcess, start_meter
from smartmeter.cosem.data import Data
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import HdlcLink, WrapperLink
from smartmeter.hes.credentials import load_credentials

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
LEGAL_DIR = SRC / "smartmeter" / "legal"
REGISTERS = ("a_plus", "a_minus", "r_plus", "r_minus")

# OBIS codes of the legally relevant objects (companion standard §5.1, §5.16, §5.17)
LEGAL_FIRMWARE_ID = "1-0:0.2.0.255"
LEGAL_FIRMWARE_SIGNATURE = "1-0:0.2.8.255"
APP_FIRMWARE_ID = "1-1:0.2.0.255"
APP_FIRMWARE_SIGNATURE = "1-1:0.2.8.255"
PARAMETER_RECORD_NUMBER = "1-0:0.2.1.255"
FATAL_ERROR_REGISTER = "0-0:97.97.128.255"
CERTIFICATION_MODE = "0-0:94.43.143.255"
CERTIFICATION_LOG = "0-0:99.98.98.255"
ENERGY = {"a_plus": "1-0:1.8.0.255", "a_minus": "1-0:2.8.0.255", "r_plus": "1-0:3.8.0.255", "r_minus": "1-0:4.8.0.255"}


# -- independent software identification (hashlib over the files; not smartmeter.legal) ----------

def _hash_lines(root: Path, skip_top: set[str], skip_manifest: bool) -> bytes:
    lines = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if not path.is_file() or "__pycache__" in rel.parts or rel.suffix == ".pyc":
            continue
        if rel.parts[0] in skip_top or (skip_manifest and rel.as_posix() == "release_manifest.json"):
            continue
        lines.append((rel.as_posix().encode(), f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {rel.as_posix()}\n"))
    return "".join(line for _, line in sorted(lines)).encode()


def legal_digest(legal_dir: Path = LEGAL_DIR) -> str:
    """SHA-256 of `sha256sum` lines of every file of legal/ (sorted by path bytes, without the
    release manifest): what `sha256sum` in a shell gives, computed here with hashlib."""
    return hashlib.sha256(_hash_lines(Path(legal_dir), set(), True)).hexdigest()


def application_digest(package_dir: Path = SRC / "smartmeter") -> str:
    """The same over every file of the smartmeter package outside legal/."""
    return hashlib.sha256(_hash_lines(Path(package_dir), {"legal"}, False)).hexdigest()


def copy_tree(dest: Path) -> Path:
    """A copy of src/ (without caches) to start a meter from with PYTHONPATH."""
    shutil.copytree(SRC, dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    return dest / "src"


def flip_docstring_byte(path: Path) -> None:
    """Flip one bit (0x20: letter case) of the first letter of the module docstring: one
    byte changes, the module still imports."""
    data = bytearray(path.read_bytes())
    start = data.index(b'"""') + 3
    i = next(i for i in range(start, len(data)) if chr(data[i]).isalpha())
    data[i] ^= 0x20
    path.write_bytes(bytes(data))


def start_meter_from(src: Path | None, data_dir: Path, *args: str) -> MeterProcess:
    """A real meter process; with `src`, its Python code comes from that tree (PYTHONPATH)."""
    saved = os.environ.get("PYTHONPATH")
    try:
        if src is not None:
            os.environ["PYTHONPATH"] = str(src)
        return start_meter(data_dir, *args)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def cli(*args: str, src: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return subprocess.run([sys.executable, "-m", "smartmeter", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


# -- the meter's store, read-only ---------------------------------------------------------------

def store(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{data_dir / 'legal.sqlite3'}?mode=ro", uri=True)


def stored_milli(data_dir: Path) -> dict[str, int]:
    with store(data_dir) as db:
        return dict(db.execute("SELECT name, milli_units FROM energy_register").fetchall())


def metrological_events(data_dir: Path) -> list[tuple[int, bytes]]:
    with store(data_dir) as db:
        return db.execute("SELECT kind, payload FROM chain_entry WHERE tbl = 'metrological' ORDER BY seq").fetchall()


# -- DLMS ----------------------------------------------------------------------------------------

def public_link(meter: MeterProcess, hdlc: bool = False):
    if hdlc:
        return HdlcLink("127.0.0.1", meter.hdlc_port, 16, 1, 0x10, 10)
    return WrapperLink("127.0.0.1", meter.wrapper_port, 16, 1, 10)


def client_link(meter: MeterProcess, credentials):
    if credentials.interface == "wz":
        return HdlcLink("127.0.0.1", meter.hdlc_port, credentials.client_sap, credentials.server_sap, 0x10, 10)
    return WrapperLink("127.0.0.1", meter.wrapper_port, credentials.client_sap, credentials.server_sap, 10)


def secured(meter: MeterProcess, client: str) -> MeterClient:
    """An (unopened) association of one of the meter's demo clients, with its credentials."""
    credentials = load_credentials(meter.data_dir / "credentials" / f"{client}.json")
    return MeterClient(client_link(meter, credentials), security=credentials.security)


def system_title_of(meter: MeterProcess, client: str) -> bytes:
    credentials = load_credentials(meter.data_dir / "credentials" / f"{client}.json")
    return credentials.security.client_system_title


def read_public(meter: MeterProcess, items: list[tuple[str, int, int]], hdlc: bool = False) -> list[Data]:
    """GET (obis, attribute, class_id) as the public client (no security)."""
    async def go():
        async with MeterClient(public_link(meter, hdlc)) as client:
            return [await client.get(obis, attribute, class_id=class_id) for obis, attribute, class_id in items]

    return asyncio.run(go())


def gurux_read_data(port: int, obis: str, *, hdlc: bool = False):
    """Attribute 2 of an IC 1 object, read by gurux-dlms (public client) as an independent peer."""
    from gurux_dlms.objects import GXDLMSData

    from interop.gurux_peer import GuruxClient

    client = GuruxClient(port, hdlc=hdlc)
    client.associate()
    try:
        obj = GXDLMSData(obis.replace("-", ".").replace(":", "."))
        return client.read(obj, 2)
    finally:
        client.close()


def as_bytes(value) -> bytes:
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


__all__ = [name for name in dir() if not name.startswith("_")] + ["dataclasses"]
