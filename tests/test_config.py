"""The repository URL is configured once, in _config.yml, and every mention agrees with it."""

import re
from pathlib import Path

import nbformat
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO / "_config.yml").read_text())
URL = CONFIG["repository"]["url"].rstrip("/")
OWNER_REPO = URL.removeprefix("https://github.com/")

FILES = [REPO / "README.md", REPO / "lib" / "README.md", *sorted((REPO / "book").glob("*.md"))]
NOTEBOOKS = sorted(REPO.glob("solutions/*/*.ipynb")) + sorted(REPO.glob("exercises/*/*.ipynb"))
GITHUB = re.compile(r"github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?(?=[/#\s\"'`)]|$)")


def _mentions(text: str) -> set[str]:
    return {m for m in GITHUB.findall(text) if "visual-recognition" in m or m.startswith("dlvr")}


def test_repository_url_is_a_github_url():
    assert URL.startswith("https://github.com/") and OWNER_REPO.count("/") == 1, URL


def test_every_mention_of_the_repository_agrees_with_config():
    for path in FILES + NOTEBOOKS:
        for found in _mentions(path.read_text()):
            assert found == OWNER_REPO, f"{path.relative_to(REPO)} names {found}, _config.yml says {OWNER_REPO}"


def test_setup_cells_install_dlvision_from_the_configured_repository():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        setup = [c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "setup"]
        assert setup, f"{path.relative_to(REPO)}: no setup cell"
        source = setup[0].source
        assert f"git+{URL}" in source and "subdirectory=lib" in source, (
            f"{path.relative_to(REPO)}: the setup cell must install dlvision from git+{URL}#subdirectory=lib"
        )
