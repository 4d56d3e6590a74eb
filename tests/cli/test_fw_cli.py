"""`smartmeter fw build / sign / inspect / upgrade` as a user types them: images built from the
package, signed, inspected and checked against a key; every mistake is one line on stderr and
exit code 1, found before a meter is asked where it can be."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import smartmeter
from meterproc import free_port
from smartmeter.cli.firmware import ProgressBar, fw_group

PACKAGE = Path(smartmeter.__file__).parent


def fw(*args: str):
    return CliRunner().invoke(fw_group, list(args), catch_exceptions=False)


def ok(result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def one_error_line(result) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "(hint: " in lines[0], result.stderr
    return lines[0]


def pem_key(path: Path, key) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def public_pem(path: Path, key) -> Path:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def declared(path: str, pattern: str) -> str:
    """A version as the package's source declares it."""
    return re.search(pattern, (PACKAGE / path).read_text(), re.M).group(1)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fw") / "image.smfw"
    ok(fw("build", "--out", str(out)))
    return out


def test_build_writes_an_unsigned_image_of_both_parts_named_by_their_versions(built):
    legal = declared("legal/identification.py", r'^LEGAL_VERSION = "([^"]+)"$')
    application = declared("__init__.py", r'^__version__ = "([^"]+)"$')
    shown = json.loads(ok(fw("inspect", str(built), "--json")))
    assert shown["identifier"] == f"SM-L{legal}-A{application}"
    assert [(p["b"], p["name"], p["version"]) for p in shown["parts"]] == [(0, "legal", legal),
                                                                            (1, "application", application)]
    assert shown["meter_types"] == [100, 200, 300] and shown["signed"] is False and shown["size"] == built.stat().st_size
    # every .py file of the package is in it (none of __pycache__)
    py_files = [p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts]
    assert shown["files"] >= len(py_files)


def test_build_with_parts_types_and_identifier(tmp_path):
    out = tmp_path / "app.smfw"
    line = ok(fw("build", "--out", str(out), "--parts", "application", "--meter-types", "100,300",
                 "--identifier", "APP-TEST-7"))
    assert line.startswith(f"{out}: APP-TEST-7 (application ") and "meter types 100,300" in line
    assert "fw sign --key KEY.pem" in line
    shown = json.loads(ok(fw("inspect", str(out), "--json")))
    assert [p["name"] for p in shown["parts"]] == ["application"] and shown["meter_types"] == [100, 300]
    assert shown["identifier"] == "APP-TEST-7"


def test_sign_then_inspect_checks_the_signature_with_the_right_key_only(built, tmp_path):
    image = tmp_path / "signed.smfw"
    image.write_bytes(built.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    private = pem_key(tmp_path / "key.pem", key)
    line = ok(fw("sign", "--key", str(private), str(image)))
    assert ", signed by key " in line
    text = ok(fw("inspect", str(image), "--key", str(public_pem(tmp_path / "pub.pem", key))))
    assert text.splitlines()[-1] == f"  checked      valid with {tmp_path / 'pub.pem'}"
    assert json.loads(ok(fw("inspect", str(image), "--json", "--key", str(private))))["signature_valid"] is True
    other = public_pem(tmp_path / "other.pem", ec.generate_private_key(ec.SECP256R1()))
    refused = fw("inspect", str(image), "--key", str(other))
    assert refused.exit_code == 1 and refused.stdout.splitlines()[-1].endswith(f"DOES NOT VERIFY with {other}")
    # the unsigned original does not verify with any key
    assert fw("inspect", str(built), "--key", str(private)).exit_code == 1


def test_signing_again_replaces_the_signature(built, tmp_path):
    image = tmp_path / "twice.smfw"
    image.write_bytes(built.read_bytes())
    first, second = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ok(fw("sign", "--key", str(pem_key(tmp_path / "1.pem", first)), str(image)))
    ok(fw("sign", "--key", str(pem_key(tmp_path / "2.pem", second)), str(image)))
    assert fw("inspect", str(image), "--key", str(public_pem(tmp_path / "2.pub", second))).exit_code == 0
    assert fw("inspect", str(image), "--key", str(public_pem(tmp_path / "1.pub", first))).exit_code == 1


def test_inspect_as_text(built):
    lines = ok(fw("inspect", str(built))).splitlines()
    assert lines[0] == f"{built}: firmware image, {built.stat().st_size} bytes"
    assert lines[1].startswith("  identifier   SM-L") and lines[2] == "  meter types  100, 200, 300"
    assert lines[3].startswith("  part 0       legal ") and lines[4].startswith("  part 1       application ")
    assert lines[-1] == f"  signature    none (sign it: smartmeter fw sign --key KEY.pem {built})"


def mangled(built: Path, tmp_path: Path, name: str, change) -> Path:
    path = tmp_path / name
    path.write_bytes(change(built.read_bytes()))
    return path


@pytest.mark.parametrize("name, change, message", [
    ("empty", lambda raw: b"", "not a firmware image (no SMFW magic)"),
    ("text", lambda raw: b"hello world", "not a firmware image (no SMFW magic)"),
    ("truncated", lambda raw: raw[:len(raw) // 2], "truncated"),
    ("trailing", lambda raw: raw + b"\0", "1 bytes after the signature"),
    ("format", lambda raw: raw[:4] + b"\x02" + raw[5:], "image format 2"),
])
def test_a_file_that_is_not_an_image_is_one_line(built, tmp_path, name, change, message):
    path = mangled(built, tmp_path, name, change)
    for args in (["inspect", str(path)], ["sign", "--key", str(path), str(path)]):
        line = one_error_line(fw(*args))
        assert line.startswith(f"error: {path}: ") and message in line, line


def test_mistakes_are_one_line(built, tmp_path):
    rsa_key = pem_key(tmp_path / "rsa.pem", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    p256 = pem_key(tmp_path / "p256.pem", ec.generate_private_key(ec.SECP256R1()))
    image = tmp_path / "x.smfw"
    image.write_bytes(built.read_bytes())
    cases = [
        (["build", "--out", str(tmp_path / "a"), "--parts", "modem"], "error: --parts 'modem': 'modem' is not a part"),
        (["build", "--out", str(tmp_path / "a"), "--meter-types", "1x"], "error: --meter-types '1x' is not a list"),
        (["build", "--out", str(tmp_path / "a"), "--meter-types", "150"], "meter_types"),
        (["build", "--out", str(tmp_path / "a"), "--identifier", "é"], "identifier must be 1..64 printable ASCII"),
        (["build", "--out", str(tmp_path / "a"), "--identifier", "x" * 65], "identifier must be 1..64"),
        (["build", "--out", str(tmp_path / "no" / "dir" / "a")], "cannot write"),
        (["sign", "--key", str(rsa_key), str(image)], "ECDSA P-256"),
        (["sign", "--key", str(tmp_path / "missing.pem"), str(image)], "cannot read"),
        (["inspect", str(tmp_path / "missing.smfw")], "cannot read"),
        (["upgrade", "--meter", "127.0.0.1:1", "--credentials", str(p256), str(image)], "is not signed"),
    ]
    for args, message in cases:
        line = one_error_line(fw(*args))
        assert message in line, (args, line)
    assert image.read_bytes() == built.read_bytes()  # a refused signing leaves the file as it was


def signed_copy(built: Path, tmp_path: Path) -> Path:
    image = tmp_path / "signed.smfw"
    image.write_bytes(built.read_bytes())
    ok(fw("sign", "--key", str(pem_key(tmp_path / "k.pem", ec.generate_private_key(ec.SECP256R1()))), str(image)))
    return image


@pytest.mark.parametrize("meter, message", [
    ("127.0.0.1:99999", "error: --meter '127.0.0.1:99999' is not HOST:PORT"),
    ("127.0.0.1:port", "is not HOST:PORT"),
    (":4059", "is not HOST:PORT"),
])
def test_a_bad_meter_address_is_one_line(built, tmp_path, meter, message):
    image = signed_copy(built, tmp_path)
    credentials = tmp_path / "c.json"
    credentials.write_text("{}")
    assert message in one_error_line(fw("upgrade", "--meter", meter, "--credentials", str(credentials), str(image)))


def test_a_bad_activation_time_is_refused_before_the_meter_is_asked(built, tmp_path):
    image = signed_copy(built, tmp_path)
    credentials = tmp_path / "c.json"
    credentials.write_text("{}")
    line = one_error_line(fw("upgrade", "--meter", f"127.0.0.1:{free_port()}", "--credentials", str(credentials),
                             "--activate", "tomorrow", str(image)))
    assert "error: --activate 'tomorrow' is neither now nor an ISO date and time" in line


def test_a_meter_that_cannot_be_associated_is_one_line_and_json_says_where(built, tmp_path):
    image = signed_copy(built, tmp_path)
    credentials = tmp_path / "c.json"
    credentials.write_text(json.dumps({"client_sap": 1, "authentication": 0}))
    port = free_port()  # nothing listens there
    line = one_error_line(fw("upgrade", "--meter", f"127.0.0.1:{port}", "--credentials", str(credentials),
                             "--timeout", "2", str(image)))
    assert line.startswith(f"error: associate: cannot connect to 127.0.0.1:{port}"), line
    result = fw("upgrade", "--meter", f"127.0.0.1:{port}", "--credentials", str(credentials), "--timeout", "2",
                "--json", str(image))
    assert result.exit_code == 1
    shown = json.loads(result.stdout)
    assert (shown["ok"], shown["step"], shown["block"], shown["result"]) == (False, "associate", None, None)


def test_the_progress_bar_redraws_in_place_and_ends_its_line():
    stream, now = io.StringIO(), [0.0]
    bar = ProgressBar(stream, 1_000_000, clock=lambda: now[0])
    bar(0, 1000)
    now[0] = 0.05
    bar(10, 1000)  # within a tenth of a second: not drawn
    now[0] = 2.0
    bar(500, 1000)  # 500 kB in 2 s
    now[0] = 2.01
    bar(1000, 1000)  # the last block is always drawn
    bar.finish()
    frames = stream.getvalue().split("\r")[1:]
    assert frames[0] == "[" + "." * 30 + "] 0/1000 blocks   0%  0 kB/s"
    assert frames[1] == "[" + "#" * 15 + "." * 15 + "] 500/1000 blocks  50%  250 kB/s"
    assert frames[2].startswith("[" + "#" * 30 + "] 1000/1000 blocks 100%") and frames[2].endswith("\n")
    assert len(frames) == 3
