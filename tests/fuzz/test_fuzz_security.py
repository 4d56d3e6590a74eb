"""Bounded, seeded fuzzing of the protected-APDU decoders and of `unprotect`.

* decode_ciphered (every ciphered APDU class, via the dispatcher and each class's own
  from_bytes): random and mutated inputs may only give an APDU or a DecodeError; an APDU
  decoded from junk re-encodes to bytes that decode to the same APDU.
* unprotect / unprotect_content / verify_hls5_response: random and mutated protected
  contents may only give a plaintext or a SecurityError; nothing forged passes (with the
  right keys, a mutated authenticated content never decrypts to anything but its original
  plaintext).
"""
from __future__ import annotations

import random

from byte_mutation import mutate
from smartmeter.dlms.apdu import ciphered as c
from smartmeter.dlms.security import hls
from smartmeter.dlms.security.errors import SecurityError
from smartmeter.dlms.security.suites import protect_content, unprotect, unprotect_content
from smartmeter.errors import DecodeError

SEED = 0x5EC_0DE
RANDOM_INPUTS = 40_000
MUTATED_INPUTS = 80_000
UNPROTECT_RANDOM = 40_000
UNPROTECT_MUTATED = 70_000

_TAGS = sorted(c.CIPHERED_TAGS)
_CLASS_BY_TAG = {cls.TAG: cls for cls in c.CIPHERED_APDU_CLASSES}
_INTERESTING = (0x00, 0x01, 0x02, 0x05, 0x08, 0x0C, 0x10, 0x30, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0xFF)
EK = bytes(range(16))
AK = bytes(range(0xD0, 0xE0))
EK2, AK2 = bytes(range(32)), bytes(range(0x40, 0x60))
TITLE = bytes.fromhex("4D4D4D0000BC614E")
PEER = bytes.fromhex("4D4D4D0000000001")


def _seed_apdus() -> list[bytes]:
    plain = bytes.fromhex("C0010000080000010000FF0200")
    out = [cls.protect(0x30, EK, AK, TITLE, 5, plain).to_bytes()
           for cls in list(c.GLO_TAG_FOR_PLAIN.values()) + list(c.DED_TAG_FOR_PLAIN.values())]
    out.append(c.GeneralGloCiphering.protect(0x30, EK, AK, TITLE, 6, plain).to_bytes())
    out.append(c.GeneralDedCiphering.protect(0x10, EK, AK, TITLE, 7, plain).to_bytes())
    for key_info in (None, c.IdentifiedKey(c.IdentifiedKeyId.GLOBAL_UNICAST_ENCRYPTION_KEY),
                     c.WrappedKey(bytes(24)), c.AgreedKey(b"\x01", bytes(128))):
        out.append(c.GeneralCiphering.protect(
            0x31, EK, AK, 8, plain, b"\x00" * 8, TITLE, PEER, key_info, bytes(12), b"x").to_bytes())
    out.append(c.GeneralSigning(b"\x00" * 8, TITLE, PEER, b"", b"", plain, bytes(64)).to_bytes())
    out.append(c.GeneralSigning(b"\x01", TITLE, PEER, bytes(12), b"oi", bytes(200), bytes(96)).to_bytes())
    return out


def _random_input(rng: random.Random) -> bytes:
    n = rng.randrange(0, 60)
    body = bytes(rng.choice(_INTERESTING) if rng.random() < 0.4 else rng.randrange(256) for _ in range(n))
    if rng.random() < 0.8:
        return bytes((rng.choice(_TAGS),)) + body
    return body


def _check_decode(b: bytes) -> bool:
    cls = _CLASS_BY_TAG.get(b[0]) if b else None
    try:
        apdu = c.decode_ciphered(b)
    except DecodeError:
        if cls is not None:  # the class's own decoder must agree
            try:
                cls.from_bytes(b)
            except DecodeError:
                return False
            raise AssertionError(f"from_bytes accepted what decode_ciphered refused: {b.hex()}")
        return False
    assert type(apdu) is cls and cls.from_bytes(b) == apdu
    encoded = apdu.to_bytes()
    assert c.decode_ciphered(encoded) == apdu, b.hex()
    return True


def test_fuzz_decode_ciphered_random():
    rng = random.Random(SEED)
    accepted = sum(_check_decode(_random_input(rng)) for _ in range(RANDOM_INPUTS))
    assert 0 < accepted < RANDOM_INPUTS


def test_fuzz_decode_ciphered_mutated():
    rng = random.Random(SEED + 1)
    seeds = _seed_apdus()
    for s in seeds:
        assert _check_decode(s)
    accepted = sum(_check_decode(mutate(rng, rng.choice(seeds), _INTERESTING)) for _ in range(MUTATED_INPUTS))
    assert 0 < accepted < MUTATED_INPUTS


def _try_unprotect(call) -> bytes | None:
    try:
        return call()
    except SecurityError:
        return None


def test_fuzz_unprotect_random():
    rng = random.Random(SEED + 2)
    ok = 0
    for _ in range(UNPROTECT_RANDOM):
        sc = rng.choice((0x10, 0x20, 0x30, 0x31, 0x32, 0x12)) if rng.random() < 0.7 else rng.randrange(256)
        ek, ak = (EK2, AK2) if (sc & 0x0F) == 2 and rng.random() < 0.9 else (EK, AK)
        if rng.random() < 0.05:
            ek = ek[: rng.randrange(len(ek))]
        if rng.random() < 0.05:
            ak = None
        title = TITLE if rng.random() < 0.95 else bytes(rng.randrange(12))
        counter = rng.randrange(1 << 32)
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        extra = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 3)))
        out = _try_unprotect(lambda: unprotect(sc, ek, ak, title, counter, payload, extra))
        if out is not None:
            # only encryption-only content (no tag) can come through random bytes
            assert not sc & 0x10
            ok += 1
        content = bytes((sc,)) + counter.to_bytes(4, "big") + payload
        cut = content[: rng.randrange(len(content) + 1)]
        if _try_unprotect(lambda: unprotect_content(cut, ek, ak, title, require_authentication=False)[1]):
            ok += 1
        challenge = payload[:64] if len(payload) >= 8 else bytes(8)
        _try_unprotect(lambda: hls.verify_hls5_response(0, EK, AK, TITLE, challenge, content[:17]))
    assert ok > 0


def test_fuzz_unprotect_mutated_never_forges():
    rng = random.Random(SEED + 3)
    originals = []
    for sc, ek, ak in ((0x30, EK, AK), (0x10, EK, AK), (0x31, EK, AK), (0x32, EK2, AK2), (0x12, EK2, AK2)):
        plain = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60)))
        originals.append((protect_content(sc, ek, ak, TITLE, rng.randrange(1 << 32), plain, b"aad"), ek, ak, plain))
    for _ in range(UNPROTECT_MUTATED):
        content, ek, ak, plain = rng.choice(originals)
        mutated = mutate(rng, content, _INTERESTING)
        out = _try_unprotect(lambda: unprotect_content(mutated, ek, ak, TITLE, b"aad")[1])
        if out is not None:
            # Authentication holds: whatever passes carries the original SC, IC and plaintext.
            assert mutated[:5] == content[:5] and out == plain, mutated.hex()
        # Without the authentication requirement only an SC downgrade to encryption-only
        # can get anything else through — never with the authentication bit still set.
        loose = _try_unprotect(
            lambda: unprotect_content(mutated, ek, ak, TITLE, b"aad", require_authentication=False)[1])
        if loose is not None and (mutated[:5] != content[:5] or loose != plain):
            assert not mutated[0] & 0x10, mutated.hex()


PER_DECODER_INPUTS = 100_000


def _family(b: bytes) -> str:
    cls = _CLASS_BY_TAG[b[0]]
    if issubclass(cls, c.ServiceSpecificCiphered):
        return "service-specific"
    return "general-glo/ded" if cls in (c.GeneralGloCiphering, c.GeneralDedCiphering) else cls.__name__


def test_fuzz_each_decoder_body_gets_100k_mutated_inputs():
    """The four distinct decoder bodies (service-specific, general-glo/ded,
    general-ciphering, general-signing), each fed 100k mutations of its own encodings."""
    seeds = _seed_apdus()
    families: dict[str, list[bytes]] = {}
    for s in seeds:
        families.setdefault(_family(s), []).append(s)
    assert set(families) == {"service-specific", "general-glo/ded", "GeneralCiphering", "GeneralSigning"}
    for n, (name, own) in enumerate(sorted(families.items())):
        rng = random.Random(SEED + 10 + n)
        accepted = sum(_check_decode(mutate(rng, rng.choice(own), _INTERESTING)) for _ in range(PER_DECODER_INPUTS))
        assert 0 < accepted < PER_DECODER_INPUTS, name
