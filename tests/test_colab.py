"""Every page of the book has its Colab notebook, up to date, and its set-up cell works on a fresh runtime.

``tools/colab.py`` writes ``book/<page>.ipynb`` beside each page that is a notebook; the
launch button of the page opens it on Colab. The built HTML's launch links are checked in
``tests/test_book.py``; the whole of each notebook runs on the Colab stand-in there too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import colab
import nbformat
import pytest
from colab_runtime import ColabRuntime

REPO = colab.REPO
PAGES = colab.notebook_pages()
ids = [str(p.relative_to(REPO)) for p in PAGES]
HINT = "run `python tools/colab.py` and commit book/*.ipynb with the pages"


def test_the_book_has_notebook_pages():
    assert PAGES, "no page of _toc.yml is a notebook: tools/colab.py would write nothing"


@pytest.mark.parametrize("md", PAGES, ids=ids)
def test_each_page_has_its_colab_notebook_up_to_date(md):
    notebook = colab.colab_path(md)
    assert notebook.is_file(), f"{notebook.relative_to(REPO)} is missing; {HINT}"
    assert notebook.read_text() == colab.notebook_text(md), (
        f"{md.relative_to(REPO)} changed after its Colab notebook was written; {HINT}"
    )


def test_no_notebook_is_left_over():
    wanted = {colab.colab_path(md) for md in PAGES}
    stale = [str(p.relative_to(REPO)) for p in sorted((REPO / "book").rglob("*.ipynb")) if p not in wanted]
    stale = [p for p in stale if ".ipynb_checkpoints" not in p]
    assert not stale, f"notebooks in book/ that belong to no page of _toc.yml: {stale}; {HINT}"


def test_check_mode_reports_a_page_changed_after_its_notebook(tmp_path, monkeypatch):
    """`tools/colab.py --check` fails when a page changes, and regenerating fixes it."""
    book = tmp_path / "book"
    book.mkdir()
    for name in ("_config.yml",):
        (tmp_path / name).write_text((REPO / name).read_text())
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/page\n")
    page = book / "page.md"
    page.write_text(
        "---\nkernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n"
        "# A page\n\n```{code-cell} ipython3\nfrom myst_nb import glue\nimport dlvision\nglue('n', 3)\n```\n"
    )
    monkeypatch.setattr(colab, "REPO", tmp_path)
    assert colab.main([]) == 0
    assert colab.main(["--check"]) == 0
    page.write_text(page.read_text().replace("glue('n', 3)", "glue('n', 4)"))
    assert colab.main(["--check"]) == 1
    assert colab.main([]) == 0 and colab.main(["--check"]) == 0
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/other\n")
    (book / "other.md").write_text("# No code here\n")
    assert colab.main(["--check"]) == 1, "a notebook whose page left the table of contents was not reported"
    colab.main([])
    assert not (book / "page.ipynb").exists()


@pytest.mark.parametrize("md", PAGES, ids=ids)
def test_notebook_starts_with_the_setup_cell_and_has_no_outputs(md):
    nb = nbformat.read(colab.colab_path(md), as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "code" and colab.MARKER in first.metadata.get("tags", []), (
        f"{md.name}: the first cell is not the Colab set-up cell; {HINT}"
    )
    assert f'"dlvision @ git+{colab.repository_url()}#subdirectory=lib"' in first.source
    assert "dlvision.get_device()" in first.source
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{md.name}: cell {i} has outputs"
    # The rest is the page, cell for cell.
    page = colab.jupytext.read(md)
    assert [c.source for c in nb.cells[1:]] == [c.source for c in page.cells]


def test_setup_installs_what_a_page_imports_and_colab_may_lack():
    source = colab.setup_source({"captum", "numpy", "torch", "os", "dlvision", "myst_nb"})
    assert '("captum", "captum")' in source, "captum is not installed with dlvision: the set-up must install it"
    assert '"numpy"' not in source and '"torch"' not in source, "dlvision's own requirements come with it"
    assert '"os"' not in source, "the standard library is never installed"
    assert 'sys.modules["myst_nb"]' in source, "a page that glues needs the stand-in for myst_nb.glue"
    assert "myst_nb" not in colab.setup_source({"numpy"}), "the glue stand-in appears only where a page glues"


def _run_setup(md: Path, runtime: ColabRuntime, probe: str) -> subprocess.CompletedProcess:
    nb = nbformat.read(colab.colab_path(md), as_version=4)
    return subprocess.run(
        [sys.executable, "-c", nb.cells[0].source + "\n" + probe],
        cwd=runtime.content,
        env=runtime.env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("md", PAGES, ids=ids)
def test_setup_cell_installs_dlvision_on_a_fresh_runtime(md, tmp_path):
    runtime = ColabRuntime(tmp_path, f"dlvision @ git+{colab.repository_url()}#subdirectory=lib")
    probe = "import dlvision.data\nfrom myst_nb import glue\nglue('probe', 'glued', display=True)\nprint('probe ok')"
    if "myst_nb" not in colab.colab_notebook(md).cells[0].source:
        probe = "import dlvision.data\nprint('probe ok')"
    proc = _run_setup(md, runtime, probe)
    assert proc.returncode == 0, f"{md.name}: the set-up cell failed on a fresh runtime\n{proc.stdout}{proc.stderr}"
    assert "dlvision: using" in proc.stdout, "the set-up cell did not pick a device"
    assert "probe ok" in proc.stdout
    calls = runtime.pip_calls()
    assert len(calls) == 1 and calls[0][-1] == f"dlvision @ git+{colab.repository_url()}#subdirectory=lib", calls


def test_setup_cell_installs_nothing_where_dlvision_is_installed(tmp_path):
    runtime = ColabRuntime(tmp_path, "unused", hidden=())
    proc = _run_setup(PAGES[0], runtime, "print('probe ok')")
    assert proc.returncode == 0 and "probe ok" in proc.stdout, proc.stderr
    assert runtime.pip_calls() == [], "pip ran although everything was installed"


def test_the_stand_in_refuses_dlvision_from_another_repository(tmp_path):
    """The stand-in's pip is strict, so the tests above prove that the URL is the configured one."""
    runtime = ColabRuntime(tmp_path, "dlvision @ git+https://github.com/someone/else#subdirectory=lib")
    proc = _run_setup(PAGES[0], runtime, "")
    assert proc.returncode != 0 and "dlvision must come from" in proc.stderr
