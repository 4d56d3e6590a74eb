"""Shared test data for the security tests: the public DLMS vectors and our suite 1/2
fixtures (copies inside the repository), plus small openssl helpers."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

VECTORS_DIR = Path(__file__).resolve().parents[2] / "vectors"
PUBLIC = json.loads((VECTORS_DIR / "dlms-vectors.json").read_text())
SUITE_FIXTURES = {
    suite: json.loads((VECTORS_DIR / "suite1" / f"suite{suite}_vectors.json").read_text()) for suite in (1, 2)
}

KEYS = PUBLIC["keys"]
EK = bytes.fromhex(KEYS["EK_global_unicast"])
AK = bytes.fromhex(KEYS["AK_authentication"])
SERVER_TITLE = bytes.fromhex(KEYS["server_system_title"])
CLIENT_TITLE = bytes.fromhex(KEYS["client_system_title"])
SERVER_IC = int(KEYS["server_invocation_counter"], 16)
CLIENT_IC = int(KEYS["client_invocation_counter"], 16)

OPENSSL = shutil.which("openssl")
CURVES = {1: ec.SECP256R1, 2: ec.SECP384R1}


def h(s: str) -> bytes:
    return bytes.fromhex(s)


def private_key(suite: int, hex_scalar: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int(hex_scalar, 16), CURVES[suite]())


def openssl(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    assert OPENSSL, "the openssl command line is required for these cross-checks"
    return subprocess.run([OPENSSL, *args], input=data, capture_output=True, check=False)


def write_pem_private(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def write_pem_public(path: Path, key: ec.EllipticCurvePublicKey) -> Path:
    path.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def der_from_raw(signature: bytes) -> bytes:
    """r || s to DER, written out by hand so the openssl check does not reuse our converter."""
    half = len(signature) // 2

    def integer(b: bytes) -> bytes:
        b = b.lstrip(b"\x00") or b"\x00"
        if b[0] & 0x80:
            b = b"\x00" + b
        return b"\x02" + bytes((len(b),)) + b

    body = integer(signature[:half]) + integer(signature[half:])
    length = bytes((len(body),)) if len(body) < 0x80 else b"\x81" + bytes((len(body),))
    return b"\x30" + length + body
