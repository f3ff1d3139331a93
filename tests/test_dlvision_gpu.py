"""dlvision on a CUDA GPU: placement, mixed precision, determinism, no per-step syncs, no CPU warning.

The GPU tests skip without CUDA (CI has none; ``benchmarks/gpu_check.sh`` runs them on a GPU).
The others run everywhere: the loader's epoch against an independent reference, and
``compile=True`` compiling once and training exactly as the eager model does.

No fixtures and no parametrisation: ``benchmarks/mini_pytest.py`` runs this module on a
machine without pytest.
"""

import os
import warnings

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts: deterministic matmuls

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import dlvision as dv
from dlvision.data import TensorLoader, digits, shapes
from dlvision.train import loop as fitmod

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


def small_digits(n=600):
    d = digits(size=8, seed=0)
    return type(d)(d.train.subset(n), d.test)


def tiny(num_classes=10, channels=1, side=8):
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * side * side, num_classes)
    )


def quiet_fit(*args, **kwargs):
    """fit without the first-run CPU warning (a test of it is below) and without progress lines."""
    warned, fitmod._cpu_warned = fitmod._cpu_warned, True
    try:
        return dv.fit(*args, progress=False, **kwargs)
    finally:
        fitmod._cpu_warned = warned


def reference_epochs(data, batch_size, crop, flip, seed, epochs):
    """The loader's documented epochs, computed image by image: the loader's generator gives, each
    epoch, the order (randperm), then for each batch its shifts (randint, 2 x batch) and its flips
    (rand < 1/2); images are normalised with the data's mean and std on the 0..1 scale."""
    g = torch.Generator().manual_seed(seed)
    x, n = data.x, len(data.x)
    padded = F.pad(x, (crop,) * 4) if crop else x
    h, w = x.shape[2], x.shape[3]
    mean = torch.tensor(data.mean).view(-1, 1, 1)
    std = torch.tensor(data.std).view(-1, 1, 1)
    result = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        batches = []
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            none = torch.zeros(2, len(idx), dtype=torch.long)
            shift = torch.randint(0, 2 * crop + 1, (2, len(idx)), generator=g) if crop else none
            flips = torch.rand(len(idx), generator=g) < 0.5 if flip else torch.zeros(len(idx), dtype=torch.bool)
            images = []
            for k, i in enumerate(idx.tolist()):
                a, b = int(shift[0, k]), int(shift[1, k])
                img = padded[i, :, a : a + h, b : b + w]
                if flips[k]:
                    img = img.flip(-1)
                images.append((img.float() / 255 - mean) / std)
            batches.append((torch.stack(images), data.y[idx]))
        result.append(batches)
    return result


def check_epochs_match_reference(device):
    data = shapes(75, 12, seed=3).train  # 60 images: batches of 16, 16, 16 and 12
    for crop, flip in ((2, True), (0, True), (3, False), (0, False)):
        loader = TensorLoader(data, batch_size=16, crop=crop, flip=flip, seed=11, device=device)
        expected = reference_epochs(data, 16, crop, flip, 11, epochs=2)
        for epoch in expected:  # the second epoch continues the generator's stream
            got = list(loader)
            assert len(got) == len(epoch) == 4
            for (xb, yb), (xr, yr) in zip(got, epoch, strict=True):
                assert xb.device.type == torch.device(device).type and yb.device == xb.device
                assert torch.equal(yb.cpu(), yr)
                torch.testing.assert_close(xb.cpu(), xr, rtol=1e-5, atol=1e-5)


def test_the_loaders_epoch_is_the_documented_one_on_the_cpu():
    check_epochs_match_reference("cpu")


@needs_cuda
def test_the_loaders_epoch_on_the_gpu_is_the_same_as_on_the_cpu():
    check_epochs_match_reference("cuda")
    data = shapes(50, 16, seed=0).train
    a = [xb for xb, _ in TensorLoader(data, batch_size=8, crop=2, flip=True, seed=5, channels_last=True)]
    b = [xb for xb, _ in TensorLoader(data, batch_size=8, crop=2, flip=True, seed=5, channels_last=True, device="cuda")]
    assert all(q.is_contiguous(memory_format=torch.channels_last) for q in b)
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(q.cpu(), p, rtol=1e-6, atol=1e-6)


def test_compile_compiles_once_and_trains_like_the_eager_model():
    """The last, smaller batch of each epoch runs eagerly instead of recompiling; the weights end up
    exactly where eager training puts them (an eager backend, so the arithmetic is the same)."""
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append([tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)])
        return gm.forward

    data = small_digits(150)  # batches of 64, 64 and 22
    original = torch.compile
    results = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        torch.compile = lambda model, **kw: original(model, backend=counting_backend, **kw)
        try:
            dv.seed_everything(0)
            model = tiny()
            h = quiet_fit(model, TensorLoader(data.train, batch_size=64, seed=1), epochs=2, compile=compiled,
                          device="cpu", optimizer="sgd", lr=0.05)  # fmt: skip
        finally:
            torch.compile = original
        results[compiled] = (h.train_loss, [p.detach().clone() for p in model.parameters()])
    assert len(graphs) == 1, f"compiled {len(graphs)} graphs (input shapes {graphs}); the partial batch recompiled"
    assert results[True][0] == results[False][0]
    assert all(torch.equal(a, b) for a, b in zip(results[True][1], results[False][1], strict=True))


@needs_cuda
def test_fit_puts_the_model_and_data_on_the_gpu_by_itself():
    data = small_digits()
    model = tiny()  # on the CPU
    h = quiet_fit(model, data.train, data.test, epochs=2, lr=3e-3)
    assert h.device.startswith("cuda") and h.precision == dv.precision_for("cuda")
    assert all(p.device.type == "cuda" for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # mixed precision keeps fp32 weights
    assert h.val_acc[-1] > 0.5 and h.threads == 0
    ev = dv.evaluate(model, data.test, precision=h.precision)  # fit validated in its training precision
    assert ev.accuracy == pytest.approx(h.val_acc[-1])
    # Data explicitly on another device is an error that says what to do.
    cpu_loader = TensorLoader(data.train, device="cpu")
    with pytest.raises(dv.DLVisionError, match="put them on one device"):
        quiet_fit(tiny().cuda(), cpu_loader, epochs=1, device="cuda")


@needs_cuda
def test_every_precision_trains_and_channels_last_reaches_the_model():
    data = shapes(900, 16, seed=0)  # colour: channels_last means something for the first convolution
    accs = {}
    for precision in ("fp32", "bf16", "fp16"):
        dv.seed_everything(0)
        model = tiny(data.train.num_classes, 3, 16)
        h = quiet_fit(model, data.train, data.test, epochs=3, lr=3e-3, device="cuda", precision=precision,
                      channels_last=True)  # fmt: skip
        assert h.precision == precision
        assert all(torch.isfinite(torch.tensor(v)).all() for v in (h.train_loss, h.val_loss))
        assert h.train_loss[-1] < h.train_loss[0]
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
        accs[precision] = h.val_acc[-1]
    # Same seed, data and order: the precisions differ by rounding only.
    assert abs(accs["bf16"] - accs["fp32"]) < 0.05 and abs(accs["fp16"] - accs["fp32"]) < 0.05, accs
    with pytest.raises(dv.DLVisionError, match="precision"):
        quiet_fit(tiny(6, 3, 16), data.train, epochs=1, device="cuda", precision="fp8")


@needs_cuda
def test_fp16_trains_with_a_gradient_scaler_and_bf16_without():
    data = small_digits(200)
    made = []
    original = torch.amp.GradScaler

    class Recording(original):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

    torch.amp.GradScaler = Recording
    try:
        h16 = quiet_fit(tiny(), data.train, epochs=2, device="cuda", precision="fp16")
        quiet_fit(tiny(), data.train, epochs=1, device="cuda", precision="bf16")
    finally:
        torch.amp.GradScaler = original
    assert len(made) == 2 and made[0].is_enabled() and not made[1].is_enabled()
    scale = made[0].get_scale()
    assert 1.0 <= scale < float("inf")  # scaled (from 2**16, halved at each overflow), never infinite
    assert h16.train_loss[-1] < h16.train_loss[0]


def _sync_warnings(fn) -> int:
    """How many synchronising CUDA calls ``fn`` makes (torch's sync debug mode warns at each)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


@needs_cuda
def test_no_host_device_sync_per_step():
    """fit waits for the GPU a fixed number of times per epoch (first batch, epoch end), not per batch:
    4x the batches, the same number of syncs. A loop with loss.item() per batch is the control."""
    counts = {}
    for batches in (5, 20):
        data = shapes(batches * 32 + 10, 16, seed=0, test_fraction=10 / (batches * 32 + 10)).train  # batches + 0 partial
        loader = TensorLoader(data, batch_size=32, crop=2, flip=True, seed=0, device="cuda")

        def train(loader=loader, classes=data.num_classes):
            quiet_fit(tiny(classes, 3, 16), loader, epochs=1, device="cuda", precision="bf16",
                      channels_last=True)  # fmt: skip

        train()  # first: cuDNN's benchmark for these shapes and other one-time work
        counts[batches] = _sync_warnings(train)
    assert counts[5] == counts[20], counts

    model = tiny(6, 3, 16).cuda()
    control = {}
    for batches in (5, 20):
        def item_loop(batches=batches):
            for _ in range(batches):
                x = torch.randn(32, 3, 16, 16, device="cuda")
                F.cross_entropy(model(x), torch.zeros(32, dtype=torch.long, device="cuda")).item()

        control[batches] = _sync_warnings(item_loop)
    assert control[20] > control[5], f"the sync counter sees no syncs here: {control}"


@needs_cuda
def test_seeded_runs_are_identical_with_deterministic_algorithms():
    data = small_digits()
    try:
        for precision in ("fp32", "bf16"):
            runs = []
            for _ in range(2):
                dv.seed_everything(7, deterministic=True)
                model = tiny()
                h = quiet_fit(model, data.train, data.test, epochs=2, device="cuda", precision=precision)
                assert not torch.backends.cudnn.benchmark  # fit leaves cuDNN's deterministic choice alone
                runs.append((h.train_loss, h.val_loss, [p.detach().cpu() for p in model.parameters()]))
            assert runs[0][:2] == runs[1][:2], precision
            assert all(torch.equal(a, b) for a, b in zip(runs[0][2], runs[1][2], strict=True)), precision
    finally:
        dv.seed_everything(0)  # back to the default: nondeterministic algorithms allowed
    quiet_fit(tiny(), data.train, epochs=1, device="cuda")
    assert torch.backends.cudnn.benchmark  # and fit benchmarks again


@needs_cuda
def test_no_cpu_warning_on_the_gpu():
    data = small_digits(200)
    warned, fitmod._cpu_warned = fitmod._cpu_warned, False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dv.fit(tiny(), data.train, epochs=1, progress=False)  # no device: the GPU is chosen
        assert not [w for w in caught if issubclass(w.category, dv.CPUTrainingWarning)]
        assert fitmod._cpu_warned is False  # a later run on the CPU still warns
    finally:
        fitmod._cpu_warned = warned
    assert dv.get_device(verbose=False).type == "cuda"
    saved = os.environ.pop("DLVISION_PROFILE", None)
    try:
        dv.set_profile(None)
        assert dv.profile() == "full"  # a GPU: the book's full profile
    finally:
        if saved is not None:
            os.environ["DLVISION_PROFILE"] = saved
