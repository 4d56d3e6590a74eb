"""The meter's own signing key: ECDSA P-256 with SHA-256, for checkpoints of the audit trail.

Where the key lives, and why. The private key is a PEM file (PKCS#8, mode 0600) BESIDE the
SQLite store, never inside it, and it never appears in a log line, a repr or an exception.
The store holds only data and signatures; the public half is exported next to the key
(`meter-signing-key.pub.pem`) so that a verifier needs nothing secret. Someone who can edit
the store (a copy of it, a backup, a read-out, or an account that may write the database but
not read the key file) can change rows and recompute the SHA-256 links, but cannot produce
a new checkpoint signature without the key file, so the change shows. Keeping the key in the
store would make the store self-certifying: whoever edits it could re-sign it.

What this does NOT give (WELMEC 7.2 L5, class D): on a general-purpose computer, someone
who can read the key file (root, or the meter's own account) can re-sign anything. The real
protection of the key is the file system's (a root-only directory, a sealed housing) or,
better, a secure element / TPM that signs without ever exposing the key. `MeterSigner` has
the small surface (sign, public key) that such hardware offers, so it can be swapped in.
The public key must reach the verifier by direct trust (its fingerprint shown on the display,
read over a legally controlled interface, recorded at verification): a verifier that trusts
whatever `.pub.pem` lies beside a store can be fooled by an attacker who replaces both the
key pair and every signature.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

PRIVATE_KEY_FILE = "meter-signing-key.pem"
PUBLIC_KEY_FILE = "meter-signing-key.pub.pem"


class SigningKeyError(Exception):
    """The signing key file exists but cannot be used (unreadable, not a P-256 private key)."""


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` so that a power failure leaves either the old file or the new
    one: temporary file in the same directory, fsync, rename, fsync of the directory."""
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)  # before any byte of the key is written
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def public_key_fingerprint(public_key_pem: bytes) -> str:
    """SHA-256 over the DER SubjectPublicKeyInfo, hex: what a display or a certificate of
    verification shows, so that a verifier can establish the public key by direct trust."""
    key = serialization.load_pem_public_key(public_key_pem)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


class MeterSigner:
    """The meter's ECDSA P-256 key. Signatures are DER-encoded ECDSA over SHA-256, the form
    `openssl dgst -sha256 -sign/-verify` uses."""

    __slots__ = ("_private_key", "_public_pem")

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or private_key.curve.name != "secp256r1":
            raise SigningKeyError("the meter signing key must be an ECDSA P-256 private key")
        self._private_key = private_key
        self._public_pem = private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def generate(cls) -> "MeterSigner":
        """A fresh key held only in memory (tests, or a caller that stores it elsewhere)."""
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def load_or_create(cls, key_dir: Path) -> "MeterSigner":
        """Load `key_dir/meter-signing-key.pem`, creating it (0600, atomically) on first start,
        and (re)write the exported public key `key_dir/meter-signing-key.pub.pem` if it is
        missing or does not match the private key."""
        key_dir = Path(key_dir)
        key_dir.mkdir(parents=True, exist_ok=True)
        private_path = key_dir / PRIVATE_KEY_FILE
        if private_path.exists():
            try:
                key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
            except (ValueError, TypeError, OSError) as exc:
                # Deliberately no detail from the file's content in the message.
                raise SigningKeyError(f"{private_path} is not a usable private key ({type(exc).__name__})") from None
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise SigningKeyError(f"{private_path} is not an EC private key")
            signer = cls(key)
            if private_path.stat().st_mode & 0o077:
                os.chmod(private_path, 0o600)
        else:
            signer = cls.generate()
            pem = signer._private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            _write_atomically(private_path, pem, 0o600)
        public_path = key_dir / PUBLIC_KEY_FILE
        try:
            current = public_path.read_bytes()
        except OSError:
            current = None
        if current != signer._public_pem:
            _write_atomically(public_path, signer._public_pem, 0o644)
        return signer

    def public_key_pem(self) -> bytes:
        return self._public_pem

    def fingerprint(self) -> str:
        return public_key_fingerprint(self._public_pem)

    def sign(self, data: bytes) -> bytes:
        return self._private_key.sign(bytes(data), ec.ECDSA(hashes.SHA256()))

    def __repr__(self) -> str:  # never the key, only what identifies it publicly
        return f"MeterSigner(fingerprint={self.fingerprint()[:16]}…)"

    def __reduce__(self):  # no pickling of the private key into caches, queues or core files
        raise TypeError("MeterSigner cannot be pickled")


@lru_cache(maxsize=64)
def load_public_key(public_key_pem: bytes) -> ec.EllipticCurvePublicKey | None:
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        return None
    return key


@lru_cache(maxsize=4096)
def verify(public_key_pem: bytes, data: bytes, signature: bytes) -> bool:
    """True if `signature` is a valid DER ECDSA P-256/SHA-256 signature of `data` under the
    PEM public key. Never raises: a malformed key or signature is simply not valid.
    (Cached: a pure function of its arguments, and verifiers check the same checkpoints often.)"""
    if not isinstance(public_key_pem, bytes) or not isinstance(data, bytes) or not isinstance(signature, bytes):
        return False
    key = load_public_key(public_key_pem)
    if key is None:
        return False
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
