"""Key wrap, key_transfer, KDF and C(2e, 0s) key agreement (security/keys.py).

Known answers: RFC 3394 §4 test vectors; the KDF against a hashlib transcription of
SP 800-56A's one-step formula; the agreement against our fixtures (whose Z and KDF output
test_security_openssl.py re-derives with the openssl command line).
"""
from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from secvectors import CLIENT_TITLE, SERVER_TITLE, SUITE_FIXTURES, h, private_key
from smartmeter.cosem import axdr
from smartmeter.cosem.data import Data
from smartmeter.dlms.security import keys, signing
from smartmeter.dlms.security.errors import AuthenticationError, InvalidKeyError, KeyUnwrapError
from smartmeter.errors import DecodeError

# RFC 3394 §4.1 (128-bit KEK, 128-bit key), §4.3 (256-bit KEK, 128-bit key),
# §4.6 (256-bit KEK, 256-bit key).
RFC3394 = [
    ("000102030405060708090A0B0C0D0E0F", "00112233445566778899AABBCCDDEEFF",
     "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"),
    ("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", "00112233445566778899AABBCCDDEEFF",
     "64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7"),
    ("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
     "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
     "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21"),
]


@pytest.mark.parametrize("kek,key,wrapped", RFC3394)
def test_rfc3394_vectors(kek, key, wrapped):
    assert keys.wrap_key(h(kek), h(key)) == h(wrapped)
    assert keys.unwrap_key(h(kek), h(wrapped)) == h(key)


def test_unwrap_with_wrong_kek_or_damaged_data_fails_typed():
    kek, key, wrapped = (h(x) for x in RFC3394[0])
    with pytest.raises(KeyUnwrapError):
        keys.unwrap_key(bytes(16), wrapped)
    for i in range(len(wrapped)):
        damaged = bytearray(wrapped)
        damaged[i] ^= 0x04
        with pytest.raises(KeyUnwrapError):
            keys.unwrap_key(kek, bytes(damaged))
    for bad in (b"", wrapped[:-8], wrapped + bytes(8), wrapped[:-1]):
        with pytest.raises(KeyUnwrapError):
            keys.unwrap_key(kek, bad)
    with pytest.raises(InvalidKeyError):
        keys.wrap_key(kek[:15], key)
    with pytest.raises(InvalidKeyError):
        keys.wrap_key(kek, key[:8])


def test_key_transfer_parameter_encoding():
    kek = h(RFC3394[0][0])
    items = [keys.KeyTransfer.wrap(kek, keys.KeyId.GLOBAL_UNICAST_ENCRYPTION, h(RFC3394[0][1])),
             keys.KeyTransfer.wrap(kek, 2, bytes(range(16)))]
    data = keys.encode_key_transfer(items)
    wire = axdr.encode(data)
    # array(2) of structure(2){ enum 0, octet-string(24) ... }
    assert wire[:8] == bytes((0x01, 0x02, 0x02, 0x02, 0x16, 0x00, 0x09, 0x18))
    assert wire[8:32] == h(RFC3394[0][2])
    back = keys.decode_key_transfer(axdr.decode_all(wire))
    assert back == tuple(items)
    assert back[0].unwrap(kek) == h(RFC3394[0][1])
    assert back[1].key_id is keys.KeyId.AUTHENTICATION and back[1].unwrap(kek) == bytes(range(16))


@pytest.mark.parametrize("data", [
    Data.octet_string(b"x"),
    Data.array(()),
    Data.array((Data.enum(0),)),
    Data.array((Data.structure((Data.enum(0),)),)),
    Data.array((Data.structure((Data.unsigned(0), Data.octet_string(b""))),)),
    Data.array((Data.structure((Data.enum(4), Data.octet_string(b""))),)),
    Data.array((Data.structure((Data.enum(0), Data.visible_string("x"))),)),
])
def test_key_transfer_and_agreement_shape_errors_are_decode_errors(data):
    with pytest.raises(DecodeError):
        keys.decode_key_transfer(data)
    with pytest.raises(DecodeError):
        keys.decode_key_agreement(data)


def _sp800_56a(hash_name: str, z: bytes, other_info: bytes, length: int) -> bytes:
    out = b""
    counter = 1
    while len(out) < length:
        out += hashlib.new(hash_name, counter.to_bytes(4, "big") + z + other_info).digest()
        counter += 1
    return out[:length]


@settings(max_examples=50, deadline=None)
@given(z=st.binary(min_size=1, max_size=64), u=st.binary(min_size=8, max_size=8), v=st.binary(min_size=8, max_size=8))
def test_kdf_is_the_one_step_concatenation_kdf(z, u, v):
    assert keys.concat_kdf(1, z, u, v) == _sp800_56a("sha256", z, h("60857405080300") + u + v, 16)
    assert keys.concat_kdf(2, z, u, v) == _sp800_56a("sha384", z, h("60857405080301") + u + v, 32)
    assert keys.concat_kdf(1, z, u, v, algorithm_id=h("60857405080302"), length=40) == _sp800_56a(
        "sha256", z, h("60857405080302") + u + v, 40)


def test_kdf_binds_party_order():
    z = bytes(32)
    assert keys.concat_kdf(1, z, CLIENT_TITLE, SERVER_TITLE) != keys.concat_kdf(1, z, SERVER_TITLE, CLIENT_TITLE)
    with pytest.raises(InvalidKeyError):
        keys.concat_kdf(0, z, CLIENT_TITLE, SERVER_TITLE)


@pytest.mark.parametrize("suite", [1, 2])
def test_key_agreement_fixture_recomputes(suite):
    f = SUITE_FIXTURES[suite]
    ka = f["key_agreement"]
    ct, stt = h(f["client_system_title"]), h(f["server_system_title"])
    client_sign = private_key(suite, f["client_signing_private"])
    server_sign = private_key(suite, f["server_signing_private"])
    client_eph = private_key(suite, ka["client_ephemeral_private"])
    server_eph = private_key(suite, ka["server_ephemeral_private"])
    request = keys.KeyAgreementData(keys.KeyId(ka["key_id"]), h(ka["request_key_ciphered_data"]))
    response = keys.KeyAgreementData(keys.KeyId(ka["key_id"]), h(ka["response_key_ciphered_data"]))
    n = 32 if suite == 1 else 48
    assert request.key_ciphered_data[: 2 * n] == signing.public_key_to_bytes(client_eph.public_key())
    assert response.key_ciphered_data[: 2 * n] == signing.public_key_to_bytes(server_eph.public_key())
    # the server checks the request with the client's signing key and derives the key
    assert keys.verify_ephemeral_offer(suite, request, client_sign.public_key()).public_numbers() == \
        client_eph.public_key().public_numbers()
    server_key = keys.derive_agreed_key(suite, server_eph, client_eph.public_key(), ct, stt)
    client_key = keys.client_key_agreement_result(suite, client_eph, response, server_sign.public_key(), ct, stt,
                                                  expected_key_id=0)
    assert server_key == client_key == h(ka["derived_key"])
    assert len(client_key) == (16 if suite == 1 else 32)
    assert client_eph.exchange(ec.ECDH(), server_eph.public_key()) == h(ka["shared_secret_Z"])
    assert keys.concat_kdf(suite, h(ka["shared_secret_Z"]), ct, stt) == h(ka["derived_key"])


@pytest.mark.parametrize("suite", [1, 2])
def test_key_agreement_signatures_are_checked(suite):
    f = SUITE_FIXTURES[suite]
    ka = f["key_agreement"]
    client_sign = private_key(suite, f["client_signing_private"])
    server_sign = private_key(suite, f["server_signing_private"])
    request = keys.KeyAgreementData(0, h(ka["request_key_ciphered_data"]))
    # signed by the client, not the server
    with pytest.raises(AuthenticationError):
        keys.verify_ephemeral_offer(suite, request, server_sign.public_key())
    # the key id is under the signature
    with pytest.raises(AuthenticationError):
        keys.verify_ephemeral_offer(suite, keys.KeyAgreementData(2, request.key_ciphered_data),
                                    client_sign.public_key())
    # a substituted ephemeral key breaks the signature
    other = signing.public_key_to_bytes(signing.generate_private_key(suite).public_key())
    n = len(other)
    with pytest.raises(AuthenticationError):
        keys.verify_ephemeral_offer(suite, keys.KeyAgreementData(0, other + request.key_ciphered_data[n:]),
                                    client_sign.public_key())
    with pytest.raises(InvalidKeyError):
        keys.verify_ephemeral_offer(suite, keys.KeyAgreementData(0, request.key_ciphered_data[:-1]),
                                    client_sign.public_key())
    # a point off the curve is refused as a key, not crashed on
    off_curve = b"\x01" * n
    sig = signing.sign(client_sign, b"\x00" + off_curve)
    with pytest.raises(InvalidKeyError):
        keys.verify_ephemeral_offer(suite, keys.KeyAgreementData(0, off_curve + sig), client_sign.public_key())


@pytest.mark.parametrize("suite", [1, 2])
@pytest.mark.parametrize("key_id", list(keys.KeyId))
def test_fresh_key_agreement_end_to_end_through_the_wire_encoding(suite, key_id):
    client_sign, server_sign = signing.generate_private_key(suite), signing.generate_private_key(suite)
    client_eph, offer = keys.ephemeral_offer(suite, key_id, client_sign)
    wire = axdr.encode(keys.encode_key_agreement([offer]))
    (received,) = keys.decode_key_agreement(axdr.decode_all(wire))
    response, server_key = keys.server_key_agreement(
        suite, received, client_sign.public_key(), server_sign, CLIENT_TITLE, SERVER_TITLE)
    (back,) = keys.decode_key_agreement(axdr.decode_all(axdr.encode(keys.encode_key_agreement([response]))))
    assert back.key_id == key_id
    client_key = keys.client_key_agreement_result(
        suite, client_eph, back, server_sign.public_key(), CLIENT_TITLE, SERVER_TITLE, expected_key_id=key_id)
    assert client_key == server_key
    with pytest.raises(AuthenticationError):
        keys.client_key_agreement_result(suite, client_eph, back, server_sign.public_key(), CLIENT_TITLE,
                                         SERVER_TITLE, expected_key_id=(int(key_id) + 1) % 4)


@pytest.mark.parametrize("suite", [1, 2])
def test_key_wrap_fixture(suite):
    kw = SUITE_FIXTURES[suite]["key_wrap"]
    assert keys.wrap_key(h(kw["kek"]), h(kw["key"])) == h(kw["wrapped"])
    assert keys.unwrap_key(h(kw["kek"]), h(kw["wrapped"])) == h(kw["key"])
