"""Pretrained networks: torchvision's ImageNet weights (online once, then cached), and the
book's own source model, trained offline on first use and cached."""

from __future__ import annotations

import difflib
import importlib
import random
import sys
from pathlib import Path

import numpy as np
import torch

from ..cache import atomic_path, cache_dir
from ..errors import DLVisionError, WeightsUnavailableError
from .convnets import SmallCNN

__all__ = ["pretrained", "source_model", "SOURCE_MODEL_VERSION"]


def pretrained(name: str = "resnet18", *, weights: str = "DEFAULT", progress: bool = False) -> torch.nn.Module:
    """A torchvision network with ImageNet weights, in eval mode, on the CPU.

    ``name`` is a torchvision model name (``"resnet18"``, ``"alexnet"``, ``"vgg16"``, ...),
    ``weights`` the name of one of its weight sets (default: the best). The weights are
    downloaded once into ``cache_dir("weights")``. The model gets two attributes:
    ``categories`` (the class names) and ``preprocess`` (the matching transform).
    Offline and not cached: a :class:`~dlvision.errors.WeightsUnavailableError` that
    says where to put the file by hand and what to use instead.
    """
    import torchvision.models as tvm

    names = tvm.list_models()
    if name not in names:
        close = difflib.get_close_matches(str(name), names, n=3)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise DLVisionError(f"unknown torchvision model {name!r}.{hint} See torchvision.models.list_models().")
    enum = tvm.get_model_weights(name)
    try:
        w = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    except KeyError:
        raise DLVisionError(
            f"{name} has no weights {weights!r}; choose one of {', '.join(m.name for m in enum)}"
        ) from None
    folder = cache_dir("weights")
    file_name = w.url.rsplit("/", 1)[-1]
    try:
        # torch.hub downloads to a temporary '.partial' file and renames it on success.
        state = torch.hub.load_state_dict_from_url(w.url, model_dir=str(folder), progress=progress, map_location="cpu")
    except Exception as exc:
        why = " ".join(str(exc).split())[:200]
        raise WeightsUnavailableError(
            f"could not get the ImageNet weights of {name} ({w.name}): the file is not in the cache and "
            f"the download failed ({type(exc).__name__}: {why}).\n"
            f"  cache: {folder / file_name}  (set DLVISION_CACHE to use another folder)\n"
            f"  by hand: download {w.url} on a machine with internet and copy it to that path\n"
            "  offline instead: dlvision.models.source_model(), a small CNN the book trains on its own data"
        ) from None
    model = tvm.get_model(name, weights=None)
    model.load_state_dict(state)
    model.categories = list(w.meta.get("categories", []))
    model.preprocess = w.transforms()
    return model.eval()


SOURCE_MODEL_VERSION = 1
_SOURCE = dict(n=2000, size=32, background="plain", epochs=5, lr=3e-3, batch_size=64, seed=1998)
_memo: dict = {}


def _source_path() -> Path:
    return cache_dir("models") / f"source_model_v{SOURCE_MODEL_VERSION}.pt"


def source_model(*, retrain: bool = False, verbose: bool = True) -> torch.nn.Module:
    """The book's source model: a :class:`SmallCNN` trained on the coloured shapes.

    It plays the role of a pretrained network for the transfer-learning and
    visualisation chapters, offline. The first call trains it (seeded: 1,600 training images
    of 32x32 pixels, 6 classes, 5 epochs; about 10-30 s on a 2-core CPU), saves it
    atomically to ``cache_dir("models")`` and returns it; later calls load the file.
    The caller's random state is left as it was, so a chapter gives the same numbers
    whether or not the model was cached. The model is returned in eval mode on the
    CPU, with attributes ``classes``, ``mean``, ``std`` (to normalise inputs as in
    training) and ``test_accuracy``.
    """
    path = _source_path()
    if not retrain and path in _memo:
        return _fresh(_memo[path])
    state = None
    if path.is_file() and not retrain:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            if state.get("config") != _SOURCE:
                state = None  # made with other settings: train again
        except Exception:
            state = None  # unreadable (e.g. from another torch version): train again
    if state is None:
        state = _train_source(verbose)
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    _memo[path] = state
    return _fresh(state)


def _fresh(state) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):  # building the model must not move the caller's random state
        model = SmallCNN(len(state["classes"]))
    model.load_state_dict(state["model"])
    model.classes, model.mean, model.std = tuple(state["classes"]), tuple(state["mean"]), tuple(state["std"])
    model.test_accuracy = state["test_accuracy"]
    return model.eval()


def _train_source(verbose: bool) -> dict:
    from ..data.geometric import shapes
    from ..data.loader import TensorLoader
    from ..device import seed_everything
    from ..train.loop import evaluate, fit

    cfg = _SOURCE
    if verbose:
        # On stderr: a message about this run, not a result (a cached model prints nothing).
        print("dlvision: training the book's source model on the shapes dataset (once; it is then cached) ...",
              file=sys.stderr)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's torch random state is restored after
            seed_everything(cfg["seed"])
            data = shapes(cfg["n"], cfg["size"], background=cfg["background"], seed=cfg["seed"])
            model = SmallCNN(len(data.train.classes))
            train = TensorLoader(data.train, batch_size=cfg["batch_size"], shuffle=True, flip=True)
            fit_module = importlib.import_module("dlvision.train.loop")
            warned, fit_module._cpu_warned = fit_module._cpu_warned, True  # keep the CPU warning for the caller's own fit
            try:
                # On the CPU: the same weights on every machine's build, whatever GPU it has.
                fit(model, train, epochs=cfg["epochs"], lr=cfg["lr"], schedule="onecycle", device="cpu", progress=False)
            finally:
                fit_module._cpu_warned = warned
            acc = evaluate(model, data.test).accuracy
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    if verbose:
        print(f"dlvision: source model ready, test accuracy {100 * acc:.1f}% ({_source_path()})", file=sys.stderr)
    return {
        "model": model.state_dict(),
        "classes": data.train.classes,
        "mean": data.train.mean,
        "std": data.train.std,
        "test_accuracy": acc,
        "config": dict(cfg),
    }
