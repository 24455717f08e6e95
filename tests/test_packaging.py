"""Packaging: the distribution's name, version, dependencies, extras and wheel contents.

The wheel is built from a copy of the sources in a temporary directory (no
build isolation, so no network), and checked for its name, licence, the
``reversible.gpu`` package and the console script.
"""

import ast
import configparser
import pathlib
import re
import shutil
import subprocess
import sys
import warnings
import zipfile

import pytest

import reversible

ROOT = pathlib.Path(__file__).resolve().parent.parent
VERSION = "0.2.0"

# import name -> distribution that provides it
DISTRIBUTION_OF = {"sklearn": "scikit-learn", "PIL": "Pillow", "dask": "dask", "distributed": "dask",
                   "cupy": "cupy-cuda12x", "cupyx": "cupy-cuda12x", "torch": "torch",
                   "numpy": "numpy", "scipy": "scipy", "autograd": "autograd", "numba": "numba",
                   "llvmlite": "numba", "tqdm": "tqdm", "matplotlib": "matplotlib"}
CORE = {"numpy", "scipy", "autograd", "numba", "tqdm", "matplotlib", "scikit-learn", "Pillow"}
EXTRAS = {"test": {"pytest"}, "sweep": {"dask"}, "gpu": {"cupy-cuda12x"},
          "gpu-cuda13": {"cupy-cuda13x"}, "torch": {"torch"}}


def _config():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def _names(requirements):
    """Distribution names of a setup.cfg requirement list (extras and versions dropped)."""
    out = set()
    for line in requirements.strip().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(re.match(r"[A-Za-z0-9_.-]+", line).group(0))
    return out


def test_name_and_single_source_version():
    cfg = _config()
    assert cfg["metadata"]["name"] == "reversible-learning"
    assert cfg["metadata"]["version"].strip() == "attr: reversible.__version__"
    assert reversible.__version__ == VERSION
    assert cfg["metadata"]["license_files"].strip() == "LICENSE"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_dependencies_core_and_extras():
    cfg = _config()
    assert _names(cfg["options"]["install_requires"]) == CORE
    extras = {name: _names(value) for name, value in cfg["options.extras_require"].items()}
    assert extras == EXTRAS


def _third_party_imports(paths):
    stdlib = set(sys.stdlib_module_names)
    found = {}
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in stdlib and top != "reversible":
                    found.setdefault(top, []).append(path.name)
    return found


def test_every_imported_package_is_declared():
    sources = sorted((ROOT / "reversible").rglob("*.py")) + sorted((ROOT / "gpu").rglob("*.py"))
    declared = CORE.union(*EXTRAS.values())
    undeclared = {top: [str(p) for p in where] for top, where in _third_party_imports(sources).items()
                  if DISTRIBUTION_OF.get(top) not in declared}
    assert not undeclared, f"imported but not declared in setup.cfg: {undeclared}"


def test_import_checker_sees_third_party_imports_only(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import os\nimport numpy as np\nfrom yaml import safe_load\nfrom . import x\n"
                   "from reversible import sgd\ndef f():\n    import torch.nn\n")
    assert set(_third_party_imports([src])) == {"numpy", "yaml", "torch"}


def test_every_subpackage_is_listed():
    cfg = _config()
    entries = cfg["options"]["packages"].split()
    assert len(entries) == len(set(entries)), f"a package is listed twice: {entries}"
    listed = set(entries)
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "reversible").rglob("__init__.py")
               if "__pycache__" not in p.parts}
    assert on_disk <= listed, f"packages missing from setup.cfg [options] packages: {on_disk - listed}"
    assert "reversible.gpu" in listed and cfg["options"]["package_dir"].split() == ["reversible.gpu", "=", "gpu"]


def test_import_reversible_pulls_no_optional_dependency():
    code = ("import sys, reversible, reversible.sweep, reversible.kernels; "
            "print(sorted(m for m in ('dask', 'distributed', 'torch', 'cupy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_install_lines_use_the_distribution_name():
    """``reversible`` on the package index is an unrelated project: every install line says reversible-learning."""
    bad = re.compile(r"""pip install (-U |--upgrade )?["']?reversible(?!-learning)\b""")
    offenders = []
    sources = [p for d in ("reversible", "gpu", "experiments", "figures", "benchmarks", "tests")
               for p in sorted((ROOT / d).rglob("*.py"))]
    for path in [ROOT / "README.md", ROOT / "setup.cfg", ROOT / ".ci" / "run"] + sources + sorted(ROOT.glob("docs/*.md")):
        if "__pycache__" in path.parts or path.name == "test_packaging.py":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if bad.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "install the distribution 'reversible-learning':\n" + "\n".join(offenders)


def _quick_start():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    commands = _quick_start()
    assert commands == ['pip install . && reversible demo', 'pip install ".[test,sweep]" && pytest']
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci, ".ci/run must run the README's test command"
    assert "MPLBACKEND=Agg" in ci and ".[test,sweep,torch]" in ci


def test_numba_kernel_compiles_without_cache_when_no_cache_dir_is_writable(monkeypatch):
    numba_kernels = pytest.importorskip("reversible.numba_kernels")

    def no_locator(**options):
        raise RuntimeError("cannot cache function: no locator available")
    monkeypatch.setattr(numba_kernels, "njit", no_locator)
    with pytest.warns(RuntimeWarning, match="NUMBA_CACHE_DIR"):
        assert numba_kernels._caching_possible() is False
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert numba_kernels._caching_possible() is True


def _local_setuptools_builds_wheels():
    """setuptools >= 68 (pyproject.toml's requirement) with bdist_wheel (built in from 70.1, else ``wheel``)."""
    import importlib.util
    try:
        import setuptools
    except ImportError:
        return False
    version = tuple(int(x) for x in re.findall(r"\d+", setuptools.__version__)[:2])
    return version >= (68, 0) and (version >= (70, 1) or importlib.util.find_spec("wheel") is not None)


def test_wheel_name_and_contents(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "LICENSE", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("reversible", "gpu"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    # build with the local setuptools when it can (offline), else let pip fetch the build requirements
    isolation = ["--no-build-isolation"] if _local_setuptools_builds_wheels() else []
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", *isolation,
                          "-w", str(tmp_path / "dist"), "-q"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    wheels = list((tmp_path / "dist").glob("*.whl"))
    assert [w.name for w in wheels] == [f"reversible_learning-{VERSION}-py3-none-any.whl"]
    with zipfile.ZipFile(wheels[0]) as z:
        names = set(z.namelist())
        info = f"reversible_learning-{VERSION}.dist-info"
        assert f"{info}/licenses/LICENSE" in names or f"{info}/LICENSE" in names
        assert {"reversible/__init__.py", "reversible/gpu/__init__.py", "reversible/gpu/engine.py",
                "reversible/methods/__init__.py", "reversible/torch/__init__.py"} <= names
        assert not any(n.startswith(("tests/", "experiments/", "figures/", "benchmarks/")) for n in names)
        metadata = z.read(f"{info}/METADATA").decode()
        assert "Name: reversible-learning" in metadata and f"Version: {VERSION}" in metadata
        assert 'Requires-Dist: torch>=2.3; extra == "torch"' in metadata
        assert "reversible = reversible.cli:main" in z.read(f"{info}/entry_points.txt").decode()


_BLOCKED_IMPORTS = '''
import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("cupy", "torch", "dask", "distributed"):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, _Blocked())
sys.path.insert(0, "tests")
'''


def _run_without_optional(code):
    return subprocess.run([sys.executable, "-c", _BLOCKED_IMPORTS + code], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_missing_optional_dependencies_name_their_extra():
    code = '''
import contextlib, io
from _gpu_import import load_gpu
selfcheck = __import__("importlib").import_module(load_gpu().__name__ + ".selfcheck")
err = io.StringIO()
with contextlib.redirect_stderr(err):
    status = selfcheck.main()
print("gpu", status, err.getvalue().strip())
try:
    import reversible.torch
except ImportError as e:
    print("torch", e)
from reversible.sweep import open_client
try:
    with open_client(None, n_workers=1):
        pass
except ImportError as e:
    print("sweep", e)
'''
    out = _run_without_optional(code)
    assert out.returncode == 0, out.stderr
    lines = {line.split(" ", 1)[0]: line for line in out.stdout.splitlines()}
    assert lines["gpu"].startswith("gpu 2 ") and "reversible-learning[gpu]" in lines["gpu"]
    assert "reversible-learning[torch]" in lines["torch"]
    assert "reversible-learning[sweep]" in lines["sweep"]
