"""Stand-ins for the datasets and weights that the book's full profile downloads, for a machine without network.

Each is written in its library's own on-disk format, into a dlvision cache folder
(``DLVISION_CACHE``), so that the book's code reads it through the real loaders
(``dlvision.data.mnist``, ``cifar10``, ``fashion_mnist`` through torchvision, and
``dlvision.models.pretrained`` through ``torch.hub``). Same shapes, dtypes, sizes and number
of classes as the real thing; the pictures are not the real ones, so accuracies measured on
them say nothing about MNIST or CIFAR-10:

- MNIST and Fashion-MNIST (60,000 + 10,000 grey 28x28, 10 classes, torchvision's raw idx
  files): scikit-learn's 1,797 handwritten 8x8 digits, enlarged to 20x20 and placed at a
  random offset in a 28x28 frame, with a random ink level; training images from the first
  1,347 digits, test images from the other 450.
- CIFAR-10 (50,000 + 10,000 colour 32x32, 10 classes, the pickled python batches):
  ``dlvision.data.scenes`` with ten of its object kinds. torchvision checks these files'
  MD5 sums against the real ones; ``allow_standins()`` (called by the chapter runner when
  the cache holds stand-ins) lets files of the right names through that check.
- ImageNet weights of a torchvision model (``pretrained("resnet18")`` and the like): the
  model's own seeded random initialisation, saved under the file name ``torch.hub`` looks
  for. Features from it are not ImageNet features.

``STANDINS.json`` in the cache lists what was written.

    python benchmarks/standins.py --cache /tmp/cache --datasets mnist cifar10 --weights resnet18
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SIZES = {"mnist": (60_000, 10_000), "fashion_mnist": (60_000, 10_000), "cifar10": (50_000, 10_000)}
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MARKER = "STANDINS.json"


def digit_frames(n: int, seed: int, test: bool) -> tuple[np.ndarray, np.ndarray]:
    """(n, 28, 28) uint8 frames of enlarged scikit-learn digits at random offsets, and their labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    cut = int(0.75 * len(bunch.target))
    pool = np.arange(cut, len(bunch.target)) if test else np.arange(cut)
    ink = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]
    big = F.interpolate(ink, size=(20, 20), mode="bilinear", align_corners=False)[:, 0].clamp_(0, 1)
    rng = np.random.default_rng(seed)
    pick = rng.choice(pool, n)
    off = torch.from_numpy(rng.integers(0, 9, (2, n)))
    level = torch.from_numpy(rng.uniform(0.7, 1.0, n).astype(np.float32))
    frames = torch.zeros(n, 28, 28, dtype=torch.uint8)
    rows = off[0][:, None] + torch.arange(20)
    cols = off[1][:, None] + torch.arange(20)
    vals = (big[torch.from_numpy(pick)] * level[:, None, None] * 255).round().to(torch.uint8)
    frames[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]] = vals
    return frames.numpy(), bunch.target[pick].astype(np.uint8)


def _idx(path: Path, array: np.ndarray) -> None:
    """An idx file (the MNIST format): magic 0x0000 08 <ndim>, big-endian int32 sizes, then uint8 data."""
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0800 + array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist_like(root: Path, folder: str, n_train: int, n_test: int, seed: int) -> dict:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for part, n, test in (("train", n_train, False), ("t10k", n_test, True)):
        x, y = digit_frames(n, seed + test, test)
        _idx(raw / f"{part}-images-idx3-ubyte", x)
        _idx(raw / f"{part}-labels-idx1-ubyte", y)
    return {"train": n_train, "test": n_test, "shape": [1, 28, 28], "classes": 10,
            "content": "scikit-learn digits enlarged to 20x20 at random offsets in 28x28"}  # fmt: skip


def _scenes_chunk(args):
    n, seed = args
    from dlvision.data import SCENE_SHAPES, scenes

    split = scenes(n, 32, classes=SCENE_SHAPES[:10], test_fraction=0.5, seed=seed)
    x = torch.cat([split.train.x, split.test.x]).numpy()
    y = torch.cat([split.train.y, split.test.y]).numpy()
    return x, y


def scene_images(n: int, seed: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """n colour 32x32 scenes of ten object kinds, made in ``workers`` processes."""
    chunks = max(1, min(workers, n // 500))
    sizes = [n // chunks + (i < n % chunks) for i in range(chunks)]
    jobs = [(s, seed * 1000 + i) for i, s in enumerate(sizes)]
    if chunks == 1:
        parts = [_scenes_chunk(jobs[0])]
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(chunks) as pool:
            parts = pool.map(_scenes_chunk, jobs)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def write_cifar10(root: Path, n_train: int, n_test: int, seed: int, workers: int) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    x, y = scene_images(n_train + n_test, seed, workers)
    flat = x.reshape(len(x), -1)  # (N, 3 * 32 * 32), channel planes one after the other, as CIFAR stores them
    names = [f"data_batch_{i}" for i in range(1, 6)]
    bounds = np.linspace(0, n_train, 6).astype(int)
    for name, lo, hi in zip(names, bounds[:-1], bounds[1:], strict=True):
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": y[lo:hi].tolist(), "data": flat[lo:hi]}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"batch_label": "test", "labels": y[n_train:].tolist(), "data": flat[n_train:]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR_CLASSES), "num_cases_per_batch": n_train // 5, "num_vis": 3072}, f)
    return {"train": n_train, "test": n_test, "shape": [3, 32, 32], "classes": 10,
            "content": "dlvision.data.scenes, ten object kinds"}  # fmt: skip


def write_weights(root: Path, name: str, seed: int) -> dict:
    """A torchvision model's seeded random initialisation, saved where pretrained(name) looks."""
    import torchvision.models as tvm

    w = tvm.get_model_weights(name).DEFAULT
    torch.manual_seed(seed)
    model = tvm.get_model(name, weights=None)
    folder = root / "weights"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / w.url.rsplit("/", 1)[-1]
    torch.save(model.state_dict(), path)
    return {"file": path.name, "content": f"torchvision {name} with its random initialisation (seed {seed})"}


def allow_standins() -> None:
    """Let torchvision read CIFAR-10 stand-in files, whose MD5 sums cannot match the real ones
    (MNIST's reader checks no sums). Only the checksum test changes; the files are read as usual."""
    import torchvision.datasets.cifar as cifar

    cifar.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)


def write(cache: Path, datasets=(), weights=(), *, scale: float = 1.0, seed: int = 0, workers: int = 8) -> dict:
    """Write the stand-ins into ``cache`` (``scale`` shrinks the datasets, for a dry run)."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    done = {}
    for name in datasets:
        t0 = time.perf_counter()
        n_train, n_test = (max(20, int(round(k * scale))) for k in SIZES[name])
        if name == "mnist":
            info = write_mnist_like(cache, "MNIST", n_train, n_test, seed)
        elif name == "fashion_mnist":
            info = write_mnist_like(cache, "FashionMNIST", n_train, n_test, seed + 7)
        elif name == "cifar10":
            info = write_cifar10(cache, n_train, n_test, seed, workers)
        else:
            raise SystemExit(f"standins: no stand-in for the dataset {name!r}; known: {', '.join(SIZES)}")
        done[name] = dict(info, seconds=round(time.perf_counter() - t0, 1))
    for name in weights:
        done[f"weights:{name}"] = write_weights(cache, name, seed)
    marker = cache / MARKER
    old = json.loads(marker.read_text()) if marker.exists() else {}
    marker.write_text(json.dumps(dict(old, **done), indent=1) + "\n")
    return done


def check(cache: Path) -> dict:
    """Load every stand-in in ``cache`` through dlvision's own loaders; returns what each gave."""
    os.environ["DLVISION_CACHE"] = str(cache)
    allow_standins()
    import dlvision as dv

    listed = json.loads((Path(cache) / MARKER).read_text())
    seen = {}
    for key in listed:
        if key.startswith("weights:"):
            model = dv.models.pretrained(key.split(":", 1)[1])
            seen[key] = {"parameters": sum(p.numel() for p in model.parameters())}
            continue
        split = getattr(dv.data, key)(download=False)
        seen[key] = {"train": list(split.train.x.shape), "test": list(split.test.x.shape),
                     "dtype": str(split.train.x.dtype), "classes": split.train.num_classes,
                     "labels": sorted(set(split.train.y.tolist()))}  # fmt: skip
    return seen


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", required=True, help="the dlvision cache folder to write into (DLVISION_CACHE)")
    p.add_argument("--datasets", nargs="*", default=[], choices=sorted(SIZES))
    p.add_argument("--weights", nargs="*", default=[], help="torchvision model names for pretrained()")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the real sizes (dry runs)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--check", action="store_true", help="then load each through dlvision and print the shapes")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
    done = write(Path(args.cache), args.datasets, args.weights, scale=args.scale, workers=args.workers)
    out = {"written": done}
    if args.check:
        out["loaded"] = check(Path(args.cache))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
