"""Import ``reversible.gpu`` for the GPU tests, also from a checkout that is not installed.

setup.cfg maps ``reversible.gpu`` to ``gpu/``; without an install that mapping
does not exist, so the package is loaded from its path instead.
"""

import importlib.util
import pathlib
import sys

import reversible

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_gpu():
    try:
        import reversible.gpu as g
        return g
    except ModuleNotFoundError:
        spec = importlib.util.spec_from_file_location(
            "reversible.gpu", REPO / "gpu" / "__init__.py", submodule_search_locations=[str(REPO / "gpu")])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["reversible.gpu"] = mod
        spec.loader.exec_module(mod)
        reversible.gpu = mod
        return mod
