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


def ldn_access(doc) -> dict:
    """The access table of the logical device name object (a Data object, attributes 1 and 2)."""
    entry = next(o for o in doc["object"] if o["obis"] == "0-0:42.0.0.255")
    return entry["access"]


def broken(change) -> dict:
    doc = copy.deepcopy(DOC)
    change(doc)
    return doc


@pytest.mark.parametrize("change, message", [
    (lambda d: d["object"][0].update(class_id=9999), "not implemented"),
    (lambda d: d["object"][0].update(obis="1-0:1.8"), "1-0:1.8"),
    (lambda d: ldn_access(d).update(nobody={"read": "*"}), "unknown client"),
    (lambda d: ldn_access(d).update({next(iter(ldn_access(d))): {"read": [1, 2, 7]}}), "no such index"),
    (lambda d: ldn_access(d).update({next(iter(ldn_access(d))): {"read": "some"}}), "expected"),
    (lambda d: ldn_access(d).update({"public": {"read": "*"}}), "two access entries"),
    (lambda d: d["clients"]["management"].update(security_policy=["encrypted_everything"]), "security_policy"),
    (lambda d: d["object"].append(dict(d["object"][0])), "share one logical name"),
])
def test_inconsistent_models_are_refused_with_a_reason(change, message):
    """Every model inconsistency is refused with a reason that names it."""
    with pytest.raises((ModelError, ValueError), match=message):
        ObjectModel.from_toml(broken(change))


def test_the_idis_profile_changes_only_the_management_client():
    ksmw, idis = ObjectModel.load("ksmw"), ObjectModel.load("idis")
    assert (idis.clients["management"].mechanism, idis.clients["management"].security_suite) == (5, 0)
    assert (ksmw.clients["management"].mechanism, ksmw.clients["management"].security_suite) == (7, 1)
    assert {n: c for n, c in idis.clients.items() if n != "management"} == \
        {n: c for n, c in ksmw.clients.items() if n != "management"}
    assert [(o.obis, o.class_id, o.access) for o in idis.objects] == [(o.obis, o.class_id, o.access) for o in ksmw.objects]
