"""IC 72 M-Bus client v1 (Blue Book 4.8.3, catalog §1.3) over the model's channel objects, and
the M-Bus values (IC 4) it fills: attribute types, writes and their refusals (a refused access
changes nothing), the methods' parameters as Gurux sends them, wireless refusals, the
unsupported alarm, the key status enum, and scaler/unit/capture time of the values."""
from __future__ import annotations

import pytest

from smartmeter.cosem.classes.base import CosemAccessError, RequestContext
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.obis import Obis
from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.cosem.results import DataAccessResult
from smartmeter.meter import mbus_m2
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.events import EventRecorder, EventTable
from smartmeter.meter.mbus_m2 import MbusM2, SubmeterRecord, SubmeterTelegram
from smartmeter.meter.store import MeterStore
from smartmeter.mbus.application import manufacturer_from_text

GWF = manufacturer_from_text("GWF")  # EN 13757-3 §6.3.2 letters, coded by the M-Bus application layer

T0 = 1773144000.0  # 2026-03-10 12:00:00 UTC
CTX = RequestContext("management", 1)
OTHER, TYPE, UNAVAILABLE = DataAccessResult.OTHER_REASON, DataAccessResult.TYPE_UNMATCHED, \
    DataAccessResult.OBJECT_UNAVAILABLE
WIRED = Obis.parse("0-0:24.6.0.255").to_bytes()
WIRELESS = Obis.parse("0-1:24.6.0.255").to_bytes()
CONSUMER = Obis.parse("0-2:24.6.0.255").to_bytes()
CLOCK_LN = Obis.parse("0-0:1.0.0.255").to_bytes()
ENERGY_DIB, ENERGY_VIB = b"\x04", b"\x06"  # 32-bit integer, energy in kWh (VIF 0x06: 10^3 Wh)
DLMS_WH = 30


@pytest.fixture
def meter(tmp_path):
    clock = MeterClock("UTC", source=lambda: T0)
    recorder = EventRecorder(tmp_path, EventTable.load(), clock.now)
    engine = MbusM2(recorder, clock.now)
    directory = ObjectModel.load("ksmw").instantiate(
        {"settings": MeterStore(tmp_path), "clock": clock, **mbus_m2.bindings(engine, clock)})
    yield directory, engine, clock
    recorder.close()


def client(directory, x: int):
    return directory.find(72, Obis.parse(f"0-{x}:24.1.0.255").to_bytes())[1]


def value_object(directory, x: int, n: int):
    return directory.find(4, Obis.parse(f"0-{x}:24.2.{n}.255").to_bytes())[1]


def refused(call, result) -> None:
    with pytest.raises(CosemAccessError) as caught:
        call()
    assert caught.value.result == result, caught.value


def test_four_channels_read_with_blue_book_types(meter):
    directory, _, _ = meter
    expected_types = {2: DataType.OCTET_STRING, 3: DataType.ARRAY, 4: DataType.DOUBLE_LONG_UNSIGNED,
                      5: DataType.UNSIGNED, 6: DataType.DOUBLE_LONG_UNSIGNED, 7: DataType.LONG_UNSIGNED,
                      8: DataType.UNSIGNED, 9: DataType.UNSIGNED, 10: DataType.UNSIGNED, 11: DataType.UNSIGNED,
                      13: DataType.LONG_UNSIGNED, 14: DataType.ENUM}
    for x in (1, 2, 3, 4):
        obj = client(directory, x)
        assert obj.get(1, CTX) == Data.octet_string(bytes([0, x, 24, 1, 0, 255]))
        for index, data_type in expected_types.items():
            assert obj.get(index, CTX).type == data_type, (x, index)
        assert obj.get(2, CTX) == Data.octet_string(WIRED)
        assert obj.get(14, CTX) == Data.enum(0)  # no encryption key
        refused(lambda: obj.get(12, CTX), UNAVAILABLE)  # alarm: not supported
        refused(lambda: obj.invoke(4, Data.integer(0), CTX), UNAVAILABLE)  # reset_alarm


def test_port_reference_must_be_an_m2_port_setup(meter):
    directory, engine, _ = meter
    obj = client(directory, 1)
    refused(lambda: obj.set(2, Data.octet_string(CLOCK_LN), CTX), OTHER)
    refused(lambda: obj.set(2, Data.octet_string(CONSUMER), CTX), OTHER)
    refused(lambda: obj.set(2, Data.octet_string(b"\x00\x00\x18"), CTX), TYPE)
    assert obj.get(2, CTX) == Data.octet_string(WIRED)
    obj.set(2, Data.octet_string(WIRELESS), CTX)
    assert engine.channel(1).wireless and obj.get(4, CTX) == Data.double_long_unsigned(0)


def test_wireless_channel_install_and_capture_are_other_reason(meter):
    directory, _, _ = meter
    obj = client(directory, 2)
    obj.set(2, Data.octet_string(WIRELESS), CTX)
    refused(lambda: obj.invoke(1, Data.integer(0), CTX), OTHER)
    refused(lambda: obj.invoke(3, Data.integer(0), CTX), OTHER)


def test_primary_address_and_install_parameters(meter):
    directory, engine, _ = meter
    obj = client(directory, 1)
    for reserved in (251, 252, 253, 254, 255):
        refused(lambda: obj.set(5, Data.unsigned(reserved), CTX), OTHER)
        refused(lambda: obj.invoke(1, Data.unsigned(reserved), CTX), OTHER)
    refused(lambda: obj.invoke(1, Data.null(), CTX), TYPE)
    obj.set(5, Data.unsigned(17), CTX)
    refused(lambda: client(directory, 2).set(5, Data.unsigned(17), CTX), OTHER)  # channel 1's
    obj.invoke(1, Data.integer(0), CTX)  # Gurux's slave_install: integer 0 -> attribute 5
    assert engine.channel(1).installing and engine.channel(1).primary_address == 17


def test_same_device_on_two_channels_is_refused(meter):
    directory, _, _ = meter
    one, two = client(directory, 1), client(directory, 2)
    for obj in (one, two):
        obj.set(7, Data.long_unsigned(0x1C08), CTX)
    one.set(6, Data.double_long_unsigned(0x12345678), CTX)
    one.invoke(1, Data.integer(0), CTX)
    refused(lambda: two.set(6, Data.double_long_unsigned(0x12345678), CTX), OTHER)
    assert two.get(6, CTX) == Data.double_long_unsigned(0)


def test_capture_definition_round_trip_and_limits(meter):
    directory, _, _ = meter
    obj = client(directory, 3)
    definition = Data.array([Data.structure([Data.octet_string(ENERGY_DIB), Data.octet_string(ENERGY_VIB)]),
                             Data.structure([Data.octet_string(b"\x0c"), Data.octet_string(b"\x13")])])
    obj.set(3, definition, CTX)
    assert obj.get(3, CTX) == definition
    too_many = Data.array([Data.structure([Data.octet_string(b"\x04"), Data.octet_string(b"\x13")])] * 9)
    refused(lambda: obj.set(3, too_many, CTX), OTHER)
    refused(lambda: obj.set(3, Data.array([Data.structure([Data.octet_string(b"\x04")])]), CTX), TYPE)
    assert obj.get(3, CTX) == definition


def test_encryption_key_methods(meter):
    directory, engine, _ = meter
    obj = client(directory, 1)
    refused(lambda: obj.invoke(8, Data.octet_string(bytes(24)), CTX), OTHER)  # no key set
    refused(lambda: obj.invoke(7, Data.octet_string(bytes(15)), CTX), OTHER)
    refused(lambda: obj.invoke(7, Data.null(), CTX), TYPE)
    obj.invoke(7, Data.octet_string(bytes(range(16))), CTX)
    assert obj.get(14, CTX) == Data.enum(1)  # key set
    obj.invoke(7, Data.octet_string(b""), CTX)  # the null key clears it
    assert obj.get(14, CTX) == Data.enum(0) and engine.channel(1).key is None


def test_values_take_scaler_unit_and_the_submeters_time(meter):
    directory, engine, clock = meter
    obj = client(directory, 1)
    obj.set(3, Data.array([Data.structure([Data.octet_string(ENERGY_DIB), Data.octet_string(ENERGY_VIB)])]), CTX)
    obj.set(6, Data.double_long_unsigned(0x11223344), CTX)
    obj.set(7, Data.long_unsigned(GWF), CTX)
    first = value_object(directory, 1, 1)
    assert first.get(2, CTX) == Data.null()  # never read
    assert first.get(5, CTX) == Data.octet_string(bytes.fromhex("FFFFFFFFFFFFFFFFFF8000FF"))
    obj.invoke(1, Data.integer(0), CTX)
    [install] = engine.requests(T0)
    device_time = T0 - 125  # the submeter's clock runs 2 min 5 s behind
    engine.answered(install, SubmeterTelegram(0x11223344, GWF, 1, 4, 7, 0, 0,
                                              (SubmeterRecord(ENERGY_DIB, ENERGY_VIB, 4711, 3, DLMS_WH),),
                                              device_time), T0)
    assert first.get(2, CTX) == Data.long64(4711)
    assert first.get(3, CTX) == Data.structure([Data.integer(3), Data.enum(DLMS_WH)])
    assert first.get(4, CTX) == Data.unsigned(0)
    assert first.get(5, CTX) == Data.octet_string(clock.cosem(device_time))
    assert value_object(directory, 1, 2).get(2, CTX) == Data.null()  # no second capture element
    refused(lambda: first.invoke(1, Data.integer(0), CTX), DataAccessResult.READ_WRITE_DENIED)
    assert obj.get(10, CTX) == Data.unsigned(7)  # access number from the header
    device_id_2 = directory.find(1, Obis.parse("0-1:96.1.1.255").to_bytes())[1].get(2, CTX)
    assert device_id_2 == Data.octet_string(b"11223344GWF0104")


def test_data_send_codes_the_records_and_refuses_what_it_cannot(meter):
    directory, engine, _ = meter
    obj = client(directory, 1)
    element = Data.structure([Data.octet_string(b"\x01"), Data.octet_string(b"\xfd\x1a"), Data.unsigned(1)])
    refused(lambda: obj.invoke(6, Data.array([element]), CTX), OTHER)  # nothing installed
    refused(lambda: obj.invoke(6, Data.null(), CTX), TYPE)
    bad = Data.structure([Data.octet_string(b"\x05"), Data.octet_string(b"\x13"), Data.unsigned(1)])
    refused(lambda: obj.invoke(6, Data.array([bad]), CTX), OTHER)


def test_refused_operations_are_counted_and_logged_once_per_condition(meter, caplog):
    import logging

    directory, engine, _ = meter
    one, two, three = client(directory, 1), client(directory, 2), client(directory, 3)
    three.set(2, Data.octet_string(WIRELESS), CTX)
    for obj in (one, two):
        obj.set(7, Data.long_unsigned(0x1C08), CTX)
    one.set(6, Data.double_long_unsigned(0x12345678), CTX)
    attempts = {
        "key length": lambda: one.invoke(7, Data.octet_string(bytes(15)), CTX),
        "transfer without key": lambda: one.invoke(8, Data.octet_string(b"\x01" * 24), CTX),
        "port": lambda: one.set(2, Data.octet_string(CONSUMER), CTX),
        "reserved address": lambda: one.set(5, Data.unsigned(253), CTX),
        "wireless install": lambda: three.invoke(1, Data.integer(0), CTX),
        "same meter twice": lambda: two.set(6, Data.double_long_unsigned(0x12345678), CTX),
    }
    with caplog.at_level(logging.INFO, logger="smartmeter.meter.mbus_m2"):
        for _ in range(3):
            for attempt in attempts.values():
                refused(attempt, OTHER)
    lines = [r.getMessage() for r in caplog.records if "operation refused" in r.getMessage()]
    assert len(lines) == len(attempts), lines  # one line per condition, not one per attempt
    assert sorted(engine.refused_operations.values()) == [3] * len(attempts)
    assert sum(engine.refused_operations.values()) == 3 * len(attempts)
