"""dlvision: devices, profiles, seeding, the cache directory, and the library's boundaries."""

import random

import numpy as np
import pytest
import torch

import dlvision as dv
from dlvision import device as dvdevice


def test_get_device_says_which_in_one_line(capsys):
    d = dv.get_device()
    out = capsys.readouterr().out
    assert isinstance(d, torch.device)
    assert out.count("\n") == 1 and d.type in out
    if not torch.cuda.is_available():
        assert d.type in ("cpu", "mps")
    assert dv.get_device(verbose=False) == d
    assert capsys.readouterr().out == ""


def test_describe_and_precision_on_cpu():
    assert dv.describe_device("cpu").startswith("cpu")
    assert dv.precision_for("cpu") == "fp32"
    assert dv.precision_for(torch.device("cpu")) == "fp32"


def test_precision_follows_compute_capability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (7, 5))
    assert dv.precision_for("cuda") == "fp16"  # T4: fp16 with gradient scaling
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (8, 0))
    assert dv.precision_for("cuda:0") == "bf16"  # A100 and later


def test_get_device_prefers_cuda_then_mps(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dvdevice, "_mps_available", lambda: True)
    assert dv.get_device(verbose=False).type == "mps"
    monkeypatch.setattr(dvdevice, "_mps_available", lambda: False)
    assert dv.get_device().type == "cpu"
    assert "no GPU" in capsys.readouterr().out


def test_profile_default_env_and_setting(monkeypatch):
    monkeypatch.delenv("DLVISION_PROFILE", raising=False)
    monkeypatch.setattr(dvdevice, "_profile_setting", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dv.profile() == "quick"
    assert dv.by_profile(quick=2, full=30) == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dv.profile() == "full"
    assert dv.by_profile(quick=2, full=30) == 30
    dv.set_profile("quick")
    assert dv.profile() == "quick"
    dv.set_profile(None)
    assert dv.profile() == "full"
    monkeypatch.setenv("DLVISION_PROFILE", "quick")  # the environment overrides
    assert dv.profile() == "quick"
    with pytest.warns(UserWarning, match="overrides"):
        dv.set_profile("full")
    assert dv.profile() == "quick"
    dv.set_profile(None)


def test_unknown_profile_lists_the_valid_ones(monkeypatch):
    monkeypatch.setenv("DLVISION_PROFILE", "fast")
    with pytest.raises(dv.DLVisionError, match=r"unknown profile 'fast'.*'quick', 'full'"):
        dv.profile()
    monkeypatch.delenv("DLVISION_PROFILE")
    with pytest.raises(dv.DLVisionError, match="'quick', 'full'"):
        dv.set_profile("medium")


def test_seed_everything_seeds_python_numpy_torch():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    assert dv.seed_everything(7) == 7
    a = draw()
    dv.seed_everything(7)
    assert draw() == a
    dv.seed_everything(8)
    assert draw() != a


def test_seed_everything_deterministic_option():
    try:
        dv.seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        dv.seed_everything(0)
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True, 2**32])
def test_seed_everything_bad_seed(bad):
    with pytest.raises(dv.DLVisionError, match="seed"):
        dv.seed_everything(bad)


def test_cache_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("DLVISION_CACHE", str(tmp_path / "c"))
    assert dv.cache_dir() == tmp_path / "c"
    assert (tmp_path / "c" / "weights").is_dir() is False
    assert dv.cache_dir("weights").is_dir()
    monkeypatch.delenv("DLVISION_CACHE")
    assert dv.cache_dir(create=False).parts[-2:] == (".cache", "dlvision")


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    from dlvision.cache import atomic_path

    target = tmp_path / "f.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and len(list(tmp_path.iterdir())) == 1


def test_the_library_holds_no_exercise_answers():
    """No output-size formula, parameter counter or hand-written backward pass is exported."""
    import pkgutil

    # A test tool that runs autograd's backward pass on a module is not a hand-written one.
    ALLOWED = {"dlvision.testing.forward_backward"}
    forbidden = ("output_size", "out_size", "conv_output", "count_param", "num_params", "n_params", "backward", "receptive")
    for mod in pkgutil.walk_packages(dv.__path__, "dlvision."):
        module = __import__(mod.name, fromlist=["_"])
        for name in getattr(module, "__all__", []):
            if f"{mod.name}.{name}" in ALLOWED:
                continue
            assert not any(f in name.lower() for f in forbidden), f"{mod.name}.{name}"
