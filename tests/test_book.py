"""The book builds from a clean slate with Sphinx warnings as errors, and renders offline."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# One pytest-xdist worker builds the book once for all these tests.
pytestmark = pytest.mark.xdist_group("book")
JUPYTER_BOOK = [str(Path(sys.executable).parent / "jupyter-book")]  # the command the README uses


def build(root: Path, output: Path) -> subprocess.CompletedProcess:
    # The README's build command, with the output moved out of the repository.
    return subprocess.run(
        [*JUPYTER_BOOK, "build", str(root), "--path-output", str(output), "-W", "-n", "--keep-going"],
        capture_output=True,
        text=True,
        timeout=1800,
    )


def toc_pages() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        for chapter in part.get("chapters", []):
            pages.append(chapter["file"])
            pages.extend(s["file"] for s in chapter.get("sections", []))
    return pages


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book")
    proc = build(REPO, out)
    assert proc.returncode == 0, f"the book build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return out / "_build" / "html"


def test_every_page_is_built(built):
    assert (built / "index.html").is_file()
    for page in toc_pages():
        assert (built / f"{page}.html").is_file(), f"{page} is in _toc.yml but was not built"


def test_math_is_served_from_the_site(built):
    assert (built / "_static" / "mathjax" / "es5" / "tex-chtml.js").is_file()
    for html in built.rglob("*.html"):
        text = html.read_text()
        assert "cdn.jsdelivr.net/npm/mathjax" not in text, f"{html.name} loads MathJax from a CDN"
        if "MathJax" in text or "math notranslate" in text:
            assert "_static/mathjax/es5/tex-chtml.js" in text, f"{html.name} has math but no local MathJax"


def test_bibliography_lists_the_references(built):
    text = (built / "book" / "references.html").read_text()
    bib = (REPO / "book" / "references.bib").read_text()
    assert bib.count("@") >= 1
    assert "Krizhevsky" in text


def test_a_cell_that_fails_fails_the_build(tmp_path):
    """The configuration turns an error in any executed cell into a failed build."""
    book = tmp_path / "book_src"
    (book / "book").mkdir(parents=True)
    shutil.copy(REPO / "_config.yml", book / "_config.yml")
    shutil.copytree(REPO / "book" / "_ext", book / "book" / "_ext")
    shutil.copy(REPO / "book" / "references.bib", book / "book" / "references.bib")
    (book / "_toc.yml").write_text("format: jb-book\nroot: book/broken\n")
    (book / "book" / "broken.md").write_text(
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
        "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n"
        "# Broken\n\n```{code-cell} ipython3\n1 / 0\n```\n"
    )
    proc = build(book, tmp_path / "out")
    assert proc.returncode != 0, "a page whose cell raises was built without an error"
    assert "ZeroDivisionError" in proc.stdout + proc.stderr
