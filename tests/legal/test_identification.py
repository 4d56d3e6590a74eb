"""Software identification of the legally relevant part and its signed release manifest
(WELMEC 7.2 P2/U2, S1, I3-6)."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

import smartmeter
from smartmeter.legal import identification as ident
from smartmeter.legal.identification import IntegrityReason

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(smartmeter.__file__).resolve().parent
LEGAL = PACKAGE / "legal"


def _load_signer():
    spec = importlib.util.spec_from_file_location("sign_release", REPO / "scripts" / "sign_release.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sign_release = _load_signer()
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")
# a development key of these tests only (never the developer's own key under ~/.config)
TEST_DEV_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def legal_copy(tmp_path: Path) -> Path:
    """A copy of legal/ with a test development key anchored and freshly signed (so these tests
    do not depend on whether the committed manifest is current; a separate test checks that)."""
    root = tmp_path / "legal"
    shutil.copytree(LEGAL, root, ignore=IGNORE)
    sign_release.anchor_development_key(root, TEST_DEV_KEY)
    (root / ident.MANIFEST_NAME).write_bytes(
        ident.build_signed_manifest(ident.compute_software_id(root), TEST_DEV_KEY)
    )
    return root


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    root = tmp_path / "smartmeter"
    shutil.copytree(PACKAGE, root, ignore=IGNORE)
    return root


def _append(path: Path, text: bytes) -> None:
    path.write_bytes(path.read_bytes() + text)


# -- the digest ---------------------------------------------------------------------------------


def test_digest_equals_an_independent_sha256sum_over_the_sorted_manifest(legal_copy: Path) -> None:
    # Put a compiled file and a cache directory in, to show they are ignored by both sides.
    (legal_copy / "__pycache__").mkdir()
    (legal_copy / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\x00compiled")
    (legal_copy / "stray.pyc").write_bytes(b"\x01")
    script = (
        "find . -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -name release_manifest.json"
        " | sed 's|^\\./||' | LC_ALL=C sort | xargs sha256sum | sha256sum"
    )
    out = subprocess.run(["sh", "-c", script], cwd=legal_copy, check=True, capture_output=True, text=True).stdout
    software_id = ident.compute_software_id(legal_copy)
    assert software_id.digest_hex == out.split()[0]
    assert software_id.version == ident.LEGAL_VERSION
    assert len(software_id.digest) == 32 and software_id.identifier == ident.LEGAL_VERSION.encode()
    assert [p for p, _ in software_id.files] == sorted(p for p, _ in software_id.files)
    assert "identification.py" in dict(software_id.files) and "parameters.py" in dict(software_id.files)
    assert ident.MANIFEST_NAME not in dict(software_id.files)


def test_default_root_is_the_installed_legal_package() -> None:
    assert ident.compute_software_id() == ident.compute_software_id(LEGAL)
    assert ident.compute_application_id() == ident.compute_application_id(PACKAGE)


def test_editing_outside_legal_changes_only_the_application_id(package_copy: Path) -> None:
    legal_before = ident.compute_software_id(package_copy / "legal")
    app_before = ident.compute_application_id(package_copy)
    assert not any(p.startswith("legal/") for p, _ in app_before.files)
    assert "errors.py" in dict(app_before.files)

    _append(package_copy / "errors.py", b"\n# an edit outside legal/\n")
    assert ident.compute_software_id(package_copy / "legal") == legal_before
    app_after = ident.compute_application_id(package_copy)
    assert app_after.digest_hex != app_before.digest_hex

    (package_copy / "cosem" / "new_module.py").write_text("X = 1\n")
    assert ident.compute_software_id(package_copy / "legal") == legal_before
    assert ident.compute_application_id(package_copy).digest_hex not in (app_before.digest_hex, app_after.digest_hex)


def test_editing_inside_legal_changes_only_the_legal_id(package_copy: Path) -> None:
    legal_before = ident.compute_software_id(package_copy / "legal")
    app_before = ident.compute_application_id(package_copy)
    _append(package_copy / "legal" / "registers.py", b" ")
    assert ident.compute_software_id(package_copy / "legal").digest_hex != legal_before.digest_hex
    assert ident.compute_application_id(package_copy) == app_before


def test_application_version_is_reported_as_given(package_copy: Path) -> None:
    assert ident.compute_application_id(package_copy, "0.1.0").identifier == b"0.1.0"


# -- the signed manifest ------------------------------------------------------------------------


def test_a_freshly_signed_tree_checks_ok_with_the_development_key(legal_copy: Path) -> None:
    result = ident.check_software(legal_copy)
    assert result.ok and result.reason is IntegrityReason.OK
    assert result.expected == result.actual == ident.compute_software_id(legal_copy)
    assert result.development_key  # today only the development key is anchored


@pytest.mark.parametrize("edit", ["modify", "add", "remove", "rename", "key"])
def test_any_edit_inside_legal_is_a_mismatch_against_the_signed_manifest(legal_copy: Path, edit: str) -> None:
    if edit == "modify":  # one flipped bit
        data = bytearray((legal_copy / "registers.py").read_bytes())
        data[len(data) // 2] ^= 0x01
        (legal_copy / "registers.py").write_bytes(bytes(data))
        changed = ("registers.py",)
    elif edit == "add":
        (legal_copy / "backdoor.py").write_text("")
        changed = ("backdoor.py",)
    elif edit == "remove":
        (legal_copy / "storage.py").unlink()
        changed = ("storage.py",)
    elif edit == "rename":
        (legal_copy / "storage.py").rename(legal_copy / "storage2.py")
        changed = ("storage.py", "storage2.py")
    else:  # anchoring another key is an edit of release_keys.py, so it changes the ID too
        sign_release.anchor_development_key(legal_copy, ec.generate_private_key(ec.SECP256R1()))
        changed = ("release_keys.py",)
    result = ident.check_software(legal_copy)
    assert not result.ok
    assert result.reason is IntegrityReason.DIGEST_MISMATCH
    assert result.changed_files == changed
    assert result.expected is not None and result.actual is not None
    assert result.expected.digest_hex != result.actual.digest_hex


def test_compiled_files_do_not_count(legal_copy: Path) -> None:
    (legal_copy / "__pycache__").mkdir(exist_ok=True)
    (legal_copy / "__pycache__" / "registers.cpython-311.pyc").write_bytes(b"anything")
    assert ident.check_software(legal_copy).ok


def _manifest(root: Path) -> dict:
    return json.loads((root / ident.MANIFEST_NAME).read_bytes())


def _write_manifest(root: Path, manifest: dict) -> None:
    (root / ident.MANIFEST_NAME).write_text(json.dumps(manifest))


def test_a_bad_signature_is_refused(legal_copy: Path) -> None:
    manifest = _manifest(legal_copy)
    signature = bytearray(bytes.fromhex(manifest["signature"]))
    signature[-1] ^= 0x01
    manifest["signature"] = signature.hex()
    _write_manifest(legal_copy, manifest)
    result = ident.check_software(legal_copy)
    assert not result.ok and result.reason is IntegrityReason.BAD_SIGNATURE and result.expected is None


def test_a_manifest_edited_to_match_modified_files_is_refused(legal_copy: Path) -> None:
    """The attack the signature is for: modify legal/ and write its new digest into the manifest."""
    _append(legal_copy / "registers.py", b"\n# tampered\n")
    forged = ident.compute_software_id(legal_copy)
    manifest = _manifest(legal_copy)
    manifest["digest"] = forged.digest_hex
    manifest["files"] = [list(f) for f in forged.files]
    _write_manifest(legal_copy, manifest)
    assert ident.check_software(legal_copy).reason is IntegrityReason.BAD_SIGNATURE


def test_a_manifest_signed_with_an_unanchored_key_is_refused(legal_copy: Path) -> None:
    other_key = ec.generate_private_key(ec.SECP256R1())
    (legal_copy / ident.MANIFEST_NAME).write_bytes(
        ident.build_signed_manifest(ident.compute_software_id(legal_copy), other_key)
    )
    result = ident.check_software(legal_copy)
    assert not result.ok and result.reason is IntegrityReason.UNKNOWN_KEY


def test_a_manifest_whose_file_list_disagrees_with_its_digest_is_refused(legal_copy: Path) -> None:
    real = ident.compute_software_id(legal_copy)
    lying = ident.SoftwareId(real.version, real.digest_hex, real.files[1:])
    (legal_copy / ident.MANIFEST_NAME).write_bytes(ident.build_signed_manifest(lying, TEST_DEV_KEY))
    assert ident.check_software(legal_copy).reason is IntegrityReason.MANIFEST_MALFORMED


def test_a_missing_manifest_is_reported(legal_copy: Path) -> None:
    (legal_copy / ident.MANIFEST_NAME).unlink()
    result = ident.check_software(legal_copy)
    assert not result.ok and result.reason is IntegrityReason.MANIFEST_MISSING
    assert result.actual == ident.compute_software_id(legal_copy)


@pytest.mark.parametrize("raw", [
    b"", b"not json", b"[]", b"{}", b"\xff\xfe", b"[" * 100_000, b'{"format": 1}',
    b"0" * (ident.MANIFEST_MAX_BYTES + 1),
])
def test_malformed_manifests_are_refused(legal_copy: Path, raw: bytes) -> None:
    (legal_copy / ident.MANIFEST_NAME).write_bytes(raw)
    assert ident.check_software(legal_copy).reason is IntegrityReason.MANIFEST_MALFORMED


def test_every_field_of_the_manifest_is_checked(legal_copy: Path) -> None:
    good = _manifest(legal_copy)
    for key, bad_value in [("format", 2), ("version", 1), ("digest", "00"), ("files", {}), ("files", [["a"]]),
                           ("key_id", 5), ("signature", "zz"), ("extra", 1)]:
        manifest = dict(good, **{key: bad_value})
        _write_manifest(legal_copy, manifest)
        assert ident.check_software(legal_copy).reason is IntegrityReason.MANIFEST_MALFORMED, key
    for key in good:
        _write_manifest(legal_copy, {k: v for k, v in good.items() if k != key})
        assert ident.check_software(legal_copy).reason is IntegrityReason.MANIFEST_MALFORMED, key


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=400) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=8),
    max_leaves=20,
).map(lambda v: json.dumps(v).encode()))
def test_verify_manifest_is_total(raw: bytes) -> None:
    reason, expected, _ = ident.verify_manifest(raw)
    assert reason is not IntegrityReason.OK and expected is None


def test_an_unreadable_legal_directory_is_a_result_not_an_exception(tmp_path: Path) -> None:
    result = ident.check_software(tmp_path / "does-not-exist")
    assert not result.ok and result.reason is IntegrityReason.MANIFEST_MISSING


# -- the signer script -------------------------------------------------------------------------


def test_no_private_key_is_in_the_repository() -> None:
    """Every tracked file is searched for a PEM private key (the development key used to be
    committed in scripts/sign_release.py; it is in history, so it must not be trusted)."""
    import re

    from cryptography.hazmat.primitives import serialization

    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True)
    if listed.returncode == 0:
        tracked = listed.stdout
    else:  # a source tree without git (an exported archive): every file the project ships
        skipped = {".venv", ".git", "__pycache__", ".pytest_cache", ".hypothesis", "meter-data"}
        tracked = b"\0".join(str(p.relative_to(REPO)).encode() for p in REPO.rglob("*")
                             if p.is_file() and not skipped.intersection(p.relative_to(REPO).parts))
    block = re.compile(rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----[A-Za-z0-9+/=\s\\n\"']*?-----END \1PRIVATE KEY-----")

    def usable(match: "re.Match[bytes]") -> bool:
        body = re.sub(rb"\\n|[^A-Za-z0-9+/=]", b"", match.group(0).split(b"-----")[2])  # undo string quoting
        label = match.group(1) + b"PRIVATE KEY"
        pem = b"-----BEGIN " + label + b"-----\n" + body + b"\n-----END " + label + b"-----\n"
        try:
            serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            return False
        return True

    carrying = [name for name in tracked.decode().split("\0") if name and (REPO / name).is_file()
                and any(usable(m) for m in block.finditer((REPO / name).read_bytes()))]
    assert carrying == []
    # the old committed key's public half is no longer a trust anchor
    compromised = "18e9177d82519f7c"
    assert compromised not in ident.anchored_keys()


def test_the_committed_manifest_says_development_when_signed_with_a_development_key() -> None:
    result = ident.check_software()
    manifest = json.loads((LEGAL / ident.MANIFEST_NAME).read_bytes())
    from smartmeter.legal import release_keys

    assert result.development_key == (manifest["key_id"] in release_keys.DEVELOPMENT_KEYS)
    assert result.identifier == manifest["version"] + ("-DEV" if result.development_key else "")


def test_a_developer_without_any_key_re_signs_with_a_fresh_local_development_key(legal_copy: Path, tmp_path: Path,
                                                                               monkeypatch, capsys) -> None:
    """What a fresh clone does after editing legal/: the script generates a key outside the
    tree (mode 0600), anchors its public half as DEVELOPMENT, and signs; the result verifies
    and says development."""
    key_file = tmp_path / "home" / "dev.pem"
    monkeypatch.setenv("SMARTMETER_DEV_KEY", str(key_file))
    _append(legal_copy / "registers.py", b"# edited\n")
    assert not ident.check_software(legal_copy).ok
    assert sign_release.main(["--legal-dir", str(legal_copy)]) == 0
    assert key_file.stat().st_mode & 0o777 == 0o600
    kid = ident.key_id(sign_release.load_key(key_file).public_key())
    release, development = sign_release.read_keys(legal_copy)
    assert kid in development and kid not in release
    result = ident.check_software(legal_copy)
    assert result.ok and result.development_key and result.identifier.endswith("-DEV")
    assert "DEVELOPMENT" in capsys.readouterr().err
    # signing again with the same key adds nothing
    before = (legal_copy / "release_keys.py").read_bytes()
    assert sign_release.main(["--legal-dir", str(legal_copy)]) == 0
    assert (legal_copy / "release_keys.py").read_bytes() == before


def test_a_release_key_from_outside_signs_a_release_not_marked_development(legal_copy: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    release_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "release.pem").write_bytes(release_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "release.pub.pem").write_bytes(release_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    # not anchored yet: refused, nothing written
    with pytest.raises(SystemExit):
        sign_release.main(["--legal-dir", str(legal_copy), "--key", str(tmp_path / "release.pem")])
    assert sign_release.main(["--legal-dir", str(legal_copy), "--add-release-key", str(tmp_path / "release.pub.pem")]) == 0
    assert sign_release.main(["--legal-dir", str(legal_copy), "--key", str(tmp_path / "release.pem")]) == 0
    result = ident.check_software(legal_copy)
    assert result.ok and not result.development_key and result.identifier == ident.LEGAL_VERSION


def test_the_signer_signs_and_checks_a_tree(legal_copy: Path, capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SMARTMETER_DEV_KEY", str(tmp_path / "dev.pem"))
    (legal_copy / ident.MANIFEST_NAME).unlink()
    assert sign_release.main(["--legal-dir", str(legal_copy)]) == 0
    assert sign_release.main(["--legal-dir", str(legal_copy), "--check"]) == 0
    _append(legal_copy / "parameters.py", b"#")
    assert sign_release.main(["--legal-dir", str(legal_copy), "--check"]) == 1
    assert "parameters.py" in capsys.readouterr().out


def test_the_signer_refuses_a_key_the_meter_would_not_trust(legal_copy: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key_file = tmp_path / "other.pem"
    key_file.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    before = (legal_copy / ident.MANIFEST_NAME).read_bytes()
    with pytest.raises(SystemExit):
        sign_release.main(["--legal-dir", str(legal_copy), "--key", str(key_file)])
    assert (legal_copy / ident.MANIFEST_NAME).read_bytes() == before


# -- the committed manifest (keep this test: whoever edits legal/ must re-sign) -----------------


def test_the_committed_release_manifest_matches_legal() -> None:
    result = ident.check_software()
    assert result.ok, (
        f"src/smartmeter/legal/release_manifest.json does not match legal/ ({result.reason.value}"
        f"{': ' + ', '.join(result.changed_files) if result.changed_files else ''}). "
        "Whoever edits legal/ must re-sign: .venv/bin/python scripts/sign_release.py"
    )


# -- what the legal process runs: no .pyc of legal/, and the platform it loads -----------------

import importlib.util as _importlib_util  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from smartmeter.legal.process import identify_in_legal_process  # noqa: E402


def _src_copy(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "smartmeter", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    return src


def _plant_pyc(source: Path, altered_source: bytes) -> None:
    """Write the `.pyc` the ordinary import system would take for `source` (same mtime and
    size in its header) but compiled from `altered_source`: a flipped constant in bytecode."""
    assert len(altered_source) == len(source.read_bytes())
    stat = source.stat()
    code = compile(altered_source, str(source), "exec", dont_inherit=True)
    header = _importlib_util.MAGIC_NUMBER + (0).to_bytes(4, "little") + \
        (int(stat.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + (stat.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    import marshal

    cache = Path(_importlib_util.cache_from_source(str(source)))
    cache.parent.mkdir(exist_ok=True)
    cache.write_bytes(header + marshal.dumps(code))


@pytest.mark.welmec("U2", "U6")
def test_a_tampered_pyc_of_legal_is_never_executed_by_the_legal_process(tmp_path: Path) -> None:
    """A `.pyc` of legal/identification.py with one byte of a constant flipped (the version
    "1.0.0" -> "1.0.1"), valid for the ordinary import system: a plain interpreter runs it,
    the legal process compiles the hashed source instead, so it shows the signed version and
    its recorded source hash equals the signed manifest's."""
    src = _src_copy(tmp_path)
    target = src / "smartmeter" / "legal" / "identification.py"
    original = target.read_bytes()
    version = f'LEGAL_VERSION = "{ident.LEGAL_VERSION}"'.encode()
    assert original.count(version) == 1
    flipped = bytearray(version)
    flipped[-2] ^= 0x01  # one byte of the constant
    _plant_pyc(target, original.replace(version, bytes(flipped)))
    # control: the ordinary import system does execute the planted bytecode
    plain = subprocess.run([sys.executable, "-c", "from smartmeter.legal import identification as i; print(i.LEGAL_VERSION)"],
                           env=dict(os.environ, PYTHONPATH=str(src)), capture_output=True, text=True, check=True)
    assert plain.stdout.strip() == bytes(flipped).split(b'"')[1].decode() != ident.LEGAL_VERSION
    # the legal process, started from the same tree, does not
    shown = identify_in_legal_process("", path=[str(src), *sys.path])
    assert shown.legal_version == ident.LEGAL_VERSION
    assert shown.ok and shown.legal_digest == ident.compute_software_id(src / "smartmeter" / "legal").digest_hex
    assert not Path(_importlib_util.cache_from_source(str(src / "smartmeter" / "legal" / "registers.py"))).exists()


def _copy_distribution(name: str, into: Path) -> Path:
    """A copy of an installed distribution (its package and its .dist-info) under `into`,
    so the real .venv is never touched."""
    from importlib import metadata

    dist = metadata.distribution(name)
    site = Path(dist.locate_file(""))
    tops = {f.parts[0] for f in dist.files if f.parts and f.parts[0] not in ("__pycache__", "..")}
    into.mkdir(parents=True, exist_ok=True)
    for top in tops:
        source = site / top
        if source.is_dir():
            shutil.copytree(source, into / top, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.is_file():
            shutil.copy2(source, into / top)
    return into


@pytest.mark.welmec("U2")
def test_a_changed_library_file_of_the_platform_changes_the_platform_id(tmp_path: Path) -> None:
    """The platform part (1-2:0.2.8.255) covers the libraries the legal part loads: with a
    copy of cffi ahead on the path, one flipped byte in one of its files changes the digest
    the legal process reports; the legal part's own ID is unaffected; undone, it is back."""
    site = _copy_distribution("cffi", tmp_path / "site")
    path = [str(site), *sys.path]
    before = identify_in_legal_process("", path=path)
    assert "cffi-" in before.platform_identifier and "numpy-" in before.platform_identifier
    target = site / "cffi" / "__init__.py"
    original = target.read_bytes()
    data = bytearray(original)
    data[original.index(b"#") + 1] ^= 0x20  # a byte of a comment: the module still works
    target.write_bytes(bytes(data))
    changed = identify_in_legal_process("", path=path)
    assert changed.platform_digest != before.platform_digest
    assert changed.legal_digest == before.legal_digest and changed.ok
    target.write_bytes(original)
    assert identify_in_legal_process("", path=path).platform_digest == before.platform_digest
