"""The pinned environment imports: above all, torchvision against the installed torch.

A CPU-only torch wheel paired with a CUDA torchvision wheel fails at import with
"operator torchvision::nms does not exist". These tests keep that trap from
coming back silently.
"""

import re
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"


def _pinned(name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==([^\s#]+)", REQUIREMENTS.read_text(), re.MULTILINE)
    assert match, f"requirements.txt does not pin {name}"
    return match.group(1)


def test_torchvision_ops_imports_and_runs():
    import torch
    import torchvision.ops

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep = torchvision.ops.nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


def test_installed_torch_pair_is_the_pinned_one():
    import torch
    import torchvision

    assert torch.__version__.split("+")[0] == _pinned("torch")
    assert torchvision.__version__.split("+")[0] == _pinned("torchvision")


def test_jupyter_book_is_version_1():
    from importlib.metadata import version

    assert version("jupyter-book").startswith("1."), "the book needs Jupyter Book 1 (Sphinx), not 2"
    assert version("nbgrader").startswith("0.9.")
