"""dlvision.plots: every plot returns a Figure; bad input gets a clear error."""

import matplotlib.figure
import numpy as np
import pytest
import torch
import torch.nn as nn

import dlvision as dv
from dlvision import plots

Figure = matplotlib.figure.Figure


def test_image_grid_from_imagedata_tensors_and_arrays():
    d = dv.data.shapes(30, 16, seed=0).train
    fig = plots.image_grid(d, ncols=6, max_images=12, title="shapes")
    assert isinstance(fig, Figure) and len(fig.axes) == 12
    assert fig.axes[0].get_title() == d.classes[int(d.y[0])]
    fig = plots.image_grid(d.normalized()[:4], d.y[:4], predictions=torch.tensor([0, 1, 2, 3]), classes=d.classes, mean=d.mean, std=d.std)
    colours = {ax.title.get_color() for ax in fig.axes}
    assert colours <= {"tab:green", "tab:red"}
    assert isinstance(plots.image_grid(np.random.rand(5, 8, 8)), Figure)
    assert isinstance(plots.image_grid(np.zeros((3, 8, 8, 3), np.uint8)), Figure)
    with pytest.raises(dv.DLVisionError, match="shape"):
        plots.image_grid(np.zeros((8, 8)))
    with pytest.raises(dv.DLVisionError, match="no images"):
        plots.image_grid(np.zeros((0, 1, 8, 8)))


def test_filter_bank_rgb_grey_and_many_channels():
    assert len(plots.filter_bank(nn.Conv2d(3, 10, 5), ncols=5).axes) == 10
    assert isinstance(plots.filter_bank(torch.randn(6, 1, 5, 5), title="C1"), Figure)
    fig = plots.filter_bank(torch.randn(4, 6, 3, 3))
    assert len(fig.axes) == 4 * 6
    with pytest.raises(dv.DLVisionError, match="out, in, k, k"):
        plots.filter_bank(torch.randn(4, 3, 3))
    with pytest.raises(dv.DLVisionError, match="no weight"):
        plots.filter_bank(nn.ReLU())


def test_feature_maps():
    assert len(plots.feature_maps(torch.randn(1, 6, 10, 10), ncols=3).axes) == 6
    assert isinstance(plots.feature_maps(torch.randn(40, 4, 4), title="maps"), Figure)
    with pytest.raises(dv.DLVisionError, match="one image"):
        plots.feature_maps(torch.randn(2, 6, 10, 10))
    with pytest.raises(dv.DLVisionError, match="C, H, W"):
        plots.feature_maps(torch.randn(10, 10))


def test_decision_regions_for_modules_and_functions():
    data = dv.data.linearly_separable(40, 0.1, seed=0)
    fig = plots.decision_regions(lambda P: P @ data.w + data.b, data.X, data.y, resolution=50, title="perceptron")
    assert isinstance(fig, Figure) and fig.axes[0].get_title() == "perceptron"
    X, y = dv.data.xor(20, noise=0.1)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
    assert isinstance(plots.decision_regions(net, X, y, resolution=40), Figure)
    assert isinstance(plots.decision_regions(nn.Linear(2, 1), torch.tensor(X), resolution=20), Figure)
    with pytest.raises(dv.DLVisionError, match=r"\(N, 2\)"):
        plots.decision_regions(net, np.zeros((5, 3)), y[:5])


def test_training_curves_from_history_or_dict():
    h = dv.History(train_loss=[1.0, 0.5], train_acc=[0.5, 0.8], val_loss=[1.1, 0.7], val_acc=[0.4, 0.7])
    fig = plots.training_curves(h, title="run")
    assert isinstance(fig, Figure) and len(fig.axes) == 2 and len(fig.axes[0].lines) == 2
    fig = plots.training_curves({"train_loss": [1.0], "train_acc": [0.3], "val_loss": [float("nan")], "val_acc": [float("nan")]})
    assert len(fig.axes[0].lines) == 1
    with pytest.raises(dv.DLVisionError, match="train_loss"):
        plots.training_curves({"loss": [1.0]})


def test_cell_grid_draws_cells_texts_boxes_and_marks():
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    values = np.arange(6).reshape(2, 3)
    fig = plots.cell_grid((2, 3), texts=values, subtexts=[["a", "", None], ["b", "c", "d"]],
                          facecolors=[["white", "red", "0.8"], ["white"] * 3],
                          boxes=[(0, 0, 2, 2, "tab:blue")], marks=[(1, 2, "tab:orange")], title="grid")
    ax = fig.axes[0]
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(rects) == 6 + 1 + 1  # cells, one box, one mark
    assert [t.get_text() for t in ax.texts if t.get_fontsize() == 12] == ["0", "1", "2", "3", "4", "5"]
    assert sorted(t.get_text() for t in ax.texts if t.get_fontsize() == 9) == ["a", "b", "c", "d"]
    assert ax.get_title() == "grid" and ax.get_ylim() == (2.0, 0.0)  # row 0 at the top
    box = [p for p in rects if not p.get_fill()][0]
    assert box.get_width() == pytest.approx(1.9) and box.get_height() == pytest.approx(1.9)
    # on a caller's axes, with no text at all
    fig2, ax2 = plt.subplots()
    assert plots.cell_grid((1, 1), ax=ax2) is fig2 and len(ax2.texts) == 0
    plt.close(fig2)


def test_cell_grid_rejects_bad_shapes():
    with pytest.raises(dv.DLVisionError, match="two positive integers"):
        plots.cell_grid((0, 3))
    with pytest.raises(dv.DLVisionError, match="two positive integers"):
        plots.cell_grid((2, 2, 2))
    with pytest.raises(dv.DLVisionError, match="texts must have one entry per cell"):
        plots.cell_grid((2, 3), texts=[[1, 2, 3]])
    with pytest.raises(dv.DLVisionError, match="facecolors must have one entry per cell"):
        plots.cell_grid((2, 2), facecolors=[["w", "w"], ["w"]])
