"""Build the suite 1/2 fixtures once: `python tests/vectors/suite1/generate_fixtures.py`.

No public vectors exist for HLS-7, general-signing or the IC 64 key agreement, so these
are our own, made with `cryptography` and kept as JSON. The tests re-verify every value
with our code AND with the `openssl` command line (signatures, ECDH, KDF, key wrap), so a
fixture that our code would merely reproduce by construction cannot pass unnoticed.

ECDSA signatures are randomised, so re-running this script changes the signatures (and
the ephemeral keys, which are fresh too); the tests only depend on the files' content.
Keys here are test keys, never used anywhere else.
"""
from __future__ import annotations

import json
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from smartmeter.dlms.apdu.ciphered import GeneralSigning, GloGetRequest
from smartmeter.dlms.security import hls, keys, signing
from smartmeter.dlms.security.suites import suite_parameters

HERE = Path(__file__).parent
CLIENT_TITLE = bytes.fromhex("4D4D4D0000000001")
SERVER_TITLE = bytes.fromhex("4B464D0005F5E101")  # the companion standard's example meter


def private_hex(key: ec.EllipticCurvePrivateKey, suite: int) -> str:
    length = suite_parameters(suite).coordinate_length
    return key.private_numbers().private_value.to_bytes(length, "big").hex().upper()


def build(suite: int) -> dict:
    client_sign = signing.generate_private_key(suite)
    server_sign = signing.generate_private_key(suite)
    stoc = secrets.token_bytes(32)
    ctos = secrets.token_bytes(32)
    f_stoc = hls.hls7_client_response(client_sign, CLIENT_TITLE, SERVER_TITLE, stoc, ctos, suite)
    f_ctos = hls.hls7_server_response(server_sign, SERVER_TITLE, CLIENT_TITLE, ctos, stoc, suite)

    # general-signing of a plain Get-Request (clock, attribute 2), request from the client.
    get_request = bytes.fromhex("C0010000080000010000FF0200")
    signed = GeneralSigning.sign(
        client_sign, get_request, transaction_id=bytes.fromhex("0000000000000001"),
        originator_system_title=CLIENT_TITLE, recipient_system_title=SERVER_TITLE, suite=suite,
    )
    # ... and one with a ciphered content and a date-time, response from the server.
    ek = bytes(range(32 if suite == 2 else 16))
    ak = bytes(range(0xD0, 0xD0 + (32 if suite == 2 else 16)))
    ciphered = GloGetRequest.protect(0x30 | suite, ek, ak, SERVER_TITLE, 7, get_request).to_bytes()
    date_time = bytes.fromhex("07EA0B16FF0C0000FF800000")
    signed_ciphered = GeneralSigning.sign(
        server_sign, ciphered, transaction_id=bytes.fromhex("0000000000000001"),
        originator_system_title=SERVER_TITLE, recipient_system_title=CLIENT_TITLE, date_time=date_time,
        suite=suite,
    )

    # IC 64 key_agreement, C(2e, 0s), for the global unicast key.
    client_eph, request = keys.ephemeral_offer(suite, keys.KeyId.GLOBAL_UNICAST_ENCRYPTION, client_sign)
    server_eph = signing.generate_private_key(suite)
    response, server_key = keys.server_key_agreement(
        suite, request, client_sign.public_key(), server_sign, CLIENT_TITLE, SERVER_TITLE, ephemeral_key=server_eph
    )
    client_key = keys.client_key_agreement_result(
        suite, client_eph, response, server_sign.public_key(), CLIENT_TITLE, SERVER_TITLE
    )
    assert client_key == server_key
    shared_secret = client_eph.exchange(ec.ECDH(), server_eph.public_key())

    kek = secrets.token_bytes(16 if suite == 1 else 32)
    new_key = secrets.token_bytes(16 if suite == 1 else 32)
    return {
        "suite": suite,
        "client_system_title": CLIENT_TITLE.hex().upper(),
        "server_system_title": SERVER_TITLE.hex().upper(),
        "client_signing_private": private_hex(client_sign, suite),
        "client_signing_public": signing.public_key_to_bytes(client_sign.public_key()).hex().upper(),
        "server_signing_private": private_hex(server_sign, suite),
        "server_signing_public": signing.public_key_to_bytes(server_sign.public_key()).hex().upper(),
        "hls7": {
            "StoC": stoc.hex().upper(),
            "CtoS": ctos.hex().upper(),
            "client_f_StoC": f_stoc.hex().upper(),
            "server_f_CtoS": f_ctos.hex().upper(),
            "note": "f(StoC) signs SysT-C||SysT-S||StoC||CtoS with the client key; f(CtoS) signs "
                    "SysT-S||SysT-C||CtoS||StoC with the server key; r||s",
        },
        "general_signing_plain": {
            "apdu": signed.to_bytes().hex().upper(),
            "signed_data": signed.signed_data().hex().upper(),
            "signer": "client",
        },
        "general_signing_ciphered": {
            "apdu": signed_ciphered.to_bytes().hex().upper(),
            "signed_data": signed_ciphered.signed_data().hex().upper(),
            "signer": "server",
            "ek": ek.hex().upper(),
            "ak": ak.hex().upper(),
            "plain_content": get_request.hex().upper(),
        },
        "key_agreement": {
            "key_id": 0,
            "client_ephemeral_private": private_hex(client_eph, suite),
            "server_ephemeral_private": private_hex(server_eph, suite),
            "request_key_ciphered_data": request.key_ciphered_data.hex().upper(),
            "response_key_ciphered_data": response.key_ciphered_data.hex().upper(),
            "shared_secret_Z": shared_secret.hex().upper(),
            "algorithm_id": signing.suite_of_key(client_sign).gcm_algorithm_id.hex().upper(),
            "derived_key": client_key.hex().upper(),
        },
        "key_wrap": {
            "kek": kek.hex().upper(),
            "key": new_key.hex().upper(),
            "wrapped": keys.wrap_key(kek, new_key).hex().upper(),
        },
    }


def main() -> None:
    for suite in (1, 2):
        path = HERE / f"suite{suite}_vectors.json"
        path.write_text(json.dumps(build(suite), indent=2) + "\n")
        print("wrote", path)


if __name__ == "__main__":
    main()
