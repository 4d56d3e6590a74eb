"""Bad input to the disconnector, the limiter, the disconnect script table and the instantaneous
readout profile on the meter's own model (companion §5.8, §5.9.1), through the real server path
(meter_sessions: each client's association, protection and rights): each request gets the
data-access-result / action-result the Blue Book and the companion standard define, and nothing
changes - the disconnector's state and mode (as read and as stored), the limiter's settings, the
readout profile's entry, the disconnector control log and the configuration log (a refused
request is no configuration event).

Not repeated here: the class-level refusals on a test model (tests/cosem/test_ic70_*, test_ic71_*)
and gurux's mode 7 / wrong-type reconnect on a running meter (tests/interop/test_supply_interop.py);
the access matrix (tests/conformance/security) checks each right's result, not that nothing moved.
"""
from __future__ import annotations

import pytest

from meter_sessions import SUCCESS, Sessions
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.results import DataAccessResult
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig

DISCONNECTOR, SCRIPTS = "0-0:96.3.10.255", "0-0:10.0.106.255"
IMPORT_LIMITER, EXPORT_LIMITER = "0-0:17.0.0.255", "0-0:17.0.1.255"
READOUT_PROFILE = "0-0:21.0.5.255"
START = 1_773_144_000.0
DISCONNECTED = 0
OTHER_REASON = int(DataAccessResult.OTHER_REASON)
TYPE_UNMATCHED = int(DataAccessResult.TYPE_UNMATCHED)
READ_WRITE_DENIED = int(DataAccessResult.READ_WRITE_DENIED)
OBJECT_UNDEFINED = int(DataAccessResult.OBJECT_UNDEFINED)
THRESHOLD_W = 4000  # written before the refusals, so a refused write cannot look like the default


def prepared(data_dir) -> tuple[Meter, Sessions]:
    """Disconnected by the management client (so an accepted reconnect would show), a limiter
    threshold of its own, a readout profile entry captured: the state the refusals must keep."""
    platform = [START]
    m = Meter(MeterConfig(data_dir=data_dir, backfill_days=0), clock=MeterClock(source=lambda: platform[0]))
    assert m.control({"input": "load", "power": 1800.0, "pf": 0.9})["ok"]
    platform[0] += 60
    m.tick()
    sessions = Sessions(m)
    management = sessions("management")
    assert management.set(71, IMPORT_LIMITER, 4, Data.double_long_unsigned(THRESHOLD_W)) == SUCCESS
    assert management.action(70, DISCONNECTOR, 1, Data.integer(0)) == SUCCESS
    assert management.action(7, READOUT_PROFILE, 2, Data.integer(0)) == SUCCESS
    platform[0] += 60  # a later (wrongly accepted) capture would carry another time
    m.tick()
    return m, sessions


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    meter, sessions = prepared(tmp_path_factory.mktemp("bad-input"))
    yield meter, sessions
    meter.close()


def state(meter, sessions) -> dict:
    """Everything a refused request must leave as it was, read as a client and as stored."""
    management = sessions("management")
    read = lambda class_id, obis, attributes: [management.get(class_id, obis, a) for a in attributes]  # noqa: E731
    return {
        "disconnector": read(70, DISCONNECTOR, (2, 3, 4)),
        "limiters": read(71, IMPORT_LIMITER, range(2, 12)) + read(71, EXPORT_LIMITER, range(2, 12)),
        "readout profile": read(7, READOUT_PROFILE, (2, 7)),
        "stored": {key: meter.store.get(key) for key in (f"disconnect_control.{DISCONNECTOR}",
                                                         f"limiter.{IMPORT_LIMITER}", f"limiter.{EXPORT_LIMITER}")},
        "logs": {log: meter.events.entries(log) for log in ("disconnect", "configuration")},
    }


# (what, client, request on a ClientSession, the result the meter must give)
REFUSALS = [
    ("control_mode 7 (modes are 0..6)", "management",
     lambda s: s.set(70, DISCONNECTOR, 4, Data.enum(7)), OTHER_REASON),
    ("control_mode by the data readout client (read only)", "data_readout",
     lambda s: s.set(70, DISCONNECTOR, 4, Data.enum(4)), READ_WRITE_DENIED),
    ("import threshold as long-unsigned (+P is double-long-unsigned)", "management",
     lambda s: s.set(71, IMPORT_LIMITER, 4, Data.long_unsigned(5000)), TYPE_UNMATCHED),
    ("import threshold as a signed double-long", "management",
     lambda s: s.set(71, IMPORT_LIMITER, 4, Data.double_long(5000)), TYPE_UNMATCHED),
    ("export emergency threshold as float32", "management",
     lambda s: s.set(71, EXPORT_LIMITER, 5, Data(DataType.FLOAT32, 5000.0)), TYPE_UNMATCHED),
    ("import threshold by the maintenance client (read only)", "maintenance",
     lambda s: s.set(71, IMPORT_LIMITER, 4, Data.double_long_unsigned(100)), READ_WRITE_DENIED),
    ("remote_reconnect with long-unsigned 0", "management",
     lambda s: s.action(70, DISCONNECTOR, 2, Data.long_unsigned(0)), TYPE_UNMATCHED),
    ("remote_reconnect without a parameter", "management",
     lambda s: s.action(70, DISCONNECTOR, 2, None), TYPE_UNMATCHED),
    ("remote_reconnect by the data readout client", "data_readout",
     lambda s: s.action(70, DISCONNECTOR, 2, Data.integer(0)), READ_WRITE_DENIED),
    # remote execute of the disconnect script table is forbidden for every client (companion §5.8)
    *((f"script {script} of the disconnect script table by {client}", client,
       lambda s, script=script: s.action(9, SCRIPTS, 1, Data.long_unsigned(script)), READ_WRITE_DENIED)
      for client in ("management", "data_readout", "maintenance", "installation") for script in (2, 4)),
    ("the disconnect script table by the public client (not visible to it)", "public",
     lambda s: s.action(9, SCRIPTS, 1, Data.long_unsigned(4)), OBJECT_UNDEFINED),
    *((f"the readout profile's capture by {client}", client,
       lambda s: s.action(7, READOUT_PROFILE, 2, Data.integer(0)), READ_WRITE_DENIED)
      for client in ("public", "installation", "certification")),
    ("the readout profile's capture with an octet-string", "management",
     lambda s: s.action(7, READOUT_PROFILE, 2, Data.octet_string(b"\x00")), TYPE_UNMATCHED),
    ("the readout profile's reset by the data readout client", "data_readout",
     lambda s: s.action(7, READOUT_PROFILE, 1, Data.integer(0)), READ_WRITE_DENIED),
]


@pytest.mark.parametrize("what, client, request_, expected", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_refused_request_changes_nothing(site, what, client, request_, expected):
    meter, sessions = site
    before = state(meter, sessions)
    assert before["disconnector"][1] == (SUCCESS, Data.enum(DISCONNECTED))  # the premise
    assert before["readout profile"][1] == (SUCCESS, Data.double_long_unsigned(1))
    assert request_(sessions(client)) == expected
    assert state(meter, sessions) == before


def test_remote_reconnect_with_integer_1_is_refused(tmp_path):
    """Blue Book 4.5.8: remote_reconnect (data), data ::= integer (0). Any other value is not the
    method's parameter: other-reason (a value of the right type the method cannot take). A meter
    of its own: a reconnect wrongly carried out would spoil the shared one."""
    meter, sessions = prepared(tmp_path)
    try:
        before = state(meter, sessions)
        assert sessions("management").action(70, DISCONNECTOR, 2, Data.integer(1)) == OTHER_REASON
        assert state(meter, sessions) == before
    finally:
        meter.close()
