"""The grader validation harness: real ``nbgrader`` runs on known submissions.

For one assignment of ``solutions/`` it builds a scratch nbgrader course (its own
folder and gradebook, configured by the repository's ``nbgrader_config.py``),
generates the release copy, writes one submission per *variant*, autogrades them
all in one batch with ``nbgrader autograde``, and reads the scores back from the
gradebook. The variants are:

``blank``
    the release notebook as a student receives it (must score 0);
``reference``
    the release notebook with the reference code in every solution cell (full marks);
``warns``
    the reference, with every function it defines wrapped so that each call emits a
    ``UserWarning`` (full marks: correct code that warns keeps its points);
``warns-unguarded``
    the same, graded with the warning filter switched off (must lose points, which
    proves that the ``warns`` variant really wrote warnings inside graded cells);
``mutant--<name>``
    the reference with one cell changed as ``mutants.toml`` says (must lose points).

``tests/test_graders.py`` turns this into tests; ``tools/release.py`` uses the same
course set-up to regenerate ``exercises/``.
"""

from __future__ import annotations

import ast
import copy
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO / "solutions"
EXERCISES = REPO / "exercises"
CONFIG = REPO / "nbgrader_config.py"

BLANK, REFERENCE, WARNS, WARNS_UNGUARDED = "blank", "reference", "warns", "warns-unguarded"
MUTANT_PREFIX = "mutant--"

_SOLUTION_MARKER = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.MULTILINE)


# --------------------------------------------------------------------------- discovery


def assignments(solutions: Path = SOLUTIONS) -> list[str]:
    """Names of the assignments: the folders of ``solutions/`` that hold a notebook."""
    if not solutions.is_dir():
        return []
    return sorted(p.name for p in solutions.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def source_notebooks(assignment: str, solutions: Path = SOLUTIONS) -> list[Path]:
    return sorted((solutions / assignment).glob("*.ipynb"))


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_solution_cell(cell) -> bool:
    return bool(nbgrader_meta(cell).get("solution"))


def is_test_cell(cell) -> bool:
    meta = nbgrader_meta(cell)
    return bool(meta.get("grade")) and not meta.get("solution") and cell.cell_type == "code"


def reference_code(source: str) -> str:
    """A solution cell's code as a student would write it: without the solution markers."""
    return _SOLUTION_MARKER.sub("", source)


def reference_codes(source_notebook: Path) -> dict[str, str]:
    """The reference code of each solution cell of a source notebook, by grade id."""
    nb = nbformat.read(source_notebook, as_version=4)
    return {nbgrader_meta(c)["grade_id"]: reference_code(c.source) for c in nb.cells if is_solution_cell(c)}


# --------------------------------------------------------------------------- mutants


@dataclass
class Mutant:
    """A known-wrong implementation of one graded function."""

    name: str
    cell: str
    why: str
    notebook: str | None = None
    replace: list[tuple[str, str]] = field(default_factory=list)
    code: str | None = None

    def apply(self, reference: str) -> str:
        """The mutated code of the cell, from the cell's reference code."""
        if self.code is not None:
            return self.code
        out = reference
        for old, new in self.replace:
            count = out.count(old)
            if count != 1:
                raise ValueError(
                    f"mutant {self.name!r}: {old!r} occurs {count} times in cell {self.cell!r} "
                    "(it must occur exactly once): update mutants.toml to the current solution"
                )
            out = out.replace(old, new)
        return out


def load_mutants(assignment: str, solutions: Path = SOLUTIONS) -> list[Mutant]:
    """The mutant catalogue ``solutions/<assignment>/mutants.toml``, validated."""
    path = solutions / assignment / "mutants.toml"
    if not path.exists():
        return []
    with path.open("rb") as f:
        data = tomllib.load(f)
    unknown_top = set(data) - {"mutant"}
    if unknown_top:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown_top)}; use [[mutant]] tables")
    mutants = []
    for i, entry in enumerate(data.get("mutant", [])):
        where = f"{path}, mutant #{i + 1}"
        unknown = set(entry) - {"name", "cell", "why", "notebook", "replace", "code"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        for key in ("name", "cell", "why"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ValueError(f"{where}: {key!r} must be a non-empty string")
        if ("replace" in entry) == ("code" in entry):
            raise ValueError(f"{where} ({entry['name']}): give exactly one of 'replace' or 'code'")
        replace = entry.get("replace", [])
        if "replace" in entry and (
            not replace or not all(isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in replace)
        ):
            raise ValueError(f"{where} ({entry['name']}): 'replace' must be a list of [old, new] string pairs")
        mutants.append(
            Mutant(
                name=entry["name"],
                cell=entry["cell"],
                why=entry["why"],
                notebook=entry.get("notebook"),
                replace=[tuple(p) for p in replace],
                code=entry.get("code"),
            )
        )
    names = [m.name for m in mutants]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{path}: duplicated mutant names {duplicates}")
    return mutants


# --------------------------------------------------------------------------- a scratch course


def make_course(root: Path, assignment: str, solutions: Path = SOLUTIONS) -> Path:
    """A scratch nbgrader course in ``root`` with a copy of one assignment's source (from
    ``solutions``: the course's, or a fixture folder of the tests).

    Its ``nbgrader_config.py`` loads the repository's configuration and only moves
    the course root, so the harness grades exactly as an instructor would.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(solutions / assignment, root / "solutions" / assignment, dirs_exist_ok=True)
    (root / "nbgrader_config.py").write_text(
        "# Written by tools/harness.py: the course's configuration, with this folder as the root.\n"
        "c = get_config()  # noqa: F821\n"
        f"load_subconfig('nbgrader_config.py', path={str(REPO)!r})  # noqa: F821\n"
        f"c.CourseDirectory.root = {str(root)!r}\n"
    )
    return root


def nbgrader(course: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run one nbgrader command in a course folder; its log goes to ``course/nbgrader.log``."""
    proc = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    with (course / "nbgrader.log").open("a") as log:
        log.write(f"$ nbgrader {' '.join(args)}  (exit {proc.returncode})\n{proc.stdout}{proc.stderr}\n")
    return proc


def generate_release(course: Path, assignment: str) -> Path:
    """``nbgrader generate_assignment`` in a scratch course; returns the release folder."""
    proc = nbgrader(course, "generate_assignment", assignment, "--force")
    release = course / "exercises" / assignment
    if proc.returncode != 0 or not release.is_dir():
        raise RuntimeError(
            f"nbgrader generate_assignment {assignment} failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return release


# --------------------------------------------------------------------------- submissions


WARNING_WRAPPER = '''

# --- added by the grader harness: every call of these functions emits a warning ---
import functools as _harness_functools
import warnings as _harness_warnings

_harness_warnings.simplefilter("always")


def _harness_warn_when_called(_function):
    @_harness_functools.wraps(_function)
    def _wrapper(*args, **kwargs):
        _harness_warnings.warn(f"{_function.__name__}: a harmless warning from correct code", UserWarning)
        return _function(*args, **kwargs)

    return _wrapper


'''


def with_warnings(code: str) -> str:
    """``code`` followed by wrappers that make every top-level function it defines warn when called."""
    names = [n.name for n in ast.parse(code).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not names:
        return code + '\nimport warnings\nwarnings.warn("a harmless warning from correct code", UserWarning)\n'
    return code + WARNING_WRAPPER + "".join(f"{n} = _harness_warn_when_called({n})\n" for n in names)


def submission(release_nb, codes: dict[str, str]):
    """The release notebook with the solution cells named in ``codes`` filled in."""
    nb = copy.deepcopy(release_nb)
    for cell in nb.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if is_solution_cell(cell) and grade_id in codes:
            cell.source = codes[grade_id]
    return nb


def variant_codes(assignment: str, mutants: list[Mutant],
                  solutions: Path = SOLUTIONS) -> dict[str, dict[str, dict[str, str]]]:
    """For each variant, for each notebook, the code of each solution cell it fills in."""
    refs = {}
    for path in source_notebooks(assignment, solutions):
        refs[path.name] = reference_codes(path)
    variants = {
        BLANK: {name: {} for name in refs},
        REFERENCE: refs,
        WARNS: {name: {gid: with_warnings(code) for gid, code in cells.items()} for name, cells in refs.items()},
    }
    variants[WARNS_UNGUARDED] = variants[WARNS]
    for mutant in mutants:
        notebook = mutant.notebook or (next(iter(refs)) if len(refs) == 1 else None)
        if notebook not in refs:
            raise ValueError(
                f"mutant {mutant.name!r}: name its notebook with notebook = one of {sorted(refs)}"
            )
        if mutant.cell not in refs[notebook]:
            raise ValueError(
                f"mutant {mutant.name!r}: no solution cell {mutant.cell!r} in {notebook} "
                f"(solution cells: {sorted(refs[notebook])})"
            )
        codes = copy.deepcopy(refs)
        codes[notebook][mutant.cell] = mutant.apply(refs[notebook][mutant.cell])
        variants[MUTANT_PREFIX + mutant.name] = codes
    return variants


# --------------------------------------------------------------------------- grading


def course_id() -> str:
    """The course id that the repository's ``nbgrader_config.py`` sets."""
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader(CONFIG.name, path=str(CONFIG.parent)).load_config().CourseDirectory.course_id


@dataclass
class Result:
    """What ``nbgrader autograde`` gave one submission."""

    score: float
    max_score: float
    cells: dict[str, float]  # grade_id of each graded test cell -> points

    def __str__(self) -> str:
        graded = {k: v for k, v in self.cells.items() if v is not None}
        return f"{self.score:g}/{self.max_score:g} points ({', '.join(f'{k}={v:g}' for k, v in graded.items())})"


def read_scores(course: Path, assignment: str, students: list[str]) -> dict[str, Result]:
    from nbgrader.api import Gradebook, MissingEntry

    results = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id()) as gb:
        for student in students:
            try:
                sub = gb.find_submission(assignment, student)
            except MissingEntry:
                continue
            cells = {}
            for nb in sub.notebooks:
                for grade in nb.grades:
                    cells[grade.name] = grade.score
            results[student] = Result(score=sub.score, max_score=sub.max_score, cells=cells)
    return results


def grade_variants(assignment: str, workdir: Path, mutants: list[Mutant] | None = None,
                   solutions: Path = SOLUTIONS) -> dict[str, Result]:
    """Autograde every variant of an assignment in one nbgrader batch; scores by variant name.

    A variant missing from the result was not graded (the batch broke); the log
    is in ``workdir/nbgrader.log``.
    """
    mutants = load_mutants(assignment, solutions) if mutants is None else mutants
    course = make_course(workdir, assignment, solutions)
    release = generate_release(course, assignment)
    variants = variant_codes(assignment, mutants, solutions)

    def submit(student: str) -> None:
        folder = course / "submitted" / student / assignment
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted(release.glob("*.ipynb")):
            nb = submission(nbformat.read(path, as_version=4), variants[student].get(path.name, {}))
            nbformat.write(nb, folder / path.name)

    guarded = [s for s in variants if s != WARNS_UNGUARDED]
    for student in guarded:
        submit(student)
    # One batch for all these variants, the blank first (nbgrader goes in name order):
    # the later ones are graded only if a notebook that fails every test does not stop it.
    nbgrader(course, "autograde", assignment, "--create", "--force")
    submit(WARNS_UNGUARDED)
    nbgrader(
        course,
        "autograde",
        assignment,
        "--create",
        "--force",
        f"--student={WARNS_UNGUARDED}",
        "--IgnorePattern.enabled=False",
    )
    results = read_scores(course, assignment, list(variants))
    missing = [s for s in guarded + [WARNS_UNGUARDED] if s not in results]
    if missing:
        log = (course / "nbgrader.log").read_text()
        raise RuntimeError(f"{assignment}: nbgrader graded no submission for {missing}; log tail:\n{log[-4000:]}")
    return results


def main(argv: list[str] | None = None) -> int:
    """``python tools/harness.py [assignment ...]``: print every variant's score."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignments", nargs="*", help="default: every assignment in solutions/")
    args = parser.parse_args(argv)
    names = args.assignments or assignments()
    unknown = sorted(set(names) - set(assignments()))
    if unknown:
        parser.error(f"unknown assignment(s) {unknown}; the assignments are {assignments()}")
    failed = 0
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"harness-{name}-") as tmp:
            results = grade_variants(name, Path(tmp))
        full = results[REFERENCE].max_score
        print(f"{name}: full marks {full:g}")
        for student, result in results.items():
            expect_full = student in (REFERENCE, WARNS)
            ok = (
                result.score == full
                if expect_full
                else result.score == 0
                if student == BLANK
                else result.score < full
            )
            failed += not ok
            print(f"  {'ok  ' if ok else 'FAIL'} {student:40s} {result}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
