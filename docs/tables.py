"""Result tables of the docs, generated from JSON under ``docs/results/``.

A page marks a generated region with ``<!-- table: NAME -->`` ... ``<!-- end table -->``;
``python docs/tables.py`` rewrites every such region of ``docs/*.md`` and
``README.md`` from ``docs/results/NAME.json``; ``python docs/tables.py --check``
exits 1 if a page differs from what would be written (the test suite runs the
same check).  To refresh a table, rerun the experiment, copy its JSON here and
run the generator.

Two kinds of JSON are understood:

* an experiment's own output, rendered by the function registered for it in
  ``RENDERERS`` (e.g. ``online_quadratic``) or, failing that, by the
  experiment module's own ``tables(meta) -> {NAME: markdown}`` when
  ``experiments/NAME.py`` defines one (e.g. ``long_horizon``);
* a plain table ``{"columns": [...], "rows": [[...], ...], "source": "..."}``
  for results whose raw output was not kept: ``source`` says where the numbers
  come from and how to regenerate them, and is printed under the table.
"""

import argparse
import importlib
import json
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
_REGION = re.compile(r"(<!-- table: ([\w-]+) -->\n)(.*?)(<!-- end table -->)", re.S)


def _markdown(columns, rows):
    def cell(x):
        return str(x).replace("|", "\\|")
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |",
             "|" + "|".join(" --- " for _ in columns) + "|"]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row {row!r} has {len(row)} cells for {len(columns)} columns")
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    return "\n".join(lines)


def render_plain(data):
    out = _markdown(data["columns"], data["rows"])
    if data.get("source"):
        out += f"\n\n<sub>Source: {data['source']}</sub>"
    return out


def render_online_quadratic(data):
    """Table 1 of "Online hyper-parameter optimization" from experiments.online_quadratic's JSON."""
    labels = {"unroll1": "Unroll1", "unroll5": "Unroll5", "unroll10": "Unroll10", "clip2": "Clip2",
              "clip5": "Clip5", "clip1e9": "clip1e9 (never clips)"}
    by_method = {}
    for row in data["rows"]:
        by_method.setdefault(row["method"], {})[row["phase"]] = row
    columns = ["method"]
    phases = sorted({row["phase"] for row in data["rows"]})
    for p in phases:
        columns += [f"phase {p}: L_V increase", f"phase {p}: abs(lam - lam*)"]
    rows = []
    for method, per_phase in by_method.items():
        cells = [labels.get(method, method)]
        for p in phases:
            r = per_phase[p]
            cells += [f"{r['lv_increase_pct']:+.2f} % (±{r['lv_increase_pct_std']:.2f})",
                      f"{r['lam_abs_err']:.3f} (±{r['lam_abs_err_std']:.3f})"]
        rows.append(cells)
    a = data["args"]
    lo, hi = data["lam_star_range"]
    note = (f"Mean (± std) over {a['reps']} repetitions, D = {a['dim']}, phases of "
            f"{' and '.join(str(s) for s in a['steps'])} steps at eta = "
            f"{' and '.join(f'{e:g}' for e in a['etas'])}; lam* in [{lo:.3f}, {hi:.3f}]. "
            f"Source: docs/results/online_quadratic.json, written by "
            f"`python -m experiments.online_quadratic --out results`.")
    return _markdown(columns, rows) + f"\n\n<sub>{note}</sub>"


def render_bench_adam(data):
    """``python -m benchmarks.bench_adam --out FILE``'s JSON: the issue's four figures."""
    a, b, d = data["a"], data["b"], data["d"]
    bits = data["c"]
    rows = [["(a)", f"one exact Adam step / one float64 NumPy AdamW step, N = {a['N']:,}",
             f"{a['ratio']['exact Adam, numba kernel']:.2f} (NumPy specification: "
             f"{a['ratio']['exact Adam, NumPy specification']:.1f})", "<= 2"],
            ["(b)", f"exact Adam hypergradient / plain Adam training, digits MLP, T = {b['T']}",
             f"{b['ratio']:.2f} ({b['exact_seconds']:.2f} s vs {b['plain_seconds']:.2f} s); bound "
             f"(grad + grad-and-HVP) / grad = {b['second_order']['bound']:.2f}", "<= 3.5"],
            ["(c)", "buffer bits per element-step / ideal",
             ", ".join(f"{c['ratio']:.5f} (b1 {c['beta1']}, b2 {c['beta2']}, wd {c['weight_decay']})"
                       for c in bits), "<= 1.001"],
            ["(d)", f"peak memory exact / unrolled, T = {d['T']} (tracemalloc)",
             f"{d['ratio']:.4f} ({d['peak_bytes']['exact'] / 2**20:.1f} MiB vs "
             f"{d['peak_bytes']['unrolled'] / 2**20:.0f} MiB)", "-"]]
    return render_plain({"columns": ["", "figure", "measured", "target"], "rows": rows,
                         "source": "`python -m benchmarks.bench_adam --out docs/results/bench_adam.json`"
                                   f", {data.get('clock', 'cpu')} time, medians of interleaved "
                                   "repetitions"})


def render_bench_torch(data):
    """``python -m benchmarks.bench_torch --out FILE``'s JSON: exact / plain torch training."""
    s = data["seconds"]
    rows = [[f"{data['model']}, N = {data['N']}, T = {data['T']}, batch {data['batch']}, "
             f"{data['threads']} thread, torch {data['torch']}",
             f"{s['plain']:.3f} s", f"{s['exact']:.3f} s", f"{s['unrolled']:.3f} s",
             f"{data['exact_over_plain']:.2f}", f"{data['unrolled_over_plain']:.2f}",
             f"{data['bound_exact_over_plain']:.2f}"]]
    return render_plain({"columns": ["problem", "plain", "exact", "unrolled", "exact / plain",
                                     "unrolled / plain", "bound (grad + HVP) / grad"],
                         "rows": rows,
                         "source": f"`python -m benchmarks.bench_torch --out docs/results/bench_torch.json`, "
                                   f"medians of {data['reps']} interleaved repetitions (CPU seconds)"})


def render_pes_schedule_particles(data):
    """``python -m experiments.pes_schedule --particle-study ...``'s JSON."""
    if str(HERE.parent) not in sys.path:
        sys.path.insert(0, str(HERE.parent))
    return importlib.import_module("experiments.pes_schedule").particle_table(data)


RENDERERS = {"online_quadratic": render_online_quadratic,   # others: experiments/NAME.py tables()
             "bench_adam": render_bench_adam, "bench_torch": render_bench_torch,
             "pes_schedule_particles": render_pes_schedule_particles}


def render(name, results_dir=HERE / "results"):
    """The Markdown of table ``name`` from ``results_dir/NAME.json``."""
    path = pathlib.Path(results_dir) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"table {name!r}: no {path}; run the experiment and copy its JSON there")
    data = json.loads(path.read_text(encoding="utf-8"))
    experiment = data.get("experiment", name) if isinstance(data, dict) else name
    if experiment in RENDERERS:
        return RENDERERS[experiment](data)
    module_tables = _experiment_tables(name)
    if module_tables is not None:
        tables = module_tables(data)
        if name not in tables:
            raise ValueError(f"table {name!r}: experiments/{name}.py tables() gives only {sorted(tables)}")
        return tables[name]
    if not (isinstance(data, dict) and {"columns", "rows"} <= set(data)):
        raise ValueError(f"table {name!r}: {path} is neither a {{columns, rows, source}} table nor the "
                         f"output of an experiment with a renderer (RENDERERS here, or tables(meta) "
                         f"in experiments/{name}.py)")
    return render_plain(data)


def _experiment_tables(name):
    """``experiments/NAME.py``'s ``tables(meta)`` function, or None."""
    if not (HERE.parent / "experiments" / f"{name}.py").is_file():
        return None
    if str(HERE.parent) not in sys.path:
        sys.path.insert(0, str(HERE.parent))
    module = importlib.import_module(f"experiments.{name}")
    return getattr(module, "tables", None)


def regenerate(text, results_dir=HERE / "results"):
    """``text`` with every marked table region rewritten."""
    def fill(m):
        return f"{m.group(1)}{render(m.group(2), results_dir)}\n{m.group(4)}"
    return _REGION.sub(fill, text)


def pages(root):
    root = pathlib.Path(root)
    return [root / "README.md"] + sorted((root / "docs").glob("*.md"))


def stale_pages(root):
    """Pages under ``root`` whose tables differ from their JSON."""
    results = pathlib.Path(root) / "docs" / "results"
    return [str(p.relative_to(root)) for p in pages(root)
            if p.is_file() and regenerate(p.read_text(encoding="utf-8"), results) != p.read_text(encoding="utf-8")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report pages that are out of date")
    args = ap.parse_args(argv)
    root = HERE.parent
    stale = stale_pages(root)
    if args.check:
        for p in stale:
            print(f"out of date: {p}")
        return 1 if stale else 0
    for p in pages(root):
        if p.is_file():
            old = p.read_text(encoding="utf-8")
            new = regenerate(old, root / "docs" / "results")
            if new != old:
                p.write_text(new, encoding="utf-8")
                print(f"rewrote {p.relative_to(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
