"""A stand-in for a fresh Colab runtime, to run the book's Colab notebooks offline.

What matters about Colab for the book's notebooks: the course library ``dlvision`` and
the book's tool chain (``myst_nb``) are not installed, pip installs from the network,
and the working folder is empty (no file of the repository is there). ``ColabRuntime``
gives a Python process (a script or a notebook kernel) exactly that:

- the modules it hides (``dlvision``, ``myst_nb``) cannot be imported, and
  ``importlib.util.find_spec`` does not find them (``None`` in ``sys.modules``, set by a
  ``sitecustomize`` module on ``PYTHONPATH``);
- ``python -m pip`` is a fake pip, first on ``PYTHONPATH``: it records its arguments,
  accepts dlvision only from the repository that ``_config.yml`` names, and "installs" a
  package by allowing its import again (the real one of this environment), which the
  process sees after ``importlib.invalidate_caches()``, as after a real install;
- the working folder is a new empty one (Colab's ``/content``).
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

SITECUSTOMIZE = '''\
"""Colab stand-in (tests/colab_runtime.py): hide modules until the fake pip installs them."""
import os
import sys
from pathlib import Path

_SIM = Path(os.environ["COLAB_SIM"])
_HIDDEN = [m for m in os.environ.get("COLAB_SIM_HIDDEN", "").split(",") if m]


def _installed(name):
    return (_SIM / "installed" / name).exists()


for _name in _HIDDEN:
    if not _installed(_name):
        sys.modules[_name] = None  # import raises ModuleNotFoundError; find_spec returns None


class _AfterPip:
    """importlib.invalidate_caches() calls this: what pip installed becomes importable."""

    def find_spec(self, name, path=None, target=None):
        return None

    def invalidate_caches(self):
        for name in _HIDDEN:
            if _installed(name) and name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


sys.meta_path.append(_AfterPip())
'''

FAKE_PIP = '''\
"""Colab stand-in (tests/colab_runtime.py): a pip that records and "installs" offline."""
import json
import os
import re
import sys
from pathlib import Path

sim = Path(os.environ["COLAB_SIM"])
args = sys.argv[1:]
with open(sim / "pip.log", "a") as log:
    log.write(json.dumps(args) + "\\n")
if not args or args[0] != "install":
    sys.exit(f"the Colab stand-in's pip only installs, asked: {args}")
for spec in [a for a in args[1:] if not a.startswith("-")]:
    name = re.split(r"[\\s@<>=!~\\[;]", spec, maxsplit=1)[0].lower().replace("-", "_")
    if name == "dlvision" and spec != os.environ["COLAB_SIM_DLVISION"]:
        sys.exit(f"dlvision must come from {os.environ['COLAB_SIM_DLVISION']!r}, not {spec!r}")
    (sim / "installed").mkdir(exist_ok=True)
    (sim / "installed" / name).touch()
'''


class ColabRuntime:
    """A fresh runtime in ``folder``: ``env`` for the process, ``content`` as its working folder."""

    def __init__(self, folder: Path, dlvision_spec: str, hidden=("dlvision", "myst_nb")):
        self.folder = folder
        self.sim = folder / "sim"
        self.content = folder / "content"
        (self.sim / "pip").mkdir(parents=True)
        self.content.mkdir()
        (self.sim / "sitecustomize.py").write_text(SITECUSTOMIZE)
        (self.sim / "pip" / "__init__.py").write_text("")
        (self.sim / "pip" / "__main__.py").write_text(FAKE_PIP)
        self.env = dict(os.environ)
        self.env.pop("MPLBACKEND", None)  # Colab's kernels draw inline (conftest.py sets Agg for the tests)
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.sim), os.environ.get("PYTHONPATH")]))
        self.env["COLAB_SIM"] = str(self.sim)
        self.env["COLAB_SIM_HIDDEN"] = ",".join(hidden)
        self.env["COLAB_SIM_DLVISION"] = dlvision_spec

    def pip_calls(self) -> list[list[str]]:
        log = self.sim / "pip.log"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def describe(self) -> str:
        return textwrap.dedent(
            f"""\
            Colab stand-in in {self.folder}: hidden {self.env['COLAB_SIM_HIDDEN']}, pip calls {self.pip_calls()}"""
        )
