"""Extension T: signed billing readouts. A readout captured from a running meter over the
wrapper (general-signing GET, signed with the meter's ECDSA P-256 key) is checked offline by
`smartmeter verify-reading` with the meter's certificate only; every change is refused.

gurux-dlms 1.0.203 (Python) and dlms-cosem 25.1.0 neither send general-signing requests nor
parse general-signing responses (gurux has no 0xDF command). So one readout is captured by our
head-end, and one is driven by gurux-dlms (association, HLS 7, its own ciphered GET) with the
general-signing layer built by hand in the test; the meter's signature is also checked with
the `openssl` command line. Expected values come from the meter's store and from the
certificate the meter's PKI issued."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meterproc import start_meter
from smartmeter.hes import readout
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import WrapperLink
from smartmeter.hes.credentials import load_credentials
from welmec_support import cli

# 2026-03-01 12:00:00, deviation and status not specified: the capture time the head-end asks for
CAPTURE_TIME = bytes.fromhex("07EA03010C000000FF800000")
OTHER_TIME = bytes.fromhex("07EA03020C000000FF800000")


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    """(meter data dir, readout file, meter certificate, credentials, +A and -A in Wh from the
    store before and after the capture)."""
    work = tmp_path_factory.mktemp("signed-readout")
    meter = start_meter(work / "meter-data")
    try:
        credentials_path = meter.data_dir / "credentials" / "data_readout.json"
        credentials = load_credentials(credentials_path)
        before = meter.energy_wh("a_plus"), meter.energy_wh("a_minus")

        async def go():
            link = WrapperLink("127.0.0.1", meter.wrapper_port, credentials.client_sap, credentials.server_sap, 10)
            async with MeterClient(link, security=credentials.security) as client:
                return await readout.capture(client, credentials.security.client_signing_key, date_time=CAPTURE_TIME)

        text = asyncio.run(go())
        by_cli = cli("client", "--port", str(meter.wrapper_port), "--credentials", str(credentials_path),
                     "signed-readout", str(work / "cli-readout.json"))
        assert by_cli.returncode == 0, by_cli.stderr
        after = meter.energy_wh("a_plus"), meter.energy_wh("a_minus")
    finally:
        meter.stop()
    file = work / "readout.json"
    file.write_text(text)
    cert = next((meter.data_dir / "credentials" / "demo-pki").glob("DEMO-meter-*-signing.pem"))
    return meter.data_dir, file, cert, credentials_path, before, after


def _verify(file, cert, *extra):
    return cli("verify-reading", str(file), "--cert", str(cert), *extra)


def _with_response(captured_file, tmp_path, change) -> object:
    fields = json.loads(captured_file.read_text())
    response = bytearray.fromhex(fields["signed_response"])
    change(response)
    fields["signed_response"] = response.hex()
    out = tmp_path / "changed.json"
    out.write_text(json.dumps(fields))
    return out


def _one_refusal(result, kind: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"({kind})" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def _cert_with(common_name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def _meter_title(cert_path) -> str:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


@pytest.mark.welmec("T1", "T4")
def test_a_signed_readout_verifies_offline_with_values_unit_time_and_origin(captured):
    """verify-reading accepts the captured readout with the meter's certificate and shows +A and -A in Wh (within the store's values around the capture), the meter's clock and the signer's system title."""
    _, file, cert, credentials, before, after = captured
    result = _verify(file, cert, "--credentials", str(credentials))
    assert result.returncode == 0, result.stderr
    title = _meter_title(cert)
    assert f"signed by the meter with system title {title}" in result.stdout
    values = {}
    for obis in ("1-0:1.8.0.255", "1-0:2.8.0.255"):
        match = re.search(rf"^{re.escape(obis)}\s+attr 2\s+(\S+) Wh$", result.stdout, re.M)
        assert match, result.stdout
        values[obis] = float(match.group(1))
    assert before[0] <= values["1-0:1.8.0.255"] <= after[0] + 1
    assert before[1] <= values["1-0:2.8.0.255"] <= after[1] + 1
    clock = re.search(r"^0-0:1\.0\.0\.255\s+attr 2\s+(.+)$", result.stdout, re.M)
    assert clock and str(dt.date.today().year) in clock.group(1)
    # without the reading client's keys the signature still verifies; the values stay closed
    closed = _verify(file, cert)
    assert closed.returncode == 0 and "(encrypted: give --credentials to read)" in closed.stdout


@pytest.mark.welmec("T2", "T3", "T6")
def test_every_changed_byte_of_the_signed_response_is_refused(captured):
    """One bit flipped in any single byte of the signed response (header, content, signature) makes verification fail; no value is output."""
    _, file, cert, credentials, _, _ = captured
    fields = json.loads(file.read_text())
    response = bytes.fromhex(fields["signed_response"])
    cert_pem = cert.read_bytes()
    assert readout.verify_readout(file.read_bytes(), cert_pem).results is None  # the control verifies
    for position in range(len(response)):
        changed = bytearray(response)
        changed[position] ^= 0x01
        fields["signed_response"] = changed.hex()
        with pytest.raises(readout.ReadoutError):
            readout.verify_readout(json.dumps(fields).encode(), cert_pem)


@pytest.mark.welmec("T2", "T3", "T6")
def test_verify_reading_refuses_one_changed_byte_with_one_line(captured, tmp_path):
    """verify-reading on the readout with one content byte changed: exit non-zero, one line naming the signature, no values."""
    _, file, cert, credentials, _, _ = captured

    def flip_last_content_byte(response):
        response[-(1 + 1 + 64)] ^= 0x80  # the byte before the signature's length and the 64-byte r||s

    result = _verify(_with_response(file, tmp_path, flip_last_content_byte), cert, "--credentials", str(credentials))
    _one_refusal(result, "signature")


@pytest.mark.welmec("T3", "T4")
def test_a_changed_timestamp_is_refused(captured, tmp_path):
    """The signed date-time changed from 2026-03-01 to 2026-03-02: verify-reading refuses it."""
    _, file, cert, _, _, _ = captured
    fields = json.loads(file.read_text())
    assert CAPTURE_TIME.hex().upper() in fields["signed_response"]  # the meter signed the capture time

    def change_time(response):
        at = bytes(response).index(CAPTURE_TIME)
        response[at:at + len(OTHER_TIME)] = OTHER_TIME

    _one_refusal(_verify(_with_response(file, tmp_path, change_time), cert), "signature")


@pytest.mark.welmec("T4")
def test_another_meters_key_is_refused(captured, tmp_path):
    """A certificate with this meter's system title but another key, and another meter's certificate: both refused."""
    _, file, cert, _, _, _ = captured
    impostor = tmp_path / "impostor.pem"
    impostor.write_bytes(_cert_with(_meter_title(cert)))
    _one_refusal(_verify(file, impostor), "signature")
    other = tmp_path / "other-meter.pem"
    other.write_bytes(_cert_with("4B464D0000000099"))
    _one_refusal(_verify(file, other), "signer")


@pytest.mark.welmec("T4")
def test_a_response_moved_to_another_request_is_refused(captured, tmp_path):
    """The signed answer put next to a different request (other OBIS codes): refused, the meter signed which request it answers."""
    _, file, cert, _, _, _ = captured
    fields = json.loads(file.read_text())
    fields["request"] = readout.request_for(((3, "1-0:3.8.0.255", 2),)).hex()
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(fields))
    _one_refusal(_verify(moved, cert), "binding")


@pytest.mark.welmec("T6")
@pytest.mark.parametrize("damage, kind", [
    ("truncated", "format"),
    ("malformed", "malformed"),
    ("not-a-readout", "format"),
    ("unknown-key", "certificate"),
    ("too-large", "format"),
])
def test_bad_input_gives_one_line_and_a_non_zero_exit(captured, tmp_path, damage, kind):
    """A truncated file, a signed response that is not an APDU, a file of another kind, a certificate file that is no certificate, a file past the size bound: one line each, exit non-zero."""
    _, file, cert, _, _, _ = captured
    text = file.read_text()
    target, cert_path = tmp_path / "readout.json", cert
    if damage == "truncated":
        target.write_text(text[: len(text) // 2])
    elif damage == "malformed":
        fields = json.loads(text)
        fields["signed_response"] = "DF0102"
        target.write_text(json.dumps(fields))
    elif damage == "too-large":  # a valid readout padded with JSON whitespace past the bound
        target.write_text(text + " " * readout.MAX_FILE)
    elif damage == "not-a-readout":
        target.write_text(json.dumps({"format": "something-else/1"}))
    else:
        target.write_text(text)
        cert_path = tmp_path / "key.pem"
        cert_path.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    _one_refusal(_verify(target, cert_path), kind)


@pytest.mark.welmec()
def test_a_missing_file_gives_one_line():
    """verify-reading on a path that does not exist: exit non-zero, one line, no traceback."""
    result = cli("verify-reading", "/nonexistent/readout.json", "--cert", "/nonexistent/meter.pem")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def _axdr_octets(value: bytes) -> bytes:
    assert len(value) < 0x80  # every header field here is short: one length byte (A-XDR)
    return bytes((len(value),)) + value


def _general_signing_by_hand(key, content: bytes, transaction_id: bytes, originator: bytes, recipient: bytes) -> bytes:
    """A general-signing APDU built from the Green Book's ASN.1 here, not with our codec: header
    fields each with its length, the signature over them and the content without its length."""
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    header = b"".join(_axdr_octets(f) for f in (transaction_id, originator, recipient, b"", b""))
    r, s = decode_dss_signature(key.sign(header + content, ec.ECDSA(hashes.SHA256())))
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    length = len(content)
    content_length = bytes((length,)) if length < 0x80 else bytes((0x82,)) + length.to_bytes(2, "big")
    return b"\xDF" + header + content_length + content + _axdr_octets(signature)


@pytest.mark.welmec("T1", "T3", "T4")
def test_a_readout_driven_by_gurux_verifies(tmp_path):
    """gurux-dlms associates (HLS 7, data readout client) and ciphers a GET of +A; the test signs that request by hand with `cryptography`; the meter's signed answer, saved as a readout, passes verify-reading and shows +A within the store's values around the read."""
    import sys
    from pathlib import Path

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from gurux_dlms.objects import GXDLMSRegister

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "interop"))
    from gurux_secure_peer import GuruxSecureClient

    meter = start_meter(tmp_path / "meter-data")
    try:
        credentials_path = meter.data_dir / "credentials" / "data_readout.json"
        creds = json.loads(credentials_path.read_text())
        cert = next((meter.data_dir / "credentials" / "demo-pki").glob("DEMO-meter-*-signing.pem"))
        before = meter.energy_wh("a_plus")
        gurux = GuruxSecureClient(meter.wrapper_port, credentials_path, 1)
        gurux.associate()
        frame = bytes(gurux.client.read(GXDLMSRegister("1.0.1.8.0.255"), 2)[0])
        glo_request = frame[8:]
        # the plain request inside gurux's general-glo-ciphering (tag, system title, length,
        # SC, IC, ciphertext || tag), opened with AES-GCM directly: nonce = system title || IC,
        # AAD = SC || AK
        assert glo_request[0] == 0xDB and glo_request[1] == 8
        assert glo_request[2:10] == bytes.fromhex(creds["client_system_title"])
        at = 11 if glo_request[10] < 0x80 else 11 + (glo_request[10] & 0x7F)
        security_control = glo_request[at:at + 1]
        assert security_control == b"\x31"  # authenticated and encrypted, suite 1
        body = glo_request[at + 5:]  # ciphertext, then a 12-byte tag (AESGCM takes 16 only)
        opener = Cipher(algorithms.AES(bytes.fromhex(creds["ek"])),
                        modes.GCM(glo_request[2:10] + glo_request[at + 1:at + 5], body[-12:], min_tag_length=12)).decryptor()
        opener.authenticate_additional_data(security_control + bytes.fromhex(creds["ak"]))
        plain_request = opener.update(body[:-12]) + opener.finalize()
        assert plain_request[:2] == b"\xC0\x01"  # get-request-normal
        key = serialization.load_pem_private_key((credentials_path.parent / creds["client_key_pem"]).read_bytes(), None)
        meter_title = bytes.fromhex(_meter_title(cert))
        signed = _general_signing_by_hand(key, glo_request, readout.transaction_id_for(plain_request),
                                          bytes.fromhex(creds["client_system_title"]), meter_title)
        answer = gurux.raw(frame[:6] + len(signed).to_bytes(2, "big") + signed)
        gurux.sock.close()
        after = meter.energy_wh("a_plus")
    finally:
        meter.stop()
    assert answer[0] == 0xDF, answer.hex()
    file = tmp_path / "readout.json"
    file.write_text(readout.envelope(plain_request, answer))
    result = _verify(file, cert, "--credentials", str(credentials_path))
    assert result.returncode == 0, result.stderr
    match = re.search(r"^1-0:1\.8\.0\.255\s+attr 2\s+(\S+)$", result.stdout, re.M)
    assert match and before <= int(match.group(1)) <= after + 1, result.stdout


def _fields_by_hand(apdu: bytes) -> tuple[bytes, bytes]:
    """(signed data, r || s) of a general-signing APDU, parsed here from the ASN.1 (A-XDR
    lengths of one byte, or 0x81/0x82 and the length) without our codec."""
    def octets(at: int) -> tuple[int, int]:
        first = apdu[at]
        if first < 0x80:
            return at + 1, first
        n = first & 0x7F
        return at + 1 + n, int.from_bytes(apdu[at + 1:at + 1 + n], "big")

    assert apdu[0] == 0xDF
    at = 1
    for _ in range(5):  # transaction-id, originator, recipient, date-time, other-information
        start, length = octets(at)
        at = start + length
    header = apdu[1:at]
    start, length = octets(at)
    content = apdu[start:start + length]
    sig_start, sig_length = octets(start + length)
    assert sig_start + sig_length == len(apdu)
    return header + content, apdu[sig_start:]


@pytest.mark.welmec("T3", "T4")
def test_openssl_verifies_the_meters_signature_on_the_readout(captured, tmp_path):
    """The `openssl` command line verifies the captured readout's signature with the meter certificate's key (ECDSA P-256, SHA-256), and refuses it after one changed content byte."""
    import subprocess

    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    _, file, cert, _, _, _ = captured
    signed_data, raw = _fields_by_hand(bytes.fromhex(json.loads(file.read_text())["signed_response"]))
    assert len(raw) == 64
    public = tmp_path / "meter-public.pem"
    public.write_bytes(x509.load_pem_x509_certificate(cert.read_bytes()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    signature = tmp_path / "signature.der"
    signature.write_bytes(encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")))

    def openssl_verifies(data: bytes) -> bool:
        (tmp_path / "data.bin").write_bytes(data)
        result = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(public), "-signature", str(signature),
                                 str(tmp_path / "data.bin")], capture_output=True, timeout=60)
        return result.returncode == 0 and b"Verified OK" in result.stdout

    assert openssl_verifies(signed_data)
    assert not openssl_verifies(signed_data[:-1] + bytes((signed_data[-1] ^ 0x01,)))


@pytest.mark.welmec("T6")
def test_the_verifier_is_total_on_validly_signed_garbage():
    """Signed readouts whose signature verifies but whose request or content is damaged (cut, bytes changed, random): each gives a readout or a ReadoutError, never another exception."""
    import random

    from smartmeter.dlms.apdu.ciphered import GeneralSigning

    rng = random.Random(7)
    key = ec.generate_private_key(ec.SECP256R1())
    title = bytes.fromhex("4B464D0000000042")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, title.hex().upper())])
    now = dt.datetime.now(dt.timezone.utc)
    cert_pem = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(2).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
                .sign(key, hashes.SHA256())).public_bytes(serialization.Encoding.PEM)
    request = readout.request_for()
    # get-response-with-list: +A, its scaler_unit, -A, read-write-denied, a clock value
    good = bytes.fromhex("C403C1050006000316610002020F00161E000600000005010300090C07EA0304030C000000FF8000")
    ek, ak = bytes(range(16)), bytes(range(16, 32))
    outcomes = {"readout": 0, "refused": 0}
    for i in range(600):
        content = bytearray(good)
        kind = i % 4
        if kind == 0:
            content = content[:rng.randrange(len(content))]
        elif kind == 1:
            for _ in range(rng.randrange(1, 4)):
                content[rng.randrange(len(content))] = rng.randrange(256)
        elif kind == 2:
            content = bytearray(rng.randbytes(rng.randrange(0, 80)))
        else:  # a ciphered wrapper around random bytes
            content = bytearray(bytes((rng.choice((0xCC, 0xD4, 0xDB, 0xDD, 0xDF)),)) + rng.randbytes(rng.randrange(0, 40)))
        this_request = request if i % 7 else request[:rng.randrange(len(request))]
        signed = GeneralSigning.sign(key, bytes(content), readout.transaction_id_for(this_request), title, b"",
                                     b"", b"", 1).to_bytes()
        try:
            readout.verify_readout(readout.envelope(this_request, signed).encode(), cert_pem, ek, ak)
            outcomes["readout"] += 1
        except readout.ReadoutError:
            outcomes["refused"] += 1
    assert outcomes["readout"] > 0 and outcomes["refused"] > 0, outcomes


@pytest.mark.welmec("T1", "T4")
def test_a_readout_captured_with_the_command_line_verifies(captured):
    """`smartmeter client --credentials ... signed-readout FILE` writes a readout that verify-reading accepts, with +A within the store's values around the capture."""
    _, file, cert, credentials, before, after = captured
    result = _verify(file.parent / "cli-readout.json", cert, "--credentials", str(credentials))
    assert result.returncode == 0, result.stderr
    match = re.search(r"^1-0:1\.8\.0\.255\s+attr 2\s+(\S+) Wh$", result.stdout, re.M)
    assert match and before[0] <= float(match.group(1)) <= after[0] + 1, result.stdout


@pytest.mark.welmec()
def test_the_capture_command_refuses_a_client_without_a_signing_key(captured, tmp_path):
    """signed-readout as the public client (no signing key): one line, non-zero, no file written."""
    out = tmp_path / "readout.json"
    result = cli("client", "--port", "1", "signed-readout", str(out))
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1 and not out.exists()
