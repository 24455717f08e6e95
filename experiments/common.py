"""Shared command-line options, data loading and result files for the experiments.

Every experiment accepts ``--out``, ``--quick``, ``--mnist-dir``,
``--omniglot-zip`` and ``--seed`` (:func:`add_common_arguments`); results are
one JSON file of scalars/lists plus one ``.npz`` of arrays per experiment
(:func:`save_results` / :func:`load_results`; never pickle).
"""

import argparse
import json
import os
import pathlib

import numpy as np

__all__ = ["add_common_arguments", "parse_experiment_args", "load_data_from_args", "save_results",
           "load_results", "to_jsonable"]


def add_common_arguments(parser, default_out="results"):
    """Add ``--out --quick --mnist-dir --omniglot-zip --seed`` to an argparse parser."""
    parser.add_argument("--out", default=default_out,
                        help="output directory for results (JSON + .npz); default %(default)s")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings that run in seconds (smoke test)")
    from reversible.data import downloaded
    mnist_default, omniglot_default = downloaded("mnist"), downloaded("omniglot")
    parser.add_argument("--mnist-dir", default=mnist_default and str(mnist_default),
                        help="folder with the MNIST IDX files (.gz or raw); default: the user data "
                             "folder filled by `reversible download mnist` if it is there, else "
                             "the bundled digits (now: %(default)s)")
    parser.add_argument("--omniglot-zip", default=omniglot_default and [str(omniglot_default)],
                        nargs="+",
                        help="Omniglot images_background*.zip archive(s) or a folder of them; "
                             "default: the folder filled by `reversible download omniglot` if it "
                             "is there (now: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    return parser


def parse_experiment_args(name, doc, add_arguments, argv=None):
    """Parse an experiment's command line: the common options plus its own ``add_arguments(parser)``."""
    parser = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    add_arguments(parser)
    return parser.parse_args(argv)


def load_data_from_args(args, n=None, kind=None):
    """The data set chosen by ``args``: a :class:`reversible.data.Dataset`.

    ``kind=None``: MNIST if ``--mnist-dir`` was given, else Omniglot if
    ``--omniglot-zip`` was given, else the bundled digits.  ``kind="mnist"``
    or ``"omniglot"``: that data set when its path was given, else digits.
    ``n`` keeps the first ``n`` examples (see ``reversible.data.load_dataset``).
    """
    from reversible.data import load_dataset
    mnist_dir = getattr(args, "mnist_dir", None)
    omni = getattr(args, "omniglot_zip", None)
    if kind not in (None, "mnist", "omniglot", "digits"):
        raise ValueError(f"kind must be None, 'mnist', 'omniglot' or 'digits'; got {kind!r}")
    if kind in (None, "mnist") and mnist_dir:
        name = "mnist"
    elif kind in (None, "omniglot") and omni:
        name = "omniglot"
    else:
        name = "digits"
    return load_dataset(name, mnist_dir=mnist_dir, omniglot_zip=omni, n=n)


def to_jsonable(x):
    """Convert numpy scalars/arrays (nested in dicts/lists) to plain JSON types."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None if np.isnan(x) else (1e308 if x > 0 else -1e308)
    if isinstance(x, pathlib.PurePath):
        return str(x)
    return x


def _check_name(name):
    if not name or os.sep in name or name.startswith("."):
        raise ValueError(f"result name must be a plain file stem; got {name!r}")


def save_results(out_dir, name, json_dict, arrays=None):
    """Write ``out_dir/name.json`` (and ``out_dir/name.npz`` if ``arrays``); return the JSON path.

    Each file is written under a unique temporary name and renamed
    (:func:`reversible.atomic.atomic_write`), so a reader never sees half a file
    and two runs writing the same folder never share a temporary file.
    """
    from reversible.atomic import atomic_write
    _check_name(name)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if arrays:
        bad = [k for k, v in arrays.items() if np.asarray(v).dtype == object]
        if bad:
            raise ValueError(f"arrays {bad} have dtype object; save numeric arrays only")
        atomic_write(out / f"{name}.npz", lambda fh: np.savez_compressed(
            fh, **{k: np.asarray(v) for k, v in arrays.items()}))
    path = out / f"{name}.json"
    text = json.dumps(to_jsonable(json_dict), indent=1)
    atomic_write(path, lambda fh: fh.write(text), mode="w")
    return path


def timed_with_peak_memory(fn, interval=0.002):
    """``(value, seconds, peak MiB)`` of one call ``fn()``: wall time, and the peak growth of
    the process's resident memory over its value before the call, sampled every
    ``interval`` seconds by a thread (Linux ``/proc/self/statm``; ``None`` elsewhere).

    One run gives both numbers (a traced second run would double a long experiment);
    allocations that live shorter than the interval can be missed, so the peak is a
    lower bound of what the call touched beyond what the process already held.
    """
    import threading
    import time
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def rss():
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * page
        except OSError:
            return None

    base = rss()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.wait(interval):
            peak[0] = max(peak[0], rss())

    sampler = threading.Thread(target=sample, daemon=True) if base is not None else None
    if sampler is not None:
        sampler.start()
    t0 = time.perf_counter()
    try:
        value = fn()
    finally:
        seconds = time.perf_counter() - t0
        done.set()
        if sampler is not None:
            sampler.join()
    if base is None:
        return value, seconds, None
    peak[0] = max(peak[0], rss())
    return value, seconds, (peak[0] - base) / 2 ** 20


def load_results(out_dir, name):
    """Read what :func:`save_results` wrote: ``(json_dict, arrays)`` (arrays ``{}`` if none)."""
    _check_name(name)
    out = pathlib.Path(out_dir)
    path = out / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results {path}; run `python -m experiments.{name} "
                                f"--out {out_dir}` first")
    meta = json.loads(path.read_text())
    arrays = {}
    npz = out / f"{name}.npz"
    if npz.is_file():
        with np.load(npz, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    return meta, arrays
