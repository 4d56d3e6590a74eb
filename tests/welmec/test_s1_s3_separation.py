"""S1 realisation, S3 protective software interface: the legally relevant part is one package
whose only door is a closed set of typed commands, and the separation is enforced."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smartmeter.legal import interface as legal

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--config", str(tree / "pyproject.toml")],
                          cwd=tree, capture_output=True, text=True, env={"PYTHONPATH": str(tree / "src"), "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory):
    tree = tmp_path_factory.mktemp("tree")
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


@pytest.mark.welmec("S1", "S3")
def test_the_import_contract_holds_on_this_tree(tree_copy):
    """The import contract (legal/ imports nothing else; others only legal.interface) holds."""
    result = _lint_imports(tree_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("victim, line", [
    ("src/smartmeter/legal/registers.py", "from smartmeter.cosem import data as _forbidden\n"),
    ("src/smartmeter/meter/clock.py", "from smartmeter.legal import storage as _bypass\n"),
    ("src/smartmeter/cosem/classes/ic3_register.py", "import smartmeter.legal.registers as _bypass\n"),
])
@pytest.mark.welmec("S1", "S3")
def test_a_forbidden_import_breaks_the_build(tree_copy, victim, line):
    """Adding an import that crosses the boundary makes `make test` fail (lint-imports exits non-zero)."""
    path = tree_copy / victim
    original = path.read_text()
    try:
        path.write_text(line + original)
        result = _lint_imports(tree_copy)
        assert result.returncode != 0
        assert "BROKEN" in result.stdout or "broken" in result.stdout
    finally:
        path.write_text(original)


@pytest.mark.welmec("S3")
def test_undeclared_commands_are_refused_counted_and_change_nothing(tmp_path):
    """An undeclared command is refused, changes nothing and is counted persistently."""
    part = legal.LegalInterface(tmp_path)
    part.execute(legal.RegisterSimulatedPower(1000.0, 0.0, 3600.0))
    before = part.execute(legal.ReadEnergyRegisters())

    class ResetRegisters:  # what an attacker on the communication side would like to exist
        pass

    for hostile in (ResetRegisters(), "ReadEnergyRegisters", legal.ReadEnergyRegisters, object(), None):
        with pytest.raises(legal.CommandRefused):
            part.execute(hostile)
    assert part.execute(legal.ReadEnergyRegisters()) == before
    assert part.execute(legal.ReadRefusedCommandCount()) == 5
    part.close()
    assert legal.LegalInterface(tmp_path).execute(legal.ReadRefusedCommandCount()) == 5


@pytest.mark.welmec("S3")
def test_results_are_copies(tmp_path):
    """Results are frozen copies: a caller cannot change legally relevant state through them."""
    part = legal.LegalInterface(tmp_path)
    part.execute(legal.RegisterSimulatedPower(500.0, 0.0, 3600.0))
    snap = part.execute(legal.ReadEnergyRegisters())
    with pytest.raises(AttributeError):
        snap.a_plus = 0  # frozen
    assert part.execute(legal.ReadEnergyRegisters()) == snap
    part.close()


@pytest.mark.welmec("P1", "U1", "S3")
def test_generated_documents_are_current():
    """docs/welmec/matrix.md and docs/welmec/protective-interface.md match the tests and the dispatcher."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "welmec_docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
