"""Export every page of the book's table of contents to a plain Python script, with jupytext.

For the GPU check (``benchmarks/gpu_check.sh``): the GPU machine has no jupytext and no
jupyter-book, so the pages travel as scripts made here. Each page of ``_toc.yml`` (the root
and every chapter) that has code cells becomes ``<out>/<page>.py`` in jupytext's ``percent``
format: one ``# %%`` cell per code cell, with the cell's tags in its header line, and
without the prose. Cells tagged ``skip-execution`` (the book does not run them) are kept
as comments, so that ``python <page>.py`` runs what the book runs. ``manifest.json`` lists
the pages in the book's order with the SHA-256 of each source, so the runner can tell a
stale export, and what each page would download in the ``full`` profile.

    python benchmarks/export_chapters.py --out _build/gpu_check/chapters
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADER = "# Exported from {src} by benchmarks/export_chapters.py (jupytext {version}). Do not edit: edit the page.\n"

# What a page downloads in the full profile, and the stand-in that the GPU check writes instead.
NEEDS = {
    "mnist": re.compile(r"\bmnist\(|load\(\s*['\"]mnist['\"]"),
    "fashion_mnist": re.compile(r"\bfashion_mnist\(|load\(\s*['\"]fashion_mnist['\"]"),
    "cifar10": re.compile(r"\bcifar10\(|load\(\s*['\"]cifar10['\"]"),
}
PRETRAINED = re.compile(r"\bpretrained\(\s*['\"]([A-Za-z0-9_]+)['\"]")


def toc_pages(toc_path: Path = REPO / "_toc.yml") -> list[str]:
    """The pages of ``_toc.yml`` in the book's order: the root, then every ``file`` entry."""
    import yaml

    toc = yaml.safe_load(toc_path.read_text())
    pages = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                pages.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return pages


def source_of(page: str) -> Path | None:
    for ext in (".md", ".ipynb", ".py"):
        path = REPO / (page + ext)
        if path.exists():
            return path
    return None


def export_page(src: Path, out_dir: Path) -> dict | None:
    """Write ``out_dir/<name>.py``; returns its manifest entry, or None for a page without code."""
    import jupytext

    # As MyST notebooks: only {code-cell} blocks are code. A page that is plain Markdown (no
    # notebook front matter; its fenced blocks are shell commands to read) has no code cells.
    nb = jupytext.read(src, fmt="md:myst") if src.suffix == ".md" else jupytext.read(src)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code:
        return None
    skipped = 0
    for cell in code:
        tags = cell.metadata.get("tags", [])
        if "skip-execution" in tags:
            skipped += 1
            cell.source = "\n".join("# " + line if line else "#" for line in cell.source.splitlines())
    nb.cells = code
    nb.metadata.pop("jupytext", None)
    text = jupytext.writes(nb, fmt="py:percent")
    text = HEADER.format(src=src.relative_to(REPO), version=jupytext.__version__) + text
    script = out_dir / (src.stem + ".py")
    script.write_text(text)
    source = "\n".join(c.source for c in code if "skip-execution" not in c.metadata.get("tags", []))
    return {
        "page": str(src.relative_to(REPO).with_suffix("")),
        "source": str(src.relative_to(REPO)),
        "sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
        "script": script.name,
        "code_cells": len(code),
        "skip_execution_cells": skipped,
        "downloads": sorted(k for k, rx in NEEDS.items() if rx.search(source)),
        "pretrained": sorted(set(PRETRAINED.findall(source))),
    }


def export(out_dir: Path, toc_path: Path = REPO / "_toc.yml") -> dict:
    import jupytext

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # nothing stale: a page removed from the book leaves no script
    out_dir.mkdir(parents=True)
    pages, missing = [], []
    for page in toc_pages(toc_path):
        src = source_of(page)
        if src is None:
            missing.append(page)
            continue
        entry = export_page(src, out_dir)
        if entry is not None:
            pages.append(entry)
    manifest = {"toc": str(toc_path.relative_to(REPO)), "jupytext": jupytext.__version__, "pages": pages,
                "missing_in_toc": missing}  # fmt: skip
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "_build" / "gpu_check" / "chapters"))
    args = p.parse_args(argv)
    manifest = export(Path(args.out))
    for e in manifest["pages"]:
        needs = ", ".join(e["downloads"] + [f"{w} weights" for w in e["pretrained"]]) or "nothing"
        print(f"{e['source']:32s} -> {e['script']:28s} {e['code_cells']:3d} code cells; downloads: {needs}")
    if manifest["missing_in_toc"]:
        print("in _toc.yml but not found:", ", ".join(manifest["missing_in_toc"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
