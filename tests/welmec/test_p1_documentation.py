"""P1/U1 documentation: the documents exist and say what the code does. Checked: the legally
relevant part and its protective interface (generated from the dispatcher), the rounding of
the registers (shown to hold), the user interface (every command documented), the software
identification (the documented shell recipe reproduces the signed digest), the parameters
(each declared with unit, range and description)."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from smartmeter.legal import interface as legal
from smartmeter.legal.parameters import PARAMETERS
from welmec_support import LEGAL_DIR, ROOT, cli


@pytest.mark.welmec("P1", "U1", "S3")
def test_the_legally_relevant_part_and_its_interface_are_documented_from_the_code():
    """docs/decisions.md documents the legally relevant part, and docs/welmec/protective-interface.md is regenerated from the dispatcher without a difference."""
    decisions = (ROOT / "docs" / "decisions.md").read_text()
    section = decisions.split("## The legally relevant part", 1)[1]
    for topic in ("Its own process", "Measurement", "Persistence", "Fatal error register", "Software identification",
                  "Certification mode", "Certification-protected log"):
        assert f"**{topic}" in section, topic
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "welmec_docs.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


@pytest.mark.welmec("P1", "U1", "P2", "U2")
def test_the_documented_shell_recipe_reproduces_the_signed_software_id():
    """The sha256sum recipe in legal/identification.py's documentation, run in a shell, gives the digest of the signed release manifest."""
    doc = (LEGAL_DIR / "identification.py").read_text()
    recipe = re.search(r"cd src/smartmeter/legal && (.*?)\| sha256sum\n", doc.replace("\\\\\n", "").replace("\\\n", ""),
                       re.S).group(1)
    recipe = " ".join(recipe.replace("\\\\", "\\").split()) + "| sha256sum"
    out = subprocess.run(["sh", "-c", recipe], cwd=LEGAL_DIR, capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == json.loads((LEGAL_DIR / "release_manifest.json").read_text())["digest"]


@pytest.mark.welmec("P1", "U1")
def test_the_documented_rounding_holds_registers_are_exact_and_carry_remainders(tmp_path):
    """As documented (exact integers, floored, remainders carried), 1000 steps of 0.1 s register exactly what one 100 s step does."""
    stepped, whole = legal.LegalInterface(tmp_path / "a"), legal.LegalInterface(tmp_path / "b")
    try:
        for _ in range(1000):
            stepped.execute(legal.RegisterSimulatedPower(1234.5, -321.0, 0.1))
        whole.execute(legal.RegisterSimulatedPower(1234.5, -321.0, 100.0))
        assert stepped.execute(legal.ReadEnergyRegisters()) == whole.execute(legal.ReadEnergyRegisters())
        assert abs(whole.execute(legal.ReadEnergyRegisters()).a_plus - 1234.5 * 100 / 3600) <= 1
    finally:
        stepped.close()
        whole.close()


@pytest.mark.welmec("P1", "U1", "P3", "U3")
def test_every_command_of_the_user_interface_is_documented():
    """Every command `smartmeter --help` offers appears in README.md, and every protective-interface command has a documented effect."""
    listing = cli("--help").stdout.split("Commands:", 1)[1]
    commands = [line.split()[0] for line in listing.splitlines() if line.strip()]
    readme = (ROOT / "README.md").read_text()
    assert commands and all(f"smartmeter {c}" in readme for c in commands), commands
    doc = (ROOT / "docs" / "welmec" / "protective-interface.md").read_text()
    rows = [line.split("|") for line in doc.splitlines() if line.startswith("| `")]
    assert rows and all(row[3].strip() for row in rows)


@pytest.mark.welmec("P1", "U1", "P7", "U7")
def test_every_legally_relevant_parameter_is_declared_with_unit_range_and_description():
    """Each device-specific legally relevant parameter declares its type, unit, default, description and range or allowed values, and its default passes its own check."""
    assert PARAMETERS
    for name, spec in PARAMETERS.items():
        assert spec.name == name and spec.description
        assert spec.kind in (int, float, str)
        if spec.kind is str:
            assert spec.max_length is not None
        else:
            assert spec.unit and (spec.allowed is not None or (spec.minimum is not None and spec.maximum is not None))
        assert spec.check(spec.default) == spec.default
