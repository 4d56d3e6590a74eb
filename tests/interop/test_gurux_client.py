"""gurux-dlms as an independent client: public client over the TCP wrapper and over HDLC.

Every value gurux decodes is compared with what the meter holds (its own store, read
only) or with the public identification example of the companion standard.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest
from gurux_dlms.enums import ObjectType

from gurux_peer import GuruxClient
from smartmeter.cosem.objectmodel import ObjectModel

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "dlms-vectors.json").read_text())
IDENT = VECTORS["ksmw_identification_example"]


def _epoch(gx_datetime) -> int:
    return int(gx_datetime.value.timestamp())


@pytest.fixture(params=["wrapper", "hdlc"])
def gurux(request, meter):
    hdlc = request.param == "hdlc"
    client = GuruxClient(meter.hdlc_port if hdlc else meter.wrapper_port, hdlc=hdlc)
    client.associate()
    yield client
    client.close()


def test_object_list_is_what_the_model_grants_the_public_client(gurux):
    """gurux lists the objects of classes it knows; the companion standard's frame counter
    class 12544 is not one of them, everything else must be exactly what the model grants."""
    objects = gurux.objects()
    granted = {".".join(map(str, o.obis.to_bytes())) for o in ObjectModel.load("ksmw").for_phases(1).objects
               if "public" in o.access and o.class_id != 12544}
    assert len(objects) == len(granted)
    assert {o.logicalName for o in objects} == granted


def test_logical_device_name(gurux):
    ldn = gurux.objects().findByLN(ObjectType.DATA, "0.0.42.0.0.255")
    gurux.read(ldn, 2)
    value = ldn.value if isinstance(ldn.value, str) else bytes(ldn.value).decode()
    assert value == IDENT["cosem_logical_device_name_ascii"]


def test_clock(gurux):
    clock = gurux.objects().findByLN(ObjectType.CLOCK, "0.0.1.0.0.255")
    gurux.read(clock, 2)
    assert abs(_epoch(clock.time) - time.time()) < 5
    assert gurux.read(clock, 3) == -60  # CET, Blue Book sign: minutes behind UTC


def test_active_energy_import_value_and_scaler_unit(gurux, meter):
    register = gurux.objects().findByLN(ObjectType.REGISTER, "1.0.1.8.0.255")
    gurux.read(register, 3)
    assert register.scaler == 1.0  # gurux shows 10^scaler: scaler 0
    assert int(register.unit) == 30  # Wh
    before = meter.energy_wh("a_plus")
    gurux.read(register, 2)
    after = meter.energy_wh("a_plus")
    # the store is written once a second: the value read lies within a second of it
    assert before - 2 <= register.value <= after + 2
    assert register.value > 0


def _store_rows(meter, first=None, last=None):
    return [r for r in meter.profile_rows()
            if (first is None or r[0] >= first) and (last is None or r[0] <= last)]


def _as_rows(buffer):
    return [(_epoch(row[0]), *[int(v) for v in row[1:]]) for row in buffer]


def test_load_profile_whole(gurux, meter):
    profile = gurux.objects().findByLN(ObjectType.PROFILE_GENERIC, "1.0.99.1.0.255")
    gurux.read(profile, 3)
    assert [str(c[0].logicalName) for c in profile.captureObjects] == [
        "0.0.1.0.0.255", "0.0.96.10.1.255", "1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.3.8.0.255", "1.0.4.8.0.255"]
    gurux.read(profile, 2)
    rows = _as_rows(profile.buffer)
    held = _store_rows(meter)
    assert len(rows) >= 2880
    assert rows == held[: len(rows)]


def test_load_profile_by_entry(gurux, meter):
    profile = gurux.objects().findByLN(ObjectType.PROFILE_GENERIC, "1.0.99.1.0.255")
    gurux.read(profile, 3)
    gurux.rows_by_entry(profile, 1, 3)
    assert _as_rows(profile.buffer) == _store_rows(meter)[:3]
    gurux.rows_by_entry(profile, 100, 5)
    assert _as_rows(profile.buffer) == _store_rows(meter)[99:104]


def test_load_profile_by_range(gurux, meter):
    profile = gurux.objects().findByLN(ObjectType.PROFILE_GENERIC, "1.0.99.1.0.255")
    gurux.read(profile, 3)
    held = _store_rows(meter)
    first, last = held[200][0], held[212][0]
    start = dt.datetime.fromtimestamp(first, dt.timezone.utc)
    end = dt.datetime.fromtimestamp(last, dt.timezone.utc)
    gurux.rows_by_range(profile, start, end)
    rows = _as_rows(profile.buffer)
    assert rows == _store_rows(meter, first, last)
    assert len(rows) == 13
