"""Cross-checks of the suite 1/2 fixtures and of our primitives with the `openssl` CLI.

* ECDSA: every fixture signature (HLS-7 both directions, general-signing, key-agreement
  ephemeral keys) is converted r || s -> DER by hand and checked with
  `openssl dgst -sha256|-sha384 -verify`; a one-byte change must fail there too.
* ECDH: `openssl pkeyutl -derive` gives the fixture's Z from both sides.
* KDF: `openssl kdf ... SSKDF` (SP 800-56C one-step = the SP 800-56A concatenation KDF)
  gives the fixture's derived key from Z and OtherInfo.
* Key wrap: `openssl enc -id-aes128-wrap / -id-aes256-wrap` (RFC 3394, IV A6..A6) wraps
  like we do (fixtures and RFC 3394 vectors).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from secvectors import SUITE_FIXTURES, der_from_raw, h, openssl, private_key, write_pem_private, write_pem_public
from smartmeter.dlms.apdu.ciphered import GeneralSigning, decode_ciphered
from smartmeter.dlms.security import keys, signing

DIGEST = {1: "-sha256", 2: "-sha384"}


def _openssl_verifies(tmp_path: Path, suite: int, public_hex: str, data: bytes, signature: bytes) -> bool:
    pub = write_pem_public(tmp_path / "pub.pem", signing.public_key_from_bytes(suite, h(public_hex)))
    (tmp_path / "data.bin").write_bytes(data)
    (tmp_path / "sig.der").write_bytes(der_from_raw(signature))
    result = openssl("dgst", DIGEST[suite], "-verify", str(pub), "-signature", str(tmp_path / "sig.der"),
                     str(tmp_path / "data.bin"))
    return result.returncode == 0 and b"Verified OK" in result.stdout


def _signed_items(suite: int):
    """(signer's public key, signed data, signature) for every signature in the fixture."""
    f = SUITE_FIXTURES[suite]
    ct, stt = f["client_system_title"], f["server_system_title"]
    hls7 = f["hls7"]
    yield "hls7 f(StoC)", f["client_signing_public"], h(ct + stt + hls7["StoC"] + hls7["CtoS"]), h(hls7["client_f_StoC"])
    yield "hls7 f(CtoS)", f["server_signing_public"], h(stt + ct + hls7["CtoS"] + hls7["StoC"]), h(hls7["server_f_CtoS"])
    for name, signer in (("general_signing_plain", "client"), ("general_signing_ciphered", "server")):
        apdu = decode_ciphered(h(f[name]["apdu"]))
        assert isinstance(apdu, GeneralSigning)
        assert apdu.signed_data() == h(f[name]["signed_data"])
        yield name, f[f"{signer}_signing_public"], apdu.signed_data(), apdu.signature
    ka = f["key_agreement"]
    n = 64 if suite == 1 else 96
    for name, signer in (("request_key_ciphered_data", "client"), ("response_key_ciphered_data", "server")):
        blob = h(ka[name])
        yield name, f[f"{signer}_signing_public"], bytes((ka["key_id"],)) + blob[:n], blob[n:]


@pytest.mark.parametrize("suite", [1, 2])
def test_openssl_verifies_every_fixture_signature(tmp_path, suite):
    count = 0
    for name, public_hex, data, signature in _signed_items(suite):
        assert _openssl_verifies(tmp_path, suite, public_hex, data, signature), name
        tampered = data[:-1] + bytes((data[-1] ^ 0x01,))
        assert not _openssl_verifies(tmp_path, suite, public_hex, tampered, signature), name
        count += 1
    assert count == 6


@pytest.mark.parametrize("suite", [1, 2])
def test_openssl_verifies_a_fresh_signature_of_ours(tmp_path, suite):
    key = signing.generate_private_key(suite)
    data = b"DLMS " * 50
    sig = signing.sign(key, data)
    public_hex = signing.public_key_to_bytes(key.public_key()).hex()
    assert _openssl_verifies(tmp_path, suite, public_hex, data, sig)


@pytest.mark.parametrize("suite", [1, 2])
def test_we_verify_an_openssl_signature(tmp_path, suite):
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    key = signing.generate_private_key(suite)
    pem = write_pem_private(tmp_path / "key.pem", key)
    (tmp_path / "data.bin").write_bytes(b"signed by openssl")
    result = openssl("dgst", DIGEST[suite], "-sign", str(pem), str(tmp_path / "data.bin"))
    assert result.returncode == 0, result.stderr
    r, s = decode_dss_signature(result.stdout)
    n = 32 if suite == 1 else 48
    signing.verify(key.public_key(), b"signed by openssl", r.to_bytes(n, "big") + s.to_bytes(n, "big"))


@pytest.mark.parametrize("suite", [1, 2])
def test_openssl_derives_the_fixture_shared_secret_and_key(tmp_path, suite):
    f = SUITE_FIXTURES[suite]
    ka = f["key_agreement"]
    client_eph = private_key(suite, ka["client_ephemeral_private"])
    server_eph = private_key(suite, ka["server_ephemeral_private"])
    for own, peer, tag in ((client_eph, server_eph, "c"), (server_eph, client_eph, "s")):
        priv = write_pem_private(tmp_path / f"{tag}.pem", own)
        pub = write_pem_public(tmp_path / f"{tag}-peer.pem", peer.public_key())
        result = openssl("pkeyutl", "-derive", "-inkey", str(priv), "-peerkey", str(pub))
        assert result.returncode == 0, result.stderr
        assert result.stdout == h(ka["shared_secret_Z"])
    other_info = h(ka["algorithm_id"]) + h(f["client_system_title"]) + h(f["server_system_title"])
    length = 16 if suite == 1 else 32
    digest = "SHA2-256" if suite == 1 else "SHA2-384"
    result = openssl("kdf", "-keylen", str(length), "-kdfopt", f"digest:{digest}",
                     "-kdfopt", f"hexkey:{ka['shared_secret_Z']}", "-kdfopt", f"hexinfo:{other_info.hex()}", "SSKDF")
    assert result.returncode == 0, result.stderr
    assert bytes.fromhex(result.stdout.decode().strip().replace(":", "")) == h(ka["derived_key"])


def _openssl_wrap(tmp_path: Path, kek: bytes, key: bytes) -> bytes:
    (tmp_path / "key.bin").write_bytes(key)
    cipher = {16: "-id-aes128-wrap", 32: "-id-aes256-wrap"}[len(kek)]
    result = openssl("enc", cipher, "-K", kek.hex(), "-iv", "A6A6A6A6A6A6A6A6", "-in", str(tmp_path / "key.bin"))
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("suite", [1, 2])
def test_openssl_wraps_the_fixture_key(tmp_path, suite):
    kw = SUITE_FIXTURES[suite]["key_wrap"]
    assert _openssl_wrap(tmp_path, h(kw["kek"]), h(kw["key"])) == h(kw["wrapped"])


@pytest.mark.parametrize("kek_len,key_len", [(16, 16), (16, 32), (32, 16), (32, 32)])
def test_openssl_and_we_wrap_alike(tmp_path, kek_len, key_len):
    import secrets

    for _ in range(5):
        kek, key = secrets.token_bytes(kek_len), secrets.token_bytes(key_len)
        assert _openssl_wrap(tmp_path, kek, key) == keys.wrap_key(kek, key)
