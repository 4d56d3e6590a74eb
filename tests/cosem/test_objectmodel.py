"""The object model file: loading, its consistency checks, and the docs generated from it."""
from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from smartmeter.cosem.docs import objects_markdown
from smartmeter.cosem.objectmodel import ModelError, ObjectModel

DOC = tomllib.loads(resources.files("smartmeter.cosem.model").joinpath("ksmw.toml").read_text())


def test_docs_objects_md_is_generated_from_the_model():
    generated = objects_markdown(ObjectModel.load("ksmw"))
    assert (Path(__file__).parents[2] / "docs" / "objects.md").read_text() == generated, (
        "docs/objects.md is stale: run `smartmeter model show --markdown > docs/objects.md`")


def test_every_object_of_the_foundation_is_in_the_model():
    model = ObjectModel.load("ksmw")
    wanted = {"0-0:41.0.0.255": 17, "0-0:40.0.0.255": 15, "0-0:42.0.0.255": 1, "0-0:96.1.0.255": 1,
              "0-0:96.1.1.255": 1, "0-0:1.0.0.255": 8, "1-0:1.8.0.255": 3, "1-0:2.8.0.255": 3,
              "1-0:3.8.0.255": 3, "1-0:4.8.0.255": 3, "1-0:99.1.0.255": 7, "0-0:22.0.0.255": 23}
    assert {str(o.obis): o.class_id for o in model.objects if str(o.obis) in wanted} == wanted
    assert model.client_by_sap(16).name == "public"
    assert next(o for o in model.objects if o.class_id == 15).version == 3


def broken(change) -> dict:
    doc = copy.deepcopy(DOC)
    change(doc)
    return doc


@pytest.mark.parametrize("change, message", [
    (lambda d: d["object"][0].update(class_id=9999), "not implemented"),
    (lambda d: d["object"][0].update(obis="1-0:1.8"), "1-0:1.8"),
    (lambda d: d["object"][2]["access"].update(nobody={"read": "*"}), "unknown client"),
    (lambda d: d["object"][2]["access"]["public"].update(read=[1, 2, 7]), "no such index"),
    (lambda d: d["object"][2]["access"]["public"].update(read="some"), "expected"),
    (lambda d: d["object"].append(dict(d["object"][0])), "share one logical name"),
])
def test_inconsistent_models_are_refused_with_a_reason(change, message):
    with pytest.raises((ModelError, ValueError), match=message):
        ObjectModel.from_toml(broken(change))
