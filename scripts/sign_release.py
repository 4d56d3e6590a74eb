#!/usr/bin/env python3
"""Write the signed release manifest of the legally relevant part (smartmeter/legal/).

    .venv/bin/python scripts/sign_release.py                # dev: sign the working tree with YOUR development key
    .venv/bin/python scripts/sign_release.py --git-ref HEAD # sign what is committed (then commit the manifest)
    .venv/bin/python scripts/sign_release.py --check        # exit 1 unless the manifest matches legal/
    .venv/bin/python scripts/sign_release.py --key offline-release-key.pem   # a release (key from outside)
    .venv/bin/python scripts/sign_release.py --add-release-key release.pub.pem  # anchor a release key

Whoever edits a file of src/smartmeter/legal/ must re-sign: tests/legal/test_identification.py
checks that the committed manifest matches the committed tree, and the meter refuses to
register energy when it does not. Commit release_manifest.json (and release_keys.py when
the script anchored your key) with your change.

No private key lives in the repository. Without --key, the script signs with your local
DEVELOPMENT key: $SMARTMETER_DEV_KEY if set, else ~/.config/smartmeter/release-dev-key.pem
(or .dev-release-key.pem in the repository, git-ignored, where the home directory cannot be
written). It is generated on first use (mode 0600) and its public half is added to
legal/release_keys.py as a development key, which changes the software ID as it must.
A manifest signed by it verifies, but the meter shows the identifier with "-DEV".

A release key is never generated here and never auto-anchored: its public half goes into
legal/release_keys.py by a deliberate, reviewed commit (--add-release-key), and the release
is signed with --key (or $SMARTMETER_RELEASE_KEY) from wherever the offline key lives.
The key formerly committed in this file is in git history, hence public: it is not anchored.
"""
from __future__ import annotations

import argparse
import datetime as dt
import getpass
import io
import os
import socket
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
KEYS_FILE = "release_keys.py"
DEV_KEY_NAME = "release-dev-key.pem"


def development_key_path() -> Path:
    """Where this developer's development key lives (never inside the committed tree)."""
    if os.environ.get("SMARTMETER_DEV_KEY"):
        return Path(os.environ["SMARTMETER_DEV_KEY"])
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "smartmeter"
    try:
        config.mkdir(parents=True, exist_ok=True)
        if os.access(config, os.W_OK):
            return config / DEV_KEY_NAME
    except OSError:
        pass
    return REPO / ".dev-release-key.pem"  # git-ignored


def development_key(path: Path | None = None) -> ec.EllipticCurvePrivateKey:
    """This developer's development key, generated (0600) on first use."""
    path = path or development_key_path()
    if path.exists():
        return load_key(path)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    print(f"generated a development key: {path}", file=sys.stderr)
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


def _public_pem(key) -> bytes:
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def read_keys(legal_root: Path) -> tuple[dict, dict]:
    """(RELEASE_KEYS, DEVELOPMENT_KEYS) of a legal/ tree's release_keys.py, read as data."""
    import ast

    values = {}
    for node in ast.parse((legal_root / KEYS_FILE).read_bytes()).body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id in ("RELEASE_KEYS", "DEVELOPMENT_KEYS"):
            values[target.id] = ast.literal_eval(node.value)
    return values["RELEASE_KEYS"], values["DEVELOPMENT_KEYS"]


def write_keys(legal_root: Path, release: dict, development: dict) -> None:
    """Rewrite the two dictionaries of release_keys.py, keeping its docstring."""
    path = legal_root / KEYS_FILE
    text = path.read_text()
    head = text[: text.index("# key id (first 16 hex digits")]

    def pem_literal(pem: bytes) -> str:
        return "\n".join(f"        {line!r}" for line in pem.splitlines(keepends=True))

    out = [head, "# key id (first 16 hex digits of SHA-256 over the DER SubjectPublicKeyInfo) -> PEM\n"]
    out.append("RELEASE_KEYS: dict[str, bytes] = {" + ("\n" if release else ""))
    for kid in sorted(release):
        out.append(f"    {kid!r}: (\n{pem_literal(release[kid])}\n    ),\n")
    out.append("}\n\n# key id -> (PEM, who generated it, when)\n")
    out.append("DEVELOPMENT_KEYS: dict[str, tuple[bytes, str]] = {" + ("\n" if development else ""))
    for kid in sorted(development):
        pem, label = development[kid]
        out.append(f"    {kid!r}: (\n{pem_literal(pem)},\n        {label!r},\n    ),\n")
    out.append("}\n")
    path.write_text("".join(out))


def anchor_development_key(legal_root: Path, key: ec.EllipticCurvePrivateKey) -> bool:
    """Add `key`'s public half to the tree's DEVELOPMENT_KEYS -> True if it was not there."""
    release, development = read_keys(legal_root)
    kid = ident.key_id(key.public_key())
    if kid in development or kid in release:
        return False
    label = f"{getpass.getuser()}@{socket.gethostname()} {dt.date.today().isoformat()}"
    development[kid] = (_public_pem(key), label)
    write_keys(legal_root, release, development)
    return True


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
    release, development = read_keys(legal_root)
    kid = ident.key_id(key.public_key())
    if kid not in release and kid not in development:
        raise SystemExit(f"key {kid} is not anchored in legal/{KEYS_FILE}; the meter would refuse it")
    software_id = ident.compute_software_id(legal_root)
    out.write_bytes(ident.build_signed_manifest(software_id, key))
    if kid in development:
        print(f"signed with the DEVELOPMENT key {kid} (not for certified releases)", file=sys.stderr)
    return software_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--key", type=Path, default=os.environ.get("SMARTMETER_RELEASE_KEY") or None,
                        help="PEM ECDSA P-256 release key (default: your local development key)")
    parser.add_argument("--git-ref", help="sign legal/ as committed at this git revision instead of the working tree")
    parser.add_argument("--legal-dir", type=Path, default=REPO / LEGAL_IN_REPO, help="legal/ directory to sign or check")
    parser.add_argument("--check", action="store_true", help="only check that the manifest matches legal/")
    parser.add_argument("--add-release-key", type=Path, metavar="PUBLIC_PEM",
                        help="anchor this public key as a RELEASE key in legal/release_keys.py (then commit and re-sign)")
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

    if args.add_release_key:
        public = serialization.load_pem_public_key(args.add_release_key.read_bytes())
        if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(public.curve, ec.SECP256R1):
            raise SystemExit(f"{args.add_release_key}: not an ECDSA P-256 public key")
        release, development = read_keys(args.legal_dir)
        release[ident.key_id(public)] = _public_pem(public)
        write_keys(args.legal_dir, release, development)
        print(f"anchored release key {ident.key_id(public)}; commit legal/{KEYS_FILE} and sign the release with --key")
        return 0

    if args.key:
        key = load_key(Path(args.key))
    else:
        key = development_key()
        if not args.git_ref and anchor_development_key(args.legal_dir, key):
            print(f"anchored your development key in legal/{KEYS_FILE} (commit it with the manifest)", file=sys.stderr)
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
