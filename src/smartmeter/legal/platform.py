"""Identification of the platform the legally relevant part runs on (WELMEC 7.2 U2, U6).

On a general-purpose OS the code that computes legal values is not only legal/: it is also
the Python interpreter, the standard-library modules and the third-party libraries (numpy,
cryptography) that legal/ runs on. They are not ours and change with updates of the host,
so they are a firmware part of their own (companion standard §7: B = 2), with Part A a
SHA-256 and Part B a readable identifier:

  1-2:0.2.0.255  identifier, e.g. "CPython 3.11.7 cryptography-43.0.3 numpy-2.1.3"
  1-2:0.2.8.255  SHA-256 over the sorted lines "<sha256>  <label>\\n" of
     * the interpreter binary (label "interpreter"),
     * every file the legal process's import system read or loaded (legal/loader.py records
       the bytes as they are read: the `.py` compiled or the `.pyc` used, extension `.so`),
     * modules already loaded before that recording began (startup): their source and, if
       present, their cached `.pyc`,
     * every file of each third-party distribution whose modules are loaded, as listed by
       its RECORD (importlib.metadata), except its `__pycache__` (whatever of it ran is in
       the second item); this covers bundled native libraries (e.g. numpy.libs).
  Labels are paths relative to the interpreter's prefix ("python/...") or to the
  site-packages directory ("site-packages/..."), so the digest does not depend on where the
  meter is installed.

The platform is identified as loaded at the start of the legal process (`freeze`); a
changed library file changes the digest at the next start. `smartmeter id` computes it in a
fresh legal process, started the same way, so both agree. Modules first imported later
(lazily, inside the standard library) are not in the list.
"""
from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata


@dataclass(frozen=True, slots=True)
class PlatformId:
    identifier: str
    digest_hex: str
    files: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # (label, sha256 hex)


_FROZEN: PlatformId | None = None


def _sha256_file(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _roots() -> list[tuple[str, str]]:
    roots = [(os.path.realpath(p), "site-packages") for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    roots += [(os.path.realpath(sys.base_prefix), "python"), (os.path.realpath(sys.prefix), "python")]
    return roots


def _label(path: str, roots: list[tuple[str, str]]) -> str:
    real = os.path.realpath(path)
    for root, name in roots:
        if real.startswith(root + os.sep):
            return name + "/" + os.path.relpath(real, root).replace(os.sep, "/")
    return real


def _legal_module(name: str) -> bool:
    return name == "smartmeter" or name.startswith("smartmeter.")


def compute(read_files: dict[str, str] | None = None) -> PlatformId:
    """The platform ID of this process now. `read_files`: path -> sha256 of what the import
    system read (legal/loader.py); without it every loaded module's files are hashed now."""
    read_files = dict(read_files or {})
    roots = _roots()
    entries: dict[str, str] = {}
    interpreter = os.path.realpath(sys.executable)
    entries["interpreter"] = _sha256_file(interpreter) or "unreadable"
    for path, digest in read_files.items():
        entries[_label(path, roots)] = digest
    top_level: set[str] = set()
    for name, module in list(sys.modules.items()):
        if _legal_module(name) or module is None:
            continue
        top_level.add(name.split(".", 1)[0])
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None) if spec is not None else getattr(module, "__file__", None)
        if not origin or not os.path.isfile(origin) or origin in read_files:
            continue
        cached = getattr(spec, "cached", None)
        if cached and cached in read_files:
            continue
        entries.setdefault(_label(origin, roots), _sha256_file(origin) or "unreadable")
        if cached and os.path.isfile(cached):
            entries.setdefault(_label(cached, roots), _sha256_file(cached) or "unreadable")
    distributions: dict[str, str] = {}
    providers = metadata.packages_distributions()
    for top in sorted(top_level):
        for dist_name in providers.get(top, ()):
            if dist_name in distributions or dist_name.lower() == "smartmeter":
                continue
            try:
                dist = metadata.distribution(dist_name)
            except metadata.PackageNotFoundError:
                continue
            distributions[dist_name] = dist.version
            for file in dist.files or ():
                if "__pycache__" in file.parts:
                    continue
                path = str(file.locate())
                entries.setdefault(_label(path, roots), _sha256_file(path) or "missing")
    lines = sorted(entries.items(), key=lambda e: e[0].encode("utf-8"))
    h = hashlib.sha256()
    for label, digest in lines:
        h.update(f"{digest}  {label}\n".encode("utf-8"))
    impl = sys.implementation.name
    version = ".".join(str(v) for v in sys.version_info[:3])
    identifier = " ".join([f"{'CPython' if impl == 'cpython' else impl} {version}",
                           *(f"{d}-{v}" for d, v in sorted(distributions.items(), key=lambda d: d[0].lower()))])
    return PlatformId(identifier, h.hexdigest(), tuple(lines))


def freeze(read_files: dict[str, str]) -> PlatformId:
    """Fix the platform ID of this legal process (called once by legal/loader.py)."""
    global _FROZEN
    _FROZEN = compute(read_files)
    return _FROZEN


_IN_PROCESS: PlatformId | None = None


def current() -> PlatformId:
    """The platform ID fixed at the start of this legal process, or (in-process use: tests,
    tools) computed once over what this interpreter had loaded at the first call: hashing
    every file of the platform takes a second, too long for each identification read."""
    global _IN_PROCESS
    if _FROZEN is not None:
        return _FROZEN
    if _IN_PROCESS is None:
        _IN_PROCESS = compute()
    return _IN_PROCESS
