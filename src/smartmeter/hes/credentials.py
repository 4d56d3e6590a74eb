"""Per-client credentials files of the head-end, and the client's invocation counter.

One JSON file per client (mode 0600, it holds keys):

    {
      "format": "smartmeter-client-credentials/1",     optional
      "name": "management",                             optional, for people
      "client_sap": 1, "server_sap": 1,
      "interface": "lan",                               optional: "lan" (wrapper) or "wz" (HDLC)
      "authentication": 7,                              mechanism id 0, 5, 6 or 7
      "security_suite": 1,                              0, 1 or 2
      "security_policy": 108,                           IC 64 v1 bits (0x6C = all authenticated+encrypted)
      "client_system_title": "4845530000000001",        hex, 8 bytes
      "server_system_title": "4B464D1000000001",        hex, or null: learnt from the AARE
      "ek": "...", "ak": "...",                         hex, suite key length
      "hls_secret": "...",                              hex, HLS 6 only
      "master_key": "...",                              hex, optional (KEK; Management/Maintenance)
      "use_dedicated_key": false,                       optional
      "client_key_pem": "DEMO-client-1-management-signing.key.pem",   HLS 7: paths, relative
      "client_cert_pem": "DEMO-client-1-management-signing.pem",      to this file's directory
      "server_cert_pem": "meter-signing.pem"                          (or absolute), so the file
                                                                      works from any working
                                                                      directory
    }

The client's invocation counter for the global key must never repeat, across runs and
crashes. It lives in a sidecar file next to the credentials, `<name>.fc` (JSON with the
last counter used and the last counter accepted from the meter), rewritten atomically
(temporary file, fsync, rename, fsync of the directory) *before* each counter is used.
A missing sidecar means "nothing sent under this key yet"; a damaged one is an error,
never a silent restart from 0.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smartmeter.dlms.client import ClientError, ClientSecurity, CounterStore
from smartmeter.dlms.security.frame_counter import TxFrameCounter
from smartmeter.dlms.security.suites import INVOCATION_COUNTER_MAX, suite_parameters
from smartmeter.errors import SmartmeterError

__all__ = [
    "CredentialsError", "Credentials", "FileCounterStore", "FORMAT", "counter_path",
    "load_credentials", "write_credentials", "find_credentials", "client_from_options",
]

FORMAT = "smartmeter-client-credentials/1"
_COUNTER_FORMAT = "smartmeter-invocation-counter/1"
_MAX_FILE = 64 * 1024
_HEX_FIELDS = ("client_system_title", "server_system_title", "ek", "ak", "hls_secret", "master_key")
_PATH_FIELDS = ("client_key_pem", "client_cert_pem", "server_cert_pem")
_KNOWN = {"format", "name", "client_sap", "server_sap", "interface", "authentication", "security_suite",
          "security_policy", "use_dedicated_key", *_HEX_FIELDS, *_PATH_FIELDS,
          # written by the meter's demo provisioning (meter/provisioning.py)
          "note", "client", "interfaces"}
_INTERFACES = ("lan", "wz")
_ALL_INTERFACES = ("lan", "wz", "h1")


class CredentialsError(SmartmeterError):
    """A credentials or counter file is missing, unreadable or has a bad field (named)."""


def _fail(path: Path | None, field: str | None, problem: str) -> CredentialsError:
    where = f"{path}: " if path is not None else ""
    return CredentialsError(f"{where}{field}: {problem}" if field else f"{where}{problem}")


def counter_path(credentials_path: str | os.PathLike) -> Path:
    """The sidecar of `x/management.json`: `x/management.fc`."""
    return Path(credentials_path).with_suffix(".fc")


# ------------------------------------------------------------------------- files


def _write_private(path: Path, data: bytes) -> None:
    """Atomically replace `path` with `data`, mode 0600, durable before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not every platform can open a directory; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_FILE + 1)
    except FileNotFoundError:
        raise _fail(path, None, f"no such {what} file") from None
    except OSError as exc:
        raise _fail(path, None, f"cannot read the {what} file ({exc.strerror})") from None
    if len(raw) > _MAX_FILE:
        raise _fail(path, None, f"{what} file larger than {_MAX_FILE} bytes")
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _fail(path, None, f"not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(value, dict):
        raise _fail(path, None, f"the {what} file must hold a JSON object")
    return value


# ------------------------------------------------------------------- the counter


def _write_counter(path: Path, last_used: int | None, server_last_seen: int | None) -> None:
    state = {"format": _COUNTER_FORMAT, "client_invocation_counter": last_used,
             "server_invocation_counter": server_last_seen}
    _write_private(path, (json.dumps(state) + "\n").encode())


class FileCounterStore(CounterStore):
    """The invocation counters of one client, kept in its `<name>.fc` sidecar file.

    Every use re-reads the file under an exclusive lock (`<name>.fc.lock`), so two
    head-end processes with the same credentials never hand out the same counter. The
    meter's counter is a floor taken when the store is opened (older responses are
    replays); it is written as the highest value any process accepted, while each
    process checks its own responses against its own window (associations running at
    the same time interleave the meter's counter).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        last_used, server_last_seen = self._load()
        self._disk_server: int | None = server_last_seen
        super().__init__(last_used, server_last_seen)

    def _load(self) -> tuple[int | None, int | None]:
        if not self.path.exists():
            return None, None
        state = _read_json(self.path, "invocation counter")
        values = []
        for field in ("client_invocation_counter", "server_invocation_counter"):
            if field not in state:
                raise _fail(self.path, field, "missing (the file is damaged; do not delete it: "
                                              "resynchronise the counter or change the keys)")
            value = state[field]
            if value is not None and (type(value) is not int or not 0 <= value <= INVOCATION_COUNTER_MAX):
                raise _fail(self.path, field, f"{value!r} is not a counter 0..{INVOCATION_COUNTER_MAX} or null")
            values.append(value)
        return values[0], values[1]

    def _persist(self, last_used: int | None, server_last_seen: int | None) -> None:
        if server_last_seen is not None and self._disk_server is not None:
            server_last_seen = max(server_last_seen, self._disk_server)
        _write_counter(self.path, last_used, server_last_seen)
        self._disk_server = server_last_seen

    @contextlib.contextmanager
    def _locked(self):
        lock_path = self.path.with_name(self.path.name + ".lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            last_used, self._disk_server = self._load()
            if last_used is not None and (self.last_used is None or last_used > self.last_used):
                self._tx = TxFrameCounter(last_used)  # another process went on meanwhile
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def reserve(self) -> int:
        with self._locked():
            return super().reserve()

    def accept_server(self, counter: int) -> None:
        with self._locked():
            super().accept_server(counter)

    def reset(self) -> None:
        with self._locked():
            self._disk_server = None
            super().reset()

    def advance_to(self, last_used: int) -> None:
        """Resynchronise after an invocation-counter-error: the next counter will be above
        `last_used` (the counter only ever moves forward)."""
        if type(last_used) is not int or not 0 <= last_used <= INVOCATION_COUNTER_MAX:
            raise CredentialsError(f"counter {last_used!r} out of range")
        with self._locked():
            if self.last_used is None or last_used > self.last_used:
                self._persist(last_used, self.server_last_seen)
                self._tx = TxFrameCounter(last_used)


# ------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Credentials:
    """A loaded credentials file: addressing plus a ready `ClientSecurity`."""

    path: Path | None
    client_sap: int
    server_sap: int
    security: ClientSecurity
    name: str | None = None
    interface: str | None = None
    master_key: bytes | None = None
    client_cert_pem: Path | None = None
    server_cert_pem: Path | None = None


def _int_field(path: Path, raw: dict, field: str, low: int, high: int, default: int | None = None) -> int:
    if field not in raw:
        if default is not None:
            return default
        raise _fail(path, field, "missing")
    value = raw[field]
    if type(value) is not int or not low <= value <= high:
        raise _fail(path, field, f"{value!r} is not an integer {low}..{high}")
    return value


def _hex_field(path: Path, raw: dict, field: str, length: int | None = None,
               lengths: tuple[int, ...] | None = None) -> bytes | None:
    value = raw.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(path, field, "must be a hex string")
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise _fail(path, field, "is not valid hex") from None
    if length is not None and len(data) != length:
        raise _fail(path, field, f"must be {length} bytes ({2 * length} hex digits), got {len(data)}")
    if lengths is not None and len(data) not in lengths:
        raise _fail(path, field, f"must be {' or '.join(map(str, lengths))} bytes, got {len(data)}")
    return data


def _path_field(path: Path, raw: dict, field: str) -> Path | None:
    value = raw.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _fail(path, field, "must be a file path")
    written = Path(value)
    if written.is_absolute():
        resolved = written
    else:
        resolved = path.parent / written
        if not resolved.is_file():
            resolved = _legacy_relative_path(path, written) or resolved
    if not resolved.is_file():
        raise _fail(path, field, f"{resolved} does not exist")
    return resolved


def _legacy_relative_path(path: Path, written: Path) -> Path | None:
    """Where a path of an older credentials file points, or None.

    Earlier meters wrote their demo credentials with paths relative to the meter's working
    directory (`meter-data/credentials/demo-pki/x.pem` next to `meter-data/credentials/a.json`).
    Such a path starts with the tail of the file's own directory; dropping that tail makes it
    relative to the file, which works from any working directory. Failing that, the working
    directory the path was written for may be the current one."""
    directory = path.parent.absolute().parts
    for overlap in range(min(len(directory), len(written.parts) - 1), 0, -1):
        if written.parts[:overlap] == directory[-overlap:]:
            candidate = path.parent.joinpath(*written.parts[overlap:])
            if candidate.is_file():
                return candidate
    return written if written.is_file() else None


def _load_private_key(path: Path, field: str, key_path: Path, suite: int) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise _fail(path, field, f"{key_path} is not an unencrypted PEM private key ({type(exc).__name__})") from None
    curve = suite_parameters(suite).curve
    if not isinstance(key, ec.EllipticCurvePrivateKey) or curve is None or not isinstance(key.curve, curve):
        raise _fail(path, field, f"{key_path} is not an EC key on the curve of suite {suite}")
    return key


def _load_certificate_key(path: Path, field: str, cert_path: Path, suite: int) -> ec.EllipticCurvePublicKey:
    try:
        data = cert_path.read_bytes()
        cert = (x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data
                else x509.load_der_x509_certificate(data))
        key = cert.public_key()
    except (OSError, ValueError, TypeError) as exc:
        raise _fail(path, field, f"{cert_path} is not an X.509 certificate ({type(exc).__name__})") from None
    curve = suite_parameters(suite).curve
    if not isinstance(key, ec.EllipticCurvePublicKey) or curve is None or not isinstance(key.curve, curve):
        raise _fail(path, field, f"{cert_path} does not certify an EC key on the curve of suite {suite}")
    return key


def parse_credentials(raw: dict[str, Any], path: Path, counters: CounterStore | None = None) -> Credentials:
    """Validate a credentials mapping (as read from `path`) into `Credentials`."""
    unknown = sorted(set(raw) - _KNOWN)
    if unknown:
        name = unknown[0] if unknown[0].isprintable() else repr(unknown[0])
        raise _fail(path, name, "unknown field")
    if raw.get("format", FORMAT) != FORMAT:
        raise _fail(path, "format", f"{raw.get('format')!r} is not {FORMAT!r}")
    for field in ("name", "client", "note"):
        if raw.get(field) is not None and not isinstance(raw[field], str):
            raise _fail(path, field, "must be a string")
    name = raw.get("name", raw.get("client"))
    interface = raw.get("interface")
    if interface is not None and interface not in _INTERFACES:
        raise _fail(path, "interface", f"{interface!r} is not one of {', '.join(_INTERFACES)}")
    interfaces = raw.get("interfaces")
    if interfaces is not None:
        if not isinstance(interfaces, list) or not all(i in _ALL_INTERFACES for i in interfaces):
            raise _fail(path, "interfaces", f"must be a list of {', '.join(_ALL_INTERFACES)}")
        if interface is None and interfaces:
            # the meter lists where the client may associate; the LAN wrapper when it can
            interface = "lan" if "lan" in interfaces else ("wz" if "wz" in interfaces else None)
    client_sap = _int_field(path, raw, "client_sap", 1, 0x7F)
    server_sap = _int_field(path, raw, "server_sap", 1, 0x3FFF, default=1)
    mechanism = _int_field(path, raw, "authentication", 0, 7)
    if mechanism not in (0, 5, 6, 7):
        raise _fail(path, "authentication", f"mechanism {mechanism} is not 0, 5, 6 or 7")
    suite = _int_field(path, raw, "security_suite", 0, 2, default=0)
    policy = _int_field(path, raw, "security_policy", 0, 0xFF, default=0)
    if policy & 0x03:
        raise _fail(path, "security_policy", f"0x{policy:02X} sets bits 0/1, unused in IC 64 version 1")
    key_length = suite_parameters(suite).key_length
    client_title = _hex_field(path, raw, "client_system_title", 8)
    server_title = _hex_field(path, raw, "server_system_title", 8)
    ek = _hex_field(path, raw, "ek", key_length)
    ak = _hex_field(path, raw, "ak", key_length)
    master_key = _hex_field(path, raw, "master_key", key_length)
    hls_secret = _hex_field(path, raw, "hls_secret", lengths=tuple(range(1, 65)))
    dedicated = raw.get("use_dedicated_key", False)
    if not isinstance(dedicated, bool):
        raise _fail(path, "use_dedicated_key", "must be true or false")
    key_path, client_cert, server_cert = (_path_field(path, raw, f) for f in _PATH_FIELDS)
    client_key = server_key = None
    if mechanism == 7:
        if key_path is None:
            raise _fail(path, "client_key_pem", "HLS 7 needs the client's signing key")
        if server_cert is None:
            raise _fail(path, "server_cert_pem", "HLS 7 needs the meter's signing certificate")
    if key_path is not None and suite in (1, 2):
        client_key = _load_private_key(path, "client_key_pem", key_path, suite)
    if server_cert is not None and suite in (1, 2):
        server_key = _load_certificate_key(path, "server_cert_pem", server_cert, suite)
    if mechanism == 6 and hls_secret is None:
        raise _fail(path, "hls_secret", "HLS 6 needs the HLS secret")
    ciphered = policy != 0 or mechanism in (5, 7)
    for field, value in (("client_system_title", client_title), ("ek", ek), ("ak", ak)):
        if ciphered and value is None:
            raise _fail(path, field, "missing (needed with a security policy or HLS 5/7)")
    if mechanism == 6 and client_title is None:
        raise _fail(path, "client_system_title", "missing (needed for HLS 6)")
    if counters is None:
        counters = FileCounterStore(counter_path(path))
    try:
        security = ClientSecurity(
            mechanism=mechanism, suite=suite, policy=policy, client_system_title=client_title,
            server_system_title=server_title, ek=ek, ak=ak, hls_secret=hls_secret,
            client_signing_key=client_key, server_signing_key=server_key, invocation_counter=counters,
            use_dedicated_key=dedicated,
        )
    except ClientError as exc:
        raise _fail(path, None, str(exc)) from None
    return Credentials(path, client_sap, server_sap, security, name, interface, master_key, client_cert,
                       server_cert)


def load_credentials(path: str | os.PathLike) -> Credentials:
    """Read and validate one credentials file; its counter comes from `<name>.fc`."""
    path = Path(path)
    return parse_credentials(_read_json(path, "credentials"), path)


def find_credentials(directory: str | os.PathLike, client_sap: int) -> Path:
    """The credentials file in `directory` for `client_sap` (the one file that names it)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CredentialsError(f"{directory}: not a directory of credentials files")
    found = []
    for candidate in sorted(directory.glob("*.json")):
        try:
            raw = _read_json(candidate, "credentials")
        except CredentialsError:
            continue
        if raw.get("client_sap") == client_sap:
            found.append(candidate)
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise CredentialsError(f"{directory}: {what} credentials files for client SAP {client_sap}")
    return found[0]


def _hex(value: bytes | None) -> str | None:
    return None if value is None else bytes(value).hex().upper()


def write_credentials(
    path: str | os.PathLike, *, client_sap: int, authentication: int, security_suite: int = 0,
    security_policy: int = 0, server_sap: int = 1, client_system_title: bytes | None = None,
    server_system_title: bytes | None = None, ek: bytes | None = None, ak: bytes | None = None,
    hls_secret: bytes | None = None, master_key: bytes | None = None, client_key_pem: str | os.PathLike | None = None,
    client_cert_pem: str | os.PathLike | None = None, server_cert_pem: str | os.PathLike | None = None,
    name: str | None = None, interface: str | None = None, use_dedicated_key: bool = False,
    reset_counter: bool | None = None,
) -> Credentials:
    """Validate and write a credentials file (mode 0600, atomically); returns it loaded.

    The counter sidecar: `reset_counter=None` (default) starts a fresh one when the file is
    new or its EK changes, and keeps the existing one otherwise (same key: the counter
    must go on). True/False force either way.
    """
    path = Path(path)
    raw: dict[str, Any] = {"format": FORMAT}
    if name is not None:
        raw["name"] = name
    raw.update(client_sap=client_sap, server_sap=server_sap)
    if interface is not None:
        raw["interface"] = interface
    raw.update(authentication=authentication, security_suite=security_suite, security_policy=security_policy,
               client_system_title=_hex(client_system_title), server_system_title=_hex(server_system_title),
               ek=_hex(ek), ak=_hex(ak))
    if hls_secret is not None:
        raw["hls_secret"] = _hex(hls_secret)
    if master_key is not None:
        raw["master_key"] = _hex(master_key)
    if use_dedicated_key:
        raw["use_dedicated_key"] = True
    for field, value in (("client_key_pem", client_key_pem), ("client_cert_pem", client_cert_pem),
                         ("server_cert_pem", server_cert_pem)):
        if value is not None:
            value = Path(value)
            try:
                value = value.resolve().relative_to(path.parent.resolve())
            except ValueError:
                value = value.resolve()
            raw[field] = str(value)
    # validate before anything is written (paths are checked relative to `path`)
    parse_credentials(raw, path, counters=CounterStore())
    if reset_counter is None:
        reset_counter = True
        if path.exists():
            try:
                old = _read_json(path, "credentials")
                reset_counter = old.get("ek") is None or old.get("ek", "").upper() != raw["ek"]
            except CredentialsError:
                reset_counter = True
    _write_private(path, (json.dumps(raw, indent=2) + "\n").encode())
    if reset_counter:
        _write_counter(counter_path(path), None, None)
    return load_credentials(path)


# ------------------------------------------------------------------ CLI support


def client_from_options(*, credentials: str | os.PathLike | None, host: str, port: int | None, hdlc: bool | None,
                        client_sap: int | None, server_sap: int | None, physical_address: int, timeout: float,
                        wrapper_port: int = 4059, hdlc_port: int = 4061):
    """(link, security or None) for `smartmeter client`. With a credentials file, the SAPs
    come from it (a different --client-sap/--server-sap is an error) and HDLC is used when
    its interface is "wz" unless --hdlc says otherwise; None means "option not given"."""
    from smartmeter.hes.connection import HdlcLink, WrapperLink

    security = None
    if credentials is not None:
        loaded = load_credentials(credentials)
        for option, given, value in (("--client-sap", client_sap, loaded.client_sap),
                                     ("--server-sap", server_sap, loaded.server_sap)):
            if given is not None and given != value:
                raise CredentialsError(f"{option} {given} conflicts with {value} in {loaded.path}")
        client_sap, server_sap, security = loaded.client_sap, loaded.server_sap, loaded.security
        if hdlc is None:
            hdlc = loaded.interface == "wz"
    client_sap = 16 if client_sap is None else client_sap
    server_sap = 1 if server_sap is None else server_sap
    if hdlc:
        link = HdlcLink(host, port or hdlc_port, client_sap, server_sap, physical_address, timeout)
    else:
        link = WrapperLink(host, port or wrapper_port, client_sap, server_sap, timeout)
    return link, security
