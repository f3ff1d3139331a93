"""Mutation testing (tools/mutation.py): every assignment's committed report is current and
fully triaged, checked without running anything; and the tool itself, on a toy assignment."""

from __future__ import annotations

import json
import os
import textwrap

import mutation
import nbformat
import pytest

import harness


@pytest.mark.parametrize("assignment", harness.assignments())
def test_report_is_current_and_every_survivor_is_triaged(assignment):
    problems = mutation.check_report(harness.SOLUTIONS / assignment)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("assignment", harness.assignments())
def test_triage_file_is_valid(assignment):
    entries = mutation.load_triage(harness.SOLUTIONS / assignment)  # raises on a malformed entry
    cells = {c.grade_id for p in harness.source_notebooks(assignment) for c in mutation.read_cells(p)}
    for e in entries:
        assert e.cell in cells, f"{assignment}: triage entry for unknown cell {e.cell!r}"
        if e.killed_by:
            assert e.killed_by in cells, f"{assignment}: {e.describe()} is killed by an unknown cell {e.killed_by!r}"


# --------------------------------------------------------------------------- the tool on a toy assignment

SOLUTION = '''\
def count_up(n):
    """The number of steps from 0 to n."""
    ### BEGIN SOLUTION
    i = 0
    while i < n:
        i += 1
    return i
    ### END SOLUTION
'''

TEST = """\
assert count_up(5) == 5, "count_up(5)"
### BEGIN HIDDEN TESTS
assert count_up(3) == 3, "count_up(3)"
### END HIDDEN TESTS
"""


def _meta(grade_id, *, solution=False, grade=False, points=None):
    meta = {"grade": grade, "grade_id": grade_id, "locked": not solution, "schema_version": 3,
            "solution": solution, "task": False}
    if points:
        meta["points"] = points
    return {"nbgrader": meta}


def _toy(folder, test=TEST):
    folder.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A toy assignment"),
        nbformat.v4.new_code_cell("import math", metadata=_meta("setup")),
        nbformat.v4.new_code_cell(SOLUTION, metadata=_meta("count_up", solution=True)),
        nbformat.v4.new_code_cell(test, metadata=_meta("test_count_up", grade=True, points=1)),
    ]
    nbformat.write(nb, folder / "toy.ipynb")
    return folder


def _run(folder):
    here = os.getcwd()
    try:
        report, summary = mutation.run(folder, workers=2, timeout=2.0, only=None, quiet=True)
    finally:
        os.chdir(here)
    (folder / mutation.REPORT_NAME).write_text(report)
    return summary


def test_mutants_are_mutmuts_inside_the_solution_region(tmp_path):
    folder = _toy(tmp_path / "toy")
    mutants = mutation.mutants_of(folder)
    assert mutants, "mutmut made no mutant"
    assert {m.cell for m in mutants} == {"count_up"} and {m.function for m in mutants} == {"count_up"}
    assert all("def count_up" not in m.line and '"""' not in m.line for m in mutants), "mutated outside the region"
    pairs = {(m.line, m.mutant) for m in mutants}
    assert ("i += 1", "i -= 1") in pairs and ("while i < n:", "while i <= n:") in pairs
    assert len({m.id for m in mutants}) == len(mutants), "mutant ids are not unique"
    # Ids are stable: they do not depend on the order or on other cells.
    assert [m.id for m in mutation.mutants_of(folder)] == [m.id for m in mutants]


def test_run_kills_by_tests_and_time_limit_and_reports_survivors(tmp_path):
    folder = _toy(tmp_path / "toy")
    summary = _run(folder)
    assert summary["mutants"] == len(mutation.mutants_of(folder))
    # `i -= 1` never ends: killed by the time limit, not left running.
    assert summary["killed_by_time_limit_or_death"] >= 1
    # `i = 1` still counts to n for n >= 1, and no test asks for count_up(0): it survives.
    assert summary["untriaged"] == summary["survivors"] >= 1
    assert any("'i = 0' -> 'i = 1'" in p for p in summary["problems"])
    problems = mutation.check_report(folder)
    assert any("untriaged survivor" in p for p in problems), problems


def test_triage_then_stale_report(tmp_path):
    folder = _toy(tmp_path / "toy")
    _run(folder)
    survivors = [p for p in mutation.read_summary(folder)["problems"] if p.startswith("untriaged survivor")]
    mutants = {m.id: m for m in mutation.mutants_of(folder)}
    entries = []
    for p in survivors:
        m = mutants[p.split()[2].rstrip(":")]
        entries.append(mutation.template(m).replace('killed_by = "test_..."\nhow = "..."\n# or: ', "")
                       .replace('equivalent = "..."', 'equivalent = "a toy reason in words"'))
    (folder / mutation.TRIAGE_NAME).write_text("\n".join(entries))
    summary = _run(folder)
    assert summary["untriaged"] == 0 and summary["equivalent"] == summary["survivors"] >= 1
    assert summary["survivors_before_triage"] == len(entries)
    assert mutation.check_report(folder) == []

    # A test that now kills the survivor: the report is stale, and the equivalent entry is wrong.
    _toy(folder, TEST.replace('assert count_up(3) == 3, "count_up(3)"', 'assert count_up(0) == 0, "count_up(0)"'))
    assert any("the tests changed" in p for p in mutation.check_report(folder))
    summary = _run(folder)
    assert any("triaged as equivalent but a test kills it" in p for p in summary["problems"]), summary["problems"]


def test_reference_that_fails_its_tests_is_refused(tmp_path):
    folder = _toy(tmp_path / "toy", TEST.replace("== 5", "== 6"))
    with pytest.raises(SystemExit, match="reference solution fails"):
        _run(folder)


def test_report_summary_is_machine_readable(tmp_path):
    folder = _toy(tmp_path / "toy")
    _run(folder)
    text = (folder / mutation.REPORT_NAME).read_text()
    block = text.split("<!-- mutation-summary\n", 1)[1].split("\n-->", 1)[0]
    summary = json.loads(block)
    assert summary["tool"].startswith("mutmut ")
    assert summary == mutation.read_summary(folder)
    assert set(mutation.fingerprints(folder)) <= set(summary)


def test_malformed_triage_is_refused(tmp_path):
    folder = _toy(tmp_path / "toy")
    (folder / mutation.TRIAGE_NAME).write_text(textwrap.dedent("""\
        [[survivor]]
        cell = "count_up"
        function = "count_up"
        line = "i = 0"
        mutant = "i = 1"
        equivalent = "x"
        """))
    with pytest.raises(ValueError, match="in a sentence"):
        mutation.load_triage(folder)
