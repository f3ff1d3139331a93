"""The GPU check (benchmarks/gpu_check.sh) in its CPU dry run, so that it cannot rot between GPU runs;
and its parts: the page runner, the tiny test runner, the page export."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import mini_pytest  # noqa: E402
import run_chapter  # noqa: E402

VARIANTS = {"fp32", "fp32-cl", "bf16", "bf16-cl", "fp16", "fp16-cl", "fp32-cl-compile", "fp32-seed+1"}


def toc_notebook_pages():
    """Independently of the exporter: every page of _toc.yml whose source has a {code-cell}."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]] + re.findall(r"file:\s*(\S+)", (REPO / "_toc.yml").read_text())
    return [f for f in files if "```{code-cell}" in (REPO / f"{f}.md").read_text()]


def lenet_flops_per_image(classes=6):
    """LeNet5(in_size=28) forward MACs from its layer shapes; a training step is forward (2 FLOPs a
    MAC), the gradient of each layer's input (the same, except C1, whose input needs none) and of
    its weights (the same again)."""
    macs = {"C1": 6 * 28 * 28 * 25, "C3": 16 * 10 * 10 * 150, "C5": 120 * 400, "F6": 120 * 84, "out": 84 * classes}
    forward = 2 * sum(macs.values())
    return 3 * forward - 2 * macs["C1"]


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check_out")
    env = dict(os.environ, PYTHON=sys.executable)
    r = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", "--out", str(out)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=1800)  # fmt: skip
    return out, r


def load(out, what):
    (path,) = out.glob(f"dryrun-*-{what}.json")
    return json.loads(path.read_text())


def test_dry_run_passes_and_leaves_what_the_device_returns(dry):
    out, r = dry
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["phases_not_ok"] == []
    files = list(out.rglob("*"))
    assert 0 < len(files) <= 8 and all(f.is_file() and f.parent == out for f in files)  # at most 8, no folders
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f.name) for f in files)
    summary = load(out, "gpu-check")
    assert summary["mode"].startswith("dry-run") and re.fullmatch(r"cpu-\d+core", summary["device"])
    assert set(summary["phases"]) == {"env", "speed-lenet", "speed-resnet", "standins", "chapters", "tests"}
    assert all(p["status"] == "ok" for p in summary["phases"].values()), summary["phases"]
    assert sorted(summary["files"]) == sorted(f.name for f in files)
    log = next(out.glob("*-gpu-check.log")).read_text()
    for phase in ("speed-lenet", "speed-resnet", "standins", "chapters", "gpu tests"):
        assert phase in log


def test_dry_run_speed_results(dry):
    out, _ = dry
    for workload, flops in (("lenet", lenet_flops_per_image()), ("resnet", None)):
        res = load(out, f"speed-{workload}")
        assert res["device"] == load(out, "gpu-check")["device"]
        assert res["baseline_s"] > 0 and res["dlvision_s"] > 0
        # the times are rounded to 0.01 s, the speed-up to 0.01: it lies between the ratios of their bounds
        b, d = res["baseline_s"], res["dlvision_s"]
        assert (b - 0.005) / (d + 0.005) - 0.005 <= res["speedup"] <= (b + 0.005) / max(d - 0.005, 1e-9) + 0.005
        assert res["speedup_last_epoch"] > 0 and 0 <= res["baseline_acc"] <= 1 and 0 <= res["dlvision_acc"] <= 1
        assert len(res["dlvision_epoch_s"]) == res["epochs"] and res["dlvision_images_per_s"] > 0
        assert res["load_avg_1min_at_end"] >= 0 and not res["full_size"]
        variants = {v["name"]: v for v in res["variants"]}
        assert set(variants) == VARIANTS
        assert "CUDA" in variants["fp16"]["skipped"] and "CUDA" in variants["fp16-cl"]["skipped"]
        for name, v in variants.items():
            if "skipped" in v:
                continue
            assert "error" not in v, v
            assert v["channels_last"] == ("-cl" in name) and bool(v.get("compile")) == name.endswith("compile")
            assert v["images_per_s"] > 0 and 0 <= v["acc"] <= 1 and len(v["epoch_s"]) == 1
            if "seed" not in name:
                assert isinstance(v["acc_equal_fp32"], bool)
        assert variants["fp32"]["acc_minus_fp32"] == 0
        mfu = res["mfu"]
        assert mfu["flops_per_step"] > 0 and mfu["batch_size"] == 128 and mfu["achieved_tflops"] >= 0
        assert mfu["mfu_datasheet"] is None and "CPU" in mfu["peak_source"]  # no bf16 peak for a CPU
        if flops is not None:
            assert mfu["flops_per_step"] == flops * 128


def test_dry_run_tests_and_pages(dry):
    out, _ = dry
    tests = load(out, "tests")["passes"]
    assert [p["name"] for p in tests] == ["gpu tests", "gpu tests without pytest"]
    for p in tests:
        outcomes = {t["id"].split("::")[-1]: t["outcome"] for t in p["tests"]}
        assert p["returncode"] == 0 and len(outcomes) >= 9
        assert outcomes["test_compile_compiles_once_and_trains_like_the_eager_model"] == "passed"
        assert outcomes["test_the_loaders_epoch_is_the_documented_one_on_the_cpu"] == "passed"
        assert outcomes["test_no_host_device_sync_per_step"] == "skipped"  # no CUDA here
    chapters = load(out, "chapters")
    pages = {p["page"]: p for p in chapters["pages"]}
    assert set(pages) == set(toc_notebook_pages())
    for p in pages.values():
        assert p["status"] == "stopped after 1 cells (--max-cells)" and p["cells_run"] == 1, p
        assert p["cells"][0]["status"] == "ok" and not p["stale"]
        assert set(p["shims"]) == {"myst_nb", "IPython"}  # as on the GPU machine
    assert pages["book/ch05_lenet"]["standins_used"] == ["mnist"]
    loaded = load(out, "gpu-check")["phases"]["standins"]["loaded"]
    assert loaded["mnist"]["train"][1:] == [1, 28, 28] and loaded["mnist"]["classes"] == 10
    assert loaded["cifar10"]["train"][1:] == [3, 32, 32] and loaded["cifar10"]["labels"] == list(range(10))
    assert loaded["weights:resnet18"]["parameters"] == 11_689_512


PAGE = textwrap.dedent('''\
    # %% [markdown]
    # Some prose.

    # %%
    from myst_nb import glue
    x = 2
    glue("x", x * 1.5, display=False)
    print("first")

    # %% tags=["skip-execution"]
    raise SystemExit("must not run")

    # %% tags=["raises-exception"]
    1 / 0

    # %% tags=["hide-input"]
    import IPython.display
    IPython.display.display("shown")
    y = x + 1

    # %%
    raise ValueError("the page's error")

    # %%
    z = 1
''')


@pytest.fixture
def restored_imports():
    """The runner's shims replace myst_nb and IPython in this process: put the real ones back."""
    saved = {k: sys.modules[k] for k in list(sys.modules) if k.split(".")[0] in ("myst_nb", "IPython")}
    meta_path = list(sys.meta_path)
    yield
    for k in [k for k in sys.modules if k.split(".")[0] in ("myst_nb", "IPython")]:
        del sys.modules[k]
    sys.modules.update(saved)
    sys.meta_path[:] = meta_path


def test_page_runner_runs_cells_in_order_and_stops_at_an_error(tmp_path, restored_imports):
    script = tmp_path / "page.py"
    script.write_text(PAGE)
    cells = run_chapter.cells_of(PAGE)
    assert [c["tags"] for c in cells] == [[], ["skip-execution"], ["raises-exception"], ["hide-input"], [], []]
    assert cells[0]["line"] == 4 and cells[0]["source"].startswith("from myst_nb")
    rec = run_chapter.run(script, tmp_path / "page.json", force_shims=True)
    assert rec == json.loads((tmp_path / "page.json").read_text())
    assert rec["status"] == "error" and rec["cells_total"] == 6 and rec["cells_run"] == 5
    status = [c["status"] for c in rec["cells"]]
    assert status == ["ok", "skipped (skip-execution)", "error", "ok", "error"]  # the last cell never ran
    assert rec["glued"] == {"x": 3.0}
    assert rec["cells"][0]["output_tail"] == ["first"] and rec["cells"][3]["output_tail"] == ["'shown'"]
    assert "ZeroDivisionError" in rec["cells"][2]["error"] and "the page's error" in rec["cells"][4]["error"]
    assert all(c["seconds"] >= 0 for c in rec["cells"] if c["status"] != "skipped (skip-execution)")
    rec = run_chapter.run(script, None, max_cells=1, force_shims=True)
    assert rec["status"].startswith("stopped after 1") and rec["cells_run"] == 1


def test_tiny_runner_reports_each_outcome(tmp_path):
    module = tmp_path / "test_sample.py"
    module.write_text(textwrap.dedent('''\
        import pytest

        def test_ok():
            with pytest.raises(ValueError, match="bad"):
                raise ValueError("bad input")
            assert 0.1 + 0.2 == pytest.approx(0.3)

        def test_fails():
            assert 1 == 2, "one is not two"

        @pytest.mark.skipif(True, reason="not here")
        def test_skipped():
            raise AssertionError("ran")

        def test_skips_itself():
            pytest.skip("later")

        def test_errors():
            {}["missing"]

        def test_needs_a_fixture(tmp_path):
            pass

        def test_raises_nothing():
            with pytest.raises(KeyError):
                pass
    '''))
    saved = sys.modules.get("pytest")
    try:
        results = {r["id"].split("::")[1]: r for r in mini_pytest.run(str(module))}
    finally:
        sys.modules["pytest"] = saved
    outcomes = {k: v["outcome"] for k, v in results.items()}
    assert outcomes == {"test_ok": "passed", "test_fails": "failed", "test_skipped": "skipped",
                        "test_skips_itself": "skipped", "test_errors": "error", "test_needs_a_fixture": "error",
                        "test_raises_nothing": "failed"}  # fmt: skip
    assert "one is not two" in results["test_fails"]["message"] and results["test_skipped"]["message"] == "not here"
