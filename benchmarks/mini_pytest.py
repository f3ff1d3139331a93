"""A tiny test runner for a machine without pytest: runs a test module's ``test_*`` functions.

Enough of pytest for ``tests/test_dlvision_gpu.py``: ``pytest.mark.skipif`` (on a test or as the
module's ``pytestmark``), ``pytest.skip``, ``pytest.raises`` and ``pytest.approx`` for scalars.
Tests that take arguments (fixtures, parameters) are reported as errors: keep that module free
of them. When pytest is installed it is not used here either (the dry run checks this path).

    python benchmarks/mini_pytest.py tests/test_dlvision_gpu.py --json results.json
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import math
import re
import sys
import time
import traceback
import types


class Skipped(Exception):
    pass


class _Mark:
    def __init__(self, name, args, kwargs):
        self.name, self.args, self.kwargs = name, args, kwargs

    def __call__(self, fn):
        fn.__dict__.setdefault("pytestmark", []).append(self)
        return fn


class _MarkFactory:
    def __getattr__(self, name):
        return lambda *args, **kwargs: _Mark(name, args, kwargs)


class _Raises:
    def __init__(self, exc, match=None):
        self.exc, self.match, self.value = exc, match, None

    def __enter__(self):
        return self

    def __exit__(self, typ, value, tb):
        if typ is None:
            raise AssertionError(f"DID NOT RAISE {self.exc}")
        if not issubclass(typ, self.exc):
            return False
        if self.match and not re.search(self.match, str(value)):
            raise AssertionError(f"{str(value)!r} does not match {self.match!r}")
        self.value = value
        return True


class _Approx:
    def __init__(self, expected, rel=1e-6, abs=1e-12):
        self.expected, self.rel, self.abs = expected, rel, abs

    def __eq__(self, other):
        return math.isclose(other, self.expected, rel_tol=self.rel, abs_tol=self.abs)

    def __repr__(self):
        return f"approx({self.expected})"


def stub_pytest() -> types.ModuleType:
    mod = types.ModuleType("pytest")
    mod.mark = _MarkFactory()

    def skip(reason=""):
        raise Skipped(reason)

    mod.skip = skip
    mod.raises = _Raises
    mod.approx = _Approx
    return mod


def _skip_reason(marks) -> str | None:
    for m in marks if isinstance(marks, list) else [marks]:
        if getattr(m, "name", None) == "skipif" and m.args and m.args[0]:
            return m.kwargs.get("reason", "skipif")
        if getattr(m, "name", None) == "skip":
            return m.kwargs.get("reason", "skip")
    return None


def run(path: str) -> list[dict]:
    sys.modules["pytest"] = stub_pytest()
    spec = importlib.util.spec_from_file_location("mini_pytest_target", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module_skip = _skip_reason(getattr(module, "pytestmark", []))
    results = []
    for name, fn in inspect.getmembers(module, inspect.isfunction):
        if not name.startswith("test_") or fn.__module__ != module.__name__:
            continue
        t0 = time.perf_counter()
        entry = {"id": f"{path}::{name}"}
        reason = _skip_reason(fn.__dict__.get("pytestmark", [])) or module_skip
        try:
            if reason:
                raise Skipped(reason)
            if inspect.signature(fn).parameters:
                raise TypeError(f"{name} takes arguments (fixtures): the tiny runner cannot give them")
            fn()
            entry["outcome"], entry["message"] = "passed", ""
        except Skipped as exc:
            entry["outcome"], entry["message"] = "skipped", str(exc)
        except AssertionError as exc:
            entry["outcome"], entry["message"] = "failed", (str(exc) or traceback.format_exc(limit=-2))[:600]
        except Exception:  # noqa: BLE001 - reported per test, as pytest does
            entry["outcome"], entry["message"] = "error", traceback.format_exc(limit=-3)[:600]
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        results.append(entry)
        print(f"{entry['outcome'].upper():8s} {name} ({entry['seconds']} s) {entry['message'][:200]}", flush=True)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("module")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    results = run(args.module)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tests": results}, f, indent=1)
    bad = [r for r in results if r["outcome"] in ("failed", "error")]
    print(f"{len(results)} tests: {len(bad)} failed, {sum(r['outcome'] == 'skipped' for r in results)} skipped")
    return 1 if bad or not results else 0


if __name__ == "__main__":
    sys.exit(main())
