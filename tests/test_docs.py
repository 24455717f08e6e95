"""The documentation runs as written.

Every ```python block of README.md and docs/*.md is executed on its own in a
fresh namespace and a clean working directory (in-process, so the suite stays
fast; ``-m slow`` also runs each block in its own interpreter).  A block whose
fence is preceded, on the line immediately above, by
``<!-- requires: gpu | torch | data | slow -->`` is skipped with that reason
when the requirement is missing.  Also checked: README length, relative links,
and that generated result tables match their JSON (docs/tables.py).
"""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
README_MAX_LINES = 250

# pages agreed in the brief; a link to one of them may precede the page itself
AGREED_PAGES = {"index.md", "usage.md", "engine.md", "approximate.md", "online.md", "gpu.md",
                "benchmarks.md", "experiments.md", "checkpoints.md", "data.md", "development.md",
                "adam.md", "pytorch.md", "long-horizons.md", "ARCHITECTURE.md"}

REQUIREMENTS = ("gpu", "torch", "data", "slow")
_FENCE = re.compile(r"^```\s*python\s*$")
_END = re.compile(r"^```\s*$")
_REQUIRES = re.compile(r"^<!--\s*requires:\s*(\w[\w-]*)\s*-->\s*$")


def python_blocks(path):
    """``(line, requirement or None, code)`` of every ```python block of ``path`` (line of the fence)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if _FENCE.match(lines[i]):
            start = i
            marker = _REQUIRES.match(lines[i - 1].strip()) if i > 0 else None
            requirement = marker.group(1) if marker else None
            if requirement is not None and requirement not in REQUIREMENTS:
                raise ValueError(f"{path.name}:{i}: unknown requirement {requirement!r}; "
                                 f"use one of {REQUIREMENTS}")
            i += 1
            body = []
            while i < len(lines) and not _END.match(lines[i]):
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise ValueError(f"{path.name}:{start + 1}: unterminated ```python block")
            blocks.append((start + 1, requirement, "\n".join(body) + "\n"))
        i += 1
    return blocks


def _all_blocks():
    params = []
    for path in DOC_FILES:
        for line, requirement, code in python_blocks(path):
            label = f"{path.relative_to(ROOT)}:{line}"
            params.append(pytest.param(label, requirement, code, id=label))
    return params


BLOCKS = _all_blocks()


def _data_present():
    """Whether MNIST and Omniglot are in the user's data directory (``reversible download ...``)."""
    try:
        from reversible.data import downloaded
    except ImportError:        # a version without download helpers: look for the files by name
        env = os.environ.get("REVERSIBLE_DATA_DIR")
        directory = pathlib.Path(env) if env else pathlib.Path.home() / ".reversible" / "data"
        return (directory.is_dir() and any(directory.rglob("t10k-images-idx3-ubyte*"))
                and any(directory.rglob("images_background_small*.zip")))
    return downloaded("mnist") is not None and downloaded("omniglot") is not None


def missing(requirement, config):
    """Why ``requirement`` is not met here, or None when it is."""
    if requirement is None:
        return None
    if requirement == "slow":
        markexpr = config.getoption("markexpr") or ""
        return None if re.search(r"(?<!not )\bslow\b", markexpr) else "slow: run with -m slow"
    if requirement == "torch":
        return None if importlib.util.find_spec("torch") else "torch: not installed"
    if requirement == "gpu":
        try:
            import cupy
            if cupy.cuda.runtime.getDeviceCount() > 0:
                return None
        except Exception as err:  # noqa: BLE001 - any failure means no usable GPU
            return f"gpu: CuPy with a CUDA device not available ({type(err).__name__})"
        return "gpu: no CUDA device"
    if requirement == "data":
        if _data_present():
            return None
        return "data: MNIST and Omniglot not downloaded (reversible download mnist; reversible download omniglot)"
    raise AssertionError(requirement)


def test_blocks_were_found():
    assert len(BLOCKS) >= 10, [p.id for p in BLOCKS]


@pytest.mark.parametrize("label, requirement, code", BLOCKS)
def test_block_runs(label, requirement, code, tmp_path, monkeypatch, request):
    """Run one block as written, in a fresh namespace, from an empty working directory."""
    reason = missing(requirement, request.config)
    if reason:
        pytest.skip(reason)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if "reversible.gpu" in code:
        from _gpu_import import load_gpu   # a checkout maps reversible.gpu to gpu/ only once installed
        load_gpu()
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__", "__file__": str(tmp_path / "block.py")}
    try:
        exec(compile(code, label, "exec"), namespace)
    finally:
        plt.close("all")


@pytest.mark.slow
@pytest.mark.parametrize("label, requirement, code", BLOCKS)
def test_block_runs_in_its_own_interpreter(label, requirement, code, tmp_path, request):
    """The honest version: a fresh ``python`` per block (nothing shared but the installed packages)."""
    reason = missing(requirement, request.config)
    if reason:
        pytest.skip(reason)
    script = tmp_path / "block.py"
    script.write_text(code)
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if "reversible.gpu" in code:       # asked of a fresh interpreter: this one may have loaded it by path
        probe = subprocess.run([sys.executable, "-c", "import reversible.gpu"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120)
        if probe.returncode != 0:
            pytest.skip("reversible.gpu is importable in a fresh interpreter only once installed "
                        "(a checkout's reversible/ shadows the installed package, and gpu/ lives beside it)")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{label} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; keep it to {README_MAX_LINES}, move detail to docs/"


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_links(path):
    """``(line, target)`` for every Markdown link of ``path`` that is not a URL or an anchor."""
    out, in_code = [], False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        for target in _LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            out.append((n, target.split("#", 1)[0]))
    return out


def test_relative_links_point_at_files():
    broken = []
    for path in DOC_FILES:
        for line, target in relative_links(path):
            resolved = (path.parent / target).resolve()
            if resolved.exists():
                continue
            if resolved.parent == ROOT / "docs" and resolved.name in AGREED_PAGES:
                continue        # an agreed page another helper is writing
            broken.append(f"{path.relative_to(ROOT)}:{line}: {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)


def test_link_checker_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("see [here](nowhere.md) and [site](https://example.org) and [x](#top)\n"
                    "```bash\n[not](a-link.md)\n```\n")
    assert relative_links(page) == [(1, "nowhere.md")]


def test_block_parser_reads_markers_and_lines(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n<!-- requires: torch -->\n```python\nimport torch\n```\n\n"
                    "```bash\nls\n```\n```python\nx = 1\ny = 2\n```\n")
    assert python_blocks(page) == [(3, "torch", "import torch\n"), (10, None, "x = 1\ny = 2\n")]


def test_block_parser_rejects_unknown_requirement(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- requires: quantum -->\n```python\nx = 1\n```\n")
    with pytest.raises(ValueError, match="unknown requirement 'quantum'"):
        python_blocks(page)


def test_result_tables_match_their_json():
    stale = _tables_module().stale_pages(ROOT)
    assert not stale, f"regenerate with `python docs/tables.py`: {stale}"


def test_gallery_shows_every_figure():
    gallery = (ROOT / "docs" / "experiments.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"\]\(figures/([\w.-]+\.png)\)", gallery))
    figures = {p.name for p in (ROOT / "docs" / "figures").glob("*.png")}
    assert figures - shown == set(), f"figures missing from docs/experiments.md: {sorted(figures - shown)}"


def test_docs_do_not_send_readers_to_the_development_data_folder():
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in DOC_FILES
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if "shared/data" in line]
    assert not offenders, "use reversible download / default_data_dir() instead: " + ", ".join(offenders)


_COMMAND = re.compile(r"python (?:-m )?(experiments|figures|benchmarks)[./](\w+)(?:\.py)?((?:[ \t]+[^\s`|;&#]+)*)")


def documented_commands(text):
    """``(package, module, [--options])`` of every ``python -m experiments.X ...`` (figures, benchmarks) in ``text``."""
    text = text.replace("\\\n", " ")
    return [(pkg, mod, re.findall(r"(?<![\w-])(--[\w-]+)", args)) for pkg, mod, args in _COMMAND.findall(text)]


def test_command_finder_reads_modules_and_options():
    text = ("run `python -m experiments.chaos --out results --workers 16` then\n"
            "python benchmarks/bench_gpu.py --out x.json   # --not-this\n")
    assert documented_commands(text) == [("experiments", "chaos", ["--out", "--workers"]),
                                         ("benchmarks", "bench_gpu", ["--out"])]


def test_documented_commands_name_real_modules_and_options():
    shared = {"experiments": ["common.py"], "figures": ["__init__.py"], "benchmarks": []}
    problems = []
    for path in DOC_FILES:
        for pkg, mod, options in documented_commands(path.read_text(encoding="utf-8")):
            if mod.isupper():
                continue            # a placeholder: python -m figures.NAME
            source = ROOT / pkg / f"{mod}.py"
            if not source.is_file():
                problems.append(f"{path.name}: {pkg}.{mod} does not exist")
                continue
            known = source.read_text(encoding="utf-8") + "".join(
                (ROOT / pkg / name).read_text(encoding="utf-8") for name in shared[pkg])
            problems += [f"{path.name}: {pkg}.{mod} has no option {opt}" for opt in options
                         if f'"{opt}"' not in known and opt != "--help"]
    assert not problems, "\n".join(problems)


def _tables_module():
    spec = importlib.util.spec_from_file_location("doc_tables", ROOT / "docs" / "tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    return tables


def test_table_generator_rewrites_only_marked_regions(tmp_path):
    tables = _tables_module()
    (tmp_path / "speed.json").write_text(
        '{"columns": ["method", "seconds"], "rows": [["exact", "1.5"], ["a|b", "2"]], "source": "a run"}')
    page = "intro\n<!-- table: speed -->\nold numbers\n<!-- end table -->\n| kept | table |\n"
    assert tables.regenerate(page, tmp_path) == (
        "intro\n<!-- table: speed -->\n| method | seconds |\n| --- | --- |\n| exact | 1.5 |\n"
        "| a\\|b | 2 |\n\n<sub>Source: a run</sub>\n<!-- end table -->\n| kept | table |\n")


def test_table_generator_refuses_missing_or_malformed_json(tmp_path):
    tables = _tables_module()
    with pytest.raises(FileNotFoundError, match="no .*nothing.json"):
        tables.regenerate("<!-- table: nothing -->\n<!-- end table -->\n", tmp_path)
    (tmp_path / "ragged.json").write_text('{"columns": ["a", "b"], "rows": [["1"]]}')
    with pytest.raises(ValueError, match="1 cells for 2 columns"):
        tables.render("ragged", tmp_path)
