"""dlvision.testing: the visible tests' checks say what was expected and what came back."""

import numpy as np
import pytest
import torch

from dlvision.testing import check_array, check_equal, check_scalar, check_type


def test_check_array_passes_and_prints_one_line(capsys):
    check_array("x", np.arange(3.0), np.arange(3.0))
    check_array("t", torch.ones(2, 2), torch.ones(2, 2))
    check_array("mask", np.array([True, False]), np.array([True, False]))
    assert capsys.readouterr().out.count("ok  ") == 3


@pytest.mark.parametrize(
    ("got", "expected", "message"),
    [
        ([1.0, 2.0], np.array([1.0, 2.0]), "expected np.ndarray of shape (2,) and dtype float64, got list"),
        (torch.ones(2, dtype=torch.float64), np.ones(2), "got torch.Tensor"),
        (np.ones((3, 2)), np.ones((2, 3)), "expected shape (2, 3), got shape (3, 2)"),
        (np.ones(2, dtype=np.float32), np.ones(2), "expected dtype float64, got dtype float32"),
        (np.array([1.0, 2.5]), np.array([1.0, 2.0]), "first at index (1,): expected 2.0, got 2.5"),
        (np.array([1.0, np.nan]), np.array([1.0, 2.0]), "expected 2.0, got nan"),
        (np.array([True, True]), np.array([True, False]), "expected False, got True"),
    ],
)
def test_check_array_says_what_differs(got, expected, message):
    with pytest.raises(AssertionError) as err:
        check_array("x", got, expected)
    assert message in str(err.value)


def test_check_array_tolerances_and_dtype_option():
    check_array("x", np.array([1.0 + 1e-9]), np.array([1.0]), quiet=True)
    check_array("x", np.ones(2, dtype=np.float32), np.ones(2), check_dtype=False, quiet=True)
    with pytest.raises(AssertionError, match="tolerance atol=0, rtol=0"):
        check_array("x", np.array([1.0 + 1e-9]), np.array([1.0]), atol=0, rtol=0)


def test_an_array_subclass_with_a_rigged_eq_does_not_pass():
    class AlwaysEqual(np.ndarray):
        def __eq__(self, other):
            return True

    with pytest.raises(AssertionError, match="AlwaysEqual"):
        check_array("x", np.zeros(2).view(AlwaysEqual), np.ones(2))


def test_check_scalar():
    check_scalar("s", 0.1 + 0.2, 0.3, quiet=True)
    check_scalar("n", np.int64(3), 3, integer=True, quiet=True)
    with pytest.raises(AssertionError, match="expected a number, got bool"):
        check_scalar("s", True, 1.0)
    with pytest.raises(AssertionError, match="expected an int, got float"):
        check_scalar("n", 3.0, 3, integer=True)
    with pytest.raises(AssertionError, match="expected 4, got 3"):
        check_scalar("n", 3, 4, integer=True)
    with pytest.raises(AssertionError, match="expected 0.3, got 0.4"):
        check_scalar("s", 0.4, 0.3)
    check_scalar("inf", float("inf"), float("inf"), quiet=True)


def test_check_equal_needs_the_type_and_cannot_be_rigged():
    check_equal("pair", (1, 2), (1, 2), quiet=True)
    with pytest.raises(AssertionError, match="expected tuple"):
        check_equal("pair", [1, 2], (1, 2))

    class Liar:
        def __eq__(self, other):
            return True

    with pytest.raises(AssertionError, match="expected bool"):
        check_equal("flag", Liar(), True)
    with pytest.raises(AssertionError, match="expected True, got False"):
        check_equal("flag", False, True)


def test_check_type():
    check_type("w", np.zeros(2), np.ndarray, quiet=True)
    with pytest.raises(AssertionError, match="expected a ndarray or Tensor, got list"):
        check_type("w", [0.0], (np.ndarray, torch.Tensor))


# --------------------------------------------------------------------------- the student's objects
# In a notebook (no grader runner installed) these are plain calls and copies; the grader's
# side is tested in tests/test_grading_*.py.

from dlvision import testing as _testing  # noqa: E402
from dlvision.testing import (  # noqa: E402
    beside,
    call_unchanged,
    fetch,
    forward_backward,
    module_facts,
    optimizer_facts,
    student_copy,
)


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(), torch.nn.Linear(18, 3))


def test_without_a_grader_beside_is_a_plain_call_and_copies_are_deep():
    assert _testing._runner is None
    assert beside(lambda a, b=1: a + b, 2, b=3) == 5
    x = np.arange(3.0)
    copied = student_copy(x)
    copied += 1
    assert x.tolist() == [0.0, 1.0, 2.0]
    assert fetch(copied) is not copied and fetch(copied).tolist() == [1.0, 2.0, 3.0]


def test_module_facts_lists_parameters_buffers_flags_and_submodules():
    net = _net()
    net[0].weight.requires_grad_(False)
    net[1].eval()
    facts = module_facts(net)
    assert facts["type"] == "torch.nn.modules.container.Sequential"
    assert list(facts["parameters"]) == [n for n, _ in net.named_parameters()]
    assert facts["requires_grad"]["0.weight"] is False and facts["requires_grad"]["3.bias"] is True
    assert set(facts["buffers"]) == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    assert facts["modules"]["1"] == {"type": "torch.nn.modules.batchnorm.BatchNorm2d", "training": False}
    assert facts["training"] is True and facts["grads"]["3.weight"] is None
    facts["parameters"]["3.weight"].zero_()  # copies: the module is untouched
    assert net[3].weight.abs().sum() > 0


def test_forward_backward_matches_autograd_and_leaves_the_input_alone():
    net, x = _net(), torch.randn(2, 1, 5, 5)
    got = forward_backward(net, x, grad_output=torch.full((2, 3), 2.0))
    assert x.grad is None and not x.requires_grad
    x2 = x.clone().requires_grad_(True)
    _net()(x2).mul(2.0).sum().backward()
    torch.testing.assert_close(got["input_grads"][0], x2.grad)
    assert got["output"].shape == (2, 3) and got["parameter_grads"]["0.weight"].shape == (2, 1, 3, 3)


def test_optimizer_facts_name_each_groups_parameters():
    net = _net()
    opt = torch.optim.SGD([{"params": net[0].parameters(), "lr": 0.1}, {"params": net[3].parameters()}], lr=0.01)
    facts = optimizer_facts(opt, net)
    assert facts[0]["parameters"] == ["0.weight", "0.bias"] and facts[0]["lr"] == 0.1
    assert facts[1]["parameters"] == ["3.weight", "3.bias"] and facts[1]["lr"] == 0.01
    assert optimizer_facts([{"params": [torch.zeros(1)], "lr": 1.0}], net)[0]["parameters"] == ["?"]


def test_call_unchanged_names_in_place_changes_and_aliases():
    def in_place(x):
        x *= 2
        return x

    with pytest.raises(AssertionError, match="argument 1 was changed in place.*shares its memory"):
        call_unchanged("double", in_place, np.ones(3))
    with pytest.raises(AssertionError, match="the result is argument 1"):
        call_unchanged("view", lambda t: t.view(-1), torch.ones(2, 2))
    with pytest.raises(AssertionError, match="argument w= was changed"):
        call_unchanged("kw", lambda *, w: w.append(1), w=[0])
    assert call_unchanged("copy", lambda x: x * 2, np.ones(2)).tolist() == [2.0, 2.0]


def test_call_unchanged_compares_modules_by_what_they_hold():
    net = _net().eval()  # in train mode a forward pass updates batch norm's running statistics
    assert call_unchanged("reads", lambda m, x: m(x).sum().item(), net, torch.randn(1, 1, 5, 5)) is not None
    with pytest.raises(AssertionError, match="argument 1 was changed in place"):
        call_unchanged("train-mode forward", lambda m, x: m(x).sum().item(), _net(), torch.randn(2, 1, 5, 5))
    with pytest.raises(AssertionError, match="argument 1 was changed in place"):
        call_unchanged("eval", lambda m: m.eval().training, _net())
    with pytest.raises(AssertionError, match="argument 1 was changed in place"):
        call_unchanged("freeze", lambda m: m[0].weight.requires_grad_(False).shape, _net())
    with pytest.raises(AssertionError, match="argument 1 was changed in place"):
        call_unchanged("grads", lambda m, x: m(x).sum().backward(), _net(), torch.randn(1, 1, 5, 5))

    def nudge(m):
        with torch.no_grad():
            m[3].bias += 1

    with pytest.raises(AssertionError, match="argument 1 was changed in place"):
        call_unchanged("nudge", nudge, _net())
