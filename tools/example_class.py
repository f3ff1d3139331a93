"""Make a small example class: an LMS-style zip of submissions, to try the grading commands on.

    python tools/example_class.py ch01_perceptron example-downloads.zip

The zip looks like Canvas's "Download submissions": one file per student, named
``<name>_<lms id>_<submission id>_<file name>``. Four students:

* ``doejane`` submits the reference solution (full marks);
* ``smithjohn`` answers only the first exercise, from the reference (partial marks);
* ``leeann`` submits the notebook unanswered and renamed by Colab ("Copy of ...");
* ``brownbob`` uploads the web page of the notebook instead of the notebook (quarantined).
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402


def example_zip(assignment: str, out: Path) -> Path:
    (source,) = harness.source_notebooks(assignment)
    release = harness.REPO / "exercises" / assignment / source.name
    if not release.is_file():
        raise SystemExit(f"no release notebook {release}: run `python tools/release.py` first")
    release_nb = nbformat.read(release, as_version=4)
    reference = harness.reference_codes(source)
    first = next(iter(reference))
    files = {
        f"doejane_1001_50001_{source.name}": nbformat.writes(harness.submission(release_nb, reference)),
        f"smithjohn_1002_50002_{source.name}": nbformat.writes(
            harness.submission(release_nb, {first: reference[first]})),
        f"leeann_1003_50003_Copy of {source.name}": nbformat.writes(release_nb),
        f"brownbob_1004_50004_{source.name}": "<!DOCTYPE html><html><body>perceptron.ipynb - Colab</body></html>",
    }
    with zipfile.ZipFile(out, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignment", choices=harness.assignments())
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    print(example_zip(args.assignment, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
