"""The GPU check: dlvision's training measured on a GPU, the GPU tests, and the book's pages in the full profile.

Run through ``benchmarks/gpu_check.sh`` (see ``benchmarks/README.md``). Phases, each in its
own processes, each recorded even when another fails:

1. ``env``: the device, driver, library versions and clocks (``nvidia-smi``);
2. ``speed-lenet`` and ``speed-resnet``: ``train_speed.py`` on both workloads at full size
   (dlvision against the idiomatic DataLoader loop), then the precisions (fp32, bf16, fp16 with
   its scaler) with ``channels_last`` off and on and ``compile=True``, and the MFU of ResNet-8;
   the GPU is otherwise idle while these run;
3. ``tests``: ``tests/test_dlvision_gpu.py``, and the other ``tests/test_dlvision_*.py`` with
   the GPU visible (so that ``fit`` picks it, as on a GPU machine), in parallel with
4. ``standins`` and ``chapters``: every page of ``_toc.yml``, exported here by
   ``export_chapters.py`` (``--prepare``), run cell by cell in the ``full`` profile by
   ``run_chapter.py``, with stand-ins (``standins.py``) for the datasets and weights that need
   a download, until the time budget ends.

Results go to ``--out`` (``$OUT`` on the device machine): at most six files, named after the
device, a summary ``<device>-gpu-check.json`` among them, rewritten after every phase.
``--dry-run`` does all of it on the CPU at tiny sizes (CI runs it: tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
EXPORT = REPO / "_build" / "gpu_check" / "chapters"  # made by --prepare here, carried to the device
WHEELS_DIR = REPO / ".whl"
# Packages that the pages import and the GPU machine's image lacks (its list: the device notes,
# KINDS.md); their pins come from requirements.txt. myst_nb and IPython are shimmed instead.
WHEELS = ("captum",)
GPU_TEST = "tests/test_dlvision_gpu.py"
OTHER_TESTS = ("tests/test_dlvision_train.py", "tests/test_dlvision_data.py", "tests/test_dlvision_device.py",
               "tests/test_dlvision_models.py", "tests/test_dlvision_source.py", "tests/test_dlvision_testing.py",
               "tests/test_dlvision_torchvision_sets.py")  # fmt: skip
# Pages that train longest in the full profile start first.
HEAVY_FIRST = ("ch06_architectures", "ch05_lenet", "ch07_transfer", "ch08_visualisation", "ch04_pooling")
MAX_FILES = 8  # the device machine returns at most 8 files from $OUT


class Check:
    """The run's state: where results go, the deadline, the summary rewritten after each phase."""

    def __init__(self, args):
        self.args = args
        self.dry = args.dry_run
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + args.budget
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix="gpu_check_"))
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join([str(REPO / "lib")] + [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.env.setdefault("MPLBACKEND", "Agg")
        if self.dry:
            self.env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run is the CPU's, also on a machine with a GPU
        self.device = self._device_name()
        self.prefix = ("dryrun-" if self.dry else "") + self.device
        self.log_path = self.out / f"{self.prefix}-gpu-check.log"
        self.log = open(self.log_path, "a")
        self.summary = {
            "device": self.device,
            "mode": "dry-run (CPU, tiny sizes)" if self.dry else "full",
            "budget_s": args.budget,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "phases": {},
        }

    def _device_name(self) -> str:
        """Probe the machine once (a Python with torch, as every phase uses); the device's name."""
        r = subprocess.run([sys.executable, "-c", ENV_PROBE], env=self.env, capture_output=True, text=True, timeout=300)
        try:
            self.env_info = json.loads(r.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            self.env_info = {"probe_failed": (r.stdout + r.stderr)[-2000:]}
            return "unknown-device"
        if self.env_info.get("cuda_available"):
            return self.env_info["gpu"].replace(" ", "-").lower()
        return f"cpu-{self.env_info['cpus']}core"

    def file(self, what: str) -> Path:
        return self.out / f"{self.prefix}-{what}.json"

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def say(self, text: str) -> None:
        line = f"[gpu_check {time.perf_counter() - self.t0:6.1f} s] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def save(self) -> None:
        self.summary["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        path = self.file("gpu-check")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.summary, indent=1) + "\n")
        tmp.replace(path)

    def run(self, name: str, cmd: list[str], *, timeout: float, env=None) -> tuple[int, str, float]:
        """Run ``cmd`` to its end or ``timeout``; its output goes to the log. Returns (code, output, seconds)."""
        self.say(f"{name}: {' '.join(cmd)} (limit {timeout:.0f} s)")
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env or self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
        try:
            out, _ = proc.communicate(timeout=max(1.0, timeout))
            code = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # this phase's own process group
            out, _ = proc.communicate()
            code = 124
        self.log.write(out)
        self.log.flush()
        return code, out, time.perf_counter() - t

    def phase(self, name: str, record: dict) -> None:
        self.summary["phases"][name] = record
        self.say(f"{name}: {record.get('status')} ({record.get('seconds', 0):.1f} s)")
        self.save()


# --------------------------------------------------------------------------------------------- env
ENV_PROBE = """
import json, os, platform, torch, torchvision
info = dict(python=platform.python_version(), torch=torch.__version__, torchvision=torchvision.__version__,
            cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), cpus=os.cpu_count(),
            cuda_available=torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=torch.cuda.get_device_name(0), capability=f"{p.major}.{p.minor}",
                multiprocessors=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1))
for m in ("pytest", "xdist", "pytest_timeout", "captum", "myst_nb", "IPython", "jupytext", "sklearn", "skimage"):
    try:
        __import__(m)
        info["has_" + m] = True
    except ImportError:
        info["has_" + m] = False
print(json.dumps(info))
"""


def phase_env(c: Check) -> None:
    t = time.perf_counter()
    record = dict(c.env_info, status="ok" if "probe_failed" not in c.env_info else "failed")
    record["load_avg_1min"] = round(os.getloadavg()[0], 2)
    record["platform"] = platform.platform()
    smi = shutil.which("nvidia-smi")
    if smi and not c.dry:
        q = "name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,temperature.gpu"
        r = subprocess.run([smi, f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True, text=True)
        record["nvidia_smi"] = r.stdout.strip() or r.stderr.strip()
        record["nvidia_smi_fields"] = q
    record["seconds"] = round(time.perf_counter() - t, 1)
    c.phase("env", record)


# ------------------------------------------------------------------------------------------- speed
def phase_speed(c: Check, workload: str) -> None:
    name = f"speed-{workload}"
    out = c.file(name)
    cmd = [sys.executable, str(BENCH / "train_speed.py"), "--workload", workload, "--out", str(out), "--variants", "--mfu"]
    if c.dry:
        n, n_test = (512, 256) if workload == "lenet" else (256, 128)
        cmd += ["--device", "cpu", "--n", str(n), "--n-test", str(n_test), "--epochs", "1", "--noise-seeds", "1",
                "--compile-backend", "eager", "--threads", "1"]  # fmt: skip
    else:
        cmd += ["--epochs", "2", "--noise-seeds", "2"]
    share = 0.4 if workload == "lenet" else 0.9  # of the time left: the ResNet run is the longer
    rc, text, s = c.run(name, cmd, timeout=max(30.0, share * (c.left() - 60)))
    record = {"status": "ok" if rc == 0 else ("timed out" if rc == 124 else f"failed ({rc})"), "seconds": round(s, 1)}
    if out.exists():
        res = json.loads(out.read_text())
        record["file"] = out.name
        for k in ("baseline_s", "dlvision_s", "speedup", "speedup_last_epoch", "baseline_acc", "dlvision_acc", "dlvision_epoch_s",
                  "dlvision_images_per_s", "dlvision_precision", "target", "meets_target", "full_size"):  # fmt: skip
            if k in res:
                record[k] = res[k]
        if "variants" in res:
            record["variants"] = {v["name"]: {k: v.get(k) for k in ("images_per_s", "peak_mb", "acc", "acc_equal_fp32",
                                                                     "compile_overhead_s", "skipped", "error") if k in v}
                                  for v in res["variants"]}  # fmt: skip
        if "mfu" in res:
            record["mfu"] = {k: res["mfu"].get(k) for k in ("run", "flops_per_step", "achieved_tflops", "mfu_datasheet",
                                                            "peak_tflops_datasheet", "mfu_measured", "peak_tflops_measured")}  # fmt: skip
    else:
        record["output_tail"] = text.splitlines()[-30:]
    c.phase(name, record)


# ------------------------------------------------------------------------------------------- tests
def _has(c: Check, module: str) -> bool:
    return bool(c.env_info.get(f"has_{module}"))


def _junit(path: Path) -> list[dict]:
    if not path.exists():
        return []
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (el.get("message") or el.text or "")[:600]
        tests.append({"id": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": round(float(case.get("time") or 0), 2), "message": message})  # fmt: skip
    return tests


def test_commands(c: Check) -> list[tuple[str, list[str], dict]]:
    """(name, command, environment) of each test pass."""
    env = dict(c.env, DLVISION_PROFILE="quick", CUBLAS_WORKSPACE_CONFIG=":4096:8")
    passes = []
    if _has(c, "pytest"):
        base = [sys.executable, "-m", "pytest", "--noconftest", "-p", "no:cacheprovider", "-o", "addopts=", "-q", "-rA"]
        if _has(c, "pytest_timeout"):
            base += ["--timeout", "300"]
        junit = c.scratch / "junit-gpu.xml"
        passes.append(("gpu tests", base + [f"--junitxml={junit}", GPU_TEST], env))
        if not c.dry:
            junit = c.scratch / "junit-others.xml"
            par = ["-n", "4"] if _has(c, "xdist") else []
            passes.append(("other dlvision tests, GPU visible", base + par + [f"--junitxml={junit}", *OTHER_TESTS], env))
    if c.dry or not _has(c, "pytest"):
        # Without pytest (or, in the dry run, to keep this path working): the GPU tests by a tiny runner.
        passes.append(("gpu tests without pytest", [sys.executable, str(BENCH / "mini_pytest.py"), GPU_TEST,
                                                    "--json", str(c.scratch / "mini.json")], env))  # fmt: skip
    return passes


def collect_tests(c: Check, results: list[dict]) -> None:
    for r in results:
        if r["command"][1:2] == ["-m"]:
            junit = next(a.split("=", 1)[1] for a in r["command"] if a.startswith("--junitxml="))
            r["tests"] = _junit(Path(junit))
            if not r["tests"]:  # no XML (a pass stopped by the budget): pytest's -rA lines so far
                r["tests"] = [{"id": m.group(2), "outcome": m.group(1).lower(), "seconds": None, "message": (m.group(3) or "")[:600]}
                              for m in re.finditer(r"^(PASSED|FAILED|ERROR|SKIPPED)\s+(\S+)(?: - (.*))?$",
                                                   r.pop("output", ""), re.M)]  # fmt: skip
            r.pop("output", None)
        else:
            r.pop("output", None)
            path = c.scratch / "mini.json"
            r["tests"] = json.loads(path.read_text())["tests"] if path.exists() else []
        counts = {}
        for t in r["tests"]:
            counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
        r["counts"] = counts
        r["command"] = " ".join(Path(a).name if a == sys.executable else a for a in r["command"])
    c.file("tests").write_text(json.dumps({"passes": results}, indent=1) + "\n")


# ---------------------------------------------------------------------------------------- chapters
def chapter_export(c: Check) -> tuple[Path | None, dict]:
    """The exported pages: made now in a dry run (jupytext is here), carried in a full run."""
    if c.dry:
        sys.path.insert(0, str(BENCH))
        from export_chapters import export

        folder = c.scratch / "chapters"
        export(folder)
        return folder, {"exported": "now, by export_chapters.py"}
    if not (EXPORT / "manifest.json").exists():
        return None, {"error": f"no exported pages in {EXPORT.relative_to(REPO)}: run "
                               "'bash benchmarks/gpu_check.sh --prepare' where jupytext is, and carry _build/gpu_check"}
    return EXPORT, {"exported": "by --prepare, carried"}


def start_group(c: Check, folder: Path, pages: list[dict], cache: Path, budget: float) -> dict:
    """One process for ``pages`` (one page, except in the dry run, whose imports-only check runs
    a share of the pages one after the other in each of its processes)."""
    name = "+".join(Path(p["script"]).stem for p in pages)
    records = c.scratch / "records"
    records.mkdir(exist_ok=True)
    log = open(c.scratch / f"pages-{Path(pages[0]['script']).stem}.log", "w")
    env = dict(c.env, DLVISION_PROFILE="full", DLVISION_CACHE=str(cache), OMP_NUM_THREADS="2",
               DLVISION_PROGRESS="plain")  # fmt: skip
    cmd = [sys.executable, str(BENCH / "run_chapter.py"), *(str(folder / p["script"]) for p in pages),
           "--out-dir", str(records), "--budget", f"{max(1.0, budget):.0f}"]  # fmt: skip
    if c.dry:
        cmd += ["--max-cells", "1", "--shims"]  # imports and set-up only; shims as on the GPU machine
    proc = subprocess.Popen(cmd, cwd=c.scratch, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return {"pages": pages, "name": name, "proc": proc, "records": records, "log": log, "t": time.perf_counter()}


def phase_chapters_and_tests(c: Check) -> None:
    """Tests, stand-ins and then the pages, side by side, until the deadline."""
    t = time.perf_counter()
    tests = [] if "tests" in c.skip else [dict(name=n, command=cmd, env=env) for n, cmd, env in test_commands(c)]
    running_tests = []
    for tpass in tests:
        c.say(f"tests: {tpass['name']}: {' '.join(tpass['command'])}")
        log = open(c.scratch / f"tests-{len(running_tests)}.log", "w")
        tpass["log"] = log
        proc = subprocess.Popen(tpass["command"], cwd=REPO, env=tpass.pop("env"), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        running_tests.append((tpass, proc, time.perf_counter()))

    chapters = {"pages": []}
    folder, info = (None, {}) if "chapters" in c.skip else chapter_export(c)
    chapters.update(info)
    pages = []
    if folder is not None:
        manifest = json.loads((folder / "manifest.json").read_text())
        chapters["jupytext"] = manifest.get("jupytext")
        wanted = set(c.args.pages.split(",")) if c.args.pages else None
        for p in manifest["pages"]:
            if wanted and Path(p["script"]).stem not in wanted:
                continue
            src = REPO / p["source"]
            p["stale"] = not src.exists() or __import__("hashlib").sha256(src.read_bytes()).hexdigest() != p["sha256"]
            pages.append(p)
        pages.sort(key=lambda p: HEAVY_FIRST.index(Path(p["script"]).stem) if Path(p["script"]).stem in HEAVY_FIRST else 99)

        # Stand-ins for what the pages download.
        cache = c.scratch / "cache"
        datasets = sorted({d for p in pages for d in p["downloads"]})
        weights = sorted({w for p in pages for w in p["pretrained"]})
        if datasets or weights:
            cmd = [sys.executable, str(BENCH / "standins.py"), "--cache", str(cache), "--check"]
            cmd += ["--datasets", *datasets] if datasets else []
            cmd += ["--weights", *weights] if weights else []
            if c.dry:
                cmd += ["--scale", "0.005", "--workers", "1"]
            rc, out, s = c.run("standins", cmd, timeout=max(30.0, min(240.0, c.left() - 30)))
            st = {"status": "ok" if rc == 0 else f"failed ({rc})", "seconds": round(s, 1)}
            if rc == 0:
                st.update(json.loads(out.strip().splitlines()[-1]))
            else:
                st["output_tail"] = out.splitlines()[-20:]
            c.phase("standins", st)
        else:
            cache.mkdir(parents=True, exist_ok=True)

        # The pages, several at a time, until the deadline (keeping a margin to write the results).
        parallel = c.args.parallel or (2 if c.dry else 12)
        if c.dry:  # imports only: a share of the pages in each process saves starting a Python per page
            queue = [pages[k::parallel] for k in range(parallel) if pages[k::parallel]]
        else:
            queue = [[p] for p in pages]
        active = []
        margin = 25.0
        while queue or active:
            while queue and len(active) < parallel and c.left() > margin + 10:
                active.append(start_group(c, folder, queue.pop(0), cache, c.left() - margin))
                c.say(f"chapters: started {active[-1]['name']}")
            for a in list(active):
                if a["proc"].poll() is not None:
                    active.remove(a)
                    chapters["pages"] += group_records(c, a)
                    c.file("chapters").write_text(json.dumps(chapters, indent=1) + "\n")  # so far
            if c.left() <= margin and active:
                for a in active:
                    os.killpg(a["proc"].pid, signal.SIGKILL)  # its own process group
                    a["proc"].wait()
                    chapters["pages"] += group_records(c, a, killed=True)
                active = []
            if not active and queue and c.left() <= margin + 10:
                for group in queue:
                    chapters["pages"] += [{"page": p["page"], "status": "not started: no time left", "stale": p["stale"]}
                                          for p in group]  # fmt: skip
                queue = []
            time.sleep(0.5)
        c.file("chapters").write_text(json.dumps(chapters, indent=1) + "\n")
    if "chapters" not in c.skip:
        record_chapters(c, chapters, info, folder, t)
    finish_tests(c, running_tests, t)


def record_chapters(c: Check, chapters: dict, info: dict, folder, t: float) -> None:
    bad = [p["page"] for p in chapters["pages"] if p.get("status") == "error" or str(p.get("status")).startswith(("no record", "ended"))]
    c.phase("chapters", {
        "status": info.get("error") or ("ok" if not bad else "failures"),
        "failed_pages": bad,
        "seconds": round(time.perf_counter() - t, 1),
        "file": c.file("chapters").name if folder is not None else None,
        "pages": {p["page"]: {k: p.get(k) for k in ("status", "cells_run", "cells_total", "seconds", "stale",
                                                    "standins_used", "error")} for p in chapters["pages"]},
    })  # fmt: skip


def finish_tests(c: Check, running_tests: list, t: float) -> None:
    """The tests had the whole phase; what is still running now is stopped."""
    results = []
    for tpass, proc, t0 in running_tests:
        try:
            proc.wait(timeout=max(1.0, c.left() - 10))
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = 124
        tpass["log"].close()
        text = Path(tpass["log"].name).read_text()
        c.log.write(f"\n===== {tpass['name']} =====\n{text}")
        results.append({"name": tpass["name"], "command": tpass["command"], "returncode": rc, "output": text,
                        "seconds": round(time.perf_counter() - t0, 1), "output_tail": text.splitlines()[-15:]})  # fmt: skip
    if "tests" in c.skip:
        return
    collect_tests(c, results)
    failed = [t["id"] for r in results for t in r["tests"] if t["outcome"] in ("failed", "error")]
    status = "ok" if all(r["returncode"] == 0 for r in results) and not failed else "failures"
    c.phase("tests", {"status": status, "seconds": round(time.perf_counter() - t, 1), "file": c.file("tests").name,
                      "passes": {r["name"]: {"returncode": r["returncode"], "counts": r["counts"]} for r in results},
                      "failed": failed})  # fmt: skip


def group_records(c: Check, a: dict, killed: bool = False) -> list[dict]:
    """The record of each page that process ``a`` ran (its output goes to the log)."""
    a["log"].close()
    log_text = Path(a["log"].name).read_text(errors="replace")
    c.log.write(f"\n===== pages {a['name']} =====\n{log_text}")
    out = []
    for p in a["pages"]:
        rec = {"page": p["page"], "source": p["source"], "stale": p["stale"], "returncode": a["proc"].returncode,
               "downloads": p["downloads"], "pretrained": p["pretrained"],
               "standins_used": p["downloads"] + [f"{w} weights" for w in p["pretrained"]]}  # fmt: skip
        path = a["records"] / f"{Path(p['script']).stem}.json"
        if path.exists():
            r = json.loads(path.read_text())
            rec.update({k: r.get(k) for k in ("status", "seconds", "cells_run", "cells_total", "shims", "glued",
                                              "cuda_peak_mb")})  # fmt: skip
            cells = r.get("cells", [])
            rec["slowest_cells"] = sorted(({"cell": x["cell"], "seconds": x.get("seconds", 0), "first_line": x["first_line"]}
                                           for x in cells if "seconds" in x), key=lambda x: -x["seconds"])[:5]  # fmt: skip
            errors = [x for x in cells if x.get("status") == "error"]
            if errors:
                rec["error"] = errors[0]["error"]
            rec["cells"] = cells
            if rec.get("status") == "running":
                rec["status"] = "stopped by the time budget while running" if killed else "ended while running"
        else:
            rec["status"] = "not reached before the time budget" if killed else f"no record (exit {a['proc'].returncode})"
            rec["output_tail"] = log_text.splitlines()[-30:]
        out.append(rec)
        c.say(f"chapters: {p['page']}: {rec['status']}")
    return out


def table(c: Check) -> str:
    """The short table printed last (the device tool returns the end of the output)."""
    lines = [f"== gpu_check on {c.device} ({c.summary['mode']}), {c.summary.get('elapsed_s', 0):.0f} s =="]
    for w in ("lenet", "resnet"):
        r = c.summary["phases"].get(f"speed-{w}")
        if not r:
            continue
        if "speedup" in r:
            lines.append(f"{w:6s} baseline {r['baseline_s']:7.2f} s  dlvision {r['dlvision_s']:7.2f} s  speedup "
                         f"{r['speedup']:5.2f}x (last epoch {r.get('speedup_last_epoch')}x)  acc {r['baseline_acc']:.4f} / "
                         f"{r['dlvision_acc']:.4f}  epochs {r.get('dlvision_epoch_s')} s  target met: {r.get('meets_target')}")  # fmt: skip
        else:
            lines.append(f"{w:6s} {r['status']}")
        for name, v in r.get("variants", {}).items():
            if "images_per_s" in v:
                lines.append(f"    {name:18s} {v['images_per_s']:11,.0f} img/s  peak {v.get('peak_mb')} MiB  acc "
                             f"{v['acc']:.4f}  equal to fp32: {v.get('acc_equal_fp32')}")  # fmt: skip
            else:
                lines.append(f"    {name:18s} {v.get('skipped') or v.get('error')}")
        if r.get("mfu"):
            m = r["mfu"]
            lines.append(f"    MFU ({m.get('run')}): {m.get('achieved_tflops')} TFLOP/s = {m.get('mfu_datasheet')} of the "
                         f"datasheet's {m.get('peak_tflops_datasheet')}, {m.get('mfu_measured')} of the measured "
                         f"{m.get('peak_tflops_measured')}")  # fmt: skip
    t = c.summary["phases"].get("tests")
    if t:
        lines.append(f"tests  {t['status']}: " + "; ".join(f"{k}: {v['counts']}" for k, v in t["passes"].items()))
        lines += [f"    FAILED {f}" for f in t["failed"][:15]]
    ch = c.summary["phases"].get("chapters")
    if ch:
        for page, p in ch.get("pages", {}).items():
            lines.append(f"page   {page:26s} {p.get('cells_run')}/{p.get('cells_total')} cells  {p.get('status')}"
                         + (f"  {p['error'][:100]}" if p.get("error") else ""))  # fmt: skip
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- prepare
def prepare() -> int:
    """Here, before a GPU run: export the pages and fetch the wheels the image lacks."""
    sys.path.insert(0, str(BENCH))
    from export_chapters import export

    manifest = export(EXPORT)
    print(f"exported {len(manifest['pages'])} pages to {EXPORT.relative_to(REPO)}")
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", line.strip())
        if m:
            pins[m.group(1).lower()] = m.group(2)
    WHEELS_DIR.mkdir(exist_ok=True)
    for name in WHEELS:
        spec = f"{name}=={pins[name]}" if name in pins else name
        platforms = [a for n in (28, 27, 17) for a in ("--platform", f"manylinux_2_{n}_x86_64")]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
               "--implementation", "cp", *platforms, "--platform", "manylinux2014_x86_64", "-d", str(WHEELS_DIR), spec]  # fmt: skip
        print(" ".join(cmd))
        if subprocess.run(cmd).returncode != 0:
            print(f"could not download {spec}: the pages that import it will fail on the GPU machine", file=sys.stderr)
            return 1
    size = sum(f.stat().st_size for d in (EXPORT.parent, WHEELS_DIR) for f in d.rglob("*") if f.is_file())
    print(f"to carry: _build/gpu_check and .whl ({size / 2**20:.1f} MiB)")
    print('device run: command "bash benchmarks/gpu_check.sh", carry ["_build/gpu_check", ".whl"], timeout_s 540')
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="on the CPU, tiny sizes (what CI runs)")
    p.add_argument("--prepare", action="store_true", help="export the pages and fetch wheels, here, before a GPU run")
    p.add_argument("--out", default=os.environ.get("OUT") or None, help="results folder (default $OUT)")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 450; dry run 900)")
    p.add_argument("--skip", default="", help="phases to skip, comma-separated: speed-lenet,speed-resnet,tests,chapters")
    p.add_argument("--pages", default="", help="only these pages, comma-separated script names (ch05_lenet,...)")
    p.add_argument("--parallel", type=int, default=None, help="pages run at once (default 12 on a GPU, 2 dry)")
    args = p.parse_args(argv)
    if args.prepare:
        return prepare()
    if args.budget is None:
        args.budget = 900.0 if args.dry_run else 450.0
    if args.out is None:
        args.out = tempfile.mkdtemp(prefix="gpu_check_out_")
    c = Check(args)
    c.say(f"device {c.device}; results in {c.out}; budget {args.budget:.0f} s; scratch {c.scratch}")
    skip = c.skip = set(filter(None, args.skip.split(",")))
    c.summary["skipped_phases"] = sorted(skip)
    try:
        phase_env(c)
        for workload in ("lenet", "resnet"):
            if f"speed-{workload}" not in skip:
                phase_speed(c, workload)
        if not {"chapters", "tests"} <= skip:
            phase_chapters_and_tests(c)
    finally:
        files = sorted(f.name for f in c.out.iterdir())
        c.summary["files"] = files
        c.summary["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
        c.save()
        c.say(f"done in {time.perf_counter() - c.t0:.0f} s; files: {', '.join(files)}")
        summary_table = table(c)
        print(summary_table, flush=True)
        c.log.write(summary_table + "\n")
        c.log.close()
        shutil.rmtree(c.scratch, ignore_errors=True)
    if len(files) > MAX_FILES:
        print(f"gpu_check: {len(files)} files in {c.out}, more than the {MAX_FILES} the device returns", file=sys.stderr)
        return 1
    failed = [n for n, r in c.summary["phases"].items() if r.get("status") not in ("ok",)]
    print(json.dumps({"summary": c.file("gpu-check").name, "phases_not_ok": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
