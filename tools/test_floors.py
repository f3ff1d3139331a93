"""Test dlvision with the oldest versions that lib/pyproject.toml allows.

    python tools/test_floors.py --python python3.10 --venv /tmp/floors-venv

Creates (or reuses) a virtual environment outside the repository with the given Python
(use the oldest that ``requires-python`` allows), installs every requirement of
``lib/pyproject.toml`` (with the ``notebook`` extra) at its floor, ``torch>=2.6`` as
``torch==2.6`` and so on, from binary wheels only, then dlvision itself without its
dependencies, and runs the library's tests (``tests/test_dlvision_*.py``) there. What pip
chooses for the packages that are not dlvision's own requirements (scipy, Pillow...) is
printed with the result.

It downloads several gigabytes (torch's wheels from PyPI come with CUDA): check the disk
first. It is not part of the test suite; run it when a floor changes.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Python < 3.11 has no tomllib; one library test reads pyproject.toml with it (tomli is the same parser).
RUN_PYTEST = (
    "import sys\n"
    "try:\n    import tomllib\nexcept ImportError:\n    import tomli\n    sys.modules['tomllib'] = tomli\n"
    "import pytest\nsys.exit(pytest.main(sys.argv[1:]))\n"
)


def floors() -> list[str]:
    """Every requirement of dlvision (and its notebook extra) pinned at its floor."""
    project = tomllib.loads((REPO / "lib" / "pyproject.toml").read_text())["project"]
    pins = []
    for requirement in project["dependencies"] + project["optional-dependencies"]["notebook"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)", requirement)
        if not match:
            raise SystemExit(f"lib/pyproject.toml: {requirement!r} is not of the form name>=version")
        pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the environment")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/floors-venv"), help="where the environment goes")
    args = parser.parse_args(argv)
    if REPO in args.venv.resolve().parents:
        raise SystemExit("put the environment outside the repository")
    python = args.venv / "bin" / "python"
    if not python.exists():
        subprocess.run([args.python, "-m", "venv", str(args.venv)], check=True)
    pins = floors()
    pip = [str(python), "-m", "pip", "install", "--quiet", "--only-binary=:all:"]
    subprocess.run([*pip, *pins, "pytest", "hypothesis", "tomli"], check=True)
    subprocess.run([*pip, "--no-deps", "--force-reinstall", str(REPO / "lib")], check=True)
    versions = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True)
    print("tested with:", subprocess.run([str(python), "--version"], capture_output=True, text=True).stdout.strip())
    print("  floors:", ", ".join(pins))
    print("  also:", ", ".join(line for line in versions.stdout.splitlines() if not line.startswith("dlvision")))
    tests = sorted(str(p) for p in (REPO / "tests").glob("test_dlvision_*.py"))
    env = dict(os.environ, DLVISION_PROFILE="quick", MPLBACKEND="Agg")
    # --noconftest: the suite's conftest.py needs the whole course environment, not dlvision's.
    command = [str(python), "-c", RUN_PYTEST, "-o", "addopts=", "--noconftest", "-q", "-p", "no:cacheprovider", *tests]
    return subprocess.run(command, cwd=args.venv, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
