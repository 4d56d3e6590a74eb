"""The evidence matrix (docs/welmec/matrix.md) cannot rot: it lists every block of WELMEC 7.2
that can apply, and the committed file matches the tests' welmec markers. Outcomes vary from
run to run and are not compared."""
from __future__ import annotations

import ast
import importlib.util
import sys
import textwrap

import pytest

from welmec_support import ROOT

spec = importlib.util.spec_from_file_location("welmec_docs", ROOT / "scripts" / "welmec_docs.py")
docs = importlib.util.module_from_spec(spec)
sys.modules.setdefault("welmec_docs", docs)  # dataclasses look their module up there
spec.loader.exec_module(docs)

# the block inventory of Guide 7.2 Issue 5 for our configuration (type P and U, extensions L, T,
# S, D, and the instrument blocks I3 of active electrical energy meters)
GUIDE_BLOCKS = ([f"P{i}" for i in range(1, 8)] + [f"U{i}" for i in range(1, 10)] + [f"L{i}" for i in range(1, 9)]
                + [f"T{i}" for i in range(1, 9)] + [f"S{i}" for i in range(1, 4)] + [f"D{i}" for i in range(1, 5)]
                + [f"I3-{i}" for i in range(1, 7)])

# tests of the test harness and of the matrix generator: they show no requirement on their own
HARNESS_SELF_TESTS = {
    "tests/welmec/test_evidence_matrix.py::test_every_evidence_test_was_reviewed_for_its_blocks",
    "tests/welmec/test_evidence_matrix.py::test_a_changed_marker_changes_the_matrix_structure",
    "tests/welmec/test_evidence_matrix.py::test_outcomes_are_shown_but_do_not_count_as_a_difference",
    "tests/welmec/test_evidence_matrix.py::test_a_marker_naming_an_unknown_or_inapplicable_block_is_an_error",
    "tests/welmec/test_evidence_matrix.py::test_a_module_wide_marker_is_refused",
    "tests/welmec/test_evidence_matrix.py::test_junit_outcomes_are_read_per_test_function",
    "tests/power/test_power_failure.py::test_loss_bound_is_conservative",
    "tests/power/test_power_failure.py::test_a_persisted_value_going_back_is_reported",
}


@pytest.mark.welmec("P1", "U1")
def test_the_committed_matrix_matches_the_markers_and_lists_every_block():
    """docs/welmec/matrix.md lists every block of the guide with its applicability and holds exactly the tests the welmec markers name (outcomes aside)."""
    blocks = docs.load_blocks()
    assert [b.id for b in blocks] == GUIDE_BLOCKS
    committed = (ROOT / "docs" / "welmec" / "matrix.md").read_text()
    assert docs.structure(committed) == docs.structure(docs.matrix(blocks, docs.collect_evidence()))
    for b in blocks:
        assert f"## {b.id}\n" in committed
        assert ("Applies, because" if b.applies else "Does not apply, because") in committed.split(f"## {b.id}\n")[1]
    # every T block (signed readouts, keys, delay, availability) and every D block (the firmware upgrade)
    for block_id in [f"T{i}" for i in range(1, 9)] + [f"D{i}" for i in range(1, 5)]:
        section = committed.split(f"## {block_id}\n")[1].split("\n## ")[0]
        assert "Applies, because" in section and "No evidence yet." not in section and "| test |" in section, block_id


def test_every_evidence_test_was_reviewed_for_its_blocks():
    """Every test in tests/welmec and tests/power carries a welmec marker (empty where it shows no block), except the harness's own checks."""
    unmarked = []
    for folder in ("welmec", "power"):
        for path in sorted((ROOT / "tests" / folder).glob("test_*.py")):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                    name = f"{path.relative_to(ROOT).as_posix()}::{node.name}"
                    if not any("welmec" in ast.unparse(d) for d in node.decorator_list) and name not in HARNESS_SELF_TESTS:
                        unmarked.append(name)
    assert unmarked == []


def _tree(tmp_path, body: str):
    tests = tmp_path / "tests"
    (tests / "welmec").mkdir(parents=True)
    (tests / "welmec" / "test_sample.py").write_text(textwrap.dedent(body))
    return tests


BLOCKS = [docs.Block("P2", "Software identification", True, "class C"),
          docs.Block("T1", "Completeness", True, "open networks", "not built"),
          docs.Block("I3-6", "Imprinted SWID", False, "the interfaces show it")]


def test_a_changed_marker_changes_the_matrix_structure(tmp_path):
    """Moving a test to another block, or removing its marker, makes the matrix differ from the committed one."""
    marked = docs.collect_evidence(_tree(tmp_path / "a", '''
        import pytest
        @pytest.mark.welmec("P2")
        def test_id():
            """Shows the id."""
    '''))
    moved = docs.collect_evidence(_tree(tmp_path / "b", '''
        import pytest
        @pytest.mark.welmec("T1")
        def test_id():
            """Shows the id."""
    '''))
    unmarked = docs.collect_evidence(_tree(tmp_path / "c", '''
        def test_id():
            """Shows the id."""
    '''))
    assert [(e.test, e.blocks, e.shows) for e in marked] == [("tests/welmec/test_sample.py::test_id", ("P2",), "Shows the id.")]
    texts = [docs.structure(docs.matrix(BLOCKS, found)) for found in (marked, moved, unmarked)]
    assert len(set(texts)) == 3
    t1 = texts[2].split("## T1\n")[1].split("\n## ")[0]
    assert "No evidence yet." in t1 and "not built" in t1


def test_outcomes_are_shown_but_do_not_count_as_a_difference(tmp_path):
    """A run's outcome per test (parametrized cases together) appears in the matrix; --check ignores outcomes and the run section."""
    found = docs.collect_evidence(_tree(tmp_path, '''
        import pytest
        @pytest.mark.welmec("P2")
        @pytest.mark.parametrize("x", [1, 2])
        def test_id(x):
            """Shows the id."""
    '''))
    found[0].outcomes = ["passed", "failed"]
    with_outcomes = docs.matrix(BLOCKS, found, {"date": "2026-01-01 00:00", "command": "make evidence",
                                                "summary": "1 passed, 1 failed",
                                                "identification": {"legal": {"sha256": "ab" * 32}}})
    assert "| 1 passed, 1 failed |" in with_outcomes and "ab" * 32 in with_outcomes
    found[0].outcomes = []
    plain = docs.matrix(BLOCKS, found)
    assert "| not run |" in plain
    assert plain != with_outcomes and docs.structure(plain) == docs.structure(with_outcomes)


@pytest.mark.parametrize("marker, problem", [('"P9"', "unknown"), ('"I3-6"', "does not apply")])
def test_a_marker_naming_an_unknown_or_inapplicable_block_is_an_error(tmp_path, marker, problem):
    """A marker naming a block that is not in the list, or one that does not apply, stops the generator."""
    found = docs.collect_evidence(_tree(tmp_path, f'''
        import pytest
        @pytest.mark.welmec({marker})
        def test_x():
            pass
    '''))
    with pytest.raises(docs.MatrixError, match=problem):
        docs.matrix(BLOCKS, found)


def test_a_module_wide_marker_is_refused(tmp_path):
    """Markers go on each test: a module-wide pytestmark with welmec is an error (it would claim every test of the file)."""
    with pytest.raises(docs.MatrixError, match="each test"):
        docs.collect_evidence(_tree(tmp_path, '''
            import pytest
            pytestmark = pytest.mark.welmec("P2")
            def test_x():
                pass
        '''))


def test_junit_outcomes_are_read_per_test_function(tmp_path):
    """pytest's JUnit XML maps back to path::function: failures and errors are 'failed', skips 'skipped'."""
    xml = tmp_path / "run.xml"
    xml.write_text('<testsuites><testsuite>'
                   '<testcase classname="tests.welmec.test_i3_3_indication" name="test_a[1]"/>'
                   '<testcase classname="tests.welmec.test_i3_3_indication" name="test_a[2]"><failure/></testcase>'
                   '<testcase classname="tests.welmec.test_i3_3_indication" name="test_b"><error/></testcase>'
                   '<testcase classname="tests.welmec.test_i3_3_indication" name="test_c"><skipped/></testcase>'
                   '</testsuite></testsuites>')
    assert docs.read_junit(xml) == {"tests/welmec/test_i3_3_indication.py::test_a": ["passed", "failed"],
                                    "tests/welmec/test_i3_3_indication.py::test_b": ["failed"],
                                    "tests/welmec/test_i3_3_indication.py::test_c": ["skipped"]}
