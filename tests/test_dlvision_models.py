"""dlvision.models: exact parameter counts (derived by hand), shapes, the modern LeNet-5 (and
the absence of the 1998 one, which is an exercise), pretrained weights offline (the book's
source model: tests/test_dlvision_source.py)."""

import urllib.error

import pytest
import torch
import torch.nn as nn

import dlvision as dv
from dlvision.models import (
    VGG,
    AlexNetSmall,
    LeNet5,
    ResNet,
    SmallCNN,
    resnet8,
    resnet20,
)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_the_1998_lenet5_is_not_in_the_library():
    """Chapter 5's assignment asks students to build the 1998 network: the library must not hold it."""
    import dlvision.models.lenet as lenet_module

    for name in ("LeNet5Original", "C3_TABLE", "SparseConv2d", "Subsampling", "RBFOutput", "ScaledTanh"):
        with pytest.raises(AttributeError):
            getattr(dv.models, name)
        assert not hasattr(lenet_module, name), name
    assert lenet_module.__all__ == ["LeNet5"]
    classes = [v for v in vars(lenet_module).values() if isinstance(v, type) and issubclass(v, nn.Module)]
    assert classes == [LeNet5] or set(classes) == {LeNet5, nn.Module}
    # no module of the library has the 1998 network's 60,000 parameters
    for model in (LeNet5(), LeNet5(in_size=28)):
        assert n_params(model) != 60_000


def test_lenet5_modern_has_61706_parameters():
    c1 = (5 * 5 * 1 + 1) * 6  # 156
    c3 = (5 * 5 * 6 + 1) * 16  # full connectivity: 2,416
    c5 = (5 * 5 * 16 + 1) * 120  # 48,120
    f6 = (120 + 1) * 84  # 10,164
    out = (84 + 1) * 10  # 850
    assert c3 == 2416
    for size in (32, 28):
        m = LeNet5(in_size=size)
        assert n_params(m) == c1 + c3 + c5 + f6 + out == 61_706
        convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)]
        linears = [mod for mod in m.modules() if isinstance(mod, nn.Linear)]
        assert [n_params(c) for c in convs] == [c1, c3, c5] and [n_params(f) for f in linears] == [f6, out]
        assert m(torch.randn(2, 1, size, size)).shape == (2, 10)
    assert n_params(LeNet5(num_classes=6, in_channels=3)) == 61_706 + 2 * 25 * 6 - 85 * 4  # C1 reads 3 channels, 6 outputs
    with pytest.raises(ValueError, match="28 or 32"):
        LeNet5(in_size=64)


@pytest.mark.parametrize("size", [32, 28])
def test_lenet5_modern_layers(size):
    """The modern variant: ReLU, 2x2 max pooling, the 1998 map sizes (28x28 input: C1 pads by 2)."""
    torch.manual_seed(0)
    m = LeNet5(in_size=size).eval()
    x = torch.randn(1, 1, size, size)  # a batch of one
    shapes = []
    h = x
    for layer in m.features:
        h = layer(h)
        shapes.append(tuple(h.shape[1:]))
    assert shapes == [(6, 28, 28), (6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 10, 10), (16, 5, 5),
                      (120, 1, 1), (120, 1, 1)]
    assert sum(isinstance(mod, nn.MaxPool2d) for mod in m.modules()) == 2
    assert sum(isinstance(mod, nn.ReLU) for mod in m.modules()) == 4
    assert torch.equal(m(x), m(x))  # eval mode is deterministic
    assert m.double()(x.double()).dtype == torch.float64
    # a non-contiguous batch gives the same scores as its contiguous copy
    xs = torch.randn(3, 1, size, size, dtype=torch.float64).transpose(2, 3)
    assert not xs.is_contiguous() and torch.allclose(m(xs), m(xs.contiguous()))


def test_vgg_parameter_count():
    convs = (3 * 32 + 32 * 32 + 32 * 64 + 64 * 64 + 64 * 128 + 128 * 128) * 9  # no bias before batch norm
    bn = 2 * (32 + 32 + 64 + 64 + 128 + 128)
    head = 128 * 10 + 10
    assert n_params(VGG()) == convs + bn + head == 288_746
    small = VGG((8, "M", 16), in_channels=1, num_classes=4)
    assert n_params(small) == (1 * 8 * 9 + 2 * 8) + (8 * 16 * 9 + 2 * 16) + (16 * 4 + 4)
    assert small(torch.randn(2, 1, 16, 16)).shape == (2, 4)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in small.modules()) == 2  # batch norm after every convolution


def _block(cin, cout):
    convs = cin * cout * 9 + cout * cout * 9
    bn = 2 * 2 * cout
    return convs + bn  # the shortcut (identity, or subsample and zero-pad) has no parameters


def test_resnet_parameter_counts():
    stem = 3 * 16 * 9 + 2 * 16
    head = 64 * 10 + 10
    r20 = stem + 3 * _block(16, 16) + _block(16, 32) + 2 * _block(32, 32) + _block(32, 64) + 2 * _block(64, 64) + head
    r8 = stem + _block(16, 16) + _block(16, 32) + _block(32, 64) + head
    assert n_params(resnet20()) == r20 == 269_722
    assert n_params(resnet8()) == r8 == 75_290
    assert resnet8()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="same length"):
        ResNet((1, 1), (16,))


def test_resnet_shortcut_subsamples_and_zero_pads():
    """The option-A shortcut: with every convolution weight at zero, a block outputs
    relu(shortcut(x)), i.e. x subsampled by the stride with zero channels appended."""
    block = ResNet((1, 1), (2, 4), in_channels=2).features[4]  # the second stage's first block: 2 -> 4 channels, stride 2
    with torch.no_grad():
        for conv in (block.conv1, block.conv2):
            conv.weight.zero_()
    block.eval()
    x = torch.randn(1, 2, 6, 5)
    y = block(x)
    assert y.shape == (1, 4, 3, 3)
    assert torch.equal(y[:, :2], torch.relu(x[:, :, ::2, ::2])) and torch.equal(y[:, 2:], torch.zeros(1, 2, 3, 3))


def test_the_library_holds_no_answer_of_the_chapter_6_assignment():
    """The assignment asks for residual blocks with projection shortcuts, bottleneck blocks and
    the VGG paper's stage without batch norm: the library has none of them."""
    import dlvision.models as models

    assert not any(hasattr(models, name) for name in ("BasicBlock", "Bottleneck", "VGGStage"))
    net = ResNet((1, 1, 1), (4, 8, 16))
    assert not any(m.kernel_size == (1, 1) for m in net.modules() if isinstance(m, nn.Conv2d))  # no projection
    with pytest.raises(TypeError):
        VGG(batch_norm=False)


def test_alexnet_small_parameter_count():
    convs = (3 * 48 * 25 + 48) + (48 * 128 * 25 + 128) + (128 * 192 * 9 + 192) + (192 * 192 * 9 + 192) + (192 * 128 * 9 + 128)
    linear = (128 * 9 * 512 + 512) + (512 * 512 + 512) + (512 * 10 + 10)
    assert linear == 858_122
    m = AlexNetSmall()
    assert n_params(m) == convs + linear == 1_790_154
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert n_params(AlexNetSmall(lrn=False)) == n_params(m)  # LRN has no parameters


def test_small_cnn_parameter_count():
    convs = (3 * 16 + 16 * 32 + 32 * 64) * 9
    bn = 2 * (16 + 32 + 64)
    head = 64 * 6 + 6
    assert n_params(SmallCNN()) == convs + bn + head == 24_086
    assert SmallCNN(num_classes=3, in_channels=1)(torch.randn(2, 1, 24, 24)).shape == (2, 3)


def test_docstrings_state_the_counts():
    for model, number in [
        (LeNet5, "61,706"),
        (VGG, "288,746"),
        (resnet20, "269,722"),
        (resnet8, "75,290"),
        (AlexNetSmall, "1,790,154"),
        (SmallCNN, "24,086"),
    ]:
        assert number in model.__doc__, model.__name__


def test_pretrained_offline_gives_a_clear_error(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("simulated: no network")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    monkeypatch.setenv("DLVISION_CACHE", str(tmp_path))
    with pytest.raises(dv.WeightsUnavailableError) as info:
        dv.models.pretrained("resnet18")
    msg = str(info.value)
    assert "resnet18" in msg and str(tmp_path / "weights" / "resnet18-f37072fd.pth") in msg
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg and "source_model()" in msg
    assert list((tmp_path / "weights").iterdir()) == []  # no partial file left


def test_pretrained_from_the_cache(tmp_path, monkeypatch):
    """A weights file placed by hand in the cache is used without the network."""
    import torchvision

    monkeypatch.setenv("DLVISION_CACHE", str(tmp_path))
    model = torchvision.models.get_model("resnet18", weights=None)
    torch.save(model.state_dict(), dv.cache_dir("weights") / "resnet18-f37072fd.pth")
    monkeypatch.setattr(torch.hub, "urlopen", lambda *a, **k: pytest.fail("no download expected"))
    m = dv.models.pretrained("resnet18")
    assert not m.training and len(m.categories) == 1000 and callable(m.preprocess)
    assert torch.equal(m.fc.weight, model.fc.weight)


def test_pretrained_bad_names():
    with pytest.raises(dv.DLVisionError, match="Did you mean 'resnet18'"):
        dv.models.pretrained("resnet-18")
    with pytest.raises(dv.DLVisionError, match="IMAGENET1K_V1"):
        dv.models.pretrained("resnet18", weights="CIFAR")


@pytest.mark.filterwarnings("ignore::dlvision.CPUTrainingWarning")
def test_models_train_with_fit():
    data = dv.data.shapes(60, 32, seed=0)
    for model in (nn.Sequential(LeNet5(6, in_channels=3)), resnet8(6), VGG((8, "M", 16), num_classes=6), AlexNetSmall(6, widths=(8, 8, 8, 8, 8), hidden=16)):
        h = dv.fit(model, data.train, epochs=1, progress=False, seed=0)
        assert h.epochs == 1
