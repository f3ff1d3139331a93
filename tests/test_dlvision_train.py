"""dlvision.train: fit, evaluate, History, early stopping, checkpoints, and their errors."""

import math
import warnings

import pytest
import torch
import torch.nn as nn

import dlvision as dv
from dlvision.data import TensorLoader, digits
from dlvision.train import loop as fitmod
from dlvision.train import report


@pytest.fixture(scope="module")
def small():
    d = digits(size=8, seed=0)
    return type(d)(d.train.subset(600), d.test)  # small: the tests stay fast


def tiny(num_classes=10):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, num_classes))


@pytest.fixture(autouse=True)
def no_cpu_warning(monkeypatch):
    monkeypatch.setattr(fitmod, "_cpu_warned", True)


def test_fit_returns_a_full_history(small, capsys):
    dv.seed_everything(0)
    model = tiny()
    h = dv.fit(model, small.train, small.test, epochs=2, lr=3e-3, progress="plain")
    assert isinstance(h, dv.History) and h.epochs == 2
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "seconds", "images_per_s"):
        assert len(getattr(h, key)) == 2 and all(math.isfinite(v) for v in getattr(h, key))
    assert h.device == "cpu" and h.precision == "fp32"
    assert h.val_loss[1] < h.val_loss[0] and h.val_acc[1] > 0.5
    assert h.best_epoch == 2 and not h.stopped_early
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch   1/2")  # one plain line per epoch
    assert "2 epochs on cpu in fp32" in repr(h)
    assert '"train_loss"' in h.to_json()
    ev = dv.evaluate(model, small.test)
    assert isinstance(ev, dv.Evaluation) and ev.accuracy == pytest.approx(h.val_acc[-1])
    assert ev.loss == pytest.approx(h.val_loss[-1], rel=1e-5)


def test_two_seeded_runs_give_the_same_history(small, monkeypatch):
    runs = []
    for _ in range(2):
        dv.seed_everything(123)
        model = tiny()
        loader = TensorLoader(small.train, batch_size=64, shuffle=True)
        h = dv.fit(model, loader, small.test, epochs=2, progress=False)
        runs.append((h.train_loss, h.val_loss, h.train_acc, model.state_dict()["3.weight"].clone()))
    assert runs[0][:3] == runs[1][:3]
    assert torch.equal(runs[0][3], runs[1][3])
    # fit(seed=...) seeds by itself
    torch.manual_seed(1)
    a = dv.fit(tiny(), small.train, epochs=1, seed=5, progress=False)
    torch.manual_seed(1)
    b = dv.fit(tiny(), small.train, epochs=1, seed=5, progress=False)
    assert a.train_loss == b.train_loss


def test_fit_accepts_tensors_dataloaders_and_optimizers(small):
    x, y = small.train.normalized(), small.train.y
    h = dv.fit(tiny(), (x, y), epochs=1, optimizer="sgd", lr=0.05, progress=False, seed=0)
    assert math.isnan(h.val_loss[0]) and h.best_epoch == 1
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=100, shuffle=True)
    model = tiny()
    h = dv.fit(model, dl, (small.test.normalized(), small.test.y), epochs=1, optimizer="adamw", progress=False)
    assert h.epochs == 1
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    dv.fit(model, dl, epochs=1, optimizer=opt, schedule="onecycle", progress=False)
    dv.fit(model, dl, epochs=1, optimizer=lambda p: torch.optim.Adam(p, lr=1e-3), schedule="cosine", progress=False)


def test_fit_on_two_d_points():
    X, y = dv.data.xor(200, noise=0.2, seed=0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    h = dv.fit(model, (torch.tensor(X, dtype=torch.float32), torch.tensor(y)), epochs=30, lr=0.03, batch_size=50, progress=False, seed=0)
    assert h.train_acc[-1] > 0.9


def test_early_stopping_restores_the_best_and_checkpoints(small, tmp_path):
    path = tmp_path / "best.pt"
    dv.seed_everything(0)
    model = tiny()
    # A learning rate far too high makes the validation loss get worse: it stops early.
    h = dv.fit(model, small.train, small.test, epochs=8, lr=0.5, optimizer="sgd", early_stopping=1, checkpoint=path, progress=False)
    assert h.stopped_early and h.epochs < 8
    best = min(h.val_loss)
    assert h.val_loss[h.best_epoch - 1] == best
    assert dv.evaluate(model, small.test).loss == pytest.approx(best, rel=1e-5)  # the best weights are back
    state = dv.load_checkpoint(path, tiny())
    assert state["extra"]["epoch"] == h.best_epoch
    fresh = tiny()
    dv.load_checkpoint(path, fresh)
    assert dv.evaluate(fresh, small.test).loss == pytest.approx(best, rel=1e-5)
    h2 = dv.fit(tiny(), small.train, small.test, epochs=2, monitor="val_acc", early_stopping=5, progress=False)
    assert h2.epochs == 2 and not h2.stopped_early


def test_save_and_load_checkpoint(tmp_path):
    model = tiny()
    opt = torch.optim.Adam(model.parameters())
    path = dv.save_checkpoint(tmp_path / "sub" / "m.pt", model, opt, note="hello")
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["m.pt"]
    other = tiny()
    opt2 = torch.optim.Adam(other.parameters())
    state = dv.load_checkpoint(path, other, opt2)
    assert state["extra"]["note"] == "hello"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True))
    with pytest.raises(dv.DLVisionError, match="no checkpoint"):
        dv.load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(dv.DLVisionError, match="does not fit this model"):
        dv.load_checkpoint(path, tiny(num_classes=3))
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(dv.DLVisionError, match="not a dlvision checkpoint"):
        dv.load_checkpoint(tmp_path / "other.pt")


@pytest.mark.parametrize("epochs", [0, -3, 1.5, "2"])
def test_fit_rejects_bad_epochs(small, epochs):
    with pytest.raises(dv.DLVisionError, match="epochs must be a positive integer"):
        dv.fit(tiny(), small.train, epochs=epochs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=0), "lr must be a positive"),
        (dict(precision="fp8"), "precision must be"),
        (dict(precision="fp16"), "needs a CUDA GPU"),
        (dict(optimizer="adagrad"), "unknown optimizer"),
        (dict(schedule="step"), "schedule must be"),
        (dict(monitor="loss"), "monitor must be"),
        (dict(early_stopping=2), "needs validation data"),
    ],
)
def test_fit_rejects_bad_options(small, kwargs, match):
    with pytest.raises(dv.DLVisionError, match=match):
        dv.fit(tiny(), small.train, epochs=1, progress=False, **kwargs)


def test_fit_explains_shape_and_class_mismatches(small):
    with pytest.raises(dv.DLVisionError, match=r"failed on a batch of shape \(128, 1, 8, 8\)"):
        dv.fit(nn.Sequential(nn.Flatten(), nn.Linear(10, 10)), small.train, epochs=1, progress=False)
    with pytest.raises(dv.DLVisionError, match="labels go up to 9 but the model outputs 3"):
        dv.fit(tiny(num_classes=3), small.train, epochs=1, progress=False)
    with pytest.raises(dv.DLVisionError, match=r"shape \(batch, classes\)"):
        dv.fit(nn.Conv2d(1, 10, 3), small.train, epochs=1, progress=False)
    with pytest.raises(dv.DLVisionError, match="torch.nn.Module"):
        dv.fit("model", small.train, epochs=1)
    with pytest.raises(dv.DLVisionError, match="torch.nn.Module"):
        dv.evaluate(None, small.train)


def test_model_and_data_on_different_devices(small):
    x, y = small.test.normalized(), small.test.y
    with pytest.raises(dv.DLVisionError, match="the model trains on cpu but the data is on meta"):
        dv.evaluate(tiny(), (x.to("meta"), y.to("meta")))
    loader = TensorLoader(x.to("meta"), y.to("meta"), device="meta")
    with pytest.raises(dv.DLVisionError, match="on meta"):
        dv.fit(tiny(), loader, epochs=1, device="cpu", progress=False)
    with pytest.raises(dv.DLVisionError, match="x is on meta but y on cpu"):
        TensorLoader(x.to("meta"), y)


def test_cpu_warning_once_per_process_with_the_expected_time(small, monkeypatch):
    monkeypatch.setattr(fitmod, "_cpu_warned", False)
    with pytest.warns(dv.CPUTrainingWarning, match=r"Training on the CPU.*should take (about [\d.]+ s|under a second) .*profile"):
        dv.fit(tiny(), small.train, epochs=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", dv.CPUTrainingWarning)
        dv.fit(tiny(), small.train, epochs=1, progress=False)  # not again


def test_progress_modes(small, capsys, monkeypatch):
    monkeypatch.delenv("DLVISION_PROGRESS", raising=False)
    dv.fit(tiny(), small.train, epochs=1, progress=False)
    assert capsys.readouterr().out == ""
    dv.fit(tiny(), small.train, epochs=1)  # auto, not a notebook, not a terminal: plain lines
    assert capsys.readouterr().out.startswith("epoch   1/1")
    monkeypatch.setenv("DLVISION_PROGRESS", "none")
    dv.fit(tiny(), small.train, epochs=1)
    assert capsys.readouterr().out == ""
    displayed = []
    monkeypatch.setattr(report.Reporter, "_update_plot", lambda self, h: displayed.append(h.epochs))
    dv.fit(tiny(), small.train, epochs=2, progress="plot")
    assert displayed == [1, 2]
    dv.fit(tiny(), small.train, epochs=1, progress="bar")
    assert "epoch   1/1" in capsys.readouterr().out
    assert report.in_notebook() is False


def test_threads_for_a_run_and_then_back(small, monkeypatch):
    before = torch.get_num_threads()
    h = dv.fit(tiny(), small.train, epochs=1, threads=1, progress=False)
    assert h.threads == 1 and torch.get_num_threads() == before
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    set_to = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: set_to.append(n))
    dv.fit(tiny(), small.train, epochs=1, progress=False)
    assert set_to == []  # without threads=, torch's setting is left alone
    with pytest.raises(dv.DLVisionError, match="threads"):
        dv.fit(tiny(), small.train, epochs=1, threads=0)


def test_history_plot_and_training_curves(small):
    import matplotlib.figure

    h = dv.fit(tiny(), small.train, small.test, epochs=2, progress=False)
    fig = h.plot()
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 2



def test_progress_bar_only_where_someone_watches(monkeypatch):
    for var in ("JPY_SESSION_NAME", "VSCODE_PID", "VSCODE_CWD"):
        monkeypatch.delenv(var, raising=False)
    assert report.has_frontend() is False  # e.g. a book build: no widget left in the page
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/ch05.ipynb")
    assert report.has_frontend() is True
    monkeypatch.setattr(report, "in_notebook", lambda: True)
    r = report.Reporter("auto", 3)
    assert r.plot and r.bar and not r.lines
    monkeypatch.delenv("JPY_SESSION_NAME")
    r = report.Reporter("auto", 3)
    assert r.plot and not r.bar
