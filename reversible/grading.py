"""Grade approximate hypergradients against a reference (by default the exact one).

:func:`compare` runs ``autograd.grad`` of the user's meta-objective once per
method and reports, per method: cosine similarity to the reference, relative
l2 error, norm ratio, fraction of matching signs (what a sign-SGD meta-step
uses), the same per hyperparameter kind, wall time, peak memory (traced by
:mod:`tracemalloc`, in a second run) and any non-finite values.

``reversible compare`` runs it on
:class:`reversible.models.MLPClassifierProblem` (an MLP on the bundled digits
with per-layer learning rates, momenta, L2 penalties and initial scales as
hyperparameters) over a list of horizons.

Methods are given as specs: ``"name"`` or ``"name:key=value:key=value"``
(e.g. ``"truncated:K=10"``, ``"neumann:terms=50:step=0.05"``); use
:func:`method_kwargs` inside an objective to turn one into keyword arguments
of :func:`reversible.sgd`.
"""

import json
import time
import tracemalloc

import numpy as np
from autograd import grad

DEFAULT_METHODS = ("exact", "unrolled", "checkpointed", "forward", "drmad", "drmad_hybrid",
                   "truncated", "neumann", "cg", "identity")


# ------------------------------------------------------------------ method specs
def _parse_value(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def parse_spec(spec):
    """``"name:key=value:..."`` -> ``(name, options)``; a dict ``{"method": name, ...}`` also works."""
    if isinstance(spec, dict):
        opts = dict(spec)
        return opts.pop("method"), opts
    name, *parts = str(spec).split(":")
    opts = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise ValueError(f"bad method option {part!r} in {spec!r}: write name:key=value")
        opts[key] = _parse_value(value)
    return name, opts


def method_kwargs(spec):
    """Keyword arguments of :func:`reversible.sgd` for a method spec."""
    name, opts = parse_spec(spec)
    return dict(opts, method=name)


def spec_label(spec):
    return spec if isinstance(spec, str) else ":".join(
        [spec["method"]] + [f"{k}={v}" for k, v in spec.items() if k != "method"])


# ------------------------------------------------------------------ metrics
def _flat(tree, keys):
    return np.concatenate([np.ravel(np.asarray(tree[k], dtype=np.float64)) for k in keys]) \
        if keys else np.zeros(0)


def grade(g, ref):
    """Cosine, relative l2 error, norm ratio and sign agreement of ``g`` against ``ref``.

    The cosine of a zero vector is taken as 0 (it carries no direction).
    """
    g = np.asarray(g, dtype=np.float64).ravel()
    ref = np.asarray(ref, dtype=np.float64).ravel()
    finite = bool(np.all(np.isfinite(g)))
    n_g, n_ref = float(np.linalg.norm(g)), float(np.linalg.norm(ref))
    out = {"nonfinite": int(np.sum(~np.isfinite(g))), "norm": n_g, "reference_norm": n_ref}
    if not finite:
        out.update(cosine=float("nan"), rel_error=float("nan"), norm_ratio=float("nan"),
                   sign_match=float("nan"))
        return out
    denom = n_g * n_ref
    out["cosine"] = float(g @ ref / denom) if denom > 0 else (1.0 if n_g == n_ref == 0 else 0.0)
    out["rel_error"] = float(np.linalg.norm(g - ref) / n_ref) if n_ref > 0 else \
        (0.0 if n_g == 0 else float("inf"))
    out["norm_ratio"] = n_g / n_ref if n_ref > 0 else (1.0 if n_g == 0 else float("inf"))
    out["sign_match"] = float(np.mean(np.sign(g) == np.sign(ref))) if g.size else 1.0
    return out


# ------------------------------------------------------------------ running
def _as_dict(hypers):
    return (hypers, False) if isinstance(hypers, dict) else ({"hypers": hypers}, True)


def _hypergradient(objective, hypers, spec, wrapped):
    if wrapped:
        return {"hypers": grad(lambda h: objective(h, spec))(hypers["hypers"])}
    return grad(lambda h: objective(h, spec))(hypers)


def measure(objective, hypers, spec, memory=True, cpu=None):
    """Run one method: ``(gradient dict, seconds, peak bytes or None, error message or None)``.

    ``cpu``, if a dict, receives ``cpu_seconds`` (process CPU time, less
    sensitive than wall time to other load on the machine).
    """
    hd, wrapped = _as_dict(hypers)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        g = _hypergradient(objective, hd, spec, wrapped)
        seconds = time.perf_counter() - t0
        if cpu is not None:
            cpu["cpu_seconds"] = time.process_time() - c0
        peak = None
        if memory:
            tracemalloc.start()
            try:
                _hypergradient(objective, hd, spec, wrapped)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        return g, seconds, peak, None
    except Exception as err:                     # recorded in the table, not raised
        return None, None, None, f"{type(err).__name__}: {err}"


class Table:
    """Rows of :func:`compare` (dicts), printable and JSON-serialisable."""

    COLUMNS = (("cosine", 8, ".4f"), ("rel_error", 10, ".3g"), ("norm_ratio", 10, ".3g"),
               ("sign_match", 10, ".3f"), ("seconds", 9, ".3g"), ("time_ratio", 10, ".3g"),
               ("cpu_ratio", 9, ".3g"),
               ("peak_mb", 9, ".3g"), ("memory_ratio", 12, ".3g"), ("nonfinite", 9, "d"))

    def __init__(self, rows, reference, meta=None):
        self.rows, self.reference, self.meta = rows, reference, dict(meta or {})

    def row(self, label):
        return next(r for r in self.rows if r["method"] == label)

    def format(self, kinds=True):
        """A text table; with ``kinds``, a second line per method grades each hyperparameter kind."""
        w = max([len("method")] + [len(r["method"]) for r in self.rows])
        lines = [f"{'method':<{w}} " + " ".join(f"{name:>{width}}" for name, width, _ in self.COLUMNS)]
        for r in self.rows:
            if r.get("error"):
                lines.append(f"{r['method']:<{w}} error: {r['error']}")
                continue
            cells = [f"{'-':>{width}}" if r.get(name) is None else f"{r[name]:>{width}{fmt}}"
                     for name, width, fmt in self.COLUMNS]
            lines.append(f"{r['method']:<{w}} " + " ".join(cells))
            if kinds:
                per = ", ".join(f"{k}: cos {v['cosine']:.3f} sign {v['sign_match']:.2f}"
                                for k, v in r["kinds"].items())
                lines.append(f"{'':<{w}}   {per}")
        return "\n".join(lines)

    __str__ = format

    def to_dict(self):
        return {"reference": self.reference, "meta": self.meta, "rows": self.rows}

    def to_json(self, path=None):
        text = json.dumps(self.to_dict(), indent=1, default=json_default)
        if path is not None:
            from .atomic import atomic_write
            atomic_write(path, lambda fh: fh.write(text), mode="w")
        return text


def json_default(x):
    """``json.dump``'s ``default``: NumPy scalars and arrays as plain numbers and lists."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _warm_worker(objective, hypers, reference):
    """Process-pool initializer: one untimed run (imports, JIT compilation)."""
    measure(objective, hypers, reference, memory=False)


def _measure_job(job):
    """``measure`` plus CPU seconds: ``(gradient, seconds, peak, error, cpu_seconds)``."""
    objective, hypers, spec, memory = job
    cpu = {}
    out = measure(objective, hypers, spec, memory, cpu)
    return out + (cpu.get("cpu_seconds"),)


def _progress_bar(progress, total):
    """A tqdm bar over ``total`` methods, labelled ``progress`` if it is a string; None if off."""
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=progress if isinstance(progress, str) else "methods",
                unit="method", leave=False)


def _advance(bar, spec, before=False):
    if bar is None:
        return
    if before:
        bar.set_postfix_str(spec_label(spec))
    else:
        bar.update(1)


def compare(objective, hypers, methods=DEFAULT_METHODS, reference="exact", memory=True,
            keep_gradients=False, warmup=True, jobs=1, progress=False):
    """Grade each method's hypergradient of ``objective(hypers, method)`` against ``reference``'s.

    ``hypers`` is a dict of arrays (each key is one hyperparameter kind, graded
    separately too) or a single array; ``methods`` and ``reference`` are method
    specs, handed to ``objective`` as they are.  Returns a :class:`Table`.
    A method that fails gets a row with its ``error``; a failing reference raises.
    ``warmup`` runs the reference once untimed first (imports, JIT compilation),
    on ``(objective, hypers)`` or, if ``warmup`` is such a pair, on that one
    (e.g. a short horizon of the same problem).
    ``jobs > 1`` measures the methods in that many worker processes (the
    objective must then be picklable; give each worker its own core for
    meaningful times).  ``progress`` (True or a label) shows a tqdm bar over the methods.
    """
    from .smoothed import for_compare, reference_info   # reference="smoothed:sigma=...": see smoothed.py
    objective, reference = for_compare(objective, reference)
    hd, _ = _as_dict(hypers)
    keys = list(hd)
    ref_label = spec_label(reference)
    specs = [reference] + [s for s in methods if spec_label(s) != ref_label]
    warm = tuple(warmup) if isinstance(warmup, (tuple, list)) else (objective, hypers)
    bar = _progress_bar(progress, len(specs))
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor
        init = (_warm_worker, warm + (reference,)) if warmup else (None, ())
        with ProcessPoolExecutor(jobs, initializer=init[0], initargs=init[1]) as pool:
            futures = [pool.submit(_measure_job, (objective, hypers, s, memory)) for s in specs]
            measured = []
            for spec, future in zip(specs, futures):
                measured.append(future.result())
                _advance(bar, spec)
    else:
        if warmup:
            measure(*warm, reference, memory=False)
        measured = []
        for spec in specs:
            _advance(bar, spec, before=True)
            measured.append(_measure_job((objective, hypers, spec, memory)))
            _advance(bar, spec)
    if bar is not None:
        bar.close()
    by_label = dict(zip([spec_label(s) for s in specs], measured))
    ref_g, ref_s, ref_peak, ref_err, ref_cpu = by_label[ref_label]
    if ref_err:
        raise RuntimeError(f"the reference method {ref_label!r} failed: {ref_err}")
    ref_g = _as_dict(ref_g)[0]
    ref_flat = _flat(ref_g, keys)
    rows = []
    for spec in methods:
        label = spec_label(spec)
        g, s, peak, err, cpu_s = by_label[label]
        row = {"method": label, "error": err}
        if err is None:
            g = _as_dict(g)[0]
            row.update(grade(_flat(g, keys), ref_flat))
            row["kinds"] = {k: grade(g[k], ref_g[k]) for k in keys}
            row.update(seconds=s, time_ratio=s / ref_s if ref_s else None, cpu_seconds=cpu_s,
                       cpu_ratio=cpu_s / ref_cpu if ref_cpu else None,
                       peak_mb=None if peak is None else peak / 2**20,
                       memory_ratio=None if peak is None or not ref_peak else peak / ref_peak)
            if keep_gradients:
                row["gradient"] = {k: np.asarray(g[k]).tolist() for k in keys}
        rows.append(row)
    return Table(rows, ref_label, {"reference_seconds": ref_s, "jobs": jobs,
                                   "reference_peak_mb": None if ref_peak is None else ref_peak / 2**20,
                                   **reference_info(objective)})


def coinciding_groups(curves, rtol=1e-6, atol=1e-9):
    """Group labels whose curves coincide: ``{label: values}`` -> ``[[label, ...], ...]``.

    Two curves coincide when every value agrees to ``rtol`` / ``atol`` (NaN
    with NaN).  Figures draw each group once with a joint label, so methods
    that compute the same thing (e.g. ``exact`` and ``unrolled``) do not hide
    each other.  Groups and the labels inside them keep the input order.
    """
    groups = []
    for label, values in curves.items():
        values = np.asarray(values, dtype=np.float64)
        for group in groups:
            if group[1].shape == values.shape and np.allclose(values, group[1], rtol=rtol, atol=atol,
                                                              equal_nan=True):
                group[0].append(label)
                break
        else:
            groups.append(([label], values))
    return [labels for labels, _ in groups]

