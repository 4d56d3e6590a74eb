"""The certification authority, decided inside the legally relevant part.

The Certification client (companion standard §3.6.8) authenticates with HLS 6 (SHA-256). The
legally relevant part holds that client's HLS secret and runs the challenge itself: it makes
the server challenge StoC, checks the client's f(StoC) = SHA-256(secret || SysT-C || SysT-S ||
StoC || CtoS) and answers f(CtoS) = SHA-256(secret || SysT-S || SysT-C || CtoS || StoC). Only
then does it hand out an authority token, which the commands that start the certification
mode or change legal parameters must carry. The communication side only relays the bytes: a
changed or faulty communication side cannot claim the authority without the secret.

Everything a peer can make this part hold is bounded: at most MAX_CHALLENGES open challenges
(each used once, expiring after CHALLENGE_LIFETIME) and at most MAX_TOKENS live tokens (each
for one association: ended by its release or after TOKEN_LIFETIME).
"""
from __future__ import annotations

import hmac
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from cryptography.hazmat.primitives import hashes

SYSTEM_TITLE_LENGTH = 8
CHALLENGE_MIN, CHALLENGE_MAX = 8, 64  # DLMS HLS challenge lengths
STOC_LENGTH = 16
SECRET_MIN, SECRET_MAX = 8, 64
MAX_CHALLENGES = 8
CHALLENGE_LIFETIME = 120.0  # seconds: pass 2 to pass 3 of one association
MAX_TOKENS = 4
TOKEN_LIFETIME = 4 * 3600.0  # seconds: longer than a certification session, shorter than forever
_ID = re.compile(r"[0-9a-f]{32}")


class AuthorityRefused(Exception):
    """The authority claim is refused; `condition` names the kind (one log line per kind)."""

    def __init__(self, condition: str, detail: str) -> None:
        self.condition = condition
        super().__init__(detail)


def _sha256(*parts: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    for part in parts:
        digest.update(part)
    return digest.finalize()


def _hex(value: object, what: str, lengths: tuple[int, int]) -> bytes:
    if not isinstance(value, str):
        raise AuthorityRefused("malformed", f"{what} must be hex text")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise AuthorityRefused("malformed", f"{what} must be hex text") from None
    if not lengths[0] <= len(raw) <= lengths[1]:
        raise AuthorityRefused("malformed", f"{what} must be {lengths[0]}..{lengths[1]} bytes")
    return raw


def _identifier(value: object, what: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise AuthorityRefused("malformed", f"{what} must be 32 lower-case hex digits")
    return value


@dataclass(frozen=True)
class _Challenge:
    client_system_title: bytes
    server_system_title: bytes
    ctos: bytes
    stoc: bytes
    expires: float


@dataclass(frozen=True)
class _Token:
    client_system_title: bytes
    expires: float


class AuthorityGate:
    """The HLS 6 challenge of the Certification client and the tokens it yields.

    `secret` is the stored HLS secret (None before it is provisioned); `save_secret` persists a
    new one; `monotonic` is the clock lifetimes are measured with."""

    def __init__(self, secret: bytes | None, save_secret: Callable[[bytes], None],
                 monotonic: Callable[[], float], rng: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self._secret = secret
        self._save_secret = save_secret
        self._monotonic = monotonic
        self._rng = rng
        self._challenges: OrderedDict[str, _Challenge] = OrderedDict()
        self._tokens: OrderedDict[str, _Token] = OrderedDict()

    @property
    def provisioned(self) -> bool:
        return self._secret is not None

    def provision(self, secret_hex: object) -> None:
        """Set the secret. Needs no token only while none is set (first start); see set_secret."""
        if self._secret is not None:
            raise AuthorityRefused("unauthenticated", "the certification secret is set; changing it needs the authority")
        self.set_secret(secret_hex)

    def set_secret(self, secret_hex: object) -> None:
        secret = _hex(secret_hex, "secret", (SECRET_MIN, SECRET_MAX))
        self._save_secret(secret)
        self._secret = secret
        self._tokens.clear()  # tokens won with the old secret end with it
        self._challenges.clear()

    def _expire(self) -> None:
        now = self._monotonic()
        for table in (self._challenges, self._tokens):
            for key in [k for k, v in table.items() if v.expires <= now]:
                del table[key]

    def open_challenge(self, client_title_hex: object, server_title_hex: object, ctos_hex: object) -> tuple[str, str]:
        """Pass 2: -> (challenge id, StoC hex). The oldest open challenge gives way when full."""
        client = _hex(client_title_hex, "client_system_title", (SYSTEM_TITLE_LENGTH, SYSTEM_TITLE_LENGTH))
        server = _hex(server_title_hex, "server_system_title", (SYSTEM_TITLE_LENGTH, SYSTEM_TITLE_LENGTH))
        ctos = _hex(ctos_hex, "ctos", (CHALLENGE_MIN, CHALLENGE_MAX))
        if self._secret is None:
            raise AuthorityRefused("not_provisioned", "no certification secret is set")
        self._expire()
        while len(self._challenges) >= MAX_CHALLENGES:
            self._challenges.popitem(last=False)
        challenge_id = self._rng(16).hex()
        stoc = self._rng(STOC_LENGTH)
        self._challenges[challenge_id] = _Challenge(client, server, ctos, stoc, self._monotonic() + CHALLENGE_LIFETIME)
        return challenge_id, stoc.hex()

    def prove(self, challenge_id: object, response_hex: object) -> tuple[str, str]:
        """Pass 3: check f(StoC); -> (token, f(CtoS) hex for pass 4). The challenge is used up
        whatever the outcome, so a recorded response cannot be played again."""
        challenge_id = _identifier(challenge_id, "challenge_id")
        response = _hex(response_hex, "response", (32, 32))
        self._expire()
        challenge = self._challenges.pop(challenge_id, None)
        if challenge is None or self._secret is None:
            raise AuthorityRefused("replayed", "unknown, used or expired challenge")
        c = challenge
        expected = _sha256(self._secret, c.client_system_title, c.server_system_title, c.stoc, c.ctos)
        if not hmac.compare_digest(expected, response):
            raise AuthorityRefused("forged", "f(StoC) does not verify with the certification secret")
        while len(self._tokens) >= MAX_TOKENS:
            self._tokens.popitem(last=False)
        token = self._rng(16).hex()
        self._tokens[token] = _Token(c.client_system_title, self._monotonic() + TOKEN_LIFETIME)
        return token, _sha256(self._secret, c.server_system_title, c.client_system_title, c.ctos, c.stoc).hex()

    def check(self, token: object, client_system_title: bytes) -> bool:
        """True for a live token of this client; False for none (""); AuthorityRefused otherwise."""
        if token == "":
            return False
        token = _identifier(token, "authority_token")
        self._expire()
        entry = self._tokens.get(token)
        if entry is None:
            raise AuthorityRefused("forged", "unknown, released or expired authority token")
        if not hmac.compare_digest(entry.client_system_title, client_system_title):
            raise AuthorityRefused("forged", "the authority token belongs to another client system title")
        return True

    def owner(self, token: object) -> bytes | None:
        """The client system title a live token was won by, or None."""
        if not isinstance(token, str):
            return None
        self._expire()
        entry = self._tokens.get(token)
        return None if entry is None else entry.client_system_title

    def end(self, token: object) -> bool:
        """The association that won the token is released: the token ends. -> whether it was live."""
        token = _identifier(token, "authority_token")
        return self._tokens.pop(token, None) is not None
