"""S2 mixed indication on the meter's display: text that is not legally relevant (the consumer
message a head-end writes) is shown only on the display's message line, never in the fields that
carry the legally relevant indication (item code, value, unit), whatever it imitates."""
from __future__ import annotations

import pytest

from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.server import WRITE_ATTRIBUTE, LocalAction
from smartmeter.meter.runtime import Meter, MeterConfig

CONSUMER_MESSAGE = Obis.parse("0-0:96.13.1.255").to_bytes()
A_PLUS = Obis.parse("1-0:1.8.0.255").to_bytes()
IMITATIONS = ("000123.456 kWh", "1.8.0", "kWh", "T1 1.8.0 999999.999")


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    m = Meter(MeterConfig(data_dir=tmp_path_factory.mktemp("s2-display"), backfill_days=0))
    yield m
    m.close()


def _write_message(meter, text: str) -> None:
    result, = meter.server.run_locally([LocalAction(WRITE_ATTRIBUTE, 1, CONSUMER_MESSAGE, 2,
                                                    Data.octet_string(text.encode("ascii")))])
    assert result == 0


@pytest.mark.welmec("S2")
@pytest.mark.parametrize("text", IMITATIONS)
def test_a_message_imitating_a_legal_value_never_takes_a_legal_field(meter, text):
    """A consumer message imitating a legal indication ("000123.456 kWh", "1.8.0", "kWh", ...) is shown on the message line only: its own turn in the scroll cycle has a reserved code and empty value and unit fields, the other turns show exactly the items the meter shows without a message, and the +A shown is the register's value as a client reads it."""
    _write_message(meter, "")
    now = meter.clock.now()
    without = {(s.code, s.unit) for s in (meter.display.screen(now + 5 * k) for k in range(12))}
    _write_message(meter, text)
    now = meter.clock.now()
    shown = [meter.display.screen(now + 5 * k) for k in range(14)]  # two cycles of 5 s items
    assert shown[0].mode == "message" and {s.indicators.message for s in shown} == {text}
    for screen in shown:
        if screen.mode == "message":
            assert (screen.code, screen.value, screen.unit) == ("MSG", "", ""), screen
        else:
            assert (screen.code, screen.unit) in without and text not in screen.value, screen
    energy = [s for s in shown if s.code == "1.8.0"]
    assert energy
    register, _ = meter.server.read_locally(3, A_PLUS, 2)
    for screen in energy:  # kWh with the display's decimals, from the Wh register
        assert abs(float(screen.value) - register.value / 1000) < 0.001 + 1e-9, (screen, register)
        assert screen.unit == "kWh"
