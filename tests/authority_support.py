"""Winning the certification authority from a legal part in tests, as the Certification client does:
HLS 6 (SHA-256) computed here by hand from the scenario's secret, not by the code under test."""
from __future__ import annotations

import hashlib
import os

from smartmeter.legal import interface as legal

TEST_SECRET = bytes(range(1, 17))
SERVER_TITLE = bytes.fromhex("4b534d0000000001")


def f_stoc(secret: bytes, client_title: bytes, server_title: bytes, stoc: bytes, ctos: bytes) -> bytes:
    return hashlib.sha256(secret + client_title + server_title + stoc + ctos).digest()


def certification_token(part, client_title_hex: str, secret: bytes = TEST_SECRET) -> str:
    """Provision `secret` if the part holds none, then run the challenge: -> authority token."""
    if not part.execute(legal.ReadAuthorityProvisioned()):
        part.execute(legal.ProvisionAuthoritySecret(secret.hex()))
    ctos = os.urandom(16)
    challenge_id, stoc_hex = part.execute(legal.OpenAuthorityChallenge(client_title_hex, SERVER_TITLE.hex(), ctos.hex()))
    response = f_stoc(secret, bytes.fromhex(client_title_hex), SERVER_TITLE, bytes.fromhex(stoc_hex), ctos)
    token, _ = part.execute(legal.ProveAuthority(challenge_id, response.hex()))
    return token
