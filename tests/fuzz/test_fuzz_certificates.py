"""Seeded fuzzing of the certificate and CSR parsers and the store's import: only
CertificateError may escape.

Inputs are random byte strings and mutations (bit flips, byte overwrites, truncation,
insertion, deletion, DER length-octet corruption, splicing, PEM armouring) of valid
DLMS-profile certificates for both suites and of a CSR.
"""
from __future__ import annotations

import base64
import datetime as dt
import random

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from smartmeter.cosem import axdr
from smartmeter.dlms.security import certificates as c
from smartmeter.errors import DecodeError

ITERATIONS = 100_000
NOW = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
TITLE = bytes.fromhex("4B464D0000000001")
LENGTH_OCTETS = (0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0xFF)


def _usage(**names):
    flags = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment",
                           "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
                           "encipher_only", "decipher_only"), False)
    flags.update(names)
    return x509.KeyUsage(**flags)


def _chain(curve, hash_):
    """root, sub-CA and a client certificate (DER) of one suite."""
    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(subject_key, issuer_key, cn, issuer, ca, serial):
        b = (x509.CertificateBuilder().subject_name(name(cn))
             .issuer_name(issuer.subject if issuer else name(cn))
             .public_key(subject_key.public_key()).serial_number(serial)
             .not_valid_before(NOW - dt.timedelta(days=1))
             .not_valid_after(NOW + dt.timedelta(days=3650)))
        if ca:
            b = (b.add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
                 .add_extension(_usage(key_cert_sign=True, crl_sign=True), critical=True)
                 .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                     subject_key.public_key()), critical=False))
        else:
            b = b.add_extension(_usage(digital_signature=True), critical=True)
        if issuer:
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer.public_key()), critical=False)
        return b.sign(issuer_key, hash_())

    rk, sk, ek = (ec.generate_private_key(curve()) for _ in range(3))
    root = cert(rk, rk, "Fuzz Root", None, True, 1)
    sub = cert(sk, rk, "Fuzz Sub", root, True, 2)
    leaf = cert(ek, sk, "485553" + "0000000001", sub, False, 0x5B050D30)
    return [x.public_bytes(serialization.Encoding.DER) for x in (root, sub, leaf)]


def _mutate(rnd: random.Random, seed: bytes, pool: list[bytes]) -> bytes:
    raw = bytearray(seed)
    for _ in range(rnd.randint(1, 4)):
        if not raw:
            raw = bytearray(rnd.randbytes(rnd.randint(1, 8)))
        op = rnd.randrange(7)
        at = rnd.randrange(len(raw))
        if op == 0:
            raw[at] ^= 1 << rnd.randrange(8)
        elif op == 1:
            raw[at] = rnd.randrange(256)
        elif op == 2:
            del raw[rnd.randint(1, len(raw)):]
        elif op == 3:
            raw[at:at] = rnd.randbytes(rnd.randint(1, 16))
        elif op == 4:
            del raw[at:at + rnd.randint(1, 16)]
        elif op == 5:
            # corrupt the length octets of the DER element that starts here (or near)
            raw[min(at + 1, len(raw) - 1)] = rnd.choice(LENGTH_OCTETS)
        else:
            other = rnd.choice(pool)
            cut = rnd.randrange(len(other))
            raw[at:] = other[cut:cut + rnd.randint(1, 200)]
    return bytes(raw)


def _pem(blob: bytes) -> bytes:
    return (b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(blob)
            + b"-----END CERTIFICATE-----\n")


def test_fuzz_parse_certificate_and_import():
    rnd = random.Random(0xCE27)
    suite1 = _chain(ec.SECP256R1, hashes.SHA256)
    suite2 = _chain(ec.SECP384R1, hashes.SHA384)
    pool = suite1 + suite2
    store = c.CertificateStore(TITLE)
    store.install_root(suite1[0], NOW)
    store.import_certificate(suite1[1], NOW)
    accepted = refused = 0
    for i in range(ITERATIONS):
        kind = rnd.random()
        if kind < 0.15:
            blob = rnd.randbytes(rnd.choice((0, 1, 2, 10, 100, 600, 2100)))
        elif kind < 0.2:
            blob = b"\x30\x82" + rnd.randbytes(rnd.randint(0, 700))
        else:
            blob = _mutate(rnd, rnd.choice(pool), pool)
        if rnd.random() < 0.05:
            blob = _pem(blob)
        suite = 1 if rnd.random() < 0.7 else 2
        try:
            c.parse_certificate(blob, suite=suite, now=NOW if i % 2 else None)
            accepted += 1
        except c.CertificateError:
            refused += 1
        if i % 10 == 0:  # the whole import path, which also checks signatures and slots
            try:
                store.import_certificate(blob, NOW, client=rnd.choice((None, 1, 2, 5)))
            except c.CertificateError:
                pass
    assert accepted + refused == ITERATIONS and refused > ITERATIONS // 2
    # slots stay within their capacities whatever got in
    assert len(store.sub_cas) <= c.SUB_CA_CAPACITY
    for client in store.clients:
        assert len(store.client_certificates(client, c.CertificateType.DIGITAL_SIGNATURE)) <= 2


def test_fuzz_parse_csr():
    rnd = random.Random(0xC5B)
    csr = c.make_csr(ec.generate_private_key(ec.SECP256R1()), TITLE, 1)
    pool = [csr]
    for _ in range(20_000):
        blob = _mutate(rnd, csr, pool) if rnd.random() < 0.9 else rnd.randbytes(rnd.randint(0, 300))
        try:
            c.parse_csr(blob, suite=rnd.choice((1, 2)))
        except c.CsrError:
            pass


def test_fuzz_certificate_identification():
    """A-XDR bytes -> Data -> identification: the second step raises only
    CertificateFormatError, whatever shape the first step produced."""
    rnd = random.Random(0x1D)
    seeds = [axdr.encode(c.CertificateIdentificationByEntity(
                 c.CertificateEntity.CLIENT, c.CertificateType.DIGITAL_SIGNATURE, TITLE).to_data()),
             axdr.encode(c.CertificateIdentificationBySerial(b"\x5b\x05\x0d\x30",
                                                             b"0\x00").to_data())]
    decoded = 0
    for _ in range(100_000):
        blob = (_mutate(rnd, rnd.choice(seeds), seeds) if rnd.random() < 0.9
                else rnd.randbytes(rnd.randint(0, 40)))
        try:
            value, _ = axdr.decode(blob)
        except DecodeError:
            continue
        decoded += 1
        try:
            c.identification_from_data(value)
        except c.CertificateFormatError:
            pass
    assert decoded > 10_000
