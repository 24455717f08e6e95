"""Run every experiment present, then every figure: one command for the whole gallery.

    python -m experiments.run_all --out results [--quick] [--mnist-dir DIR] [--omniglot-zip ZIP ...]

Each experiment ``experiments/NAME.py`` that exists runs as
``python -m experiments.NAME --out OUT ...`` (a separate process, so one
failure does not stop the others); then each ``figures/NAME.py`` runs as
``python -m figures.NAME --results OUT --out FIGURES``.  Exits non-zero if any
step failed, after running the rest.
"""

import argparse
import importlib.util
import os
import pathlib
import subprocess
import sys
import time

#: the issue-6 experiments first (cheap ones early); any other module found follows
FIRST = ["infobuffer", "chaos", "schedules", "l2_per_weight", "learned_data", "multitask",
         "overfit_validation"]
NOT_EXPERIMENTS = {"__init__", "common", "run_all"}
REPO = pathlib.Path(__file__).resolve().parents[1]


def discover():
    """Names of every experiment module present in ``experiments/``, ``FIRST`` ones first."""
    found = sorted(p.stem for p in (REPO / "experiments").glob("*.py")
                   if p.stem not in NOT_EXPERIMENTS and not p.stem.startswith("_"))
    return [n for n in FIRST if n in found] + [n for n in found if n not in FIRST]


def available(package, names):
    """The names in ``names`` for which module ``package.NAME`` exists."""
    return [n for n in names if importlib.util.find_spec(f"{package}.{n}") is not None]


def _run(cmd, log):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    t0 = time.perf_counter()
    print("$ " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=REPO, env=env)
    log.append({"command": " ".join(cmd), "rc": rc, "seconds": time.perf_counter() - t0})
    return rc


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.run_all",
                                description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results", help="results directory (default %(default)s)")
    p.add_argument("--figures-out", default=None,
                   help="where figures go (default: OUT/figures)")
    p.add_argument("--quick", action="store_true", help="quick (smoke-test) settings everywhere")
    p.add_argument("--mnist-dir", default=None, help="MNIST IDX folder (default: bundled digits)")
    p.add_argument("--omniglot-zip", default=None, nargs="+", help="Omniglot zip archive(s)")
    p.add_argument("--seed", type=int, default=None, help="seed passed to every experiment")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help=f"run only these (from {discover()})")
    p.add_argument("--figures-only", action="store_true",
                   help="skip the experiments; redraw figures from existing results")
    args = p.parse_args(argv)
    present = discover()
    names = present if args.only is None else args.only
    unknown = [n for n in names if n not in present]
    if unknown:
        p.error(f"unknown experiment(s) {unknown}; choose from {present}")
    out = str(pathlib.Path(args.out).resolve())
    fig_out = str(pathlib.Path(args.figures_out or pathlib.Path(out) / "figures").resolve())
    common = ["--out", out] + (["--quick"] if args.quick else [])
    if args.mnist_dir:
        common += ["--mnist-dir", str(pathlib.Path(args.mnist_dir).resolve())]
    if args.omniglot_zip:
        common += ["--omniglot-zip"] + [str(pathlib.Path(z).resolve()) for z in args.omniglot_zip]
    if args.seed is not None:
        common += ["--seed", str(args.seed)]
    log = []
    if not args.figures_only:
        for name in available("experiments", names):
            _run([sys.executable, "-m", f"experiments.{name}"] + common, log)
    for name in available("figures", names):
        _run([sys.executable, "-m", f"figures.{name}", "--results", out, "--out", fig_out], log)
    failed = [e for e in log if e["rc"] != 0]
    for e in log:
        print(f"{'FAILED' if e['rc'] else 'ok':6s} {e['seconds']:8.1f} s  {e['command']}")
    if failed:
        print(f"{len(failed)} of {len(log)} steps failed", file=sys.stderr)
        return 1
    print(f"all {len(log)} steps done; figures in {fig_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
