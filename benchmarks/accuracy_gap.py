"""Where does the LeNet-5 benchmark's accuracy gap come from? dlvision against the idiomatic loop, over seeds.

``train_speed.py --workload lenet`` once showed dlvision about a point below the idiomatic
loop after one epoch (97.5 % against 98.6 %, one seed). This script trains the same
workload (LeNet-5, ``dlvision.data.shapes``: 60,000 + 10,000 grey 28x28 images, 6 classes;
MNIST cannot be downloaded here and the benchmark uses this stand-in) with several seeds,
in four set-ups that each change one thing from the one before:

- ``baseline``: the idiomatic loop of ``train_speed.py`` (PIL images, ``ToTensor`` and
  ``Normalize`` per item, a ``DataLoader``, ``torch.optim.Adam``, NCHW);
- ``fit_plain``: ``dlvision.fit`` on that same ``DataLoader`` (so the same batches in the same
  order), with the plain ``torch.optim.Adam`` and NCHW: only the loop differs;
- ``fit_fast``: the same, with fit's fused Adam and ``channels_last`` (the benchmark's options);
  ``fit_fused`` and ``fit_cl`` have only one of the two;
- ``dlvision``: the benchmark's dlvision run: a ``TensorLoader`` (its own seeded order,
  normalisation on whole batches), fused Adam, ``channels_last``.

It also checks the two pipelines' normalised images against each other. The JSON gives every
accuracy, the mean and standard deviation over seeds of each set-up, and the paired differences.

    python benchmarks/accuracy_gap.py --seeds 0 1 2 3 --out a.json
    python benchmarks/accuracy_gap.py --seeds 4 5 6 7 --out b.json
    python benchmarks/accuracy_gap.py --merge a.json b.json --out benchmarks/results/cpu-2core-lenet-accuracy-gap.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import train_speed as ts  # noqa: E402

from dlvision.data import TensorLoader, shapes  # noqa: E402
from dlvision.models import LeNet5  # noqa: E402

SETUPS = ("baseline", "fit_plain", "fit_fused", "fit_cl", "fit_fast", "dlvision")
# (fused Adam, channels_last) of the fit runs on the baseline's DataLoader
FIT_OPTIONS = {"fit_plain": (False, False), "fit_fused": (True, False), "fit_cl": (False, True), "fit_fast": (True, True)}


def mean_sd(values):
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def normalisation_difference(data, n=2048):
    """Largest difference between the two pipelines' normalised images, for the same images."""
    import torchvision.transforms as T

    ds = ts.PILImages(data.train.x[:n], data.train.y[:n], T.Compose([T.ToTensor(), T.Normalize(data.train.mean, data.train.std)]))
    idiomatic = torch.stack([ds[i][0] for i in range(n)])
    ours = next(iter(TensorLoader(data.train, batch_size=n, shuffle=False, seed=0)))[0]
    return float((idiomatic - ours).abs().max())


PAIRS = (("dlvision", "baseline"), ("fit_plain", "baseline"), ("fit_fused", "fit_plain"), ("fit_cl", "fit_plain"),
         ("fit_fast", "fit_plain"), ("dlvision", "fit_fast"))  # fmt: skip


def summarise(accs: dict) -> tuple[dict, dict]:
    """Mean and sd over seeds of each set-up; mean, sd and standard error of the differences
    between two set-ups over the seeds that both ran, and how many of them went each way."""
    summary = {}
    for s, by_seed in accs.items():
        m, sd = mean_sd(list(by_seed.values()))
        summary[s] = {"seeds": len(by_seed), "mean": round(m, 5), "sd": round(sd, 5),
                      "min": min(by_seed.values()), "max": max(by_seed.values())}  # fmt: skip
    paired = {}
    for a, b in PAIRS:
        if a in accs and b in accs:
            seeds = sorted(set(accs[a]) & set(accs[b]), key=int)
            d = [accs[a][k] - accs[b][k] for k in seeds]
            if not d:
                continue
            m, sd = mean_sd(d)
            paired[f"{a} - {b}"] = {"seeds": len(d), "mean": round(m, 5), "sd": round(sd, 5),
                                    "se": round(sd / math.sqrt(len(d)), 5) if len(d) > 1 else None,
                                    "higher": sum(x > 0 for x in d), "lower": sum(x < 0 for x in d),
                                    "equal": sum(x == 0 for x in d)}  # fmt: skip
    return summary, paired


def merge(paths) -> dict:
    """Several runs' results as one: the accuracies of each set-up by seed. A seed run twice must
    give the same accuracy (the runs are seeded): a difference is an error, not averaged away."""
    accs, runs = {}, []
    for path in paths:
        with open(path) as f:
            r = json.load(f)
        for setup, by_seed in r["accuracy"].items():
            for seed, acc in by_seed.items():
                old = accs.setdefault(setup, {}).setdefault(seed, acc)
                if old != acc:
                    raise SystemExit(f"{path}: {setup} seed {seed} gave {acc}, another run {old}: not reproducible")
        runs += r["runs"]
    return {"accuracy": {s: dict(sorted(v.items(), key=lambda kv: int(kv[0]))) for s, v in accs.items()}, "runs": runs}


def write(result: dict, out: str | None) -> None:
    line = json.dumps(result)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(line + "\n")
    print(line)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5, 6, 7])
    p.add_argument("--n", type=int, default=60_000)
    p.add_argument("--n-test", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--setups", nargs="+", default=list(SETUPS), choices=SETUPS)
    p.add_argument("--merge", nargs="+", default=None, help="merge these result files (no training)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    if args.merge:
        merged = merge(args.merge)
        summary, paired = summarise(merged["accuracy"])
        first = json.load(open(args.merge[0]))
        result = {k: first[k] for k in ("device", "workload", "normalisation_max_abs_difference", "torch", "python")}
        result.update(merged, summary=summary, paired_differences=paired)
        write(result, args.out)
        return result

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    load_start, cpu0, t_start = os.getloadavg()[0], time.process_time(), time.perf_counter()
    n = args.n
    data = shapes(n + args.n_test, 28, channels=1, background="black", test_fraction=args.n_test / (n + args.n_test),
                  seed=0)  # fmt: skip  (the benchmark's data, seed 0 as in train_speed.py)

    def make_model():
        return LeNet5(len(data.train.classes), in_size=28)

    kw = dict(epochs=args.epochs, lr=1e-3, batch_size=128, augment=False, device=device)
    # The CPU warning would go to the log once per process; it says nothing here.
    import dlvision.train.loop as loop_module

    loop_module._cpu_warned = True
    norm_diff = normalisation_difference(data)
    print(f"largest difference between the two pipelines' normalised pixels: {norm_diff:.2e}", flush=True)

    accs = {s: {} for s in args.setups}
    for seed in args.seeds:
        for setup in args.setups:
            c0 = time.process_time()
            if setup == "baseline":
                # workers=0: the same batches as the benchmark's 2 workers (no random transform), one process.
                out = ts.baseline_run(make_model, data, seed=seed, workers=0, **kw)
            elif setup == "dlvision":
                out = ts.dlvision_run(make_model, data, seed=seed, **kw)
            else:
                train_dl, _ = ts.baseline_loaders(data, batch_size=128, augment=False, device=device, workers=0)
                fused, cl = FIT_OPTIONS[setup]
                out = ts.dlvision_run(make_model, data, seed=seed, train=train_dl, channels_last=cl,
                                      optimizer="adam" if fused else (lambda ps: torch.optim.Adam(ps, lr=1e-3)), **kw)  # fmt: skip
            accs[setup][str(seed)] = round(out["acc"], 4)
            print(f"seed {seed} {setup:9s} test accuracy {100 * out['acc']:.2f}%  ({time.process_time() - c0:.1f} s CPU)",
                  flush=True)  # fmt: skip

    summary, paired = summarise(accs)
    result = {
        "device": ts.device_name(device),
        "workload": f"lenet5-{n / 1000:g}k-28x28-grey-{args.epochs}ep (dlvision.data.shapes, 6 classes; MNIST stand-in)",
        "accuracy": accs,
        "summary": summary,
        "paired_differences": paired,
        "normalisation_max_abs_difference": norm_diff,
        "runs": [{"seeds": args.seeds, "setups": args.setups, "torch_threads": torch.get_num_threads(),
                  "process_cpu_s": round(time.process_time() - cpu0, 1), "wall_s": round(time.perf_counter() - t_start, 1),
                  "load_avg_1min_at_start": round(load_start, 2), "load_avg_1min_at_end": round(os.getloadavg()[0], 2)}],
        "torch": torch.__version__,
        "python": platform.python_version(),
    }  # fmt: skip
    write(result, args.out)
    return result


if __name__ == "__main__":
    main()
