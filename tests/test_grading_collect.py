"""Collect (grading.collect): LMS zips and Colab folders into nbgrader's layout, losing
nothing: every input file is graded, quarantined or skipped, and its bytes are kept."""

import copy
import csv
import io
import os
import re
import struct
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import pytest

from grading.collect import RULES, CollectReport, collect, preflight_submitted
from grading.findings import read_findings

REPO = Path(__file__).resolve().parents[1]

ASSIGNMENT = "ch01_perceptron"
PERCEPTRON = REPO / "exercises" / ASSIGNMENT / "perceptron.ipynb"
BACKPROP = REPO / "exercises" / "ch02_backprop" / "backprop.ipynb"
EARLY, LATE = (2026, 11, 20, 10, 0, 0), (2026, 11, 21, 9, 30, 0)


def submission(answer: str = "mine", *, edit_test: bool = False) -> bytes:
    """The release with answers (and, if asked, an edited test cell), as a student would upload it."""
    notebook = nbformat.read(PERCEPTRON, as_version=4)
    for cell in notebook.cells:
        nbgrader = cell.metadata.get("nbgrader", {})
        if nbgrader.get("solution"):
            cell.source = cell.source.replace("raise NotImplementedError()", f"return {answer!r}")
        if edit_test and nbgrader.get("grade_id") == "test_fit":
            cell.source = "pass"
    return nbformat.writes(notebook).encode()


def zip_bytes(members: dict[str, bytes], when=LATE) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=when), data)
    return buffer.getvalue()


def write_zip(path: Path, members: dict[str, tuple[bytes, tuple]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, (data, when) in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=when), data)
    return path


def files(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()} if root.exists() else set()


def rows(report: CollectReport) -> list[dict]:
    return report.collected + report.quarantined + report.skipped


def assert_each_input_once(report: CollectReport, inputs: list[str]) -> None:
    assert sorted(row["source"] for row in rows(report)) == sorted(inputs)


def nbgrader_time(when: tuple) -> str:
    return datetime(*when).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def vectors_of(path: Path) -> list[str]:
    return [finding.vector for finding in read_findings(path)[1]]


# ---------------------------------------------------------------- Canvas


@pytest.fixture
def canvas(tmp_path) -> tuple[Path, dict]:
    nested = zip_bytes({"work/perceptron.ipynb": submission("bob's"), "__MACOSX/work/._perceptron.ipynb": b"\x00\x05"})
    members = {
        "doejane_12345_678901_perceptron.ipynb": (submission("first try"), EARLY),
        "doejane_12345_678902_perceptron-1.ipynb": (submission("second try", edit_test=True), LATE),
        "smithbob_LATE_222_333_work.zip": (nested, LATE),
        "__MACOSX/._doejane_12345_678901_perceptron.ipynb": (b"\x00\x05\x16\x07", LATE),
        "../../evil_9_9_perceptron.ipynb": (submission(), LATE),
        "/tmp/abs_1_1_readme.txt": (b"absolute", LATE),
        "leeann_444_555_perceptron.ipynb": (b"this is not a notebook", LATE),
        "kimmy_666_777_notes.pdf": (b"%PDF-1.4 the notebook, printed", LATE),
    }
    return write_zip(tmp_path / "canvas.zip", members), members


def test_canvas_zip_is_collected_into_nbgrader_layout(canvas, tmp_path):
    source, members = canvas
    course = tmp_path / "course"
    report = collect(source, course, ASSIGNMENT, rule="canvas")

    assert files(course / "submitted") == {
        "doejane/ch01_perceptron/perceptron.ipynb",
        "doejane/ch01_perceptron/timestamp.txt",
        "smithbob/ch01_perceptron/perceptron.ipynb",
        "smithbob/ch01_perceptron/timestamp.txt",
    }
    assert files(course / "quarantine" / ASSIGNMENT) == {
        "evil/evil_9_9_perceptron.ipynb",
        "evil/reason.txt",
        "leeann/leeann_444_555_perceptron.ipynb",
        "leeann/reason.txt",
    }
    assert files(course / "collected" / ASSIGNMENT) == {
        "doejane_12345_678901_perceptron.ipynb",
        "doejane_12345_678902_perceptron-1.ipynb",
        "smithbob_LATE_222_333_work.zip/work/perceptron.ipynb",
        "evil_9_9_perceptron.ipynb",
        "tmp/abs_1_1_readme.txt",
        "leeann_444_555_perceptron.ipynb",
        "kimmy_666_777_notes.pdf",
    }
    assert files(course / "integrity" / ASSIGNMENT) == {
        "doejane.preflight.json",
        "smithbob.preflight.json",
        "leeann.preflight.json",
    }
    # nothing written outside the course folder, whatever the member names said
    assert files(tmp_path) == {"canvas.zip"} | {f"course/{name}" for name in files(course)}
    collected = course / "collected" / ASSIGNMENT
    for name, (data, _) in members.items():
        if not name.startswith("__MACOSX") and name != "smithbob_LATE_222_333_work.zip":
            assert (collected / name.lstrip("/").removeprefix("../../")).read_bytes() == data

    inputs = [*members, "smithbob_LATE_222_333_work.zip/work/perceptron.ipynb"]
    assert_each_input_once(report, [*inputs, "smithbob_LATE_222_333_work.zip/__MACOSX/work/._perceptron.ipynb"])
    assert [(r["student"], r["source"]) for r in report.collected] == [
        ("doejane", "doejane_12345_678902_perceptron-1.ipynb"),
        ("smithbob", "smithbob_LATE_222_333_work.zip/work/perceptron.ipynb"),
    ]
    assert {r["source"]: r["student"] for r in report.quarantined} == {
        "../../evil_9_9_perceptron.ipynb": "evil",
        "leeann_444_555_perceptron.ipynb": "leeann",
    }
    skipped = {r["source"]: r["reason"] for r in report.skipped}
    assert "newer and was graded" in skipped["doejane_12345_678901_perceptron.ipynb"]
    assert "macOS" in skipped["__MACOSX/._doejane_12345_678901_perceptron.ipynb"]
    assert "not a notebook" in skipped["kimmy_666_777_notes.pdf"]
    assert "climbs out" in skipped["/tmp/abs_1_1_readme.txt"]
    assert "listed one by one" in skipped["smithbob_LATE_222_333_work.zip"]


def test_canvas_submissions_are_repaired_and_timestamped(canvas, tmp_path):
    source, _ = canvas
    course = tmp_path / "course"
    report = collect(source, course, ASSIGNMENT)
    doejane = course / "submitted" / "doejane" / ASSIGNMENT
    graded = nbformat.read(doejane / "perceptron.ipynb", as_version=4)
    release = nbformat.read(PERCEPTRON, as_version=4)
    by_id = {c.metadata["nbgrader"]["grade_id"]: c for c in graded.cells if "nbgrader" in c.metadata}
    assert by_id["test_fit"].source == release.cells[4].source
    assert "second try" in by_id["fit"].source
    assert (doejane / "timestamp.txt").read_text().strip() == nbgrader_time(LATE)
    assert report.collected[0]["timestamp"] == nbgrader_time(LATE)
    assert report.collected[0]["findings"] == 1
    context, _ = read_findings(course / "integrity" / ASSIGNMENT / "doejane.preflight.json")
    assert context == {
        "student": "doejane",
        "notebook": "perceptron.ipynb",
        "source": "doejane_12345_678902_perceptron-1.ipynb",
    }
    assert vectors_of(course / "integrity" / ASSIGNMENT / "doejane.preflight.json") == ["test-cell-edited"]
    assert vectors_of(course / "integrity" / ASSIGNMENT / "leeann.preflight.json") == [
        "invalid-notebook",
        "quarantined",
    ]
    reason = (course / "quarantine" / ASSIGNMENT / "leeann" / "reason.txt").read_text()
    assert reason.startswith("leeann_444_555_perceptron.ipynb: The file is not valid JSON")
    assert "crafted zip" in (course / "quarantine" / ASSIGNMENT / "evil" / "reason.txt").read_text()


def test_the_manifest_has_every_row_and_its_status(canvas, tmp_path):
    source, _ = canvas
    course = tmp_path / "course"
    report = collect(source, course, ASSIGNMENT)
    manifest = course / "collected" / ASSIGNMENT / "manifest.csv"
    report.write_manifest(manifest)
    with manifest.open(newline="") as file:
        table = list(csv.DictReader(file))
    assert list(table[0]) == ["status", "student", "notebook", "source", "kept", "timestamp", "findings", "reason"]
    assert [row["status"] for row in table] == ["collected"] * 2 + ["quarantined"] * 2 + ["skipped"] * 6
    assert sorted(row["source"] for row in table) == sorted(row["source"] for row in rows(report))
    doejane = next(row for row in table if row["status"] == "collected" and row["student"] == "doejane")
    assert doejane["kept"] == "collected/ch01_perceptron/doejane_12345_678902_perceptron-1.ipynb"
    assert doejane["findings"] == "1"


def test_a_formula_in_a_file_name_is_not_a_formula_in_the_manifest(tmp_path):
    source = write_zip(tmp_path / "canvas.zip", {"=HYPERLINK_1_1_x.pdf": (b"%PDF", LATE)})
    report = collect(source, tmp_path / "course", ASSIGNMENT)
    report.write_manifest(tmp_path / "manifest.csv")
    assert "'=HYPERLINK_1_1_x.pdf" in (tmp_path / "manifest.csv").read_text()


def test_zip_times_come_from_the_utc_field_when_the_zip_has_one(tmp_path):
    info = zipfile.ZipInfo("doejane_1_1_perceptron.ipynb", date_time=EARLY)
    moment = datetime(2026, 11, 22, 8, 15, 30, tzinfo=UTC)
    info.extra = struct.pack("<HHBi", 0x5455, 5, 1, int(moment.timestamp()))
    with zipfile.ZipFile(tmp_path / "canvas.zip", "w") as archive:
        archive.writestr(info, submission())
    report = collect(tmp_path / "canvas.zip", tmp_path / "course", ASSIGNMENT)
    assert report.collected[0]["timestamp"] == "2026-11-22 08:15:30.000000 UTC"


def test_namesakes_with_different_lms_ids_are_kept_apart(tmp_path):
    source = write_zip(
        tmp_path / "canvas.zip",
        {
            "doejane_111_1_perceptron.ipynb": (submission("one"), LATE),
            "doejane_222_2_perceptron.ipynb": (submission("two"), LATE),
        },
    )
    report = collect(source, tmp_path / "course", ASSIGNMENT)
    assert sorted(row["student"] for row in report.collected) == ["doejane_111", "doejane_222"]


def test_zip_bombs_are_capped(tmp_path):
    source = write_zip(
        tmp_path / "canvas.zip",
        {
            "big_1_1_perceptron.ipynb": (b" " * 50_000, LATE),
            "first_2_2_perceptron.ipynb": (submission("first"), LATE),
            "second_3_3_perceptron.ipynb": (submission("second"), LATE),
            "third_4_4_notes.txt": (b"x" * 20_000, LATE),
        },
    )
    size = len(submission("first"))
    report = collect(source, tmp_path / "course", ASSIGNMENT, max_member_bytes=size + 10, max_total_bytes=size + 100)
    assert [row["student"] for row in report.collected] == ["first"]
    reasons = {row["source"]: row["reason"] for row in report.quarantined + report.skipped}
    assert "max_member_bytes" in reasons["big_1_1_perceptron.ipynb"]
    assert "max_total_bytes" in reasons["second_3_3_perceptron.ipynb"]
    assert "not extracted" in reasons["third_4_4_notes.txt"]
    assert files(tmp_path / "course" / "collected" / ASSIGNMENT) == {"first_2_2_perceptron.ipynb"}


# ---------------------------------------------------------------- Moodle and rosters


@pytest.fixture
def moodle(tmp_path) -> Path:
    return write_zip(
        tmp_path / "moodle.zip",
        {
            "Jane Doe_12345_assignsubmission_file_/perceptron.ipynb": (submission("jane"), LATE),
            "José Núñez_67890_assignsubmission_file_/Copy of perceptron.ipynb": (submission("jose"), LATE),
            "Bob Stone_11111_assignsubmission_onlinetext_/onlinetext.html": (b"<p>see attachment</p>", LATE),
        },
    )


def test_moodle_folders_name_the_students(moodle, tmp_path):
    course = tmp_path / "course"
    report = collect(moodle, course, ASSIGNMENT, rule="moodle")
    assert files(course / "submitted") == {
        "jane_doe/ch01_perceptron/perceptron.ipynb",
        "jane_doe/ch01_perceptron/timestamp.txt",
        "jose_nunez/ch01_perceptron/perceptron.ipynb",
        "jose_nunez/ch01_perceptron/timestamp.txt",
    }
    assert vectors_of(course / "integrity" / ASSIGNMENT / "jose_nunez.preflight.json") == ["renamed-notebook"]
    assert vectors_of(course / "integrity" / ASSIGNMENT / "jane_doe.preflight.json") == []
    assert [(row["student"], row["reason"]) for row in report.skipped] == [("bob_stone", "not a notebook")]
    assert "José Núñez_67890_assignsubmission_file_/Copy of perceptron.ipynb" in files(
        course / "collected" / ASSIGNMENT
    )


def test_a_roster_maps_lms_ids_and_never_guesses(moodle, tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text("lms_id,student_id\n12345,s001\n11111,s003\n")
    course = tmp_path / "course"
    report = collect(moodle, course, ASSIGNMENT, rule="moodle", roster=roster)
    assert [row["student"] for row in report.collected] == ["s001"]
    (quarantined,) = report.quarantined
    assert quarantined["source"] == "José Núñez_67890_assignsubmission_file_/Copy of perceptron.ipynb"
    assert "not in the roster roster.csv" in quarantined["reason"]
    assert files(course / "quarantine" / ASSIGNMENT) == {"jose_nunez/Copy of perceptron.ipynb", "jose_nunez/reason.txt"}


def test_a_roster_maps_names_in_any_order(tmp_path):
    source = write_zip(tmp_path / "canvas.zip", {"doejane_12345_678901_perceptron.ipynb": (submission(), LATE)})
    roster = tmp_path / "roster.csv"
    roster.write_text("name,student_id\nJane Doe,s001\nJohn Roe,s002\n")
    report = collect(source, tmp_path / "course", ASSIGNMENT, roster=roster)
    assert [row["student"] for row in report.collected] == ["s001"]


# ---------------------------------------------------------------- Colab and folders


def test_colab_folder_picks_each_students_notebook_and_never_lets_two_claim_one_id(tmp_path):
    """Colab file names are chosen by students: two different files that claim one id are both
    quarantined (neither silently replaces the other); identical copies are one submission."""
    folder = tmp_path / "colab"
    folder.mkdir()
    written = {
        "perceptron__jdoe.ipynb": (submission("jdoe"), 1_000),
        "backprop__jdoe.ipynb": (BACKPROP.read_bytes(), 2_000),  # newer, but another assignment's
        "perceptron__asmith.ipynb": (submission("asmith, first"), 3_000),
        "perceptron__asmith (1).ipynb": (submission("someone else, as asmith"), 3_000),
        "perceptron__lee.ipynb": (submission("lee"), 3_000),
        "perceptron__lee (1).ipynb": (submission("lee"), 4_000),  # Drive's copy of the same file
        "Copy of perceptron.ipynb": (submission(), 3_000),
        "notes.txt": (b"my notes", 3_000),
    }
    for name, (data, mtime) in written.items():
        (folder / name).write_bytes(data)
        os.utime(folder / name, (mtime, mtime))
    course = tmp_path / "course"
    report = collect(folder, course, ASSIGNMENT, rule="colab")

    assert [(row["student"], row["source"]) for row in report.collected] == [
        ("jdoe", "perceptron__jdoe.ipynb"),
        ("lee", "perceptron__lee (1).ipynb"),
    ]
    assert files(course / "quarantine" / ASSIGNMENT) == {
        "jdoe/backprop__jdoe.ipynb",
        "jdoe/reason.txt",
        "asmith/perceptron__asmith.ipynb",
        "asmith/perceptron__asmith (1).ipynb",
        "asmith/reason.txt",
        "copy_of_perceptron/Copy of perceptron.ipynb",
        "copy_of_perceptron/reason.txt",
    }
    reasons = {row["source"]: row["reason"] for row in report.quarantined}
    assert "looks like ch02_backprop/backprop.ipynb" in reasons["backprop__jdoe.ipynb"]
    assert "no student found" in reasons["Copy of perceptron.ipynb"] and "colab" in reasons["Copy of perceptron.ipynb"]
    assert "2 different files claim the student id 'asmith'" in reasons["perceptron__asmith (1).ipynb"]
    assert not (course / "submitted" / "asmith").exists()
    assert [row["source"] for row in report.skipped] == ["notes.txt", "perceptron__lee.ipynb"]
    assert files(course / "collected" / ASSIGNMENT) == set(written)
    assert_each_input_once(report, list(written))
    timestamp = (course / "submitted" / "jdoe" / ASSIGNMENT / "timestamp.txt").read_text().strip()
    assert timestamp == "1970-01-01 00:16:40.000000 UTC"


def test_folder_rule_takes_the_first_folder_as_the_student(tmp_path):
    folder = tmp_path / "submissions"
    for path in ("jdoe/perceptron.ipynb", "asmith/work/perceptron.ipynb"):
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(submission())
    report = collect(folder, tmp_path / "course", ASSIGNMENT, rule="folder")
    assert sorted(row["student"] for row in report.collected) == ["asmith", "jdoe"]


def test_a_custom_rule_is_a_regex_with_a_student_group(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "jdoe-hw1.ipynb").write_bytes(submission())
    report = collect(folder, tmp_path / "course", ASSIGNMENT, rule=r"(?P<student>[a-z]+)-hw1\.ipynb$")
    assert [row["student"] for row in report.collected] == ["jdoe"]
    assert vectors_of(tmp_path / "course" / "integrity" / ASSIGNMENT / "jdoe.preflight.json") == ["renamed-notebook"]


@pytest.mark.parametrize(
    ("preset", "path", "student"),
    [
        ("canvas", "doejane_12345_678901_perceptron.ipynb", "doejane"),
        ("canvas", "doejane_LATE_12345_678901_perceptron-1.ipynb", "doejane"),
        ("moodle", "Jane Doe_12345_assignsubmission_file_/perceptron.ipynb", "Jane Doe"),
        ("moodle", "Jane Doe_12345_assignsubmission_file_perceptron.ipynb", "Jane Doe"),
        ("colab", "perceptron__jdoe.ipynb", "jdoe"),
        ("colab", "Copy of perceptron__jane_doe (2).ipynb", "jane_doe"),
        ("folder", "jdoe/anything/perceptron.ipynb", "jdoe"),
    ],
)
def test_presets_extract_the_student(preset, path, student):
    assert re.search(RULES[preset], path)["student"] == student


# ---------------------------------------------------------------- bad input


def test_bad_input_gets_clear_errors(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="no submissions at"):
        collect(tmp_path / "missing.zip", tmp_path / "course", ASSIGNMENT)
    with pytest.raises(ValueError, match="canvas, colab, folder, moodle"):
        collect(folder, tmp_path / "course", ASSIGNMENT, rule="cnvas")
    with pytest.raises(FileNotFoundError, match=r"ch09_nothing.*tools/release.py ch09_nothing"):
        collect(folder, tmp_path / "course", "ch09_nothing")
    (tmp_path / "not.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a zip archive"):
        collect(tmp_path / "not.zip", tmp_path / "course", ASSIGNMENT)
    (tmp_path / "roster.csv").write_text("who,id\n")
    with pytest.raises(ValueError, match="name,student_id or lms_id,student_id"):
        collect(folder, tmp_path / "course", ASSIGNMENT, roster=tmp_path / "roster.csv")


# ---------------------------------------------------------------- submissions already in place


def test_preflight_submitted_repairs_in_place_and_quarantines(tmp_path):
    course = tmp_path / "course"
    originals = {
        "jdoe/ch01_perceptron/perceptron.ipynb": submission("jdoe", edit_test=True),
        "asmith/ch01_perceptron/perceptron.ipynb": b"\x00broken",
        "bob/ch01_perceptron/perceptron.ipynb": submission("bob"),
        "cara/ch01_perceptron/Copy of perceptron.ipynb": submission("cara"),
    }
    for path, data in originals.items():
        (course / "submitted" / path).parent.mkdir(parents=True, exist_ok=True)
        (course / "submitted" / path).write_bytes(data)
        (course / "submitted" / path).with_name("timestamp.txt").write_text("2026-11-21 14:03:00.000000 UTC\n")
    report = preflight_submitted(course, ASSIGNMENT)

    assert files(course / "submitted") == {
        "jdoe/ch01_perceptron/perceptron.ipynb",
        "jdoe/ch01_perceptron/timestamp.txt",
        "bob/ch01_perceptron/perceptron.ipynb",
        "bob/ch01_perceptron/timestamp.txt",
        "cara/ch01_perceptron/perceptron.ipynb",
        "cara/ch01_perceptron/timestamp.txt",
    }
    assert not (course / "submitted" / "asmith").joinpath(ASSIGNMENT).exists()
    assert files(course / "quarantine" / ASSIGNMENT) == {
        "asmith/perceptron.ipynb",
        "asmith/reason.txt",
        "asmith/timestamp.txt",
    }
    collected = course / "collected" / ASSIGNMENT
    assert files(collected) == {"jdoe/perceptron.ipynb", "asmith/perceptron.ipynb", "cara/Copy of perceptron.ipynb"}
    assert (collected / "jdoe" / "perceptron.ipynb").read_bytes() == originals["jdoe/ch01_perceptron/perceptron.ipynb"]
    assert (course / "submitted" / "bob" / ASSIGNMENT / "perceptron.ipynb").read_bytes() == submission("bob")
    integrity = course / "integrity" / ASSIGNMENT
    assert vectors_of(integrity / "jdoe.preflight.json") == ["test-cell-edited"]
    assert vectors_of(integrity / "bob.preflight.json") == []
    assert vectors_of(integrity / "cara.preflight.json") == ["renamed-notebook"]
    assert [row["student"] for row in report.quarantined] == ["asmith"]
    assert {row["student"]: row["timestamp"] for row in report.collected}["jdoe"] == "2026-11-21 14:03:00.000000 UTC"

    again = preflight_submitted(course, ASSIGNMENT)
    assert [row["findings"] for row in again.collected] == [0, 0, 0]
    assert vectors_of(integrity / "jdoe.preflight.json") == ["test-cell-edited"], "the first run's findings stay"
    assert files(collected) == {"jdoe/perceptron.ipynb", "asmith/perceptron.ipynb", "cara/Copy of perceptron.ipynb"}


def test_collect_then_preflight_submitted_changes_nothing(canvas, tmp_path):
    source, _ = canvas
    course = tmp_path / "course"
    collect(source, course, ASSIGNMENT)
    before = {name: (course / name).read_bytes() for name in files(course)}
    report = preflight_submitted(course, ASSIGNMENT)
    assert [row["findings"] for row in report.collected] == [0, 0]
    assert {name: (course / name).read_bytes() for name in files(course)} == before


def test_a_release_folder_can_be_given(tmp_path):
    release_dir = tmp_path / "release"
    release_dir.mkdir()
    notebook = nbformat.read(PERCEPTRON, as_version=4)
    smaller = copy.deepcopy(notebook)
    smaller.cells = notebook.cells[:5]
    nbformat.write(smaller, release_dir / "perceptron.ipynb")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "perceptron__jdoe.ipynb").write_text(nbformat.writes(smaller))
    report = collect(folder, tmp_path / "course", ASSIGNMENT, rule="colab", release_dir=release_dir)
    assert [row["findings"] for row in report.collected] == [0]


# ---------------------------------------------------------------- links and hostile bytes


def test_symbolic_links_are_never_followed_in_zips_or_in_submitted(tmp_path):
    """A zip member that is a link is not extracted; a link in submitted/ (to the instructor's
    source notebook, or a whole folder) is removed and quarantined, its target untouched."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        link = zipfile.ZipInfo("doejane_1_2_perceptron.ipynb")
        link.external_attr = (0o120777 << 16)  # a symbolic link, whose "content" is its target
        zipped.writestr(link, "/etc/passwd")
    (tmp_path / "links.zip").write_bytes(archive.getvalue())
    report = collect(tmp_path / "links.zip", tmp_path / "course", ASSIGNMENT, rule="canvas")
    assert report.collected == [] and "symbolic link" in report.skipped[0]["reason"]

    course = tmp_path / "course"
    secret = tmp_path / "source.ipynb"
    secret.write_bytes(submission("the instructor's"))
    before = secret.read_bytes()
    linked_file = course / "submitted" / "mallory" / ASSIGNMENT
    linked_file.mkdir(parents=True)
    (linked_file / "perceptron.ipynb").symlink_to(secret)
    (course / "submitted" / "eve").mkdir()
    (course / "submitted" / "eve" / ASSIGNMENT).symlink_to(secret.parent)
    (course / "submitted" / "trudy").symlink_to(tmp_path)
    report = preflight_submitted(course, ASSIGNMENT)
    assert report.collected == []
    assert {row["student"] for row in report.quarantined} >= {"mallory", "eve"}
    assert all("symbolic link" in row["reason"] for row in report.quarantined)
    assert secret.read_bytes() == before and secret.exists()
    assert not any(p.is_symlink() for p in (course / "submitted").rglob("*"))
    assert "quarantined" in vectors_of(course / "integrity" / ASSIGNMENT / "mallory.preflight.json")


def test_no_byte_sequence_stops_collect(tmp_path):
    """Lone surrogates (as JSON escapes), JSON nested beyond any parser, member names that are not
    UTF-8, and a folder name that is not a student id: each file is sorted, the batch goes on."""
    notebook = submission("ok").decode()
    surrogates = notebook.replace('"ok"', '"ok \\udc80"').replace('"cells": [', '"cells": [{"cell_type": "markdown", '
                                                                     '"metadata": {"\\ud800": 1}, "source": "\\udfff"}, ', 1)
    deep = notebook.replace('"metadata": {', '"metadata": {"deep": ' + "[" * 100_000 + "]" * 100_000 + ",", 1)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("doejane_1_2_perceptron.ipynb", surrogates)
        zipped.writestr("smithjohn_3_4_perceptron.ipynb", deep)
    data = bytearray(archive.getvalue())
    (tmp_path / "good.zip").write_bytes(bytes(data))
    report = collect(tmp_path / "good.zip", tmp_path / "course", ASSIGNMENT, rule="canvas")
    assert [row["student"] for row in report.collected] == ["doejane"]
    assert "invalid-notebook" in vectors_of(tmp_path / "course" / "integrity" / ASSIGNMENT / "doejane.preflight.json")
    assert "nested too deeply" in report.quarantined[0]["reason"]
    nbformat.read(tmp_path / "course" / "submitted" / "doejane" / ASSIGNMENT / "perceptron.ipynb", as_version=4)
    report.write_manifest(tmp_path / "manifest.csv")

    flagged = io.BytesIO()
    with zipfile.ZipFile(flagged, "w") as zipped:
        info = zipfile.ZipInfo("doXjane_1_2_perceptron.ipynb")
        info.flag_bits |= 0x800  # "the names are UTF-8": this one will not be
        zipped.writestr(info, notebook)
    (tmp_path / "bad.zip").write_bytes(flagged.getvalue().replace(b"doXjane", b"do\xffjane"))
    report = collect(tmp_path / "bad.zip", tmp_path / "course2", ASSIGNMENT, rule="canvas")
    assert len(report.collected) == 1 and report.collected[0]["student"].startswith("do")

    course = tmp_path / "course3"
    odd = course / "submitted" / os.fsdecode(b"st\xffudent") / ASSIGNMENT
    odd.mkdir(parents=True)
    (odd / "perceptron.ipynb").write_bytes(submission("odd").replace(b'"odd"', b'"odd \\udc80"'))
    fine = course / "submitted" / "fine" / ASSIGNMENT
    fine.mkdir(parents=True)
    (fine / "perceptron.ipynb").write_bytes(surrogates.encode())
    report = preflight_submitted(course, ASSIGNMENT)
    assert [row["student"] for row in report.collected] == ["fine"]
    assert "cannot be a student id" in report.quarantined[0]["reason"]
    assert sorted(p.name for p in (course / "submitted").iterdir()) == ["fine"]
