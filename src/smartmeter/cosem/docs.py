"""Readable tables generated from the object model (docs/objects.md comes from here)."""
from __future__ import annotations

from smartmeter.cosem.classes.base import REGISTRY
from smartmeter.cosem.objectmodel import ObjectModel


def _indexes(indexes) -> str:
    return ",".join(str(i) for i in sorted(indexes)) or "–"


def objects_markdown(model: ObjectModel) -> str:
    lines = [
        f"# Object model `{model.profile}`",
        "",
        f"Generated from `src/smartmeter/cosem/model/{model.profile}.toml` by `smartmeter model show "
        f"--profile {model.profile} --markdown`; do not edit by hand.",
        "",
        "## Clients",
        "",
        "| client | SAP | interfaces | authentication mechanism | description |",
        "|---|---|---|---|---|",
    ]
    for c in model.clients.values():
        lines.append(f"| {c.name} | {c.sap} | {', '.join(c.interfaces)} | {c.mechanism} | {c.description} |")
    lines += ["", "## Objects", "",
              "Access per client as read / write / execute: attribute and method indexes.", ""]
    header = "| OBIS | class | ver | name | " + " | ".join(model.clients) + " |"
    lines += [header, "|" + "---|" * (4 + len(model.clients))]
    for o in model.objects:
        cells = []
        for client in model.clients:
            if client not in o.access:
                cells.append("not visible")
            else:
                a = o.access[client]
                cells.append(f"{_indexes(a.read)} / {_indexes(a.write)} / {_indexes(a.execute)}")
        lines.append(f"| {o.obis} | {o.class_id} | {o.version} | {o.name} | " + " | ".join(cells) + " |")
    lines += ["", "## Interface classes", ""]
    for class_id in sorted({o.class_id for o in model.objects}):
        ic = REGISTRY.classes[class_id]
        attrs = ", ".join(f"{i} {n}" for i, n in ic.attributes.items())
        methods = ", ".join(f"{i} {n}" for i, n in ic.methods.items()) or "none"
        lines.append(f"- **IC {class_id} v{ic.version}** ({ic.__name__}): attributes {attrs}; methods {methods}")
    return "\n".join(lines) + "\n"
