"""dlvision.data: offline datasets, torchvision's (offline path simulated), the tensor loader, load()."""

import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

import dlvision as dv
from dlvision.data import ImageData, Split, TensorLoader, digits, load, photo, shapes


def test_existing_generators_still_work():
    d = dv.data.linearly_separable(50, 0.1, dim=3, radius=2.0, bias=True, seed=1)
    assert d.X.shape == (50, 3) and set(np.unique(d.y)) == {-1, 1}
    assert np.isclose(np.min(d.y * (d.X @ d.w + d.b)), 0.1)
    X, y = dv.data.xor(8, noise=0.1, seed=0)
    assert X.shape == (8, 2) and y.tolist() == [0, 1, 1, 0] * 2


@pytest.mark.parametrize("size", [8, 28, 32])
def test_digits_sizes_and_split(size):
    train, test = digits(size=size, seed=0)
    assert isinstance(train, ImageData) and train.x.dtype == torch.uint8 and train.y.dtype == torch.int64
    assert train.shape == (1, size, size) and len(train) + len(test) == 1797
    assert len(test) == 450 and train.classes == tuple("0123456789")
    # stratified: each class keeps its share in the test split
    frac = torch.bincount(test.y, minlength=10) / torch.bincount(torch.cat([train.y, test.y]), minlength=10)
    assert torch.all((frac - 0.25).abs() < 0.03)
    assert test.mean == train.mean and 0 < train.mean[0] < 1
    again = digits(size=size, seed=0)
    assert torch.equal(again.train.x, train.x)
    other = digits(size=size, seed=1)
    assert not torch.equal(other.train.y, train.y)


def test_digits_bad_input():
    with pytest.raises(dv.DLVisionError, match="8, 28 or 32"):
        digits(size=16)
    with pytest.raises(dv.DLVisionError, match="test_fraction"):
        digits(test_fraction=1.5)


def test_shapes_seeded_balanced_any_size():
    s = shapes(120, 20, seed=3)
    assert isinstance(s, Split) and s.train is s[0] and s.test is s[1]
    assert s.train.shape == (3, 20, 20) and len(s.train) + len(s.test) == 120
    counts = torch.bincount(torch.cat([s.train.y, s.test.y]))
    assert counts.tolist() == [20] * 6
    assert torch.equal(shapes(120, 20, seed=3).train.x, s.train.x)
    assert not torch.equal(shapes(120, 20, seed=4).train.x, s.train.x)
    grey = shapes(30, 28, channels=1, classes=("circle", "square"), background="gradient", seed=0)
    assert grey.train.shape == (1, 28, 28) and grey.train.classes == ("circle", "square")
    for bg in dv.data.BACKGROUNDS:
        x = shapes(12, 16, background=bg, noise=0, seed=0).train.x
        assert x.dtype == torch.uint8 and x.float().std() > 0


def test_shapes_draws_the_named_shape():
    # Without noise on black: a ring has a hole at its centre, a circle does not.
    s = shapes(60, 48, classes=("circle", "ring"), noise=0.0, seed=0)
    x, y = s.train.x.float().sum(1), s.train.y
    filled = (x > 0).float().mean((1, 2))
    assert filled[y == 0].mean() > filled[y == 1].mean()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=0), "positive integer"),
        (dict(size=4), "at least 8"),
        (dict(classes=("circle", "hexagon")), "classes"),
        (dict(channels=2), "channels"),
        (dict(background="sky"), "background"),
    ],
)
def test_shapes_bad_input(kwargs, match):
    with pytest.raises(dv.DLVisionError, match=match):
        shapes(**kwargs)


def test_photos_ship_and_load_offline():
    x = photo("astronaut")
    assert x.shape == (3, 512, 512) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert photo("camera").shape == (1, 512, 512)
    assert photo("chelsea", grey=True).shape[0] == 1
    assert photo("coffee", size=64).shape == (3, 64, 96)
    assert photo("logo").shape[0] == 3  # alpha dropped
    for name in dv.data.PHOTOS:
        assert photo(name, size=16).shape[1] >= 16


def test_photo_errors():
    with pytest.raises(dv.DLVisionError, match="Did you mean 'astronaut'"):
        photo("astronut")
    with pytest.raises(dv.DatasetUnavailableError, match="network"):
        photo("eagle")


def test_load_by_name_and_unknown_names():
    s = load("digits", size=8)
    assert s.train.shape == (1, 8, 8)
    assert load("Shapes", n=24, size=16).train.shape == (3, 16, 16)
    with pytest.raises(dv.DLVisionError, match=r"Did you mean 'mnist'.*digits, shapes, mnist, fashion_mnist, cifar10"):
        load("minst")
    with pytest.raises(dv.DLVisionError, match="The datasets are"):
        load("imagenet-22k")
    with pytest.raises(dv.DLVisionError, match="string"):
        load(3)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST"), ("cifar10", "cifar-10-batches-py")])
def test_torchvision_dataset_offline_gives_one_clear_error(name, folder, tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("simulated: no network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setenv("DLVISION_CACHE", str(tmp_path))
    with pytest.raises(dv.DatasetUnavailableError) as info:
        load(name)
    msg = str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # one error, not a chain
    assert str(tmp_path) in msg and "simulated: no network" in msg and "by hand" in msg and folder in msg
    assert "offline instead: dlvision.data.load(" in msg
    # nothing half-written is left in the cache
    assert list(tmp_path.iterdir()) == []


def test_torchvision_dataset_from_the_cache(tmp_path, monkeypatch):
    """A dataset already in the cache loads without the network, as uint8 tensors."""
    from dlvision.data import torchvision_sets as tvs

    class Fake:
        def __init__(self, train):
            self.data = torch.randint(0, 256, (6 if train else 4, 28, 28), dtype=torch.uint8)
            self.targets = torch.arange(6 if train else 4) % 10

    calls = []

    def fake_open(name, root, download):
        calls.append(download)
        return Fake(True), Fake(False)

    monkeypatch.setattr(tvs, "_open", fake_open)
    s = dv.data.mnist(root=tmp_path)
    assert calls == [False]
    assert s.train.x.shape == (6, 1, 28, 28) and s.train.x.dtype == torch.uint8 and len(s.test) == 4


def test_imagedata_checks_and_helpers():
    x = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(10) % 2
    d = ImageData(x, y, ("a", "b"), "toy")
    assert len(d) == 10 and d.num_classes == 2 and "toy" in repr(d)
    xs, ys = d
    assert xs is x and ys is y
    assert len(d.subset(4)) == 4 and d.resized(16).shape == (3, 16, 16)
    assert d.float().max() <= 1 and d.normalized().dtype == torch.float32
    assert d.to("cpu").x.device.type == "cpu"
    with pytest.raises(dv.DLVisionError, match="unsqueeze"):
        ImageData(x[:, 0], y)
    with pytest.raises(dv.DLVisionError, match="permute"):
        ImageData(x.permute(0, 2, 3, 1), y)
    with pytest.raises(dv.DLVisionError, match="int64"):
        ImageData(x, y.int())
    with pytest.raises(dv.DLVisionError, match="10 images"):
        ImageData(x, y[:5])
    with pytest.raises(dv.DLVisionError, match="uint8"):
        ImageData(x.int(), y)
    with pytest.raises(dv.DLVisionError, match="subset size"):
        d.subset(11)


def _toy(n=10):
    x = torch.arange(n * 1 * 4 * 4, dtype=torch.float32).view(n, 1, 4, 4) % 251
    return x.to(torch.uint8), torch.arange(n) % 3


def test_tensor_loader_visits_everything_once_per_epoch():
    x, y = _toy(10)
    loader = TensorLoader(x, y, batch_size=4, shuffle=True, seed=0)
    assert len(loader) == 3 and loader.num_samples == 10
    seen = torch.cat([yb for _, yb in loader])
    assert sorted(seen.tolist()) == sorted(y.tolist())
    xb, _ = next(iter(loader))
    assert xb.dtype == torch.float32 and xb.max() <= 1.0  # uint8 scaled to 0..1 without stats
    order1 = torch.cat([b for _, b in loader])
    order2 = torch.cat([b for _, b in TensorLoader(x, y, batch_size=4, seed=0)])
    assert torch.equal(torch.cat([b for _, b in TensorLoader(x, y, batch_size=4, seed=0)]), order2)
    assert len(order1) == 10
    assert len(TensorLoader(x, y, batch_size=4, drop_last=True)) == 2
    fixed = torch.cat([b for _, b in TensorLoader(x, y, batch_size=3, shuffle=False)])
    assert torch.equal(fixed, y)


def test_tensor_loader_normalises_with_the_data_stats():
    d = digits(size=8).train
    loader = TensorLoader(d, batch_size=len(d), shuffle=False)
    xb, yb = next(iter(loader))
    assert torch.allclose(xb, d.normalized(), atol=1e-5) and torch.equal(yb, d.y)
    assert abs(xb.mean().item()) < 0.05
    raw = next(iter(TensorLoader(d, batch_size=len(d), shuffle=False, normalize=False)))[0]
    assert torch.allclose(raw, d.float())


def test_random_crop_and_flip_are_windows_and_mirrors():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (16, 3, 6, 6), dtype=torch.uint8)
    out = dv.data.random_crop(x, 2, g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2,) * 4)
    for i in range(len(x)):  # every crop is a 6x6 window of the padded image
        assert any(torch.equal(out[i], padded[i, :, a : a + 6, b : b + 6]) for a in range(5) for b in range(5))
    f = dv.data.random_flip(x, g)
    flipped = [torch.equal(f[i], x[i].flip(2)) for i in range(len(x))]
    kept = [torch.equal(f[i], x[i]) for i in range(len(x))]
    assert all(a or b for a, b in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)


def test_tensor_loader_augments_on_the_device_in_batches():
    s = shapes(40, 16, seed=0).train
    loader = TensorLoader(s, batch_size=8, crop=2, flip=True, seed=1, channels_last=True)
    xb, yb = next(iter(loader))
    assert xb.shape == (8, 3, 16, 16) and xb.dtype == torch.float32
    assert xb.is_contiguous(memory_format=torch.channels_last)
    a = [xb for xb, _ in TensorLoader(s, batch_size=8, crop=2, flip=True, seed=5)]
    b = [xb for xb, _ in TensorLoader(s, batch_size=8, crop=2, flip=True, seed=5)]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert "crop=2" in repr(loader) and "flip" in repr(loader)


def test_tensor_loader_bad_input():
    x, y = _toy(6)
    with pytest.raises(dv.DLVisionError, match="labels y are missing"):
        TensorLoader(x)
    with pytest.raises(dv.DLVisionError, match="ImageData or a tensor"):
        TensorLoader([1, 2, 3], y)
    with pytest.raises(dv.DLVisionError, match="batch_size"):
        TensorLoader(x, y, batch_size=0)
    with pytest.raises(dv.DLVisionError, match="crop"):
        TensorLoader(x, y, crop=-1)
    with pytest.raises(dv.DLVisionError, match="unsqueeze"):
        TensorLoader(x[:, 0], y, flip=True)
    with pytest.raises(dv.DLVisionError, match="int64"):
        TensorLoader(x, y.float())
    with pytest.raises(dv.DLVisionError, match="empty"):
        TensorLoader(x[:0], y[:0])
    with pytest.raises(dv.DLVisionError, match="not both"):
        TensorLoader(digits().train, y)


def test_as_loader_accepts_the_usual_containers():
    from dlvision.data import as_loader

    x, y = _toy(6)
    assert isinstance(as_loader((x.float(), y)), TensorLoader)
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.float(), y), batch_size=2)
    assert as_loader(dl) is dl
    with pytest.raises(dv.DLVisionError, match="DataLoader"):
        as_loader(torch.utils.data.TensorDataset(x, y))
    with pytest.raises(dv.DLVisionError, match="must be an ImageData"):
        as_loader(3)
