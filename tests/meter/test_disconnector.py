"""The disconnector on a running meter (companion §5.8, catalog §3.7): remote disconnection and
the reconnection through "ready" and the customer's button, the import limiter's local
disconnection, the energy registers stopping while the output is open, and the disconnector
control log. Codes and transitions are the catalog's, written here; energies follow from the load."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from meter_site import MeterSite
from smartmeter.cosem.classes.base import CosemAccessError, RequestContext
from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis
from smartmeter.cosem.results import DataAccessResult

CTX = RequestContext("management", 1)
START = 1_773_144_000.0  # on a quarter hour
REMOTE_DISCONNECTION, READY_FOR_RECONNECTION, MANUAL_CONNECTION = 62, 59, 61
LOCAL_DISCONNECTION, LIMITER_EXCEEDED, LIMITER_OK = 64, 65, 66


class Site(MeterSite):
    def __init__(self, data_dir) -> None:
        super().__init__(data_dir, START)

    def log(self) -> list[tuple[int, int]]:
        return super().log("disconnect")

    def state(self) -> dict:
        return self.meter.status()["disconnector"]


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.meter.close()


def test_remote_disconnection_stops_the_energy_and_the_customer_reconnects(site):
    site.meter.control({"input": "load", "power": 2400.0})
    site.run(900)
    assert site.a_plus() in (599, 600)  # 2400 W for 15 min
    disconnector = site.obj("0-0:96.3.10.255")
    disconnector.invoke(1, Data.integer(0), CTX)  # remote_disconnect: b
    off = site.platform[0]
    assert site.state() == {"state": "disconnected", "mode": 3, "output": "open"}
    before = site.a_plus()
    site.run(1800)
    assert site.a_plus() == before  # nothing is drawn through an open output
    disconnector.invoke(2, Data.integer(0), CTX)  # remote_reconnect in mode 3: d, ready, still open
    ready = site.platform[0]
    site.run(600)
    assert site.a_plus() == before and site.state()["state"] == "ready"
    assert site.meter.control({"input": "button", "value": "A", "long": True})["ok"]  # e: the customer
    on = site.platform[0]
    site.run(900)
    assert site.a_plus() - before in (599, 600)
    assert site.log() == [(int(off), REMOTE_DISCONNECTION), (int(ready), READY_FOR_RECONNECTION),
                          (int(on), MANUAL_CONNECTION)]
    # the output and the state survive a restart
    disconnector.invoke(1, Data.integer(0), CTX)
    site.meter.close()
    site.meter = site.open()
    assert site.state()["output"] == "open"
    before = site.a_plus()
    site.run(900)
    assert site.a_plus() == before


def test_the_import_limiter_disconnects_after_its_minimum_duration_only(site):
    limiter = site.obj("0-0:17.0.0.255")
    limiter.set(4, Data.double_long_unsigned(3000), CTX)  # threshold_normal 3000 W; 60 s over, 60 s under
    site.meter.control({"input": "load", "power": 3001.0})  # 1 W over
    site.run(45)  # shorter than the minimum duration
    site.meter.control({"input": "load", "power": 2000.0})
    site.run(120)
    assert site.state()["state"] == "connected"
    assert [c for _, c in site.log()] == []
    site.meter.control({"input": "load", "power": 3001.0})
    over_from = site.platform[0]
    site.run(120)
    assert site.state() == {"state": "ready", "mode": 3, "output": "open"}  # g: local disconnection
    times = dict((code, t) for t, code in site.log())
    assert set(times) == {LIMITER_EXCEEDED, LOCAL_DISCONNECTION}
    assert over_from + 60 <= times[LOCAL_DISCONNECTION] <= over_from + 60 + 15  # one evaluation step
    before = site.a_plus()
    site.run(300)
    assert site.a_plus() == before  # open: the household draws nothing, the limiter sees 0 W
    assert LIMITER_OK in [c for _, c in site.log()]  # under the threshold again for 60 s
    assert site.state()["state"] == "ready"  # mode 3 does not reconnect locally (h): the button does
    site.meter.control({"input": "button", "value": "A", "long": True})
    assert site.state()["state"] == "connected"


def test_a_scheduled_disconnection_runs_at_its_time_and_only_scripts_3_and_4(site):
    """The disconnect control scheduler (0-0:15.0.1.255) opens the output at 08:00 (a remote
    disconnection, 62); it cannot be given script 1 (local disconnection): other-reason."""
    site.meter.control({"input": "load", "power": 1200.0})
    scheduler = site.obj("0-0:15.0.1.255")
    at_eight = START - START % 86400 + 86400 + 7 * 3600  # 08:00 CET (UTC+1) the next day
    local_day = dt.datetime.fromtimestamp(at_eight, ZoneInfo("Europe/Berlin"))
    assert (local_day.hour, local_day.minute) == (8, 0)
    scheduler.set(4, Data.array([Data.structure([
        Data.octet_string(bytes([8, 0, 0, 0])),
        Data.octet_string(bytes([local_day.year >> 8, local_day.year & 0xFF, local_day.month, local_day.day, 0xFF]))])]),
        CTX)
    with pytest.raises(CosemAccessError) as refused:
        scheduler.set(2, Data.structure([Data.octet_string(Obis.parse("0-0:10.0.106.255").to_bytes()),
                                         Data.long_unsigned(1)]), CTX)
    assert refused.value.result == DataAccessResult.OTHER_REASON
    site.run(at_eight - site.platform[0] + 600, step=300)
    assert site.state()["state"] == "disconnected"
    assert site.log() == [(int(at_eight), REMOTE_DISCONNECTION)]
