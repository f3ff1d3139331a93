"""Serve MathJax from the built site instead of a CDN, so that math renders offline.

MathJax 3 comes from the ``django-static-mathjax`` package on PyPI: it ships
MathJax's ``es5`` build inside the Python package ``mathjax`` (nothing of Django is
used). The HTML build copies that ``es5`` folder to ``_static/mathjax/es5`` and
points Sphinx's ``mathjax_path`` at the copy.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

MATHJAX_SCRIPT = "mathjax/es5/tex-chtml.js"  # relative to the site's _static folder


def mathjax_es5_dir() -> Path:
    """The installed MathJax ``es5`` folder, or a clear error when it is missing."""
    spec = importlib.util.find_spec("mathjax")
    es5 = Path(spec.origin).parent / "static" / "mathjax" / "es5" if spec and spec.origin else None
    if es5 is None or not (es5 / "tex-chtml.js").is_file():
        raise RuntimeError(
            "MathJax is not installed: the book serves MathJax from its own site so that math "
            "renders offline. Install the pinned environment: pip install -r requirements.txt"
        )
    return es5


def _use_local_mathjax(app, config) -> None:
    mathjax_es5_dir()  # fail at the start of the build, not at its end
    config.mathjax_path = MATHJAX_SCRIPT


def _copy_mathjax(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        target = Path(app.outdir) / "_static" / "mathjax" / "es5"
        shutil.copytree(mathjax_es5_dir(), target, dirs_exist_ok=True)


def setup(app):
    app.connect("config-inited", _use_local_mathjax)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1.0"}
