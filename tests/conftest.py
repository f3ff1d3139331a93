"""Shared pytest set-up: ``harness``, ``release``, ``cheats`` (tools/) and ``grading`` are importable."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO))  # the grading pipeline: `import grading`

# A real PostgreSQL server for the tests that need one (tests/postgres.py).
pytest_plugins = ["postgres"]

# Notebook kernels ("python3") start the first `python` on PATH: make it this
# environment's, so that the tests work without activating the virtual environment.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")

# Tests run on the CPU in the quick profile, whatever the machine has.
os.environ.setdefault("DLVISION_PROFILE", "quick")
os.environ.setdefault("MPLBACKEND", "Agg")
