"""Software identification of the legally relevant part (WELMEC 7.2 P2/U2, S1, I3-6).

The software ID has two parts (WELMEC 7.2 P2, acceptable solution for risk class C):

* Part A, the **digest**: SHA-256 over a sorted manifest of every file of `smartmeter/legal/`.
  Each manifest line is ``"<sha256 of the file contents>  <path relative to legal/>\\n"``,
  the format of ``sha256sum``; lines are sorted by the UTF-8 bytes of the path. Anyone can
  recompute it without this code::

      cd src/smartmeter/legal && find . -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \\
          ! -name release_manifest.json | sed 's|^\\./||' | LC_ALL=C sort | xargs sha256sum | sha256sum

  Any change to any file of legal/ (code, the type-specific constants in parameters.py,
  the anchored release key below) changes Part A.
* Part B, the **version**: `LEGAL_VERSION`, a constant in this file (so itself covered by
  Part A). It marks releases; it is not what proves identity.

COSEM: 1-0:0.2.0.255 (active firmware identifier) carries the version, 1-0:0.2.8.255 (active
firmware signature) the 32-byte digest. The application part (everything of `smartmeter/`
outside legal/) is identified the same way as 1-1:0.2.0.255 / 1-1:0.2.8.255.

Signed release manifest. `release_manifest.json` (next to this file) records the version,
digest and per-file hashes of the release, signed with ECDSA P-256/SHA-256 by a release key.
The manifest cannot be part of the digest it records (its contents depend on that digest),
so it is the one file of legal/ the digest excludes. That is safe: the manifest is only
evidence *about* legal/, never executed; tampering with it either breaks its signature or
makes it disagree with the files, and both are reported by `check_software`.

Key anchoring. The public keys that may sign a release are in `release_keys.py` (legal/), so
they are inside the digest: whoever swaps the trusted key to sign modified software also
changes the software ID that the display and 1-0:0.2.8.255 show and that the type
examination certificate names. There is no chicken-and-egg problem: the key is fixed before
the release is built; only the manifest (which holds the signature) is excluded.

Development and release keys. No private key lives in the repository. `RELEASE_KEYS` are
offline keys supplied from outside (``scripts/sign_release.py --key release.pem``);
`DEVELOPMENT_KEYS` are generated locally by ``scripts/sign_release.py`` (private half under
~/.config/smartmeter/) and anchored in release_keys.py when a developer first re-signs. A
manifest signed with a development key verifies, but `IntegrityResult.development_key` is
True and the identifier (1-0:0.2.0.255, `smartmeter id`) carries the suffix "-DEV".

What runs is what is hashed. The legal process does not load legal/ through the ordinary
import system (which would execute whatever `__pycache__/*.pyc` it finds): legal/loader.py
compiles each module from the source bytes it has just hashed and records those hashes in
`LOADED_SOURCES`; `check_software` compares them with the signed manifest as well. A
`.pyc` of legal/ is therefore never executed by the legal process, and it is not part of
the identified software.

This module imports only the standard library and `cryptography` (legal/ imports nothing
else of smartmeter); computing a digest over the files of the application part is fine.
"""
from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

# Part B of the software ID of the legally relevant part. Raise it for every release.
LEGAL_VERSION = "1.0.0"

MANIFEST_NAME = "release_manifest.json"
MANIFEST_FORMAT = 1
MANIFEST_MAX_BYTES = 1 << 20  # a manifest of a few dozen files is a few kB; refuse anything huge
LEGAL_PACKAGE_DIR = Path(__file__).resolve().parent
LEGAL_DIR_NAME = "legal"

# What legal/loader.py compiled in this process: relative path -> SHA-256 hex of the source
# bytes it compiled. Empty when legal/ was imported the ordinary way (tests, the CLI).
LOADED_SOURCES: dict[str, str] = {}

DEVELOPMENT_SUFFIX = "-DEV"


def marked_version(version: str, development_key: bool) -> str:
    """The identifier as shown (1-0:0.2.0.255, display, `smartmeter id`): the version, with
    "-DEV" when the release manifest is signed by a development key."""
    return version + DEVELOPMENT_SUFFIX if development_key else version


class IdentificationError(Exception):
    """A software ID could not be computed (e.g. the legal/ directory is unreadable)."""


@dataclass(frozen=True, slots=True)
class SoftwareId:
    """Identification of one software part: version (Part B) and manifest digest (Part A)."""

    version: str
    digest_hex: str
    files: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # (relative path, sha256 hex)

    @property
    def digest(self) -> bytes:
        """The 32-byte digest: the value of the 'active firmware signature' object."""
        return bytes.fromhex(self.digest_hex)

    @property
    def identifier(self) -> bytes:
        """The value of the 'active firmware identifier' object (ASCII version)."""
        return self.version.encode("ascii")

    @property
    def display_text(self) -> str:
        """Short form for the display and the logs: version and the first 8 hex digits."""
        return f"{self.version} {self.digest_hex[:8]}"


class IntegrityReason(enum.Enum):
    OK = "ok"
    MANIFEST_MISSING = "manifest missing"
    MANIFEST_MALFORMED = "manifest malformed"
    UNKNOWN_KEY = "manifest signed with a key that is not anchored"
    BAD_SIGNATURE = "manifest signature invalid"
    VERSION_MISMATCH = "version differs from the signed manifest"
    DIGEST_MISMATCH = "legally relevant files differ from the signed manifest"
    UNREADABLE = "legally relevant files could not be read"
    LOADED_CODE_MISMATCH = "code the legal process compiled differs from the signed manifest"


@dataclass(frozen=True, slots=True)
class IntegrityResult:
    """Outcome of `check_software`. On `ok=False` the meter stops energy registration, sets
    the fatal error register, logs and shows the failure (wired by the protective interface)."""

    ok: bool
    expected: SoftwareId | None  # from the signed manifest; None when it could not be trusted
    actual: SoftwareId | None  # computed from the files; None when they could not be read
    reason: IntegrityReason
    changed_files: tuple[str, ...] = ()  # added, removed or modified relative paths
    development_key: bool = False  # signed with a development key (never in a release)

    @property
    def identifier(self) -> str:
        """Version as shown, marked "-DEV" when signed with a development key."""
        software = self.actual or self.expected
        return marked_version(software.version if software else LEGAL_VERSION, self.development_key)


# -- digests ----------------------------------------------------------------------------------


def _excluded(relative: Path) -> bool:
    return "__pycache__" in relative.parts or relative.suffix == ".pyc"


def _file_hashes(root: Path, skip: "set[Path] | None" = None) -> tuple[tuple[str, str], ...]:
    """(relative POSIX path, SHA-256 hex) of every regular file under root, sorted by path bytes."""
    skip = skip or set()
    entries: list[tuple[str, str]] = []
    try:
        for path in root.rglob("*"):
            relative = path.relative_to(root)
            if relative in skip or _excluded(relative) or not path.is_file():
                continue
            entries.append((relative.as_posix(), hashlib.sha256(path.read_bytes()).hexdigest()))
    except OSError as exc:
        raise IdentificationError(f"cannot read {root}: {exc}") from exc
    entries.sort(key=lambda e: e[0].encode("utf-8"))
    return tuple(entries)


def manifest_digest(files: tuple[tuple[str, str], ...]) -> str:
    """SHA-256 over the sha256sum-style lines of a sorted file list."""
    h = hashlib.sha256()
    for relative, file_hash in files:
        h.update(f"{file_hash}  {relative}\n".encode("utf-8"))
    return h.hexdigest()


def compute_software_id(root: Path | None = None) -> SoftwareId:
    """Software ID of the legally relevant part: `LEGAL_VERSION` + digest over legal/'s files
    (all of them except `__pycache__`, `*.pyc` and the release manifest itself)."""
    root = Path(root) if root is not None else LEGAL_PACKAGE_DIR
    files = _file_hashes(root, {Path(MANIFEST_NAME)})
    return SoftwareId(LEGAL_VERSION, manifest_digest(files), files)


def compute_application_id(package_root: Path | None = None, version: str = "") -> SoftwareId:
    """Software ID of the application part: the same digest over every file of the
    `smartmeter` package outside legal/ (COSEM 1-1:0.2.0.255 / 1-1:0.2.8.255).

    legal/ does not import the application; `version` is whatever the caller reports for
    it (the package version)."""
    package_root = Path(package_root) if package_root is not None else LEGAL_PACKAGE_DIR.parent
    files = tuple(
        (relative, file_hash)
        for relative, file_hash in _file_hashes(package_root)
        if relative.split("/", 1)[0] != LEGAL_DIR_NAME
    )
    return SoftwareId(version, manifest_digest(files), files)


# -- the signed release manifest --------------------------------------------------------------


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def _signed_payload(body: Mapping[str, object]) -> bytes:
    """Canonical bytes the signature covers: the manifest without its signature, as compact
    JSON with sorted keys (one encoding, so signer and verifier agree byte for byte)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def build_signed_manifest(software_id: SoftwareId, private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """The release manifest for `software_id`, signed with `private_key` (used by
    scripts/sign_release.py; kept here so that signing and checking share one format)."""
    if not isinstance(private_key.curve, ec.SECP256R1):
        raise IdentificationError("release keys are ECDSA P-256")
    body = {
        "format": MANIFEST_FORMAT,
        "part": "smartmeter.legal",
        "version": software_id.version,
        "digest": software_id.digest_hex,
        "files": [[relative, file_hash] for relative, file_hash in software_id.files],
        "key_id": key_id(private_key.public_key()),
    }
    signature = private_key.sign(_signed_payload(body), ec.ECDSA(hashes.SHA256()))
    manifest = dict(body, signature=signature.hex())
    # Layout for people reading diffs (one file per line); only the parsed values are signed.
    lines = []
    for key in sorted(manifest):
        if key == "files":
            entries = ",\n".join(f"  {json.dumps(entry)}" for entry in manifest["files"])
            lines.append(f' "files": [\n{entries}\n ]' if entries else ' "files": []')
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(manifest[key])}")
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode("ascii")


def anchored_keys(keys_module=None) -> dict[str, tuple[ec.EllipticCurvePublicKey, bool]]:
    """key id -> (public key, is a development key) of every key anchored in release_keys.py."""
    if keys_module is None:
        from smartmeter.legal import release_keys as keys_module
    pems = [(pem, False) for pem in keys_module.RELEASE_KEYS.values()]
    pems += [(pem, True) for pem, _ in keys_module.DEVELOPMENT_KEYS.values()]
    keys = {}
    for pem, development in pems:
        public_key = serialization.load_pem_public_key(pem)
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise IdentificationError("an anchored release key is not an EC key")
        keys[key_id(public_key)] = (public_key, development)
    return keys


def _keys_of_tree(root: Path) -> dict[str, tuple[ec.EllipticCurvePublicKey, bool]]:
    """The anchors of the legal/ tree being checked: its own release_keys.py (read as data, so
    checking a copy of legal/ uses that copy's keys, never the running ones by accident)."""
    import ast

    try:
        tree = ast.parse((root / "release_keys.py").read_bytes())
        values = {}
        for node in tree.body:
            target = node.target if isinstance(node, ast.AnnAssign) else (
                node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
            if isinstance(target, ast.Name) and target.id in ("RELEASE_KEYS", "DEVELOPMENT_KEYS"):
                values[target.id] = ast.literal_eval(node.value)
        module = type("Keys", (), {"RELEASE_KEYS": values["RELEASE_KEYS"], "DEVELOPMENT_KEYS": values["DEVELOPMENT_KEYS"]})
        return anchored_keys(module)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError, IdentificationError):
        return {}


def _is_hex(value: object, length: int | None = None) -> bool:
    if not isinstance(value, str) or (length is not None and len(value) != length):
        return False
    return all(c in "0123456789abcdef" for c in value)


def _parse_manifest(raw: bytes) -> tuple[dict, SoftwareId] | None:
    """The manifest's fields, or None if it is not a well-formed format-1 manifest."""
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return None
    if set(manifest) != {"format", "part", "version", "digest", "files", "key_id", "signature"}:
        return None
    version, digest, files = manifest["version"], manifest["digest"], manifest["files"]
    if not isinstance(version, str) or not _is_hex(digest, 64) or not _is_hex(manifest["signature"]):
        return None
    if not isinstance(manifest["key_id"], str) or not isinstance(files, list):
        return None
    entries = []
    for entry in files:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and _is_hex(entry[1], 64)):
            return None
        entries.append((entry[0], entry[1]))
    return manifest, SoftwareId(version, digest, tuple(entries))


def _changed_files(expected: SoftwareId, actual: SoftwareId) -> tuple[str, ...]:
    want, have = dict(expected.files), dict(actual.files)
    return tuple(sorted(p for p in want.keys() | have.keys() if want.get(p) != have.get(p)))


def verify_manifest(raw: bytes, keys: "dict | None" = None) -> tuple[IntegrityReason, SoftwareId | None, bool]:
    """Check a manifest's form and signature against the anchored keys (default: this
    package's release_keys.py).
    -> (OK or the reason it is refused, the SoftwareId it vouches for, development key?)."""
    if len(raw) > MANIFEST_MAX_BYTES:
        return IntegrityReason.MANIFEST_MALFORMED, None, False
    parsed = _parse_manifest(raw)
    if parsed is None:
        return IntegrityReason.MANIFEST_MALFORMED, None, False
    manifest, expected = parsed
    anchored = (anchored_keys() if keys is None else keys).get(manifest["key_id"])
    if anchored is None:
        return IntegrityReason.UNKNOWN_KEY, None, False
    public_key, development = anchored
    body = {k: v for k, v in manifest.items() if k != "signature"}
    try:
        public_key.verify(bytes.fromhex(manifest["signature"]), _signed_payload(body), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return IntegrityReason.BAD_SIGNATURE, None, development
    # The digest must be the one of the listed files, or the file list could lie.
    if manifest_digest(expected.files) != expected.digest_hex:
        return IntegrityReason.MANIFEST_MALFORMED, None, development
    return IntegrityReason.OK, expected, development


def check_software(root: Path | None = None) -> IntegrityResult:
    """Compare legal/'s files with its signed release manifest. Never raises: every failure
    (missing, malformed or badly signed manifest, unreadable or changed files) is a result."""
    root = Path(root) if root is not None else LEGAL_PACKAGE_DIR
    try:
        actual: SoftwareId | None = compute_software_id(root)
    except IdentificationError:
        actual = None
    try:
        with open(root / MANIFEST_NAME, "rb") as f:
            raw = f.read(MANIFEST_MAX_BYTES + 1)
    except OSError:
        return IntegrityResult(False, None, actual, IntegrityReason.MANIFEST_MISSING)
    reason, expected, development = verify_manifest(raw, _keys_of_tree(root))
    if reason is not IntegrityReason.OK or expected is None:
        return IntegrityResult(False, None, actual, reason, development_key=development)
    if actual is None:
        return IntegrityResult(False, expected, None, IntegrityReason.UNREADABLE, development_key=development)
    if actual.digest_hex != expected.digest_hex:
        return IntegrityResult(
            False, expected, actual, IntegrityReason.DIGEST_MISMATCH, _changed_files(expected, actual), development
        )
    if actual.version != expected.version:  # cannot happen with an equal digest; kept as a guard
        return IntegrityResult(False, expected, actual, IntegrityReason.VERSION_MISMATCH, (), development)
    if root.resolve() == LEGAL_PACKAGE_DIR and LOADED_SOURCES:
        # the files on disk match; so must the bytes this process compiled (no swap in between)
        want = dict(expected.files)
        differing = tuple(sorted(p for p, h in LOADED_SOURCES.items() if want.get(p) != h))
        if differing:
            return IntegrityResult(False, expected, actual, IntegrityReason.LOADED_CODE_MISMATCH, differing, development)
    return IntegrityResult(True, expected, actual, IntegrityReason.OK, (), development)
