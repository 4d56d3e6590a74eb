"""EN 13757-3 application layer: records built by hand from the standard's bit layouts,
every data coding, the VIF tables, special functions, headers and CI fields, the typed
errors, the encoder, and the DLMS unit table against gurux-dlms's Unit enumeration."""
from __future__ import annotations

import datetime as dt
import doctest
import struct

import pytest
from gurux_dlms.enums import Unit as GuruxUnit

import smartmeter.mbus.application as application
from smartmeter.errors import DecodeError, EncodeError, TruncatedError
from smartmeter.mbus.application import (
    CI_ALARM,
    CI_APPLICATION_ERROR,
    CI_APPLICATION_RESET,
    CI_DATA_SEND,
    CI_RSP_NONE,
    CI_RSP_SHORT,
    CI_SELECTION,
    CI_TIME_SYNC,
    DLMS_UNITS,
    Coding,
    Function,
    LongHeader,
    MbusApplicationError,
    MbusApplicationTruncatedError,
    MbusTooManyExtensionsError,
    MbusUnknownCiError,
    MbusValueError,
    SecondaryAddress,
    ShortHeader,
    encode_dib,
    encode_long_header,
    encode_record,
    encode_rsp_ud,
    manufacturer_from_text,
    manufacturer_to_text,
    parse_records,
    parse_telegram,
    primary_vif,
    status_flags,
)
from smartmeter.mbus.link import LongFrame, decode_frame


def one(data: bytes):
    records, special, rest = parse_records(data)
    assert len(records) == 1 and special is None and rest == b""
    return records[0]


def test_docstring_example():
    assert doctest.testmod(application).failed == 0


def test_manufacturer_code():
    # EN 13757-3: three letters, each letter - 64 in 5 bits, first letter highest
    for text in ("ELS", "KAM", "SIM", "AAA", "ZZZ"):
        a, b, c = (ord(ch) - 64 for ch in text)
        code = a * 32 * 32 + b * 32 + c
        assert manufacturer_from_text(text) == code and manufacturer_to_text(code) == text
    with pytest.raises(EncodeError):
        manufacturer_from_text("E1S")


def test_dif_and_difes_compose_storage_tariff_subunit():
    # DIF C4: extension, storage bit 1, instantaneous, 32-bit integer
    # DIFE B5: extension, subunit 0, tariff 3, storage 5; DIFE 41: subunit 1, tariff 0, storage 1
    record = one(bytes([0xC4, 0xB5, 0x41, 0x13]) + struct.pack("<i", 42))
    assert record.storage_number == 1 + (5 << 1) + (1 << 5)
    assert record.tariff == 3
    assert record.subunit == 0b10
    assert record.value == 42 and (record.unit, record.exponent) == ("m³", -3)
    assert encode_dib(0x4, record.storage_number, record.tariff, record.subunit) == bytes([0xC4, 0xB5, 0x41])


@pytest.mark.parametrize("dif, function", [(0x04, Function.INSTANTANEOUS), (0x14, Function.MAXIMUM),
                                           (0x24, Function.MINIMUM), (0x34, Function.DURING_ERROR)])
def test_function_field(dif, function):
    assert one(bytes([dif, 0x03, 0, 0, 0, 0])).function == function


@pytest.mark.parametrize("coding, raw, value", [
    (0x1, b"\xFF", -1), (0x2, b"\x00\x80", -32768), (0x3, b"\x01\x00\x80", -(1 << 23) + 1),
    (0x4, b"\x78\x56\x34\x12", 0x12345678), (0x6, b"\x01\x02\x03\x04\x05\x06", 0x060504030201),
    (0x7, b"\xFF" * 8, -1),
    (0x9, b"\x42", 42), (0xA, b"\x34\x12", 1234), (0xB, b"\x56\x34\x12", 123456),
    (0xC, b"\x78\x56\x34\x12", 12345678), (0xE, b"\x12\x90\x78\x56\x34\x12", 123456789012),
    (0xA, b"\x23\xF1", -123),  # most significant nibble F: minus sign
])
def test_number_codings(coding, raw, value):
    record = one(bytes([coding, 0x03]) + raw)  # VIF 03: energy in Wh
    assert record.value == value
    assert record.dlms_scaler_unit() == (0, 30)  # Blue Book 30 = Wh


def test_real32():
    record = one(bytes([0x05, 0x2E]) + struct.pack("<f", -0.25))  # VIF 2E: power 10^3 W
    assert record.value == -0.25 and record.scaled() == -250.0
    assert record.dlms_scaler_unit() == (3, 27)


def test_invalid_bcd_digit_spoils_only_its_record():
    data = bytes([0x0A, 0x13, 0x3A, 0x12]) + bytes([0x0A, 0x13, 0x34, 0x12])
    bad, good = parse_records(data)[0]
    with pytest.raises(MbusValueError):
        bad.value
    assert isinstance(bad.value_error, DecodeError)
    assert good.value == 1234


def test_lvar_variants():
    assert one(bytes([0x0D, 0x78, 3]) + b"CBA").value == "ABC"  # text, last character first
    assert one(bytes([0x0D, 0x13, 0xC2, 0x34, 0x12])).value == 1234  # 4 BCD digits
    assert one(bytes([0x0D, 0x13, 0xD2, 0x34, 0x12])).value == -1234
    assert one(bytes([0x0D, 0x13, 0xE3, 1, 2, 3])).value == 0x030201
    assert one(bytes([0x0D, 0x13, 0xF0]) + bytes(range(16))).value == bytes(range(16))
    with pytest.raises(MbusApplicationError):
        parse_records(bytes([0x0D, 0x13, 0xF7, 0]))
    with pytest.raises(MbusApplicationTruncatedError):
        parse_records(bytes([0x0D, 0x13, 0xE5, 1, 2]))


def test_dates():
    # type G: 31.12.2012 -> day 31 | (12 & 7) << 5, month 12 | (12 >> 3) << 4
    assert one(bytes([0x02, 0x6C, 31 | (4 << 5), 12 | (1 << 4)])).value == dt.date(2012, 12, 31)
    # type F of OMS Annex N
    assert one(bytes.fromhex("046D32371F15")).value == dt.datetime(2008, 5, 31, 23, 50)
    # type F with the invalid bit
    with pytest.raises(MbusValueError):
        one(bytes.fromhex("046DB2371F15")).value
    # type I as sent by the Landis+Gyr G350 of libmbus's frames (libmbus reads 2016-07-22 08:00)
    assert one(bytes.fromhex("066D000008162700")).value == dt.datetime(2016, 7, 22, 8, 0)
    # type G day 0: no date
    with pytest.raises(MbusValueError):
        one(bytes([0x02, 0x6C, 0, 0])).value
    for value, coding, vif in ((dt.date(2024, 2, 29), Coding.DATE_G, 0x6C),
                               (dt.datetime(2031, 1, 2, 3, 4), Coding.DATETIME_F, 0x6D),
                               (dt.datetime(2024, 12, 31, 23, 59, 58), Coding.DATETIME_I, 0x6D)):
        assert one(encode_record(value, vif, coding=coding)).value == value


def test_special_functions():
    records, special, rest = parse_records(bytes.fromhex("2F 2F 0113 07 1F AA BB"))
    assert [r.value for r in records] == [7] and special == 0x1F and rest == b"\xAA\xBB"
    records, special, rest = parse_records(bytes.fromhex("0113 07 0F 01 02 2F"))
    assert special == 0x0F and rest == b"\x01\x02\x2F"
    records, special, _ = parse_records(bytes.fromhex("7F"))
    assert records[0].quantity == "Global readout request" and special is None
    with pytest.raises(MbusApplicationError):
        parse_records(bytes.fromhex("3F"))


def test_global_readout_requests_count_towards_the_record_limit():
    limit = application.MAX_RECORDS
    records, _, _ = parse_records(b"\x7F" * limit)
    assert len(records) == limit
    with pytest.raises(MbusApplicationError):
        parse_records(b"\x7F" * (limit + 1))
    with pytest.raises(MbusApplicationError):  # mixed with data records the limit is the same
        parse_records(b"\x01\x13\x07" * (limit - 1) + b"\x7F\x7F")


def test_vif_tables():
    assert (one(bytes.fromhex("0C14 27048502")).unit, one(bytes.fromhex("0C14 27048502")).exponent) == ("m³", -2)
    record = one(bytes.fromhex("02FD48 E803"))  # FD 48: volts 10^(8-9)
    assert (record.quantity, record.unit, record.exponent, record.value) == ("Voltage", "V", -1, 1000)
    assert record.dlms_scaler_unit() == (-1, 35)
    record = one(bytes.fromhex("02FD59 0100"))  # FD 59: amperes 10^(9-12)
    assert (record.unit, record.exponent) == ("A", -3) and record.dlms_scaler_unit() == (-3, 33)
    record = one(bytes.fromhex("04FB00 01000000"))  # FB 00: energy 0.1 MWh
    assert (record.unit, record.exponent) == ("Wh", 5)
    record = one(bytes.fromhex("02FB0B 0100"))  # FB 0B: reserved
    assert record.quantity.startswith("Reserved") and record.dlms_scaler_unit() is None
    record = one(bytes.fromhex("0422 10000000"))  # on time in hours
    assert (record.quantity, record.unit) == ("On time", "h") and record.dlms_scaler_unit() == (0, 5)
    record = one(bytes.fromhex("025B 1500"))  # flow temperature 1 °C
    assert (record.unit, record.exponent, record.dlms_scaler_unit()) == ("°C", 0, (0, 9))
    record = one(bytes.fromhex("0293 74 0200"))  # volume 10^-3 m³ with factor 10^(4-6)
    assert (record.unit, record.exponent) == ("m³", -5)
    record = one(bytes.fromhex("0493 22 01000000"))  # volume per hour
    assert record.unit == "m³/h" and record.dlms_scaler_unit() == (-3, 15)
    record = one(bytes.fromhex("02FC 03 485225 74 D411"))  # plain text "%RH" then VIFE 74
    assert (record.plain_text_unit, record.value, record.exponent) == ("%RH", 0x11D4, -2)
    record = one(bytes.fromhex("04FF 11 01020304"))  # manufacturer specific VIF and VIFE
    assert record.quantity == "Manufacturer specific" and record.vifes == (0x11,)
    assert primary_vif("Volume", "m³", -2) == 0x14 and primary_vif("Energy", "Wh", 0) == 0x03


def test_extension_chains_are_capped_at_ten():
    ten_difes = bytes([0x84] + [0x80] * 9 + [0x00])
    one(ten_difes + bytes([0x13, 0, 0, 0, 0]))
    with pytest.raises(MbusTooManyExtensionsError):
        parse_records(bytes([0x84] + [0x80] * 10 + [0x00, 0x13, 0, 0, 0, 0]))
    one(bytes([0x04, 0x93] + [0xA0] * 9 + [0x20, 0, 0, 0, 0]))
    with pytest.raises(MbusTooManyExtensionsError):
        parse_records(bytes([0x04, 0x93] + [0xA0] * 10 + [0x20, 0, 0, 0, 0]))


def test_records_are_capped():
    with pytest.raises(MbusApplicationError):
        parse_records(bytes([0x00, 0x13]) * 300)


def test_every_prefix_gives_a_telegram_or_a_typed_error():
    frame = decode_frame(bytes.fromhex(
        "6820206808FD7278563412931533032A0000000C1427048502046D32371F1502FD1700008916"))
    for n in range(len(frame.data)):
        try:
            parse_telegram(frame.ci, frame.data[:n])
        except TruncatedError:
            pass


def test_headers_and_cis():
    header = LongHeader(87654321, "KAM", 0x19, 0x07, 0x55, 0x04, 0x1234)
    raw = encode_long_header(87654321, "KAM", 0x19, 0x07, 0x55, 0x04, 0x1234)
    assert raw == bytes.fromhex("21436587") + manufacturer_from_text("KAM").to_bytes(2, "little") + \
        bytes([0x19, 0x07, 0x55, 0x04, 0x34, 0x12])
    assert parse_telegram(0x72, raw).header == header
    with pytest.raises(MbusApplicationTruncatedError):
        parse_telegram(0x72, raw[:11])
    short = parse_telegram(CI_RSP_SHORT, bytes([0x11, 0x00, 0x00, 0x05]) + bytes.fromhex("0113 07"))
    assert short.header == ShortHeader(0x11, 0, 0x0500) and short.records[0].value == 7
    assert parse_telegram(CI_RSP_NONE, bytes.fromhex("0113 07")).header is None
    assert parse_telegram(CI_DATA_SEND, bytes.fromhex("017A 07")).records[0].quantity == "Bus address"
    assert parse_telegram(CI_APPLICATION_ERROR, b"\x08").application_error == 8
    assert parse_telegram(CI_APPLICATION_ERROR, b"").application_error == 0
    assert parse_telegram(CI_ALARM, b"\x02").alarm == 2
    assert parse_telegram(CI_APPLICATION_RESET, b"").manufacturer_data == b""
    assert parse_telegram(CI_TIME_SYNC, bytes.fromhex("32371F15")).time == dt.datetime(2008, 5, 31, 23, 50)
    assert parse_telegram(CI_TIME_SYNC, bytes.fromhex("050008162700")).time \
        == dt.datetime(2016, 7, 22, 8, 0, 5)
    with pytest.raises(MbusApplicationError):
        parse_telegram(CI_TIME_SYNC, bytes.fromhex("32371F"))
    with pytest.raises(MbusApplicationError):
        parse_telegram(CI_TIME_SYNC, bytes.fromhex("B2371F15"))  # invalid bit
    selection = parse_telegram(CI_SELECTION, bytes.fromhex("78FFFF12 FFFF FF 03")).header
    assert selection == SecondaryAddress("12FFFF78", "", 0xFF, 0x03)
    assert selection.to_bytes() == bytes.fromhex("78FFFF12FFFFFF03")
    assert selection.matches(LongHeader(12345678, "ELS", 0x33, 0x03))
    assert not selection.matches(LongHeader(12345678, "ELS", 0x33, 0x07))
    assert not selection.matches(LongHeader(13345678, "ELS", 0x33, 0x03))
    with pytest.raises(MbusUnknownCiError):
        parse_telegram(0x99, b"")


def test_encoder_round_trip_through_the_frame():
    records = [encode_record(-5, 0x03, coding=Coding.INT8, tariff=2),
               encode_record(123456789012, 0x13, coding=Coding.BCD12, storage_number=9),
               encode_record(-42, 0x13, coding=Coding.BCD8, function=Function.MINIMUM),
               encode_record(1.5, 0x5B, coding=Coding.REAL32, subunit=1),
               encode_record("SN-0042", 0x79, coding=Coding.TEXT)]
    header = LongHeader(99, "SIM", 1, 0x07, 3)
    frame = decode_frame(encode_rsp_ud(7, header, records, more_records_follow=True, manufacturer_data=b"\x01"))
    assert isinstance(frame, LongFrame) and frame.a == 7
    telegram = parse_telegram(frame.ci, frame.data)
    assert telegram.header == header and telegram.more_records_follow and telegram.manufacturer_data == b"\x01"
    got = [(r.value, r.tariff, r.storage_number, r.function, r.subunit) for r in telegram.records]
    assert got == [(-5, 2, 0, Function.INSTANTANEOUS, 0), (123456789012, 0, 9, Function.INSTANTANEOUS, 0),
                   (-42, 0, 0, Function.MINIMUM, 0), (1.5, 0, 0, Function.INSTANTANEOUS, 1),
                   ("SN-0042", 0, 0, Function.INSTANTANEOUS, 0)]
    with pytest.raises(EncodeError):
        encode_record(1000, 0x13, coding=Coding.BCD2)
    with pytest.raises(EncodeError):
        encode_record(300, 0x13, coding=Coding.INT8)


def test_dlms_units_are_the_blue_book_enumeration():
    # gurux-dlms's Unit enum (test-time peer) names the Blue Book codes
    gurux = {"a": GuruxUnit.YEAR, "month": GuruxUnit.MONTH, "d": GuruxUnit.DAY, "h": GuruxUnit.HOUR,
             "min": GuruxUnit.MINUTE, "s": GuruxUnit.SECOND, "°C": GuruxUnit.TEMPERATURE,
             "currency": GuruxUnit.LOCAL_CURRENCY, "m³": GuruxUnit.VOLUME_CUBIC_METER,
             "m³/h": GuruxUnit.VOLUME_FLUX_HOUR, "m³/d": GuruxUnit.VOLUME_FLUXDAY, "l": GuruxUnit.VOLUME_LITER,
             "kg": GuruxUnit.MASS_KG, "J": GuruxUnit.ENERGY_JOULE, "J/h": GuruxUnit.THERMAL_POWER,
             "W": GuruxUnit.ACTIVE_POWER, "Wh": GuruxUnit.ACTIVE_ENERGY, "A": GuruxUnit.CURRENT,
             "V": GuruxUnit.VOLTAGE, "Hz": GuruxUnit.FREQUENCY, "kg/s": GuruxUnit.MASS_KG_PER_SECOND,
             "K": GuruxUnit.KELVIN, "%": GuruxUnit.PERCENTAGE, "bar": GuruxUnit.PRESSURE_BAR,
             "dBm": GuruxUnit.SIGNAL_STRENGTH, "°F": GuruxUnit.FAHRENHEIT, "ft³": GuruxUnit.CUBIC_FOOT,
             "gal (US)": GuruxUnit.GALLON_US}
    for unit, code in DLMS_UNITS.items():
        if unit == "":
            assert code == 255  # Blue Book: 255 = count, no unit
            continue
        assert int(gurux[unit]) == code, unit


def test_status_byte():
    assert status_flags(0) == ()
    assert status_flags(0x01) == ("application busy",)
    assert status_flags(0x02 | 0x04 | 0x10) == ("application error", "power low", "temporary error")
    assert status_flags(0x03 | 0x08 | 0x80) == ("abnormal condition", "permanent error", "manufacturer bit 7")


def test_encoder_plain_text_vif_and_extension_tables():
    # plain-text unit "%RH" (sent last character first) with the combinable VIFE 74 (10^-2)
    raw = encode_record(4564, bytes([0x7C, 3]) + b"HR%", vifes=[0x74], coding=Coding.INT16)
    assert raw == bytes.fromhex("02FC03485225 74 D411".replace(" ", ""))
    record = one(raw)
    assert (record.plain_text_unit, str(record.scaled())) == ("%RH", "45.64")
    raw = encode_record(230, 0x7D, vifes=[0x49], coding=Coding.INT16)  # FD 49: volts 10^(9-9)
    assert raw == bytes([0x02, 0xFD, 0x49, 230, 0])
    assert one(raw).dlms_scaler_unit() == (0, 35)
