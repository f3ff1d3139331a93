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

__all__ = [
    "check_array",
    "check_scalar",
    "check_equal",
    "check_type",
    "beside",
    "student_copy",
    "fetch",
    "module_facts",
    "forward_backward",
    "optimizer_facts",
    "call_unchanged",
]


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


# --------------------------------------------------------------------------- the student's objects
#
# In a notebook every object is what it seems: these helpers are plain calls and copies.
# When the course's grader runs the tests, the student's code runs in a separate, sandboxed
# process and the tests run in the grader's; the grader then installs a runner here
# (``_runner``) and these helpers carry the work to the student's process and bring
# plain data back. Tests written with them run unchanged in both places.
#
# The rule for hidden tests: whatever comes back from the student's process is a claim.
# Check it against your own recomputation (for a module, load its parameters into the
# reference architecture with ``torch.func.functional_call`` and compare outputs).

_runner = None  # set by the grader (grading.remote) in its own process; None in a notebook


def beside(function, *args, **kwargs):
    """``function(*args, **kwargs)``, run next to the objects it is given.

    In a notebook this is a plain call. Under the grader, when an argument is, or contains,
    one of the student's objects (a model a student's function returned, a
    :func:`student_copy`, a student's function; the function and arguments of a
    ``functools.partial`` count too), ``function`` runs inside the student's
    process and its result comes back as plain data: numbers, strings, lists, tuples, dicts,
    numpy arrays and torch tensors. So ``function`` should return plain data, and a test
    should check what comes back against its own computation.
    """
    if _runner is not None:
        return _runner.beside(function, args, kwargs)
    return function(*args, **kwargs)


def student_copy(value):
    """A deep copy of ``value`` for the student's code to work on, e.g. a model to ``freeze``.

    In a notebook: ``copy.deepcopy(value)``. Under the grader the copy lives in the student's
    process and what you hold is a handle: pass it to the student's functions, to
    :func:`beside` and to the facts below, and read it back with :func:`fetch`. The trusted
    original is never touched, so expected values computed from it stay trustworthy.
    """
    if _runner is not None:
        return _runner.student_copy(value)
    import copy

    return copy.deepcopy(value)


def fetch(value):
    """The current contents of a :func:`student_copy` (plain data: arrays, tensors, lists, ...).

    In a notebook: ``copy.deepcopy(value)``. A module is not plain data: ask
    :func:`module_facts` instead.
    """
    if _runner is not None:
        return _runner.fetch(value)
    import copy

    return copy.deepcopy(value)


def module_facts(module) -> dict:
    """What a ``torch.nn.Module`` holds, as plain data::

        {"type": "package.module.Class", "training": bool,
         "parameters": {name: tensor}, "requires_grad": {name: bool},
         "grads": {name: tensor or None}, "buffers": {name: tensor},
         "modules": {name: {"type": str, "training": bool}}}   # named_modules(); "" is the module

    Tensors are detached copies on the CPU. Names are those of ``named_parameters()``,
    ``named_buffers()`` and ``named_modules()``.
    """
    return beside(_module_facts, module)


def forward_backward(module, *inputs, grad_output=None) -> dict:
    """One forward and one backward pass of ``module`` on copies of ``inputs``.

    Floating-point inputs are copied with ``requires_grad=True``; the parameters' gradients
    are cleared first; the backward pass starts from ``grad_output`` (ones when ``None``).
    Returns ``{"output": tensor, "input_grads": [tensor or None, ...],
    "parameter_grads": {name: tensor or None}}``, all detached, on the CPU. The module keeps
    the gradients this pass leaves, as after any backward pass.
    """
    return beside(_forward_backward, module, inputs, grad_output)


def optimizer_facts(groups, module) -> list:
    """The parameter groups of an optimizer (or a list of group dicts), by parameter name.

    ``[{"parameters": [name, ...], "lr": ..., ...}, ...]``: each group's parameters named as
    in ``module.named_parameters()`` (``"?"`` for a tensor that is not one of them), and
    every other entry of the group whose value is a number, a string, a bool, None or a
    tuple of numbers.
    """
    return beside(_optimizer_facts, groups, module)


def call_unchanged(name: str, function, *args, **kwargs):
    """``function(*args, **kwargs)``, checking that it changed none of its arguments in place
    and returned none of them, nor a view of one: raises an ``AssertionError`` that names the
    argument otherwise. Returns the function's result."""
    result, problems = beside(_call_watching_arguments, function, args, kwargs)
    if problems:
        raise AssertionError(f"{name}: " + "; ".join(problems))
    return result


def _module_facts(module) -> dict:
    import torch

    Module = torch.nn.Module  # the unbound originals: a module cannot redefine what is read
    parameters = dict(Module.named_parameters(module))
    return {
        "type": _type_name(module),
        "training": bool(module.training),
        "parameters": {n: p.detach().cpu().clone() for n, p in parameters.items()},
        "requires_grad": {n: bool(p.requires_grad) for n, p in parameters.items()},
        "grads": {n: None if p.grad is None else p.grad.detach().cpu().clone() for n, p in parameters.items()},
        "buffers": {n: b.detach().cpu().clone() for n, b in Module.named_buffers(module)},
        "modules": {n: {"type": _type_name(m), "training": bool(m.training)} for n, m in Module.named_modules(module)},
    }


def _forward_backward(module, inputs, grad_output) -> dict:
    import torch

    copies = [
        x.detach().clone().requires_grad_(True) if isinstance(x, torch.Tensor) and x.is_floating_point() else x
        for x in inputs
    ]
    parameters = dict(torch.nn.Module.named_parameters(module))
    for p in parameters.values():
        p.grad = None
    output = module(*copies)
    output.backward(torch.ones_like(output) if grad_output is None else grad_output)
    return {
        "output": output.detach().cpu().clone(),
        "input_grads": [
            x.grad.detach().cpu().clone() if isinstance(x, torch.Tensor) and x.grad is not None else None
            for x in copies
        ],
        "parameter_grads": {
            n: None if p.grad is None else p.grad.detach().cpu().clone() for n, p in parameters.items()
        },
    }


def _optimizer_facts(groups, module) -> list:
    import torch

    names = {id(p): n for n, p in torch.nn.Module.named_parameters(module)}
    if hasattr(groups, "param_groups"):
        groups = groups.param_groups
    facts = []
    for group in groups:
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        entry = {"parameters": [names.get(id(p), "?") for p in params]}
        for key, value in group.items():
            if key != "params" and _is_plain_setting(value):
                entry[str(key)] = value
        facts.append(entry)
    return facts


def _is_plain_setting(value) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, tuple) and all(isinstance(v, (bool, int, float)) for v in value)


def _call_watching_arguments(function, args, kwargs):
    import copy

    named = [(f"argument {i + 1}", a) for i, a in enumerate(args)] + [(f"argument {k}=", v) for k, v in kwargs.items()]
    before = [copy.deepcopy(value) for _, value in named]
    result = function(*args, **kwargs)
    problems = []
    for (label, value), old in zip(named, before, strict=True):
        if not _same(value, old):
            problems.append(f"{label} was changed in place; work on a copy")
        if _shares_memory(result, value):
            problems.append(f"the result is {label}, or shares its memory; return a new array")
    return result, problems


def _same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    if type(a).__module__.startswith("torch") and hasattr(a, "shape"):
        import torch

        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.is_floating_point() or a.is_complex():
            return bool(torch.allclose(a.detach(), b.detach(), rtol=0, atol=0, equal_nan=True))
        return bool(torch.equal(a.detach(), b.detach()))
    if _is_module(a):  # a module equals only itself: compare what it holds
        return _same(_module_state(a), _module_state(b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:
        return True  # not comparable: nothing to say


def _is_module(value) -> bool:
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.nn.Module)


def _module_state(module) -> dict:
    """What an in-place change of a module would touch: tensors, flags and submodules' modes."""
    import torch

    Module = torch.nn.Module
    return {
        "parameters": {n: p.detach() for n, p in Module.named_parameters(module)},
        "requires_grad": {n: p.requires_grad for n, p in Module.named_parameters(module)},
        "grads": {n: p.grad is not None for n, p in Module.named_parameters(module)},
        "buffers": {n: b.detach() for n, b in Module.named_buffers(module)},
        "modes": {n: (type(m).__qualname__, m.training) for n, m in Module.named_modules(module)},
    }


def _shares_memory(result, value) -> bool:
    results = result if isinstance(result, (tuple, list)) else [result]
    values = value if isinstance(value, (tuple, list)) else [value]
    for r in results:
        for v in values:
            if isinstance(r, np.ndarray) and isinstance(v, np.ndarray) and r.size and np.shares_memory(r, v):
                return True
            if hasattr(r, "untyped_storage") and hasattr(v, "untyped_storage") and r.numel() and v.numel():
                if r.untyped_storage().data_ptr() == v.untyped_storage().data_ptr():
                    return True
    return False


def _type_name(obj) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"
