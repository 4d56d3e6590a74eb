"""DLMS certificate profile, the meter's certificate store (companion §3.5.2) and the
IC 64 certificate structures.

Certificates are built here with `cryptography` directly (not with hes.pki), so every
profile violation can be produced on purpose.
"""
from __future__ import annotations

import datetime as dt
import json
import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartmeter.cosem import axdr
from smartmeter.cosem.data import Data
from smartmeter.dlms.security import certificates as c
from smartmeter.dlms.security.errors import SecurityError
from smartmeter.errors import DecodeError, SmartmeterError

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
METER_TITLE = bytes.fromhex("4B464D0000000001")  # "KFM" + serial 1
HES_TITLE = b"HES" + bytes(4) + b"\x01"


# ----------------------------------------------------------------- certificate kit


def key(curve=ec.SECP256R1):
    return ec.generate_private_key(curve())


def usage(*names):
    flags = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment",
                           "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
                           "encipher_only", "decipher_only"), False)
    flags.update(dict.fromkeys(names, True))
    return x509.KeyUsage(**flags)


def build(subject_key, issuer_key, *, cn, issuer=None, ca=False, path_length=None,
          key_usage=None, not_before=NOW - dt.timedelta(days=1),
          not_after=NOW + dt.timedelta(days=365), hash_=hashes.SHA256, ski=True, aki=True,
          extra=(), serial=None, subject_name=None):
    """One certificate; `issuer` is the issuing x509.Certificate (None: self-signed)."""
    name = subject_name if subject_name is not None else x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer.subject if issuer is not None else name)
         .public_key(subject_key.public_key())
         .serial_number(serial if serial is not None else x509.random_serial_number())
         .not_valid_before(not_before).not_valid_after(not_after))
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
    if key_usage is None:
        key_usage = usage("key_cert_sign", "crl_sign") if ca else usage("digital_signature")
    if key_usage is not False:
        b = b.add_extension(key_usage, critical=True)
    if ski:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()),
                            critical=False)
    if aki and issuer is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.public_key()), critical=False)
    for ext, critical in extra:
        b = b.add_extension(ext, critical=critical)
    return b.sign(issuer_key, hash_())


def der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


class Pki:
    """Root -> sub-CA -> end entities, all suite 1 unless told otherwise."""

    def __init__(self, curve=ec.SECP256R1, hash_=hashes.SHA256, root_cn="Test Root",
                 sub_cn="Test Sub-CA", root_path_length=1):
        self.curve, self.hash = curve, hash_
        self.root_key = key(curve)
        self.root = build(self.root_key, self.root_key, cn=root_cn, ca=True,
                          path_length=root_path_length, hash_=hash_, aki=False,
                          not_after=NOW + dt.timedelta(days=3650))
        self.sub_key = key(curve)
        self.sub = build(self.sub_key, self.root_key, cn=sub_cn, issuer=self.root, ca=True,
                         path_length=0, hash_=hash_, not_after=NOW + dt.timedelta(days=3000))

    def sub_ca(self, cn):
        k = key(self.curve)
        return build(k, self.root_key, cn=cn, issuer=self.root, ca=True, path_length=0,
                     hash_=self.hash), k

    def entity(self, title=HES_TITLE, *, subject_key=None, usage_names=("digital_signature",),
               issuer=None, issuer_key=None, **kw):
        kw.setdefault("hash_", self.hash)
        return build(subject_key or key(self.curve), issuer_key or self.sub_key,
                     cn=title.hex().upper(), issuer=issuer or self.sub,
                     key_usage=usage(*usage_names), ski=False, **kw)


@pytest.fixture(scope="module")
def pki():
    return Pki()


def new_store(pki, suite=1):
    store = c.CertificateStore(METER_TITLE, suite=suite)
    store.install_root(der(pki.root), NOW)
    store.import_certificate(der(pki.sub), NOW)
    return store


# ------------------------------------------------------------------ the profile


def test_parse_end_entity_fields(pki):
    cert = pki.entity(serial=0x00AB_CDEF)
    parsed = c.parse_certificate(der(cert), now=NOW)
    assert parsed.system_title == HES_TITLE
    assert parsed.common_name == HES_TITLE.hex().upper()
    assert parsed.certificate_type == c.CertificateType.DIGITAL_SIGNATURE
    assert not parsed.is_ca and not parsed.self_signed
    assert parsed.serial_number == 0xABCDEF and parsed.serial_number_bytes == b"\xab\xcd\xef"
    assert parsed.issuer == pki.sub.subject.public_bytes()
    assert parsed.issuer == c.parse_certificate(der(pki.sub)).subject
    assert parsed.der == der(cert)
    assert parsed.authority_key_identifier == x509.SubjectKeyIdentifier.from_public_key(
        pki.sub_key.public_key()).digest


def test_parse_accepts_pem_bytes_and_text(pki):
    cert = pki.entity()
    pem = cert.public_bytes(serialization.Encoding.PEM)
    assert c.parse_certificate(pem) == c.parse_certificate(der(cert))
    assert c.parse_certificate(pem.decode()) == c.parse_certificate(der(cert))
    assert c.parse_certificate(b"\n  " + pem).der == der(cert)


def test_parse_ca_and_key_agreement(pki):
    root = c.parse_certificate(der(pki.root))
    assert root.is_ca and root.self_signed and root.path_length == 1
    assert root.certificate_type is None and root.system_title is None
    ka = c.parse_certificate(der(pki.entity(usage_names=("key_agreement",))))
    assert ka.certificate_type == c.CertificateType.KEY_AGREEMENT
    tls = c.parse_certificate(der(pki.entity(usage_names=("digital_signature", "key_agreement"))))
    assert tls.certificate_type == c.CertificateType.TLS


def test_lowercase_hex_system_title_is_accepted(pki):
    cert = build(key(), pki.sub_key, cn=HES_TITLE.hex(), issuer=pki.sub, ski=False)
    assert c.parse_certificate(der(cert)).system_title == HES_TITLE


def test_suite_2_profile():
    p2 = Pki(curve=ec.SECP384R1, hash_=hashes.SHA384)
    parsed = c.parse_certificate(der(p2.entity()), suite=2)
    assert parsed.suite == 2
    # a suite-2 certificate is not a suite-1 certificate, and the reverse
    with pytest.raises(c.WrongSignatureAlgorithmError):
        c.parse_certificate(der(p2.entity()), suite=1)
    with pytest.raises(c.WrongSignatureAlgorithmError):
        c.parse_certificate(der(Pki().entity()), suite=2)


@pytest.mark.parametrize("blob", [
    b"", b"\x00", b"\x30", b"\x30\x03\x02\x01\x01", b"hello world", bytes(100),
    b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    b"-----BEGIN CERTIFICATE-----\n", "caf\u00e9",
])
def test_garbage_is_a_format_error(blob):
    with pytest.raises(c.CertificateFormatError) as info:
        c.parse_certificate(blob)
    assert isinstance(info.value, DecodeError) and isinstance(info.value, SecurityError)


@pytest.mark.parametrize("value", [None, 42, ["x"], object()])
def test_non_bytes_is_a_format_error(value):
    with pytest.raises(c.CertificateFormatError):
        c.parse_certificate(value)


def test_trailing_bytes_are_refused(pki):
    with pytest.raises(c.CertificateFormatError):
        c.parse_certificate(der(pki.entity()) + b"\x00")


def test_oversized_is_refused_before_parsing(pki):
    with pytest.raises(c.CertificateTooLargeError):
        c.parse_certificate(b"\x30\x82\x08\x00" + bytes(c.MAX_CERTIFICATE_SIZE))
    with pytest.raises(c.CertificateTooLargeError):
        c.parse_certificate(b"-----BEGIN CERTIFICATE-----\n" + b"A" * 5000)
    # a real certificate inflated past 2 KiB by a (non-critical) extension
    big = pki.entity(extra=[(x509.UnrecognizedExtension(
        x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x04\x82\x08\x00" + bytes(2048)), False)])
    assert len(der(big)) > c.MAX_CERTIFICATE_SIZE
    with pytest.raises(c.CertificateTooLargeError):
        c.parse_certificate(der(big))
    with pytest.raises(c.CertificateTooLargeError):
        c.parse_certificate(big.public_bytes(serialization.Encoding.PEM))
    # just under the limit is fine
    ok = pki.entity(extra=[(x509.UnrecognizedExtension(
        x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x04\x82\x05\x00" + bytes(1280)), False)])
    assert len(der(ok)) <= c.MAX_CERTIFICATE_SIZE
    c.parse_certificate(der(ok))


def test_wrong_curve(pki):
    for curve in (ec.SECP384R1, ec.SECP256K1, ec.SECP521R1):
        cert = build(key(curve), pki.sub_key, cn=HES_TITLE.hex(), issuer=pki.sub, ski=False)
        with pytest.raises(c.WrongCurveError, match=curve.name):
            c.parse_certificate(der(cert))


def test_rsa_key_is_wrong_curve(pki):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cert = build(rsa_key, pki.sub_key, cn=HES_TITLE.hex(), issuer=pki.sub, ski=False)
    with pytest.raises(c.WrongCurveError):
        c.parse_certificate(der(cert))


def test_wrong_signature_hash(pki):
    with pytest.raises(c.WrongSignatureAlgorithmError):
        c.parse_certificate(der(pki.entity(hash_=hashes.SHA512)))


@pytest.mark.parametrize("names", [
    (), ("key_encipherment",), ("content_commitment",), ("digital_signature", "key_encipherment"),
    ("digital_signature", "key_cert_sign"), ("crl_sign",),
])
def test_wrong_end_entity_key_usage(pki, names):
    with pytest.raises(c.WrongKeyUsageError):
        c.parse_certificate(der(pki.entity(usage_names=names)))


def test_missing_key_usage(pki):
    cert = build(key(), pki.sub_key, cn=HES_TITLE.hex(), issuer=pki.sub, key_usage=False)
    with pytest.raises(c.WrongKeyUsageError, match="missing"):
        c.parse_certificate(der(cert))


def test_wrong_ca_key_usage(pki):
    k = key()
    for names in [("digital_signature",), ("crl_sign",), ("key_cert_sign", "digital_signature")]:
        cert = build(k, pki.root_key, cn="Bad CA", issuer=pki.root, ca=True,
                     key_usage=usage(*names))
        with pytest.raises(c.WrongKeyUsageError):
            c.parse_certificate(der(cert))


def test_ca_without_subject_key_identifier(pki):
    cert = build(key(), pki.root_key, cn="CA", issuer=pki.root, ca=True, ski=False)
    with pytest.raises(c.CertificateProfileError, match="subjectKeyIdentifier"):
        c.parse_certificate(der(cert))


def test_end_entity_without_authority_key_identifier(pki):
    cert = build(key(), pki.sub_key, cn=HES_TITLE.hex(), issuer=pki.sub, aki=False)
    with pytest.raises(c.CertificateProfileError, match="authorityKeyIdentifier"):
        c.parse_certificate(der(cert))


@pytest.mark.parametrize("name", [
    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meter 1")]),
    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "4B464D00000000")]),
    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "4B464D000000000G")]),
    x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "4B464D0000000001")]),
    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "4B464D0000000001"),
               x509.NameAttribute(NameOID.COMMON_NAME, "4B464D0000000002")]),
    x509.Name([]),
])
def test_missing_system_title(pki, name):
    cert = build(key(), pki.sub_key, cn="", subject_name=name, issuer=pki.sub, ski=False)
    with pytest.raises(c.MissingSystemTitleError):
        c.parse_certificate(der(cert))


def test_validity_window(pki):
    cert = pki.entity(not_before=NOW, not_after=NOW + dt.timedelta(days=1))
    c.parse_certificate(der(cert), now=NOW)  # the bounds themselves are inside
    c.parse_certificate(der(cert), now=NOW + dt.timedelta(days=1))
    with pytest.raises(c.CertificateNotYetValidError):
        c.parse_certificate(der(cert), now=NOW - dt.timedelta(seconds=1))
    with pytest.raises(c.CertificateExpiredError):
        c.parse_certificate(der(cert), now=NOW + dt.timedelta(days=1, seconds=1))
    # without a time only the profile is checked
    c.parse_certificate(der(cert))
    # any timezone works; naive times are a programming error
    c.parse_certificate(der(cert), now=NOW.astimezone(dt.timezone(dt.timedelta(hours=2))))
    with pytest.raises(TypeError):
        c.parse_certificate(der(cert), now=NOW.replace(tzinfo=None))


def test_unknown_critical_extension_is_refused_noncritical_tolerated(pki):
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.2"), b"\x05\x00")
    with pytest.raises(c.CertificateProfileError, match="critical"):
        c.parse_certificate(der(pki.entity(extra=[(ext, True)])))
    c.parse_certificate(der(pki.entity(extra=[(ext, False)])))


@pytest.mark.parametrize("version", [0, 1])
def test_other_versions_are_refused(pki, version):
    # the explicit version field [0] INTEGER 2 of a v3 certificate set to v1 (which DER
    # forbids encoding explicitly) or v2
    raw = bytearray(der(pki.entity()))
    at = raw.index(b"\xa0\x03\x02\x01\x02")
    raw[at + 4] = version
    with pytest.raises(c.CertificateFormatError):
        c.parse_certificate(bytes(raw))


def test_error_family():
    for name in c.__all__:
        obj = getattr(c, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, c.CertificateError) and issubclass(obj, SmartmeterError)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_random_bytes_only_raise_certificate_error(blob):
    try:
        c.parse_certificate(blob)
    except c.CertificateError:
        pass


_SEED_CERT = None


def _seed_der():
    global _SEED_CERT
    if _SEED_CERT is None:
        _SEED_CERT = der(Pki().entity())
    return _SEED_CERT


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_certificates_only_raise_certificate_error(data):
    raw = bytearray(_seed_der())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        at = data.draw(st.integers(0, len(raw) - 1))
        if op == "flip":
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set":
            raw[at] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[at:]
            if not raw:
                break
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    for suite in (1, 2):
        try:
            c.parse_certificate(bytes(raw), suite=suite, now=NOW)
        except c.CertificateError:
            pass


def test_seeded_mutation_sweep():
    """Deterministic complement to Hypothesis: every byte of a valid certificate set to
    a few values; only CertificateError or success may come out."""
    seed = _seed_der()
    rng = random.Random(1)
    outcomes = {"ok": 0, "refused": 0}
    for at in range(len(seed)):
        for value in (0x00, 0xFF, seed[at] ^ 0x80, rng.randrange(256)):
            raw = bytearray(seed)
            raw[at] = value
            try:
                c.parse_certificate(bytes(raw), now=NOW)
                outcomes["ok"] += 1
            except c.CertificateError:
                outcomes["refused"] += 1
    assert outcomes["refused"] > 0 and outcomes["ok"] > 0


# ------------------------------------------------------------------------- CSR


@pytest.mark.parametrize("suite,curve", [(1, ec.SECP256R1), (2, ec.SECP384R1)])
def test_csr_round_trip(suite, curve):
    k = key(curve)
    csr_der = c.make_csr(k, METER_TITLE, suite)
    csr = x509.load_der_x509_csr(csr_der)
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "CN=4B464D0000000001"
    assert csr.signature_hash_algorithm.name == ("sha256" if suite == 1 else "sha384")
    ku = csr.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_agreement
    parsed = c.parse_csr(csr_der, suite=suite)
    assert parsed.system_title == METER_TITLE
    assert parsed.certificate_type == c.CertificateType.DIGITAL_SIGNATURE
    assert parsed.public_key.public_numbers() == k.public_key().public_numbers()
    pem = csr.public_bytes(serialization.Encoding.PEM)
    assert c.parse_csr(pem, suite=suite).der == csr_der


def test_csr_for_key_agreement():
    parsed = c.parse_csr(c.make_csr(key(), METER_TITLE, 1, c.CertificateType.KEY_AGREEMENT))
    assert parsed.certificate_type == c.CertificateType.KEY_AGREEMENT


def test_make_csr_refuses_bad_input():
    with pytest.raises(ValueError):
        c.make_csr(key(ec.SECP384R1), METER_TITLE, 1)
    with pytest.raises(ValueError):
        c.make_csr(key(), b"short", 1)
    with pytest.raises(ValueError):
        c.make_csr(key(), METER_TITLE, 0)
    with pytest.raises(ValueError):
        c.make_csr(key(), METER_TITLE, 1, c.CertificateType.TLS)


def test_parse_csr_refusals():
    good = bytearray(c.make_csr(key(), METER_TITLE, 1))
    good[-5] ^= 0x01  # damage the signature
    with pytest.raises(c.CsrError):
        c.parse_csr(bytes(good))
    with pytest.raises(c.CsrError):
        c.parse_csr(c.make_csr(key(), METER_TITLE, 1), suite=2)
    with pytest.raises(c.CsrError):
        c.parse_csr(b"garbage")
    with pytest.raises(c.CsrError):
        c.parse_csr(b"")
    other = (x509.CertificateSigningRequestBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meter")]))
             .sign(key(), hashes.SHA256()))
    with pytest.raises(c.CsrError, match="system title"):
        c.parse_csr(other.public_bytes(serialization.Encoding.DER))


# ------------------------------------------------------------------------- store


def test_import_chain_and_infos(pki):
    store = new_store(pki)
    cert = pki.entity()
    result = store.import_certificate(der(cert), NOW, client=1)
    assert result.entity == c.CertificateEntity.CLIENT and result.client == 1
    assert not result.already_present
    assert store.client_certificates(1)[0].der == der(cert)
    keys = store.client_signing_keys(1)
    assert keys[0].public_numbers() == cert.public_key().public_numbers()
    assert store.client_signing_keys(1, system_title=b"X" * 8) == ()
    assert store.client_signing_keys(2) == ()
    # importing the same certificate again changes nothing
    again = store.import_certificate(der(cert), NOW, client=1)
    assert again.already_present and len(store.client_certificates(1)) == 1

    infos = store.certificate_infos()
    assert [i.certificate_entity for i in infos] == [
        c.CertificateEntity.CERTIFICATION_AUTHORITY, c.CertificateEntity.CERTIFICATION_AUTHORITY,
        c.CertificateEntity.CLIENT]
    client_info = infos[-1]
    assert client_info.certificate_type == c.CertificateType.DIGITAL_SIGNATURE
    assert client_info.serial_number == c.serial_to_bytes(cert.serial_number)
    assert client_info.issuer == pki.sub.subject.public_bytes()
    assert client_info.subject == cert.subject.public_bytes()
    assert store.certificate_infos(client=2) == infos[:2]


def test_certificate_info_to_data_encodes(pki):
    info = c.CertificateInfo(c.CertificateEntity.CLIENT, c.CertificateType.DIGITAL_SIGNATURE,
                             b"\x01\x02", b"\x30\x00", b"\x30\x00")
    # structure(6){enum 1, enum 0, octet-string 0102, 3000, 3000, ''}
    assert axdr.encode(info.to_data()) == bytes.fromhex(
        "0206" "1601" "1600" "09020102" "09023000" "09023000" "0900")


def test_identification_encoding_and_decoding():
    by_entity = c.CertificateIdentificationByEntity(
        c.CertificateEntity.SERVER, c.CertificateType.DIGITAL_SIGNATURE, METER_TITLE)
    assert axdr.encode(by_entity.to_data()) == bytes.fromhex(
        "0202" "1600" "0203" "1600" "1600" "0908" + METER_TITLE.hex())
    by_serial = c.CertificateIdentificationBySerial(b"\x5b\x05\x09\x38", b"\x30\x00")
    assert axdr.encode(by_serial.to_data()) == bytes.fromhex(
        "0202" "1601" "0202" "09045b050938" "09023000")
    for ident in (by_entity, by_serial):
        decoded, _ = axdr.decode(axdr.encode(c.identification_to_data(ident)))
        assert c.identification_from_data(decoded) == ident


@pytest.mark.parametrize("value", [
    Data.null(), Data.structure([Data.enum(0)]), Data.structure([Data.enum(2), Data.structure([])]),
    Data.structure([Data.unsigned(0), Data.structure([])]),
    Data.structure([Data.enum(0), Data.structure([Data.enum(0), Data.enum(0)])]),
    Data.structure([Data.enum(0), Data.structure(
        [Data.enum(9), Data.enum(0), Data.octet_string(b"")])]),
    Data.structure([Data.enum(0), Data.structure(
        [Data.enum(0), Data.enum(0), Data.visible_string("x")])]),
    Data.structure([Data.enum(1), Data.structure([Data.octet_string(b"")])]),
    Data.structure([Data.enum(1), Data.octet_string(b"")]),
    "not data",
])
def test_identification_from_data_refuses_wrong_shapes(value):
    with pytest.raises(c.CertificateFormatError):
        c.identification_from_data(value)


def test_import_refusals_are_distinct_types(pki):
    store = new_store(pki)
    foreign = Pki(root_cn="Foreign Root", sub_cn="Foreign Sub-CA")
    impostor = Pki(sub_cn="Test Sub-CA")  # same sub-CA name as ours, other keys
    cases = {
        "foreign CA": (der(foreign.entity()), c.UnknownIssuerError),
        "same name, other key": (der(impostor.entity()), c.CertificateSignatureError),
        "expired": (der(pki.entity(not_before=NOW - dt.timedelta(days=30),
                                   not_after=NOW - dt.timedelta(days=1))),
                    c.CertificateExpiredError),
        "not yet valid": (der(pki.entity(not_before=NOW + dt.timedelta(days=1))),
                          c.CertificateNotYetValidError),
        "wrong curve": (der(build(key(ec.SECP384R1), pki.sub_key, cn=HES_TITLE.hex(),
                                  issuer=pki.sub, ski=False)), c.WrongCurveError),
        "garbage": (b"\x30\x82\x01\x00not a certificate", c.CertificateFormatError),
    }
    seen = set()
    for label, (blob, error) in cases.items():
        with pytest.raises(c.CertificateError) as info:
            store.import_certificate(blob, NOW, client=1)
        assert type(info.value) is error, label
        seen.add(type(info.value))
    assert len(seen) == len(cases)
    assert store.client_certificates(1) == ()


def test_foreign_sub_ca_is_refused(pki):
    store = new_store(pki)
    foreign = Pki(root_cn="Foreign Root")
    with pytest.raises(c.UnknownIssuerError):
        store.import_certificate(der(foreign.sub), NOW)
    impostor = Pki(root_cn="Test Root")  # a root with our root's name but another key
    with pytest.raises(c.CertificateSignatureError):
        store.import_certificate(der(impostor.sub), NOW)
    assert len(store.sub_cas) == 1


def test_root_cannot_be_imported_through_ic64(pki):
    store = new_store(pki)
    with pytest.raises(c.RootImportNotAllowedError):
        store.import_certificate(der(Pki().root), NOW)


def test_no_trust_anchor(pki):
    store = c.CertificateStore(METER_TITLE)
    with pytest.raises(c.NoTrustAnchorError):
        store.import_certificate(der(pki.sub), NOW)


def test_install_root_checks(pki):
    store = c.CertificateStore(METER_TITLE)
    with pytest.raises(c.CertificateChainError):
        store.install_root(der(pki.sub), NOW)  # not self-signed
    # self-signed but its signature was made with another key
    k1, k2 = key(), key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bad Root")])
    forged = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
              .public_key(k1.public_key()).serial_number(7)
              .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=9))
              .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
              .add_extension(usage("key_cert_sign"), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(k1.public_key()), False)
              .sign(k2, hashes.SHA256()))
    with pytest.raises(c.CertificateSignatureError):
        store.install_root(der(forged), NOW)
    with pytest.raises(c.CertificateExpiredError):
        store.install_root(der(pki.root), NOW + dt.timedelta(days=4000))
    assert store.root is None
    store.install_root(der(pki.root), NOW)
    assert store.root.der == der(pki.root)


def test_root_path_length_zero_forbids_sub_cas():
    # Appendix 2's root carries pathlen:0, which makes every sub-CA below it invalid.
    p = Pki(root_path_length=0)
    store = c.CertificateStore(METER_TITLE)
    store.install_root(der(p.root), NOW)
    with pytest.raises(c.PathLengthError):
        store.import_certificate(der(p.sub), NOW)


def test_expired_issuer_blocks_new_imports(pki):
    k = key()
    short_sub = build(k, pki.root_key, cn="Short Sub-CA", issuer=pki.root, ca=True,
                      path_length=0, not_after=NOW + dt.timedelta(days=2))
    store = new_store(pki)
    store.import_certificate(der(short_sub), NOW)
    leaf = build(key(), k, cn=HES_TITLE.hex(), issuer=short_sub, ski=False,
                 not_after=NOW + dt.timedelta(days=30))
    with pytest.raises(c.CertificateExpiredError):
        store.import_certificate(der(leaf), NOW + dt.timedelta(days=3), client=1)


def test_sub_ca_capacity(pki):
    store = new_store(pki)
    store.import_certificate(der(pki.sub_ca("Sub 2")[0]), NOW)
    store.import_certificate(der(pki.sub_ca("Sub 3")[0]), NOW)
    fourth = pki.sub_ca("Sub 4")[0]
    with pytest.raises(c.CapacityExceededError):
        store.import_certificate(der(fourth), NOW)
    assert len(store.sub_cas) == c.SUB_CA_CAPACITY == 3
    # remove one (by serial and issuer), then the import is accepted (§3.5.2.1)
    sub3 = store.sub_cas[2]
    removed = store.remove_certificate(c.CertificateIdentificationBySerial(
        sub3.serial_number_bytes, sub3.issuer))
    assert removed == sub3
    store.import_certificate(der(fourth), NOW)
    assert store.sub_cas[-1].der == der(fourth)


def test_client_capacity_and_last_certificate(pki):
    store = new_store(pki)
    first, second, third = (pki.entity() for _ in range(3))
    store.import_certificate(der(first), NOW, client=1)

    by_serial = lambda cert: c.CertificateIdentificationBySerial(  # noqa: E731
        c.serial_to_bytes(cert.serial_number), cert.issuer.public_bytes())
    with pytest.raises(c.LastCertificateError):
        store.remove_certificate(by_serial(first))
    with pytest.raises(c.LastCertificateError):
        store.remove_certificate(c.CertificateIdentificationByEntity(
            c.CertificateEntity.CLIENT, c.CertificateType.DIGITAL_SIGNATURE, HES_TITLE))

    store.import_certificate(der(second), NOW, client=1)
    with pytest.raises(c.CapacityExceededError):
        store.import_certificate(der(third), NOW, client=1)
    # key agreement certificates have their own two slots
    store.import_certificate(der(pki.entity(usage_names=("key_agreement",))), NOW, client=1)
    store.import_certificate(der(pki.entity(usage_names=("key_agreement",))), NOW, client=1)
    with pytest.raises(c.CapacityExceededError):
        store.import_certificate(der(pki.entity(usage_names=("key_agreement",))), NOW, client=1)
    # the other clients have their own slots
    store.import_certificate(der(third), NOW, client=2)

    # by entity is ambiguous with two certificates for the same system title
    with pytest.raises(c.AmbiguousIdentificationError):
        store.remove_certificate(c.CertificateIdentificationByEntity(
            c.CertificateEntity.CLIENT, c.CertificateType.DIGITAL_SIGNATURE, HES_TITLE),
            client=1)
    # renewal: the old one goes once the new one is in
    store.remove_certificate(by_serial(first), client=1)
    assert [x.der for x in store.client_certificates(1, c.CertificateType.DIGITAL_SIGNATURE)] == [
        der(second)]
    with pytest.raises(c.LastCertificateError):
        store.remove_certificate(by_serial(second))
    # the last key-agreement certificate may go: it is not needed to associate
    for ka in store.client_certificates(1, c.CertificateType.KEY_AGREEMENT):
        store.remove_certificate(c.CertificateIdentificationBySerial(ka.serial_number_bytes,
                                                                     ka.issuer))
    assert store.client_certificates(1, c.CertificateType.KEY_AGREEMENT) == ()


def test_client_must_be_an_hls7_client(pki):
    store = new_store(pki)
    for client in (None, 5, 6, 7, 16, 3):
        with pytest.raises(c.UnknownClientError):
            store.import_certificate(der(pki.entity()), NOW, client=client)


def test_tls_certificates_are_not_stored(pki):
    store = new_store(pki)
    with pytest.raises(c.UnsupportedCertificateTypeError):
        store.import_certificate(
            der(pki.entity(usage_names=("digital_signature", "key_agreement"))), NOW, client=1)


def test_root_and_sub_ca_removal(pki):
    store = new_store(pki)
    root = store.root
    with pytest.raises(c.RemovalNotAllowedError):
        store.remove_certificate(c.CertificateIdentificationBySerial(root.serial_number_bytes,
                                                                     root.issuer))
    with pytest.raises(c.CertificateNotFoundError):
        store.remove_certificate(c.CertificateIdentificationBySerial(b"\x01", root.issuer))
    # serial numbers compare as numbers: a DER-style leading zero still matches
    sub = store.sub_cas[0]
    store.remove_certificate(c.CertificateIdentificationBySerial(
        b"\x00" + sub.serial_number_bytes, sub.issuer))
    assert store.sub_cas == ()


def test_export(pki):
    store = new_store(pki)
    first, second = pki.entity(), pki.entity()
    store.import_certificate(der(first), NOW, client=2)
    store.import_certificate(der(second), NOW, client=2)
    ident = c.CertificateIdentificationBySerial(c.serial_to_bytes(first.serial_number),
                                                first.issuer.public_bytes())
    assert store.export_certificate(ident) == der(first)
    by_entity = c.CertificateIdentificationByEntity(
        c.CertificateEntity.CLIENT, c.CertificateType.DIGITAL_SIGNATURE, HES_TITLE)
    assert store.export_certificate(by_entity) == der(second)  # the newest
    assert store.export_certificate(c.CertificateIdentificationBySerial(
        store.root.serial_number_bytes, store.root.issuer)) == der(pki.root)
    with pytest.raises(c.CertificateNotFoundError):
        store.export_certificate(by_entity, client=1)
    with pytest.raises(c.CertificateNotFoundError):
        store.export_certificate(c.CertificateIdentificationByEntity(
            c.CertificateEntity.SERVER, c.CertificateType.DIGITAL_SIGNATURE, METER_TITLE))
    with pytest.raises(TypeError):
        store.export_certificate("serial 1")


# ----------------------------------------------------------- the meter's own key pair


def meter_cert(pki, meter_key, **kw):
    return pki.entity(METER_TITLE, subject_key=meter_key, **kw)


def test_server_certificate_needs_the_meter_key(pki):
    store = new_store(pki)
    meter_key = key()
    with pytest.raises(c.KeyMismatchError):  # no key pair known yet
        store.import_certificate(der(meter_cert(pki, meter_key)), NOW)
    store.set_meter_key(meter_key.public_key())
    with pytest.raises(c.KeyMismatchError):
        store.import_certificate(der(meter_cert(pki, key())), NOW)
    result = store.import_certificate(der(meter_cert(pki, meter_key)), NOW)
    assert result.entity == c.CertificateEntity.SERVER and not result.key_pair_activated
    assert store.server_certificate().system_title == METER_TITLE
    ident = c.CertificateIdentificationByEntity(
        c.CertificateEntity.SERVER, c.CertificateType.DIGITAL_SIGNATURE, METER_TITLE)
    assert store.export_certificate(ident) == result.certificate.der
    with pytest.raises(c.RemovalNotAllowedError):
        store.remove_certificate(ident)


def test_key_renewal_within_24h(pki):
    store = new_store(pki)
    old_key, new_key = key(), key()
    store.set_meter_key(old_key.public_key())
    old_cert = store.import_certificate(der(meter_cert(pki, old_key)), NOW).certificate
    assert store.begin_key_renewal(new_key.public_key(), NOW) is None
    spki = new_key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    assert store.pending_key() == (spki, NOW)
    # the old pair stays in use until the new certificate arrives
    assert store.current_key() != spki
    later = NOW + dt.timedelta(hours=23, minutes=59)
    result = store.import_certificate(der(meter_cert(pki, new_key)), later)
    assert result.key_pair_activated and result.replaced == old_cert
    assert store.current_key() == spki and store.pending_key() is None
    assert store.server_certificate().public_key_der == spki


def test_key_pair_dismissed_after_24h(pki):
    store = new_store(pki)
    old_key, new_key = key(), key()
    store.set_meter_key(old_key.public_key())
    store.begin_key_renewal(new_key.public_key(), NOW)
    assert store.dismiss_expired_key_pairs(NOW + dt.timedelta(hours=24)) == []
    late = NOW + dt.timedelta(hours=24, seconds=1)
    with pytest.raises(c.KeyMismatchError):
        store.import_certificate(der(meter_cert(pki, new_key)), late)
    assert store.pending_key() is None
    # also dismissed by the periodic sweep, which reports the pair so its key is erased
    store.begin_key_renewal(new_key.public_key(), NOW)
    dismissed = store.dismiss_expired_key_pairs(late)
    assert [(t, len(s) > 0) for t, s in dismissed] == [(c.CertificateType.DIGITAL_SIGNATURE, True)]
    assert store.pending_key() is None
    # a second renewal supersedes the first pending pair
    store.begin_key_renewal(old_key.public_key(), NOW)
    assert store.begin_key_renewal(new_key.public_key(), NOW) is not None


def test_root_replacement_keeps_existing_certificates(pki):
    store = new_store(pki)
    client_cert = pki.entity()
    store.import_certificate(der(client_cert), NOW, client=1)
    new_pki = Pki(root_cn="Test Root 2")
    store.install_root(der(new_pki.root), NOW)
    # nothing already imported is invalidated (§3.5.2.1) ...
    assert store.client_certificates(1)[0].der == der(client_cert)
    assert len(store.sub_cas) == 1
    # ... but new imports chain to the new root only
    with pytest.raises(c.UnknownIssuerError):
        store.import_certificate(der(pki.entity()), NOW, client=1)
    store.import_certificate(der(new_pki.sub), NOW)
    store.import_certificate(der(new_pki.entity()), NOW, client=1)


# ------------------------------------------------------------------- persistence


def full_store(pki):
    store = new_store(pki)
    meter_key = key()
    store.set_meter_key(meter_key.public_key())
    store.import_certificate(der(meter_cert(pki, meter_key)), NOW)
    store.begin_key_renewal(key().public_key(), NOW)
    store.import_certificate(der(pki.entity()), NOW, client=1)
    store.import_certificate(der(pki.entity(usage_names=("key_agreement",))), NOW, client=4)
    return store


def test_store_round_trip(pki):
    store = full_store(pki)
    state = store.to_dict()
    text = json.dumps(state)
    assert "PRIVATE" not in text
    again = c.CertificateStore.from_dict(json.loads(text))
    assert again.to_dict() == state
    assert again.certificate_infos() == store.certificate_infos()
    assert again.pending_key() == store.pending_key()
    assert again.server_certificate() == store.server_certificate()
    # the rebuilt store behaves the same
    with pytest.raises(c.LastCertificateError):
        cert = again.client_certificates(1)[0]
        again.remove_certificate(c.CertificateIdentificationBySerial(cert.serial_number_bytes,
                                                                     cert.issuer))


def test_empty_store_round_trip():
    store = c.CertificateStore(METER_TITLE, suite=2, clients=[1])
    assert c.CertificateStore.from_dict(store.to_dict()).to_dict() == store.to_dict()


@pytest.mark.parametrize("damage", [
    lambda s: s.pop("root"),
    lambda s: s.update(format="other"),
    lambda s: s.update(suite=3),
    lambda s: s.update(server_system_title="zz"),
    lambda s: s.update(root="!!!not base64"),
    lambda s: s.update(root="AAAA"),
    lambda s: s.update(sub_cas=[s["sub_cas"][0]] * 4),
    lambda s: s["client_certificates"].update({"9": []}),
    lambda s: s["key_pairs"]["0"].update(pending_since=None),
    lambda s: s["key_pairs"]["0"].update(pending_since="2025-01-01T00:00:00"),
    lambda s: s["server"].update({"7": s["root"]}),
    lambda s: s.update(sub_cas=None),
    lambda s: s["client_certificates"].update({"1": [12]}),
])
def test_damaged_store_dict(pki, damage):
    state = full_store(pki).to_dict()
    damage(state)
    with pytest.raises(c.StoreFormatError):
        c.CertificateStore.from_dict(state)


def test_from_dict_refuses_non_dict():
    for value in (None, [], "x", 1):
        with pytest.raises(c.StoreFormatError):
            c.CertificateStore.from_dict(value)


def test_store_constructor_checks():
    with pytest.raises(ValueError):
        c.CertificateStore(b"short")
    with pytest.raises(ValueError):
        c.CertificateStore(METER_TITLE, suite=0)


# --------------------------------------------------- random operation sequences


class _OpsPool:
    """Certificates for random import/remove sequences (built once: key generation is
    the slow part)."""

    def __init__(self):
        self.pki = Pki()
        sub_cas = [self.pki.sub] + [self.pki.sub_ca(f"Sub {i}")[0] for i in range(2, 6)]
        titles = [HES_TITLE, b"HES" + bytes(4) + b"\x02"]
        leaves = [self.pki.entity(t, usage_names=(u,)) for t in titles
                  for u in ("digital_signature", "digital_signature", "key_agreement")]
        self.certs = [der(x) for x in sub_cas + leaves]
        self.parsed = [c.parse_certificate(d) for d in self.certs]


_POOL = None


def _pool():
    global _POOL
    if _POOL is None:
        _POOL = _OpsPool()
    return _POOL


_op = st.tuples(st.sampled_from(["import", "remove", "export"]), st.integers(0, 10),
                st.sampled_from([None, 1, 2, 4, 5]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_op, max_size=25))
def test_random_operation_sequences_keep_the_rules(ops):
    pool = _pool()
    store = c.CertificateStore(METER_TITLE)
    store.install_root(der(pool.pki.root), NOW)
    for op, index, client in ops:
        cert = pool.parsed[index]
        ident = c.CertificateIdentificationBySerial(cert.serial_number_bytes, cert.issuer)
        before = store.to_dict()
        try:
            if op == "import":
                store.import_certificate(pool.certs[index], NOW, client=client)
            elif op == "remove":
                removed = store.remove_certificate(ident, client=client)
                assert removed == cert
            else:
                assert store.export_certificate(ident, client=client) == cert.der
        except c.CertificateStoreError:
            assert store.to_dict() == before  # a refused operation changes nothing
        except c.UnknownIssuerError:
            assert store.to_dict() == before
            assert not any(s.subject == cert.issuer for s in store.sub_cas)
        # invariants of §3.5.2
        assert len(store.sub_cas) <= c.SUB_CA_CAPACITY
        for k in store.clients:
            for t in (c.CertificateType.DIGITAL_SIGNATURE, c.CertificateType.KEY_AGREEMENT):
                assert len(store.client_certificates(k, t)) <= c.CLIENT_CERTIFICATE_CAPACITY
        # every state survives its dict form
        state = store.to_dict()
        assert c.CertificateStore.from_dict(json.loads(json.dumps(state))).to_dict() == state


def test_a_client_with_a_signing_certificate_never_loses_it(pki):
    """Whatever removal sequence is tried, a client that once had a digital-signature
    certificate keeps at least one."""
    store = new_store(pki)
    certs = [pki.entity() for _ in range(2)]
    for cert in certs:
        store.import_certificate(der(cert), NOW, client=2)
    removed = 0
    for cert in certs + certs:
        try:
            store.remove_certificate(c.CertificateIdentificationBySerial(
                c.serial_to_bytes(cert.serial_number), cert.issuer.public_bytes()))
            removed += 1
        except (c.LastCertificateError, c.CertificateNotFoundError):
            pass
    assert removed == 1 and len(store.client_certificates(2)) == 1


def test_issuer_pins(pki):
    store = new_store(pki)
    plc_sub, plc_key = pki.sub_ca("PLC Sub-CA")
    store.import_certificate(der(plc_sub), NOW)
    store.pin_issuer(1, pki.sub.subject.public_bytes())
    store.pin_issuer(4, plc_sub.subject.public_bytes())
    plc_cert = pki.entity(issuer=plc_sub, issuer_key=plc_key)
    # a valid chain, but the wrong sub-CA for the Management client
    with pytest.raises(c.IssuerNotAllowedError):
        store.import_certificate(der(plc_cert), NOW, client=1)
    store.import_certificate(der(plc_cert), NOW, client=4)
    with pytest.raises(c.IssuerNotAllowedError):
        store.import_certificate(der(pki.entity()), NOW, client=4)
    store.import_certificate(der(pki.entity()), NOW, client=1)
    # client 2 is not pinned: any installed sub-CA may issue
    store.import_certificate(der(pki.entity(issuer=plc_sub, issuer_key=plc_key)), NOW, client=2)
    # the meter's own certificates
    meter_key = key()
    store.set_meter_key(meter_key.public_key())
    store.pin_issuer("server", plc_sub.subject.public_bytes())
    with pytest.raises(c.IssuerNotAllowedError):
        store.import_certificate(der(meter_cert(pki, meter_key)), NOW)
    store.import_certificate(der(pki.entity(METER_TITLE, subject_key=meter_key, issuer=plc_sub,
                                            issuer_key=plc_key)), NOW)
    # pins persist and can be lifted
    again = c.CertificateStore.from_dict(json.loads(json.dumps(store.to_dict())))
    assert again.issuer_pin(1) == pki.sub.subject.public_bytes()
    assert again.issuer_pin("server") == plc_sub.subject.public_bytes()
    assert again.issuer_pin(2) is None
    again.pin_issuer(1, None)
    again.import_certificate(der(pki.entity(issuer=plc_sub, issuer_key=plc_key)), NOW, client=1)
    with pytest.raises(c.UnknownClientError):
        store.pin_issuer(5, b"\x30\x00")
