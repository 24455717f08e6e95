"""Figure scripts: ``python -m figures.NAME --results DIR --out DIR`` writes NAME.png and NAME.pdf.

Helpers shared by the scripts: :func:`figure_parser`, :func:`save_figure`, :func:`run_figure`
and :func:`horizon_axis`.
"""

import argparse
import pathlib

__all__ = ["figure_parser", "save_figure", "run_figure", "horizon_axis"]


def figure_parser(name, description):
    """An argparse parser with ``--results`` (default ``results``) and ``--out`` (default ``docs/figures``)."""
    p = argparse.ArgumentParser(prog=f"python -m figures.{name}", description=description)
    p.add_argument("--results", default="results", help="experiment results directory")
    p.add_argument("--out", default="docs/figures", help="where to write the PNG and PDF")
    return p


def save_figure(fig, out_dir, name, dpi=100):
    """Write ``out_dir/name.png`` and ``out_dir/name.pdf``; close the figure; return both paths."""
    import matplotlib.pyplot as plt
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=dpi, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def run_figure(name, doc, plot, argv=None):
    """The command line of a figure script whose ``plot(results_dir, out_dir)`` returns the paths written."""
    args = figure_parser(name, doc.strip().splitlines()[0]).parse_args(argv)
    for path in plot(args.results, args.out):
        print("wrote", path)
    return 0


def horizon_axis(ax, values, label="training steps T"):
    """A log x axis ticked at exactly ``values`` with plain labels (no colliding minor labels)."""
    import numpy as np
    from matplotlib.ticker import FixedLocator, NullLocator
    values = np.asarray(values, dtype=float)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.set_xlim(values.min() / 1.5, values.max() * 1.5)
    ax.set_xlabel(label)

