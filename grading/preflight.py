"""Pre-flight: validate and repair one submitted notebook against its release copy, or quarantine it.

nbgrader matches a submission's cells to the release's by grade id. It cannot cope with a
file that is not a notebook, with grade cells that lost their metadata, or with cells that
were deleted or duplicated. :func:`preflight` turns what a student uploaded into a notebook
that nbgrader can grade, or says why it cannot. It runs nothing, and never changes the
source of a solution cell: what is graded is what the student wrote. The stages:

1. read: bytes (size limit), UTF-8 text, JSON; a file cut off part-way keeps its complete
   cells, lone surrogates become ``?``;
2. rebuild: older formats converted to nbformat 4, every cell rebuilt to the schema;
3. match the cells to the release's: by grade id, then cells that lost or changed their
   metadata by position and source (a solution cell by the functions it defines);
4. repair: locked sources, cell types and nbgrader metadata restored, missing cells
   re-inserted after their predecessor, duplicates resolved, the release's kernel set;
5. validate with nbformat.

Every problem is a :class:`~grading.findings.Finding` (``source="preflight"``) whose detail
says what was wrong and what was done. Cells are named by grade id, or ``cell N`` (the N-th
cell of the submitted file, from 1).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.validator import ValidationError, isvalid, normalize
from nbgrader import utils

from grading.findings import Finding
from grading.scan import defined_names

MAX_BYTES = 20 * 1024 * 1024
CELL_FIELDS = {"code": {"id", "cell_type", "metadata", "source", "outputs", "execution_count"},
               "markdown": {"id", "cell_type", "metadata", "source", "attachments"},
               "raw": {"id", "cell_type", "metadata", "source", "attachments"}}
CELL_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
GRADING_FLAGS = ("grade", "solution", "locked", "task", "points", "cell_type")  # they decide how a cell is graded
FILE_SIGNATURES = {b"PK\x03\x04": "a zip archive", b"PK\x05\x06": "an empty zip archive", b"%PDF": "a PDF document",
                   b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"\x1f\x8b": "a gzip archive"}
# a lone surrogate escaped in JSON (no UTF-8 file can hold one); escaped backslashes and pairs are skipped
LONE_SURROGATE = re.compile(r"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|(\\u[dD][89a-fA-F][0-9a-fA-F]{2})")


@dataclass
class PreflightResult:
    notebook: nbformat.NotebookNode | None  # the repaired notebook (v4, valid), or None when quarantined
    findings: list[Finding]  # what was wrong and what was done about it
    quarantine_reason: str | None  # why it cannot be graded, or None


class Quarantine(Exception):
    """A stage found that the submission cannot be graded; ``invalid``: it is no usable notebook."""

    def __init__(self, reason: str, invalid: bool = True):
        super().__init__(reason)
        self.reason, self.invalid = reason, invalid


def preflight(raw: bytes | str | Path, release: nbformat.NotebookNode, *, filename: str | None = None,
              release_name: str | None = None, others: dict[str, nbformat.NotebookNode] | None = None,
              max_bytes: int = MAX_BYTES) -> PreflightResult:
    """Validate and repair a submitted notebook (its bytes, its JSON text, or its path) against ``release``.

    ``filename`` is the name it was submitted under, ``release_name`` the release notebook's (a
    ``renamed-notebook`` finding when they differ); ``others`` (name -> release notebook of other
    assignments) lets the reason for quarantining an unrelated notebook name the one it looks like.
    Bad input never raises; a ``release`` with missing or duplicate grade ids raises ValueError.
    """
    release_cells = [_Cell.of_release(index, cell) for index, cell in enumerate(release.cells)]
    ids = [rc.grade_id for rc in release_cells if rc.nbgrader is not None]
    if not all(isinstance(i, str) for i in ids) or len(set(ids)) < len(ids):
        raise ValueError(f"the release has missing or duplicate grade ids: {ids}")
    findings = []
    if filename is not None and release_name is not None and Path(filename).name != release_name:
        findings.append(_finding("renamed-notebook", "", f"The notebook was submitted as {Path(filename).name!r}; "
                                                         f"it is graded as {release_name!r}."))
    try:
        notebook, numbers = _rebuild(_as_v4(_parse(_read(raw, max_bytes), findings), findings), release, findings)
        _check_related(notebook, release_cells, release_name, others or {})
        notebook.cells = _Matcher(release_cells, notebook.cells, numbers, findings).repair()
        _restore_kernel(notebook, release, findings)
        return PreflightResult(_validated(notebook, findings), findings, None)
    except RecursionError:
        quarantine = Quarantine("The notebook is nested too deeply to be read (a crafted file).")
    except Quarantine as error:
        quarantine = error
    findings += [_invalid(quarantine.reason)] * quarantine.invalid + [_finding("quarantined", "", quarantine.reason)]
    return PreflightResult(None, findings, quarantine.reason)


def _finding(vector: str, cell: str, detail: str) -> Finding:
    return Finding(vector, cell, detail, "preflight")


def _invalid(detail: str) -> Finding:
    return _finding("invalid-notebook", "", detail)


# ---------------------------------------------------------------- bytes, text, JSON


def _read(raw: bytes | str | Path, max_bytes: int) -> bytes:
    if isinstance(raw, Path):
        try:
            size = raw.stat().st_size
            if size > max_bytes:
                raise Quarantine(_too_big(size, max_bytes), invalid=False)
            return raw.read_bytes()
        except OSError as error:
            raise Quarantine(f"The file could not be read ({error.strerror or error}).") from None
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    if not isinstance(raw, bytes):
        raise TypeError(f"preflight() takes bytes, str or Path, not {type(raw).__name__}")
    if len(raw) > max_bytes:
        raise Quarantine(_too_big(len(raw), max_bytes), invalid=False)
    return raw


def _too_big(size: int, max_bytes: int) -> str:
    return (f"The file is {size / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB limit for a notebook (usually "
            "large outputs: images or printed arrays); ask the student to clear the outputs and submit again, or "
            "raise max_bytes.")


def _parse(data: bytes, findings: list[Finding]) -> object:
    """The file's JSON; binary files, other encodings and text that is not JSON are quarantined."""
    for signature, what in FILE_SIGNATURES.items():
        if data.startswith(signature):
            raise Quarantine(f"The file is {what}, not a notebook; ask the student for the .ipynb file.")
    body = data.rstrip(b"\x00")
    if not body.strip():
        what = "empty (0 bytes)" if not data else f"blank ({len(data)} bytes of spaces or NUL bytes)"
        raise Quarantine(f"The file is {what}: there is nothing to grade.")
    if len(body) < len(data):
        findings.append(_invalid(f"The file ends with {len(data) - len(body)} NUL bytes (an interrupted upload or "
                                 "copy); they were removed."))
    if b"\x00" in body:
        raise Quarantine("The file is binary data (it contains NUL bytes), not a notebook.")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise Quarantine(f"The file is not UTF-8 text (invalid byte at offset {error.start}), so it is not a "
                         "notebook that Jupyter wrote.") from None
    lone = [0]

    def replace(match: re.Match) -> str:
        lone[0] += bool(match[1])
        return "?" if match[1] else match[0]

    text = LONE_SURROGATE.sub(replace, text)
    if lone[0]:
        findings.append(_invalid(f"Lone surrogates (characters that no UTF-8 file can hold) were replaced by '?': "
                                 f"{lone[0]}."))
    try:
        return json.loads(text)
    except RecursionError:
        raise Quarantine("The file's JSON is nested too deeply to be read (a crafted file).") from None
    except json.JSONDecodeError as error:
        problem = error
    where = f"line {problem.lineno}, column {problem.colno}"
    if problem.msg == "Extra data":
        findings.append(_invalid(f"The file has extra data after the notebook (from {where}); it was ignored."))
        return json.JSONDecoder().raw_decode(text.lstrip())[0]
    if text.lstrip().startswith("{") and not text.rstrip().endswith("}"):
        cells = _complete_cells(text)
        if not cells:
            raise Quarantine(f"The file is cut off before its first complete cell ({problem.msg} at {where}).")
        findings.append(_invalid(f"The file is cut off ({problem.msg} at {where}): its first {len(cells)} cells "
                                 "were complete and kept; whatever followed is lost."))
        return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 4}
    start = text.lstrip()[:200]
    kind = (": it looks like an HTML or XML page" if start.startswith("<") else
            ": it looks like Python source (perhaps the notebook downloaded as .py)"
            if re.match(r"(#|import |from |def |class |print\()", start) else "")
    raise Quarantine(f"The file is not valid JSON ({problem.msg} at {where}){kind}, so it is not a notebook.")


def _complete_cells(text: str) -> list:
    """The complete cells at the start of a v4 notebook's text that was cut off."""
    start = re.match(r'\s*\{\s*"cells"\s*:\s*\[', text)
    if not start:
        return []
    cells, position, decoder = [], start.end(), json.JSONDecoder()
    while True:
        try:
            cell, position = decoder.raw_decode(text, re.compile(r"\s*").match(text, position).end())
        except json.JSONDecodeError:
            return cells
        cells.append(cell)
        separator = re.compile(r"\s*,").match(text, position)
        if not separator:
            return cells
        position = separator.end()


# ---------------------------------------------------------------- structure


def _as_v4(document: object, findings: list[Finding]) -> dict:
    """The document with the structure of nbformat 4 (versions 1-3 converted by nbformat)."""
    if not isinstance(document, dict):
        kind = {list: "a list", str: "a string"}.get(type(document), "a single value")
        raise Quarantine(f"The file is valid JSON but {kind}, not a notebook (a JSON object with cells).")
    version = document.get("nbformat")
    if "cells" in document:
        if version != 4:
            findings.append(_invalid(f"The notebook says nbformat {version!r} but has the structure of version 4; "
                                     "it was read as 4."))
        return document
    if "worksheets" not in document:
        keys = ", ".join(sorted(map(str, document))[:8]) or "none"
        raise Quarantine(f"The file is a JSON object without cells (its keys: {keys}), not a notebook.")
    version = version if isinstance(version, int) else 3
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            upgraded = nbformat.convert(nbformat.from_dict({"nbformat_minor": 0, **document, "nbformat": version}), 4)
    except Exception as error:  # nbformat's converters assume valid input: any failure means "cannot convert"
        raise Quarantine(f"The notebook is in nbformat {version} and could not be converted to version 4 "
                         f"({type(error).__name__}: {error}).") from None
    findings.append(_invalid(f"The notebook was in the old nbformat {version}; it was converted to version 4."))
    return upgraded


def _rebuild(document: dict, release: nbformat.NotebookNode, findings: list[Finding]):
    """A v4 notebook in the release's minor version, every cell rebuilt to the schema; and, for each
    of its cells, its number in the submitted file. One finding per kind of repair, with its cells."""
    if not isinstance(document.get("cells"), list):
        raise Quarantine("The notebook's cells are not a list, so there is nothing to grade.")
    repairs: dict[str, list[int]] = defaultdict(list)
    minor, taken, cells, numbers = release.nbformat_minor, set(), [], []
    claims_ids = document.get("nbformat") == 4 and type(document.get("nbformat_minor")) is int and (
        document["nbformat_minor"] >= 5)
    for number, raw in enumerate(document["cells"], 1):
        cell = _rebuild_cell(raw, lambda repair, n=number: repairs[repair].append(n))
        if cell is None:
            continue
        if minor >= 5:  # valid and unique cell ids
            cell_id = raw.get("id")
            if isinstance(cell_id, str) and CELL_ID.fullmatch(cell_id) and cell_id not in taken:
                taken.add(cell_id)
            else:
                problem = ("Cells without an id got one" if claims_ids else "") if cell_id is None else (
                    "Duplicate cell ids were replaced" if isinstance(cell_id, str) and CELL_ID.fullmatch(cell_id)
                    else "Cell ids that the format does not allow were replaced")
                if problem:
                    repairs[problem].append(number)
                cell_id = _new_id(f"{number}:{cell['source']}", taken)
            cell["id"] = cell_id
        if "attachments" in cell and not _valid(cell, minor):
            del cell["attachments"]
            repairs["Attachments that the format does not allow were dropped"].append(number)
        if not _valid(cell, minor):
            cell["metadata"] = {key: value for key, value in cell["metadata"].items() if key == "nbgrader"}
            repairs["Cell metadata that the format does not allow was removed (nbgrader metadata kept)"].append(number)
        cells.append(cell)
        numbers.append(number)
    findings += [_invalid(f"{repair} (cell{'s' * (len(ns) > 1)} {', '.join(map(str, ns))}).")
                 for repair, ns in repairs.items()]
    metadata = document.get("metadata")
    if not isinstance(metadata, dict):
        findings.append(_invalid("The notebook had no metadata object; it got an empty one."))
        metadata = {}
    extra = sorted(map(str, set(document) - {"cells", "metadata", "nbformat", "nbformat_minor"}))
    if extra:
        findings.append(_invalid(f"Top-level fields that the format does not allow were removed: {', '.join(extra)}."))
    notebook = nbformat.from_dict({"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": minor})
    return notebook, numbers


def _rebuild_cell(raw: object, note) -> dict | None:
    """A cell with the fields of its type (``note(repair)`` for each repair), or None for a non-cell."""
    if not isinstance(raw, dict):
        note("Cells that were not JSON objects were dropped")
        return None
    kind = raw.get("cell_type")
    if kind not in CELL_FIELDS:
        kind = "code" if "outputs" in raw or "execution_count" in raw else "markdown"
        note(f"Cells with a missing or unknown cell_type became {kind} cells")
    metadata = raw.get("metadata")
    if not isinstance(metadata, dict):
        note("Cells without a metadata object got an empty one")
        metadata = {}
    nbgrader = metadata.get("nbgrader", {})
    if not isinstance(nbgrader, dict) or not isinstance(nbgrader.get("grade_id", ""), str):
        note("nbgrader metadata that was not an object with a text grade id was removed")
        metadata = {key: value for key, value in metadata.items() if key != "nbgrader"}
    source = raw.get("source")
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        source = "".join(source)
    elif not isinstance(source, str):
        note("Cell sources that were missing or not text were replaced by their text parts")
        source = "".join(line for line in source if isinstance(line, str)) if isinstance(source, list) else ""
    cell = {"cell_type": kind, "metadata": copy.deepcopy(metadata), "source": source}
    if kind == "code":
        outputs, count = raw.get("outputs"), raw.get("execution_count")
        if not isinstance(outputs, list):
            note("Code cells without an outputs list got an empty one")
            outputs = []
        cell["outputs"] = copy.deepcopy([o for o in outputs if isvalid(o, ref="output", version=4, version_minor=5)])
        if len(cell["outputs"]) < len(outputs):
            note("Outputs that the format does not allow were dropped (autograding clears outputs anyway)")
        if "execution_count" not in raw:
            note("Code cells without an execution_count got an empty one")
        elif count is not None and not (type(count) is int and count >= 0):
            note("Execution counts that were not counts were cleared")
            count = None
        cell["execution_count"] = count
    elif "attachments" in raw:
        cell["attachments"] = copy.deepcopy(raw["attachments"])
    if set(raw) - CELL_FIELDS[kind] - {"cell_type"}:
        note("Fields that the format does not allow in such a cell were removed")
    return cell


def _valid(cell: dict, minor: int) -> bool:
    return isvalid(cell, ref=f"{cell['cell_type']}_cell", version=4, version_minor=minor)


def _new_id(seed: str, taken: set[str]) -> str:
    """A cell id derived from ``seed`` (so that repairs are reproducible), not in ``taken``; it is added."""
    counter = 0
    while (cell_id := hashlib.sha1(f"{seed}#{counter}".encode()).hexdigest()[:8]) in taken:
        counter += 1
    taken.add(cell_id)
    return cell_id


# ---------------------------------------------------------------- matching and repairing the grade cells


def _key(source: str) -> str:
    """A cell's source for comparisons: no trailing blanks on lines, none around the whole."""
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


@dataclass(eq=False)
class _Cell:
    """A cell of the release or the submission, with what matching needs to know and decided."""

    cell: nbformat.NotebookNode
    position: int  # its index among the release's cells, or the rebuilt submission's
    number: int  # its place in the submitted file, from 1 (for findings)
    key: str
    names: frozenset[str]  # the names its top level defines (a release cell: only a solution's)
    match: _Cell | None = None  # the release cell a submission's cell was matched to
    how: str = ""  # "id", "renamed" (another grade id), "stripped" (no nbgrader metadata) or "landmark"
    why: str = ""  # how the match was recognised
    dropped: bool = False

    @classmethod
    def of_release(cls, index: int, cell) -> _Cell:
        names = frozenset(defined_names(cell.source)) if utils.is_solution(cell) else frozenset()
        return cls(cell, index, index + 1, _key(cell.source), names)

    @property
    def nbgrader(self) -> dict | None:
        return self.cell.metadata.get("nbgrader")

    @property
    def grade_id(self) -> str | None:
        return (self.nbgrader or {}).get("grade_id")

    @property
    def is_solution(self) -> bool:
        return bool(utils.is_solution(self.cell))

    @property
    def restores_source(self) -> bool:
        """Locked cells (tests, instructor code, text): the release's source is what counts."""
        return bool(utils.is_locked(self.cell))

    @property
    def kind(self) -> str:
        return ("solution cell" if self.is_solution else "test cell" if utils.is_grade(self.cell) else
                "locked cell" if self.restores_source else "cell")

    def label(self) -> str:
        return f"{self.kind.capitalize()} {self.grade_id!r}"


def _check_related(notebook, release_cells: list[_Cell], release_name: str | None, others: dict) -> None:
    """Quarantine a notebook with nothing in common with the release (another assignment's, say)."""
    if not notebook.cells:
        raise Quarantine("The notebook has no cells: there is nothing to grade.", invalid=False)
    if _resembles(notebook.cells, release_cells):
        return
    release = f"the release notebook {release_name!r}" if release_name else "the release notebook"
    reason = f"The notebook shares no grade cell and no cell content with {release}"
    alike = [name for name, other in others.items()
             if _resembles(notebook.cells, [_Cell.of_release(i, c) for i, c in enumerate(other.cells)])]
    headings = [cell.source.strip() for cell in notebook.cells if cell.cell_type == "markdown" and cell.source.strip()]
    if alike:
        reason += f"; it looks like {', '.join(alike)}"
    elif headings:
        reason += f"; its first heading is {headings[0].splitlines()[0].lstrip('# ')[:80]!r}"
    raise Quarantine(reason + ": ask the student for the right notebook.", invalid=False)


def _resembles(cells: list, release_cells: list[_Cell]) -> bool:
    """Whether some cell has a release cell's source or defines a solution's functions (grade ids of
    locked cells are not enough: every assignment may have a ``setup`` cell)."""
    keys = {rc.key for rc in release_cells if rc.key}
    solutions = [rc.names for rc in release_cells if rc.names]
    for cell in cells:
        defined = frozenset(defined_names(cell.source)) if cell.cell_type == "code" else frozenset()
        if _key(cell.source) in keys or any(names <= defined for names in solutions):
            return True
    return False


class _Matcher:
    """Matches a submission's cells to the release's and repairs the grade cells.

    Cells that claim a release grade id are trusted (never reordered); the others are aligned,
    in order, with the release cells that no cell claimed, between the claimed ones. Release
    grade cells left without a cell are re-inserted.
    """

    def __init__(self, release: list[_Cell], cells: list, numbers: list[int], findings: list[Finding]):
        self.release, self.grade = release, [rc for rc in release if rc.nbgrader is not None]
        self.student = [_Cell(cell, position, number, _key(cell.source), frozenset(defined_names(cell.source)))
                        for position, (number, cell) in enumerate(zip(numbers, cells, strict=True))]
        self.findings = findings
        self.inserted: dict[int, list] = defaultdict(list)  # submission position (-1: the top) -> cells after it
        self.inserted_at: dict[int, int] = {}  # release position -> the submission position it was inserted after
        self.taken_ids = {cell.get("id") for cell in cells}

    def repair(self) -> list:
        """The repaired cells, in the submission's order, with re-inserted cells in place."""
        self.match_by_grade_id()
        self.match_by_content()
        self.match_definitions()
        self.insert_missing()
        self.restore_matched()
        self.settle_unmatched()
        cells = list(self.inserted[-1])
        for sc in self.student:
            cells += ([] if sc.dropped else [sc.cell]) + self.inserted[sc.position]
        return cells

    def add(self, vector: str, cell: str, detail: str) -> None:
        self.findings.append(_finding(vector, cell, detail))

    def positions(self) -> dict[int, int]:
        """Release position -> the position of the submission's cell matched to it."""
        return {sc.match.position: sc.position for sc in self.student if sc.match}

    def defining(self, rc: _Cell) -> list[_Cell]:
        """The submission's code cells that define all of a solution's functions."""
        return [sc for sc in self.student if not sc.dropped and sc.cell.cell_type == "code" and rc.names
                and rc.names <= sc.names]

    def belongs_to_another(self, sc: _Cell, rc: _Cell) -> bool:
        """Whether ``sc``, unlike ``rc``, holds another release cell's source or defines another
        solution's functions (a solution written into a test cell): it is never taken for ``rc``,
        since restoring ``rc``'s source would lose that code."""
        if sc.key == rc.key or (rc.names and rc.names <= sc.names):
            return False
        return any(other is not rc and ((other.key and other.key == sc.key) or (other.names and other.names <= sc.names))
                   for other in self.grade)

    # -- matching

    def match_by_grade_id(self) -> None:
        """Cells with a release grade id; of several copies, one keeps it (a solution: the last that
        defines its functions, the definition that ran last; else the first after its predecessor)."""
        by_id = {rc.grade_id: rc for rc in self.grade}
        copies: dict[str, list[_Cell]] = defaultdict(list)
        for sc in self.student:
            rc = by_id.get(sc.grade_id)
            if rc and not self.belongs_to_another(sc, rc):
                copies[rc.grade_id].append(sc)
        for rc in self.grade:
            found = copies.get(rc.grade_id, [])
            if not found:
                continue
            if rc.is_solution:
                keep = ([sc for sc in found if rc.names <= sc.names] or found)[-1]
            else:
                positions = self.positions()
                anchors = [positions[e.position] for e in self.release[:rc.position] if e.position in positions]
                keep = ([sc for sc in found if anchors and sc.position > anchors[-1]] or found)[0]
            keep.match, keep.how, keep.why = rc, "id", "its grade id"
            if len(found) > 1:
                self.resolve_duplicates(rc, found, keep)

    def resolve_duplicates(self, rc: _Cell, found: list[_Cell], keep: _Cell) -> None:
        for sc in found:
            if sc is not keep and rc.is_solution:
                del sc.cell.metadata["nbgrader"]
            elif sc is not keep:
                sc.dropped = True
        what = (f"cell {keep.number}, the last copy that defines {', '.join(sorted(rc.names)) or 'it'} (the definition "
                "that ran last), keeps the nbgrader metadata; the other copies stay as plain code cells"
                if rc.is_solution else f"cell {keep.number} was kept and the other copies were dropped")
        cells = ", ".join(str(sc.number) for sc in found)
        self.add("test-cell-duplicated", rc.grade_id, f"{rc.label()} appears {len(found)} times (cells {cells}); {what}.")

    def match_by_content(self) -> None:
        """Align the unmatched release cells with the unmatched cells between the matched ones: the
        same source, or, for a solution cell, the functions it defines. (A cell that matches nothing
        stays the student's; a grade cell without a match is re-inserted.)"""
        positions, run, low = self.positions(), [], -1
        for rc in [*self.release, None]:  # runs of release cells without a match, between matched neighbours
            if rc is not None and rc.position not in positions:
                run.append(rc)
                continue
            high = positions[rc.position] if rc is not None else len(self.student)
            candidates = [sc for sc in self.student[low + 1:high] if not sc.match and not sc.dropped]
            for paired, sc in _align(run, candidates, [[self.score(r, s) for s in candidates] for r in run]):
                sc.match = paired
                sc.how = "landmark" if paired.nbgrader is None else "renamed" if sc.nbgrader else "stripped"
                sc.why = ("its position and source (the release's)" if paired.key == sc.key else
                          f"its position and the functions it defines ({', '.join(sorted(paired.names))})")
            run, low = [], high

    def score(self, rc: _Cell, sc: _Cell) -> float | None:
        """How well a cell without a claimed grade id matches a release cell (None: not at all); a cell
        that kept nbgrader metadata of the same kind (a renamed grade id) scores higher. Release cells
        without nbgrader metadata only serve as landmarks."""
        renamed = sc.nbgrader is not None
        if rc.nbgrader is None:
            return 0.5 if not renamed and sc.cell.cell_type == rc.cell.cell_type and rc.key == sc.key else None
        same_kind = renamed and all(sc.nbgrader.get(f) == rc.nbgrader.get(f) for f in ("grade", "solution"))
        if (rc.is_solution and sc.cell.cell_type != "code" and not same_kind) or self.belongs_to_another(sc, rc):
            return None
        if rc.key == sc.key or (rc.names and rc.names <= sc.names):
            return 2.0 if same_kind else 1.0
        return None

    def match_definitions(self) -> None:
        """A solution cell still unmatched: the last cell anywhere that defines its functions."""
        for rc in self.grade:
            if rc.names and rc.position not in self.positions():
                defining = [sc for sc in self.defining(rc) if not sc.match or sc.how == "landmark"]
                if defining:
                    sc = defining[-1]
                    sc.match, sc.how, sc.why = rc, "stripped", f"the functions it defines ({', '.join(sorted(rc.names))})"

    # -- repairs

    def insert_missing(self) -> None:
        """Re-insert the release grade cells without a match, after the cell matching their predecessor."""
        positions = self.positions()
        for rc in self.grade:
            if rc.position in positions:
                continue
            holders = self.defining(rc)
            if holders:
                self.add("solution-cell-missing", rc.grade_id,
                         f"Solution cell {rc.grade_id!r} is missing, but its functions are defined in cell "
                         f"{holders[-1].number}; no unanswered copy was inserted, so that definition is graded.")
                continue
            anchor, where = self.anchor(rc, positions)
            cell = copy.deepcopy(rc.cell)
            if "id" in cell:
                cell.id = _new_id(f"release:{rc.grade_id}", self.taken_ids) if cell.id in self.taken_ids else cell.id
                self.taken_ids.add(cell.id)
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
            self.inserted[anchor].append(cell)
            self.inserted_at[rc.position] = anchor
            if rc.is_solution:
                self.add("solution-cell-missing", rc.grade_id, f"Solution cell {rc.grade_id!r} is missing; the "
                                                               f"release's unanswered cell was inserted {where}.")
            else:
                self.add("test-cell-deleted", rc.grade_id, f"{rc.label()} was deleted; the release's cell was "
                                                           f"re-inserted {where}.")

    def anchor(self, rc: _Cell, positions: dict[int, int]) -> tuple[int, str]:
        """Where to re-insert ``rc``: right after the nearest preceding release cell that is there
        (matched, or re-inserted itself); the position (-1: the top) and those words."""
        for earlier in reversed(self.release[:rc.position]):
            if earlier.position in self.inserted_at:
                return self.inserted_at[earlier.position], f"after the re-inserted cell {earlier.grade_id!r}"
            if earlier.position in positions:
                name = repr(earlier.grade_id) if earlier.grade_id else str(earlier.number)
                sc = self.student[positions[earlier.position]]
                return sc.position, f"after cell {sc.number} (which matches release cell {name})"
        return -1, "at the top of the notebook"

    def restore_matched(self) -> None:
        """Matched grade cells get the release's nbgrader metadata, cell type and (locked) source."""
        for sc in self.student:
            rc = sc.match
            if rc is None or rc.nbgrader is None:
                continue
            if sc.how == "renamed":
                self.add("grade-id-renamed", rc.grade_id, f"{rc.label()} (cell {sc.number}) had {_id_words(sc.nbgrader)}; "
                                                          f"it was recognised by {sc.why} and the release's id was restored.")
            elif sc.how == "stripped":
                self.add("metadata-stripped", rc.grade_id, f"{rc.label()} (cell {sc.number}) had no nbgrader metadata; "
                                                           f"it was recognised by {sc.why} and its metadata was restored.")
            else:
                changed = [f"{flag} {rc.nbgrader.get(flag)!r} -> {sc.nbgrader.get(flag)!r}" for flag in GRADING_FLAGS
                           if sc.nbgrader.get(flag) != rc.nbgrader.get(flag)]
                if changed:
                    label = rc.label()
                    self.add("test-cell-edited", rc.grade_id, f"The nbgrader metadata of {label[0].lower()}{label[1:]} "
                                                              f"was changed ({', '.join(changed)}); the release's was restored.")
            if sc.cell.cell_type != rc.cell.cell_type:
                was, sc.cell.cell_type = sc.cell.cell_type, rc.cell.cell_type
                for field in set(sc.cell) - CELL_FIELDS[rc.cell.cell_type]:
                    del sc.cell[field]
                if rc.cell.cell_type == "code":
                    sc.cell.outputs, sc.cell.execution_count = [], None
                kept = "the release's source" if rc.restores_source else "its source kept"
                self.add("test-cell-markdown", rc.grade_id, f"{rc.label()} (cell {sc.number}) had been turned into a "
                                                            f"{was} cell; it is a {rc.cell.cell_type} cell again, with {kept}.")
            elif rc.restores_source and sc.key != rc.key:
                diff = list(difflib.ndiff(rc.cell.source.splitlines(), sc.cell.source.splitlines()))
                added, removed = sum(d.startswith("+ ") for d in diff), sum(d.startswith("- ") for d in diff)
                self.add("test-cell-edited", rc.grade_id, f"{rc.label()} (cell {sc.number}) was edited ({added} line"
                                                          f"{'s' * (added != 1)} added, {removed} removed); the "
                                                          "release's source was restored.")
            if rc.restores_source:
                sc.cell.source = rc.cell.source
            sc.cell.metadata["nbgrader"] = copy.deepcopy(rc.nbgrader)

    def settle_unmatched(self) -> None:
        """Cells the student added: copies of locked cells are dropped, stray nbgrader metadata removed."""
        present = set(self.positions()) | set(self.inserted_at)
        originals = {rc.key: rc for rc in self.grade if rc.restores_source and rc.key and rc.position in present}
        by_id = {rc.grade_id: rc for rc in self.grade}
        for sc in self.student:
            if sc.dropped or (sc.match and sc.how != "landmark"):
                continue
            original, stray = originals.get(sc.key), sc.grade_id
            if original:
                sc.dropped = True
                under = f" under the grade id {stray!r}" if stray else ""
                self.add("test-cell-duplicated", original.grade_id, f"Cell {sc.number} is a copy of {original.kind} "
                                                                    f"{original.grade_id!r}{under}; the copy was dropped.")
            elif sc.nbgrader is not None:
                if stray in by_id:
                    self.add("test-cell-edited", stray, f"Cell {sc.number} has the grade id of {by_id[stray].kind} "
                                                        f"{stray!r} but holds the student's own code; its nbgrader "
                                                        "metadata was removed and its code kept as the student's.")
                else:
                    self.add("grade-id-renamed", f"cell {sc.number}", f"Cell {sc.number} had {_id_words(sc.nbgrader)}, "
                                                                      "which the release does not have, and matches no "
                                                                      "release cell; the metadata was removed and the "
                                                                      "cell kept as the student's own.")
                del sc.cell.metadata["nbgrader"]


def _id_words(nbgrader: dict) -> str:
    grade_id = nbgrader.get("grade_id")
    return f"the grade id {grade_id!r}" if grade_id else "nbgrader metadata without a grade id"


def _align(release_run: list[_Cell], candidates: list[_Cell], scores: list[list]) -> list[tuple[_Cell, _Cell]]:
    """The order-preserving pairing of release cells with candidates of highest total score
    (``scores[i][j]``; None: they cannot pair). Among equally good pairings, a test or locked cell
    takes its first candidate and a solution cell its last (the definition that ran last)."""
    n, m = len(release_run), len(candidates)
    best = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in reversed(range(n)):
        for j in reversed(range(m)):
            take = scores[i][j] + best[i + 1][j + 1] if scores[i][j] is not None else -math.inf
            best[i][j] = max(best[i + 1][j], best[i][j + 1], take)
    pairs, i, j = [], 0, 0
    while i < n and j < m:
        takes = scores[i][j] is not None and math.isclose(best[i][j], scores[i][j] + best[i + 1][j + 1])
        later_is_as_good = math.isclose(best[i][j], best[i][j + 1])
        if takes and not (release_run[i].is_solution and later_is_as_good):
            pairs.append((release_run[i], candidates[j]))
            i, j = i + 1, j + 1
        elif later_is_as_good:
            j += 1
        else:
            i += 1
    return pairs


# ---------------------------------------------------------------- kernel, validation


def _restore_kernel(notebook, release, findings: list[Finding]) -> None:
    """The release's kernelspec and language_info; a different or missing one is reported."""
    for key in ("kernelspec", "language_info"):
        wanted = release.metadata.get(key)
        if wanted is None:
            continue
        found = notebook.metadata.get(key)
        if not isinstance(found, dict) or found.get("name") != wanted.get("name"):
            was = f"was {found.get('name')!r}" if isinstance(found, dict) else "was missing"
            findings.append(_finding("wrong-kernel", "", f"The notebook's {key} {was}; it was set to the release's "
                                                         f"({wanted.get('name')!r})."))
        notebook.metadata[key] = copy.deepcopy(wanted)


def _validated(notebook, findings: list[Finding]) -> nbformat.NotebookNode:
    """The notebook, valid for nbformat: metadata the schema rejects is stripped, else quarantine."""
    try:
        nbformat.validate(notebook)
        return notebook
    except ValidationError:
        stripped = nbformat.from_dict(normalize(notebook, strip_invalid_metadata=True)[1])
    try:
        nbformat.validate(stripped)
    except ValidationError as error:
        raise Quarantine(f"The notebook could not be repaired into a valid notebook ({error.message}).") from None
    findings.append(_invalid("Notebook metadata that the format does not allow was removed."))
    return stripped
