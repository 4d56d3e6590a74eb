"""P7/U7 parameter protection: legally relevant parameters change only in certification mode
(started over DLMS by the certification client through 0-0:94.43.143.255) or by that
authority; every change is logged in 0-0:99.98.98.255 with the client system title and the
firmware identifier and increments 1-0:0.2.1.255; the mode ends after 12 h of operation on a
monotonic clock."""
from __future__ import annotations

import asyncio
import json

import pytest

from smartmeter.cosem.data import Data
from smartmeter.legal import interface as legal
from authority_support import certification_token
from welmec_support import (
    CERTIFICATION_LOG, CERTIFICATION_MODE, LEGAL_FIRMWARE_ID, LEGAL_FIRMWARE_SIGNATURE, PARAMETER_RECORD_NUMBER,
    read_public, secured, start_meter_from, system_title_of,
)

T0 = 1_773_144_000
TITLE = "4b464d0000000007"
EVENT_PARAMETER_CHANGED, EVENT_MODE_STARTED, EVENT_MODE_ENDED = 47, 230, 231


def _mode(status: bool, energy_res: int = 0, demand_res: int = 0, led_source: int = 0, led_rate: int = 0) -> Data:
    return Data.structure([Data.boolean(status), Data.enum(energy_res), Data.enum(demand_res), Data.unsigned(led_source),
                           Data.long_unsigned(led_rate)])


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    m = start_meter_from(None, tmp_path_factory.mktemp("p7"))
    yield m
    m.stop()


@pytest.mark.welmec("P7", "U7")
def test_certification_client_changes_parameters_over_dlms_logged_and_counted(meter):
    """Over DLMS the certification client starts certification mode, changes parameters (logged with its system title and the firmware id, record number +1) and ends it."""
    title = system_title_of(meter, "certification")
    firmware_id, signature, record_before = (d.value for d in read_public(
        meter, [(LEGAL_FIRMWARE_ID, 2, 1), (LEGAL_FIRMWARE_SIGNATURE, 2, 1), (PARAMETER_RECORD_NUMBER, 2, 1)]))

    async def session():
        async with secured(meter, "certification") as client:
            log_before = len((await client.get(CERTIFICATION_LOG, 2, class_id=7)).value)
            await client.set(CERTIFICATION_MODE, 2, _mode(True), class_id=1)
            active = (await client.get(CERTIFICATION_MODE, 2, class_id=1)).value[0].value
            await client.set(CERTIFICATION_MODE, 2, _mode(True, energy_res=3, led_rate=4000), class_id=1)
            record = (await client.get(PARAMETER_RECORD_NUMBER, 2, class_id=1)).value
            setting = [d.value for d in (await client.get(CERTIFICATION_MODE, 2, class_id=1)).value]
            await client.set(CERTIFICATION_MODE, 2, _mode(False), class_id=1)
            ended = (await client.get(CERTIFICATION_MODE, 2, class_id=1)).value[0].value
            log = (await client.get(CERTIFICATION_LOG, 2, class_id=7)).value[log_before:]
            return active, record, setting, ended, log

    active, record, setting, ended, log = asyncio.run(session())
    assert active is True and ended is False
    assert record == record_before + 1
    assert setting[1:] == [3, setting[2], setting[3], 4000]
    rows = [(row.value[1].value, row.value[2].value, row.value[3].value) for row in log]
    assert [event for event, _, _ in rows] == [EVENT_MODE_STARTED, EVENT_PARAMETER_CHANGED, EVENT_PARAMETER_CHANGED,
                                               EVENT_MODE_ENDED]
    expected_firmware = firmware_id + b" " + signature.hex()[:8].encode()
    for _, system_title, logged_firmware in rows:
        assert system_title == title
        assert logged_firmware == expected_firmware
    # everyone sees the new record number
    assert read_public(meter, [(PARAMETER_RECORD_NUMBER, 2, 1)])[0].value == record_before + 1


@pytest.mark.welmec("P7", "U7")
def test_other_clients_cannot_start_certification_mode_or_change_parameters(meter):
    """The management and maintenance clients cannot write the certification mode object; the mode stays off and the record number unchanged."""
    from smartmeter.dlms.client import AccessDenied

    record_before = read_public(meter, [(PARAMETER_RECORD_NUMBER, 2, 1)])[0].value

    async def attempt(name):
        async with secured(meter, name) as client:
            with pytest.raises(AccessDenied):
                await client.set(CERTIFICATION_MODE, 2, _mode(True, energy_res=2), class_id=1)
            return (await client.get(CERTIFICATION_MODE, 2, class_id=1)).value[0].value

    for name in ("management", "maintenance", "installation"):
        assert asyncio.run(attempt(name)) is False
    assert read_public(meter, [(PARAMETER_RECORD_NUMBER, 2, 1)])[0].value == record_before


@pytest.fixture
def clock():
    return [5000.0]


@pytest.fixture
def part(tmp_path, clock):
    p = legal.LegalInterface(tmp_path, monotonic=lambda: clock[0])
    yield p
    p.close()


@pytest.mark.welmec("P7", "U7")
def test_parameters_are_refused_outside_certification_mode_and_nothing_changes(part):
    """Without certification mode (and without the certification authority) a parameter change is refused and leaves the parameters, their record number and the certification-protected log unchanged."""
    before = (part.execute(legal.ReadParameters()), part.execute(legal.ReadParameterRecordNumber()),
              part.execute(legal.ReadCertificationLog()))
    for changes in ((("current_gain_l1", 1.01),), (("meter_constant", 2000),), (("remote_sensor_id", "x"),)):
        with pytest.raises(legal.CommandRefused):
            part.execute(legal.SetParameters(changes, T0, TITLE))
    with pytest.raises(legal.CommandRefused):  # starting the mode needs the authority
        part.execute(legal.SetCertificationMode(True, T0, TITLE, ""))
    assert (part.execute(legal.ReadParameters()), part.execute(legal.ReadParameterRecordNumber()),
            part.execute(legal.ReadCertificationLog())) == before


@pytest.mark.welmec("P7", "U7")
def test_certification_mode_expires_after_12_h_on_the_monotonic_clock(part, clock):
    """Certification mode ends after 12 h of operation measured on the monotonic clock, whatever the RTC says; then changes are refused again."""
    part.execute(legal.SetCertificationMode(True, T0, TITLE, certification_token(part, TITLE)))
    clock[0] += 12 * 3600 - 1
    # the RTC may jump anywhere: it does not extend or shorten the mode
    assert part.execute(legal.SetParameters((("meter_constant", 2000),), T0 - 10**6, TITLE)) == 1
    assert part.execute(legal.ReadCertificationMode()).active
    clock[0] += 2
    assert not part.execute(legal.ReadCertificationMode()).active
    with pytest.raises(legal.CommandRefused):
        part.execute(legal.SetParameters((("meter_constant", 3000),), T0 + 10**6, TITLE))
    assert dict(part.execute(legal.ReadParameters()))["meter_constant"] == 2000
    assert part.execute(legal.ReadParameterRecordNumber()) == 1
    changes = [json.loads(r.fields_json) for r in part.execute(legal.ReadCertificationLog())
               if r.event_id == EVENT_PARAMETER_CHANGED]
    assert [(c["parameter"], c["old_value"], c["new_value"], c["record_number"]) for c in changes] == [
        ("meter_constant", "1000", "2000", 1)]


@pytest.mark.welmec("P7", "U7")
def test_out_of_range_or_unknown_parameters_are_refused_as_a_whole(part):
    """In certification mode a change with one unknown or out-of-range parameter is refused as a whole: nothing changes, nothing is logged."""
    part.execute(legal.SetCertificationMode(True, T0, TITLE, certification_token(part, TITLE)))
    before = (part.execute(legal.ReadParameters()), len(part.execute(legal.ReadCertificationLog())))
    for changes in ((("meter_constant", 2000), ("current_gain_l1", 1.5)), (("meter_constant", 2000), ("nope", 1)),
                    (("led_pulse_rate", 1234),), (("remote_sensor_id", "\x00"),)):
        with pytest.raises(legal.CommandRefused):
            part.execute(legal.SetParameters(changes, T0, TITLE))
    assert (part.execute(legal.ReadParameters()), len(part.execute(legal.ReadCertificationLog()))) == before
    assert part.execute(legal.ReadParameterRecordNumber()) == 0
