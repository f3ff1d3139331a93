"""The book builds from a clean slate with Sphinx warnings as errors, and works for a reader.

One build per test session (the module's ``built`` fixture: the README's build command,
into a temporary folder). Over it:

- the HTML: math, scripts and styles served by the site itself, no Thebe, no widget state,
  no build warnings, an author-year bibliography that matches the citations, launch
  buttons that open the pages' Colab notebooks, a site under 20 MB;
- a real browser (Debian's headless Chromium through Selenium, ``tests/browser.py``), on
  every page, over ``http://`` and ``file://``: math rendered without errors, images loaded
  with alt text, no request to another host, no console error, search, launch and
  download links. Screenshots of every page go to ``_build/browser/`` (or
  ``$DLVR_SCREENSHOTS``) with ``summary.json`` (what was checked, and how long it took);
- every page run again as its Colab notebook on a stand-in for a fresh Colab runtime
  (``tests/colab_runtime.py``), printing the same numbers as the build.

``DLVR_BUILT_BOOK=_build/html python -m pytest tests/test_book.py`` checks a book that
is already built instead of building one (faster while writing a page).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import browser
import colab
import nbformat
import pybtex.database
import pytest
import yaml
from colab_runtime import ColabRuntime
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
JUPYTER_BOOK = [str(Path(sys.executable).parent / "jupyter-book")]  # the command the README uses
CONFIG = yaml.safe_load((REPO / "_config.yml").read_text())
OWNER_REPO = CONFIG["repository"]["url"].rstrip("/").removeprefix("https://github.com/")
BRANCH = CONFIG["repository"].get("branch", "main")
SITE_LIMIT_MB = 20
SCREENSHOTS = Path(os.environ.get("DLVR_SCREENSHOTS", REPO / "_build" / "browser"))


def build(root: Path, output: Path) -> subprocess.CompletedProcess:
    # The README's build command, with the output moved out of the repository, in the
    # reader's environment: conftest.py sets MPLBACKEND=Agg for the library's tests, and a
    # kernel started with it draws no figure at all (the pages would have no images).
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    return subprocess.run(
        [*JUPYTER_BOOK, "build", str(root), "--path-output", str(output), "-W", "-n", "--keep-going"],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
    )


def toc_pages() -> list[str]:
    return colab.toc_pages()


PAGES = toc_pages()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    given = os.environ.get("DLVR_BUILT_BOOK")
    if given:
        assert (Path(given) / "index.html").is_file(), f"DLVR_BUILT_BOOK={given} is not a built book"
        return Path(given).resolve()
    out = tmp_path_factory.mktemp("book")
    start = time.perf_counter()
    proc = build(REPO, out)
    assert proc.returncode == 0, f"the book build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    (out / "build-seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    return out / "_build" / "html"


def html_files(built: Path) -> list[Path]:
    return sorted(built.rglob("*.html"))


def test_every_page_is_built(built):
    assert (built / "index.html").is_file()
    for page in PAGES:
        assert (built / f"{page}.html").is_file(), f"{page} is in _toc.yml but was not built"


def test_math_is_served_from_the_site(built):
    assert (built / "_static" / "mathjax" / "es5" / "tex-chtml.js").is_file()
    for html in html_files(built):
        text = html.read_text()
        assert "cdn.jsdelivr.net/npm/mathjax" not in text, f"{html.name} loads MathJax from a CDN"
        if 'class="math notranslate' in text:  # the page renders math
            assert "_static/mathjax/es5/tex-chtml.js" in text, f"{html.name} has math but no local MathJax"


def test_no_page_loads_scripts_or_styles_from_the_network(built):
    remote = re.compile(r"""<(?:script|link|img|iframe)[^>]+(?:src|href)=["'](?:https?:)?//[^"']+""")
    for html in html_files(built):
        text = html.read_text()
        found = remote.findall(text)
        assert not found, f"{html.relative_to(built)} loads from the network: {found[:3]}"
        assert "unpkg.com" not in text, f"{html.relative_to(built)} names a script on unpkg.com"


def test_no_thebe_and_no_widget_state_in_pages(built):
    for html in html_files(built):
        text = html.read_text()
        assert "THEBE_JS_URL" not in text and "x-thebe-config" not in text, f"{html.name} carries Thebe"
        assert "widget-state+json" not in text, f"{html.name} carries widget state that no widget manager reads"


# A warning as Python prints it ("/tmp/ipykernel_123/456.py:7: SomeWarning: ..."), or a kernel's file.
_BUILD_MACHINE = re.compile(r"ipykernel_\d+|\.py:\d+: \w*Warning\b")


def test_build_warnings_stay_out_of_the_pages(built):
    for html in html_files(built):
        found = _BUILD_MACHINE.findall(html.read_text())
        assert not found, f"{html.relative_to(built)} shows the build machine's stderr: {found[:3]}"


def _bibliography(built: Path) -> dict[str, str]:
    """The bibliography's entries: their HTML id and label ("Rosenblatt, 1958")."""
    text = (built / "book" / "references.html").read_text()
    entries = re.findall(
        r'<div class="citation" id="([^"]+)"[^>]*>\s*<span class="label"><span class="fn-bracket">\[</span>(.*?)'
        r'<span class="fn-bracket">\]</span>',
        text,
    )
    return {ident: re.sub(r"<[^>]+>", "", label) for ident, label in entries}


def test_bibliography_lists_the_references_author_year(built):
    labels = _bibliography(built)
    entries = pybtex.database.parse_file(str(REPO / "book" / "references.bib")).entries
    assert len(labels) == len(entries), f"the bibliography lists {len(labels)} of the {len(entries)} entries"
    assert any(label.startswith("Krizhevsky") for label in labels.values())
    wrong = [label for label in labels.values() if not re.fullmatch(r".+, (\d{4}[a-z]?|n\.d\.)", label)]
    assert not wrong, f"bibliography labels that are not author-year: {wrong[:5]}"
    assert len(set(labels.values())) == len(labels), "two bibliography entries have the same label"


def test_citations_in_the_text_match_the_bibliography(built):
    """A citation shows the same authors and year as the entry that it links to."""
    labels = _bibliography(built)
    link = re.compile(r'<a class="reference internal" href="(?:\.\./book/)?references\.html#([^"]+)"[^>]*>(.*?)</a>')
    checked = 0
    for html in html_files(built):
        for ident, text in link.findall(html.read_text()):
            if ident not in labels:
                continue
            label, shown = labels[ident], re.sub(r"<[^>]+>", "", text).strip()
            base = re.sub(r"(?<=\d)[a-z]$", "", label)  # "LeCun et al., 1998a" is cited as "... 1998"
            year = base.rsplit(", ", 1)[-1]
            assert shown in (label, base, year), f"{html.name}: the citation {shown!r} links to [{label}]"
            checked += 1
    assert checked > 0, "no citation in the book links to the bibliography"


def _site_size(built: Path) -> tuple[int, list[tuple[int, str]]]:
    sizes = [(p.stat().st_size, str(p.relative_to(built))) for p in built.rglob("*") if p.is_file()]
    return sum(s for s, _ in sizes), sorted(sizes, reverse=True)


def test_the_site_is_small(built):
    total, files = _site_size(built)
    assert total < SITE_LIMIT_MB * 1e6, (
        f"the site is {total / 1e6:.1f} MB (limit {SITE_LIMIT_MB} MB); largest files: "
        + ", ".join(f"{name} {size / 1e6:.2f} MB" for size, name in files[:8])
    )


_COLAB_LINK = re.compile(r'href="(https://colab\.research\.google\.com/[^"]*)"')


def _tracked(path: Path) -> bool:
    if not (REPO / ".git").exists():
        return path.is_file()
    proc = subprocess.run(["git", "ls-files", "--error-unmatch", str(path)], cwd=REPO, capture_output=True)
    return proc.returncode == 0


_LAUNCH_BUTTON = re.compile(r'<a href="(https://colab\.research\.google\.com/[^"]*)"[^>]*title="Launch on Colab"')


def test_launch_links_open_the_pages_colab_notebooks(built):
    """Each notebook page's launch button opens its own Colab notebook, which starts with the
    set-up cell; every other link to Colab opens an .ipynb of the repository."""
    prefix = f"https://colab.research.google.com/github/{OWNER_REPO}/blob/{BRANCH}/"
    notebook_pages = {str(md.relative_to(REPO).with_suffix("")) for md in colab.notebook_pages()}
    for html in html_files(built):
        page = str(html.relative_to(built).with_suffix(""))
        text = html.read_text()
        buttons = _LAUNCH_BUTTON.findall(text)
        if page in notebook_pages:
            assert buttons == [f"{prefix}{page}.ipynb"], f"{page}: launch buttons {buttons}, expected its notebook"
            first = nbformat.read(REPO / f"{page}.ipynb", as_version=4).cells[0]
            assert colab.MARKER in first.metadata.get("tags", []), f"{page}.ipynb does not start with the set-up cell"
        else:
            assert not buttons, f"{page} is not a notebook but has launch buttons {buttons}"
        for url in set(_COLAB_LINK.findall(text)):
            assert url.startswith(prefix), f"{page}: the Colab link {url} is not for {OWNER_REPO}@{BRANCH}"
            path = url.removeprefix(prefix).split("#")[0]
            assert path.endswith(".ipynb"), f"{page}: the Colab link opens {path}; Colab opens only .ipynb"
            target = REPO / path
            assert target.is_file() and _tracked(target), f"{page}: the Colab link opens {path}, not in the repository"


# --- in a browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chrome(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")
    driver = browser.start_chromium(profile)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(built):
    site = browser.SiteServer(built)
    yield site
    site.close()


@pytest.fixture(scope="module")
def summary(built):
    """What the browser tests checked, written to the screenshots' folder at the end."""
    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)  # the screenshots of the last run only
    SCREENSHOTS.mkdir(parents=True)
    record = {"pages": {}, "searches": {}, "started": time.time()}
    yield record
    record["seconds"] = round(time.time() - record.pop("started"), 1)
    total, _ = _site_size(built)
    record["site_mb"] = round(total / 1e6, 2)
    for key in ("equations", "inline_math", "images", "figures"):
        record[key] = sum(p.get(key, 0) for p in record["pages"].values())
    record["page_count"] = len(record["pages"])
    (SCREENSHOTS / "summary.json").write_text(json.dumps(record, indent=1) + "\n")


@pytest.mark.parametrize("page", PAGES)
def test_page_in_a_browser(page, built, chrome, server, summary):
    """Over http:// and file://: what a reader sees, with no error, and nothing fetched from elsewhere."""
    start = time.perf_counter()
    over_http = browser.check_page(chrome, f"{server.origin}/{page}.html", site=built, origin=server.origin)
    browser.screenshot(chrome, SCREENSHOTS / f"{page.replace('/', '__')}.jpg")
    over_file = browser.check_page(chrome, (built / f"{page}.html").resolve().as_uri(), site=built, origin=None)
    summary["pages"][page] = {
        "equations": over_http.equations,
        "inline_math": over_http.inline_math,
        "images": over_http.images,
        "figures": over_http.figures,
        "requests": len(over_http.requests),
        "seconds": round(time.perf_counter() - start, 1),
    }
    problems = [f"http: {p}" for p in over_http.problems] + [f"file: {p}" for p in over_file.problems]
    assert not problems, f"{page}: {len(problems)} problems in the browser:\n" + "\n".join(problems)
    assert (over_http.equations, over_http.images) == (over_file.equations, over_file.images)


def test_the_browser_checks_catch_what_they_are_for(chrome, tmp_path):
    """A page with broken math, an undefined macro, an over-wide equation, an image without
    alt text, a missing image, a script error and a request to another host: each is reported."""
    sys.path.insert(0, str(REPO / "book" / "_ext"))
    import offline_mathjax

    site = tmp_path / "site"
    offline_mathjax.copy_mathjax(site / "mathjax" / "es5")
    (site / "ok.png").write_bytes(base64.b64decode(_PNG))
    wide = " + ".join(f"x_{{{i}}}" for i in range(120))
    (site / "page.html").write_text(
        "<!DOCTYPE html><html><head><title>t</title><link rel='icon' href='data:,'>"
        "<script>window.MathJax = {options: {processHtmlClass: 'math', ignoreHtmlClass: 'document'}};</script>"
        "<script defer src='mathjax/es5/tex-chtml.js'></script></head>"
        "<body class='document'><article>"
        "<span class='math'>\\(x^2}\\)</span> <span class='math'>\\(\\notamacro x\\)</span>"
        f"<div class='math'>\\[{wide}\\]</div><div class='math'>\\[a^2 + b^2 = c^2\\]</div>"
        "<img src='ok.png'><img src='ok.png' alt='ok.png'><img src='ok.png' alt='A red square on white.'>"
        "<img src='missing.png' alt='Something that is not there.'>"
        "<img src='http://example.invalid/x.png' alt='A picture from another host.'>"
        "<script>undefinedFunction();</script></article></body></html>"
    )
    report = browser.check_page(chrome, (site / "page.html").as_uri(), site=site, origin=None)
    text = "\n".join(report.problems)
    expected = {
        "math error": "math error in x^2}",
        "undefined macro": "undefined macro in \\notamacro",
        "wide equation": "equation wider than the text",
        "no alt": "image no alt text: ok.png",
        "alt is a file name": 'alt text is not a description ("ok.png")',
        "missing image": "image did not load: missing.png",
        "console error": "console error",
        "remote request": "request outside the site: http://example.invalid/x.png",
    }
    missed = [what for what, needle in expected.items() if needle not in text]
    assert not missed, f"the browser checks missed: {missed}\nthey reported:\n{text}"
    assert (report.equations, report.inline_math, report.images) == (2, 2, 5)
    assert "A red square" not in text and "a^2 + b^2" not in text, "a correct image or equation was reported"


# A 2x2 red PNG.
_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg=="
)


def _title(built: Path, page: str) -> str:
    match = re.search(r"<h1>(.*?)<a class=\"headerlink\"", (built / f"{page}.html").read_text(), re.DOTALL)
    assert match, f"{page} has no title"
    return re.sub(r"<[^>]+>", "", match.group(1))


_STOP = {"about", "their", "there", "which", "these", "those", "course", "using"}


def _search_term(title: str) -> str:
    words = [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z0-9-]{3,}", title) if w.lower() not in _STOP]
    assert words, f"no word to search for in the title {title!r}"
    return max(words, key=len)


# Topics whose page a reader must find by searching (the page, then the query).
TOPICS = [("book/ch01_perceptron", "perceptron"), ("book/ch03_convolution", "im2col"),
          ("book/ch03_convolution", "receptive field")]


def test_search_finds_the_pages(built, chrome, server, summary):
    queries = [(page, _search_term(_title(built, page))) for page in PAGES]
    queries += [(page, term) for page, term in TOPICS if page in PAGES]
    missing = []
    for page, term in queries:
        found = browser.search(chrome, server.origin, term)
        summary["searches"][term] = found
        if found is None:
            missing.append(f"searching {term!r} did not finish")
        elif page not in found:
            missing.append(f"searching {term!r} does not list {page} (it lists {found[:6]})")
    assert not missing, "\n".join(missing)


def test_launch_and_download_links_resolve(built, chrome, server):
    """In the browser: the launch button opens the page's Colab notebook; every download link works."""
    problems = []
    prefix = f"https://colab.research.google.com/github/{OWNER_REPO}/blob/{BRANCH}/"
    for page in PAGES:
        chrome.get(f"{server.origin}/{page}.html")
        hrefs = chrome.execute_script("return [...document.querySelectorAll('a')].map(a => a.href)")
        launch = [h for h in hrefs if h.startswith("https://colab.research.google.com/")]
        downloads = [h for h in hrefs if "/_sources/" in h]
        is_notebook = (REPO / f"{page}.ipynb").is_file()
        if is_notebook and launch != [prefix + f"{page}.ipynb"]:
            problems.append(f"{page}: launch links {launch}, expected the one to {page}.ipynb")
        if not downloads:
            problems.append(f"{page}: no download link")
        for url in downloads:
            path = urllib.parse.urlsplit(url).path
            try:
                with urllib.request.urlopen(url, timeout=30) as response:
                    body = response.read()
            except OSError as err:
                problems.append(f"{page}: the download link {path} does not resolve ({err})")
                continue
            if path.endswith(".ipynb") and body != (REPO / f"{page}.ipynb").read_bytes():
                problems.append(f"{page}: the .ipynb download is not the page's Colab notebook")
    assert not problems, "\n".join(problems)


# --- the build fails where it must, and pages run again as Colab notebooks ---------------------


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


def _executed(built: Path, md: Path, page: str):
    """The page as the build executed it, or None for a page with no code.

    myst-nb writes ``jupyter_execute/<page>.ipynb`` without outputs when the page came from
    its cache (a second build); the outputs are then taken from the cache itself."""
    path = built.parent / "jupyter_execute" / f"{page}.ipynb"
    if not path.exists():
        return None
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if code and all(c.get("execution_count") is None for c in code):
        from jupyter_cache import get_cache

        cache = get_cache(str(built.parent / ".jupyter_cache"))
        _, nb = cache.merge_match_into_notebook(colab.jupytext.read(md))
    return nb


def test_each_page_runs_on_colab_and_prints_the_same_numbers(built, tmp_path):
    """Every page's Colab notebook, run on a stand-in for a fresh Colab runtime (no dlvision,
    no myst_nb, an empty working folder), prints what the build printed (seeded)."""
    checked, problems = 0, []
    for md in colab.notebook_pages():
        page = str(md.relative_to(REPO).with_suffix(""))
        first = _executed(built, md, page)
        if first is None:  # a page with no code
            continue
        checked += 1
        runtime = ColabRuntime(tmp_path / page.replace("/", "__"), colab.dlvision_spec())
        second = nbformat.read(colab.colab_path(md), as_version=4)
        client = NotebookClient(second, timeout=600, resources={"metadata": {"path": str(runtime.content)}})
        try:
            client.execute(env=runtime.env)
        except Exception as err:
            problems.append(f"{page}: its Colab notebook fails on a fresh runtime: {err}\n{runtime.describe()}")
            continue
        if not any("dlvision @ git+" in " ".join(call) for call in runtime.pip_calls()):
            problems.append(f"{page}: the set-up cell did not install dlvision: {runtime.describe()}")
        for i, (a, b) in enumerate(zip(_printed(first), _printed(second)[1:], strict=True)):
            if a != b:
                problems.append(f"{page}: code cell {i} printed different output on Colab:\n{a}\n---\n{b}")
    assert not problems, "\n\n".join(problems)
    assert checked > 0 or not any(md.read_text().count("{code-cell}") for md in colab.notebook_pages())
