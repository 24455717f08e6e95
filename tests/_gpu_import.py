"""Import ``reversible.gpu`` for the GPU tests, also from a checkout that is not installed.

setup.cfg maps ``reversible.gpu`` to ``gpu/``; without an install that mapping
does not exist, and an editable install of another checkout maps it to *that*
checkout's ``gpu/``.  So unless the installed package is this checkout's, it is
loaded from this checkout's path.
"""

import importlib.util
import pathlib
import sys

import reversible

REPO = pathlib.Path(__file__).resolve().parents[1]


def _installed_is_ours():
    spec = importlib.util.find_spec("reversible.gpu")
    return spec is not None and pathlib.Path(spec.origin).resolve().parent == REPO / "gpu"


def load_gpu():
    if _installed_is_ours():
        import reversible.gpu as g
        return g
    for name in [m for m in sys.modules if m == "reversible.gpu" or m.startswith("reversible.gpu.")]:
        del sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        "reversible.gpu", REPO / "gpu" / "__init__.py", submodule_search_locations=[str(REPO / "gpu")])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["reversible.gpu"] = mod
    spec.loader.exec_module(mod)
    reversible.gpu = mod
    return mod
