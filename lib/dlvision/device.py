"""Devices, precision, the quick/full profile and seeding."""

from __future__ import annotations

import os
import random
import warnings

import numpy as np
import torch

from .errors import DLVisionError

__all__ = [
    "get_device",
    "describe_device",
    "precision_for",
    "profile",
    "set_profile",
    "by_profile",
    "PROFILES",
    "seed_everything",
    "CPUTrainingWarning",
]

PROFILES = ("quick", "full")
_ENV_PROFILE = "DLVISION_PROFILE"
_profile_setting: str | None = None


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def describe_device(device) -> str:
    """A short human description of a device, e.g. ``cuda:0 (NVIDIA H100, compute capability 9.0)``."""
    device = torch.device(device)
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(idx)
        return f"cuda:{idx} ({torch.cuda.get_device_name(idx)}, compute capability {major}.{minor})"
    if device.type == "mps":
        return "mps (Apple GPU)"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def get_device(verbose: bool = True) -> torch.device:
    """The best device here: CUDA, then Apple MPS, then the CPU. Prints one line saying which."""
    if torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    elif _mps_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    if verbose:
        why = ""
        if device.type == "cpu":
            try:
                why = f": no GPU found, so training is slow; the {profile()} profile applies"
            except DLVisionError:  # a bad DLVISION_PROFILE is reported where the profile is read
                why = ": no GPU found, so training is slow"
        print(f"dlvision: using {describe_device(device)}{why}")
    return device


def precision_for(device) -> str:
    """The training precision for ``device``: ``"bf16"`` on CUDA from compute capability 8.0,
    ``"fp16"`` (with gradient scaling) below it, ``"fp32"`` elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        return "bf16" if torch.cuda.get_device_capability(idx)[0] >= 8 else "fp16"
    return "fp32"


def _check_profile(name, source: str) -> str:
    if name not in PROFILES:
        raise DLVisionError(
            f"unknown profile {name!r} ({source}); the valid profiles are {', '.join(map(repr, PROFILES))}"
        )
    return name


def profile() -> str:
    """The current profile, ``"quick"`` or ``"full"``.

    The environment variable ``DLVISION_PROFILE`` overrides everything; then a value
    given to :func:`set_profile`; else ``"full"`` when CUDA is present and ``"quick"``
    otherwise.
    """
    env = os.environ.get(_ENV_PROFILE)
    if env:
        return _check_profile(env.strip().lower(), f"from the environment variable {_ENV_PROFILE}")
    if _profile_setting is not None:
        return _profile_setting
    return "full" if torch.cuda.is_available() else "quick"


def set_profile(name: str | None) -> None:
    """Set the profile for this process (``None`` goes back to the automatic choice).

    ``DLVISION_PROFILE``, when set, still wins (a warning says so).
    """
    global _profile_setting
    if name is not None:
        _check_profile(name, "given to set_profile")
    env = os.environ.get(_ENV_PROFILE)
    if env and name is not None and env.strip().lower() != name:
        warnings.warn(
            f"{_ENV_PROFILE}={env} is set and overrides set_profile({name!r}); unset it to choose here",
            stacklevel=2,
        )
    _profile_setting = name


def by_profile(*, quick, full):
    """``quick`` or ``full``, by the current profile: ``epochs = by_profile(quick=2, full=30)``."""
    return quick if profile() == "quick" else full


def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and all GPUs).

    With ``deterministic=True`` torch also uses deterministic algorithms (slower on a
    GPU; it warns where an operation has none). Returns ``seed``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise DLVisionError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
    return seed


class CPUTrainingWarning(UserWarning):
    """Training is about to run on the CPU: it says how long it should take."""
