"""Collect: what an LMS or Colab gives the instructor, into nbgrader's layout, losing nothing.

    report = collect(Path("submissions.zip"), course, "ch01_perceptron", rule="canvas")
    report.write_manifest(course / "collected" / "ch01_perceptron" / "manifest.csv")

The source is a zip (nested folders and nested zips are opened; ``__MACOSX``,
``.DS_Store`` and the like are left out) or a folder. Every file ends up in exactly one
row of the :class:`CollectReport`: ``collected`` (graded), ``quarantined`` (cannot be
graded, with the reason) or ``skipped`` (an older copy, not a notebook, an archive
whose files are listed one by one). Under the course folder:

``collected/<assignment>/<path in the source>``
    every file's bytes as received (paths that try to leave the folder are cleaned);
``submitted/<student>/<assignment>/<release notebook>`` and ``timestamp.txt``
    the pre-flighted notebook (:mod:`grading.preflight`), under the release's name;
``integrity/<assignment>/<student>.preflight.json``
    the pre-flight findings;
``quarantine/<assignment>/<student or file stem>/``
    files that cannot be graded, and ``reason.txt`` (one line per file).

Which student a file belongs to comes from a rule: a regular expression searched in
the file's path inside the source ("/"-separated; a nested zip's files are under the
zip's path, e.g. ``doejane_1_2_work.zip/perceptron.ipynb``). It has a named group
``student`` and may have ``lms_id`` (the LMS's id of the student, for a roster with an
``lms_id`` column), ``name`` and ``ext`` (the file name the student gave, where the
LMS renamed the file) and ``attempt`` (a resubmission number). The presets:

``canvas``
    ``doejane_12345_678901_perceptron.ipynb``, ``doejane_LATE_12345_678901_perceptron-1.ipynb``:
    student ``doejane``, LMS id ``12345``, resubmission ``1``.
``moodle``
    ``Jane Doe_12345_assignsubmission_file_/perceptron.ipynb`` (or the same without
    the folder: ``..._assignsubmission_file_perceptron.ipynb``): the student is the
    name, as the id ``jane_doe`` (below), with LMS id ``12345``.
``colab``
    ``<anything>__<student>.ipynb``, e.g. ``perceptron__jdoe.ipynb``: the student is
    the part after the last double underscore (a single underscore can be part of the
    id, and Colab's own names such as ``Copy of perceptron.ipynb`` match no student
    instead of a wrong one). A ``" (2)"`` that Drive adds is a resubmission number.
``folder``
    ``<student>/<anything>``: the first folder of the path.

Without a roster, the student id is what the rule extracted, in lower case, with
accents removed and anything but letters, digits, ``.``, ``_`` and ``-`` replaced by
``_`` (``Jane Doe`` -> ``jane_doe``); two students with the same name but different
LMS ids become ``<name>_<lms id>``. With a roster (CSV with ``name,student_id`` or
``lms_id,student_id``), the id is the roster's; a name matches whatever the order of
its words (Canvas writes "doejane" for "Jane Doe"). A student who is not in the roster
is quarantined, never guessed.

For several files of one student and notebook, the newest (timestamp, then the
highest resubmission number) is graded and the others are skipped; if the newest
cannot be graded (quarantined), the next one is tried. Timestamps are the zip
members' (their UTC time when the zip records one, else their local time on this
machine) or the files' modification times.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import nbformat

from grading.findings import Finding, spreadsheet_safe, write_findings
from grading.preflight import preflight
from grading.wire import clean_text

REPO = Path(__file__).resolve().parents[1]

RULES: dict[str, str] = {
    "canvas": (
        r"(?:^|/)(?P<student>[^/_]+)(?i:_late)?_(?P<lms_id>\d+)_(?:\d+_)?"
        r"(?P<name>[^/]+?)(?:-(?P<attempt>\d+))?(?P<ext>\.[^./]+)?(?=/|$)"
    ),
    "moodle": (
        r"(?:^|/)(?P<student>[^/]+?)_(?P<lms_id>\d+)_assignsubmission_[a-z]+_"
        r"(?:/|(?P<name>[^/]+?)(?P<ext>\.[^./]+)?$)"
    ),
    "colab": r"(?:^|/)(?P<name>[^/]*)__(?P<student>[^/]+?)(?: \((?P<attempt>\d+)\))?\.ipynb$",
    "folder": r"^(?P<student>[^/]+)/",
}

MAX_TOTAL_BYTES = 2 * 1024**3
MAX_MEMBER_BYTES = 100 * 1024**2
MAX_NESTING = 3  # zips inside zips opened, at most
EXTENDED_TIMESTAMP = 0x5455  # the zip extra field with UTC times ("UT")
STUDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")
JUNK_FOLDERS = {"__MACOSX": "macOS archive metadata"}
JUNK_FILES = {
    ".DS_Store": "macOS folder metadata",
    "Thumbs.db": "Windows thumbnails",
    "desktop.ini": "Windows metadata",
}
MANIFEST_COLUMNS = ("status", "student", "notebook", "source", "kept", "timestamp", "findings", "reason")


@dataclass
class CollectReport:
    """Every file of the source, in one of three lists of rows (dicts)."""

    collected: list[dict] = field(default_factory=list)  # graded: student, notebook, source, kept, timestamp, findings
    quarantined: list[dict] = field(default_factory=list)  # cannot be graded: source, student, reason, kept
    skipped: list[dict] = field(default_factory=list)  # older copies, other files: source, student, reason, kept

    def write_manifest(self, path: Path) -> None:
        """All rows as CSV, with a ``status`` column (collected, quarantined, skipped)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8", errors="replace") as file:
            writer = csv.DictWriter(file, MANIFEST_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for status, rows in (
                ("collected", self.collected),
                ("quarantined", self.quarantined),
                ("skipped", self.skipped),
            ):
                for row in rows:
                    writer.writerow({key: spreadsheet_safe(value) for key, value in {**row, "status": status}.items()})


def collect(
    source: Path,
    course: Path,
    assignment: str,
    *,
    rule: str = "canvas",
    roster: Path | None = None,
    release_dir: Path | None = None,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_member_bytes: int = MAX_MEMBER_BYTES,
) -> CollectReport:
    """Put the submissions in ``source`` (a zip or a folder) into ``course``'s nbgrader layout.

    ``rule`` is a preset of :data:`RULES` or a regular expression with a
    ``(?P<student>...)`` group; ``roster`` an optional CSV (``name,student_id`` or
    ``lms_id,student_id``); ``release_dir`` the release notebooks' folder (default:
    ``exercises/<assignment>`` of this repository). ``max_total_bytes`` caps what is
    extracted from zips in all, ``max_member_bytes`` each file.
    """
    pattern = compile_rule(rule)
    source, course = Path(source), Path(course)
    if not source.exists():
        raise FileNotFoundError(f"no submissions at {source}: give the LMS's zip file or a folder of notebooks")
    releases = load_releases(assignment, release_dir)
    collector = _Collector(course, assignment, releases, _other_releases(assignment, release_dir))
    identify = _Identifier(pattern, rule, _Roster(Path(roster)) if roster else None)
    candidates = []
    for item in _inputs(source, _Budget(max_total_bytes, max_member_bytes)):
        candidate = collector.take(item, identify)
        if candidate:
            candidates.append(candidate)
    if identify.roster is None:
        _separate_namesakes(candidates)
    groups: dict[tuple[str, str], list[_Candidate]] = defaultdict(list)
    for candidate in candidates:
        groups[candidate.student, candidate.release_name].append(candidate)
    chosen = "lms_id" not in pattern.groupindex and rule != "folder"  # ids from names that students choose
    for group in groups.values():
        collector.grade_newest(group, exclusive=chosen)
    collector.finish()
    return collector.report


def preflight_submitted(course: Path, assignment: str, release_dir: Path | None = None) -> CollectReport:
    """Pre-flight the notebooks already in ``<course>/submitted/*/<assignment>/``, in place.

    For nbgrader's own exchange, or notebooks copied there by hand. A notebook with
    findings is rewritten (its original kept under ``collected/<assignment>/<student>/``);
    one that cannot be graded is moved to ``quarantine/`` (with its ``timestamp.txt``
    when no other notebook is left). A notebook with another name than the release's
    is graded under the release's name when the release's is missing.
    """
    course = Path(course)
    releases = load_releases(assignment, release_dir)
    collector = _Collector(course, assignment, releases, _other_releases(assignment, release_dir))
    collector.remove_links_and_strays()
    for folder in sorted((course / "submitted").glob(f"*/{assignment}")):
        if folder.is_dir() and not folder.is_symlink():
            collector.preflight_folder(folder)
    collector.finish()
    return collector.report


def compile_rule(rule: str) -> re.Pattern:
    """The regular expression of a preset or a custom rule; ValueError naming the presets if neither."""
    try:
        pattern = re.compile(RULES.get(rule, rule))
    except re.error:
        pattern = None
    if pattern is None or "student" not in pattern.groupindex:
        raise ValueError(
            f"unknown rule {rule!r}: use a preset ({', '.join(sorted(RULES))}) or a regular expression "
            "with a (?P<student>...) group"
        )
    return pattern


def load_releases(assignment: str, release_dir: Path | None = None) -> dict[str, nbformat.NotebookNode]:
    """The assignment's release notebooks, by file name."""
    folder = Path(release_dir) if release_dir else REPO / "exercises" / assignment
    paths = sorted(folder.glob("*.ipynb")) if folder.is_dir() else []
    if not paths:
        raise FileNotFoundError(
            f"no release notebook for assignment {assignment!r}: expected {folder}/*.ipynb "
            f"(python tools/release.py {assignment} generates it)"
        )
    return {path.name: nbformat.read(path, as_version=4) for path in paths}


def _other_releases(assignment: str, release_dir: Path | None) -> dict[str, nbformat.NotebookNode]:
    """The other assignments' release notebooks, from the release folder's siblings, by
    "<assignment>/<notebook>": they let a quarantine reason say which notebook a wrong
    upload is. Files there that are not release notebooks are ignored."""
    folder = (Path(release_dir) if release_dir else REPO / "exercises" / assignment).resolve()
    others = {}
    for path in sorted(folder.parent.glob("*/*.ipynb")):
        if path.parent.resolve() == folder:
            continue
        try:
            notebook = nbformat.read(path, as_version=4)
        except (OSError, ValueError):
            continue
        grade_ids = [cell.metadata.get("nbgrader", {}).get("grade_id") for cell in notebook.cells]
        grade_ids = [grade_id for grade_id in grade_ids if grade_id is not None]
        if grade_ids and all(isinstance(g, str) for g in grade_ids) and len(set(grade_ids)) == len(grade_ids):
            others[f"{path.parent.name}/{path.name}"] = notebook
    return others


# ---------------------------------------------------------------- reading the source


@dataclass
class _Input:
    """One file of the source."""

    source: str  # its path in the source, "/"-separated; a nested zip's files under the zip's path
    data: bytes | None  # None when it was not read (see problem)
    mtime: datetime
    problem: str = ""  # why it was not read, or cannot be used
    kind: str = "file"  # "file", "archive" (opened: its files follow), "junk" or "link" (neither read)
    unsafe: bool = False  # its path in an archive tried to leave the folder


class _Budget:
    """Caps on what is read: each file, and all of them together (zip bombs)."""

    def __init__(self, total: int, member: int):
        self.total, self.member, self.left = total, member, total

    def limit(self) -> int:
        return min(self.member, self.left)

    def refuse(self, size: int) -> str:
        """Why a file of ``size`` bytes cannot be read, or ""."""
        if size > self.member:
            return f"it is {_megabytes(size)}, over the {_megabytes(self.member)} limit for one file (max_member_bytes)"
        if size > self.left:
            return f"the {_megabytes(self.total)} limit on everything extracted was reached (max_total_bytes)"
        return ""

    def take(self, data: bytes) -> str:
        problem = self.refuse(len(data))
        if not problem:
            self.left -= len(data)
        return problem


def _inputs(source: Path, budget: _Budget) -> Iterator[_Input]:
    if source.is_dir():
        yield from _folder_inputs(source, budget)
        return
    try:
        archive = zipfile.ZipFile(source)
    except UnicodeDecodeError:  # member names flagged UTF-8 that are not: read them as the other zips' names
        archive = zipfile.ZipFile(io.BytesIO(_without_utf8_flags(source.read_bytes())))
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ValueError(
            f"{source} is not a zip archive that can be opened ({error}); give a .zip or a folder"
        ) from None
    with archive:
        yield from _zip_inputs(archive, "", budget, depth=0)


def _without_utf8_flags(data: bytes) -> bytes:
    """A zip's bytes with the "names are UTF-8" flag cleared in its headers (names then read as cp437)."""
    data = bytearray(data)
    for signature, offset in ((b"PK\x01\x02", 8), (b"PK\x03\x04", 6)):
        start = data.find(signature)
        while start >= 0:
            data[start + offset + 1] &= ~0x08 & 0xFF
            start = data.find(signature, start + 4)
    return bytes(data)


def _folder_inputs(root: Path, budget: _Budget) -> Iterator[_Input]:
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        links = sorted(name for name in subfolders if (here / name).is_symlink())
        subfolders[:] = sorted(name for name in subfolders if name not in links)
        for name in links + sorted(files):
            path = here / name
            relative, mtime = path.relative_to(root).as_posix(), _file_mtime(path)
            if path.is_symlink():
                yield _Input(relative, None, mtime, "a symbolic link, not followed", kind="link")
            else:
                yield from _entry(
                    relative, mtime, path.stat().st_size, lambda limit, p=path: _read_file(p, limit), budget, 0
                )


def _zip_inputs(archive: zipfile.ZipFile, prefix: str, budget: _Budget, depth: int) -> Iterator[_Input]:
    for info in archive.infolist():
        if info.is_dir():
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            yield _Input(prefix + info.filename, None, _zip_mtime(info), "a symbolic link, not followed", kind="link")
            continue
        for item in _entry(
            prefix + info.filename,
            _zip_mtime(info),
            info.file_size,
            lambda limit, i=info: _read_member(archive, i, limit),
            budget,
            depth,
        ):
            item.unsafe = item.unsafe or _leaves_folder(info.filename)
            yield item


def _entry(path: str, mtime: datetime, size: int, read: Callable[[int], bytes], budget: _Budget, depth: int):
    """The inputs for one file: itself, or for a zip, the zip and its files."""
    junk = _junk_reason(path)
    if junk:
        yield _Input(path, None, mtime, junk, kind="junk")
        return
    problem = budget.refuse(size)
    if not problem:
        try:
            data = read(budget.limit())
        except (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error) as error:
            problem = f"it could not be read ({error})"
        else:
            problem = budget.take(data)
    if problem:
        yield _Input(path, None, mtime, problem)
    elif not path.lower().endswith(".zip"):
        yield _Input(path, data, mtime)
    elif depth < MAX_NESTING:
        yield from _nested_zip(path, data, mtime, budget, depth + 1)
    else:
        yield _Input(path, data, mtime, f"a zip archive nested more than {MAX_NESTING} deep, not opened")


def _nested_zip(path: str, data: bytes, mtime: datetime, budget: _Budget, depth: int) -> Iterator[_Input]:
    try:
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except UnicodeDecodeError:
            archive = zipfile.ZipFile(io.BytesIO(_without_utf8_flags(data)))
    except (zipfile.BadZipFile, ValueError) as error:
        yield _Input(path, data, mtime, f"a zip archive that cannot be opened ({error})")
        return
    with archive:
        yield _Input(path, None, mtime, kind="archive")
        yield from _zip_inputs(archive, path + "/", budget, depth)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """At most ``limit + 1`` bytes: one more than allowed shows a member that lied about its size."""
    with archive.open(info) as member:
        return member.read(limit + 1)


def _read_file(path: Path, limit: int) -> bytes:
    with path.open("rb") as file:
        return file.read(limit + 1)


def _junk_reason(path: str) -> str:
    parts = path.split("/")
    for part in parts[:-1]:
        if part in JUNK_FOLDERS:
            return f"{JUNK_FOLDERS[part]} ({part}), not a submission"
    leaf = parts[-1]
    if leaf in JUNK_FILES:
        return f"{JUNK_FILES[leaf]} ({leaf}), not a submission"
    if leaf.startswith("._"):
        return "macOS metadata (a ._ file), not a submission"
    return ""


def _leaves_folder(name: str) -> bool:
    """Whether an archive member's name is absolute or climbs out with "..": a crafted zip."""
    parts = re.split(r"[\\/]", name)
    return name.startswith(("/", "\\")) or bool(re.match(r"[A-Za-z]:", name)) or ".." in parts


def _zip_mtime(info: zipfile.ZipInfo) -> datetime:
    """The member's UTC time from its extended-timestamp field, else its DOS time read as local time."""
    extra, position = info.extra, 0
    while position + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, position)
        body = extra[position + 4 : position + 4 + size]
        if tag == EXTENDED_TIMESTAMP and len(body) >= 5 and body[0] & 1:  # flag 1: the modification time
            return datetime.fromtimestamp(struct.unpack_from("<i", body, 1)[0], UTC)
        position += 4 + size
    try:
        return datetime(*info.date_time).astimezone(UTC)
    except ValueError:
        return datetime(1980, 1, 1, tzinfo=UTC)


def _file_mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.lstat().st_mtime, UTC)


# ---------------------------------------------------------------- who and which notebook


@dataclass
class _Candidate:
    """A notebook of a known student, to pre-flight."""

    item: _Input
    kept: Path  # its raw bytes under collected/
    student: str
    lms_id: str | None
    own_name: str  # the file name the student gave it
    attempt: int
    release_name: str

    @property
    def order(self) -> tuple:
        return self.item.mtime, self.attempt, self.item.source


class _Roster:
    """The roster CSV: ``name,student_id`` or ``lms_id,student_id``."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise FileNotFoundError(f"roster not found: {path}")
        self.path = path
        rows = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig")))
        columns = set(rows.fieldnames or ())
        if "student_id" not in columns or not columns & {"name", "lms_id"}:
            raise ValueError(
                f"roster {path} needs the columns name,student_id or lms_id,student_id; it has {sorted(columns)}"
            )
        self.by_lms_id: dict[str, str] = {}
        self.by_name: dict[str, set[str]] = defaultdict(set)
        for row in rows:
            student_id = (row["student_id"] or "").strip()
            if not STUDENT_ID.fullmatch(student_id):
                raise ValueError(
                    f"roster {path}, line {rows.line_num}: {student_id!r} cannot be a student id (a folder name)"
                )
            if (row.get("lms_id") or "").strip():
                self.by_lms_id[row["lms_id"].strip()] = student_id
            for key in _name_keys(row.get("name") or ""):
                self.by_name[key].add(student_id)

    def student_id(self, extracted: str, lms_id: str | None) -> str:
        """The roster's id for what a rule extracted; LookupError (the reason) when there is none or several."""
        if lms_id and lms_id in self.by_lms_id:
            return self.by_lms_id[lms_id]
        found = sorted(self.by_name.get(_name_key(extracted), ()))
        if len(found) == 1:
            return found[0]
        who = f"{extracted!r}" + (f" (LMS id {lms_id})" if lms_id else "")
        if found:
            raise LookupError(f"{who} matches several students of the roster {self.path.name}: {', '.join(found)}")
        raise LookupError(
            f"{who} is not in the roster {self.path.name}; add a row for this student (ids are never guessed)"
        )


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


def _name_key(text: str) -> str:
    return "".join(re.findall(r"[a-z0-9]+", _fold(text)))


def _name_keys(name: str) -> set[str]:
    """A name in every rotation of its words: "Jane Doe" matches "janedoe" and "doejane"."""
    words = re.findall(r"[a-z0-9]+", _fold(name))
    return {"".join(words[i:] + words[:i]) for i in range(len(words))}


def _student_slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "_", _fold(text)).strip("._-")


class _Identifier:
    """Who a file belongs to and what the student named it, by the rule (and the roster)."""

    def __init__(self, pattern: re.Pattern, rule: str, roster: _Roster | None):
        self.pattern, self.rule, self.roster = pattern, rule, roster

    def __call__(self, path: str) -> tuple[str, str | None, str, int]:
        """(student id, LMS id, the student's own file name, resubmission number); LookupError: the reason."""
        match = self.pattern.search(path)
        extracted = match["student"] if match else None
        if not extracted:
            rule = f"rule {self.rule!r}" if self.rule in RULES else "the rule"
            raise LookupError(f"no student found in its path by the {rule} ({self.pattern.pattern})")
        groups, leaf = match.groupdict(), path.rsplit("/", 1)[-1]
        own_name = leaf
        if groups.get("name") and match.end() == len(path):
            own_name = groups["name"] + (groups.get("ext") or ".ipynb")
        attempt = int(groups["attempt"]) if groups.get("attempt") else _attempt(leaf)
        if self.roster:
            return self.roster.student_id(extracted, groups.get("lms_id")), groups.get("lms_id"), own_name, attempt
        student = _student_slug(extracted)
        if not student:
            raise LookupError(f"the rule found the student {extracted!r}, which gives no usable student id")
        return student, groups.get("lms_id"), own_name, attempt

    def hint(self, path: str) -> str:
        """The student id if it can be told, for rows about files that are not graded."""
        try:
            return self(path)[0]
        except LookupError:
            return ""

    def folder_name(self, path: str) -> str:
        """A name for the file's quarantine folder: the student id, else what the rule extracted."""
        match = self.pattern.search(path)
        return self.hint(path) or (_student_slug(match["student"] or "") if match else "")


def _attempt(leaf: str) -> int:
    """A resubmission number in a file name: "perceptron-2.ipynb", "perceptron (2).ipynb"."""
    match = re.search(r"(?:-(\d+)| \((\d+)\))\.[^.]+$", leaf)
    return int(match[1] or match[2]) if match else 0


def _separate_namesakes(candidates: list[_Candidate]) -> None:
    """Students with the same name but different LMS ids become <name>_<lms id>."""
    lms_ids: dict[str, set[str]] = defaultdict(set)
    for candidate in candidates:
        if candidate.lms_id:
            lms_ids[candidate.student].add(candidate.lms_id)
    for candidate in candidates:
        if len(lms_ids[candidate.student]) > 1:
            candidate.student = f"{candidate.student}_{candidate.lms_id}"


def _match_release(names: list[str], data: bytes, releases: dict[str, nbformat.NotebookNode]) -> str | None:
    """The release notebook a file is: by name (the release's stem in a name), else by content."""
    by_name = [release for release in releases if any(Path(release).stem.lower() in name.lower() for name in names)]
    if by_name:
        return max(by_name, key=len)
    if len(releases) == 1:
        return next(iter(releases))
    ids = _grade_ids(data)
    shared = {release: len(ids & _grade_ids_of(notebook)) for release, notebook in releases.items()}
    best = max(shared, key=shared.get)
    return best if shared[best] else None


def _grade_ids(data: bytes) -> set[str]:
    try:
        cells = json.loads(data).get("cells", [])
        return {cell["metadata"]["nbgrader"]["grade_id"] for cell in cells if _has_grade_id(cell)}
    except (ValueError, AttributeError, TypeError):
        return set()


def _has_grade_id(cell: object) -> bool:
    return isinstance(cell, dict) and isinstance(cell.get("metadata", {}).get("nbgrader", {}).get("grade_id"), str)


def _grade_ids_of(notebook: nbformat.NotebookNode) -> set[str]:
    return {cell.metadata["nbgrader"]["grade_id"] for cell in notebook.cells if "nbgrader" in cell.metadata}


def _unusable(item: _Input, notebook: bool) -> tuple[str, str]:
    """(why to quarantine, why to skip) a file, both "" for a notebook to grade."""
    if item.kind in ("junk", "link"):
        return "", item.problem
    if item.kind == "archive":
        return "", "a zip archive: its files are listed one by one"
    if item.problem:
        problem = item.problem if item.data is not None else f"not extracted: {item.problem}"
        return (problem, "") if notebook or item.data is not None else ("", problem)
    unsafe = "its path in the archive is absolute or climbs out with '..' (a crafted zip)" if item.unsafe else ""
    if not notebook:
        return "", "not a notebook" + (f"; {unsafe}" if unsafe else "")
    if ".ipynb_checkpoints" in item.source.split("/"):
        return "", "a Jupyter checkpoint (autosave copy), not the submission"
    if unsafe:
        return f"{unsafe}; it was not graded", ""
    return "", ""


def _is_notebook(path: str, data: bytes | None) -> bool:
    """A .ipynb file, or a JSON file that says it is a notebook ("perceptron.ipynb.txt")."""
    if path.lower().endswith(".ipynb"):
        return True
    head = (data or b"").lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"{") and b'"nbformat"' in head


# ---------------------------------------------------------------- writing the layout


class _Collector:
    """Writes one run's files under the course folder and its report."""

    def __init__(self, course: Path, assignment: str, releases: dict, others: dict):
        self.course, self.assignment = course, assignment
        self.releases, self.others = releases, others
        self.collected_root = course / "collected" / assignment
        self.quarantine_root = course / "quarantine" / assignment
        self.integrity_root = course / "integrity" / assignment
        self.report = CollectReport()
        self.written: set[Path] = set()  # files written by this run (never overwritten by it)
        self.reasons: dict[Path, list[str]] = defaultdict(list)  # quarantine folder -> its reason lines
        self.timestamps: dict[str, datetime] = {}  # student -> newest graded file (collect() only)
        self.findings: dict[str, list[tuple[str, str, list[Finding]]]] = defaultdict(list)

    # -- collect()

    def take(self, item: _Input, identify: _Identifier) -> _Candidate | None:
        """Keep the file's bytes and sort it: a candidate for grading, or a quarantined or skipped row."""
        student = identify.hint(item.source)
        notebook = _is_notebook(item.source, item.data)
        kept = self.keep(item) if item.data is not None else None
        quarantine_reason, skip_reason = _unusable(item, notebook)
        if not (quarantine_reason or skip_reason):
            try:
                student, lms_id, own_name, attempt = identify(item.source)
            except LookupError as error:
                quarantine_reason = str(error)
        if not (quarantine_reason or skip_reason):
            names = [item.source.rsplit("/", 1)[-1], own_name]
            release_name = _match_release(names, item.data, self.releases)
            if release_name:
                return _Candidate(item, kept, student, lms_id, own_name, attempt, release_name)
            quarantine_reason = (
                f"it matches none of the release notebooks ({', '.join(self.releases)}) by name or grade ids"
            )
        if quarantine_reason:
            self.quarantine(item, student, quarantine_reason, kept, identify.folder_name(item.source))
        else:
            self.skip(item.source, student, skip_reason, kept)
        return None

    def grade_newest(self, group: list[_Candidate], exclusive: bool = False) -> None:
        """Pre-flight the newest file of a student's notebook; older ones are skipped.

        ``exclusive`` (ids from names that students choose): when two gradable files with
        different contents claim the id, both are quarantined; neither replaces the other.
        """
        ordered = sorted(group, key=lambda c: c.order, reverse=True)
        results = {id(c): self.preflight(c) for c in ordered} if exclusive and len(group) > 1 else {}
        gradable = [c for c in ordered if results and results[id(c)].notebook is not None]
        if len({c.item.data for c in gradable}) > 1:
            names = ", ".join(sorted(c.item.source for c in gradable))
            for c in ordered:
                if results[id(c)].notebook is None:
                    self.quarantine(c.item, c.student, results[id(c)].quarantine_reason, c.kept)
                    self.add_findings(c.student, c.release_name, c.item.source, results[id(c)].findings)
                else:
                    self.quarantine(c.item, c.student, (
                        f"{len(gradable)} different files claim the student id {c.student!r} ({names}); students "
                        "choose these file names, so none replaces another: grade the right one by hand"), c.kept)
            return
        graded = None
        for candidate in ordered:
            if graded:
                reason = f"an older submission of {graded.release_name}: {graded.item.source} is newer and was graded"
                self.skip(candidate.item.source, candidate.student, reason, candidate.kept)
                continue
            result = results.get(id(candidate)) or self.preflight(candidate)
            if result.notebook is None:
                self.quarantine(candidate.item, candidate.student, result.quarantine_reason, candidate.kept)
                self.add_findings(candidate.student, candidate.release_name, candidate.item.source, result.findings)
                continue
            folder = self.course / "submitted" / candidate.student / self.assignment
            folder.mkdir(parents=True, exist_ok=True)
            self.write(folder / candidate.release_name, nbformat.writes(result.notebook).encode())
            self.graded(candidate.student, candidate.release_name, candidate.item.source, candidate.kept,
                        candidate.item.mtime, result.findings)
            self.timestamps[candidate.student] = max(
                candidate.item.mtime, self.timestamps.get(candidate.student, candidate.item.mtime)
            )
            graded = candidate

    def preflight(self, candidate: _Candidate):
        return preflight(candidate.item.data, self.releases[candidate.release_name], filename=candidate.own_name,
                         release_name=candidate.release_name, others=self.others)

    def keep(self, item: _Input) -> Path:
        """Write the file's raw bytes under collected/, at its path in the source (cleaned: never outside)."""
        parts = [_clean_part(part) for part in re.split(r"[\\/]", item.source) if part not in ("", ".", "..")]
        if parts and re.fullmatch(r"[A-Za-z]:", parts[0]):
            parts = parts[1:]
        return self.write(self.free_path(self.collected_root, parts or ["unnamed"]), item.data)

    def free_path(self, root: Path, parts: list[str]) -> Path:
        """``root/parts``, renamed ("name (2).ext") where this run already wrote the file or a file is in the way."""
        path = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            candidate, number = path / part, 1
            while (candidate in self.written or candidate.is_dir()) if last else candidate.is_file():
                number += 1
                name = Path(part)
                candidate = path / (f"{name.stem} ({number}){name.suffix}" if last else f"{part} ({number})")
            path = candidate
        return path

    def write(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():  # never written through
            path.unlink()
        path.write_bytes(data)
        self.written.add(path)
        return path

    # -- preflight_submitted()

    def remove_links_and_strays(self) -> None:
        """Symbolic links in ``submitted/`` (a student's folder, an assignment folder, a file) are never
        followed: each is removed, and the submission quarantined with the reason. So is a folder whose
        name cannot be a student id (nbgrader and the gradebook would choke on it)."""
        root = self.course / "submitted"
        for entry in sorted(root.iterdir()) if root.is_dir() else []:
            folder = entry / self.assignment
            if not entry.is_symlink() and STUDENT_ID.fullmatch(entry.name) and clean_text(entry.name) == entry.name:
                links = [folder] if folder.is_symlink() else [p for p in folder.iterdir() if p.is_symlink()] if (
                    folder.is_dir()) else []
                for link in sorted(links):
                    self.refuse(link, entry.name, f"a symbolic link (to {os.readlink(link)!r}), never followed")
                    link.unlink()
            elif entry.is_symlink():
                self.refuse(entry, "", f"a symbolic link (to {os.readlink(entry)!r}), never followed")
                entry.unlink()
            elif folder.is_dir():
                self.refuse(entry, "", "its folder name cannot be a student id")
                target = self.quarantine_root / "_unnamed" / _clean_part(_student_slug(clean_text(entry.name)) or "x")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(entry), self.free_path(target.parent, [target.name]))

    def refuse(self, path: Path, student: str, reason: str) -> None:
        source = clean_text(self.relative(path))
        self.quarantine(_Input(source, None, datetime.now(UTC)), student, reason)
        if student:
            self.add_findings(student, "", source, [Finding("quarantined", "", f"{source}: {reason}", "preflight")])

    def preflight_folder(self, folder: Path) -> None:
        """Pre-flight the notebooks of one student's submission folder, in place."""
        student = folder.parent.name
        by_release: dict[str, list[Path]] = defaultdict(list)
        for path in sorted(p for p in folder.glob("*.ipynb") if p.is_file() and not p.is_symlink()):
            release_name = (
                path.name
                if path.name in self.releases
                else _match_release([path.name], path.read_bytes(), self.releases)
            )
            if release_name is None:
                self.skip(self.relative(path), student, "not one of the release notebooks; left in place")
            else:
                by_release[release_name].append(path)
        for release_name, paths in by_release.items():
            exact = folder / release_name
            if exact in paths:
                for other in paths:
                    if other != exact:
                        self.skip(
                            self.relative(other),
                            student,
                            f"another copy of {release_name}, which is graded; left in place",
                        )
                self.preflight_file(exact, student, release_name)
            else:
                self.preflight_file(max(paths, key=lambda p: p.stat().st_mtime), student, release_name)
                for other in paths:
                    if other.exists() and other.name != release_name:
                        self.skip(self.relative(other), student, f"an older copy of {release_name}; left in place")

    def preflight_file(self, path: Path, student: str, release_name: str) -> None:
        raw, source, mtime = path.read_bytes(), self.relative(path), _submission_time(path)
        result = preflight(
            path, self.releases[release_name], filename=path.name, release_name=release_name, others=self.others
        )
        if result.notebook is None:
            kept = self.keep_original(student, path.name, raw)
            self.quarantine(_Input(source, raw, mtime), student, result.quarantine_reason, kept)
            self.add_findings(student, release_name, source, result.findings)
            path.unlink()
            self.move_lone_timestamp(path.parent, student)
            return
        kept = path
        if result.findings:
            kept = self.keep_original(student, path.name, raw)
            nbformat.write(result.notebook, path.with_name(release_name))
            if path.name != release_name:
                path.unlink()
        # a notebook collect() already repaired has no findings now: keep the findings it wrote then
        record = bool(result.findings) or not (self.integrity_root / f"{student}.preflight.json").exists()
        self.graded(student, release_name, source, kept, mtime, result.findings, record_findings=record)

    def keep_original(self, student: str, name: str, raw: bytes) -> Path:
        """The original under collected/<assignment>/<student>/, unless an identical copy is there."""
        target = self.collected_root / student / name
        if target.is_file() and target.read_bytes() == raw:
            return target
        number = 1
        while target.exists():
            number += 1
            target = target.with_name(f"{Path(name).stem} ({number}){Path(name).suffix}")
        return self.write(target, raw)

    def move_lone_timestamp(self, folder: Path, student: str) -> None:
        """A submission folder without notebooks: its timestamp goes to quarantine and the folder away."""
        if any(folder.glob("*.ipynb")):
            return
        timestamp = folder / "timestamp.txt"
        if timestamp.is_file():
            target = self.quarantine_root / student / "timestamp.txt"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(timestamp, target)
        if not any(folder.iterdir()):
            folder.rmdir()

    # -- rows

    def graded(self, student, release_name, source, kept, mtime, findings, record_findings=True) -> None:
        self.report.collected.append(
            {
                "student": student,
                "notebook": release_name,
                "source": source,
                "kept": self.relative(kept),
                "timestamp": _nbgrader_time(mtime),
                "findings": len(findings),
            }
        )
        if record_findings:
            self.add_findings(student, release_name, source, findings)

    def quarantine(
        self, item: _Input, student: str, reason: str, kept: Path | None = None, folder_name: str = ""
    ) -> None:
        """Copy the file to quarantine/<assignment>/<student, folder_name or file stem>/ and note the reason."""
        leaf = item.source.rsplit("/", 1)[-1] or "unnamed"
        folder = self.quarantine_root / (student or folder_name or _student_slug(Path(leaf).stem) or "unknown")
        if item.data is not None:
            self.write(self.free_path(folder, [_clean_part(leaf)]), item.data)
        self.reasons[folder].append(f"{item.source}: {reason}")
        self.report.quarantined.append(
            {"source": item.source, "student": student, "reason": reason, "kept": self.relative(kept) if kept else ""}
        )

    def skip(self, source: str, student: str, reason: str, kept: Path | None = None) -> None:
        self.report.skipped.append(
            {"source": source, "student": student, "reason": reason, "kept": self.relative(kept) if kept else ""}
        )

    def add_findings(self, student: str, notebook: str, source: str, findings: list[Finding]) -> None:
        self.findings[student].append((notebook, source, findings))

    def finish(self) -> None:
        """Write what is per student or per folder: timestamps, findings files, reasons."""
        for student, moment in self.timestamps.items():
            (self.course / "submitted" / student / self.assignment / "timestamp.txt").write_text(
                _nbgrader_time(moment) + "\n"
            )
        for student, notebooks in self.findings.items():
            self.write_student_findings(student, notebooks)
        for folder, lines in self.reasons.items():
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "reason.txt").write_text("\n".join(lines) + "\n", encoding="utf-8", errors="replace")

    def write_student_findings(self, student: str, notebooks: list[tuple[str, str, list[Finding]]]) -> None:
        """One file per student (the integrity report reads <student>.preflight.json)."""
        path = self.integrity_root / f"{student}.preflight.json"
        if len(notebooks) == 1:
            notebook, source, findings = notebooks[0]
        else:
            notebook = ", ".join(dict.fromkeys(name for name, _, _ in notebooks))
            source = ", ".join(source for _, source, _ in notebooks)
            findings = [
                Finding(f.vector, f"{name}: {f.cell}" if f.cell else name, f.detail, f.source)
                for name, _, found in notebooks
                for f in found
            ]
        write_findings(path, findings, student=student, notebook=notebook, source=source)

    def relative(self, path: Path) -> str:
        return Path(path).relative_to(self.course).as_posix() if Path(path).is_relative_to(self.course) else str(path)


def _clean_part(part: str) -> str:
    """A path component that is safe to create: no control characters, not too long."""
    part = re.sub(r"[\x00-\x1f]", "_", part)
    return part[:200] or "_"


def _submission_time(path: Path) -> datetime:
    """The submission's time: its folder's timestamp.txt (nbgrader's format), else the file's mtime."""
    timestamp = path.parent / "timestamp.txt"
    if timestamp.is_file():
        text = timestamp.read_text().strip().removesuffix(" UTC")
        for layout in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
            try:
                return datetime.strptime(text, layout).replace(tzinfo=UTC)
            except ValueError:
                continue
    return _file_mtime(path)


def _nbgrader_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size < 2**30 else f"{size / 2**30:.1f} GB"
