"""Generate docs/welmec/matrix.md (requirement block -> test -> what it shows) from the tests
in tests/welmec/, and docs/welmec/protective-interface.md from the declared commands.

    python scripts/welmec_docs.py            # write both files
    python scripts/welmec_docs.py --check    # exit 1 if either is stale (the test suite runs this)
"""
from __future__ import annotations

import ast
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "welmec"
MATRIX = ROOT / "docs" / "welmec" / "matrix.md"
INTERFACE_DOC = ROOT / "docs" / "welmec" / "protective-interface.md"


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0].strip() if doc and doc.strip() else ""


def matrix() -> str:
    rows = []
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        blocks = next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                       and any(getattr(t, "id", "") == "BLOCKS" for t in n.targets)), ())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                shows = _first_line(ast.get_docstring(node)) or node.name
                for block in blocks:
                    rows.append((block, f"tests/welmec/{path.name}::{node.name}", shows))
    def order(row):
        block = row[0]
        return (block.rstrip("0123456789-"), [int(p) if p.isdigit() else p for p in block[1:].replace("-", " ").split()], row[1])
    lines = ["# WELMEC 7.2 requirement blocks and their evidence", "",
             "Generated from `tests/welmec/` by `python scripts/welmec_docs.py`; do not edit by hand.",
             "Each row is a test that runs in `make test`; the text is the test's own statement of what it shows.", "",
             "| block | test | what it shows |", "|---|---|---|"]
    lines += [f"| {b} | `{t}` | {s} |" for b, t, s in sorted(rows, key=order)]
    return "\n".join(lines) + "\n"


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


def main() -> int:
    outputs = {MATRIX: matrix(), INTERFACE_DOC: interface_doc()}
    if "--check" in sys.argv:
        stale = [str(p.relative_to(ROOT)) for p, text in outputs.items() if not p.exists() or p.read_text() != text]
        if stale:
            print("stale: " + ", ".join(stale) + " (run: python scripts/welmec_docs.py)")
            return 1
        return 0
    for path, text in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
