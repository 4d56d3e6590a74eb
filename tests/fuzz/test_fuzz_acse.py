"""Seeded fuzzing of the ACSE and xDLMS initiate decoders: only DecodeError may escape.

Inputs are random byte strings and mutations (bit flips, byte overwrites, truncation,
insertion, deletion, length-octet corruption, splicing) of valid encodings. Every input
that does decode must re-encode to something that decodes to the same value.
"""
from __future__ import annotations

import random

from smartmeter.dlms.apdu import ber
from smartmeter.dlms.apdu.acse import AARE, AARQ, RLRE, RLRQ, decode_acse
from smartmeter.dlms.apdu.initiate import (
    Conformance,
    InitiateError,
    InitiateErrorReason,
    InitiateRequest,
    InitiateResponse,
    decode_initiate,
)
from smartmeter.errors import DecodeError

ITERATIONS = 100_000
INTERESTING_LENGTHS = (0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0xFE, 0xFF)


def _maybe(rnd: random.Random, make):
    return make() if rnd.random() < 0.5 else None


def _random_initiate(rnd: random.Random) -> bytes:
    kind = rnd.randrange(3)
    if kind == 0:
        return InitiateRequest(
            dedicated_key=_maybe(rnd, lambda: rnd.randbytes(rnd.choice((0, 16, 32, 200)))),
            response_allowed=rnd.random() < 0.8,
            proposed_quality_of_service=_maybe(rnd, lambda: rnd.randint(-128, 127)),
            proposed_dlms_version_number=rnd.choice((5, 6, 255)),
            proposed_conformance=Conformance(rnd.getrandbits(24)),
            client_max_receive_pdu_size=rnd.getrandbits(16),
        ).to_bytes()
    if kind == 1:
        return InitiateResponse(
            negotiated_quality_of_service=_maybe(rnd, lambda: rnd.randint(-128, 127)),
            negotiated_dlms_version_number=6,
            negotiated_conformance=Conformance(rnd.getrandbits(24)),
            server_max_receive_pdu_size=rnd.getrandbits(16),
            vaa_name=rnd.choice((0x0007, 0xFA00)),
        ).to_bytes()
    return InitiateError(rnd.choice(list(InitiateErrorReason))).to_bytes()


def _random_acse(rnd: random.Random) -> bytes:
    def octets():
        return _maybe(rnd, lambda: rnd.randbytes(rnd.choice((0, 1, 8, 16, 64, 130, 300))))

    kind = rnd.randrange(4)
    user_information = _maybe(rnd, lambda: _random_initiate(rnd))
    if kind == 0:
        return AARQ(
            application_context_name=rnd.choice((1, 2, 3, 4, 200)),
            calling_ap_title=octets(),
            calling_ae_qualifier=octets(),
            called_ap_title=octets(),
            called_ae_qualifier=octets(),
            sender_acse_requirements=rnd.random() < 0.5,
            mechanism_name=_maybe(rnd, lambda: rnd.randint(0, 7)),
            calling_authentication_value=octets(),
            user_information=user_information,
            protocol_version=_maybe(rnd, lambda: rnd.choice((1, 0, 3, 2**40))),
        ).to_bytes()
    if kind == 1:
        return AARE(
            application_context_name=rnd.choice((1, 2, 3, 4)),
            result=rnd.randint(0, 2),
            result_source=rnd.randint(1, 2),
            diagnostic=rnd.choice((0, 1, 2, 13, 14, 300, -5)),
            responding_ap_title=octets(),
            responding_ae_qualifier=octets(),
            responder_acse_requirements=rnd.random() < 0.5,
            mechanism_name=_maybe(rnd, lambda: rnd.randint(0, 7)),
            responding_authentication_value=octets(),
            user_information=user_information,
        ).to_bytes()
    cls = RLRQ if kind == 2 else RLRE
    return cls(reason=_maybe(rnd, lambda: rnd.choice((0, 1, 30, 1000))),
               user_information=user_information).to_bytes()


def _mutate(rnd: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rnd.choice((1, 1, 1, 2, 3))):
        op = rnd.randrange(8)
        if op == 0 and buf:  # bit flip
            i = rnd.randrange(len(buf))
            buf[i] ^= 1 << rnd.randrange(8)
        elif op == 1 and buf:  # overwrite a byte
            buf[rnd.randrange(len(buf))] = rnd.randrange(256)
        elif op == 2 and buf:  # truncate
            del buf[rnd.randrange(len(buf)) :]
        elif op == 3:  # insert random bytes
            i = rnd.randrange(len(buf) + 1)
            buf[i:i] = rnd.randbytes(rnd.randint(1, 4))
        elif op == 4 and buf:  # delete a range
            i = rnd.randrange(len(buf))
            del buf[i : i + rnd.randint(1, 4)]
        elif op == 5 and len(buf) > 1:  # corrupt what is likely a length octet
            i = rnd.randrange(1, len(buf))
            buf[i] = rnd.choice(INTERESTING_LENGTHS + ((buf[i] + rnd.choice((-1, 1))) & 0xFF,))
        elif op == 6:  # splice with another corpus entry
            other = rnd.choice(corpus)
            i = rnd.randrange(len(buf) + 1)
            j = rnd.randrange(len(other) + 1)
            buf = buf[:i] + other[j:]
        else:  # duplicate a slice (repeated components)
            if buf:
                i = rnd.randrange(len(buf))
                j = rnd.randrange(i, len(buf) + 1)
                buf[j:j] = buf[i:j]
    return bytes(buf)


def _mutate_inside(rnd: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    """Mutate the contents of a valid outer TLV, then fix the outer length.

    Most plain mutations are caught by the outer length check; this reaches the
    component-level decoding behind it.
    """
    outer = ber.read_tlv(data, 0, len(data), "corpus entry")
    content = _mutate(rnd, data[outer.content_start :], corpus)
    return data[:1] + ber.encode_length(len(content)) + content


def _inputs(rnd: random.Random, corpus: list[bytes], first_bytes: tuple[int, ...],
            inside: bool = False):
    for _ in range(ITERATIONS):
        if inside and rnd.random() < 0.5:
            yield _mutate_inside(rnd, rnd.choice(corpus), corpus)
            continue
        roll = rnd.random()
        if roll < 0.1:
            body = rnd.randbytes(rnd.randint(0, 40))
            yield bytes([rnd.choice(first_bytes)]) + body if rnd.random() < 0.8 else body
        elif roll < 0.15:
            yield rnd.choice(corpus)
        else:
            yield _mutate(rnd, rnd.choice(corpus), corpus)


def test_fuzz_decode_acse():
    rnd = random.Random(0xAC5E)
    corpus = [_random_acse(rnd) for _ in range(300)]
    corpus += [
        bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0"),
        bytes.fromhex("6129A109060760857405080101A203020100A305A103020100"
                      "BE10040E0800065F1F040000501F01F40007"),
        bytes.fromhex("6215A1090607608574050801019D0207808A020780BE00"),
    ]
    decoded = 0
    count = 0
    for data in _inputs(rnd, corpus, (0x60, 0x61, 0x62, 0x63), inside=True):
        count += 1
        try:
            apdu = decode_acse(data)
        except DecodeError:
            continue
        decoded += 1
        # whatever decodes re-encodes canonically
        again = apdu.to_bytes()
        assert decode_acse(again) == apdu
    assert count == ITERATIONS
    # The mutations must leave enough inputs decodable to reach the deeper code.
    assert decoded > ITERATIONS // 20


def test_fuzz_initiate_decoders():
    rnd = random.Random(0x1417)
    corpus = [_random_initiate(rnd) for _ in range(300)]
    corpus += [
        bytes.fromhex("01000000065F1F0400007E1F04B0"),
        bytes.fromhex("0800065F1F040000501F01F40007"),
        bytes.fromhex("01011000112233445566778899AABBCCDDEEFF0000065F1F0400007E1F04B0"),
        bytes.fromhex("0E010601"),
    ]
    decoded = 0
    count = 0
    decoders = (InitiateRequest.from_bytes, InitiateResponse.from_bytes, InitiateError.from_bytes)
    for data in _inputs(rnd, corpus, (0x01, 0x08, 0x0E)):
        count += 1
        try:
            pdu = decode_initiate(data)
        except DecodeError:
            pdu = None
        if pdu is not None:
            decoded += 1
            assert decode_initiate(pdu.to_bytes()) == pdu
        for decoder in decoders:
            try:
                decoder(data)
            except DecodeError:
                pass
    assert count == ITERATIONS
    assert decoded > ITERATIONS // 20
