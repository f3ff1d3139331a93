"""Training speed: dlvision's tensor-resident pipeline against the idiomatic PyTorch one.

Both train the same model (same seed, so the same initial weights), on the same data,
for the same epochs with the same optimizer and batch size, then evaluate on the same
test set. Runs are interleaved in one process (baseline, dlvision, dlvision, baseline, ...)
so that a change in the machine's load affects both alike.

- baseline: a torchvision-style ``Dataset`` of PIL images whose ``__getitem__`` applies
  ``RandomCrop``/``RandomHorizontalFlip`` (ResNet workload), ``ToTensor`` and
  ``Normalize``; a ``DataLoader`` with ``num_workers=2`` (and ``pin_memory`` on a GPU);
  the usual loop with ``loss.item()`` per batch.
- dlvision: ``dlvision.fit`` with a ``TensorLoader`` (uint8 data on the device, batched
  by index, augmentation and normalisation on the device per batch), ``channels_last``,
  its fused Adam; mixed precision on a GPU.

Workloads (nothing is downloaded; the images are dlvision's generated shapes):
- ``lenet``: LeNet-5 (modern) on 60,000 grey 28x28 images (10,000 test).
- ``resnet``: ResNet-8 on 50,000 colour 32x32 images with crop (padding 4) and flip.
  ``--n`` shrinks either.

The last line printed is one JSON object (``--out`` also writes it to a file).

    python benchmarks/train_speed.py --workload lenet --epochs 2 --out benchmarks/results/cpu-2core-lenet.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import dlvision as dv
from dlvision.data import TensorLoader, shapes
from dlvision.models import LeNet5, resnet8


class PILImages(Dataset):
    """The idiomatic dataset: PIL images, a transform applied per item."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        arr = x.permute(0, 2, 3, 1).numpy()
        self.images = [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arr]
        self.labels = y.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def baseline_run(make_model, data, *, epochs, lr, batch_size, augment, device, seed):
    import torchvision.transforms as T

    dv.seed_everything(seed)
    model = make_model().to(device)
    norm = [T.ToTensor(), T.Normalize(data.train.mean, data.train.std)]
    aug = [T.RandomCrop(data.train.x.shape[-1], padding=4), T.RandomHorizontalFlip()] if augment else []
    train_ds = PILImages(data.train.x, data.train.y, T.Compose(aug + norm))
    test_ds = PILImages(data.test.x, data.test.y, T.Compose(norm))
    pin = device.type == "cuda"
    train_dl = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=2, pin_memory=pin)
    test_dl = DataLoader(test_ds, batch_size=1024, shuffle=False, num_workers=2, pin_memory=pin)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        running = 0.0
        for x, y in train_dl:
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            running += loss.item()
    model.eval()
    correct = n = 0
    with torch.no_grad():
        for x, y in test_dl:
            x, y = x.to(device), y.to(device)
            correct += (model(x).argmax(1) == y).sum().item()
            n += len(y)
    sync(device)
    return time.perf_counter() - t0, correct / n


def dlvision_run(make_model, data, *, epochs, lr, batch_size, augment, device, seed):
    dv.seed_everything(seed)
    model = make_model().to(device)
    loader = TensorLoader(
        data.train, batch_size=batch_size, shuffle=True, crop=4 if augment else 0, flip=augment, device=device
    )
    test = TensorLoader(data.test, batch_size=1024, shuffle=False, device=device)
    sync(device)
    t0 = time.perf_counter()
    dv.fit(
        model,
        loader,
        epochs=epochs,
        optimizer="adam",  # the same algorithm; dlvision picks the fused implementation
        lr=lr,
        device=device,
        channels_last=True,  # NHWC: faster convolutions (oneDNN on a CPU, tensor cores on a GPU)
        precision="fp32" if device.type == "cpu" else "auto",
        progress=False,
    )
    acc = dv.evaluate(model, test).accuracy
    sync(device)
    return time.perf_counter() - t0, acc


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).replace(" ", "-").lower()
    return f"cpu-{os.cpu_count()}core"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=("lenet", "resnet"), default="lenet")
    p.add_argument("--n", type=int, default=None, help="training images (default 60,000 for lenet, 50,000 for resnet)")
    p.add_argument("--n-test", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--reps", type=int, default=1, help="interleaved repetitions of each pipeline (median reported)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=None, help="torch threads in the training process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="default: dlvision.get_device()")
    p.add_argument("--out", default=None, help="also write the JSON result here")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else dv.get_device()
    lenet = args.workload == "lenet"
    n = args.n or (60_000 if lenet else 50_000)
    size, channels = (28, 1) if lenet else (32, 3)
    t = time.perf_counter()
    data = shapes(n + args.n_test, size, channels=channels, background="black" if lenet else "noise",
                  test_fraction=args.n_test / (n + args.n_test), seed=args.seed)  # fmt: skip
    print(f"data: {data} ({time.perf_counter() - t:.1f} s to generate)", flush=True)
    if lenet:
        def make_model():
            return LeNet5(len(data.train.classes), in_size=28)
    else:
        def make_model():
            return resnet8(len(data.train.classes))
    kw = dict(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, augment=not lenet, device=device, seed=args.seed)

    times = {"baseline": [], "dlvision": []}
    accs = {"baseline": [], "dlvision": []}
    for rep in range(args.reps):
        order = ("baseline", "dlvision") if rep % 2 == 0 else ("dlvision", "baseline")
        for name in order:
            run = baseline_run if name == "baseline" else dlvision_run
            s, acc = run(make_model, data, **kw)
            times[name].append(s)
            accs[name].append(acc)
            print(f"rep {rep + 1} {name:9s} {s:7.1f} s  test accuracy {100 * acc:.2f}%", flush=True)

    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    b, d = statistics.median(times["baseline"]), statistics.median(times["dlvision"])
    workload = (
        f"lenet5-{n // 1000}k-28x28-grey" if lenet else f"resnet8-{n // 1000}k-32x32-colour-cropflip"
    ) + f"-{args.epochs}ep"
    result = {
        "device": device_name(device),
        "workload": workload,
        "baseline_s": round(b, 2),
        "dlvision_s": round(d, 2),
        "speedup": round(b / d, 2),
        "baseline_acc": round(float(np.median(accs["baseline"])), 4),
        "dlvision_acc": round(float(np.median(accs["dlvision"])), 4),
        "peak_mem_mb": round(peak, 1),
        "full_size": n == (60_000 if lenet else 50_000) and args.n_test == 10_000,
        "n_train": n,
        "n_test": args.n_test,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "reps": args.reps,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    line = json.dumps(result)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
