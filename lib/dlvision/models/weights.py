"""Pretrained networks: torchvision's ImageNet weights (online once, then cached), and the
book's own source model, whose checkpoint ships with the library (offline)."""

from __future__ import annotations

import difflib
from pathlib import Path

import torch

from ..cache import cache_dir
from ..errors import DLVisionError, WeightsUnavailableError

__all__ = ["pretrained", "source_model", "check_source_checkpoint", "SOURCE_CHECKPOINT", "SOURCE_FORMAT"]


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
            "  offline instead: dlvision.models.source_model(), the book's own pretrained CNN (ships with dlvision)"
        ) from None
    model = tvm.get_model(name, weights=None)
    model.load_state_dict(state)
    model.categories = list(w.meta.get("categories", []))
    model.preprocess = w.transforms()
    return model.eval()


SOURCE_CHECKPOINT = Path(__file__).with_name("source_model.pt")
SOURCE_FORMAT = 2  # the layout of the checkpoint file (1 was the shapes CNN trained at first use)
_memo: dict = {}


def _read_source_checkpoint(path: Path = SOURCE_CHECKPOINT) -> dict:
    if not path.is_file():
        raise WeightsUnavailableError(
            f"the book's source model checkpoint is missing: {path}. It ships with dlvision; reinstall it "
            "(pip install -e lib, or the setup cell on Colab), or make it again with "
            "python tools/train_source_model.py (a few minutes on a CPU)."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailableError(
            f"could not read the source model checkpoint {path} with torch {torch.__version__} "
            f"({type(exc).__name__}: {str(exc)[:200]}). Make it again with python tools/train_source_model.py."
        ) from None
    if not isinstance(state, dict) or state.get("format") != SOURCE_FORMAT:
        raise WeightsUnavailableError(
            f"{path} is not a source model checkpoint of format {SOURCE_FORMAT}; "
            "make it again with python tools/train_source_model.py"
        )
    return state


def source_model() -> torch.nn.Module:
    """The book's source model: a :class:`~dlvision.models.source.SourceNet` trained on
    :func:`~dlvision.data.scenes` (12 kinds of objects on varied backgrounds).

    It plays the part of a pretrained network in the transfer-learning and visualisation
    chapters, offline. The weights ship with dlvision (``source_model.pt`` next to this file,
    written by ``tools/train_source_model.py``), so nothing is trained or downloaded. Each call
    returns a fresh copy, in eval mode, on the CPU, with attributes ``classes`` (names of the
    12 source classes), ``mean`` and ``std`` (per channel, on the 0..1 scale: normalise inputs
    with them, as in training), ``test_accuracy`` (on the source task's 6,000 test images)
    and ``meta`` (all the checkpoint's metadata: training time, recipe, torch version).

    The network is split as torchvision's ResNets are: the body ``features`` (feature maps),
    ``avgpool``, a flatten, and the head ``fc``. The caller's random state is left as it was.
    """
    from .source import SourceNet

    key = str(SOURCE_CHECKPOINT)
    if key not in _memo:
        _memo[key] = _read_source_checkpoint(SOURCE_CHECKPOINT)
    state = _memo[key]
    meta = state["meta"]
    with torch.random.fork_rng(devices=[]):  # building the model must not move the caller's random state
        model = SourceNet(len(meta["classes"]), widths=tuple(meta["recipe"]["widths"]))
    model.load_state_dict(state["state_dict"])
    model.classes, model.mean, model.std = tuple(meta["classes"]), tuple(meta["mean"]), tuple(meta["std"])
    model.test_accuracy = float(meta["test_accuracy"])
    model.meta = {k: (dict(v) if isinstance(v, dict) else v) for k, v in meta.items()}
    return model.eval()


def check_source_checkpoint() -> dict:
    """Score the shipped source model again on its test split, made anew from the recipe.

    Returns ``expected`` (the accuracy stored in the checkpoint), ``measured``, ``test_size``
    and ``matches`` (the two agree to within one test image). No training; a few seconds.
    """
    from ..train.loop import evaluate
    from .source import source_test_data

    model = source_model()
    test = source_test_data(model.meta["recipe"], mean=model.mean, std=model.std)
    with torch.random.fork_rng(devices=[]):
        measured = evaluate(model, test).accuracy
    expected = model.test_accuracy
    return {
        "expected": expected,
        "measured": measured,
        "test_size": len(test),
        "matches": abs(measured - expected) * len(test) <= 1 + 1e-9,
    }
