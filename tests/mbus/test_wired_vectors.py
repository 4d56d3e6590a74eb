"""The public OMS Annex N wired RSP_UD (tests/vectors/mbus-vectors.json) decodes to what
the vector states, its records equal the plaintext of the encrypted mode 5 / mode 7
vectors, and the encoder rebuilds the frame byte for byte."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from smartmeter.mbus.application import (
    MEDIUM_GAS,
    Coding,
    LongHeader,
    encode_record,
    encode_rsp_ud,
    manufacturer_to_text,
    parse_records,
    parse_telegram,
)
from smartmeter.mbus.link import RSP_UD, LongFrame, decode_frame

VECTORS = {v["id"]: v for v in json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "mbus-vectors.json").read_text())["vectors"]}
WIRED = VECTORS["oms-annex-n-wired"]


def test_the_vector_states_what_is_checked_here():
    # the expectations below are the vector's own words
    assert "volume 28504.27 m3" in VECTORS["oms-annex-n-mode5"]["meaning"]
    assert "date-time 2008-05-31 23:50" in VECTORS["oms-annex-n-mode5"]["meaning"]
    assert "error flags 0 (02FD17)" in VECTORS["oms-annex-n-mode5"]["meaning"]
    for words in ("C=08 RSP_UD", "A=FD", "CI=72", "ID 12345678", "manufacturer 1593 (ELS)",
                  "version 33", "medium 03 (gas)"):
        assert words in WIRED["meaning"]


def test_wired_vector_decodes_to_its_stated_values():
    frame = decode_frame(bytes.fromhex(WIRED["frame"]))
    assert isinstance(frame, LongFrame)
    assert (frame.c, frame.a, frame.ci) == (RSP_UD, 0xFD, 0x72)
    telegram = parse_telegram(frame.ci, frame.data)
    header = telegram.header
    assert header.identification == 12345678
    assert header.manufacturer_code == 0x1593 and header.manufacturer == manufacturer_to_text(0x1593) == "ELS"
    assert (header.version, header.medium) == (0x33, MEDIUM_GAS)
    volume, when, errors = telegram.records
    assert (volume.value, volume.exponent, volume.unit) == (2850427, -2, "m³")
    assert str(volume.scaled()) == "28504.27"
    assert volume.dlms_scaler_unit() == (-2, 13)  # Blue Book: 13 = m³
    assert when.value == dt.datetime(2008, 5, 31, 23, 50)
    assert errors.quantity == "Error flags" and errors.value == 0
    assert not telegram.more_records_follow and telegram.special_function is None


def test_the_encrypted_vectors_carry_the_same_records():
    frame = decode_frame(bytes.fromhex(WIRED["frame"]))
    wired = parse_telegram(frame.ci, frame.data).records
    for vector in ("oms-annex-n-mode5", "oms-annex-n-mode7"):
        # 2F 2F (decryption check) + records + 2F fillers
        records, special, rest = parse_records(bytes.fromhex(VECTORS[vector]["plaintext"]))
        assert records == wired and special is None and rest == b""


def test_the_encoder_rebuilds_the_wired_vector():
    header = LongHeader(12345678, "ELS", version=0x33, medium=MEDIUM_GAS, access_number=0x2A)
    records = [encode_record(2850427, 0x14, coding=Coding.BCD8),
               encode_record(dt.datetime(2008, 5, 31, 23, 50), 0x6D, coding=Coding.DATETIME_F),
               encode_record(0, 0x7D, vifes=[0x17], coding=Coding.INT16)]
    assert encode_rsp_ud(0xFD, header, records) == bytes.fromhex(WIRED["frame"])
