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
