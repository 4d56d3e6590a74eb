"""Verification of a downloaded firmware image by the running legal part (companion standard §7,
WELMEC 7.2 D2-D4), in process: a LegalInterface on a data directory whose holding file the test
writes, as the image transfer would after the last block.

The running part stands for a meter's factory installation: its software root is a copy of the
source tree whose legal part anchors the session's release key (tests/firmware_support.py). The
key a new legal part's release manifest must be signed with is the one the RUNNING part anchors;
this process imported the repository's legal part, so the session key is anchored in it too
(`anchored`), as it is in the factory copy.

Expectations come from the scenario: images are taken apart and put together again here from the
format's description (not with legal/firmware.py), their part digests are computed here with
hashlib as `sha256sum` lines, and every doctored image is signed here with the firmware key.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

import firmware_support as fs
from authority_support import certification_token
from smartmeter.legal import identification, release_keys
from smartmeter.legal import interface as legal

INITIATOR = "4b464d0000000042"  # the system title of the client that transferred the image
OTHER_CLIENT = "4b464d0000000077"
EVENT_READY, EVENT_ACTIVATED, EVENT_FAILED = 17, 18, 51  # certification protected log (companion §5.17)
METER_TYPE = 100
CERTIFICATION_LOG_CAPACITY = 100  # companion §5.17: at least 100 entries; this meter has exactly that
HOLDING = Path("firmware") / "holding.img"
SLOTS = Path("firmware") / "slots"
BOOT_RECORD = Path("firmware") / "boot.json"

# the manufacturer's firmware key (its public half is imported into each meter) and someone else's
FIRMWARE_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


# -- software trees, and their identification computed here --------------------------------------


def package_files(package: Path) -> dict[str, bytes]:
    """path relative to the `smartmeter` package -> content (no caches)."""
    return {p.relative_to(package).as_posix(): p.read_bytes() for p in sorted(package.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def part_digest(files: dict[str, bytes], part: str) -> str:
    """SHA-256 over the `sha256sum` lines of the part's files, sorted by path bytes: the legal part
    relative to legal/ without its release manifest, the application every other file."""
    lines = []
    for path, content in files.items():
        in_legal = path.split("/", 1)[0] == "legal"
        if (part == "legal") != in_legal:
            continue
        relative = path.split("/", 1)[1] if in_legal else path
        if in_legal and relative == "release_manifest.json":
            continue
        lines.append((relative.encode(), f"{hashlib.sha256(content).hexdigest()}  {relative}\n"))
    return hashlib.sha256("".join(line for _, line in sorted(lines)).encode()).hexdigest()


def tree_versions(root: Path) -> dict[str, str]:
    package = root / "smartmeter"
    return {"legal": re.search(r'^LEGAL_VERSION = "([^"]*)"$', (package / "legal" / "identification.py").read_text(),
                               re.M).group(1),
            "application": re.search(r'^__version__ = "([^"]*)"$', (package / "__init__.py").read_text(), re.M).group(1)}


def legal_id(root: Path) -> bytes:
    """The identifier the certification log records for the tree's legal part: version and the
    first 8 hex digits of its digest, as 1-0:0.2.0.255 and 1-0:0.2.8.255 show them."""
    return f"{tree_versions(root)['legal']} {part_digest(package_files(root / 'smartmeter'), 'legal')[:8]}".encode()


def tree_fingerprint(root: Path) -> str:
    """Every byte of every file of a tree, and its names: whether anything there changed."""
    h = hashlib.sha256()
    for path, content in package_files(root / "smartmeter").items():
        h.update(path.encode() + b"\0" + hashlib.sha256(content).digest())
    return h.hexdigest()


@dataclass(frozen=True)
class Trees:
    factory: Path  # what the meter runs: legal 1.0.0, application as in the repository
    newer: Path  # legal 1.0.1, application 0.1.1
    older_legal: Path  # legal 0.9.9
    older_application: Path  # legal 1.0.1, application 0.0.9
    same_version_other_code: Path  # legal 1.0.0 like the factory, but a file changed
    foreign_approval: Path  # legal 1.0.1 whose release manifest is signed by a key nobody anchored


def _comment(path: str):
    def edit(package: Path) -> None:
        with open(package / path, "a") as f:
            f.write("\n# changed after the release\n")
    return edit


def make_trees(base: Path) -> Trees:
    factory = fs.factory_tree(base / "factory")
    return Trees(
        factory=factory,
        newer=fs.new_version(factory, base / "newer", legal_version="1.0.1", application_version="0.1.1"),
        older_legal=fs.new_version(factory, base / "older-legal", legal_version="0.9.9", application_version="0.1.1"),
        older_application=fs.new_version(factory, base / "older-app", legal_version="1.0.1",
                                         application_version="0.0.9"),
        same_version_other_code=fs.new_version(factory, base / "same-version", edit=_comment("legal/firmware.py")),
        foreign_approval=fs.new_version(factory, base / "foreign", legal_version="1.0.1", application_version="0.1.1",
                                        key=ec.generate_private_key(ec.SECP256R1())),
    )


# -- images: format 1 as the design describes it, read and written here ---------------------------


def take_apart(raw: bytes) -> tuple[dict, dict[str, bytes], bytes]:
    """(header, path -> content in header order, signature) of a format 1 image."""
    assert raw[:5] == b"SMFW\x01"
    at = 5
    header_length = int.from_bytes(raw[at:at + 4], "big")
    header = json.loads(raw[at + 4:at + 4 + header_length])
    at += 4 + header_length
    body_length = int.from_bytes(raw[at:at + 4], "big")
    body = zlib.decompress(raw[at + 4:at + 4 + body_length])
    at += 4 + body_length
    signature = raw[at + 2:at + 2 + int.from_bytes(raw[at:at + 2], "big")]
    files, offset = {}, 0
    for path, size, _sha in header["files"]:
        files[path] = body[offset:offset + size]
        offset += size
    return header, files, signature


def put_together(header: dict, files: dict[str, bytes], key: ec.EllipticCurvePrivateKey | None = FIRMWARE_KEY) -> bytes:
    """The image of this header and these contents (in the header's file order), signed with `key`
    over every byte before the signature length (None: unsigned)."""
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = zlib.compress(b"".join(files[path] for path, _, _ in header["files"]))
    signed = b"SMFW\x01" + len(head).to_bytes(4, "big") + head + len(body).to_bytes(4, "big") + body
    signature = key.sign(signed, ec.ECDSA(hashes.SHA256())) if key is not None else b""
    return signed + len(signature).to_bytes(2, "big") + signature


@lru_cache(maxsize=None)
def image_of(root: Path, parts=("legal", "application"), meter_types=(100, 200, 300),
             key: ec.EllipticCurvePrivateKey | None = FIRMWARE_KEY) -> bytes:
    """The manufacturer's build of the tree (`smartmeter fw build`), signed here with `key`."""
    header, files, _ = take_apart(legal.build_firmware_image(root / "smartmeter", parts=tuple(parts),
                                                               meter_types=tuple(meter_types)))
    return put_together(header, files, key)


def header_of(raw: bytes) -> dict:
    return json.loads(raw[9:9 + int.from_bytes(raw[5:9], "big")])


def identifier_of(raw: bytes) -> str:
    return header_of(raw)["identifier"]


def signed_region_end(raw: bytes) -> int:
    """Offset of the signature length: the signature covers raw[:this]."""
    header_length = int.from_bytes(raw[5:9], "big")
    body_at = 9 + header_length
    return body_at + 4 + int.from_bytes(raw[body_at:body_at + 4], "big")


def flip(raw: bytes, offset: int, mask: int = 0xFF) -> bytes:
    return raw[:offset] + bytes([raw[offset] ^ mask]) + raw[offset + 1:]


# -- a running legal part -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> Trees:
    return make_trees(tmp_path_factory.mktemp("firmware-trees"))


@pytest.fixture(autouse=True)
def anchored(monkeypatch):
    anchor_release_key(monkeypatch)


def anchor_release_key(monkeypatch) -> None:
    """The running part anchors the session's release key, as the factory tree does."""
    key = fs.release_key().public_key()
    monkeypatch.setattr(release_keys, "RELEASE_KEYS", {identification.key_id(key): public_pem(fs.release_key())})


def open_part(data_dir: Path, root: Path, *, import_key: bool = True) -> legal.LegalInterface:
    """The legal part of a meter of type 100 running the software tree at `root`."""
    part = legal.LegalInterface(data_dir, software_root=str(root / "smartmeter" / "legal"),
                                application_version=tree_versions(root)["application"], meter_type=METER_TYPE)
    if import_key and part.execute(legal.ReadFirmwareKey()) is None:
        part.execute(legal.ImportFirmwareKey(public_pem(FIRMWARE_KEY).decode()))
    return part


@pytest.fixture
def part(tmp_path, trees):
    p = open_part(tmp_path / "data", trees.factory)
    yield p
    p.close()


def hold(data_dir: Path, raw: bytes) -> None:
    """What the image transfer leaves after the last block: the image in the holding file."""
    (data_dir / HOLDING).parent.mkdir(parents=True, exist_ok=True)
    (data_dir / HOLDING).write_bytes(raw)


def verify(part, data_dir: Path, raw: bytes, identifier: str | bytes | None = None, size: int | None = None,
           initiator: str = INITIATOR) -> legal.FirmwareVerification:
    """Hold `raw` and verify it as initiated with `identifier` and `size` (default: the image's own)."""
    hold(data_dir, raw)
    if identifier is None:
        identifier = identifier_of(raw)
    identifier = identifier.encode() if isinstance(identifier, str) else identifier
    return part.execute(legal.VerifyFirmwareImage(identifier.hex(), len(raw) if size is None else size, initiator))


def certification_log(part) -> list[tuple[int, int, bytes, bytes]]:
    """(time, event id, client system title, firmware identifier) of every entry."""
    out = []
    for record in part.execute(legal.ReadCertificationLog()):
        fields = json.loads(record.fields_json)
        out.append((record.time_utc, record.event_id, bytes.fromhex(fields["client_system_title"]["hex"]),
                    bytes.fromhex(fields["active_firmware_id"]["hex"])))
    return out


def installed_nothing(part, data_dir: Path) -> None:
    """No slot, no trial, no activation recorded, and nothing to activate."""
    slots = data_dir / SLOTS
    assert not slots.exists() or list(slots.iterdir()) == []
    assert not (data_dir / BOOT_RECORD).exists()
    assert part.execute(legal.ReadFirmwareActivation()).outcome == "none"
    with pytest.raises(legal.CommandRefused, match="verif"):
        part.execute(legal.ActivateFirmware(INITIATOR))


# -- every refusal ------------------------------------------------------------------------------


def _doctor(raw: bytes, change) -> bytes:
    """The image with `change(header, files)` applied, signed again with the firmware key: the
    manufacturer's own key signs it, so only the checks behind the signature can refuse it."""
    header, files, _ = take_apart(raw)
    change(header, files)
    return put_together(header, files)


def _file_hash_lies(header, files):
    entry = next(e for e in header["files"] if e[0] == "legal/firmware.py")
    entry[2] = hashlib.sha256(b"other content").hexdigest()


def _part_digest_lies(header, files):
    """A legal file changed and its header entry updated; the part's declared digest left as it was."""
    files["legal/firmware.py"] += b"\n# changed\n"
    entry = next(e for e in header["files"] if e[0] == "legal/firmware.py")
    entry[1], entry[2] = len(files["legal/firmware.py"]), hashlib.sha256(files["legal/firmware.py"]).hexdigest()
    header["body_size"] = sum(e[1] for e in header["files"])


def _changed_after_approval(header, files):
    """As above, but the part digest updated too: consistent, except with the signed release manifest."""
    _part_digest_lies(header, files)
    next(p for p in header["parts"] if p["name"] == "legal")["digest"] = part_digest(files, "legal")


def _refusal_cases():
    """name -> (build(trees) -> (raw, identifier initiated, size initiated), words of the reason, the
    tree whose legal part the log names as downloaded; None: the image cannot be read, so the log
    names the identifier initiated; "header": a doctored image, the log names what its header says)."""
    def newer(t):
        return image_of(t.newer)

    def whole(raw, identifier=None, size=None):
        return raw, identifier or identifier_of(raw), len(raw) if size is None else size

    def middle_of_body(raw):
        body_at = 9 + int.from_bytes(raw[5:9], "big") + 4
        return flip(raw, (body_at + signed_region_end(raw)) // 2)

    return {
        "flipped byte in the body": (lambda t: whole(middle_of_body(newer(t))), "signature", "newer"),
        "truncated image": (lambda t: (newer(t)[:200_000], identifier_of(newer(t)), 200_000), "truncated", None),
        "fewer bytes than initiated": (lambda t: (newer(t)[:-1000], identifier_of(newer(t)), len(newer(t))),
                                       "size", None),
        "signed by another key": (lambda t: whole(image_of(t.newer, key=OTHER_KEY)), "signature", "newer"),
        "unsigned": (lambda t: whole(image_of(t.newer, key=None)), "not signed", "newer"),
        "other identifier initiated": (lambda t: whole(newer(t), identifier="SM-L9.9.9-A9.9.9"), "identifier", "newer"),
        "other size initiated": (lambda t: whole(newer(t), size=len(newer(t)) + 1), "size", None),
        "another meter type": (lambda t: whole(image_of(t.newer, meter_types=(300,))), "meter type", "newer"),
        "older legal version": (lambda t: whole(image_of(t.older_legal)), "downgrade: the legal part 0.9.9", "older_legal"),
        "older application version": (lambda t: whole(image_of(t.older_application)), "downgrade: the application part 0.0.9",
                                      "older_application"),
        "same version, other software": (lambda t: whole(image_of(t.same_version_other_code)), "running version but other",
                                         "same_version_other_code"),
        "release manifest by an unanchored key": (lambda t: whole(image_of(t.foreign_approval)), "not anchored",
                                                  "foreign_approval"),
        "file hash lies": (lambda t: whole(_doctor(newer(t), _file_hash_lies)), "legal/firmware.py differs from its hash",
                           "header"),
        "part digest lies": (lambda t: whole(_doctor(newer(t), _part_digest_lies)), "do not have the digest", "header"),
        "legal part changed after its approval": (lambda t: whole(_doctor(newer(t), _changed_after_approval)),
                                                  "differs from its signed release manifest", "header"),
    }


REFUSALS = _refusal_cases()


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_image_is_logged_with_its_initiator_and_changes_nothing(case, part, tmp_path, trees):
    """Each way an image can be wrong is refused with a reason naming it, logged as event 51 with
    the initiator's system title, installs nothing and leaves the running software as it was."""
    build, words, named = REFUSALS[case]
    raw, identifier, size = build(trees)
    data_dir = tmp_path / "data"
    running, identity = tree_fingerprint(trees.factory), part.execute(legal.ReadSoftwareIdentity())
    before = certification_log(part)
    started = int(time.time())
    result = verify(part, data_dir, raw, identifier, size)
    assert not result.ok
    assert words in result.reason and "\n" not in result.reason and len(result.reason) < 300, result.reason
    log = certification_log(part)
    assert log[:len(before)] == before and len(log) == len(before) + 1
    at, event, title, downloaded = log[-1]
    assert (event, title) == (EVENT_FAILED, bytes.fromhex(INITIATOR))
    assert started <= at <= time.time() + 1
    if named is None:  # nothing legible about the software: the log names what was initiated
        assert downloaded == identifier.encode()
    elif named == "header":  # the legal part as the doctored header declares it
        declared = next(p for p in header_of(raw)["parts"] if p["name"] == "legal")
        assert downloaded == f"{declared['version']} {declared['digest'][:8]}".encode()
    else:
        assert downloaded == legal_id(getattr(trees, named))
    installed_nothing(part, data_dir)
    assert tree_fingerprint(trees.factory) == running
    assert part.execute(legal.ReadSoftwareIdentity()) == identity


def test_every_byte_of_an_image_is_covered(part, tmp_path, trees):
    """One flipped byte anywhere - magic, header, body, signature length, signature - is refused."""
    raw = image_of(trees.newer)
    data_dir = tmp_path / "data"
    end = signed_region_end(raw)
    offsets = [0, 4, 7, 20, 200, end // 2, end - 1, end, end + 1, len(raw) - 1]
    for offset in sorted(set(offsets)):
        result = verify(part, data_dir, flip(raw, offset, 0x01), identifier_of(raw), len(raw))
        assert not result.ok, offset
    assert [e[1] for e in certification_log(part)] == [EVENT_FAILED] * len(set(offsets))
    installed_nothing(part, data_dir)
    assert verify(part, data_dir, raw).ok  # the same image, unchanged, passes


def test_without_an_imported_firmware_key_every_image_is_refused(tmp_path, trees):
    """A meter into which production imported no firmware key accepts no image."""
    data_dir = tmp_path / "data"
    part = open_part(data_dir, trees.factory, import_key=False)
    try:
        result = verify(part, data_dir, image_of(trees.newer))
        assert not result.ok and "firmware verification key" in result.reason
        assert [e[1] for e in certification_log(part)] == [EVENT_FAILED]
        installed_nothing(part, data_dir)
    finally:
        part.close()


def seal_download(part, value: int, title: str = OTHER_CLIENT) -> None:
    """The certification authority sets the sealed parameter firmware_download."""
    part.execute(legal.SetParameters((("firmware_download", value),), int(time.time()), title,
                                     certification_token(part, title)))


def test_the_sealed_setting_refuses_every_download(part, tmp_path, trees):
    """firmware_download = 0, set by the certification authority: even a good image is refused,
    logged as event 51; set back to 1, the same image passes."""
    data_dir = tmp_path / "data"
    raw = image_of(trees.newer)
    seal_download(part, 0)
    before = certification_log(part)
    for image in (raw, image_of(trees.newer, parts=("application",))):
        result = verify(part, data_dir, image)
        assert not result.ok and "disabled" in result.reason
    log = certification_log(part)[len(before):]
    # both logged, the application-only image too (the meter cannot read an image it refuses to look at)
    assert [(e[1], e[2], e[3]) for e in log] == [
        (EVENT_FAILED, bytes.fromhex(INITIATOR), identifier_of(raw).encode()),
        (EVENT_FAILED, bytes.fromhex(INITIATOR), identifier_of(image_of(trees.newer, parts=("application",))).encode())]
    installed_nothing(part, data_dir)
    seal_download(part, 1)
    assert verify(part, data_dir, raw).ok


def fill_certification_log(part, data_dir: Path, free: int) -> None:
    """Refused attempts (an unreadable image: one entry each) until `free` entries are left."""
    entries = len(certification_log(part))
    while entries < CERTIFICATION_LOG_CAPACITY - free:
        assert not verify(part, data_dir, b"not an image", "SM-X", 12).ok
        assert len(certification_log(part)) == entries + 1  # one entry per attempt, until full
        entries += 1


def test_downloads_of_the_legal_part_are_refused_when_the_log_cannot_take_them(part, tmp_path, trees):
    """With one entry left, a good image with the legal part is refused (its activation could not be
    logged) and that refusal takes the last entry; with none left, it is refused and nothing is
    overwritten."""
    data_dir = tmp_path / "data"
    raw = image_of(trees.newer)
    fill_certification_log(part, data_dir, free=1)
    oldest = certification_log(part)[:3]
    result = verify(part, data_dir, raw)
    assert not result.ok and "full" in result.reason
    log = certification_log(part)
    assert log[-1][1:] == (EVENT_FAILED, bytes.fromhex(INITIATOR), legal_id(trees.newer))
    result = verify(part, data_dir, raw)
    assert not result.ok and "full" in result.reason
    assert certification_log(part) == log and log[:3] == oldest
    installed_nothing(part, data_dir)


def test_an_application_only_image_is_no_certification_event(part, tmp_path, trees):
    """The application is not legally relevant: its image is verified the same way, but neither its
    success nor its refusal is an entry of the certification log (the full log does not stop it)."""
    data_dir = tmp_path / "data"
    fill_certification_log(part, data_dir, free=0)
    log = certification_log(part)
    refused = verify(part, data_dir, image_of(trees.newer, parts=("application",), key=OTHER_KEY))
    assert not refused.ok and "signature" in refused.reason
    accepted = verify(part, data_dir, image_of(trees.newer, parts=("application",)))
    assert accepted.ok, accepted.reason
    assert certification_log(part) == log


# -- success ------------------------------------------------------------------------------------


def test_a_good_image_is_logged_as_event_17_with_the_downloaded_software(part, tmp_path, trees):
    """A newer image, signed, for this type, its legal part approved: verified; event 17 names the
    initiator and the downloaded legal part (version and digest), the answer the image's parts."""
    data_dir = tmp_path / "data"
    raw = image_of(trees.newer)
    started = int(time.time())
    result = verify(part, data_dir, raw)
    assert result.ok and result.reason == ""
    files = package_files(trees.newer / "smartmeter")
    versions = tree_versions(trees.newer)
    assert result.identifier == identifier_of(raw) and result.size == len(raw)
    assert result.sha256 == hashlib.sha256(raw).hexdigest()
    assert bytes.fromhex(result.signature_hex) == take_apart(raw)[2]
    assert result.parts == ((0, "legal", versions["legal"], part_digest(files, "legal")),
                            (1, "application", versions["application"], part_digest(files, "application")))
    [(at, event, title, downloaded)] = certification_log(part)
    assert (event, title, downloaded) == (EVENT_READY, bytes.fromhex(INITIATOR), legal_id(trees.newer))
    assert started <= at <= time.time() + 1
    assert not (data_dir / SLOTS).exists()  # verification installs nothing: activation does


def test_the_firmware_key_is_imported_once_and_its_fingerprint_readable(part, tmp_path):
    """ReadFirmwareKey gives the imported public key and its SHA-256 fingerprint (of the DER key, as
    published); a second import, and a private key, are refused."""
    pem, fingerprint = part.execute(legal.ReadFirmwareKey())
    der = FIRMWARE_KEY.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    assert pem.encode() == public_pem(FIRMWARE_KEY) and fingerprint == hashlib.sha256(der).hexdigest()
    with pytest.raises(legal.CommandRefused, match="already"):
        part.execute(legal.ImportFirmwareKey(public_pem(OTHER_KEY).decode()))
    fresh = legal.LegalInterface(tmp_path / "fresh")
    try:
        with pytest.raises(legal.CommandRefused, match="public key"):
            fresh.execute(legal.ImportFirmwareKey(private_pem(OTHER_KEY).decode()))
        assert fresh.execute(legal.ReadFirmwareKey()) is None
    finally:
        fresh.close()


# -- activation and its outcome at the next start --------------------------------------------------


def activate(part, data_dir: Path, raw: bytes, initiator: str = INITIATOR) -> str:
    assert verify(part, data_dir, raw, initiator=initiator).ok
    return part.execute(legal.ActivateFirmware(initiator))


def test_activation_installs_the_image_beside_the_running_software(part, tmp_path, trees):
    """The slot holds the image's files byte for byte and, for a part the image does not carry, the
    running software's; the boot record names it for a trial; the running tree is untouched."""
    data_dir = tmp_path / "data"
    running = tree_fingerprint(trees.factory)
    slot = activate(part, data_dir, image_of(trees.newer, parts=("application",)))
    installed = package_files(data_dir / SLOTS / slot / "smartmeter")
    new, old = package_files(trees.newer / "smartmeter"), package_files(trees.factory / "smartmeter")
    assert installed == {**{p: c for p, c in old.items() if p.startswith("legal/")},
                         **{p: c for p, c in new.items() if not p.startswith("legal/")}}
    trial = json.loads((data_dir / BOOT_RECORD).read_text())["trial"]
    assert trial["slot"] == slot
    assert (trial["legal_digest"], trial["application_digest"]) == (part_digest(old, "legal"),
                                                                   part_digest(new, "application"))
    assert part.execute(legal.ReadFirmwareActivation()).outcome == "pending"
    assert tree_fingerprint(trees.factory) == running


# the legal part of another tree must run in a process of its own (its version is its code's)
START_LEGAL_PART = """
import json, sys
from pathlib import Path
from smartmeter import __version__
from smartmeter.legal import interface as legal
part = legal.LegalInterface(Path(sys.argv[1]), application_version=__version__, meter_type=100)
at_start = part.execute(legal.ReadFirmwareActivation()).outcome
outcome = part.execute(legal.ConfirmFirmwareActivation())  # what the meter does once it has served a while
print(json.dumps({"at_start": at_start, "outcome": outcome.outcome, "identifier": outcome.identifier,
                  "legal_part": outcome.legal_part,
                  "software_ok": part.execute(legal.ReadSoftwareIdentity()).ok,
                  "log": [[r.event_id, json.loads(r.fields_json)] for r in part.execute(legal.ReadCertificationLog())]}))
part.close()
"""


def start_legal_part_of(root: Path, data_dir: Path) -> dict:
    """Start the legal part of the tree at `root` on `data_dir` (as the meter does after its restart)."""
    done = subprocess.run([sys.executable, "-c", START_LEGAL_PART, str(data_dir)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(root)), timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_new_software_running_at_the_next_start_is_logged_as_event_18(tmp_path, trees):
    """After the restart, the legal part of the new software finds itself to be what was activated:
    the activation stays pending until the new software confirms it has been serving, then event 18
    with the activator's title and the identifier it now runs as."""
    data_dir = tmp_path / "data"
    part = open_part(data_dir, trees.factory)
    raw = image_of(trees.newer)
    activate(part, data_dir, raw)
    part.close()
    started = start_legal_part_of(trees.newer, data_dir)
    assert started["software_ok"] and started["at_start"] == "pending"
    assert (started["outcome"], started["identifier"], started["legal_part"]) == ("activated", identifier_of(raw), True)
    assert [(e, bytes.fromhex(f["client_system_title"]["hex"]), bytes.fromhex(f["active_firmware_id"]["hex"]))
            for e, f in started["log"]] == [(EVENT_READY, bytes.fromhex(INITIATOR), legal_id(trees.newer)),
                                            (EVENT_ACTIVATED, bytes.fromhex(INITIATOR), legal_id(trees.newer))]


def test_the_old_software_running_at_the_next_start_is_a_failed_activation(tmp_path, trees):
    """If the previous software is what starts after the activation, event 51 (the downloaded
    identifier, the activator's title), outcome "failed" with the reason."""
    data_dir = tmp_path / "data"
    part = open_part(data_dir, trees.factory)
    activate(part, data_dir, image_of(trees.newer))
    part.close()
    part = open_part(data_dir, trees.factory)
    try:
        outcome = part.execute(legal.ReadFirmwareActivation())
        assert outcome.outcome == "failed" and "previous software" in outcome.reason
        assert [e[1:] for e in certification_log(part)][-1] == (EVENT_FAILED, bytes.fromhex(INITIATOR),
                                                                legal_id(trees.newer))
    finally:
        part.close()


def test_an_image_that_failed_to_start_three_times_is_not_activated_again(tmp_path, trees):
    """Each failed start of the same image counts; after FIRMWARE_ATTEMPTS (3) its activation is
    refused, while another image may still be activated."""
    data_dir = tmp_path / "data"
    raw = image_of(trees.newer)
    for _ in range(3):
        part = open_part(data_dir, trees.factory)
        activate(part, data_dir, raw)
        part.close()
    part = open_part(data_dir, trees.factory)
    try:
        assert part.execute(legal.ReadFirmwareActivation()).outcome == "failed"
        assert verify(part, data_dir, raw).ok  # still a good image: it is its starts that failed
        with pytest.raises(legal.CommandRefused, match="3 times"):
            part.execute(legal.ActivateFirmware(INITIATOR))
        events = [e[1] for e in certification_log(part)]
        assert events == [EVENT_READY, EVENT_FAILED] * 3 + [EVENT_READY]
        other = image_of(trees.newer, parts=("application",))
        assert activate(part, data_dir, other)
    finally:
        part.close()


def test_a_failed_installation_keeps_the_running_software(part, tmp_path, trees):
    """When the slot cannot be written, the activation is refused, logged as event 51, no trial is
    recorded and the running software is what it was."""
    data_dir = tmp_path / "data"
    running = tree_fingerprint(trees.factory)
    raw = image_of(trees.newer)
    assert verify(part, data_dir, raw).ok
    (data_dir / SLOTS).parent.mkdir(parents=True, exist_ok=True)
    (data_dir / SLOTS).write_bytes(b"a file where the slots directory would go")
    with pytest.raises(legal.CommandRefused, match="installation failed"):
        part.execute(legal.ActivateFirmware(INITIATOR))
    assert [e[1] for e in certification_log(part)] == [EVENT_READY, EVENT_FAILED]
    assert part.execute(legal.ReadFirmwareActivation()).outcome == "failed"
    assert not (data_dir / BOOT_RECORD).exists()
    assert tree_fingerprint(trees.factory) == running
    # the image stays verified: once the slot can be written, the activation may be asked again
    (data_dir / SLOTS).unlink()
    slot = part.execute(legal.ActivateFirmware(INITIATOR))
    assert (data_dir / SLOTS / slot / "smartmeter").is_dir()
    assert json.loads((data_dir / BOOT_RECORD).read_text())["trial"]["slot"] == slot


def test_a_release_meter_refuses_a_legal_part_approved_only_by_a_development_key(part, tmp_path, trees, monkeypatch):
    """A meter running a release (its legal part signed by a release key) refuses a legal part
    whose release manifest is signed by a development key, even one it anchors: a release is
    replaced only by a release."""
    development = ec.generate_private_key(ec.SECP256R1())
    monkeypatch.setattr(release_keys, "DEVELOPMENT_KEYS", {
        identification.key_id(development.public_key()): (public_pem(development), "a developer")})
    dev_signed = fs.new_version(trees.factory, tmp_path / "dev-signed", legal_version="1.0.1", key=development)
    result = verify(part, tmp_path / "data", image_of(dev_signed))
    assert not result.ok and "development key" in result.reason
    installed_nothing(part, tmp_path / "data")


@pytest.mark.parametrize("evil", [["legal"], {"x": 1}, 7, None])
def test_a_part_name_of_any_type_is_a_format_error(evil):
    """parse_firmware_image is total: a part whose name is a list, a dict, a number or null is a
    FirmwareImageError, never a TypeError."""
    header = {"format": 1, "identifier": "X", "meter_types": [100], "body_size": 0, "created": "", "key_id": "",
              "files": [], "parts": [{"b": 0, "name": evil, "version": "1.0", "digest": "0" * 64}]}
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = zlib.compress(b"")
    raw = (b"SMFW\x01" + len(head).to_bytes(4, "big") + head + len(body).to_bytes(4, "big") + body
           + (0).to_bytes(2, "big"))
    with pytest.raises(legal.FirmwareImageError):
        legal.parse_firmware_image(raw)


def test_the_restart_gap_is_caught_up_only_for_the_meter_process_that_stopped(tmp_path):
    """The gap of an activation restart is measured only when the same meter process starts again
    (its restart keeps its pid); a start by any other process after it (a power return during the
    trial) is an outage, as after any power failure: no event 215, a power-up report."""
    data_dir = tmp_path / "data"
    for same_process, expected_215 in ((True, True), (False, False)):
        part = legal.LegalInterface(data_dir)
        part.execute(legal.PowerUp(time.time()))
        with legal.atomic(part._db):  # what ActivateFirmware records for the restart
            part._put_meta("warm_restart", True)
        part.close()
        if not same_process:
            db = sqlite3.connect(data_dir / "legal.sqlite3")
            row = json.loads(db.execute("SELECT value FROM meta WHERE key = 'warm_stop'").fetchone()[0])
            row["meter_pid"] = row["meter_pid"] + 1  # another process than the one that stopped
            db.execute("UPDATE meta SET value = ? WHERE key = 'warm_stop'", (json.dumps(row),))
            db.commit()
            db.close()
        part = legal.LegalInterface(data_dir)
        try:
            events = [r.event_id for r in part.execute(legal.ReadMetrologicalLog(None, None))]
            report = part.execute(legal.PowerUp(time.time()))
            assert (legal.EVENT_WARM_RESTART in events) == expected_215, (same_process, events)
            assert (report is None) == same_process  # no outage for the restart itself; else one is reported
        finally:
            part.close()
            data_dir = tmp_path / "data-2"
