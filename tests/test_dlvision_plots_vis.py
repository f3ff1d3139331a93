"""dlvision.plots.overlay_maps: heat maps over images, for the visualisation chapter."""

import matplotlib.figure
import numpy as np
import pytest
import torch

import dlvision as dv
from dlvision import plots


def test_overlay_maps_batches_single_images_and_titles():
    images = torch.rand(5, 3, 20, 30)
    maps = torch.rand(5, 4, 6)  # coarser than the images, like a Grad-CAM map
    fig = plots.overlay_maps(images, maps, titles=list("abcde"), ncols=3, title="maps")
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) == 6  # 2 rows of 3; the last cell stays empty
    assert [ax.get_title() for ax in fig.axes[:5]] == list("abcde")
    assert len(fig.axes[0].images) == 2 and len(fig.axes[5].images) == 0
    shown = fig.axes[0].images[1].get_array()
    assert shown.shape == (20, 30)  # resized to the image
    assert np.isclose(float(shown.min()), 0.0) and np.isclose(float(shown.max()), 1.0)  # its own 0..1 range
    # one image (C, H, W) with one map (h, w); grey and uint8 images; numpy maps
    assert len(plots.overlay_maps(torch.rand(3, 8, 8), np.ones((8, 8))).axes) == 1
    fig = plots.overlay_maps(np.zeros((2, 1, 8, 8), np.uint8), np.random.rand(2, 8, 8))
    assert fig.axes[0].images[0].get_cmap().name == "gray"


def test_overlay_maps_constant_map_is_drawn_as_zeros():
    fig = plots.overlay_maps(torch.rand(1, 3, 6, 6), torch.full((1, 3, 3), 7.0))
    assert np.all(np.asarray(fig.axes[0].images[1].get_array()) == 0)


@pytest.mark.parametrize(
    ("images", "maps", "kwargs", "match"),
    [
        (torch.rand(2, 4, 8, 8), torch.rand(2, 8, 8), {}, "C = 1 or 3"),
        (torch.rand(8, 8), torch.rand(8, 8), {}, "C = 1 or 3"),
        (torch.rand(2, 3, 8, 8), torch.rand(3, 8, 8), {}, "one map per image"),
        (torch.rand(2, 3, 8, 8), torch.rand(2, 2, 8, 8), {}, "one map per image"),
        (torch.rand(0, 3, 8, 8), torch.rand(0, 8, 8), {}, "no images"),
        (torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8), {"titles": ["a"]}, "1 titles for 2 images"),
        (torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8), {"alpha": 1.5}, "alpha"),
    ],
)
def test_overlay_maps_rejects_bad_input_with_a_message(images, maps, kwargs, match):
    with pytest.raises(dv.DLVisionError, match=match):
        plots.overlay_maps(images, maps, **kwargs)
