"""Readable tables generated from the object model (docs/objects.md comes from here)."""
from __future__ import annotations

from smartmeter.cosem.classes.base import REGISTRY
from smartmeter.cosem.objectmodel import POLICY_NAMES, ObjectModel


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


def _named(indexes, table: dict[int, str]) -> str:
    return ", ".join(f"{i} {table.get(i, '?')}" for i in sorted(indexes)) or "–"


def policy_names(policy: int) -> list[str]:
    """The named bits of an IC 64 v1 security_policy, in bit order."""
    return [name for name, bit in sorted(POLICY_NAMES.items(), key=lambda item: item[1]) if policy & bit]


MECHANISM_NAMES = {0: "lowest (none)", 1: "low (password)", 2: "high (manufacturer)", 3: "HLS MD5", 4: "HLS SHA-1",
                   5: "HLS GMAC", 6: "HLS SHA-256", 7: "HLS ECDSA"}


def access_rights_markdown(model: ObjectModel) -> str:
    """Per client: how it associates and what it may read, write and execute, by name."""
    lines = [
        f"# Access rights per client, profile `{model.profile}`",
        "",
        f"Generated from `src/smartmeter/cosem/model/{model.profile}.toml` by "
        "`smartmeter.cosem.docs.access_rights_markdown` (`smartmeter model show --access-rights`); "
        "do not edit by hand. The meter enforces exactly these rights, and every request of a client "
        "must carry the protection its security policy names (checked for every client, object, "
        "attribute and method by `tests/conformance/security/test_access_matrix.py`). Objects not "
        "listed under a client are invisible to it: the meter answers object-undefined.",
        "",
        "| client | SAP | interfaces | mechanism | suite | security policy | visible objects |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in model.clients.values():
        visible = sum(1 for o in model.objects if c.name in o.access)
        lines.append(f"| [{c.name}](#{c.name}) | {c.sap} | {', '.join(c.interfaces)} | "
                     f"{c.mechanism} {MECHANISM_NAMES.get(c.mechanism, '')} | "
                     f"{c.security_suite if c.ciphered else '–'} | "
                     f"{', '.join(policy_names(c.security_policy)) or 'none'} | {visible} |")
    for c in model.clients.values():
        policy = policy_names(c.security_policy)
        notes = []
        if c.pre_established:
            notes.append("pre-established (never opened or released)")
        if c.push_only:
            notes.append("receives pushes only, never associates")
        lines += [
            "",
            f"## {c.name}",
            "",
            c.description,
            "",
            f"- SAP: {c.sap}",
            f"- interfaces: {', '.join(c.interfaces)}",
            f"- authentication mechanism: {c.mechanism} ({MECHANISM_NAMES.get(c.mechanism, 'unknown')})",
            f"- application context: {'logical name referencing with ciphering' if c.ciphered else 'logical name referencing'}",
            f"- security suite: {c.security_suite if c.ciphered else 'none'}",
            f"- security policy: 0x{c.security_policy:02X}" + (f" ({', '.join(policy)})" if policy else " (none)"),
        ]
        lines += [f"- {note}" for note in notes]
        lines.append("")
        visible = [o for o in model.objects if c.name in o.access]
        if not visible:
            lines.append("No object is visible to this client.")
            continue
        lines += ["| OBIS | IC | object | readable attributes | writable attributes | executable methods |",
                  "|---|---|---|---|---|---|"]
        for o in visible:
            ic = REGISTRY.classes[o.class_id]
            a = o.access[c.name]
            lines.append(f"| {o.obis} | {o.class_id} | {o.name} | {_named(a.read, ic.attributes)} | "
                         f"{_named(a.write, ic.attributes)} | {_named(a.execute, ic.methods)} |")
    return "\n".join(lines) + "\n"
