"""Keep out of the built pages what a reader's browser does not use.

- **Thebe.** Jupyter Book always loads ``sphinx_thebe``, which puts its configuration
  (``const THEBE_JS_URL = "https://unpkg.com/..."``) into every page, twice, so that
  every page logs "Identifier 'THEBE_JS_URL' has already been declared", and a
  ``text/x-thebe-config`` block. The book does not use Thebe (``launch_buttons.thebe``
  is off): its scripts, style sheet and configuration go.
- **Widget state.** A page whose cells create ipywidgets carries the widgets' whole
  state (tens of kilobytes of JSON) for a widget manager that the offline book does not
  load. The state goes; the pages draw a static rendering of each explorer with
  matplotlib.
- **Source maps and translations.** The themes ship source maps of their minified
  scripts and styles (3.5 MB, read only by a browser's developer tools) and the message
  catalogues of their own translation (read only when Sphinx builds): they are not
  copied into the site.
- **The downloadable notebook.** The theme's download menu offers the page as
  ``.ipynb``, a copy of the executed notebook (every figure inside it, again). The site
  offers the Colab notebook of the page instead (``tools/colab.py``), the one that the
  launch button opens: it runs anywhere, installs what it needs, and is small.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from docutils import nodes

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_SOURCE_MAP_COMMENT = re.compile(r"\n?(?://|/\*)# sourceMappingURL=[^\n]*?(?:\*/)?[ \t]*(?=\n|$)")


def _thebe_on(app) -> bool:
    return bool(app.config.html_theme_options.get("launch_buttons", {}).get("thebe"))


def _is_thebe(asset, thebe_on: bool) -> bool:
    if thebe_on:
        return False
    name = str(asset.filename or "")
    return "THEBE_JS_URL" in asset.attributes.get("body", "") or Path(name).name.startswith("sphinx-thebe.")


def _drop_thebe_config(app, doctree, docname) -> None:
    """sphinx-thebe's per-page ``<script type="text/x-thebe-config">``, unused with Thebe off."""
    if _thebe_on(app):
        return
    for node in list(doctree.findall(nodes.raw)):
        if "text/x-thebe-config" in node.astext():
            node.parent.remove(node)


def _trim_page(app, pagename, templatename, context, doctree) -> None:
    thebe_on = _thebe_on(app)
    if "script_files" in context:
        context["script_files"] = [
            js
            for js in context["script_files"]
            if js.attributes.get("type") != WIDGET_STATE and not _is_thebe(js, thebe_on)
        ]
    if "css_files" in context:
        context["css_files"] = [css for css in context["css_files"] if not _is_thebe(css, thebe_on)]


def _trim_site(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    static = out / "_static"
    for path in list(static.rglob("*.map")):
        path.unlink()
    for path in list(static.rglob("*.js")) + list(static.rglob("*.css")):
        if "mathjax" in path.parts:
            continue
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        stripped = _SOURCE_MAP_COMMENT.sub("", text)
        if stripped != text:
            path.write_text(stripped, encoding="utf-8", errors="surrogateescape")
    shutil.rmtree(static / "locales", ignore_errors=True)
    if not _thebe_on(app):
        for path in static.glob("sphinx-thebe.*"):
            path.unlink()
    # The download menu's .ipynb: the page's Colab notebook, where the repository has one.
    sources = out / "_sources"
    for copied in sources.rglob("*.ipynb"):
        colab = Path(app.srcdir) / copied.relative_to(sources)
        if colab.is_file():
            shutil.copyfile(colab, copied)


def setup(app):
    app.connect("doctree-resolved", _drop_thebe_config, priority=900)  # after sphinx-thebe adds it
    app.connect("html-page-context", _trim_page, priority=900)  # after myst-nb adds its scripts
    app.connect("build-finished", _trim_site)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1.0"}
