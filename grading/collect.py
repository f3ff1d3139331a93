"""Collect: what an LMS or Colab gives the instructor, into nbgrader's layout, losing nothing.

    report = collect(Path("submissions.zip"), course, "ch01_perceptron", rule="canvas")
    report.write_manifest(course / "collected" / "ch01_perceptron" / "manifest.csv")

The source is a zip (nested folders and zips opened, up to a size budget; ``__MACOSX`` and the
like left out; links never followed) or a folder. Every file ends up in exactly one row of the
:class:`CollectReport`: ``collected`` (graded), ``quarantined`` (cannot be graded, with the
reason) or ``skipped`` (an older copy, not a notebook, an archive listed file by file). Under
the course folder:

``collected/<assignment>/<path in the source>``  every file's bytes as received (paths that try
to leave the folder are cleaned); ``submitted/<student>/<assignment>/<release notebook>`` and
``timestamp.txt``  the pre-flighted notebook (:mod:`grading.preflight`); ``integrity/<assignment>/
<student>.preflight.json``  the pre-flight findings; ``quarantine/<assignment>/<student or file
stem>/``  the files that cannot be graded, and ``reason.txt``.

A rule, a regular expression searched in each file's "/"-separated path in the source (a nested
zip's files are under the zip's path), says whose file it is: a group ``student``, and perhaps
``lms_id`` (for a roster with an ``lms_id`` column), ``name`` and ``ext`` (the file name the
student gave, where the LMS renamed it) and ``attempt`` (a resubmission number). The presets:
``canvas`` (``doejane_LATE_12345_678901_perceptron-1.ipynb``), ``moodle`` (``Jane Doe_12345_
assignsubmission_file_/perceptron.ipynb``), ``colab`` (``perceptron__jdoe.ipynb``: the part after
the last double underscore, and Drive's ``" (2)"`` as a resubmission) and ``folder`` (the first
folder). Without a roster the id is what the rule found, lower case, accents removed, anything
but letters, digits, ``.``, ``_`` and ``-`` made ``_``; namesakes with different LMS ids become
``<name>_<lms id>``. With a roster (CSV ``name,student_id`` or ``lms_id,student_id``; a name
matches in any order of its words) a student who is not in it is quarantined, never guessed.

Of several files of one student and notebook, the newest (time, then resubmission number) is
graded and the others are skipped; if it cannot be graded, the next one is tried. Where students
choose the file names (no LMS id), two different gradable files that claim one id are both
quarantined: neither replaces the other. Times are the zip members' (UTC when the zip records
it, else local) or the files' modification times.
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
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import nbformat

from grading.findings import Finding, spreadsheet_safe, write_findings
from grading.preflight import preflight
from grading.wire import clean_text

REPO = Path(__file__).resolve().parents[1]
RULES: dict[str, str] = {
    "canvas": (r"(?:^|/)(?P<student>[^/_]+)(?i:_late)?_(?P<lms_id>\d+)_(?:\d+_)?"
               r"(?P<name>[^/]+?)(?:-(?P<attempt>\d+))?(?P<ext>\.[^./]+)?(?=/|$)"),
    "moodle": (r"(?:^|/)(?P<student>[^/]+?)_(?P<lms_id>\d+)_assignsubmission_[a-z]+_"
               r"(?:/|(?P<name>[^/]+?)(?P<ext>\.[^./]+)?$)"),
    "colab": r"(?:^|/)(?P<name>[^/]*)__(?P<student>[^/]+?)(?: \((?P<attempt>\d+)\))?\.ipynb$",
    "folder": r"^(?P<student>[^/]+)/",
}
MAX_TOTAL_BYTES = 2 * 1024**3
MAX_MEMBER_BYTES = 100 * 1024**2
MAX_NESTING = 3  # zips inside zips opened, at most
STUDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")
JUNK = {"__MACOSX": "macOS archive metadata", ".DS_Store": "macOS folder metadata", "Thumbs.db": "Windows thumbnails",
        "desktop.ini": "Windows metadata"}
CRAFTED = "its path in the archive is absolute or climbs out with '..' (a crafted zip)"
MANIFEST_COLUMNS = ("status", "student", "notebook", "source", "kept", "timestamp", "findings", "reason")


@dataclass
class CollectReport:
    """Every file of the source, in one of three lists of rows (dicts)."""

    collected: list[dict] = field(default_factory=list)  # student, notebook, source, kept, timestamp, findings
    quarantined: list[dict] = field(default_factory=list)  # source, student, reason, kept
    skipped: list[dict] = field(default_factory=list)  # source, student, reason, kept

    def write_manifest(self, path: Path) -> None:
        """All rows as CSV, with a ``status`` column (collected, quarantined, skipped)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8", errors="replace") as file:
            writer = csv.DictWriter(file, MANIFEST_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for status in ("collected", "quarantined", "skipped"):
                for row in getattr(self, status):
                    writer.writerow({key: spreadsheet_safe(value) for key, value in {**row, "status": status}.items()})


def collect(source: Path, course: Path, assignment: str, *, rule: str = "canvas", roster: Path | None = None,
            release_dir: Path | None = None, max_total_bytes: int = MAX_TOTAL_BYTES,
            max_member_bytes: int = MAX_MEMBER_BYTES) -> CollectReport:
    """Put the submissions in ``source`` (a zip or a folder) into ``course``'s nbgrader layout.

    ``rule``: a preset of :data:`RULES` or a regular expression with a ``(?P<student>...)`` group;
    ``roster``: an optional CSV; ``release_dir``: the release notebooks' folder (default
    ``exercises/<assignment>``); ``max_total_bytes`` caps what is read from zips in all,
    ``max_member_bytes`` each file.
    """
    pattern = compile_rule(rule)
    source, course = Path(source), Path(course)
    if not source.exists():
        raise FileNotFoundError(f"no submissions at {source}: give the LMS's zip file or a folder of notebooks")
    collector = _Collector(course, assignment, release_dir)
    identify = _Identifier(pattern, rule, _Roster(Path(roster)) if roster else None)
    candidates = [c for item in _Reader(max_total_bytes, max_member_bytes).read(source)
                  if (c := collector.take(item, identify))]
    if identify.roster is None:  # namesakes with different LMS ids are kept apart
        lms_ids = defaultdict(set)
        for c in candidates:
            lms_ids[c.student].add(c.lms_id)
        for c in candidates:
            c.student += f"_{c.lms_id}" if len(lms_ids[c.student] - {None}) > 1 else ""
    groups: dict[tuple[str, str], list[_Candidate]] = defaultdict(list)
    for candidate in candidates:
        groups[candidate.student, candidate.release_name].append(candidate)
    chosen = "lms_id" not in pattern.groupindex and rule != "folder"  # students choose the names that give ids
    for group in groups.values():
        collector.grade_newest(group, exclusive=chosen)
    collector.finish()
    return collector.report


def preflight_submitted(course: Path, assignment: str, release_dir: Path | None = None) -> CollectReport:
    """Pre-flight the notebooks already in ``<course>/submitted/*/<assignment>/``, in place.

    For nbgrader's own exchange, or notebooks copied there by hand. Links are removed and
    quarantined, never followed. A notebook with findings is rewritten (its original kept under
    ``collected/<assignment>/<student>/``); one that cannot be graded moves to ``quarantine/``
    (with its ``timestamp.txt`` when no other notebook is left). A notebook under another name
    is graded under the release's name when the release's is missing.
    """
    collector = _Collector(Path(course), assignment, release_dir)
    collector.remove_links_and_strays()
    for folder in sorted((Path(course) / "submitted").glob(f"*/{assignment}")):
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
        raise ValueError(f"unknown rule {rule!r}: use a preset ({', '.join(sorted(RULES))}) or a regular expression "
                         "with a (?P<student>...) group")
    return pattern


def load_releases(assignment: str, release_dir: Path | None = None) -> dict[str, nbformat.NotebookNode]:
    """The assignment's release notebooks, by file name."""
    folder = Path(release_dir) if release_dir else REPO / "exercises" / assignment
    paths = sorted(folder.glob("*.ipynb")) if folder.is_dir() else []
    if not paths:
        raise FileNotFoundError(f"no release notebook for assignment {assignment!r}: expected {folder}/*.ipynb "
                                f"(python tools/release.py {assignment} generates it)")
    return {path.name: nbformat.read(path, as_version=4) for path in paths}


def _other_releases(assignment: str, release_dir: Path | None) -> dict[str, nbformat.NotebookNode]:
    """The other assignments' release notebooks (the release folder's siblings), by "<assignment>/<notebook>":
    a quarantine reason can then say which notebook a wrong upload is."""
    folder = (Path(release_dir) if release_dir else REPO / "exercises" / assignment).resolve()
    others = {}
    for path in sorted(folder.parent.glob("*/*.ipynb")):
        if path.parent.resolve() == folder:
            continue
        try:
            notebook = nbformat.read(path, as_version=4)
        except (OSError, ValueError):
            continue
        ids = [c.metadata["nbgrader"].get("grade_id") for c in notebook.cells if "nbgrader" in c.metadata]
        if ids and all(isinstance(i, str) for i in ids) and len(set(ids)) == len(ids):
            others[f"{path.parent.name}/{path.name}"] = notebook
    return others


# ---------------------------------------------------------------- reading the source


@dataclass
class _File:
    """One file of the source, sorted as it was read."""

    source: str  # its path in the source, "/"-separated; a nested zip's files under the zip's path
    data: bytes | None  # None when it was not read
    mtime: datetime
    skip: str = ""  # why it is not graded, though nothing is wrong (junk, a link, an archive, not a notebook)
    quarantine: str = ""  # why it cannot be graded


class _Reader:
    """The files of a folder or a zip (nested zips opened), within the caps on what is read."""

    def __init__(self, total: int, member: int):
        self.total, self.member, self.left = total, member, total

    def read(self, source: Path) -> Iterator[_File]:
        if source.is_dir():
            for folder, subfolders, files in os.walk(source):
                here = Path(folder)
                links = sorted(name for name in subfolders if (here / name).is_symlink())
                subfolders[:] = sorted(set(subfolders) - set(links))
                for path in (here / name for name in links + sorted(files)):
                    relative, mtime = path.relative_to(source).as_posix(), datetime.fromtimestamp(
                        path.lstat().st_mtime, UTC)
                    if path.is_symlink():
                        yield _File(relative, None, mtime, skip="a symbolic link, not followed")
                    else:
                        yield from self.entry(relative, mtime, path.stat().st_size, lambda p=path: p.open("rb"), 0,
                                              False)
            return
        try:
            archive = _open_zip(source)
        except (zipfile.BadZipFile, OSError, ValueError) as error:
            raise ValueError(f"{source} is not a zip archive that can be opened ({error}); give a .zip or a "
                             "folder") from None
        yield from self.members(archive, "", 0, False)

    def members(self, archive: zipfile.ZipFile, prefix: str, depth: int, crafted: bool) -> Iterator[_File]:
        with archive:
            for info in archive.infolist():
                path, mtime = prefix + info.filename, _zip_mtime(info)
                if stat.S_ISLNK(info.external_attr >> 16):
                    yield _File(path, None, mtime, skip="a symbolic link, not followed")
                elif not info.is_dir():
                    leaves = info.filename.startswith(("/", "\\")) or bool(re.match(r"[A-Za-z]:", info.filename)) \
                        or ".." in re.split(r"[\\/]", info.filename)
                    yield from self.entry(path, mtime, info.file_size, lambda i=info: archive.open(i), depth,
                                          crafted or leaves)

    def entry(self, path: str, mtime: datetime, size: int, opener, depth: int, crafted: bool) -> Iterator[_File]:
        """The files for one entry: itself, or for a zip, the zip and its files."""
        parts = path.split("/")
        junk = next((f"{JUNK[p]} ({p}), not a submission" for p in parts[:-1] if p in JUNK), "") or (
            f"{JUNK[parts[-1]]} ({parts[-1]}), not a submission" if parts[-1] in JUNK else
            "macOS metadata (a ._ file), not a submission" if parts[-1].startswith("._") else "")
        if junk:
            yield _File(path, None, mtime, skip=junk)
            return
        data, problem = b"", self.refuse(size)
        if not problem:
            try:
                with opener() as file:  # one byte more than allowed shows a member that lied about its size
                    data = file.read(min(self.member, self.left) + 1)
                problem = self.refuse(len(data))
            except Exception as error:  # a damaged member is that file's problem, never the batch's
                problem = f"it could not be read ({error})"
        if problem:
            kind = "quarantine" if _is_notebook(path, None) else "skip"
            yield _File(path, None, mtime, **{kind: f"not extracted: {problem}"})
            return
        self.left -= len(data)
        notebook = _is_notebook(path, data)
        if path.lower().endswith(".zip") and depth < MAX_NESTING:
            try:
                archive = _open_zip(data)
            except Exception as error:  # as above
                yield _File(path, data, mtime, quarantine=f"a zip archive that cannot be opened ({error})")
            else:
                yield _File(path, None, mtime, skip="a zip archive: its files are listed one by one")
                yield from self.members(archive, path + "/", depth + 1, crafted)
        elif path.lower().endswith(".zip"):
            yield _File(path, data, mtime, quarantine=f"a zip archive nested more than {MAX_NESTING} deep, not opened")
        elif not notebook:
            yield _File(path, data, mtime, skip="not a notebook" + (f"; {CRAFTED}" if crafted else ""))
        elif ".ipynb_checkpoints" in parts:
            yield _File(path, data, mtime, skip="a Jupyter checkpoint (autosave copy), not the submission")
        else:
            yield _File(path, data, mtime, quarantine=f"{CRAFTED}; it was not graded" if crafted else "")

    def refuse(self, size: int) -> str:
        """Why a file of ``size`` bytes cannot be read (a zip bomb, say), or ""."""
        if size > self.member:
            return f"it is {_megabytes(size)}, over the {_megabytes(self.member)} limit for one file (max_member_bytes)"
        if size > self.left:
            return f"the {_megabytes(self.total)} limit on everything extracted was reached (max_total_bytes)"
        return ""


def _open_zip(source: Path | bytes) -> zipfile.ZipFile:
    """A zip from its path or bytes; one whose names are flagged UTF-8 but are not is read with cp437 names."""
    try:
        return zipfile.ZipFile(source if isinstance(source, Path) else io.BytesIO(source))
    except UnicodeDecodeError:
        data = bytearray(source.read_bytes() if isinstance(source, Path) else source)
        for signature, offset in ((b"PK\x01\x02", 8), (b"PK\x03\x04", 6)):  # clear the flag in every header
            start = data.find(signature)
            while start >= 0:
                data[start + offset + 1] &= ~0x08 & 0xFF
                start = data.find(signature, start + 4)
        return zipfile.ZipFile(io.BytesIO(bytes(data)))


def _zip_mtime(info: zipfile.ZipInfo) -> datetime:
    """The member's UTC time from its extended-timestamp field ("UT"), else its DOS time read as local time."""
    extra, position = info.extra, 0
    while position + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, position)
        body = extra[position + 4:position + 4 + size]
        if tag == 0x5455 and len(body) >= 5 and body[0] & 1:  # flag 1: the modification time
            return datetime.fromtimestamp(struct.unpack_from("<i", body, 1)[0], UTC)
        position += 4 + size
    try:
        return datetime(*info.date_time).astimezone(UTC)
    except ValueError:
        return datetime(1980, 1, 1, tzinfo=UTC)


def _is_notebook(path: str, data: bytes | None) -> bool:
    """A .ipynb file, or a JSON file that says it is a notebook ("perceptron.ipynb.txt")."""
    head = (data or b"").lstrip(b"\xef\xbb\xbf \t\r\n")
    return path.lower().endswith(".ipynb") or (head.startswith(b"{") and b'"nbformat"' in head)


# ---------------------------------------------------------------- whose file, and which notebook


@dataclass
class _Candidate:
    """A notebook of a known student, to pre-flight."""

    item: _File
    kept: Path  # its raw bytes under collected/
    student: str
    lms_id: str | None
    own_name: str  # the file name the student gave it
    attempt: int
    release_name: str


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "_", _fold(text)).strip("._-")


class _Roster:
    """The roster CSV: ``name,student_id`` or ``lms_id,student_id``."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise FileNotFoundError(f"roster not found: {path}")
        self.path, rows = path, csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig")))
        columns = set(rows.fieldnames or ())
        if "student_id" not in columns or not columns & {"name", "lms_id"}:
            raise ValueError(f"roster {path} needs the columns name,student_id or lms_id,student_id; it has "
                             f"{sorted(columns)}")
        self.by_lms_id, self.by_name = {}, defaultdict(set)
        for row in rows:
            student_id = (row["student_id"] or "").strip()
            if not STUDENT_ID.fullmatch(student_id):
                raise ValueError(f"roster {path}, line {rows.line_num}: {student_id!r} cannot be a student id")
            if (row.get("lms_id") or "").strip():
                self.by_lms_id[row["lms_id"].strip()] = student_id
            words = re.findall(r"[a-z0-9]+", _fold(row.get("name") or ""))
            for i in range(len(words)):  # "Jane Doe" matches "janedoe" and "doejane"
                self.by_name["".join(words[i:] + words[:i])].add(student_id)

    def student_id(self, extracted: str, lms_id: str | None) -> str:
        """The roster's id for what a rule extracted; LookupError (the reason) when there is none or several."""
        if lms_id and lms_id in self.by_lms_id:
            return self.by_lms_id[lms_id]
        found = sorted(self.by_name.get("".join(re.findall(r"[a-z0-9]+", _fold(extracted))), ()))
        if len(found) == 1:
            return found[0]
        who = f"{extracted!r}" + (f" (LMS id {lms_id})" if lms_id else "")
        if found:
            raise LookupError(f"{who} matches several students of the roster {self.path.name}: {', '.join(found)}")
        raise LookupError(f"{who} is not in the roster {self.path.name}; add a row for this student (ids are "
                          "never guessed)")


class _Identifier:
    """Who a file belongs to and what the student named it, by the rule (and the roster)."""

    def __init__(self, pattern: re.Pattern, rule: str, roster: _Roster | None):
        self.pattern, self.rule, self.roster = pattern, rule, roster

    def __call__(self, path: str) -> tuple[str, str | None, str, int]:
        """(student id, LMS id, the student's own file name, resubmission number); LookupError: the reason."""
        match = self.pattern.search(path)
        if not match or not match["student"]:
            rule = f"rule {self.rule!r}" if self.rule in RULES else "the rule"
            raise LookupError(f"no student found in its path by the {rule} ({self.pattern.pattern})")
        groups, leaf = match.groupdict(), path.rsplit("/", 1)[-1]
        own_name = groups["name"] + (groups.get("ext") or ".ipynb") if groups.get("name") and match.end() == len(
            path) else leaf
        resubmission = re.search(r"(?:-(\d+)| \((\d+)\))\.[^.]+$", leaf)  # "perceptron-2.ipynb", "perceptron (2).ipynb"
        attempt = int(groups.get("attempt") or (resubmission and (resubmission[1] or resubmission[2])) or 0)
        lms_id = groups.get("lms_id")
        student = self.roster.student_id(match["student"], lms_id) if self.roster else _slug(match["student"])
        if not student:
            raise LookupError(f"the rule found the student {match['student']!r}, which gives no usable student id")
        return student, lms_id, own_name, attempt

    def hint(self, path: str) -> str:
        """The student id if it can be told, for rows about files that are not graded."""
        try:
            return self(path)[0]
        except LookupError:
            return ""

    def folder_name(self, path: str) -> str:
        """A name for the file's quarantine folder: the student id, else what the rule extracted."""
        match = self.pattern.search(path)
        return self.hint(path) or (_slug(match["student"] or "") if match else "")


def _match_release(names: list[str], data: bytes, releases: dict[str, nbformat.NotebookNode]) -> str | None:
    """The release notebook a file is: by name (the release's stem in a name), else by grade ids."""
    by_name = [release for release in releases if any(Path(release).stem.lower() in n.lower() for n in names)]
    if by_name or len(releases) == 1:
        return max(by_name or releases, key=len)
    try:
        ids = {c["metadata"]["nbgrader"]["grade_id"] for c in json.loads(data).get("cells", [])
               if isinstance(c.get("metadata", {}).get("nbgrader", {}).get("grade_id"), str)}
    except (ValueError, AttributeError, TypeError, RecursionError):
        ids = set()
    shared = {name: len(ids & {c.metadata.get("nbgrader", {}).get("grade_id") for c in release.cells})
              for name, release in releases.items()}
    best = max(shared, key=shared.get)
    return best if shared[best] else None


# ---------------------------------------------------------------- writing the layout


class _Collector:
    """Writes one run's files under the course folder, and its report."""

    def __init__(self, course: Path, assignment: str, release_dir: Path | None):
        self.course, self.assignment = course, assignment
        self.releases, self.others = load_releases(assignment, release_dir), _other_releases(assignment, release_dir)
        self.collected_root = course / "collected" / assignment
        self.quarantine_root = course / "quarantine" / assignment
        self.integrity_root = course / "integrity" / assignment
        self.report = CollectReport()
        self.written: set[Path] = set()  # files this run wrote (it never overwrites them)
        self.reasons: dict[Path, list[str]] = defaultdict(list)  # quarantine folder -> its reason lines
        self.timestamps: dict[str, datetime] = {}  # student -> newest graded file (collect() only)
        self.findings: dict[str, list[tuple[str, str, list[Finding]]]] = defaultdict(list)

    # -- collect()

    def take(self, item: _File, identify: _Identifier) -> _Candidate | None:
        """Keep the file's bytes and sort it: a candidate for grading, or a quarantined or skipped row."""
        student = identify.hint(item.source)
        kept = self.keep(item) if item.data is not None else None
        reason = item.quarantine
        if not (item.skip or reason):
            try:
                student, lms_id, own_name, attempt = identify(item.source)
                release_name = _match_release([item.source.rsplit("/", 1)[-1], own_name], item.data, self.releases)
                if release_name:
                    return _Candidate(item, kept, student, lms_id, own_name, attempt, release_name)
                reason = f"it matches none of the release notebooks ({', '.join(self.releases)}) by name or grade ids"
            except LookupError as error:
                reason = str(error)
        if reason:
            self.quarantine(item, student, reason, kept, identify.folder_name(item.source))
        else:
            self.skip(item.source, student, item.skip, kept)
        return None

    def grade_newest(self, group: list[_Candidate], exclusive: bool = False) -> None:
        """Pre-flight the newest file of a student's notebook; older ones are skipped. ``exclusive``:
        when two gradable files with different contents claim the id, both are quarantined."""
        ordered = sorted(group, key=lambda c: (c.item.mtime, c.attempt, c.item.source), reverse=True)
        results = {id(c): self.preflight(c) for c in ordered} if exclusive and len(group) > 1 else {}
        gradable = [c for c in ordered if results and results[id(c)].notebook is not None]
        conflict = len({c.item.data for c in gradable}) > 1
        graded = None
        for c in ordered:
            if graded:
                self.skip(c.item.source, c.student, f"an older submission of {graded.release_name}: "
                                                    f"{graded.item.source} is newer and was graded", c.kept)
                continue
            result = results.get(id(c)) or self.preflight(c)
            if result.notebook is None or conflict:
                reason = result.quarantine_reason if result.notebook is None else (
                    f"{len(gradable)} different files claim the student id {c.student!r} ("
                    f"{', '.join(sorted(g.item.source for g in gradable))}); students choose these file names, so "
                    "none replaces another: grade the right one by hand")
                self.quarantine(c.item, c.student, reason, c.kept)
                if result.notebook is None:
                    self.add_findings(c.student, c.release_name, c.item.source, result.findings)
                continue
            folder = self.course / "submitted" / c.student / self.assignment
            folder.mkdir(parents=True, exist_ok=True)
            self.write(folder / c.release_name, nbformat.writes(result.notebook).encode())
            self.graded(c.student, c.release_name, c.item.source, c.kept, c.item.mtime, result.findings)
            self.timestamps[c.student] = max(c.item.mtime, self.timestamps.get(c.student, c.item.mtime))
            graded = c

    def preflight(self, candidate: _Candidate):
        return preflight(candidate.item.data, self.releases[candidate.release_name], filename=candidate.own_name,
                         release_name=candidate.release_name, others=self.others)

    def keep(self, item: _File) -> Path:
        """The file's raw bytes under collected/, at its path in the source (cleaned: never outside)."""
        parts = [_clean_part(p) for p in re.split(r"[\\/]", item.source) if p not in ("", ".", "..")]
        parts = parts[1:] if parts and re.fullmatch(r"[A-Za-z]:", parts[0]) else parts
        return self.write(self.free_path(self.collected_root, parts or ["unnamed"]), item.data)

    def free_path(self, root: Path, parts: list[str]) -> Path:
        """``root/parts``, renamed ("name (2).ext") where this run already wrote the file or a file is in the way."""
        path = root
        for index, part in enumerate(parts):
            last, candidate, number = index == len(parts) - 1, path / part, 1
            while (candidate in self.written or candidate.is_dir()) if last else candidate.is_file():
                number += 1
                stem, suffix = (Path(part).stem, Path(part).suffix) if last else (part, "")
                candidate = path / f"{stem} ({number}){suffix}"
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
        """Links in ``submitted/`` (a student's folder, an assignment folder, a file) are removed and
        their submissions quarantined, never followed; so is a folder whose name cannot be a student id."""
        root = self.course / "submitted"
        for entry in sorted(root.iterdir()) if root.is_dir() else []:
            folder = entry / self.assignment
            if entry.is_symlink():
                self.refuse(entry, "", f"a symbolic link (to {os.readlink(entry)!r}), never followed")
                entry.unlink()
            elif not (STUDENT_ID.fullmatch(entry.name) and clean_text(entry.name) == entry.name):
                if folder.is_dir():  # nbgrader and the gradebook would choke on it
                    self.refuse(entry, "", "its folder name cannot be a student id")
                    target = self.quarantine_root / "_unnamed"
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(entry), self.free_path(target, [_clean_part(_slug(clean_text(entry.name)) or "x")]))
            else:
                links = [folder] if folder.is_symlink() else [p for p in folder.iterdir() if p.is_symlink()] if (
                    folder.is_dir()) else []
                for link in sorted(links):
                    self.refuse(link, entry.name, f"a symbolic link (to {os.readlink(link)!r}), never followed")
                    link.unlink()

    def refuse(self, path: Path, student: str, reason: str) -> None:
        source = clean_text(self.relative(path))
        self.quarantine(_File(source, None, datetime.now(UTC)), student, reason)
        if student:
            self.add_findings(student, "", source, [Finding("quarantined", "", f"{source}: {reason}", "preflight")])

    def preflight_folder(self, folder: Path) -> None:
        """Pre-flight the notebooks of one student's submission folder, in place."""
        student, by_release = folder.parent.name, defaultdict(list)
        for path in sorted(p for p in folder.glob("*.ipynb") if p.is_file() and not p.is_symlink()):
            name = path.name if path.name in self.releases else _match_release([path.name], path.read_bytes(),
                                                                               self.releases)
            if name is None:
                self.skip(self.relative(path), student, "not one of the release notebooks; left in place")
            else:
                by_release[name].append(path)
        for name, paths in by_release.items():
            graded = folder / name if folder / name in paths else max(paths, key=lambda p: p.stat().st_mtime)
            self.preflight_file(graded, student, name)
            for other in paths:
                if other != graded:
                    why = "another copy of {}, which is graded" if graded.name == name else "an older copy of {}"
                    self.skip(self.relative(other), student, why.format(name) + "; left in place")

    def preflight_file(self, path: Path, student: str, release_name: str) -> None:
        raw, source, mtime = path.read_bytes(), self.relative(path), _submission_time(path)
        result = preflight(path, self.releases[release_name], filename=path.name, release_name=release_name,
                           others=self.others)
        if result.notebook is None:
            kept = self.keep_original(student, path.name, raw)
            self.quarantine(_File(source, raw, mtime), student, result.quarantine_reason, kept)
            self.add_findings(student, release_name, source, result.findings)
            path.unlink()
            if not any(path.parent.glob("*.ipynb")):  # its timestamp goes to quarantine, the folder away
                if (path.parent / "timestamp.txt").is_file():
                    (self.quarantine_root / student).mkdir(parents=True, exist_ok=True)
                    shutil.move(path.parent / "timestamp.txt", self.quarantine_root / student / "timestamp.txt")
                if not any(path.parent.iterdir()):
                    path.parent.rmdir()
            return
        kept = path
        if result.findings:
            kept = self.keep_original(student, path.name, raw)
            nbformat.write(result.notebook, path.with_name(release_name))
            if path.name != release_name:
                path.unlink()
        # a notebook that collect() repaired has no findings now: the findings it wrote then stay
        record = bool(result.findings) or not (self.integrity_root / f"{student}.preflight.json").exists()
        self.graded(student, release_name, source, kept, mtime, result.findings, record_findings=record)

    def keep_original(self, student: str, name: str, raw: bytes) -> Path:
        """The original under collected/<assignment>/<student>/, unless an identical copy is there."""
        target, number = self.collected_root / student / name, 1
        while target.exists() and target.read_bytes() != raw:
            number += 1
            target = target.with_name(f"{Path(name).stem} ({number}){Path(name).suffix}")
        return target if target.exists() else self.write(target, raw)

    # -- rows and files

    def graded(self, student, release_name, source, kept, mtime, findings, record_findings=True) -> None:
        self.report.collected.append({"student": student, "notebook": release_name, "source": source,
                                      "kept": self.relative(kept), "timestamp": _nbgrader_time(mtime),
                                      "findings": len(findings)})
        if record_findings:
            self.add_findings(student, release_name, source, findings)

    def quarantine(self, item: _File, student: str, reason: str, kept: Path | None = None, folder_name="") -> None:
        """Copy the file to quarantine/<assignment>/<student, folder_name or file stem>/ and note the reason."""
        leaf = item.source.rsplit("/", 1)[-1] or "unnamed"
        folder = self.quarantine_root / (student or folder_name or _slug(Path(leaf).stem) or "unknown")
        if item.data is not None:
            self.write(self.free_path(folder, [_clean_part(leaf)]), item.data)
        self.reasons[folder].append(f"{item.source}: {reason}")
        self.report.quarantined.append({"source": item.source, "student": student, "reason": reason,
                                        "kept": self.relative(kept) if kept else ""})

    def skip(self, source: str, student: str, reason: str, kept: Path | None = None) -> None:
        self.report.skipped.append({"source": source, "student": student, "reason": reason,
                                    "kept": self.relative(kept) if kept else ""})

    def add_findings(self, student: str, notebook: str, source: str, findings: list[Finding]) -> None:
        self.findings[student].append((notebook, source, findings))

    def finish(self) -> None:
        """Write what is per student or per folder: timestamps, findings files (one per student: the
        integrity report reads <student>.preflight.json), reasons."""
        for student, moment in self.timestamps.items():
            (self.course / "submitted" / student / self.assignment / "timestamp.txt").write_text(
                _nbgrader_time(moment) + "\n")
        for student, notebooks in self.findings.items():
            notebook, source, findings = notebooks[0]
            if len(notebooks) > 1:
                notebook = ", ".join(dict.fromkeys(name for name, _, _ in notebooks))
                source = ", ".join(source for _, source, _ in notebooks)
                findings = [Finding(f.vector, f"{name}: {f.cell}" if f.cell else name, f.detail, f.source)
                            for name, _, found in notebooks for f in found]
            write_findings(self.integrity_root / f"{student}.preflight.json", findings, student=student,
                           notebook=notebook, source=source)
        for folder, lines in self.reasons.items():
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "reason.txt").write_text("\n".join(lines) + "\n", encoding="utf-8", errors="replace")

    def relative(self, path: Path) -> str:
        return Path(path).relative_to(self.course).as_posix() if Path(path).is_relative_to(self.course) else str(path)


def _clean_part(part: str) -> str:
    """A path component that is safe to create: no control characters, not too long."""
    return re.sub(r"[\x00-\x1f]", "_", part)[:200] or "_"


def _submission_time(path: Path) -> datetime:
    """The submission's time: its folder's timestamp.txt (nbgrader's format), else the file's mtime."""
    timestamp = path.parent / "timestamp.txt"
    text = timestamp.read_text().strip().removesuffix(" UTC") if timestamp.is_file() else ""
    for layout in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text, layout).replace(tzinfo=UTC)
        except ValueError:
            continue
    return datetime.fromtimestamp(path.lstat().st_mtime, UTC)


def _nbgrader_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size < 2**30 else f"{size / 2**30:.1f} GB"
