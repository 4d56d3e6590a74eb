"""Bounded, seeded fuzzing of decode_xdlms: random and mutated inputs may only give an APDU or a
DecodeError, and any APDU decoded from junk re-encodes to bytes that decode to the same encoding."""
from __future__ import annotations

import pathlib
import random
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / "dlms"))
from byte_mutation import mutate  # noqa: E402
from test_apdu_common import sample_apdus  # noqa: E402

from smartmeter.dlms.apdu.xdlms import APDU_CLASSES, decode_xdlms  # noqa: E402
from smartmeter.errors import DecodeError  # noqa: E402

SEED = 0x5EED_0D15
RANDOM_INPUTS = 40_000
MUTATED_INPUTS = 80_000

_TAGS = sorted({c.TAG for c in APDU_CLASSES})
_INTERESTING = (0x00, 0x01, 0x02, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0xFF, 0x09, 0x01, 0x02, 0x13)


def _random_input(rng: random.Random) -> bytes:
    n = rng.randrange(0, 40)
    body = bytes(rng.choice(_INTERESTING) if rng.random() < 0.3 else rng.randrange(256) for _ in range(n))
    r = rng.random()
    if r < 0.7:  # a real tag (and usually a real choice) so decoding goes past the dispatcher
        return bytes((rng.choice(_TAGS), rng.randrange(1, 8))) + body
    return body


def _check(b: bytes) -> bool:
    try:
        apdu = decode_xdlms(b)
    except DecodeError:
        return False
    # Anything accepted must be a value we can send back identically.
    encoded = apdu.to_bytes()
    assert decode_xdlms(encoded).to_bytes() == encoded, b.hex()
    return True


def test_fuzz_random_inputs():
    rng = random.Random(SEED)
    accepted = sum(_check(_random_input(rng)) for _ in range(RANDOM_INPUTS))
    assert accepted < RANDOM_INPUTS  # sanity: the generator does produce junk


def test_fuzz_mutated_valid_encodings():
    rng = random.Random(SEED + 1)
    seeds = [a.to_bytes() for a in sample_apdus()]
    for s in seeds:
        assert _check(s)
    accepted = 0
    for _ in range(MUTATED_INPUTS):
        accepted += _check(mutate(rng, rng.choice(seeds), _INTERESTING))
    # Some mutations (e.g. a flipped bit inside raw data) stay valid; most must not.
    assert 0 < accepted < MUTATED_INPUTS
