"""A reader's browser over the built book: Debian's headless Chromium, driven by Selenium.

Used by ``tests/test_book.py``. Chromium comes from Debian (``apt-get install chromium
chromium-driver``; ``.ci/run`` installs both) and Selenium from PyPI: Selenium is given
the paths of both programs, so it never tries to download a browser or a driver.

``check_page`` loads one page and reports, as a list of sentences, every problem a reader
would meet: an error in the console, a request that failed or went to another host, math
that MathJax did not render (or rendered as an error, or wider than the page), an image
that did not load or whose alt text is missing or a file name. It also returns what it
counted (equations, images, figures).
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Chromium as root, headless, with nothing of its own talking to the network.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)
WIDTH = 1400
NOT_INSTALLED = (
    "the browser test needs Debian's Chromium and its driver: `bash .ci/run` installs them; "
    "by hand, as root: apt-get install chromium chromium-driver"
)


def chromium_paths() -> tuple[str, str]:
    """The Chromium program and its driver, or the test fails saying how to install them."""
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/lib/chromium/chromedriver", "/usr/bin/chromedriver") if Path(p).is_file()), None
    )
    if not browser or not driver:
        pytest.fail(NOT_INSTALLED, pytrace=False)
    return browser, driver


def start_chromium(user_data_dir: Path):
    """A new headless Chromium with an empty profile, logging the console and the network."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    chrome.set_page_load_timeout(120)
    chrome.set_script_timeout(120)
    chrome.get("about:blank")  # away from the new-tab page, whose own requests are logged
    drain_logs(chrome)
    return chrome


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


class SiteServer:
    """The built site on ``http://127.0.0.1:<port>/``, served from a thread."""

    def __init__(self, root: Path):
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class PageReport:
    url: str
    problems: list[str] = field(default_factory=list)
    equations: int = 0  # display equations
    inline_math: int = 0
    images: int = 0  # images in the page's text
    figures: int = 0
    requests: list[str] = field(default_factory=list)


def drain_logs(chrome) -> None:
    chrome.get_log("browser")
    chrome.get_log("performance")


def _network(chrome) -> tuple[list[str], list[str]]:
    """Every URL the page requested, and every request that failed, from the performance log."""
    urls: dict[str, str] = {}
    failed = []
    for entry in chrome.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        method, params = message.get("method", ""), message.get("params", {})
        if method == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
        elif method == "Network.responseReceived":
            status = params["response"].get("status", 0)
            url = params["response"].get("url", "")
            if status >= 400:
                failed.append(f"{url} answered HTTP {status}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            url = urls.get(params.get("requestId"), "?")
            failed.append(f"{url} failed to load ({params.get('errorText', '')})")
    return list(urls.values()), failed


_WAIT_FOR_PAGE = """
const done = arguments[arguments.length - 1];
const deadline = Date.now() + 90000;
async function settle() {
  // Scroll through the page so that lazily loaded images load, then come back to the top.
  for (let y = 0; y < document.body.scrollHeight; y += 800) { window.scrollTo(0, y); await null; }
  window.scrollTo(0, 0);
  const hasMath = document.querySelector('.math') !== null;
  while (hasMath && !(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
    if (Date.now() > deadline) return 'MathJax did not start within 90 s';
    await new Promise(r => setTimeout(r, 50));
  }
  if (hasMath) { try { await MathJax.startup.promise; } catch (e) { return 'MathJax failed: ' + e; } }
  while ([...document.images].some(img => !img.complete)) {
    if (Date.now() > deadline) return 'images still loading after 90 s';
    await new Promise(r => setTimeout(r, 50));
  }
  return 'ok';
}
settle().then(done, e => done('error while waiting for the page: ' + e));
"""

_INSPECT = """
const article = document.querySelector('article') || document.querySelector('main') || document.body;
const out = {mathProblems: [], wide: [], imageProblems: [], equations: 0, inline: 0, images: 0, figures: 0};
const maths = [...document.querySelectorAll('.math')];
for (const m of maths) {
  const display = m.tagName === 'DIV';
  if (display) out.equations += 1; else out.inline += 1;
  const text = m.textContent.trim().slice(0, 70);
  if (!m.querySelector('mjx-container')) { out.mathProblems.push('not rendered: ' + text); continue; }
  if (display) {
    const box = m.getBoundingClientRect().width;
    const math = m.querySelector('mjx-math');
    const width = math ? math.getBoundingClientRect().width : 0;
    if (width > box + 1) out.wide.push(`${Math.round(width)} px in ${Math.round(box)} px: ${text}`);
  }
}
if (window.MathJax && MathJax.startup && MathJax.startup.document) {
  for (const item of MathJax.startup.document.math) {
    const found = [];
    if (item.root) item.root.walkTree(node => {
      if (node.isKind('merror')) found.push('error');
      if (node.isKind('mtext') && node.attributes.get('mathcolor') === 'red') found.push('undefined macro');
    });
    if (found.length) out.mathProblems.push(`${found[0]} in ${item.math.trim().slice(0, 70)}`);
  }
}
for (const img of document.images) {
  const inText = article.contains(img);
  const name = img.getAttribute('src') || '';
  if (!img.complete || img.naturalWidth === 0) out.imageProblems.push('did not load: ' + name);
  if (!inText) continue;
  out.images += 1;
  const alt = (img.getAttribute('alt') || '').trim();
  const looksLikePath = /[\\/\\\\]|\\.(png|jpe?g|svg|gif|webp)$/i.test(alt) || /^[0-9a-f]{16,}/i.test(alt);
  if (!alt) out.imageProblems.push('no alt text: ' + name);
  else if (looksLikePath || alt.split(/\\s+/).length < 3)
    out.imageProblems.push(`alt text is not a description ("${alt.slice(0, 60)}"): ${name}`);
}
out.figures = article.querySelectorAll('figure').length;
return out;
"""


def check_page(chrome, url: str, *, site: Path, origin: str | None) -> PageReport:
    """Load ``url`` and report the problems a reader would meet on it.

    ``origin`` is the local server's (``http://127.0.0.1:port``) or None for ``file://``:
    every request must stay on it (for ``file://``, inside ``site``).
    """
    report = PageReport(url)
    drain_logs(chrome)
    chrome.get(url)
    state = chrome.execute_async_script(_WAIT_FOR_PAGE)
    if state != "ok":
        report.problems.append(state)
    found = chrome.execute_script(_INSPECT)
    report.equations, report.inline_math = found["equations"], found["inline"]
    report.images, report.figures = found["images"], found["figures"]
    report.problems += [f"math {p}" for p in found["mathProblems"]]
    report.problems += [f"equation wider than the text at {WIDTH} px wide, {p}" for p in found["wide"]]
    report.problems += [f"image {p}" for p in found["imageProblems"]]
    time.sleep(0.2)  # let the last console messages arrive
    for entry in chrome.get_log("browser"):
        if entry["level"] in ("SEVERE", "ERROR"):
            report.problems.append(f"console error: {entry['message'][:300]}")
    urls, failed = _network(chrome)
    report.requests = urls
    report.problems += failed
    root = site.resolve().as_uri()
    for requested in urls:
        scheme = urllib.parse.urlsplit(requested).scheme
        if scheme in ("data", "blob", "about", "chrome", "chrome-untrusted", "devtools"):
            continue  # in the page or in the browser itself: nothing leaves the machine
        if origin is not None:
            if not requested.startswith(origin + "/"):
                report.problems.append(f"request to another host: {requested}")
        elif not (scheme == "file" and requested.startswith(root + "/")):
            report.problems.append(f"request outside the site: {requested}")
    return report


def screenshot(chrome, path: Path) -> None:
    """The whole page as a JPEG (scaled down when it is taller than Chromium can capture)."""
    height = chrome.execute_script("return document.documentElement.scrollHeight")
    scale = min(1.0, 16000 / max(height, 1))
    shot = chrome.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "jpeg",
            "quality": 70,
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": scale},
        },
    )
    import base64

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


_WAIT_FOR_SEARCH = """
const done = arguments[arguments.length - 1];
const deadline = Date.now() + 60000;
(function poll() {
  const summary = document.querySelector('#search-results .search-summary, #search-results p');
  const text = summary ? summary.textContent : '';
  if (text && !/^\\s*(Searching|Preparing search)/i.test(text)) {
    done([...document.querySelectorAll('#search-results ul.search li a')].map(a => a.getAttribute('href')));
  } else if (Date.now() > deadline) {
    done(null);
  } else {
    setTimeout(poll, 50);
  }
})();
"""


def search(chrome, origin: str, query: str) -> list[str] | None:
    """The pages (``book/ch01_perceptron``) that the site's search lists for ``query``, None on a time-out."""
    chrome.get(f"{origin}/search.html?q={urllib.parse.quote(query)}")
    hrefs = chrome.execute_async_script(_WAIT_FOR_SEARCH)
    if hrefs is None:
        return None
    return [re.sub(r"\.html$", "", urllib.parse.urlsplit(h).path.lstrip("/")) for h in hrefs]
