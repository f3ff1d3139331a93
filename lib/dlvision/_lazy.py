"""Lazy exports for the package's ``__init__`` files (PEP 562).

``import dlvision`` and ``from dlvision.testing import check_array`` must be cheap: an
exercise that only needs NumPy should not wait for torch, torchvision and matplotlib
to load (about 3 s per notebook, paid again by every autograded submission). A name
is imported from its module the first time it is used.
"""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str], submodules: tuple[str, ...] = ()):
    """``__getattr__`` and ``__dir__`` for ``package``: ``exports`` maps each public name
    to the submodule (relative to ``package``) that defines it, and ``submodules`` are
    names that are themselves submodules."""
    exports = {**exports, **{name: name for name in submodules}}

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{exports[name]}")
        value = module if name in submodules else getattr(module, name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(importlib.import_module(package).__dict__) | set(exports))

    return __getattr__, __dir__
