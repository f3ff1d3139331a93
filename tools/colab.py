"""Write the Colab notebook of every page of the book, beside the page.

    python tools/colab.py           # (re)write book/<page>.ipynb for every page of _toc.yml
    python tools/colab.py --check   # write nothing; exit 1 naming each notebook that is out of date

The pages are MyST Markdown notebooks (``book/<page>.md``); Colab opens only ``.ipynb``.
For every page of ``_toc.yml`` that is a notebook (its front matter has a ``kernelspec``:
the pages that myst-nb executes and that get a launch button), this writes
``book/<page>.ipynb``: the page converted by jupytext, without outputs, after one
**set-up cell** that

- installs the course library ``dlvision`` when it is missing, from the repository named
  in ``_config.yml`` (``#subdirectory=lib``), the way the assignments' set-up cells do;
- installs every other package that the page imports and the runtime lacks (Colab has
  torch, numpy, matplotlib...; it does not have captum, for example);
- stands in for ``myst_nb.glue`` where the page uses it: ``glue`` puts a value into the
  text when the book is built; in a notebook the stand-in shows the value (or nothing,
  with ``display=False``), so the page runs without installing the book's tool chain;
- picks the device with ``dlvision.get_device()``: the GPU when the runtime has one, and
  it says so. Notebooks of pages that use torch ask Colab for a GPU runtime
  (``accelerator: GPU`` in their metadata).

The theme's launch button points at ``book/<page>.ipynb`` when that file exists beside
the page (``_config.yml`` keeps these notebooks out of the build with
``exclude_patterns``). Authors add nothing to their pages: they run this tool and commit
the notebook with the page. ``tests/test_colab.py`` fails when a notebook is missing, out
of date or left over.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import warnings
from pathlib import Path

import jupytext
import nbformat
import yaml

REPO = Path(__file__).resolve().parents[1]
MARKER = "colab-setup"  # the tag of the set-up cell
GLUE_MODULE = "myst_nb"  # stood in for, never installed
# Top-level modules whose presence says a page wants a GPU runtime on Colab.
GPU_MODULES = {"torch", "torchvision", "dlvision"}


def repository_url() -> str:
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    return config["repository"]["url"].rstrip("/")


def dlvision_spec() -> str:
    return f"dlvision @ git+{repository_url()}#subdirectory=lib"


def toc_pages() -> list[str]:
    """The pages of ``_toc.yml``, in order, as paths without suffix (``book/ch01_perceptron``)."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    walk(toc.get("sections"))
    return pages


def front_matter(path: Path) -> dict:
    text = path.read_text()
    match = re.match(r"---\s*\n(.*?)\n---\s*\n", text, re.DOTALL)
    return (yaml.safe_load(match.group(1)) or {}) if match else {}


def is_notebook_page(md: Path) -> bool:
    """What myst-nb executes and the theme gives a launch button: a kernelspec in the front matter."""
    return md.suffix == ".md" and "kernelspec" in front_matter(md)


def notebook_pages() -> list[Path]:
    """The ``.md`` file of every page of the table of contents that is a notebook."""
    return [REPO / f"{page}.md" for page in toc_pages() if is_notebook_page(REPO / f"{page}.md")]


def colab_path(md: Path) -> Path:
    return md.with_suffix(".ipynb")


_IMPORT_LINE = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import\b|import\s+([\w.]+(?:\s*,\s*[\w.]+)*))", re.MULTILINE)


def imported_modules(source: str) -> set[str]:
    """Top-level names of the modules that a cell imports (IPython magics are skipped)."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    try:
        with warnings.catch_warnings():  # a cell's own warnings (an invalid escape...) are not ours
            warnings.simplefilter("ignore")
            tree = ast.parse("\n".join(lines))
    except SyntaxError:  # IPython syntax ast cannot read: fall back to the import lines
        found = set()
        for frm, imp in _IMPORT_LINE.findall(source):
            found.update(name.strip().split(".")[0] for name in (frm or imp).split(","))
        return found
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def third_party(modules: set[str]) -> set[str]:
    return {m for m in modules if m not in sys.stdlib_module_names and not m.startswith("_")}


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distribution(module: str) -> str:
    """The PyPI name that provides ``module`` in this environment (``sklearn`` -> ``scikit-learn``)."""
    dists = _distributions().get(module)
    if not dists:
        raise SystemExit(
            f"a page imports {module!r}, which is not installed here: install the course environment "
            "(pip install -r requirements.txt -e lib) before running tools/colab.py"
        )
    return sorted(dists)[0]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def installed_with_dlvision() -> frozenset[str]:
    """The distributions that installing dlvision brings (its requirements, transitively)."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = ["dlvision"]
    while todo:
        name = _canonical(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return frozenset(seen)


def setup_source(modules: set[str]) -> str:
    """The set-up cell for a page that imports ``modules`` (top-level names)."""
    bundled = installed_with_dlvision()
    extra = sorted(
        m for m in third_party(modules) - {"dlvision", GLUE_MODULE} if _canonical(distribution(m)) not in bundled
    )
    needs = ", ".join(f'("{m}", "{distribution(m)}")' for m in extra)
    lines = [
        "# Set-up (added by tools/colab.py): run this cell first. It installs what this page needs",
        "# when it is missing (on Colab: the course library `dlvision`, from the course repository),",
        "# and picks the GPU when the runtime has one (Colab: Runtime > Change runtime type > GPU).",
        "import importlib",
        "import importlib.util",
        "import subprocess",
        "import sys",
        "",
        f"_missing = [dist for module, dist in [{needs}] if importlib.util.find_spec(module) is None]"
        if extra
        else "_missing = []",
        "try:",
        "    import dlvision",
        "except ImportError:",
        f'    _missing.append("{dlvision_spec()}")',
        "if _missing:",
        '    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *_missing])',
        "    importlib.invalidate_caches()",
        "    import dlvision",
    ]
    if GLUE_MODULE in modules:
        lines += [
            "",
            f'if importlib.util.find_spec("{GLUE_MODULE}") is None:',
            "    # glue() puts a value into the text when the book is built; here it shows the value.",
            "    import types",
            "",
            "    from IPython.display import display as _display",
            "",
            "    def _glue(name, variable, display=True):",
            "        if display:",
            "            _display(variable)",
            "",
            f'    sys.modules["{GLUE_MODULE}"] = types.ModuleType("{GLUE_MODULE}")',
            f'    sys.modules["{GLUE_MODULE}"].glue = _glue',
        ]
    lines += ["", "device = dlvision.get_device()"]
    return "\n".join(lines)


def colab_notebook(md: Path) -> nbformat.NotebookNode:
    """The Colab notebook of the page ``md``: the set-up cell, then the page, with no outputs."""
    page = jupytext.read(md)
    modules: set[str] = set()
    for cell in page.cells:
        if cell.cell_type == "code":
            modules |= imported_modules(cell.source)
    cells = [nbformat.v4.new_code_cell(setup_source(modules), metadata={"tags": [MARKER]})]
    for cell in page.cells:
        if cell.cell_type == "code":
            cells.append(nbformat.v4.new_code_cell(cell.source, metadata=dict(cell.metadata)))
        elif cell.cell_type == "markdown":
            cells.append(nbformat.v4.new_markdown_cell(cell.source, metadata=dict(cell.metadata)))
        else:
            cells.append(nbformat.v4.new_raw_cell(cell.source, metadata=dict(cell.metadata)))
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i}"  # stable ids: regenerating an unchanged page changes nothing
    metadata = {
        "kernelspec": dict(page.metadata.get("kernelspec", {})),
        "language_info": {"name": "python"},
    }
    if modules & GPU_MODULES:
        metadata["accelerator"] = "GPU"
        metadata["colab"] = {"provenance": [], "gpuType": "T4"}
    nb = nbformat.v4.new_notebook(cells=cells, metadata=metadata)
    nbformat.validate(nb)
    return nb


def notebook_text(md: Path) -> str:
    return nbformat.writes(colab_notebook(md)) + "\n"


def expected() -> dict[Path, str]:
    """Every Colab notebook the book should have, with its content."""
    return {colab_path(md): notebook_text(md) for md in notebook_pages()}


def generated_here() -> list[Path]:
    """The notebooks beside the book's pages that this tool wrote (they carry its set-up cell)."""
    found = []
    for path in sorted((REPO / "book").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        nb = nbformat.read(path, as_version=4)
        if nb.cells and MARKER in nb.cells[0].get("metadata", {}).get("tags", []):
            found.append(path)
    return found


def main(argv: list[str]) -> int:
    check = "--check" in argv
    wanted = expected()
    stale = [p for p in generated_here() if p not in wanted]
    changed = [p for p, text in wanted.items() if not p.is_file() or p.read_text() != text]
    if check:
        for path in changed:
            print(f"out of date: {path.relative_to(REPO)}")
        for path in stale:
            print(f"left over (its page is not in _toc.yml or is not a notebook): {path.relative_to(REPO)}")
        if changed or stale:
            print("run `python tools/colab.py` and commit the notebooks with their pages")
        return 1 if changed or stale else 0
    for path in changed:
        path.write_text(wanted[path])
        print(f"wrote {path.relative_to(REPO)}")
    for path in stale:
        path.unlink()
        print(f"removed {path.relative_to(REPO)}")
    if not changed and not stale:
        print(f"all {len(wanted)} Colab notebooks are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
