"""The GitHub workflows are valid, pass a security linter, and run the README's commands.

They cannot run here, so they are checked twice, offline, with tools from PyPI:
``check-jsonschema`` validates them against the GitHub-workflow JSON schema that it
ships (SchemaStore's), and ``zizmor`` (``--offline``) audits what they do (unpinned
actions, credentials left in the checkout, template injection, permissions...).
Both are pinned in requirements.txt.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed: pip install -r requirements.txt", pytrace=False)
    return str(path)


def schema_check(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, files)],
        capture_output=True,
        text=True,
    )


def zizmor(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_tool("zizmor"), "--offline", str(folder)], capture_output=True, text=True)


def readme_commands() -> list[str]:
    """The README's set-up commands: the lines of the code block under "Set-up", without comments."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Set-up", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def steps(workflow: str) -> list[dict]:
    data = yaml.safe_load((WORKFLOWS / workflow).read_text())
    return [step for job in data["jobs"].values() for step in job.get("steps", [])]


def test_there_are_two_workflows():
    assert sorted(p.name for p in WORKFLOWS.glob("*.yml")) == ["book.yml", "ci.yml"]


def test_workflows_match_the_github_schema():
    proc = schema_check(*sorted(WORKFLOWS.glob("*.yml")))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflows_pass_zizmor():
    proc = zizmor(WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_linters_catch_broken_workflows(tmp_path):
    """Each check fails on a workflow with the kind of mistake it is there for."""
    (tmp_path / "bad-schema.yml").write_text(
        "on: push\njobs:\n  test:\n    runs-on: ubuntu-24.04\n    stepz:\n      - run: echo hi\n"
    )
    assert schema_check(tmp_path / "bad-schema.yml").returncode != 0, "a misspelt key passed the schema check"
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    (unsafe / "unsafe.yml").write_text(
        "on: pull_request_target\npermissions: write-all\njobs:\n  test:\n    runs-on: ubuntu-24.04\n"
        "    steps:\n      - uses: actions/checkout@v4\n"
        "      - run: echo \"${{ github.event.pull_request.title }}\"\n"
    )
    assert schema_check(unsafe / "unsafe.yml").returncode == 0
    assert zizmor(unsafe).returncode != 0, "zizmor let a template injection and write-all permissions pass"


def test_ci_workflow_runs_what_the_readme_says_ci_runs():
    assert [s.get("run") for s in steps("ci.yml") if "run" in s] == ["bash .ci/run"]
    assert "`bash .ci/run` is what CI runs" in (REPO / "README.md").read_text()


def test_book_workflow_builds_with_the_readme_command_and_deploys_it():
    build, test = readme_commands()
    runs = [s["run"] for s in steps("book.yml") if "run" in s]
    assert runs == [build], f"the book workflow runs {runs}, the README says {build!r}"
    uploads = [s for s in steps("book.yml") if s.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert uploads and uploads[0]["with"]["path"] == "_build/html"
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in steps("book.yml"))


def test_dot_ci_run_is_the_readme_set_up(monkeypatch):
    """.ci/run runs each part of the README's commands; the build is the test suite's own
    (tests/test_book.py runs the README's build command, into a temporary folder)."""
    import test_book

    build, test = readme_commands()
    lines = {line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()}
    ran = []
    monkeypatch.setattr(test_book.subprocess, "run", lambda cmd, **kwargs: ran.append(cmd))
    test_book.build(REPO, Path("/elsewhere"))
    suite_build = [Path(ran[0][0]).name, *ran[0][1:]]
    i = suite_build.index("--path-output")
    del suite_build[i : i + 2]
    parts = [p.strip() for p in f"{build} && {test}".split("&&")]
    assert any(p.startswith("jupyter-book build") for p in parts), "the README does not build the book"
    for part in parts:
        if part.startswith("jupyter-book build"):
            assert suite_build == [a if a != "." else str(REPO) for a in shlex.split(part)], suite_build
        else:
            assert part in lines, f".ci/run does not run the README's {part!r} as a command of its own"
