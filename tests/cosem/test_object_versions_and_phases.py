"""The object model's per-object class version (`version = 0`: the standard names an earlier
version of the class for this object, e.g. the Instantaneous Readout Profile IC 7 v0) and the
capture objects of a profile on a single-phase meter (those of `phases = 3` objects left out)."""
from __future__ import annotations

import pytest

from smartmeter.cosem.objectmodel import ModelError, ObjectModel
from smartmeter.cosem.obis import Obis


def doc(profile: dict) -> dict:
    register = {"class_id": 3, "value": "v", "scaler": 0, "unit": "W", "access": {"c": {"read": "*"}}}
    return {
        "profile": {"name": "test"},
        "clients": {"c": {"sap": 16, "interfaces": ["lan"], "mechanism": 0}},
        "object": [
            dict(register, name="L1", obis="1-0:21.7.0.255"),
            dict(register, name="L2", obis="1-0:41.7.0.255", phases=3),
            dict({"name": "profile", "class_id": 7, "obis": "0-0:21.0.5.255", "buffer": "b", "capture_period": 0,
                  "profile_entries": 1, "access": {"c": {"read": "*"}},
                  "capture_objects": [[8, "0-0:1.0.0.255", 2, 0], [3, "1-0:21.7.0.255", 2, 0],
                                      [3, "1-0:41.7.0.255", 2, 0]],
                  "column_types": ["octet-string", "double-long-unsigned", "long-unsigned"]}, **profile),
        ],
    }


def the_profile(model: ObjectModel):
    return next(o for o in model.objects if o.obis == Obis.parse("0-0:21.0.5.255"))


def test_an_object_reports_the_version_the_model_gives_it():
    model = ObjectModel.from_toml(doc({"version": 0}))
    assert the_profile(model).version == 0
    assert "version" not in the_profile(model).config
    assert the_profile(ObjectModel.from_toml(doc({}))).version == 1  # the class's own (IC 7 version 1)


@pytest.mark.parametrize("version", [2, -1, "0"])
def test_a_version_the_class_does_not_implement_stops_the_start(version):
    with pytest.raises(ModelError, match="version must be 0..1"):
        ObjectModel.from_toml(doc({"version": version}))


def test_a_single_phase_meter_s_profile_captures_no_l2_object():
    model = ObjectModel.from_toml(doc({}))
    single = the_profile(model.for_phases(1)).config
    assert single["capture_objects"] == [[8, "0-0:1.0.0.255", 2, 0], [3, "1-0:21.7.0.255", 2, 0]]
    assert single["column_types"] == ["octet-string", "double-long-unsigned"]
    assert the_profile(model.for_phases(3)).config == the_profile(model).config
    assert len(the_profile(model).config["capture_objects"]) == 3  # the model itself is not changed
