#!/usr/bin/env python3
"""Write the signed release manifest of the legally relevant part (smartmeter/legal/).

    .venv/bin/python scripts/sign_release.py                # dev: sign the working tree with the DEV key
    .venv/bin/python scripts/sign_release.py --git-ref HEAD # sign what is committed (then commit the manifest)
    .venv/bin/python scripts/sign_release.py --check        # exit 1 unless the manifest matches legal/
    .venv/bin/python scripts/sign_release.py --key offline-release-key.pem   # a real release

Whoever edits a file of src/smartmeter/legal/ must re-sign: tests/legal/test_identification.py
checks that the committed manifest matches the committed tree, and the meter refuses to
register energy when it does not.

The manifest is written to src/smartmeter/legal/release_manifest.json. It records the
version and digest computed by smartmeter.legal.identification and is signed with ECDSA
P-256. Only keys anchored in identification.RELEASE_PUBLIC_KEYS are accepted, so the script
refuses to produce a manifest the meter would reject.
"""
from __future__ import annotations

import argparse
import getpass
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smartmeter.legal import identification as ident

REPO = Path(__file__).resolve().parent.parent
LEGAL_IN_REPO = "src/smartmeter/legal"

# DEVELOPMENT KEY -- NOT SECRET, NOT FOR RELEASES. It is committed so that a developer who
# edits legal/ can re-sign from a fresh clone. Its public half is anchored in
# identification.RELEASE_PUBLIC_KEYS marked as a development key; manifests it signs verify
# with IntegrityResult.development_key = True. A certified release anchors an offline key
# instead and signs with --key.
DEVELOPMENT_PRIVATE_KEY_PEM = b"""-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgWovm69ZUei9K5uwP
6F8xNvIRi7N/FUoyk734T9FKK7yhRANCAAQXiXF3ltdJAqDxnTaS1oyhk0JzZ8bo
cS008LYM4DMzlZzdCdOvnbVjpXn7W53pOJixE/52AByCDP4l8/dgEjxh
-----END PRIVATE KEY-----
"""


def development_key() -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(DEVELOPMENT_PRIVATE_KEY_PEM, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    pem = path.read_bytes()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:  # encrypted: ask for the pass phrase
        key = serialization.load_pem_private_key(pem, password=getpass.getpass("release key pass phrase: ").encode())
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SystemExit(f"{path}: not an ECDSA P-256 private key")
    return key


def legal_tree_at(ref: str, into: Path) -> Path:
    """Extract legal/ as committed at `ref` into a temporary directory (uncommitted edits,
    untracked files and other people's work in progress are then not signed)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref, LEGAL_IN_REPO],
        check=True, capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / LEGAL_IN_REPO


def sign(legal_root: Path, key: ec.EllipticCurvePrivateKey, out: Path) -> ident.SoftwareId:
    anchored = {ident.key_id(ec_key): dev for ec_key, dev in _anchored_public_keys()}
    kid = ident.key_id(key.public_key())
    if kid not in anchored:
        raise SystemExit(f"key {kid} is not anchored in identification.RELEASE_PUBLIC_KEYS; the meter would refuse it")
    software_id = ident.compute_software_id(legal_root)
    out.write_bytes(ident.build_signed_manifest(software_id, key))
    if anchored[kid]:
        print("signed with the DEVELOPMENT key (not for certified releases)", file=sys.stderr)
    return software_id


def _anchored_public_keys():
    for pem, development in ident.RELEASE_PUBLIC_KEYS.values():
        yield serialization.load_pem_public_key(pem), development


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--key", type=Path, help="PEM ECDSA P-256 release key (default: the development key)")
    parser.add_argument("--git-ref", help="sign legal/ as committed at this git revision instead of the working tree")
    parser.add_argument("--legal-dir", type=Path, default=REPO / LEGAL_IN_REPO, help="legal/ directory to sign or check")
    parser.add_argument("--check", action="store_true", help="only check that the manifest matches legal/")
    args = parser.parse_args(argv)
    manifest_path = args.legal_dir / ident.MANIFEST_NAME

    if args.check:
        result = ident.check_software(args.legal_dir)
        if result.ok:
            dev = " (development key)" if result.development_key else ""
            print(f"ok: {result.actual.display_text}{dev}")
            return 0
        print(f"MISMATCH: {result.reason.value}" + (f": {', '.join(result.changed_files)}" if result.changed_files else ""))
        print("re-sign with: .venv/bin/python scripts/sign_release.py")
        return 1

    key = load_key(args.key) if args.key else development_key()
    if args.git_ref:
        with tempfile.TemporaryDirectory() as tmp:
            software_id = sign(legal_tree_at(args.git_ref, Path(tmp)), key, manifest_path)
    else:
        software_id = sign(args.legal_dir, key, manifest_path)
    print(f"{manifest_path.relative_to(REPO) if manifest_path.is_relative_to(REPO) else manifest_path}: "
          f"{software_id.version} sha256:{software_id.digest_hex} ({len(software_id.files)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
