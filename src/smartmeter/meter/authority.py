"""The Certification client's HLS 6 exchange, relayed to the legally relevant part.

The legal part holds the Certification secret and decides the certification authority itself
(smartmeter.legal.authority); this side only carries CtoS, StoC, f(StoC) and f(CtoS) between
the association and the protective interface, and keeps the token the legal part hands out
with the association it belongs to.
"""
from __future__ import annotations

from smartmeter.dlms.security.errors import AuthenticationError
from smartmeter.legal import interface as legal

CERTIFICATION_CLIENT = "certification"


class LegalHlsAuthority:
    """dlms.server_security.HlsAuthority backed by the legal part's declared commands."""

    def __init__(self, legal_part) -> None:
        self._legal = legal_part

    def open_challenge(self, client_system_title: bytes, server_system_title: bytes, ctos: bytes) -> tuple[str, bytes]:
        try:
            challenge_id, stoc_hex = self._legal.execute(legal.OpenAuthorityChallenge(
                client_system_title.hex(), server_system_title.hex(), ctos.hex()))
        except legal.CommandRefused as exc:
            raise AuthenticationError(f"the legal part gives no challenge: {exc}") from None
        return challenge_id, bytes.fromhex(stoc_hex)

    def prove(self, challenge_id: str, f_stoc: bytes) -> tuple[str, bytes]:
        try:
            token, response_hex = self._legal.execute(legal.ProveAuthority(challenge_id, f_stoc.hex()))
        except legal.CommandRefused as exc:
            raise AuthenticationError(f"HLS-SHA256 f(StoC) refused by the legal part: {exc}") from None
        return token, bytes.fromhex(response_hex)

    def change_secret(self, secret: bytes, token: str) -> bool:
        try:
            self._legal.execute(legal.ProvisionAuthoritySecret(secret.hex(), token))
        except legal.CommandRefused:
            return False
        return True

    def end(self, token: str) -> None:
        try:
            self._legal.execute(legal.EndAuthority(token))
        except legal.CommandRefused:
            pass  # already ended (expired or displaced): nothing left to end


def hand_over_certification_secret(security, legal_part) -> None:
    """At first start the legal part takes the Certification client's HLS secret (demo
    provisioning made it); from then on it runs that client's HLS 6 exchange."""
    context = security.manager.context(CERTIFICATION_CLIENT)
    if context is None or context.hls_secret is None:
        return
    if not legal_part.execute(legal.ReadAuthorityProvisioned()):
        legal_part.execute(legal.ProvisionAuthoritySecret(context.hls_secret.hex()))
    context.hls_authority = LegalHlsAuthority(legal_part)
