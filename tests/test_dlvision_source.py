"""The book's source model (dlvision.models.source_model, SourceNet, the shipped checkpoint and the
script that made it) and its data (dlvision.data.scenes, digit_scenes)."""

import colorsys
import random
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import dlvision as dv
from dlvision.data import SCENE_SHAPES, SOURCE_SHAPES, TARGET_SHAPES, digit_scenes, scenes
from dlvision.models import SourceNet
from dlvision.models import source as source_module
from dlvision.models import weights as weights_module

REPO = Path(__file__).resolve().parents[1]


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- the network


def test_sourcenet_parameter_count_and_shapes_as_documented():
    model = SourceNet()
    convs = 3 * 16 * 9 + 16 * 32 * 9 + 32 * 64 * 9 + 64 * 128 * 9
    bn = 2 * (16 + 32 + 64 + 128)
    head = 128 * 12 + 12
    assert n_params(model) == convs + bn + head == 99_228
    assert "99,228" in SourceNet.__doc__
    x = torch.randn(2, 3, 32, 32)
    assert model.features(x).shape == (2, 128, 4, 4)
    assert model(x).shape == (2, 12)
    assert isinstance(model.fc, nn.Linear) and model.fc.in_features == 128
    # Non-square inputs work (global average pooling), and other widths and class counts.
    small = SourceNet(5, in_channels=1, widths=(4, 8))
    assert small(torch.randn(3, 1, 20, 28)).shape == (3, 5)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in small.modules()) == 2


def test_sourcenet_multiply_adds_as_documented():
    from torch.utils.flop_counter import FlopCounterMode

    model = SourceNet().eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 32, 32))
    macs = counter.get_total_flops() / 2
    assert 3.9e6 < macs < 4.1e6  # "about 4.0 million multiply-adds"


def test_the_head_split_is_torchvision_resnets():
    """Code that replaces ``fc`` works unchanged on SourceNet and on torchvision's ResNet-18."""
    import torchvision

    for model, dim in ((SourceNet(), 128), (torchvision.models.resnet18(weights=None), 512)):
        with torch.device("meta"):
            model = model.to("meta")
            model.fc = nn.Identity()
            out = model(torch.empty(2, 3, 64, 64, device="meta"))
        assert out.shape == (2, dim), type(model).__name__


# --------------------------------------------------------------------------- the shipped checkpoint


def test_source_model_loads_offline_with_its_attributes_and_keeps_the_random_state():
    dv.seed_everything(0)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    dv.seed_everything(0)
    model = dv.models.source_model()
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert isinstance(model, SourceNet) and not model.training
    assert all(not m.training for m in model.modules())
    assert model.classes == SOURCE_SHAPES
    assert len(model.mean) == len(model.std) == 3 and all(0 < s < 1 for s in model.std)
    assert 0.85 <= model.test_accuracy <= 1.0, "the source model must be worth transferring from"
    meta = model.meta
    assert meta["test_size"] == 6000 and meta["train_size"] == 24000
    assert meta["train_seconds"] > 0 and meta["torch"]
    # The shipped file was made with the recipe in the library (else run tools/train_source_model.py).
    recipe = {k: list(v) if isinstance(v, tuple) else v for k, v in source_module.SOURCE_RECIPE.items()}
    assert meta["recipe"] == recipe
    # Each call is a fresh copy: changing one does not change the next.
    with torch.no_grad():
        model.fc.weight.zero_()
    model.meta["test_size"] = -1
    again = dv.models.source_model()
    assert again.fc.weight.abs().sum() > 0 and again.meta["test_size"] == 6000


def test_source_checkpoint_scores_what_its_metadata_says():
    facts = weights_module.check_source_checkpoint()
    assert facts["test_size"] == 6000
    assert facts["matches"], facts


def test_source_test_data_is_the_recipes_test_split():
    """The test split made alone is the same images as in the whole data set (small recipe)."""
    recipe = dict(n=1200, seed=5)  # 240 test images: the first of three chunks
    full = source_module.source_data(recipe)
    alone = source_module.source_test_data(recipe, mean=full.train.mean, std=full.train.std)
    assert torch.equal(alone.x, full.test.x) and torch.equal(alone.y, full.test.y)
    assert alone.mean == full.train.mean


def test_missing_or_broken_checkpoint_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_module, "_memo", {})
    monkeypatch.setattr(weights_module, "SOURCE_CHECKPOINT", tmp_path / "source_model.pt")
    with pytest.raises(dv.WeightsUnavailableError, match="missing.*train_source_model.py"):
        dv.models.source_model()
    (tmp_path / "source_model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(dv.WeightsUnavailableError, match="could not read"):
        dv.models.source_model()
    torch.save({"format": 1, "model": {}}, tmp_path / "source_model.pt")
    with pytest.raises(dv.WeightsUnavailableError, match="format 2"):
        dv.models.source_model()


def test_the_checkpoint_ships_with_the_package():
    config = tomllib.loads((REPO / "lib" / "pyproject.toml").read_text())
    assert "source_model.pt" in config["tool"]["setuptools"]["package-data"]["dlvision.models"]
    assert weights_module.SOURCE_CHECKPOINT.is_file()
    assert weights_module.SOURCE_CHECKPOINT.stat().st_size < 2_000_000  # a small file in the repository


@pytest.mark.filterwarnings("ignore::dlvision.CPUTrainingWarning")
def test_the_training_recipe_runs_is_seeded_and_leaves_the_random_state():
    """The script's code path, on a tiny version of the recipe: same weights twice."""
    small = dict(n=120, epochs=1, widths=(4, 8, 8, 8))
    dv.seed_everything(3)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    dv.seed_everything(3)
    m1, meta = source_module.train_source_model(small, verbose=False)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    m2, _ = source_module.train_source_model(small, verbose=False)
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True))
    assert not m1.training and meta["test_size"] == 24 and meta["train_size"] == 96
    assert 0 <= meta["test_accuracy"] <= 1 and meta["recipe"]["widths"] == [4, 8, 8, 8]
    assert meta["classes"] == list(SOURCE_SHAPES)


def test_the_script_checks_the_shipped_checkpoint(monkeypatch, capsys):
    """``tools/train_source_model.py --check`` reports the check and fails when it does not match."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_source_model", REPO / "tools" / "train_source_model.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for matches, code in ((True, 0), (False, 1)):
        facts = {"expected": 0.9, "measured": 0.9 if matches else 0.5, "test_size": 10, "matches": matches}
        monkeypatch.setattr(weights_module, "check_source_checkpoint", lambda facts=facts: facts)
        monkeypatch.setattr(source_module, "train_source_model", lambda *a, **k: pytest.fail("--check trains nothing"))
        assert script.main(["--check"]) == code
        assert f'"matches": {str(matches).lower()}' in capsys.readouterr().out


# --------------------------------------------------------------------------- the data


def test_scenes_shapes_dtypes_balance_and_seeding():
    data = scenes(130, 24, seed=1)
    assert data.train.x.shape == (104, 3, 24, 24) and data.test.x.shape == (26, 3, 24, 24)
    assert data.train.x.dtype == torch.uint8 and data.train.y.dtype == torch.int64
    assert data.train.classes == SOURCE_SHAPES and data.test.mean == data.train.mean
    counts = torch.bincount(torch.cat([data.train.y, data.test.y]), minlength=12)
    assert counts.max() - counts.min() <= 1
    again = scenes(130, 24, seed=1)
    assert torch.equal(again.train.x, data.train.x) and torch.equal(again.test.y, data.test.y)
    other = scenes(130, 24, seed=2)
    assert not torch.equal(other.train.x, data.train.x)
    target = scenes(60, classes=TARGET_SHAPES, seed=0)
    assert target.train.classes == TARGET_SHAPES and set(SOURCE_SHAPES).isdisjoint(TARGET_SHAPES)
    assert SCENE_SHAPES == SOURCE_SHAPES + TARGET_SHAPES


def test_scenes_every_kind_and_option_renders():
    data = scenes(len(SCENE_SHAPES) * 2, classes=SCENE_SHAPES, backgrounds=("photo",), photos=("brick", "astronaut"),
                  seed=0)  # fmt: skip
    x = torch.cat([data.train.x, data.test.x]).float()
    assert x.std(dim=(1, 2, 3)).min() > 5  # every image has content (an object on a photo)
    for fills in [("solid",), ("stripes",), ("checker",), ("dots",), ("gradient",)]:
        for backgrounds in [("plain",), ("gradient",), ("noise",), ("texture",)]:
            d = scenes(8, fills=fills, backgrounds=backgrounds, seed=0)
            assert d.train.x.shape == (6, 3, 32, 32)


def test_scenes_plain_backgrounds_solid_fills_and_hue():
    """With plain backgrounds and no noise, the four corners are the background (an object stays
    inside its circle); a solid disc's centre has the hue asked for."""
    d = scenes(40, classes=("circle", "square"), backgrounds=("plain",), fills=("solid",), hue=(0.55, 0.6),
               noise=0.0, seed=0)  # fmt: skip
    x = torch.cat([d.train.x, d.test.x])
    corners = x[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]  # (N, 3, 4)
    assert (corners == corners[:, :, :1]).all()
    y = torch.cat([d.train.y, d.test.y])
    for img in x[y == 0]:  # circles: the centre of mass of the non-background pixels is inside the disc
        differs = (img != img[:, :1, :1]).any(0)
        rows, cols = torch.nonzero(differs, as_tuple=True)
        r, c = int(rows.float().mean().round()), int(cols.float().mean().round())
        h, s, v = colorsys.rgb_to_hsv(*(img[:, r, c].float() / 255).tolist())
        assert 0.54 <= h <= 0.61 and s > 0.2, (h, s, v)


def test_scenes_scale_changes_the_object_size():
    def covered(scale):
        d = scenes(48, classes=("circle", "square"), backgrounds=("plain",), fills=("solid",), scale=scale,
                   noise=0.0, seed=0)  # fmt: skip
        x = d.train.x
        return (x != x[:, :, :1, :1]).any(1).float().mean().item()

    small, large = covered((0.1, 0.15)), covered((0.4, 0.5))
    assert 0.02 < small < 0.12 < 0.35 < large < 0.8


def test_scenes_bad_arguments_say_what_to_do():
    with pytest.raises(dv.DLVisionError, match="classes must be distinct names"):
        scenes(10, classes=("circle", "blob"))
    with pytest.raises(dv.DLVisionError, match="at least two classes"):
        scenes(10, classes=("circle",))
    with pytest.raises(dv.DLVisionError, match="backgrounds"):
        scenes(10, backgrounds=("sky",))
    with pytest.raises(dv.DLVisionError, match="fills"):
        scenes(10, fills=())
    with pytest.raises(dv.DLVisionError, match="scale must be a pair with 0.1"):
        scenes(10, scale=(0.05, 0.2))
    with pytest.raises(dv.DLVisionError, match="hue must be a pair"):
        scenes(10, hue=0.5)
    with pytest.raises(dv.DLVisionError, match="size must be at least 16"):
        scenes(10, 8)
    with pytest.raises(dv.DLVisionError, match="photos"):
        scenes(10, backgrounds=("photo",), photos=("lena",))
    with pytest.raises(dv.DLVisionError, match="positive integer"):
        scenes(0)
    with pytest.raises(dv.DLVisionError, match="test_fraction"):
        scenes(10, test_fraction=1.0)


def test_digit_scenes_are_real_digits_in_the_same_world():
    d = digit_scenes(100, seed=0)
    assert d.train.classes == tuple("0123456789") and d.train.x.shape == (80, 3, 32, 32)
    counts = torch.bincount(torch.cat([d.train.y, d.test.y]), minlength=10)
    assert counts.tolist() == [10] * 10
    again = digit_scenes(100, seed=0)
    assert torch.equal(again.train.x, d.train.x)
    plain = digit_scenes(20, backgrounds=("plain",), fills=("solid",), noise=0.0, seed=0)
    x = plain.train.x
    assert ((x != x[:, :, :1, :1]).any(1).float().mean(dim=(1, 2)) > 0.03).all()  # ink is drawn
