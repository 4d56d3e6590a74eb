"""Firmware images: their format, their verification before activation, and their installation
beside the running software (WELMEC 7.2 extension D, companion standard §7).

An image carries whole software parts of this meter: the legally relevant part (B = 0, the files
of legal/ with its signed release manifest) and/or the application (B = 1, every other file of
the `smartmeter` package). The platform (B = 2: interpreter and libraries) is not in images.

Format 1, one file, every field checked by `parse_firmware_image` (a total decoder: any bytes
give an image or a `FirmwareImageError`):

    b"SMFW" + b"\\x01"                  magic and format
    u32 BE length, header               canonical JSON (sorted keys, no spaces), UTF-8
    u32 BE length, body                 zlib-compressed concatenation of the files, in header order
    u16 BE length, signature            DER ECDSA P-256/SHA-256 over every byte before this length;
                                        length 0: not signed yet (as `fw build` writes it)

The header says what the image will produce: its identifier (the image_identifier a client
gives image_transfer_initiate), the meter types it is for, and per part the version and the
digest that the meter's identifier objects (1-0:0.2.0/0.2.8.255, 1-1:0.2.0/0.2.8.255) will show.

Verification (`verify_firmware_image`, run by the running legal part: the checks of D2 and D3 are
done by the approved software before anything new runs): the manufacturer's signature with the
firmware key imported in production; the identifier and size the transfer was initiated with;
the meter type; the integrity of every file and the digest of every part; for a legally
relevant part its release manifest, signed by a key the RUNNING part anchors (the approval, D2);
and the downgrade rule (a part's version may not go back, and the same version must be the same
software). Installation (`install_firmware_image`) writes a complete package (the image's parts,
the running software's other parts) into a slot directory beside the running one; the meter's
boot code starts it on trial and returns to the previous slot if it does not come up.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smartmeter.legal import identification
from smartmeter.legal.signing import _write_atomically

MAGIC = b"SMFW"
FORMAT = 1
MAX_FIRMWARE_IMAGE_SIZE = 16 << 20  # the largest image a meter accepts (the whole package is ~0.5 MiB)
MAX_BODY_SIZE = 64 << 20  # decompressed
MAX_HEADER_SIZE = 1 << 20
MAX_FILES = 4000
MAX_IDENTIFIER = 64
METER_TYPES = (100, 200, 300)  # companion §5.1: single phase; poly phase direct; poly phase CT
PART_LEGAL, PART_APPLICATION = "legal", "application"
PART_NUMBERS = {PART_LEGAL: 0, PART_APPLICATION: 1}  # B of 1-B:0.2.0.255
HOLDING_FILE = "firmware/holding.img"  # where the transferred image is kept, in the data directory
SLOTS_DIR = "firmware/slots"
BOOT_RECORD = "firmware/boot.json"
_VERSION = re.compile(r"^(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5})){0,3}$")
_APP_VERSION = re.compile(rb'^__version__ = "([^"\n]{1,32})"$', re.M)
_LEGAL_VERSION = re.compile(rb'^LEGAL_VERSION = "([^"\n]{1,32})"$', re.M)
_HEADER_KEYS = {"format", "identifier", "meter_types", "parts", "files", "body_size", "created", "key_id"}
_PATH_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


class FirmwareImageError(Exception):
    """The bytes are not a well-formed image; the message says what is wrong, in one line."""


@dataclass(frozen=True, slots=True)
class FirmwarePart:
    b: int  # B of the identifier objects: 0 legally relevant, 1 application
    name: str
    version: str
    digest: str  # hex: what 1-B:0.2.8.255 will show


@dataclass(frozen=True, slots=True)
class FirmwareFile:
    path: str  # relative to the smartmeter package, "/"-separated
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class FirmwareImage:
    identifier: str
    meter_types: tuple[int, ...]
    parts: tuple[FirmwarePart, ...]
    files: tuple[FirmwareFile, ...]
    body_size: int
    created: str
    key_id: str
    signature: bytes  # b"" when not signed
    size: int  # bytes of the whole image
    signed_length: int  # the signature covers raw[:signed_length]
    body_offset: int
    body_length: int

    def part(self, name: str) -> FirmwarePart | None:
        return next((p for p in self.parts if p.name == name), None)

    def to_json(self) -> dict:
        return {"identifier": self.identifier, "meter_types": list(self.meter_types),
                "parts": [{"b": p.b, "name": p.name, "version": p.version, "digest": p.digest} for p in self.parts],
                "files": len(self.files), "body_size": self.body_size, "created": self.created,
                "key_id": self.key_id, "signed": bool(self.signature), "signature": self.signature.hex(),
                "size": self.size}


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def version_key(version: str) -> tuple[int, ...] | None:
    """Dotted decimal version as a comparable tuple ("1.2" == "1.2.0"); None if not of that form."""
    if not isinstance(version, str) or not _VERSION.match(version):
        return None
    numbers = [int(n) for n in version.split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def _is_hex(value: object, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and all(c in "0123456789abcdef" for c in value)


def _safe_path(path: object) -> bool:
    if not isinstance(path, str) or not 0 < len(path) <= 400:
        return False
    pieces = path.split("/")
    return all(_PATH_PART.match(p) and p not in (".", "..") for p in pieces) and "__pycache__" not in pieces


def part_of(path: str) -> str:
    return PART_LEGAL if path.split("/", 1)[0] == identification.LEGAL_DIR_NAME else PART_APPLICATION


# -- parsing ------------------------------------------------------------------------------------


def parse_firmware_image(raw: bytes) -> FirmwareImage:
    """The image's header and layout, checked field by field; FirmwareImageError otherwise (any
    bytes: the checks below are meant to cover every form, and a form they miss is still refused).
    Does not decompress the body or check the signature (see `image_files`, `verify_firmware_image`)."""
    try:
        return _parse(raw)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError) as exc:
        raise FirmwareImageError(f"header malformed ({type(exc).__name__})") from None


def _parse(raw: bytes) -> FirmwareImage:
    if not isinstance(raw, (bytes, bytearray)):
        raise FirmwareImageError("an image is bytes")
    raw = bytes(raw)
    if len(raw) > MAX_FIRMWARE_IMAGE_SIZE:
        raise FirmwareImageError(f"{len(raw)} bytes: larger than the {MAX_FIRMWARE_IMAGE_SIZE} bytes an image may have")
    if len(raw) < 5 or raw[:4] != MAGIC:
        raise FirmwareImageError("not a firmware image (no SMFW magic)")
    if raw[4] != FORMAT:
        raise FirmwareImageError(f"image format {raw[4]}; this meter reads format {FORMAT}")
    at = 5

    def take(n: int, what: str) -> bytes:
        nonlocal at
        if n > len(raw) - at:
            raise FirmwareImageError(f"truncated: the {what} runs past the end of the image")
        chunk = raw[at:at + n]
        at += n
        return chunk

    (header_length,) = struct.unpack(">I", take(4, "header length"))
    if header_length > MAX_HEADER_SIZE:
        raise FirmwareImageError("header too large")
    header_bytes = take(header_length, "header")
    (body_length,) = struct.unpack(">I", take(4, "body length"))
    body_offset = at
    take(body_length, "body")
    signed_length = at
    (signature_length,) = struct.unpack(">H", take(2, "signature length"))
    signature = take(signature_length, "signature")
    if at != len(raw):
        raise FirmwareImageError(f"{len(raw) - at} bytes after the signature")
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FirmwareImageError("header is not JSON") from None
    if not isinstance(header, dict) or set(header) != _HEADER_KEYS:
        raise FirmwareImageError("header does not have the fields of format 1")
    if header["format"] != FORMAT:
        raise FirmwareImageError("header format differs from the image's")
    identifier = header["identifier"]
    if not (isinstance(identifier, str) and 0 < len(identifier) <= MAX_IDENTIFIER and identifier.isascii()
            and identifier.isprintable()):
        raise FirmwareImageError(f"identifier must be 1..{MAX_IDENTIFIER} printable ASCII characters")
    types = header["meter_types"]
    if not (isinstance(types, list) and types and all(type(t) is int and t in METER_TYPES for t in types)):
        raise FirmwareImageError(f"meter_types must list some of {list(METER_TYPES)}")
    parts = []
    for entry in header["parts"] if isinstance(header["parts"], list) else [None]:
        if not (isinstance(entry, dict) and set(entry) == {"b", "name", "version", "digest"}
                and isinstance(entry["name"], str) and entry["name"] in PART_NUMBERS
                and type(entry["b"]) is int and entry["b"] == PART_NUMBERS[entry["name"]]
                and version_key(entry["version"]) is not None and _is_hex(entry["digest"], 64)):
            raise FirmwareImageError("a part must be {b, name: legal|application, version: dotted numbers, digest}")
        parts.append(FirmwarePart(entry["b"], entry["name"], entry["version"], entry["digest"]))
    if not parts or len({p.name for p in parts}) != len(parts):
        raise FirmwareImageError("an image holds the legal part, the application or both, each once")
    files, seen, total = [], set(), 0
    entries = header["files"]
    if not isinstance(entries, list) or len(entries) > MAX_FILES:
        raise FirmwareImageError(f"files must be a list of at most {MAX_FILES}")
    names = {p.name for p in parts}
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 3 and _safe_path(entry[0]) and type(entry[1]) is int
                and 0 <= entry[1] <= MAX_BODY_SIZE and _is_hex(entry[2], 64)):
            raise FirmwareImageError("a file entry must be [relative path, size, sha256]")
        if entry[0] in seen:
            raise FirmwareImageError(f"file {entry[0]} listed twice")
        if part_of(entry[0]) not in names:
            raise FirmwareImageError(f"file {entry[0]} belongs to a part the image does not declare")
        seen.add(entry[0])
        total += entry[1]
        files.append(FirmwareFile(*entry))
    if header["body_size"] != total or total > MAX_BODY_SIZE:
        raise FirmwareImageError("body_size is not the sum of the file sizes")
    if not isinstance(header["created"], str) or len(header["created"]) > 40:
        raise FirmwareImageError("created must be an ISO time")
    if not isinstance(header["key_id"], str) or len(header["key_id"]) > 64:
        raise FirmwareImageError("key_id must be text")
    return FirmwareImage(identifier, tuple(types), tuple(parts), tuple(files), total, header["created"],
                         header["key_id"], signature, len(raw), signed_length, body_offset, body_length)


def image_files(image: FirmwareImage, raw: bytes) -> dict[str, bytes]:
    """path -> content, each checked against its size and hash (D3); FirmwareImageError otherwise.
    Decompression is bounded by the header's body_size."""
    inflater = zlib.decompressobj()
    try:
        body = inflater.decompress(raw[image.body_offset:image.body_offset + image.body_length], image.body_size + 1)
        complete = inflater.eof and not inflater.unconsumed_tail and not inflater.unused_data
    except zlib.error:
        raise FirmwareImageError("integrity: the body does not decompress") from None
    if len(body) != image.body_size or not complete:
        raise FirmwareImageError("integrity: the body is not the size its header says")
    out, at = {}, 0
    for f in image.files:
        content = body[at:at + f.size]
        at += f.size
        if hashlib.sha256(content).hexdigest() != f.sha256:
            raise FirmwareImageError(f"integrity: {f.path} differs from its hash")
        out[f.path] = content
    return out


def _part_files(files: dict[str, bytes], part: str) -> tuple[tuple[str, str], ...]:
    """(path relative to the part's root, sha256) as identification computes a part's digest."""
    entries = []
    for path, content in files.items():
        if part_of(path) != part:
            continue
        if part == PART_LEGAL:
            path = path.split("/", 1)[1]
            if path == identification.MANIFEST_NAME:
                continue
        entries.append((path, hashlib.sha256(content).hexdigest()))
    entries.sort(key=lambda e: e[0].encode("utf-8"))
    return tuple(entries)


def _declared_version(files: dict[str, bytes], part: str) -> str | None:
    path, pattern = (("legal/identification.py", _LEGAL_VERSION) if part == PART_LEGAL
                     else ("__init__.py", _APP_VERSION))
    found = pattern.search(files.get(path, b""))
    return found.group(1).decode("utf-8", "replace") if found else None


# -- building and signing (the manufacturer's side: `smartmeter fw build` / `fw sign`) ------------


def _package_files(package_root: Path, parts: tuple[str, ...]) -> dict[str, bytes]:
    files = {}
    for path in sorted(Path(package_root).rglob("*")):
        relative = path.relative_to(package_root)
        if "__pycache__" in relative.parts or relative.suffix == ".pyc" or not path.is_file():
            continue
        name = relative.as_posix()
        if part_of(name) in parts:
            files[name] = path.read_bytes()
    return files


def build_firmware_image(package_root: Path, parts: tuple[str, ...] = (PART_LEGAL, PART_APPLICATION),
                         meter_types: tuple[int, ...] = METER_TYPES, identifier: str | None = None,
                         created: float | None = None) -> bytes:
    """An unsigned image of the chosen parts of the package at `package_root` (a `smartmeter`
    directory). The identifier defaults to one naming the parts and their versions."""
    parts = tuple(p for p in (PART_LEGAL, PART_APPLICATION) if p in parts)
    if not parts:
        raise FirmwareImageError("choose the parts: legal, application or both")
    files = _package_files(Path(package_root), parts)
    declared = []
    for part in parts:
        version = _declared_version(files, part)
        if version is None or version_key(version) is None:
            raise FirmwareImageError(f"the {part} part has no version of the form 1.2.3 in {package_root}")
        declared.append({"b": PART_NUMBERS[part], "name": part, "version": version,
                         "digest": identification.manifest_digest(_part_files(files, part))})
    if identifier is None:
        identifier = "SM-" + "-".join(f"{'L' if p['name'] == PART_LEGAL else 'A'}{p['version']}" for p in declared)
    body = b"".join(files.values())
    header = {
        "format": FORMAT, "identifier": identifier, "meter_types": sorted(set(meter_types)), "parts": declared,
        "files": [[name, len(content), hashlib.sha256(content).hexdigest()] for name, content in files.items()],
        "body_size": len(body), "key_id": "",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created if created is not None else time.time())),
    }
    raw = _assemble(header, zlib.compress(body, 9), b"")
    parse_firmware_image(raw)  # what we write, we can read (identifier, types and sizes within bounds)
    return raw


def _assemble(header: dict, body: bytes, signature: bytes) -> bytes:
    head = _canonical(header)
    return (MAGIC + bytes([FORMAT]) + struct.pack(">I", len(head)) + head + struct.pack(">I", len(body)) + body
            + struct.pack(">H", len(signature)) + signature)


def _load_private_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise FirmwareImageError(f"not a usable PEM private key ({type(exc).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise FirmwareImageError("images are signed with an ECDSA P-256 key")
    return key


def sign_firmware_image(raw: bytes, private_key_pem: bytes) -> bytes:
    """The image signed with the key (a signed image is signed again: the old signature goes)."""
    image = parse_firmware_image(raw)
    key = _load_private_key(private_key_pem)
    header = json.loads(raw[9:9 + struct.unpack(">I", raw[5:9])[0]].decode("utf-8"))
    header["key_id"] = identification.key_id(key.public_key())
    body = raw[image.body_offset:image.body_offset + image.body_length]
    unsigned = _assemble(header, body, b"")[:-2]
    return _assemble(header, body, key.sign(unsigned, ec.ECDSA(hashes.SHA256())))


def _load_public_key(pem: bytes) -> ec.EllipticCurvePublicKey | None:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1" else None


def public_key_of(private_or_public_pem: bytes) -> bytes:
    """The PEM public key of a PEM private or public key (for `fw inspect --key`)."""
    key = _load_public_key(private_or_public_pem)
    if key is None:
        key = _load_private_key(private_or_public_pem).public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def firmware_signature_valid(raw: bytes, public_key_pem: bytes) -> bool:
    """Does the image's signature verify with this P-256 public key? Never raises."""
    try:
        image = parse_firmware_image(raw)
    except FirmwareImageError:
        return False
    key = _load_public_key(public_key_pem)
    if key is None or not image.signature:
        return False
    try:
        key.verify(image.signature, bytes(raw[:image.signed_length]), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


# -- verification on the meter ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunningPart:
    version: str
    digest: str


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str  # "" when ok; else one line for the logs and the head-end
    image: FirmwareImage | None
    sha256: str  # of the whole image: what activation checks it still has


def verify_firmware_image(raw: bytes, *, key_pem: bytes | None, identifier: bytes, size: int, meter_type: int,
                          running: dict[str, RunningPart], anchored_keys: dict,
                          running_is_release: bool = True) -> Verdict:
    """Every check before an image may be activated. Never raises: a refusal is a Verdict."""
    sha = hashlib.sha256(raw).hexdigest()
    try:
        return _verify(raw, sha, key_pem, identifier, size, meter_type, running, anchored_keys, running_is_release)
    except Exception as exc:  # noqa: BLE001 - a check that trips on hostile bytes is a refusal, never a crash
        return Verdict(False, f"format: {type(exc).__name__}", None, sha)


def _verify(raw: bytes, sha: str, key_pem: bytes | None, identifier: bytes, size: int, meter_type: int,
            running: dict[str, RunningPart], anchored_keys: dict, running_is_release: bool) -> Verdict:

    def refuse(reason: str, image: FirmwareImage | None = None) -> Verdict:
        return Verdict(False, reason, image, sha)

    if len(raw) != size:
        return refuse(f"size: {len(raw)} bytes received, {size} initiated")
    try:
        image = parse_firmware_image(raw)
    except FirmwareImageError as exc:
        return refuse(f"format: {exc}")
    if key_pem is None:
        return refuse("no firmware verification key has been imported into this meter", image)
    if not image.signature:
        return refuse("not signed", image)
    if not firmware_signature_valid(raw, key_pem):
        return refuse("signature: does not verify with this meter's firmware key", image)
    if image.identifier.encode("ascii") != identifier:
        return refuse(f"identifier: the image is {image.identifier!r}, the transfer was initiated for "
                      f"{identifier.decode('latin-1')!r}", image)
    if meter_type not in image.meter_types:
        return refuse(f"meter type: the image is for types {list(image.meter_types)}, this meter is {meter_type}", image)
    try:
        files = image_files(image, raw)
    except FirmwareImageError as exc:
        return refuse(str(exc), image)
    for part in image.parts:
        if identification.manifest_digest(_part_files(files, part.name)) != part.digest:
            return refuse(f"integrity: the {part.name} part's files do not have the digest the header declares", image)
        declared = _declared_version(files, part.name)
        if declared != part.version:
            return refuse(f"version: the {part.name} part says {declared!r} in its code, its header {part.version!r}",
                          image)
        if part.name == PART_LEGAL:
            manifest = files.get(f"{identification.LEGAL_DIR_NAME}/{identification.MANIFEST_NAME}")
            if manifest is None:
                return refuse("approval: the legal part has no release manifest", image)
            reason, expected, development = identification.verify_manifest(manifest, anchored_keys)
            if reason is not identification.IntegrityReason.OK or expected is None:
                return refuse(f"approval: the legal part's release manifest: {reason.value}", image)
            if development and running_is_release:
                return refuse("approval: the legal part is signed by a development key; this meter runs a "
                              "release, which only a release replaces", image)
            if expected.digest_hex != part.digest or expected.version != part.version:
                return refuse("approval: the legal part differs from its signed release manifest", image)
        else:
            for needed in ("__init__.py", "__main__.py", "cli/main.py", "meter/runtime.py"):
                if needed not in files:
                    return refuse(f"completeness: the application part lacks {needed}", image)
        now = running.get(part.name)
        if now is not None:
            new_key, old_key = version_key(part.version), version_key(now.version)
            if old_key is not None and new_key < old_key:
                return refuse(f"downgrade: the {part.name} part {part.version} is older than the running "
                              f"{now.version}", image)
            if new_key == old_key and part.digest != now.digest:
                return refuse(f"version: the {part.name} part {part.version} is the running version but other "
                              "software (a change needs a new version)", image)
    return Verdict(True, "", image, sha)


# -- installation beside the running software -----------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, data, mode)


def install_firmware_image(image: FirmwareImage, raw: bytes, running_package: Path, data_dir: Path,
                           slot_name: str) -> Path:
    """A complete `smartmeter` package in DATA_DIR/firmware/slots/<slot_name>/smartmeter: the
    image's parts, and the running package's files for the parts the image does not carry.
    Written to a staging directory, synced, then renamed: a slot either exists whole or not at all."""
    files = image_files(image, raw)
    carried = {p.name for p in image.parts}
    for name, content in _package_files(running_package, tuple({PART_LEGAL, PART_APPLICATION} - carried)).items():
        files[name] = content
    slots = Path(data_dir) / SLOTS_DIR
    slots.mkdir(parents=True, exist_ok=True)
    final = slots / slot_name
    staging = slots / f".{slot_name}.staging"
    for stale in (staging, final):
        if stale.exists():
            shutil.rmtree(stale)
    package = staging / "smartmeter"
    directories = set()
    for name, content in files.items():
        target = package / name
        target.parent.mkdir(parents=True, exist_ok=True)
        directories.add(target.parent)
        with open(target, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
    for directory in sorted(directories, key=lambda p: len(p.parts), reverse=True):
        _fsync_dir(directory)
    os.replace(staging, final)
    _fsync_dir(slots)
    return final


# -- the boot record: which installed software the meter starts ------------------------------------


def read_boot_record(data_dir: Path) -> dict:
    """{"active": slot name or None (the factory installation), "previous": ..., "trial": None or
    {"slot", "attempts", "legal_digest", "application_digest", "identifier"}, "probation": None or
    {"slot", "starts"} (the active slot has not confirmed yet), "last": None or {"slot", "outcome":
    "activated"|"failed", "reason", "identifier"}}. A missing or unreadable record is the factory
    state (the meter then starts its factory installation)."""
    record = {"active": None, "previous": None, "trial": None, "probation": None, "last": None}
    try:
        loaded = json.loads((Path(data_dir) / BOOT_RECORD).read_bytes())
    except (OSError, ValueError):
        return record
    if isinstance(loaded, dict):
        record.update({k: loaded.get(k) for k in record})
    return record


def write_boot_record(data_dir: Path, record: dict) -> None:
    write_file_atomically(Path(data_dir) / BOOT_RECORD, json.dumps(record, sort_keys=True, indent=1).encode())
