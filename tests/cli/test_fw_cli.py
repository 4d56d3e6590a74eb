"""`smartmeter fw build / sign / inspect / upgrade` as a user types them: images built from the
package, signed, inspected and checked against a key; every mistake is one line on stderr and
exit code 1, found before a meter is asked where it can be. Against real meter processes: an
application upgrade activated now or at a time, a transfer cut by a power failure and resumed,
and the meter's refusals as one line each."""
from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
import pty
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import smartmeter
from meterproc import free_port, start_meter
from smartmeter.cli.firmware import ProgressBar, fw_group
from smartmeter.cosem import axdr
from smartmeter.cosem.data import Data
from smartmeter.hes import firmware
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import WrapperLink
from smartmeter.hes.credentials import load_credentials

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


# ----------------------------------------------------------------------------- against a meter
#
# A real meter process (tests/meterproc.py) and an image of the application whose version is one
# above the running one, built from a copy of this package and signed with the meter's demo
# firmware key: what a manufacturer's release would be.


def bumped(version: str) -> str:
    numbers = version.split(".")
    return ".".join(numbers[:-1] + [str(int(numbers[-1]) + 1)])


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, str]:
    """(unsigned application image, its version)."""
    root = tmp_path_factory.mktemp("release")
    shutil.copytree(PACKAGE, root / "smartmeter", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    init = root / "smartmeter" / "__init__.py"
    running = declared("__init__.py", r'^__version__ = "([^"]+)"$')
    version = bumped(running)
    init.write_text(init.read_text().replace(f'__version__ = "{running}"', f'__version__ = "{version}"'))
    out = root / "application.smfw"
    ok(fw("build", "--out", str(out), "--parts", "application", "--package", str(root / "smartmeter")))
    return out, version


def signed_for(meter, release_image: Path, tmp_path: Path) -> Path:
    image = tmp_path / "release.smfw"
    image.write_bytes(release_image.read_bytes())
    ok(fw("sign", "--key", str(meter.data_dir / "credentials" / "demo-pki" / "firmware-signing-key.pem"), str(image)))
    return image


def credentials_of(meter, name: str = "management") -> Path:
    return meter.data_dir / "credentials" / f"{name}.json"


def session(meter, name: str = "management") -> MeterClient:
    creds = load_credentials(credentials_of(meter, name))
    return MeterClient(WrapperLink("127.0.0.1", meter.wrapper_port, creds.client_sap, creds.server_sap),
                       security=creds.security)


def read(meter, *targets: tuple[str, int, int], name: str = "management") -> list:
    async def go():
        async with session(meter, name) as client:
            return [(await client.get(obis, attribute, class_id=class_id)).value for obis, attribute, class_id in targets]
    return asyncio.run(go())


def upgrade(meter, image: Path, *args: str):
    return fw("upgrade", "--meter", f"127.0.0.1:{meter.wrapper_port}", "--credentials", str(credentials_of(meter)),
              *args, str(image))


@pytest.fixture
def own_meter(tmp_path):
    holder = {"meter": start_meter(tmp_path / "meter")}
    yield holder
    holder["meter"].stop()


def test_an_upgrade_activated_now_runs_the_new_application(own_meter, release, tmp_path):
    meter = own_meter["meter"]
    image = signed_for(meter, release[0], tmp_path)
    shown = json.loads(ok(fw("inspect", str(image), "--json")))
    (part,) = shown["parts"]
    line = ok(upgrade(meter, image, "--activate", "now")).strip()
    blocks = -(-image.stat().st_size // 1024)
    assert line.startswith(f"{shown['identifier']}: {image.stat().st_size} bytes in {blocks} blocks of 1024 "
                           f"({blocks} sent) in "), line
    assert f"; to activate: {shown['identifier']}, {image.stat().st_size} bytes, signature {shown['signature']}" \
        in line
    assert line.endswith(f"; activated: status 6 activation successful, running legal {read_legal(meter)}, "
                         f"application {release[1]}"), line
    status, identifier, digest = read(meter, ("0-0:44.0.0.255", 6, 18), ("1-1:0.2.0.255", 2, 1),
                                      ("1-1:0.2.8.255", 2, 1))
    assert (status, identifier, digest.hex()) == (6, release[1].encode(), part["digest"])


def read_legal(meter) -> str:
    return read(meter, ("1-0:0.2.0.255", 2, 1), name="data_readout")[0].decode()


def test_a_transfer_cut_by_a_power_failure_resumes_with_the_blocks_the_meter_kept(own_meter, release, tmp_path):
    meter = own_meter["meter"]
    image = signed_for(meter, release[0], tmp_path)
    raw = image.read_bytes()
    identifier = json.loads(ok(fw("inspect", str(image), "--json")))["identifier"]
    blocks, kept = -(-len(raw) // 1024), 100

    async def first_part():
        async with session(meter) as client:
            await firmware.initiate(client, identifier.encode(), len(raw))
            await firmware.transfer(client, raw, 1024, range(kept))
            await asyncio.sleep(2.5)  # the meter stores the blocks it has at least once a second

    asyncio.run(first_part())
    meter.power_failure()
    meter = own_meter["meter"] = start_meter(meter.data_dir)
    result = upgrade(meter, image, "--json")
    report = json.loads(ok(result))
    assert (report["already_on_meter"], report["sent"], report["resent"]) == (kept, blocks - kept, 0)
    assert report["status"] == 3 and report["image_to_activate_info"][0]["identification"] == identifier
    assert (meter.data_dir / "firmware" / "holding.img").read_bytes() == raw


def test_a_transfer_cut_at_once_loses_at_most_the_last_seconds_blocks_and_completes(own_meter, release, tmp_path):
    meter = own_meter["meter"]
    image = signed_for(meter, release[0], tmp_path)
    raw = image.read_bytes()
    identifier = json.loads(ok(fw("inspect", str(image), "--json")))["identifier"]
    blocks, sent = -(-len(raw) // 1024), 200

    async def first_part():
        async with session(meter) as client:
            await firmware.initiate(client, identifier.encode(), len(raw))
            await firmware.transfer(client, raw, 1024, range(sent))

    asyncio.run(first_part())
    meter.power_failure()  # no time to store the last blocks
    meter = own_meter["meter"] = start_meter(meter.data_dir)
    report = json.loads(ok(upgrade(meter, image, "--json")))
    assert report["already_on_meter"] <= sent and report["sent"] == blocks - report["already_on_meter"]
    assert report["status"] == 3 and (meter.data_dir / "firmware" / "holding.img").read_bytes() == raw


def test_a_scheduled_activation_runs_at_its_time(own_meter, release, tmp_path):
    meter = own_meter["meter"]
    image = signed_for(meter, release[0], tmp_path)
    when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=8)
    line = ok(upgrade(meter, image, "--activate", when.isoformat())).strip()
    (clock,) = read(meter, ("0-0:1.0.0.255", 2, 8))
    local = when.astimezone(dt.timezone(-dt.timedelta(minutes=axdr.decode_date_time(clock).deviation)))
    assert line.endswith(f"; activation scheduled for {local.replace(tzinfo=None).isoformat(sep=' ')} meter time")
    (times,) = read(meter, ("0-0:15.0.2.255", 4, 22))
    assert [(bytes(t.value), bytes(d.value)) for t, d in (e.value for e in times)] == [
        (bytes([local.hour, local.minute, local.second, 0]), bytes([local.year >> 8, local.year & 0xFF, local.month,
                                                                    local.day, 0xFF]))]

    async def outcome():
        return await firmware.wait_for_restart(lambda: session(meter), timeout=60, poll=0.5)

    status, running = asyncio.run(outcome())
    assert status == 6 and dict((f.part, f.identifier) for f in running)["application"] == release[1].encode()
    assert dt.datetime.now(dt.timezone.utc) >= when


@pytest.fixture(scope="module")
def shared_meter(tmp_path_factory):
    m = start_meter(tmp_path_factory.mktemp("fw-refusals") / "meter")
    yield m
    m.stop()


def test_an_image_signed_with_another_key_fails_verification_in_one_line(shared_meter, release, tmp_path):
    image = tmp_path / "foreign.smfw"
    image.write_bytes(release[0].read_bytes())
    ok(fw("sign", "--key", str(pem_key(tmp_path / "k.pem", ec.generate_private_key(ec.SECP256R1()))), str(image)))
    line = one_error_line(upgrade(shared_meter, image))
    assert line.startswith("error: image_verify: other-reason (the meter does not accept the image (its log names "
                           "the check: signature, "), line
    assert "status 4 verification failed) (hint: " in line, line
    (status,) = read(shared_meter, ("0-0:44.0.0.255", 6, 18))
    assert status == 4


def test_a_client_other_than_management_is_told_in_one_line(shared_meter, release, tmp_path):
    image = signed_for(shared_meter, release[0], tmp_path)
    result = fw("upgrade", "--meter", f"127.0.0.1:{shared_meter.wrapper_port}", "--credentials",
                str(credentials_of(shared_meter, "data_readout")), str(image))
    assert one_error_line(result).startswith("error: image_transfer_status: object-undefined (this client does not "
                                             "see the image transfer object 0-0:44.0.0.255)")


def test_the_management_client_is_not_taken_to_the_optical_port(shared_meter, release, tmp_path):
    image = signed_for(shared_meter, release[0], tmp_path)
    result = fw("upgrade", "--meter", f"127.0.0.1:{shared_meter.hdlc_port}", "--hdlc", "--credentials",
                str(credentials_of(shared_meter)), str(image))
    assert one_error_line(result).startswith(f"error: {credentials_of(shared_meter)}: this client may associate over "
                                             "lan only, not over the optical port (HDLC) (hint: leave out --hdlc)")


def test_a_block_size_is_written_and_refused_during_a_transfer(shared_meter, release, tmp_path):
    image = signed_for(shared_meter, release[0], tmp_path)
    raw = image.read_bytes()
    asyncio.run(_abort(shared_meter))  # whatever another test left: the block size is written before initiation
    report = json.loads(ok(upgrade(shared_meter, image, "--block-size", "512", "--json")))
    assert (report["block_size"], report["blocks"], report["sent"]) == (512, -(-len(raw) // 512), -(-len(raw) // 512))
    # a transfer under way (initiated, one block in) keeps its block size
    asyncio.run(_start_transfer(shared_meter, b"OTHER", len(raw)))
    line = one_error_line(upgrade(shared_meter, image, "--block-size", "1024"))
    assert line.startswith("error: image_block_size: other-reason (a transfer is under way with blocks of 512 bytes, "
                           "status 1 initiated) (hint: "), line
    (block_size,) = read(shared_meter, ("0-0:44.0.0.255", 2, 18))
    assert block_size == 512


async def _start_transfer(meter, identifier: bytes, size: int) -> None:
    async with session(meter) as client:
        await firmware.initiate(client, identifier, size)


async def _abort(meter) -> None:
    async with session(meter) as client:
        await client.set("0-0:44.0.0.255", 5, Data.boolean(False), class_id=18)
        await client.set("0-0:44.0.0.255", 5, Data.boolean(True), class_id=18)


def test_after_a_failed_verification_the_block_size_waits_for_an_abort(shared_meter, release, tmp_path):
    image = tmp_path / "foreign.smfw"
    image.write_bytes(release[0].read_bytes())
    ok(fw("sign", "--key", str(pem_key(tmp_path / "k.pem", ec.generate_private_key(ec.SECP256R1()))), str(image)))
    asyncio.run(_abort(shared_meter))
    (block_size,) = read(shared_meter, ("0-0:44.0.0.255", 2, 18))  # an abort keeps it
    one_error_line(upgrade(shared_meter, image))  # verification fails: status 4
    line = one_error_line(upgrade(shared_meter, image, "--block-size", "256" if block_size != 256 else "128"))
    assert line.startswith(f"error: image_block_size: other-reason (the last transfer keeps the block size {block_size} "
                           "until it is activated or aborted, status 4 verification failed) (hint: "), line
    assert "boolean:false" in line


def smartmeter_fw(*args: str, stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "smartmeter", "fw", *args], stdout=subprocess.PIPE,
                            stderr=stderr, text=True)


def test_the_progress_bar_is_drawn_on_a_terminal_only(shared_meter, release, tmp_path):
    image = signed_for(shared_meter, release[0], tmp_path)
    blocks = -(-image.stat().st_size // 1024)
    args = ("upgrade", "--meter", f"127.0.0.1:{shared_meter.wrapper_port}", "--credentials",
            str(credentials_of(shared_meter)), "--block-size", "1024", str(image))
    asyncio.run(_abort(shared_meter))
    piped = smartmeter_fw(*args)
    out, err = piped.communicate(timeout=120)
    assert piped.returncode == 0 and err == "" and len(out.splitlines()) == 1, (out, err)

    asyncio.run(_abort(shared_meter))
    terminal, other_end = pty.openpty()
    shown = smartmeter_fw(*args, stderr=other_end)
    os.close(other_end)
    drawn = b""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the terminal's other end closed (Linux: EIO)
            break
        if not chunk:
            break
        drawn += chunk
    os.close(terminal)
    out, _ = shown.communicate(timeout=120)
    text = drawn.decode()
    assert shown.returncode == 0 and len(out.splitlines()) == 1
    assert text.startswith("\r[") and f"] {blocks}/{blocks} blocks 100%" in text and text.endswith("\n"), text
    assert "\n" not in text.rstrip("\r\n")  # redrawn in place, one line ended at the end


def test_a_failure_through_the_smartmeter_command_is_one_line_and_exit_code_1(shared_meter, release, tmp_path):
    image = tmp_path / "foreign.smfw"
    image.write_bytes(release[0].read_bytes())
    ok(fw("sign", "--key", str(pem_key(tmp_path / "k.pem", ec.generate_private_key(ec.SECP256R1()))), str(image)))
    run = smartmeter_fw("upgrade", "--meter", f"127.0.0.1:{shared_meter.wrapper_port}", "--credentials",
                        str(credentials_of(shared_meter)), str(image))
    out, err = run.communicate(timeout=120)
    assert run.returncode == 1 and out == ""
    (line,) = err.splitlines()
    assert line.startswith("error: image_verify: other-reason (") and "status 4 verification failed" in line


def test_a_verified_image_is_activated_later_without_sending_it_again(own_meter, release, tmp_path):
    meter = own_meter["meter"]
    image = signed_for(meter, release[0], tmp_path)
    identifier = json.loads(ok(fw("inspect", str(image), "--json")))["identifier"]
    first = ok(upgrade(meter, image)).strip()
    assert first.endswith("; not activated (upgrade again with --activate now or --activate ISO)"), first
    later = json.loads(ok(upgrade(meter, image, "--activate", "now", "--json")))
    assert (later["already_verified"], later["sent"], later["status"]) == (True, 0, 6)
    assert later["identifier"] == identifier
    assert read(meter, ("1-1:0.2.0.255", 2, 1)) == [release[1].encode()]


def test_over_the_optical_port_the_maintenance_client_upgrades(own_meter, release, tmp_path):
    meter = own_meter["meter"]
    image = signed_for(meter, release[0], tmp_path)
    blocks = -(-image.stat().st_size // 1024)
    result = fw("upgrade", "--meter", f"127.0.0.1:{meter.hdlc_port}", "--hdlc", "--credentials",
                str(credentials_of(meter, "maintenance")), "--activate", "now", "--json", str(image))
    report = json.loads(ok(result))
    assert (report["blocks"], report["sent"], report["status"]) == (blocks, blocks, 6)
    assert {f["part"]: f["identifier"] for f in report["active_firmware"]}["application"] == release[1]
    assert read(meter, ("1-1:0.2.0.255", 2, 1)) == [release[1].encode()]
