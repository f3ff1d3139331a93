"""Pre-flight: validate and repair one submitted notebook against its release copy.

nbgrader grades a submission by matching its cells to the release's by grade id
(``OverwriteCells`` restores locked sources, ``CheckCellMetadata`` rejects broken
metadata). It cannot cope with a file that is not a notebook, with grade cells that
lost their metadata, or with cells that were deleted or duplicated. :func:`preflight`
turns what a student uploaded into a notebook that nbgrader can grade, or says why it
cannot (quarantine). It executes nothing, and it never changes the source of a solution
cell: what is graded is what the student wrote.

The stages, in order:

1. read the bytes (size limit), decode them (UTF-8) and parse the JSON; a file cut off
   part-way keeps its complete cells;
2. convert older formats to nbformat 4 and rebuild every cell in the v4 schema (missing
   fields added, invalid outputs dropped, cell ids repaired);
3. match the submission's cells to the release's: by grade id first, then, for cells
   that lost or changed their nbgrader metadata, by position and source (for solution
   cells, the functions they define);
4. repair: restore the sources of locked and test cells, cell types and nbgrader
   metadata; re-insert missing cells after the cell that precedes them in the release;
   resolve duplicates; remove nbgrader metadata from cells the student added; set the
   kernel to the release's;
5. validate the result with nbformat.

Every problem becomes a :class:`~grading.findings.Finding` (``source="preflight"``) whose
detail tells the instructor what was wrong and what was done. Cells are named by grade
id, or ``cell N`` (the N-th cell of the submitted notebook, counted from 1).
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

from grading.findings import Finding
from grading.scan import defined_names
from grading.wire import clean_text

MAX_BYTES = 20 * 1024 * 1024


CELL_TYPES = ("code", "markdown", "raw")
CELL_FIELDS = {
    "code": {"id", "cell_type", "metadata", "source", "outputs", "execution_count"},
    "markdown": {"id", "cell_type", "metadata", "source", "attachments"},
    "raw": {"id", "cell_type", "metadata", "source", "attachments"},
}
NOTEBOOK_FIELDS = {"cells", "metadata", "nbformat", "nbformat_minor"}
CELL_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
# the nbgrader fields that decide how a cell is graded
GRADING_FLAGS = ("grade", "solution", "locked", "task", "points", "cell_type")
FILE_SIGNATURES = {
    b"PK\x03\x04": "a zip archive",
    b"PK\x05\x06": "an empty zip archive",
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"\x1f\x8b": "a gzip archive",
}


@dataclass
class PreflightResult:
    """What :func:`preflight` made of a submission."""

    notebook: nbformat.NotebookNode | None  # the repaired notebook (v4, valid), or None if quarantined
    findings: list[Finding]  # what was wrong and what was done about it
    quarantine_reason: str | None  # a sentence saying why it cannot be graded, or None


def preflight(
    raw: bytes | str | Path,
    release: nbformat.NotebookNode,
    *,
    filename: str | None = None,
    release_name: str | None = None,
    others: dict[str, nbformat.NotebookNode] | None = None,
    max_bytes: int = MAX_BYTES,
) -> PreflightResult:
    """Validate and repair a submitted notebook against ``release``, or quarantine it.

    ``raw`` is the file's bytes, its text (a ``str`` is the notebook's JSON text, not a
    path) or its path. ``filename`` is the name it was submitted under and
    ``release_name`` the release notebook's; when they differ, a ``renamed-notebook``
    finding says so. ``others`` (name -> release notebook of other assignments) lets the
    reason for quarantining an unrelated notebook name the notebook it looks like.

    Bad input never raises: it becomes findings or a quarantine. A ``release`` that is
    not a release notebook (cells without grade ids, duplicate grade ids) raises
    ``ValueError``.
    """
    release_cells = _release_cells(release)
    findings: list[Finding] = []
    if filename is not None and release_name is not None and Path(filename).name != release_name:
        findings.append(
            _finding(
                "renamed-notebook",
                "",
                f"The notebook was submitted as {Path(filename).name!r}; it is graded as {release_name!r}.",
            )
        )
    try:
        document = _clean_text(_parse_json(_decode(_read(raw, max_bytes), findings), findings), findings)
        notebook, numbers = _rebuild(_as_v4(document, findings), release, findings)
        _check_related(notebook, release_cells, release_name, others or {})
        notebook.cells = _GradeCells(release_cells, notebook.cells, numbers, findings).repair()
        _restore_kernel(notebook, release, findings)
        notebook = _validated(notebook, findings)
    except RecursionError:
        quarantine = _Quarantine("The notebook is nested too deeply to be read (a crafted file).")
    except _Quarantine as error:
        quarantine = error
    else:
        return PreflightResult(notebook, findings, None)
    if quarantine.invalid:
        findings.append(_finding("invalid-notebook", "", quarantine.reason))
    findings.append(_finding("quarantined", "", quarantine.reason))
    return PreflightResult(None, findings, quarantine.reason)


class _Quarantine(Exception):
    """Raised by a stage when the submission cannot be graded."""

    def __init__(self, reason: str, *, invalid: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.invalid = invalid  # the file is not a usable notebook (as opposed to: the wrong one)


def _finding(vector: str, cell: str, detail: str) -> Finding:
    return Finding(vector, cell, detail, source="preflight")


def _invalid(detail: str) -> Finding:
    return _finding("invalid-notebook", "", detail)


# ---------------------------------------------------------------- bytes, text, JSON


def _read(raw: bytes | str | Path, max_bytes: int) -> bytes:
    """The submission's bytes, within the size limit."""
    if isinstance(raw, Path):
        try:
            size = raw.stat().st_size
            if size > max_bytes:
                raise _Quarantine(_too_big(size, max_bytes), invalid=False)
            return raw.read_bytes()
        except OSError as error:
            raise _Quarantine(f"The file could not be read ({error.strerror or error}).") from None
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    if not isinstance(raw, bytes):
        raise TypeError(f"preflight() takes bytes, str or Path, not {type(raw).__name__}")
    if len(raw) > max_bytes:
        raise _Quarantine(_too_big(len(raw), max_bytes), invalid=False)
    return raw


def _too_big(size: int, max_bytes: int) -> str:
    return (
        f"The file is {size / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB limit for a notebook "
        "(usually large outputs: images or printed arrays); ask the student to clear the outputs "
        "and submit again, or raise max_bytes."
    )


def _decode(data: bytes, findings: list[Finding]) -> str:
    """The submission's text; binary files, empty files and other encodings are quarantined."""
    for signature, what in FILE_SIGNATURES.items():
        if data.startswith(signature):
            raise _Quarantine(f"The file is {what}, not a notebook; ask the student for the .ipynb file.")
    body = data.rstrip(b"\x00")
    if not body.strip():
        what = "empty (0 bytes)" if not data else f"blank ({len(data)} bytes of spaces or NUL bytes)"
        raise _Quarantine(f"The file is {what}: there is nothing to grade.")
    if len(body) < len(data):
        findings.append(
            _invalid(
                f"The file ends with {len(data) - len(body)} NUL bytes (an interrupted upload or copy); "
                "they were removed."
            )
        )
    if b"\x00" in body:
        raise _Quarantine("The file is binary data (it contains NUL bytes), not a notebook.")
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _Quarantine(
            f"The file is not UTF-8 text (invalid byte at offset {error.start}), so it is not a notebook "
            "that Jupyter wrote."
        ) from None


def _parse_json(text: str, findings: list[Finding]) -> object:
    """The parsed JSON; extra data after it is ignored and a cut-off notebook keeps its complete cells."""
    try:
        return json.loads(text)
    except RecursionError:
        raise _Quarantine("The file's JSON is nested too deeply to be read (a crafted file).") from None
    except json.JSONDecodeError as error:
        problem = error
    where = f"line {problem.lineno}, column {problem.colno}"
    if problem.msg == "Extra data":
        findings.append(_invalid(f"The file has extra data after the notebook (from {where}); it was ignored."))
        return json.JSONDecoder().raw_decode(text.lstrip())[0]
    if text.lstrip().startswith("{") and not text.rstrip().endswith("}"):
        cells = _complete_cells(text)
        if cells:
            findings.append(
                _invalid(
                    f"The file is cut off ({problem.msg} at {where}): its first {len(cells)} cells were "
                    "complete and kept; whatever followed is lost."
                )
            )
            return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 4}
        raise _Quarantine(f"The file is cut off before its first complete cell ({problem.msg} at {where}).")
    raise _Quarantine(
        f"The file is not valid JSON ({problem.msg} at {where}){_text_kind(text)}, so it is not a notebook."
    )


def _clean_text(document: object, findings: list[Finding]) -> object:
    """The document with each lone surrogate (a JSON escape that no UTF-8 file can hold) replaced by
    ``?``, in every string and key; one finding when there were any."""
    replaced = 0
    stack = [document]
    while stack:
        item = stack.pop()
        entries = list(item.items()) if isinstance(item, dict) else list(enumerate(item)) if isinstance(
            item, list) else []
        for key, value in entries:
            if isinstance(value, str) and clean_text(value) != value:
                item[key], replaced = clean_text(value), replaced + 1
            elif isinstance(value, (dict, list)):
                stack.append(value)
            if isinstance(key, str) and clean_text(key) != key:
                item[clean_text(key)] = item.pop(key)
                replaced += 1
    if replaced:
        findings.append(_invalid(f"{replaced} texts held lone surrogates (characters no UTF-8 file can hold); "
                                 "each was replaced by '?'."))
    return document


def _complete_cells(text: str) -> list:
    """The complete cells at the start of a v4 notebook's text that was cut off."""
    start = re.match(r'\s*\{\s*"cells"\s*:\s*\[', text)
    if not start:
        return []
    decoder, cells, position = json.JSONDecoder(), [], start.end()
    while True:
        position = re.compile(r"\s*").match(text, position).end()
        try:
            cell, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return cells
        cells.append(cell)
        separator = re.compile(r"\s*,").match(text, position)
        if not separator:
            return cells
        position = separator.end()


def _text_kind(text: str) -> str:
    """What a text that is not JSON looks like, as words to add to the reason."""
    start = text.lstrip()[:200]
    if start.startswith("<"):
        return ": it looks like an HTML or XML page"
    if re.match(r"(#|import |from |def |class |print\()", start):
        return ": it looks like Python source (perhaps the notebook downloaded as .py)"
    return ""


# ---------------------------------------------------------------- structure


def _as_v4(document: object, findings: list[Finding]) -> dict:
    """The document as a dict with the structure of nbformat 4 (older versions converted)."""
    if not isinstance(document, dict):
        kind = {list: "a list", str: "a string"}.get(type(document), "a single value")
        raise _Quarantine(f"The file is valid JSON but {kind}, not a notebook (a JSON object with cells).")
    if "cells" not in document and "worksheets" not in document:
        keys = ", ".join(sorted(map(str, document))[:8]) or "none"
        raise _Quarantine(f"The file is a JSON object without cells (its keys: {keys}), not a notebook.")
    version = document.get("nbformat")
    if "cells" not in document:
        return _upgrade(document, version if isinstance(version, int) else 3, findings)
    if version != 4:
        findings.append(
            _invalid(f"The notebook says nbformat {version!r} but has the structure of version 4; it was read as 4.")
        )
    return document


def _upgrade(document: dict, version: int, findings: list[Finding]) -> dict:
    """An nbformat 1-3 notebook converted to version 4 with nbformat."""
    document = {"nbformat_minor": 0, **document, "nbformat": version}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            upgraded = nbformat.convert(nbformat.from_dict(document), 4)
    except Exception as error:  # nbformat's converters assume valid input: any failure means "cannot convert"
        raise _Quarantine(
            f"The notebook is in nbformat {version} and could not be converted to version 4 "
            f"({type(error).__name__}: {error})."
        ) from None
    findings.append(_invalid(f"The notebook was in the old nbformat {version}; it was converted to version 4."))
    return upgraded


class _Problems:
    """Schema repairs, one finding per kind of repair with the cells it concerned."""

    def __init__(self):
        self.cells: dict[str, list[int]] = defaultdict(list)

    def add(self, repair: str, number: int) -> None:
        self.cells[repair].append(number)

    def findings(self) -> list[Finding]:
        return [
            _invalid(f"{repair} (cell{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}).")
            for repair, numbers in self.cells.items()
        ]


def _rebuild(document: dict, release: nbformat.NotebookNode, findings: list[Finding]):
    """A v4 notebook in the release's minor version, every cell rebuilt to the schema.

    Returns the notebook and, for each of its cells, its number in the submission.
    """
    raw_cells = document.get("cells")
    if not isinstance(raw_cells, list):
        raise _Quarantine("The notebook's cells are not a list, so there is nothing to grade.")
    problems = _Problems()
    numbered = [(number, _rebuild_cell(raw, number, problems)) for number, raw in enumerate(raw_cells, 1)]
    numbered = [(number, cell) for number, cell in numbered if cell is not None]
    minor = release.nbformat_minor
    claims_ids = (
        document.get("nbformat") == 4
        and isinstance(document.get("nbformat_minor"), int)
        and (document["nbformat_minor"] >= 5)
    )
    _assign_ids(numbered, minor >= 5, claims_ids, problems)
    for number, cell in numbered:
        _make_valid(cell, minor, number, problems)
    findings.extend(problems.findings())
    metadata = document.get("metadata")
    if not isinstance(metadata, dict):
        findings.append(_invalid("The notebook had no metadata object; it got an empty one."))
        metadata = {}
    extra = sorted(map(str, set(document) - NOTEBOOK_FIELDS))
    if extra:
        findings.append(_invalid(f"Top-level fields that the format does not allow were removed: {', '.join(extra)}."))
    notebook = nbformat.from_dict(
        {"cells": [cell for _, cell in numbered], "metadata": metadata, "nbformat": 4, "nbformat_minor": minor}
    )
    return notebook, [number for number, _ in numbered]


def _rebuild_cell(raw: object, number: int, problems: _Problems) -> dict | None:
    """A cell with the fields of its type, or None for something that is not a cell."""
    if not isinstance(raw, dict):
        problems.add("Cells that were not JSON objects were dropped", number)
        return None
    cell_type = raw.get("cell_type")
    if cell_type not in CELL_TYPES:
        cell_type = "code" if "outputs" in raw or "execution_count" in raw else "markdown"
        problems.add(f"Cells with a missing or unknown cell_type became {cell_type} cells", number)
    metadata = raw.get("metadata")
    if not isinstance(metadata, dict):
        problems.add("Cells without a metadata object got an empty one", number)
        metadata = {}
    nbgrader = metadata.get("nbgrader", {})
    if not isinstance(nbgrader, dict) or not isinstance(nbgrader.get("grade_id", ""), str):
        problems.add("nbgrader metadata that was not an object with a text grade id was removed", number)
        metadata = {key: value for key, value in metadata.items() if key != "nbgrader"}
    cell = {"cell_type": cell_type, "metadata": copy.deepcopy(metadata), "source": _source(raw, number, problems)}
    if "id" in raw:
        cell["id"] = raw["id"]
    if cell_type == "code":
        cell["outputs"] = _outputs(raw, number, problems)
        cell["execution_count"] = _execution_count(raw, number, problems)
    elif "attachments" in raw:
        cell["attachments"] = copy.deepcopy(raw["attachments"])
    if set(raw) - CELL_FIELDS[cell_type] - {"cell_type"}:
        problems.add("Fields that the format does not allow in such a cell were removed", number)
    return cell


def _source(raw: dict, number: int, problems: _Problems) -> str:
    source = raw.get("source")
    if isinstance(source, str):
        return source
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        return "".join(source)
    problems.add("Cell sources that were missing or not text were replaced by their text parts", number)
    return "".join(line for line in source if isinstance(line, str)) if isinstance(source, list) else ""


def _outputs(raw: dict, number: int, problems: _Problems) -> list:
    outputs = raw.get("outputs")
    if not isinstance(outputs, list):
        problems.add("Code cells without an outputs list got an empty one", number)
        return []
    valid = [output for output in outputs if isvalid(output, ref="output", version=4, version_minor=5)]
    if len(valid) < len(outputs):
        problems.add("Outputs that the format does not allow were dropped (autograding clears outputs anyway)", number)
    return copy.deepcopy(valid)


def _execution_count(raw: dict, number: int, problems: _Problems) -> int | None:
    count = raw.get("execution_count")
    if "execution_count" not in raw:
        problems.add("Code cells without an execution_count got an empty one", number)
    elif count is not None and not (isinstance(count, int) and not isinstance(count, bool) and count >= 0):
        problems.add("Execution counts that were not counts were cleared", number)
    else:
        return count
    return None


def _assign_ids(numbered: list[tuple[int, dict]], with_ids: bool, claims_ids: bool, problems: _Problems) -> None:
    """Valid, unique cell ids (or none, for a release format without ids)."""
    taken: set[str] = set()
    for number, cell in numbered:
        cell_id = cell.pop("id", None)
        if not with_ids:
            continue
        if cell_id is None:
            if claims_ids:
                problems.add("Cells without an id got one", number)
        elif not isinstance(cell_id, str) or not CELL_ID.fullmatch(cell_id):
            problems.add("Cell ids that the format does not allow were replaced", number)
        elif cell_id in taken:
            problems.add("Duplicate cell ids were replaced", number)
        else:
            cell["id"] = cell_id
            taken.add(cell_id)
            continue
        cell["id"] = _new_id(f"{number}:{cell['source']}", taken)


def _new_id(seed: str, taken: set[str]) -> str:
    """A cell id derived from ``seed`` (so repairs are reproducible), not in ``taken``; adds it."""
    counter = 0
    while True:
        cell_id = hashlib.sha1(f"{seed}#{counter}".encode()).hexdigest()[:8]
        if cell_id not in taken:
            taken.add(cell_id)
            return cell_id
        counter += 1


def _make_valid(cell: dict, minor: int, number: int, problems: _Problems) -> None:
    """Drop what keeps a cell from validating: attachments, then metadata other than nbgrader's."""
    ref = f"{cell['cell_type']}_cell"
    if isvalid(cell, ref=ref, version=4, version_minor=minor):
        return
    if "attachments" in cell:
        del cell["attachments"]
        problems.add("Attachments that the format does not allow were dropped", number)
        if isvalid(cell, ref=ref, version=4, version_minor=minor):
            return
    cell["metadata"] = {key: value for key, value in cell["metadata"].items() if key == "nbgrader"}
    problems.add("Cell metadata that the format does not allow was removed (nbgrader metadata kept)", number)


# ---------------------------------------------------------------- the release's cells


@dataclass(frozen=True)
class _ReleaseCell:
    """A cell of the release notebook, with what matching needs to know about it."""

    index: int
    cell: nbformat.NotebookNode
    nbgrader: dict | None  # None: a plain cell, only a landmark for positions

    @property
    def grade_id(self) -> str | None:
        return self.nbgrader["grade_id"] if self.nbgrader else None

    @property
    def is_solution(self) -> bool:
        return bool(self.nbgrader and self.nbgrader.get("solution"))

    @property
    def restores_source(self) -> bool:
        """Locked cells (tests, instructor code, text): the release's source is what counts."""
        return bool(self.nbgrader and self.nbgrader.get("locked") and not self.nbgrader.get("solution"))

    @property
    def kind(self) -> str:
        if self.is_solution:
            return "solution cell"
        if self.nbgrader and self.nbgrader.get("grade"):
            return "test cell"
        return "locked cell" if self.restores_source else "cell"

    @property
    def key(self) -> str:
        return _key(self.cell.source)

    @property
    def names(self) -> frozenset[str]:
        return _top_level_names(self.cell.source) if self.is_solution else frozenset()


def _release_cells(release: nbformat.NotebookNode) -> list[_ReleaseCell]:
    """The release's cells; raises ValueError when ``release`` is not a release notebook."""
    cells = getattr(release, "cells", None)
    if not isinstance(cells, list):
        raise ValueError("release must be an nbformat v4 notebook")
    result, seen = [], set()
    for index, cell in enumerate(cells):
        nbgrader = cell.get("metadata", {}).get("nbgrader")
        if nbgrader is not None:
            grade_id = nbgrader.get("grade_id")
            if not isinstance(grade_id, str) or grade_id in seen:
                raise ValueError(f"release cell {index} has a missing or duplicate grade id {grade_id!r}")
            seen.add(grade_id)
        result.append(_ReleaseCell(index, cell, nbgrader))
    return result


def _key(source: str) -> str:
    """A cell's source for comparisons: no trailing blanks on lines, none around the whole."""
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def _top_level_names(source: str) -> frozenset[str]:
    """The functions, classes and names a cell's top level defines (as code, whatever the cell's type)."""
    return frozenset(defined_names(source))


def _check_related(notebook, release_cells, release_name, others) -> None:
    """Quarantine a notebook that has nothing in common with the release (another notebook)."""
    if not notebook.cells:
        raise _Quarantine("The notebook has no cells: there is nothing to grade.", invalid=False)
    if _resembles(notebook.cells, release_cells):
        return
    release = f"the release notebook {release_name!r}" if release_name else "the release notebook"
    reason = f"The notebook shares no grade cell and no cell content with {release}"
    alike = [name for name, other in others.items() if _resembles(notebook.cells, _release_cells(other))]
    headings = [cell.source.strip() for cell in notebook.cells if cell.cell_type == "markdown" and cell.source.strip()]
    if alike:
        reason += f"; it looks like {', '.join(alike)}"
    elif headings:
        reason += f"; its first heading is {headings[0].splitlines()[0].lstrip('# ')[:80]!r}"
    raise _Quarantine(reason + ": ask the student for the right notebook.", invalid=False)


def _resembles(cells: list, release_cells: list[_ReleaseCell]) -> bool:
    """Whether some cell is a release cell: the same source, a solution's functions, or a
    test or solution cell's grade id with a similar source.

    Grade ids of locked cells are not enough: every assignment of a course may have a
    ``setup`` cell.
    """
    keys = {rc.key for rc in release_cells if rc.key}
    graded = {rc.grade_id: rc for rc in release_cells if rc.is_solution or rc.kind == "test cell"}
    for cell in cells:
        key = _key(cell.source)
        defined = _top_level_names(cell.source) if cell.cell_type == "code" else frozenset()
        if key in keys or any(other.names and other.names <= defined for other in graded.values()):
            return True
    return False


# ---------------------------------------------------------------- grade cells


@dataclass(eq=False)
class _StudentCell:
    """A cell of the submission and what matching decided about it."""

    position: int  # its index among the rebuilt cells (entries that were not cells are gone)
    number: int  # its place in the submitted file, from 1 (for findings)
    cell: nbformat.NotebookNode
    match: _ReleaseCell | None = None
    how: str = ""  # "id", "renamed" (another grade id), "stripped" (no nbgrader metadata) or "landmark"
    why: str = ""  # how the match was recognised, for the finding
    dropped: bool = False

    @property
    def nbgrader(self) -> dict | None:
        return self.cell.metadata.get("nbgrader")

    @property
    def key(self) -> str:
        return _key(self.cell.source)

    @property
    def label(self) -> str:
        return f"cell {self.number}"


class _GradeCells:
    """Matches a submission's cells to the release's and repairs the grade cells.

    Cells that claim a release grade id are trusted (never reordered). The others are
    aligned, in order, with the release cells that no cell claimed, between the claimed
    ones. Release grade cells left without a cell are re-inserted.
    """

    def __init__(self, release_cells, cells, numbers, findings: list[Finding]):
        self.release = release_cells
        self.grade = [rc for rc in release_cells if rc.nbgrader]
        self.student = [
            _StudentCell(position, number, cell)
            for position, (number, cell) in enumerate(zip(numbers, cells, strict=True))
        ]
        self.findings = findings
        self.inserted: dict[int, list] = defaultdict(list)  # student position (-1: the top) -> cells after it
        self.inserted_at: dict[int, int] = {}  # release cell index -> the position it was re-inserted after
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
            if not sc.dropped:
                cells.append(sc.cell)
            cells.extend(self.inserted[sc.position])
        return cells

    def add(self, vector: str, cell: str, detail: str) -> None:
        self.findings.append(_finding(vector, cell, detail))

    def positions(self) -> dict[int, int]:
        """Release cell index -> the position of the student's cell matched to it."""
        return {sc.match.index: sc.position for sc in self.student if sc.match}

    # -- matching

    def match_by_grade_id(self) -> None:
        """Cells with a release grade id; of several copies, one keeps the id."""
        by_id = {rc.grade_id: rc for rc in self.grade}
        copies: dict[str, list[_StudentCell]] = defaultdict(list)
        for sc in self.student:
            rc = by_id.get(sc.nbgrader.get("grade_id")) if sc.nbgrader else None
            if rc and not self.belongs_to_another(sc, rc):
                copies[rc.grade_id].append(sc)
        for rc in self.grade:
            found = copies.get(rc.grade_id, [])
            if not found:
                continue
            keep = self.last_definition(found, rc) if rc.is_solution else self.first_after_anchor(found, rc)
            keep.match, keep.how, keep.why = rc, "id", "its grade id"
            if len(found) > 1:
                self.resolve_duplicates(rc, found, keep)

    def belongs_to_another(self, sc: _StudentCell, rc: _ReleaseCell) -> bool:
        """Whether a cell is another release cell than ``rc``, whatever its grade id says.

        It is when, unlike ``rc``, it holds another release cell's source or defines
        another solution's functions (a solution written into a test cell, say). Such a
        cell is never taken for ``rc``: restoring ``rc``'s source would lose the code.
        """
        defined = self.defined(sc)
        if sc.key == rc.key or (rc.names and rc.names <= defined):
            return False
        return any(
            other is not rc and ((other.key and other.key == sc.key) or (other.names and other.names <= defined))
            for other in self.grade
        )

    @staticmethod
    def defined(sc: _StudentCell) -> frozenset[str]:
        """The functions and classes a cell's source defines at its top level (as code, whatever its type)."""
        return _top_level_names(sc.cell.source)

    @staticmethod
    def last_definition(found: list[_StudentCell], rc: _ReleaseCell) -> _StudentCell:
        """The last copy that defines the solution's functions (the definition that ran last)."""
        defining = [sc for sc in found if rc.names <= _top_level_names(sc.cell.source)]
        return (defining or found)[-1]

    def first_after_anchor(self, found: list[_StudentCell], rc: _ReleaseCell) -> _StudentCell:
        """The first copy after the cell matched to the nearest preceding release cell."""
        positions = self.positions()
        anchors = [positions[earlier.index] for earlier in self.release[: rc.index] if earlier.index in positions]
        after = [sc for sc in found if anchors and sc.position > anchors[-1]]
        return (after or found)[0]

    def resolve_duplicates(self, rc: _ReleaseCell, found: list[_StudentCell], keep: _StudentCell) -> None:
        others = [sc for sc in found if sc is not keep]
        cells = ", ".join(str(sc.number) for sc in found)
        if rc.is_solution:
            for sc in others:
                del sc.cell.metadata["nbgrader"]
            what = (
                f"cell {keep.number}, the last copy that defines {', '.join(sorted(rc.names)) or 'it'} (the "
                "definition that ran last), keeps the nbgrader metadata; the other copies stay as plain code cells"
            )
        else:
            for sc in others:
                sc.dropped = True
            what = f"cell {keep.number} was kept and the other copies were dropped"
        self.add(
            "test-cell-duplicated",
            rc.grade_id,
            f"{rc.kind.capitalize()} {rc.grade_id!r} appears {len(found)} times (cells {cells}); {what}.",
        )

    def match_by_content(self) -> None:
        """Align the unmatched release cells with the unmatched cells between the matched ones:
        the same source, or, for a solution cell, the functions it defines. (A cell that matches
        nothing stays the student's; a grade cell without a match is re-inserted.)"""
        for release_run, low, high in self.gaps():
            candidates = [sc for sc in self.student[low + 1 : high] if not sc.match and not sc.dropped]
            scores = [[self.score(rc, sc) for sc in candidates] for rc in release_run]
            for rc, sc in _align(release_run, candidates, scores):
                sc.match = rc
                if rc.nbgrader is None:
                    sc.how = "landmark"
                else:
                    sc.how = "renamed" if sc.nbgrader else "stripped"
                    sc.why = _why(rc, sc)

    def score(self, rc: _ReleaseCell, sc: _StudentCell) -> float | None:
        """How well a cell without a claimed grade id matches a release cell; None: not at all.

        Solution cells are recognised by the functions they define, other cells by their
        source. A cell that kept nbgrader metadata of the same kind (a renamed grade id) scores
        higher. Release cells without nbgrader metadata only serve as landmarks.
        """
        renamed = sc.nbgrader is not None
        if rc.nbgrader is None:
            return 0.5 if not renamed and sc.cell.cell_type == rc.cell.cell_type and rc.key == sc.key else None
        same_kind = renamed and all(sc.nbgrader.get(flag) == rc.nbgrader.get(flag) for flag in ("grade", "solution"))
        if (rc.is_solution and sc.cell.cell_type != "code" and not same_kind) or self.belongs_to_another(sc, rc):
            return None
        if rc.key == sc.key or (rc.names and rc.names <= self.defined(sc)):
            return 2.0 if same_kind else 1.0
        return None

    def gaps(self):
        """Runs of release cells without a match, with the positions of their matched neighbours."""
        positions = self.positions()
        run: list[_ReleaseCell] = []
        low = -1
        for rc in self.release:
            if rc.index in positions:
                if run:
                    yield run, low, positions[rc.index]
                run, low = [], positions[rc.index]
            else:
                run.append(rc)
        if run:
            yield run, low, len(self.student)

    def match_definitions(self) -> None:
        """A solution cell still unmatched: the last cell anywhere that defines its functions."""
        for rc in self.grade:
            if not rc.names or rc.index in self.positions():
                continue
            defining = [sc for sc in self.defining(rc) if not sc.match or sc.how == "landmark"]
            if defining:
                sc = defining[-1]
                sc.match, sc.how, sc.why = rc, "stripped", f"the functions it defines ({', '.join(sorted(rc.names))})"

    def defining(self, rc: _ReleaseCell) -> list[_StudentCell]:
        """The cells that define the solution's functions."""
        return [
            sc
            for sc in self.student
            if not sc.dropped and sc.cell.cell_type == "code" and rc.names and rc.names <= self.defined(sc)
        ]

    # -- repairs

    def insert_missing(self) -> None:
        """Re-insert release grade cells that have no match, after the cell matching their predecessor."""
        positions = self.positions()
        for rc in self.grade:
            if rc.index in positions:
                continue
            holders = self.defining(rc) if rc.names else []
            if holders:
                self.add(
                    "solution-cell-missing",
                    rc.grade_id,
                    f"Solution cell {rc.grade_id!r} is missing, but its functions are defined in cell "
                    f"{holders[-1].number}; no unanswered copy was inserted, so that definition is graded.",
                )
                continue
            anchor, where = self.anchor(rc, positions)
            self.inserted[anchor].append(self.fresh_copy(rc))
            self.inserted_at[rc.index] = anchor
            if rc.is_solution:
                self.add(
                    "solution-cell-missing",
                    rc.grade_id,
                    f"Solution cell {rc.grade_id!r} is missing; the release's unanswered cell was inserted {where}.",
                )
            else:
                self.add(
                    "test-cell-deleted",
                    rc.grade_id,
                    f"{rc.kind.capitalize()} {rc.grade_id!r} was deleted; the release's cell was re-inserted {where}.",
                )

    def anchor(self, rc: _ReleaseCell, positions: dict[int, int]) -> tuple[int, str]:
        """Where to re-insert ``rc`` (the position it goes after, -1: the top), and those words.

        It goes right after the nearest preceding release cell that is there: matched to
        a cell of the submission, or re-inserted itself.
        """
        for earlier in reversed(self.release[: rc.index]):
            if earlier.index in self.inserted_at:
                return self.inserted_at[earlier.index], f"after the re-inserted cell {earlier.grade_id!r}"
            if earlier.index in positions:
                sc = self.student[positions[earlier.index]]
                name = f"release cell {earlier.grade_id!r}" if earlier.grade_id else f"release cell {earlier.index + 1}"
                return positions[earlier.index], f"after cell {sc.number} (which matches {name})"
        return -1, "at the top of the notebook"

    def fresh_copy(self, rc: _ReleaseCell) -> nbformat.NotebookNode:
        cell = copy.deepcopy(rc.cell)
        if "id" in cell:
            if cell.id in self.taken_ids:
                cell.id = _new_id(f"release:{rc.grade_id}", self.taken_ids)
            self.taken_ids.add(cell.id)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        return cell

    def restore_matched(self) -> None:
        """Matched grade cells get the release's nbgrader metadata, cell type and (locked) source."""
        for sc in self.student:
            rc = sc.match
            if rc is None or rc.nbgrader is None:
                continue
            name = f"{rc.kind.capitalize()} {rc.grade_id!r}"
            if sc.how == "renamed":
                self.add(
                    "grade-id-renamed",
                    rc.grade_id,
                    f"{name} (cell {sc.number}) had {_grade_id_words(sc.nbgrader)}; it was recognised by {sc.why} "
                    "and the release's id was restored.",
                )
            elif sc.how == "stripped":
                self.add(
                    "metadata-stripped",
                    rc.grade_id,
                    f"{name} (cell {sc.number}) had no nbgrader metadata; it was recognised by {sc.why} and its "
                    "metadata was restored.",
                )
            else:
                self.report_changed_flags(sc, rc, name)
            if sc.cell.cell_type != rc.cell.cell_type:
                self.restore_type(sc, rc, name)
            elif rc.restores_source and sc.key != rc.key:
                self.add(
                    "test-cell-edited",
                    rc.grade_id,
                    f"{name} (cell {sc.number}) was edited ({_diff_summary(rc.cell.source, sc.cell.source)}); "
                    "the release's source was restored.",
                )
            if rc.restores_source:
                sc.cell.source = rc.cell.source
            sc.cell.metadata["nbgrader"] = copy.deepcopy(rc.nbgrader)

    def report_changed_flags(self, sc: _StudentCell, rc: _ReleaseCell, name: str) -> None:
        changed = [
            f"{flag} {rc.nbgrader.get(flag)!r} -> {sc.nbgrader.get(flag)!r}"
            for flag in GRADING_FLAGS
            if sc.nbgrader.get(flag) != rc.nbgrader.get(flag)
        ]
        if changed:
            self.add(
                "test-cell-edited",
                rc.grade_id,
                f"The nbgrader metadata of {name[0].lower() + name[1:]} was changed ({', '.join(changed)}); "
                "the release's was restored.",
            )

    def restore_type(self, sc: _StudentCell, rc: _ReleaseCell, name: str) -> None:
        was = sc.cell.cell_type
        _set_cell_type(sc.cell, rc.cell.cell_type)
        source = "the release's source" if rc.restores_source else "its source kept"
        self.add(
            "test-cell-markdown",
            rc.grade_id,
            f"{name} (cell {sc.number}) had been turned into a {was} cell; it is a {rc.cell.cell_type} cell "
            f"again, with {source}.",
        )

    def settle_unmatched(self) -> None:
        """Cells the student added: copies of locked cells are dropped, stray nbgrader metadata removed."""
        present = set(self.positions()) | set(self.inserted_at)
        copies = {rc.key: rc for rc in self.grade if rc.restores_source and rc.key and rc.index in present}
        by_id = {rc.grade_id: rc for rc in self.grade}
        for sc in self.student:
            if sc.dropped or (sc.match and sc.how != "landmark"):
                continue
            original = copies.get(sc.key)
            stray_id = sc.nbgrader.get("grade_id") if sc.nbgrader is not None else None
            if original:
                sc.dropped = True
                under = f" under the grade id {stray_id!r}" if stray_id else ""
                self.add(
                    "test-cell-duplicated",
                    original.grade_id,
                    f"Cell {sc.number} is a copy of {original.kind} {original.grade_id!r}{under}; the copy was dropped.",
                )
            elif stray_id in by_id:
                del sc.cell.metadata["nbgrader"]
                self.add(
                    "test-cell-edited",
                    stray_id,
                    f"Cell {sc.number} has the grade id of {by_id[stray_id].kind} {stray_id!r} but holds the "
                    "student's own code; its nbgrader metadata was removed and its code kept as the student's.",
                )
            elif sc.nbgrader is not None:
                self.add(
                    "grade-id-renamed",
                    sc.label,
                    f"Cell {sc.number} had {_grade_id_words(sc.nbgrader)}, which the release does not have, and "
                    "matches no release cell; the metadata was removed and the cell kept as the student's own.",
                )
                del sc.cell.metadata["nbgrader"]


def _grade_id_words(nbgrader: dict) -> str:
    grade_id = nbgrader.get("grade_id")
    return f"the grade id {grade_id!r}" if grade_id else "nbgrader metadata without a grade id"


def _why(rc: _ReleaseCell, sc: _StudentCell) -> str:
    if rc.key == sc.key:
        return "its position and source (the release's)"
    return f"its position and the functions it defines ({', '.join(sorted(rc.names))})"


def _align(release_run: list[_ReleaseCell], candidates: list[_StudentCell], scores: list[list]) -> list[tuple]:
    """The order-preserving pairing of release cells with candidates of highest total score.

    ``scores[i][j]`` is the score of pairing release cell i with candidate j (None: they
    cannot pair). Among equally good pairings, a test or locked cell takes its first
    candidate and a solution cell its last (the definition that ran last).
    """
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


def _set_cell_type(cell: nbformat.NotebookNode, cell_type: str) -> None:
    cell.cell_type = cell_type
    for field in set(cell) - CELL_FIELDS[cell_type]:
        del cell[field]
    if cell_type == "code":
        cell.outputs, cell.execution_count = [], None


def _diff_summary(release_source: str, source: str) -> str:
    added = removed = 0
    for line in difflib.ndiff(release_source.splitlines(), source.splitlines()):
        added += line.startswith("+ ")
        removed += line.startswith("- ")
    return f"{added} line{'s' * (added != 1)} added, {removed} removed"


# ---------------------------------------------------------------- kernel, validation


def _restore_kernel(notebook: nbformat.NotebookNode, release: nbformat.NotebookNode, findings: list[Finding]) -> None:
    """The release's kernelspec and language_info; a different or missing one is reported."""
    for key in ("kernelspec", "language_info"):
        wanted = release.metadata.get(key)
        if wanted is None:
            continue
        found = notebook.metadata.get(key)
        if not isinstance(found, dict) or found.get("name") != wanted.get("name"):
            was = f"was {found.get('name')!r}" if isinstance(found, dict) else "was missing"
            findings.append(
                _finding(
                    "wrong-kernel",
                    "",
                    f"The notebook's {key} {was}; it was set to the release's ({wanted.get('name')!r}).",
                )
            )
        notebook.metadata[key] = copy.deepcopy(wanted)


def _validated(notebook: nbformat.NotebookNode, findings: list[Finding]) -> nbformat.NotebookNode:
    """The notebook, valid for nbformat: metadata the schema rejects is stripped, else quarantine."""
    try:
        nbformat.validate(notebook)
        return notebook
    except ValidationError:
        pass
    _, stripped = normalize(notebook, strip_invalid_metadata=True)
    stripped = nbformat.from_dict(stripped)
    try:
        nbformat.validate(stripped)
    except ValidationError as error:
        raise _Quarantine(f"The notebook could not be repaired into a valid notebook ({error.message}).") from None
    findings.append(_invalid("Notebook metadata that the format does not allow was removed."))
    return stripped
