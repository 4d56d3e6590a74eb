"""Seeded fuzzing of the wireless M-Bus decoder, OMS decryption and the wireless receiver.

* decode_wmbus (CRC-free, format A, format B): random and mutated frames give a
  WirelessFrame or a DecodeError; what decodes carries exactly the bytes it came from.
  Half of the mutated frames get their L field and CRCs fixed, so the mutations reach
  the ELL/AFL/TPL parsing behind the CRCs.
* decrypt_frame: on any decoded frame only a DecryptedTelegram or a typed security /
  decode error; with the right key a mutated mode-7 frame never yields anything but the
  original plaintext (the AFL MAC covers the counter and the whole TPL).
* WirelessReceiver: never raises on frame bytes, counts every frame once, accepts only
  frames whose plaintext is one the bound meters really sent, and never twice a counter.
"""
from __future__ import annotations

import random

from byte_mutation import mutate
from smartmeter.errors import DecodeError
from smartmeter.mbus.security import (
    OmsSecurityError,
    ReceivedTelegram,
    Refusal,
    RefusalKind,
    SecurityMode,
    WirelessReceiver,
    decrypt_frame,
)
from smartmeter.mbus.wireless import (
    MeterAddress,
    WirelessFrame,
    add_crc_format_a,
    add_crc_format_b,
    decode_wmbus,
    encode_wmbus,
)

SEED = 0xB0_5EED
N_DECODE = 100_000
N_DECRYPT = 50_000
N_RECEIVER = 50_000
_INTERESTING = (0x00, 0x01, 0x05, 0x07, 0x0F, 0x10, 0x20, 0x25, 0x2F, 0x72, 0x78, 0x7A, 0x8C, 0x8D, 0x90,
                0xFF)
METERS = [MeterAddress("ELS", "12345678", 0x33, 0x03), MeterAddress("KAM", "00112233", 0x1B, 0x07),
          MeterAddress("ITW", "20250001", 0x50, 0x04)]
KEYS = [bytes(range(16)), bytes(range(0x20, 0x30)), bytes(range(0x40, 0x50))]
MODES = [SecurityMode.MODE_5, SecurityMode.MODE_7, SecurityMode.NONE]


def _records(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.choice([0, 6, 17, 40, 120])))


def _seeds(rng: random.Random) -> list[tuple[int, bytes, bytes]]:
    """(meter index, CRC-free frame, padded plaintext or the clear records) triples."""
    seeds = []
    for n in range(60):
        m = n % 3
        records = _records(rng)
        counter = rng.randrange(1, 1 << 20)
        frame = encode_wmbus(METERS[m], records, access_number=rng.randrange(256), security=MODES[m],
                             key=KEYS[m], message_counter=counter, crc=None,
                             long_header=rng.random() < 0.3, ell_communication_control=rng.choice([None, 0x20]))
        seeds.append((m, frame, records))
    return seeds


def _fix(frame: bytearray, rng: random.Random) -> bytes:
    if frame and rng.random() < 0.5:
        frame[0] = (len(frame) - 1) & 0xFF
    return bytes(frame)


def _encoded(raw: bytes, crc: str | None) -> bytes:
    """`raw` in the representation `crc` names, or raw itself when it cannot be one."""
    try:
        if crc == "A":
            return add_crc_format_a(raw)
        if crc == "B":
            return add_crc_format_b(raw)
    except (DecodeError, ValueError):
        pass
    return raw


def test_fuzz_decode_wmbus():
    rng = random.Random(SEED)
    seeds = _seeds(rng)
    decoded = 0
    for _ in range(N_DECODE):
        crc = rng.choice([None, "A", "B"])
        pick = rng.random()
        if pick < 0.15:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        elif pick < 0.6:
            data = _encoded(_fix(bytearray(mutate(rng, rng.choice(seeds)[1], _INTERESTING)), rng), crc)
        else:  # mutate the on-air bytes, CRCs included
            data = mutate(rng, _encoded(rng.choice(seeds)[1], crc), _INTERESTING)
        try:
            frame = decode_wmbus(data, crc=crc)  # type: ignore[arg-type]
        except DecodeError:
            continue
        decoded += 1
        assert isinstance(frame, WirelessFrame)
        assert frame.raw[0] == len(frame.raw) - 1
        if crc == "A":
            assert add_crc_format_a(frame.raw) == data
        elif crc is None:
            assert frame.raw == data
        assert frame.raw.endswith(frame.payload)
    assert decoded > N_DECODE // 5  # the mutations reach past L and the CRCs


def test_fuzz_decrypt_frame():
    rng = random.Random(SEED + 1)
    seeds = _seeds(rng)
    decrypted = authenticated = 0
    for _ in range(N_DECRYPT):
        m, original, records = rng.choice(seeds)
        data = _fix(bytearray(mutate(rng, original, _INTERESTING)), rng)
        try:
            frame = decode_wmbus(data)
        except DecodeError:
            continue
        key = KEYS[m] if rng.random() < 0.8 else rng.choice(KEYS + [bytes(16)])
        try:
            telegram = decrypt_frame(frame, key)
        except (OmsSecurityError, DecodeError):
            continue
        decrypted += 1
        if telegram.mode is SecurityMode.MODE_7 and key == KEYS[m] and frame.address == METERS[m]:
            # Authenticated: nothing but the original plaintext may come out.
            pad = b"\x2F\x2F" + records
            pad += b"\x2F" * (-len(pad) % 16)
            assert telegram.application_data == pad
            authenticated += 1
    assert decrypted > 1000 and authenticated > 100


def test_fuzz_receiver_never_raises_and_accepts_only_real_telegrams():
    rng = random.Random(SEED + 2)
    receiver = WirelessReceiver(crc="A", max_frames_per_second=1000, burst=50, queue_length=8)
    for m in range(3):
        receiver.bind(METERS[m], KEYS[m] if MODES[m] else None, MODES[m])
    sent: dict[tuple[int, int], bytes] = {}  # (meter, mode-7 counter) -> padded plaintext
    counters = [1, 1, 1]
    accepted_counters: set[tuple[int, int]] = set()
    now = 0.0
    genuine = []
    for n in range(N_RECEIVER):
        now += rng.choice([0.0005, 0.001, 0.01])
        if n % 10 == 0 or not genuine:  # a fresh genuine mode-7 telegram from meter 1
            counters[1] += rng.choice([1, 1, 2])
            records = _records(rng)
            frame = encode_wmbus(METERS[1], records, access_number=counters[1] & 0xFF, security=7,
                                 key=KEYS[1], message_counter=counters[1], crc=None)
            pad = b"\x2F\x2F" + records
            sent[(1, counters[1])] = pad + b"\x2F" * (-len(pad) % 16)
            genuine.append(frame)
            genuine = genuine[-20:]
        pick = rng.random()
        if pick < 0.3:
            data = add_crc_format_a(genuine[-1]) if rng.random() < 0.7 else add_crc_format_a(rng.choice(genuine))
        elif pick < 0.8:
            data = _encoded(_fix(bytearray(mutate(rng, rng.choice(genuine), _INTERESTING)), rng), "A")
        else:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        if rng.random() < 0.1:
            receiver.offer(data, now)
            results = receiver.drain() if rng.random() < 0.5 else []
        else:
            results = [receiver.receive(data, now)]
        for result in results:
            assert isinstance(result, (ReceivedTelegram, Refusal))
            if isinstance(result, ReceivedTelegram) and result.mode is SecurityMode.MODE_7:
                key = (1, result.counter)
                assert key in sent and result.application_data == sent[key]
                assert key not in accepted_counters  # never twice
                accepted_counters.add(key)
    # every frame is counted exactly once (those still queued when the run ends not yet)
    assert receiver.accepted + sum(receiver.refusals.values()) == N_RECEIVER - receiver.queued
    assert receiver.refusals[RefusalKind.REPLAY] > 0 and receiver.refusals[RefusalKind.CRC] > 0
    assert len(accepted_counters) > N_RECEIVER // 20


def test_fuzz_key_transfer_unwrap():
    from smartmeter.mbus import keytransfer as kt

    rng = random.Random(SEED + 3)
    master = KEYS[0]
    genuine = kt.wrap_smr5(master, KEYS[1], METERS[0], 5)
    opened = 0
    for _ in range(20_000):
        pick = rng.random()
        if pick < 0.05:
            data = genuine
        elif pick < 0.75:
            data = mutate(rng, genuine, _INTERESTING)
        else:
            data = bytes(rng.randrange(256) for _ in range(rng.choice([16, 30, rng.randrange(40)])))
        for style in kt.KeyTransferStyle:
            try:
                key = kt.unwrap_key(style, master, data, address=METERS[0])
            except kt.KeyTransferError:
                continue
            if style is kt.KeyTransferStyle.SMR5:
                assert data == genuine and key == KEYS[1]  # only the genuine wrap opens
                opened += 1
    assert opened > 0
