"""Generate docs/welmec/matrix.md (WELMEC 7.2 requirement block -> applicability -> the tests
that show it, with their outcomes) and docs/welmec/protective-interface.md (the declared
commands).

The matrix comes from three sources:

* docs/welmec/blocks.toml: every block of the guide that can apply (P, U, L, T, S, D, I3), with
  the applicability decision, its reason and what is not built yet;
* the `@pytest.mark.welmec("P2", "U2")` marker on each test function anywhere under tests/
  (read from the source, not by importing it): the blocks that test shows; its docstring's first
  line says what it shows;
* the outcome of the last evidence run (a JUnit XML file from pytest), and the software
  identification of the tree (`smartmeter id --json`), when given.

    python scripts/welmec_docs.py                    # write both files (outcomes "not run")
    python scripts/welmec_docs.py --check            # exit 1 if either does not match the markers
    python scripts/welmec_docs.py --junit run.xml    # the matrix with the outcomes of that run (make evidence)

--check compares the matrix with the markers and the block list only: the outcome column and the
run section vary from run to run and are left out of the comparison.
"""
from __future__ import annotations

import ast
import datetime
import json
import re
import subprocess
import sys
import tempfile
import tomllib
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
BLOCKS = ROOT / "docs" / "welmec" / "blocks.toml"
MATRIX = ROOT / "docs" / "welmec" / "matrix.md"
INTERFACE_DOC = ROOT / "docs" / "welmec" / "protective-interface.md"
NOT_RUN = "not run"
RUN_BEGIN, RUN_END = "<!-- evidence run -->", "<!-- /evidence run -->"


class MatrixError(Exception):
    """A marker that cannot be placed in the matrix (unknown block, a block that does not apply, ...)."""


@dataclass(frozen=True)
class Block:
    id: str
    title: str
    applies: bool
    reason: str
    gap: str = ""


@dataclass
class Evidence:
    test: str  # path::function (parametrized cases together)
    shows: str
    blocks: tuple[str, ...]
    outcomes: list[str] = field(default_factory=list)

    def outcome(self) -> str:
        if not self.outcomes:
            return NOT_RUN
        counts = {o: self.outcomes.count(o) for o in ("passed", "failed", "skipped")}
        if len(self.outcomes) == 1:
            return self.outcomes[0]
        parts = [f"{n} {o}" for o, n in counts.items() if n]
        return ", ".join(parts)


def load_blocks(path: Path = BLOCKS) -> list[Block]:
    data = tomllib.loads(path.read_text())
    blocks = [Block(b["id"], b["title"], bool(b["applies"]), b["reason"].strip(), b.get("gap", "").strip())
              for b in data["block"]]
    ids = [b.id for b in blocks]
    if len(ids) != len(set(ids)):
        raise MatrixError(f"{path.name}: a block is listed twice")
    return blocks


def _welmec_marker(decorator: ast.expr) -> tuple[str, ...] | None:
    """The block ids of a `pytest.mark.welmec(...)` decorator, or None for any other decorator."""
    if not isinstance(decorator, ast.Call):
        return None
    func = decorator.func
    if not (isinstance(func, ast.Attribute) and func.attr == "welmec" and isinstance(func.value, ast.Attribute)
            and func.value.attr == "mark"):
        return None
    if decorator.keywords or not all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in decorator.args):
        raise MatrixError("welmec markers take block ids as string literals only")
    return tuple(a.value for a in decorator.args)


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return " ".join(lines[0].split()) if lines else ""


def collect_evidence(tests: Path = TESTS) -> list[Evidence]:
    found = []
    for path in sorted(tests.rglob("test_*.py")):
        rel = path.relative_to(tests.parent).as_posix()
        tree = ast.parse(path.read_text(), filename=rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
                if "welmec" in ast.unparse(node.value):
                    raise MatrixError(f"{rel}: welmec markers go on each test, not on the module")
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            markers = [m for m in (_welmec_marker(d) for d in node.decorator_list) if m is not None]
            if not markers:
                continue
            if not node.name.startswith("test"):
                raise MatrixError(f"{rel}::{node.name}: a welmec marker on something that is not a test")
            blocks = tuple(dict.fromkeys(b for m in markers for b in m))
            found.append(Evidence(f"{rel}::{node.name}", _first_line(ast.get_docstring(node)) or node.name, blocks))
    return found


def read_junit(path: Path) -> dict[str, list[str]]:
    """Outcomes per path::function from a pytest JUnit XML file (parametrized cases together)."""
    outcomes: dict[str, list[str]] = defaultdict(list)
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "")
        name = case.get("name", "").split("[", 1)[0]
        parts = module.split(".")
        # classname is the dotted module path, plus a class name for tests in a class
        for cut in range(len(parts), 0, -1):
            candidate = "/".join(parts[:cut]) + ".py"
            if (ROOT / candidate).exists():
                break
        test = f"{candidate}::{name}"
        if case.find("failure") is not None or case.find("error") is not None:
            outcomes[test].append("failed")
        elif case.find("skipped") is not None:
            outcomes[test].append("skipped")
        else:
            outcomes[test].append("passed")
    return dict(outcomes)


def software_identification() -> dict:
    done = subprocess.run([sys.executable, "-m", "smartmeter", "id", "--json"], capture_output=True, text=True,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}, timeout=60)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip()[:200]}
    return json.loads(done.stdout)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def matrix(blocks: list[Block], evidence: list[Evidence], run: dict | None = None) -> str:
    known = {b.id: b for b in blocks}
    per_block: dict[str, list[Evidence]] = defaultdict(list)
    for ev in evidence:
        for block_id in ev.blocks:
            if block_id not in known:
                raise MatrixError(f"{ev.test}: unknown WELMEC block {block_id!r} (see {BLOCKS.relative_to(ROOT)})")
            if not known[block_id].applies:
                raise MatrixError(f"{ev.test}: block {block_id} does not apply ({known[block_id].reason})")
            per_block[block_id].append(ev)
    lines = ["# WELMEC 7.2 requirement blocks and their evidence", "",
             "Generated by `python scripts/welmec_docs.py` (outcomes: `make evidence`) from "
             "`docs/welmec/blocks.toml` (the blocks of WELMEC Guide 7.2 Issue 5 for type P/U, extensions L, T, S, D "
             "and I3, risk class C, with the applicability decision) and from the `@pytest.mark.welmec(...)` marker "
             "of each test. Do not edit by hand. A test is listed only under the blocks its marker names; its text "
             "is its own statement of what it shows.", ""]
    lines += [RUN_BEGIN]
    if run:
        lines += ["## Evidence run", "", f"- date (UTC): {run['date']}", f"- command: `{run['command']}`",
                  f"- outcome: {run['summary']}"]
        ident = run.get("identification", {})
        if "error" in ident:
            lines.append(f"- software identification: not available ({ident['error']})")
        else:
            legal, application = ident.get("legal", {}), ident.get("application", {})
            lines += [f"- legally relevant software (`src/smartmeter/legal/`): version {legal.get('version')}, "
                      f"SHA-256 `{legal.get('sha256')}`; matches the signed release manifest: "
                      f"{legal.get('matches_signed_manifest')}" + (" (development key)" if legal.get("development_key") else ""),
                      f"- application software: version {application.get('version')}, SHA-256 `{application.get('sha256')}`"]
        lines.append("")
    else:
        lines += ["No evidence run recorded in this file: run `make evidence` for outcomes and software identifiers.", ""]
    lines += [RUN_END, "", "## Summary", "", "| block | title | applies | evidence |", "|---|---|---|---|"]
    ordered = blocks  # the guide's order: P, U, L, T, S, D, I3
    for b in ordered:
        tests = per_block.get(b.id, [])
        if not b.applies:
            status = "–"
        elif tests:
            status = f"{len(tests)} test{'s' if len(tests) > 1 else ''}" + (" (partial, see gaps)" if b.gap else "")
        else:
            status = "**none yet**"
        lines.append(f"| [{b.id}](#{b.id.lower()}) | {_cell(b.title)} | {'yes' if b.applies else 'no'} | {status} |")
    lines.append("")
    for b in ordered:
        lines += [f"## {b.id}", "", f"**{b.title}.** " + ("Applies" if b.applies else "Does not apply") +
                  f", because: {b.reason}", ""]
        if b.gap:
            lines += [f"Not built or not shown yet: {b.gap}", ""]
        tests = per_block.get(b.id, [])
        if not b.applies:
            continue
        if not tests:
            lines += ["No evidence yet.", ""]
            continue
        lines += ["| test | what it shows | outcome |", "|---|---|---|"]
        lines += [f"| `{ev.test}` | {_cell(ev.shows)} | {ev.outcome()} |" for ev in sorted(tests, key=lambda e: e.test)]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def structure(text: str) -> str:
    """The matrix without what varies from run to run: the run section and the outcome cells."""
    text = re.sub(re.escape(RUN_BEGIN) + ".*?" + re.escape(RUN_END), RUN_BEGIN + RUN_END, text, flags=re.S)
    return re.sub(r"^(\| `[^`]+` \| .* \| )[^|]*( \|)$", r"\1*\2", text, flags=re.M)


def interface_doc() -> str:
    sys.path.insert(0, str(ROOT / "src"))
    from smartmeter.legal import interface

    with tempfile.TemporaryDirectory() as tmp:
        legal = interface.LegalInterface(Path(tmp))
        commands = legal.commands
        legal.close()
    lines = ["# The protective software interface", "",
             "Generated from `src/smartmeter/legal/interface.py` by `python scripts/welmec_docs.py`.", "",
             "Declaration of completeness: these are all the commands `LegalInterface.execute` accepts. Any other",
             "object is refused with `CommandRefused`, changes nothing, and increments the refused-command counter.", "",
             "| command | fields | effect |", "|---|---|---|"]
    for cmd in commands:
        fields = ", ".join(f"{name}" for name in getattr(cmd, "__dataclass_fields__", {})) or "–"
        lines.append(f"| `{cmd.__name__}` | {fields} | {' '.join((cmd.__doc__ or '').split())} |")
    return "\n".join(lines) + "\n"


def _run_info(junit: Path, outcomes: dict[str, list[str]], command: str) -> dict:
    flat = [o for os_ in outcomes.values() for o in os_]
    summary = ", ".join(f"{flat.count(o)} {o}" for o in ("passed", "failed", "skipped") if flat.count(o)) or "no tests"
    stamp = datetime.datetime.fromtimestamp(junit.stat().st_mtime, datetime.timezone.utc)
    return {"date": stamp.strftime("%Y-%m-%d %H:%M"), "command": command, "summary": summary,
            "identification": software_identification()}


def main(argv: list[str]) -> int:
    try:
        blocks, evidence = load_blocks(), collect_evidence()
        expected = matrix(blocks, evidence)
    except MatrixError as exc:
        print(f"welmec matrix: {exc}", file=sys.stderr)
        return 1
    if "--check" in argv:
        stale = []
        if not MATRIX.exists() or structure(MATRIX.read_text()) != structure(expected):
            stale.append(str(MATRIX.relative_to(ROOT)))
        if not INTERFACE_DOC.exists() or INTERFACE_DOC.read_text() != interface_doc():
            stale.append(str(INTERFACE_DOC.relative_to(ROOT)))
        if stale:
            print("stale: " + ", ".join(stale) + " (run: python scripts/welmec_docs.py, or make evidence)")
            return 1
        return 0
    text = expected
    if "--junit" in argv:
        junit = Path(argv[argv.index("--junit") + 1])
        outcomes = read_junit(junit)
        for ev in evidence:
            ev.outcomes = outcomes.get(ev.test, [])
        command = argv[argv.index("--command") + 1] if "--command" in argv else "make evidence"
        text = matrix(blocks, evidence, _run_info(junit, {ev.test: ev.outcomes for ev in evidence}, command))
    MATRIX.parent.mkdir(parents=True, exist_ok=True)
    MATRIX.write_text(text)
    INTERFACE_DOC.write_text(interface_doc())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
