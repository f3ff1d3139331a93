"""Shared pytest set-up: the repository's tools are importable as ``harness`` and ``release``."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

# Tests run on the CPU in the quick profile, whatever the machine has.
os.environ.setdefault("DLVISION_PROFILE", "quick")
os.environ.setdefault("MPLBACKEND", "Agg")
