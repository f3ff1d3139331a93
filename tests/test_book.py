"""The book builds from a clean slate with Sphinx warnings as errors, and renders offline."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
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
        if 'class="math notranslate' in text:  # the page renders math
            assert "_static/mathjax/es5/tex-chtml.js" in text, f"{html.name} has math but no local MathJax"


def test_no_page_loads_scripts_or_styles_from_the_network(built):
    remote = re.compile(r"""<(?:script|link)[^>]+(?:src|href)=["'](?:https?:)?//[^"']+""")
    for html in built.rglob("*.html"):
        found = remote.findall(html.read_text())
        assert not found, f"{html.relative_to(built)} loads from the network: {found[:3]}"


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


# Timings and memory addresses differ from run to run; every other printed number must not.
_VOLATILE = re.compile(
    r"\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?\s*(?:s|ms|sec|seconds|min|it/s|img/s|images/s)\b|0x[0-9a-f]{6,}",
    re.IGNORECASE,
)


def _printed(nb) -> list[str]:
    """What each code cell printed (stdout and text results), with timings masked."""
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        text = ""
        for o in cell.get("outputs", []):
            if o.output_type == "stream" and o.name == "stdout":
                text += o.text
            elif o.output_type in ("execute_result", "display_data") and "text/plain" in o.get("data", {}):
                if not any(k.startswith("image/") or k == "text/html" for k in o.data):
                    text += o.data["text/plain"]
        out.append(_VOLATILE.sub("<t>", text))
    return out


def test_a_second_execution_prints_the_same_numbers(built):
    """Every page, executed again from scratch, prints what the build printed (seeded)."""
    executed = built.parent / "jupyter_execute"
    checked = 0
    for page in toc_pages():
        source = REPO / f"{page}.md"
        first_path = executed / f"{page}.ipynb"
        if not first_path.exists():  # a page with no code
            continue
        second = jupytext.read(source)
        NotebookClient(second, timeout=600, resources={"metadata": {"path": str(source.parent)}}).execute()
        first = nbformat.read(first_path, as_version=4)
        for i, (a, b) in enumerate(zip(_printed(first), _printed(second), strict=True)):
            assert a == b, f"{page}: code cell {i} printed different output on a second run:\n{a}\n---\n{b}"
        checked += 1
    assert checked > 0 or not any((REPO / f"{p}.md").read_text().count("{code-cell}") for p in toc_pages())
