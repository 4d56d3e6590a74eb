"""IC 74 M-Bus master port setup (Blue Book 4.8.5): the three ports of the model, comm_speed's
enum (2400 Bd = 3), writes kept in the store over a restart, refused speeds and types, the fixed
wireless and H1 ports."""
from __future__ import annotations

import pytest

from smartmeter.cosem.classes.base import CosemAccessError, RequestContext
from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis
from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.cosem.results import DataAccessResult
from smartmeter.meter.store import MeterStore

CTX = RequestContext("management", 1)
WIRED, WIRELESS, CONSUMER = "0-0:24.6.0.255", "0-1:24.6.0.255", "0-2:24.6.0.255"
# Blue Book 4.8.5 comm_speed: 0 300, 1 600, 2 1200, 3 2400, 4 4800, 5 9600 ... Bd
BD_2400, BD_9600, BD_300 = 3, 5, 0


def port(directory, obis: str):
    found = directory.find(74, Obis.parse(obis).to_bytes())
    assert found is not None, f"{obis} is an IC 74 object of the model"
    return found[1]


@pytest.fixture
def model():
    return ObjectModel.load("ksmw")


def test_three_ports_with_their_kinds_at_2400_bd(model, tmp_path):
    store = MeterStore(tmp_path)
    directory = model.instantiate({"settings": store})
    kinds = {obis: port(directory, obis).kind for obis in (WIRED, WIRELESS, CONSUMER)}
    assert kinds == {WIRED: "wired", WIRELESS: "wireless", CONSUMER: "consumer"}
    for obis in (WIRED, WIRELESS, CONSUMER):
        assert port(directory, obis).get(2, CTX) == Data.enum(BD_2400)
        assert port(directory, obis).baud_rate() == 2400
    defn = next(o for o in model.objects if str(o.obis) == WIRED)
    assert defn.version == 0


def test_wired_speed_write_persists_and_bad_values_change_nothing(model, tmp_path):
    store = MeterStore(tmp_path)
    wired = port(model.instantiate({"settings": store}), WIRED)
    wired.set(2, Data.enum(BD_9600), CTX)
    assert wired.baud_rate() == 9600
    with pytest.raises(CosemAccessError) as refused:
        wired.set(2, Data.enum(7), CTX)  # 38400 Bd: no EN 13757-2 speed of this bus
    assert refused.value.result == DataAccessResult.OTHER_REASON
    with pytest.raises(CosemAccessError) as refused:
        wired.set(2, Data.unsigned(BD_300), CTX)
    assert refused.value.result == DataAccessResult.TYPE_UNMATCHED
    store.close()
    again = port(model.instantiate({"settings": MeterStore(tmp_path)}), WIRED)
    assert again.get(2, CTX) == Data.enum(BD_9600)


@pytest.mark.parametrize("obis", [WIRELESS, CONSUMER])
def test_wireless_and_consumer_ports_are_fixed(model, tmp_path, obis):
    fixed = port(model.instantiate({"settings": MeterStore(tmp_path)}), obis)
    with pytest.raises(CosemAccessError) as refused:
        fixed.set(2, Data.enum(BD_2400), CTX)
    assert refused.value.result == DataAccessResult.OTHER_REASON
