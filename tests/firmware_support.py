"""Software trees and signed firmware images for the firmware tests.

A meter can only accept a new legally relevant part whose release manifest is signed by a key its
running legal part anchors. The repository's own tree is signed with a developer's key whose
private half is not here, so the tests run the meter from a copy of the tree (its "factory
installation") whose legal part anchors a release key made for the test session, and make newer
versions of that copy signed with the same key.
"""
from __future__ import annotations

import re
import shutil
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smartmeter.legal import identification
from smartmeter.legal import interface as legal

SOURCE = Path(__file__).resolve().parent.parent / "src" / "smartmeter"


@lru_cache(maxsize=1)
def release_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def resign(root: Path, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    """Write the legal part's release manifest of the tree at `root` (it holds `smartmeter/`)."""
    legal_dir = root / "smartmeter" / "legal"
    # the tree's own version (compute_software_id gives the running code's LEGAL_VERSION)
    version = re.search(r'^LEGAL_VERSION = "([^"]*)"$', (legal_dir / "identification.py").read_text(), re.M).group(1)
    files = identification.compute_software_id(legal_dir)
    software = identification.SoftwareId(version, files.digest_hex, files.files)
    manifest = identification.build_signed_manifest(software, key or release_key())
    (legal_dir / identification.MANIFEST_NAME).write_bytes(manifest)


def factory_tree(dest: Path) -> Path:
    """A copy of the source tree whose legal part anchors the session's release key (a release key,
    so its identifier has no "-DEV"); -> the directory to run it from (holds `smartmeter/`)."""
    shutil.copytree(SOURCE, dest / "smartmeter", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    keys = dest / "smartmeter" / "legal" / "release_keys.py"
    pem = _pem(release_key())
    text = keys.read_text()
    anchored = (f"RELEASE_KEYS: dict[str, bytes] = {{{identification.key_id(release_key().public_key())!r}: "
                f"{pem!r}}}")
    text, replaced = re.subn(r"^RELEASE_KEYS: dict\[str, bytes\] = \{\}$", lambda _: anchored, text, flags=re.M)
    assert replaced == 1, "release_keys.py no longer has an empty RELEASE_KEYS to anchor the test key in"
    keys.write_text(text)
    resign(dest)
    return dest


def new_version(source: Path, dest: Path, *, legal_version: str | None = None, application_version: str | None = None,
                edit=None, key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    """A copy of the tree at `source` with other versions (and `edit(package_dir)` applied), its
    legal part signed again (with `key`, default the session's release key)."""
    shutil.copytree(source / "smartmeter", dest / "smartmeter", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    package = dest / "smartmeter"
    if legal_version is not None:
        _replace(package / "legal" / "identification.py", r'^LEGAL_VERSION = "[^"]*"$', f'LEGAL_VERSION = "{legal_version}"')
    if application_version is not None:
        _replace(package / "__init__.py", r'^__version__ = "[^"]*"$', f'__version__ = "{application_version}"')
    if edit is not None:
        edit(package)
    resign(dest, key)
    return dest


def _replace(path: Path, pattern: str, line: str) -> None:
    text, replaced = re.subn(pattern, lambda _: line, path.read_text(), flags=re.M)
    assert replaced == 1, f"{path}: {pattern} not found"
    path.write_text(text)


def signed_image(root: Path, data_dir: Path, parts=(legal.PART_LEGAL, legal.PART_APPLICATION), **options) -> bytes:
    """An image of the tree at `root`, signed with the demo firmware key of the meter in `data_dir`."""
    raw = legal.build_firmware_image(root / "smartmeter", parts=tuple(parts), **options)
    return legal.sign_firmware_image(raw, firmware_key(data_dir))


def firmware_key(data_dir: Path) -> bytes:
    return (data_dir / "credentials" / "demo-pki" / "firmware-signing-key.pem").read_bytes()


def tree_ids(root: Path) -> dict[str, tuple[str, str]]:
    """part -> (version, digest hex) of the tree at `root`, computed here from its files: what the
    meter's identifier objects show when it runs this software."""
    package = root / "smartmeter"
    legal_version = re.search(r'^LEGAL_VERSION = "([^"]*)"$', (package / "legal" / "identification.py").read_text(),
                              re.M).group(1)
    app_version = re.search(r'^__version__ = "([^"]*)"$', (package / "__init__.py").read_text(), re.M).group(1)
    return {"legal": (legal_version, identification.compute_software_id(package / "legal").digest_hex),
            "application": (app_version, identification.compute_application_id(package).digest_hex)}
