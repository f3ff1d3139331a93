"""Checks for the exercises' visible tests.

Each check compares what a student's function returned with what was expected
and, when they differ, raises an ``AssertionError`` whose message says both:
the type, the shape, the dtype or the values, whichever differs first. When the
check passes it prints one line, so that a student on Colab (without nbgrader)
sees every visible test pass or fail.

The checks convert nothing silently: a list where an array was expected, or a
float64 array where float32 was expected, is a failure with a message, never a
crash further down.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_array", "check_scalar", "check_equal", "check_type"]


def _kind(x) -> str:
    """A short description of a value: its type, and its shape and dtype if it has them."""
    name = type(x).__module__ + "." + type(x).__qualname__
    name = name.replace("builtins.", "").replace("numpy.", "np.")
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"{name} of shape {tuple(x.shape)} and dtype {x.dtype}"
    return name


def _ok(name: str, what: str, quiet: bool) -> None:
    if not quiet:
        print(f"ok  {name}: {what}")


def check_type(name: str, got, expected_type, *, quiet: bool = False) -> None:
    """Check that ``got`` is an instance of ``expected_type`` (a type or a tuple of types)."""
    if not isinstance(got, expected_type):
        names = expected_type if isinstance(expected_type, tuple) else (expected_type,)
        wanted = " or ".join(t.__name__ for t in names)
        raise AssertionError(f"{name}: expected a {wanted}, got {_kind(got)}")
    _ok(name, f"is a {type(got).__name__}", quiet)


def _as_numpy(x):
    """numpy view of an array or tensor (detached and on the CPU)."""
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def check_array(
    name: str,
    got,
    expected,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    check_dtype: bool = True,
    quiet: bool = False,
) -> None:
    """Check an array (numpy or torch) against the expected one.

    The type must match the expected one's (numpy array or torch tensor), then the
    shape, then the dtype (unless ``check_dtype`` is false), then the values to
    within ``atol + rtol * |expected|``.
    """
    expected_cls = type(expected)
    if type(got) is not expected_cls:
        raise AssertionError(f"{name}: expected {_kind(expected)}, got {_kind(got)}")
    if tuple(got.shape) != tuple(expected.shape):
        raise AssertionError(
            f"{name}: expected shape {tuple(expected.shape)}, got shape {tuple(got.shape)}"
        )
    if check_dtype and got.dtype != expected.dtype:
        raise AssertionError(f"{name}: expected dtype {expected.dtype}, got dtype {got.dtype}")
    g, e = _as_numpy(got), _as_numpy(expected)
    if g.dtype == bool or e.dtype == bool:
        bad = g != e
    else:
        g, e = g.astype(np.float64), e.astype(np.float64)
        finite_mismatch = np.isfinite(g) != np.isfinite(e)
        with np.errstate(invalid="ignore"):
            bad = ~np.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True) | finite_mismatch
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        n_bad = int(bad.sum())
        msg = (
            f"{name}: {n_bad} of {bad.size} values differ; first at index {idx}: "
            f"expected {e[idx].item()!r}, got {g[idx].item()!r}"
        )
        if g.dtype != bool:
            with np.errstate(invalid="ignore"):
                err = np.nanmax(np.abs(g - e)) if g.size else 0.0
            msg += f"; largest absolute difference {err:.3g} (tolerance atol={atol:g}, rtol={rtol:g})"
        if e.size <= 12:
            msg += f"\n  expected: {np.array2string(e, precision=6)}\n  got:      {np.array2string(g, precision=6)}"
        raise AssertionError(msg)
    _ok(name, f"{tuple(got.shape)} {got.dtype} matches", quiet)


def check_scalar(
    name: str,
    got,
    expected,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    integer: bool = False,
    quiet: bool = False,
) -> None:
    """Check a single number. ``integer=True`` asks for an exact integer (not a bool)."""
    if isinstance(got, bool) or not isinstance(got, numbers.Real):
        raise AssertionError(f"{name}: expected a number, got {_kind(got)}")
    if integer:
        if not isinstance(got, numbers.Integral):
            raise AssertionError(f"{name}: expected an int, got {_kind(got)} ({got!r})")
        if int(got) != int(expected):
            raise AssertionError(f"{name}: expected {int(expected)}, got {int(got)}")
        _ok(name, f"{int(got)}", quiet)
        return
    g, e = float(got), float(expected)
    if not (np.isclose(g, e, rtol=rtol, atol=atol) or (np.isinf(e) and g == e)):
        raise AssertionError(
            f"{name}: expected {e!r}, got {g!r} (difference {abs(g - e):.3g}, "
            f"tolerance atol={atol:g}, rtol={rtol:g})"
        )
    _ok(name, f"{g:.6g}", quiet)


def check_equal(name: str, got, expected, *, quiet: bool = False) -> None:
    """Check equality of plain values (bool, int, str, tuple, ...), with their types."""
    if type(got) is not type(expected):
        raise AssertionError(f"{name}: expected {_kind(expected)} {expected!r}, got {_kind(got)} {got!r}")
    # Compare by repr as well: an object with a rigged __eq__ cannot pass here,
    # because its type already had to be the expected built-in type.
    if not (expected == got and repr(expected) == repr(got)):
        raise AssertionError(f"{name}: expected {expected!r}, got {got!r}")
    _ok(name, f"{got!r}", quiet)
