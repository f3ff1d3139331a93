"""What the pipeline reports about a submission: the integrity vocabulary.

Every stage (pre-flight, the static scan, the sandboxed run) describes what it saw as
:class:`Finding` records. They never change a grade by themselves (grades come from checks
outside the student's process): they tell the instructor what a submission tried, in the
integrity report.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from grading.wire import clean_text

# vector -> what it means, in the words of the integrity report
VECTORS: dict[str, str] = {
    # the notebook itself (pre-flight)
    "invalid-notebook": "the file is not a valid notebook",
    "renamed-notebook": "the notebook was submitted under another name",
    "wrong-kernel": "the notebook's kernelspec is not the release's",
    "test-cell-edited": "a test cell's code differs from the release",
    "test-cell-deleted": "a test cell is missing",
    "test-cell-markdown": "a test cell was changed to another cell type",
    "test-cell-duplicated": "a grade cell appears more than once",
    "grade-id-renamed": "a grade cell's id differs from the release",
    "metadata-stripped": "a grade cell lost its nbgrader metadata",
    "solution-cell-missing": "a solution cell is missing",
    "quarantined": "the submission could not be graded",
    # the student's code (static scan and run)
    "monkeypatch": "changes functions of numpy, torch, the course library or builtins",
    "ipython-hooks": "installs IPython input or AST transformers, or exception handlers",
    "rigged-object": "defines objects that pretend to be something else (a rigged __eq__, a fake module)",
    "inputs-changed": "changes the arrays that tests give it, in place (the tests' own copies stay as they were)",
    "rich-output": "displays HTML, scripts or other rich output (left out of the graded notebook)",
    "grader-files": "reads or writes the gradebook, the source notebooks or other files",
    "process-exit": "ends its own process (os._exit, sys.exit)",
    "resource-abuse": "runs out of time or memory, or starts processes",
    "huge-output": "produces outputs larger than the limit",
    "grader-detection": "inspects its environment to tell whether it is being graded",
    "forbidden-op": "calls a library operation that the exercise forbids",
    "network": "opens network connections",
    "kernel-died": "the student's process ended before grading finished",
    "malformed-reply": "the student's process sent the grader a reply that is not well-formed data (it was ended)",
}
SOURCES = ("preflight", "static", "runtime", "sandbox")


@dataclass(frozen=True)
class Finding:
    """One observation about a submission: ``vector`` (a key of :data:`VECTORS`), ``cell`` (a grade id,
    ``"cell 7"`` for a cell without one, ``""`` for the whole notebook), ``detail`` (a sentence for the
    instructor) and ``source`` (the stage that saw it)."""

    vector: str
    cell: str
    detail: str
    source: str

    def __post_init__(self):
        for name in ("cell", "detail"):  # student-chosen text: no lone surrogates, bounded
            object.__setattr__(self, name, clean_text(str(getattr(self, name)))[:4000])
        if self.vector not in VECTORS:
            raise ValueError(f"unknown integrity vector {self.vector!r}; known: {sorted(VECTORS)}")
        if self.source not in SOURCES:
            raise ValueError(f"unknown finding source {self.source!r}; known: {SOURCES}")

    def to_dict(self) -> dict:
        return asdict(self)


def write_findings(path: Path, findings: list[Finding], **context) -> None:
    """Write ``findings`` (and context such as student and notebook) as JSON, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({**context, "findings": [f.to_dict() for f in findings]}, indent=1))
    tmp.replace(path)


def read_findings(path: Path) -> tuple[dict, list[Finding]]:
    """The context and the findings that :func:`write_findings` wrote."""
    data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    findings = [Finding(**{k: f[k] for k in ("vector", "cell", "detail", "source")}) for f in data.pop("findings")]
    return {k: clean_text(v) if isinstance(v, str) else v for k, v in data.items()}, findings


def spreadsheet_safe(value: object) -> object:
    """Text that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``...) gets a leading quote."""
    return "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
