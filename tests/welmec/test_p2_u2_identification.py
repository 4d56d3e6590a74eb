"""P2/U2 software identification: the ID of the legally relevant part is a SHA-256 over its
files, inextricably linked to them, shown over DLMS and by `smartmeter id`, vouched for by a
signed release manifest; a changed legal/ byte changes it and stops energy registration, a
changed file outside legal/ changes only the application's ID."""
from __future__ import annotations

import ast
import hashlib
import json
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from welmec_support import (
    APP_FIRMWARE_SIGNATURE, FATAL_ERROR_REGISTER, LEGAL_DIR, LEGAL_FIRMWARE_ID, LEGAL_FIRMWARE_SIGNATURE,
    application_digest, cli, copy_tree, flip_docstring_byte, gurux_read_data, legal_digest, metrological_events,
    read_public, start_meter_from, stored_milli,
)

FATAL_PROGRAM_MEMORY = 0x01
EVENT_SOFTWARE_MISMATCH = 200
IDENT = [(LEGAL_FIRMWARE_ID, 2, 1), (LEGAL_FIRMWARE_SIGNATURE, 2, 1), (APP_FIRMWARE_SIGNATURE, 2, 1),
         (FATAL_ERROR_REGISTER, 2, 1)]


def _manifest() -> dict:
    return json.loads((LEGAL_DIR / "release_manifest.json").read_text())


@pytest.mark.welmec("P2", "U2")
def test_software_id_over_dlms_equals_an_independent_sha256_of_legal(meter):
    """1-0:0.2.8.255 (read by gurux-dlms) and `smartmeter id` equal an independent SHA-256 over legal/'s files and the signed manifest's digest."""
    nominal = legal_digest()
    assert _manifest()["digest"] == nominal
    signature = gurux_read_data(meter.wrapper_port, LEGAL_FIRMWARE_SIGNATURE)
    assert bytes(signature).hex() == nominal
    version, digest, _, fatal = read_public(meter, IDENT)
    from smartmeter.legal import release_keys  # which anchors are development ones: data, not the code under test

    development = _manifest()["key_id"] in release_keys.DEVELOPMENT_KEYS
    assert version.value == (_manifest()["version"] + ("-DEV" if development else "")).encode()
    assert digest.value.hex() == nominal
    assert fatal.value & FATAL_PROGRAM_MEMORY == 0
    shown = cli("id", "--json")
    assert shown.returncode == 0, shown.stderr
    ident = json.loads(shown.stdout)
    assert ident["legal"]["sha256"] == nominal and ident["legal"]["matches_signed_manifest"] is True
    assert ident["application"]["sha256"] == application_digest()
    assert ident["legal"]["identifier"].encode() == version.value and ident["legal"]["development_key"] is development


@pytest.mark.welmec("U2")
def test_the_platform_part_is_readable_over_dlms_and_equals_smartmeter_id(meter):
    """1-2:0.2.0.255 / 1-2:0.2.8.255 (firmware part B=2: interpreter and libraries the legal
    process loaded) read by the public client equal what `smartmeter id` computes in a fresh
    legal process."""
    identifier, digest = read_public(meter, [("1-2:0.2.0.255", 2, 1), ("1-2:0.2.8.255", 2, 1)])
    shown = json.loads(cli("id", "--json").stdout)["platform"]
    assert identifier.value.decode() == shown["identifier"] and identifier.value.startswith(b"CPython ")
    assert b"numpy-" in identifier.value and b"cryptography-" in identifier.value
    assert digest.value.hex() == shown["sha256"] and len(digest.value) == 32


@pytest.mark.welmec("P2", "U2")
def test_release_manifest_is_signed_over_exactly_the_files_of_legal():
    """The release manifest lists every file of legal/ with its SHA-256, and its ECDSA signature verifies with the anchored release key."""
    manifest = _manifest()
    on_disk = sorted(p.relative_to(LEGAL_DIR).as_posix() for p in LEGAL_DIR.rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
                     and p.name != "release_manifest.json")
    assert [name for name, _ in manifest["files"]] == on_disk
    for name, file_hash in manifest["files"]:
        assert hashlib.sha256((LEGAL_DIR / name).read_bytes()).hexdigest() == file_hash, name
    # the anchored keys are constants inside legal/release_keys.py, so they are covered by the digest;
    # read as data (ast), not through the code under test
    anchors = {}
    for node in ast.parse((LEGAL_DIR / "release_keys.py").read_bytes()).body:
        if isinstance(node, ast.AnnAssign) and node.target.id in ("RELEASE_KEYS", "DEVELOPMENT_KEYS"):
            anchors[node.target.id] = ast.literal_eval(node.value)
    by_id = {kid: pem for kid, pem in anchors["RELEASE_KEYS"].items()}
    by_id.update({kid: pem for kid, (pem, _) in anchors["DEVELOPMENT_KEYS"].items()})
    pem = by_id[manifest["key_id"]]
    key = serialization.load_pem_public_key(pem)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert hashlib.sha256(der).hexdigest()[:16] == manifest["key_id"]
    signed = {k: v for k, v in manifest.items() if k != "signature"}
    payload = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    key.verify(bytes.fromhex(manifest["signature"]), payload, ec.ECDSA(hashes.SHA256()))
    tampered = json.dumps(dict(signed, digest="0" * 64), sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(Exception):
        key.verify(bytes.fromhex(manifest["signature"]), tampered, ec.ECDSA(hashes.SHA256()))


@pytest.fixture(scope="module")
def altered_meters(tmp_path_factory):
    """Two meters started from copies of the tree: one with a byte of legal/demand.py flipped,
    one with a byte of cosem/docs.py (outside legal/) flipped."""
    base = tmp_path_factory.mktemp("trees")
    legal_src = copy_tree(base / "legal-edit")
    flip_docstring_byte(legal_src / "smartmeter" / "legal" / "demand.py")
    app_src = copy_tree(base / "app-edit")
    flip_docstring_byte(app_src / "smartmeter" / "cosem" / "docs.py")
    legal_meter = start_meter_from(legal_src, base / "legal-edit-data")
    app_meter = start_meter_from(app_src, base / "app-edit-data")
    yield (legal_src, legal_meter), (app_src, app_meter)
    legal_meter.stop()
    app_meter.stop()


def _registered_milli(meter) -> int:
    return sum(stored_milli(meter.data_dir).values())


def _energy_over(meters, seconds: float) -> list[int]:
    before = [_registered_milli(m) for m in meters]
    time.sleep(seconds)  # the meters measure in real time; the store is written every second
    return [_registered_milli(m) - b for m, b in zip(meters, before)]


@pytest.mark.welmec("P2", "U2", "P6", "U6")
def test_a_flipped_byte_in_legal_is_shown_sets_the_fatal_error_and_stops_registration(altered_meters):
    """One flipped byte in legal/ changes the SWID shown over DLMS and by `smartmeter id`, sets fatal error bit 0x01, is logged, and no energy is registered."""
    (legal_src, legal_meter), (_, app_meter) = altered_meters
    altered = legal_digest(legal_src / "smartmeter" / "legal")
    assert altered != legal_digest()
    _, digest, _, fatal = read_public(legal_meter, IDENT)
    assert digest.value.hex() == altered
    assert fatal.value & FATAL_PROGRAM_MEMORY
    events = [json.loads(payload) for kind, payload in metrological_events(legal_meter.data_dir)
              if kind == EVENT_SOFTWARE_MISMATCH]
    assert len(events) == 1 and events[0]["changed_files"] == "demand.py"
    # the same few seconds: the healthy meter registers energy, the altered one nothing
    altered_delta, healthy_delta = _energy_over([legal_meter, app_meter], 2.5)
    assert altered_delta == 0
    assert healthy_delta > 0
    shown = cli("id", src=legal_src)
    assert shown.returncode == 1
    assert altered in shown.stdout and "DOES NOT VERIFY" in shown.stdout


@pytest.mark.welmec("P2", "U2", "S1")
def test_an_edit_outside_legal_changes_only_the_application_id(altered_meters):
    """A flipped byte outside legal/ changes 1-1:0.2.8.255 only: the legal SWID stays nominal and the fatal error register stays clear."""
    _, (app_src, app_meter) = altered_meters
    _, digest, app_digest, fatal = read_public(app_meter, IDENT)
    assert digest.value.hex() == legal_digest()
    assert app_digest.value.hex() == application_digest(app_src / "smartmeter")
    assert app_digest.value.hex() != application_digest()
    assert fatal.value == 0
    shown = json.loads(cli("id", "--json", src=app_src).stdout)
    assert shown["legal"]["matches_signed_manifest"] is True and shown["legal"]["sha256"] == legal_digest()
