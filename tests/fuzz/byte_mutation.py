"""The byte-level mutator shared by the APDU fuzzers (xDLMS and ciphered APDUs)."""
from __future__ import annotations

import random


def mutate(rng: random.Random, b: bytes, interesting: tuple[int, ...]) -> bytes:
    """1-3 random edits of `b`; `interesting` are the byte values tried as lengths and counts."""
    buf = bytearray(b)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(7)
        if op == 0 and buf:  # bit flip
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # truncation
            del buf[rng.randrange(len(buf)):]
        elif op == 2:  # insertion
            i = rng.randrange(len(buf) + 1)
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        elif op == 3 and buf:  # deletion
            i = rng.randrange(len(buf))
            del buf[i:i + rng.randrange(1, 4)]
        elif op == 4 and buf:  # length/count corruption
            buf[rng.randrange(len(buf))] = rng.choice(interesting)
        elif op == 5 and buf:  # byte replaced by random
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        else:  # append junk
            buf += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
    return bytes(buf)
