"""Serve MathJax from the built site instead of a CDN, so that math renders offline.

MathJax 3 comes from the ``django-static-mathjax`` package on PyPI: it ships
MathJax's ``es5`` build inside the Python package ``mathjax`` (nothing of Django is
used). The package holds every MathJax component (24 MB: SVG output, MathML input,
the speech-rule engine...). The book uses one combined component, ``tex-chtml.js``
(TeX input, HTML output, the context menu and the hidden MathML that screen readers
read), and what that component loads while it typesets:

- ``output/chtml/fonts/woff-v2/``: the web fonts of the HTML output, one per font
  variant, loaded when a glyph needs it;
- ``input/tex/extensions/``: TeX packages that ``autoload`` fetches the first time a
  page uses one of their macros (``\\boldsymbol``, ``\\cancel``, ``\\color``...).

The HTML build copies only these (about 2 MB) to ``_static/mathjax/es5`` and points
Sphinx's ``mathjax_path`` at the copy. ``tests/test_browser.py`` loads every page and
fails on a request that does not resolve, so a page that needs another file fails there.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

MATHJAX_SCRIPT = "mathjax/es5/tex-chtml.js"  # relative to the site's _static folder

# What the book serves, relative to MathJax's es5 folder: the combined component and
# the folders that it loads files from at run time.
SHIPPED = ("tex-chtml.js", "output/chtml/fonts/woff-v2", "input/tex/extensions")


def mathjax_es5_dir() -> Path:
    """The installed MathJax ``es5`` folder, or a clear error when it is missing."""
    spec = importlib.util.find_spec("mathjax")
    es5 = Path(spec.origin).parent / "static" / "mathjax" / "es5" if spec and spec.origin else None
    if es5 is None or not all((es5 / part).exists() for part in SHIPPED):
        raise RuntimeError(
            "MathJax is not installed: the book serves MathJax from its own site so that math "
            "renders offline. Install the pinned environment: pip install -r requirements.txt"
        )
    return es5


def copy_mathjax(target: Path) -> None:
    """Copy the parts of MathJax that the book uses into ``target`` (an ``es5`` folder)."""
    source = mathjax_es5_dir()
    if target.exists():
        shutil.rmtree(target)  # an earlier build may have copied more
    for part in SHIPPED:
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part)
        else:
            (target / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / part, target / part)


def _use_local_mathjax(app, config) -> None:
    mathjax_es5_dir()  # fail at the start of the build, not at its end
    config.mathjax_path = MATHJAX_SCRIPT


def _copy_mathjax(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        copy_mathjax(Path(app.outdir) / "_static" / "mathjax" / "es5")


def setup(app):
    app.connect("config-inited", _use_local_mathjax)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1.1"}
