"""D1-D4: download of legally relevant software (WELMEC 7.2 extension D) by remote firmware upgrade.

The running legal part is the fixed part that checks every image before anything of it runs:
these tests drive it in process (a LegalInterface on a data directory whose holding file they
write, as the image transfer leaves it after the last block), with images built from copies of
the source tree and taken apart, doctored and signed here (tests/legal/test_firmware_verification.py
holds the helpers and the full list of refusals). The meter-process evidence of D1 (a trial start
that fails and is rolled back, energy through the activation restart) is in
tests/meter/test_firmware_on_meter.py."""
from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from smartmeter.legal import firmware as firmware_module
from smartmeter.legal import interface as legal
from smartmeter.meter import boot

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "legal"))
import test_firmware_verification as fv  # noqa: E402 - helpers: trees, images, a running part, its logs

INITIATOR_BYTES = bytes.fromhex(fv.INITIATOR)


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> fv.Trees:
    return fv.make_trees(tmp_path_factory.mktemp("download-trees"))


@pytest.fixture(autouse=True)
def anchored(monkeypatch):
    fv.anchor_release_key(monkeypatch)


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def part(data_dir, trees):
    p = fv.open_part(data_dir, trees.factory)
    yield p
    p.close()


# -- D1 download mechanism ------------------------------------------------------------------------


@pytest.mark.welmec("D1")
def test_an_interrupted_transfer_is_refused_and_the_original_state_stays(part, data_dir, trees):
    """An image whose transfer stopped part way (the holding file shorter than initiated) is refused with the reason, nothing is installed, and the running software and its identification are unchanged."""
    raw = fv.image_of(trees.newer)
    running, identity = fv.tree_fingerprint(trees.factory), part.execute(legal.ReadSoftwareIdentity())
    for received in (len(raw) // 3, len(raw) - 1):
        result = fv.verify(part, data_dir, raw[:received], fv.identifier_of(raw), len(raw))
        assert not result.ok and f"{received} bytes received, {len(raw)} initiated" in result.reason
    fv.installed_nothing(part, data_dir)
    assert fv.tree_fingerprint(trees.factory) == running
    assert part.execute(legal.ReadSoftwareIdentity()) == identity


class PowerCut(BaseException):
    """The supply fails: nothing after this point runs, nothing is closed cleanly."""


@pytest.mark.welmec("D1")
def test_a_power_cut_during_installation_leaves_the_previous_software_running(data_dir, trees, monkeypatch):
    """Power fails while the verified image is being written into its slot: at the next start the boot code chooses the previous software, the half-written slot is never a slot, and the legal part logs the activation as failed (51)."""
    part = fv.open_part(data_dir, trees.factory)
    raw = fv.image_of(trees.newer)
    assert fv.verify(part, data_dir, raw).ok

    def cut_while_writing(image, raw, running_package, data_dir, slot_name):
        staging = Path(data_dir) / legal.SLOTS_DIR / f".{slot_name}.staging" / "smartmeter"
        staging.mkdir(parents=True)
        (staging / "__init__.py").write_bytes(b"# the first file of the new software, and then no power\n")
        raise PowerCut()

    monkeypatch.setattr(firmware_module, "install_firmware_image", cut_while_writing)
    with pytest.raises(PowerCut):
        part.execute(legal.ActivateFirmware(fv.INITIATOR))
    monkeypatch.undo()
    fv.anchor_release_key(monkeypatch)
    # power back: the boot code decides what runs, then the legal part starts
    assert boot.choose(data_dir) is None  # the factory installation
    again = fv.open_part(data_dir, trees.factory)
    try:
        outcome = again.execute(legal.ReadFirmwareActivation())
        assert outcome.outcome == "failed" and outcome.identifier == fv.identifier_of(raw)
        assert [e[1:] for e in fv.certification_log(again)] == [
            (fv.EVENT_READY, INITIATOR_BYTES, fv.legal_id(trees.newer)),
            (fv.EVENT_FAILED, INITIATOR_BYTES, fv.legal_id(trees.newer))]
        assert legal.read_boot_record(data_dir)["active"] is None
    finally:
        again.close()
        part.close()


@pytest.mark.welmec("D1")
def test_re_install_attempts_are_limited(data_dir, trees):
    """An image whose new software failed to come up three times is not activated a fourth time, though it still verifies; each attempt is in the certification log."""
    raw = fv.image_of(trees.newer)
    for _ in range(3):
        part = fv.open_part(data_dir, trees.factory)
        fv.activate(part, data_dir, raw)
        part.close()  # restart: the previous software is what comes up
    part = fv.open_part(data_dir, trees.factory)
    try:
        assert fv.verify(part, data_dir, raw).ok
        with pytest.raises(legal.CommandRefused, match="failed to start 3 times"):
            part.execute(legal.ActivateFirmware(fv.INITIATOR))
        assert [e[1] for e in fv.certification_log(part)] == [fv.EVENT_READY, fv.EVENT_FAILED] * 3 + [fv.EVENT_READY]
    finally:
        part.close()


@pytest.mark.welmec("D1")
def test_the_sealed_setting_disables_download(part, data_dir, trees):
    """With the sealed parameter firmware_download = 0 (set only by the certification authority) every image is refused, a good one too, and logged; set back to 1 the same image is accepted."""
    raw = fv.image_of(trees.newer)
    with pytest.raises(legal.CommandRefused):  # not without the authority
        part.execute(legal.SetParameters((("firmware_download", 0),), int(time.time()), fv.OTHER_CLIENT))
    fv.seal_download(part, 0)
    before = len(fv.certification_log(part))
    for image in (raw, fv.image_of(trees.newer, parts=("application",)), fv.image_of(trees.newer, key=None)):
        result = fv.verify(part, data_dir, image)
        assert not result.ok and "disabled" in result.reason
    assert [e[1] for e in fv.certification_log(part)[before:]] == [fv.EVENT_FAILED] * 3
    fv.installed_nothing(part, data_dir)
    fv.seal_download(part, 1)
    assert fv.verify(part, data_dir, raw).ok


# -- D2 authentication ----------------------------------------------------------------------------

AUTHENTICATION = {
    "unsigned": (lambda t: fv.image_of(t.newer, key=None), "not signed"),
    "signed by another key": (lambda t: fv.image_of(t.newer, key=fv.OTHER_KEY), "signature"),
    "for another meter type": (lambda t: fv.image_of(t.newer, meter_types=(200, 300)), "meter type"),
    "legal part not approved (release manifest by an unanchored key)": (lambda t: fv.image_of(t.foreign_approval),
                                                                        "approval"),
    "legal part changed after its approval": (lambda t: fv._doctor(fv.image_of(t.newer), fv._changed_after_approval),
                                              "approval"),
}


@pytest.mark.welmec("D2")
@pytest.mark.parametrize("case", list(AUTHENTICATION))
def test_unauthentic_or_unapproved_software_is_refused_before_it_runs(case, part, data_dir, trees):
    """Unsigned, wrongly signed, wrong-type and unapproved images (a legal part whose release manifest no anchored key signed, or whose files differ from it) are refused, logged as 51, and nothing is installed."""
    build, words = AUTHENTICATION[case]
    result = fv.verify(part, data_dir, build(trees))
    assert not result.ok and words in result.reason, result.reason
    assert [e[1:3] for e in fv.certification_log(part)] == [(fv.EVENT_FAILED, INITIATOR_BYTES)]
    fv.installed_nothing(part, data_dir)


@pytest.mark.welmec("D2")
def test_the_firmware_key_fingerprint_is_readable_and_matches_the_published_key(part):
    """The firmware verification key imported in production is readable with its SHA-256 fingerprint, which equals the fingerprint computed from the manufacturer's published public key; it cannot be replaced."""
    published = fv.FIRMWARE_KEY.public_key().public_bytes(serialization.Encoding.DER,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    pem, fingerprint = part.execute(legal.ReadFirmwareKey())
    assert fingerprint == hashlib.sha256(published).hexdigest()
    assert serialization.load_pem_public_key(pem.encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == published
    with pytest.raises(legal.CommandRefused):
        part.execute(legal.ImportFirmwareKey(fv.public_pem(fv.OTHER_KEY).decode()))
    assert part.execute(legal.ReadFirmwareKey()) == (pem, fingerprint)


@pytest.mark.welmec("D2")
def test_smartmeter_id_shows_the_firmware_key_fingerprint_as_openssl_computes_it(data_dir, trees, tmp_path):
    """`smartmeter id --data-dir` shows the fingerprint of the firmware key the meter holds; it equals the SHA-256 that openssl computes over the DER form of the manufacturer's published public key."""
    fv.open_part(data_dir, trees.factory).close()
    published = tmp_path / "published.pem"
    published.write_bytes(fv.public_pem(fv.FIRMWARE_KEY))
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(published), "-outform", "DER"],
                         capture_output=True, check=True).stdout
    expected = subprocess.run(["openssl", "dgst", "-sha256", "-r"], input=der, capture_output=True,
                              check=True).stdout.split()[0].decode()
    shown = subprocess.run([sys.executable, "-m", "smartmeter", "id", "--data-dir", str(data_dir), "--json"],
                           capture_output=True, text=True)
    assert json.loads(shown.stdout)["firmware_key_sha256"] == expected


# -- D3 integrity ---------------------------------------------------------------------------------


def _offsets(raw: bytes) -> dict[str, int]:
    header_end = 9 + int.from_bytes(raw[5:9], "big")
    end = fv.signed_region_end(raw)
    return {"magic": 1, "header": header_end - 10, "body start": header_end + 4, "body middle": (header_end + end) // 2,
            "body end": end - 1, "signature": len(raw) - 5}


@pytest.mark.welmec("D3")
@pytest.mark.parametrize("where", ["magic", "header", "body start", "body middle", "body end", "signature"])
def test_a_single_flipped_byte_is_refused_before_installation(where, part, data_dir, trees):
    """One byte of a good image changed (one bit, in the header, the compressed body or the signature) is refused at verification, so activation finds nothing to install; the unchanged image passes and installs."""
    raw = fv.image_of(trees.newer)
    flipped = fv.flip(raw, _offsets(raw)[where], 0x01)
    result = fv.verify(part, data_dir, flipped, fv.identifier_of(raw), len(raw))
    assert not result.ok
    fv.installed_nothing(part, data_dir)
    slot = fv.activate(part, data_dir, raw)
    assert (data_dir / legal.SLOTS_DIR / slot / "smartmeter" / "legal").is_dir()


@pytest.mark.welmec("D3")
@pytest.mark.parametrize("lie", ["file hash", "part digest"])
def test_files_that_differ_from_their_hashes_are_refused_under_a_valid_signature(lie, part, data_dir, trees):
    """Even signed with the manufacturer's key, an image whose file differs from its SHA-256 in the header, or whose part differs from its declared digest, is refused before installation."""
    change = {"file hash": fv._file_hash_lies, "part digest": fv._part_digest_lies}[lie]
    result = fv.verify(part, data_dir, fv._doctor(fv.image_of(trees.newer), change))
    assert not result.ok and "integrity" in result.reason
    fv.installed_nothing(part, data_dir)


# -- D4 traceability ------------------------------------------------------------------------------


@pytest.mark.welmec("D4")
def test_every_attempt_is_one_entry_with_time_software_initiator_and_outcome(data_dir, trees):
    """Each download attempt of the legal part is one certification log entry holding its time, the downloaded software's identifier, the initiator's system title and success (17, 18) or failure (51); the log's hash chain and signatures verify, and an erased entry is detected."""
    other = "4b464d00000000aa"
    attempts = []  # (event, initiator, downloaded, earliest, latest)

    def attempt(event, initiator, downloaded, action):
        earliest = int(time.time())
        action()
        attempts.append((event, bytes.fromhex(initiator), downloaded, earliest, time.time() + 1))

    part = fv.open_part(data_dir, trees.factory)
    good, older = fv.image_of(trees.newer), fv.image_of(trees.older_legal)
    attempt(fv.EVENT_FAILED, other, fv.legal_id(trees.older_legal),
            lambda: fv.verify(part, data_dir, older, initiator=other))
    attempt(fv.EVENT_FAILED, fv.INITIATOR, fv.identifier_of(good).encode(),  # cut short: nothing legible but the identifier
            lambda: fv.verify(part, data_dir, good[:1000], fv.identifier_of(good), len(good)))
    attempt(fv.EVENT_READY, fv.INITIATOR, fv.legal_id(trees.newer),
            lambda: fv.activate(part, data_dir, good))
    part.close()
    # the new software comes up (its own legal part, in a process of its own) and finds itself activated
    attempt(fv.EVENT_ACTIVATED, fv.INITIATOR, fv.legal_id(trees.newer),
            lambda: fv.start_legal_part_of(trees.newer, data_dir))
    with sqlite3.connect(f"file:{data_dir / 'legal.sqlite3'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT seq, kind, time_utc, payload FROM chain_entry WHERE tbl = 'certification' "
                          "ORDER BY seq").fetchall()
    assert len(rows) == len(attempts)
    for (seq, kind, at, payload), (event, initiator, downloaded, earliest, latest) in zip(rows, attempts):
        assert kind == event and earliest <= at <= latest
        fields = json.loads(payload)
        assert bytes.fromhex(fields["client_system_title"]["hex"]) == initiator
        assert bytes.fromhex(fields["active_firmware_id"]["hex"]) == downloaded
    assert all(report.ok for report in legal.verify_stored_data(data_dir, ("certification",)))
    with sqlite3.connect(data_dir / "legal.sqlite3") as db:  # erased without breaking a seal
        db.execute("DELETE FROM chain_entry WHERE tbl = 'certification' AND seq = 2")
    assert not all(report.ok for report in legal.verify_stored_data(data_dir, ("certification",)))


@pytest.mark.welmec("D4")
def test_downloads_are_refused_when_the_log_is_full(part, data_dir, trees):
    """Once the certification log cannot take the attempt and its activation, a good image with the legal part is refused; when full, nothing is overwritten and the refusal stands."""
    raw = fv.image_of(trees.newer)
    fv.fill_certification_log(part, data_dir, free=1)
    first = fv.certification_log(part)[0]
    result = fv.verify(part, data_dir, raw)
    assert not result.ok and "full" in result.reason
    assert len(fv.certification_log(part)) == fv.CERTIFICATION_LOG_CAPACITY
    result = fv.verify(part, data_dir, raw)
    assert not result.ok and "full" in result.reason
    assert len(fv.certification_log(part)) == fv.CERTIFICATION_LOG_CAPACITY
    assert fv.certification_log(part)[0] == first
    fv.installed_nothing(part, data_dir)
