"""Figure: online hypergradient estimates against the exact one over training time.

Three panels over the checkpoints of ``experiments.online_graded``: cosine
with the exact L2 hypergradient, its norm ratio, and the ratio estimate /
exact on the log learning rate.

    python -m figures.online_graded --results results --out docs/figures
"""

import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.common import load_results  # noqa: E402
from figures import run_figure  # noqa: E402

NAME = "online_graded"


def _series(rows, method, key):
    pts = [(r["step"], r[key]) for r in rows if r["method"] == method and r[key] is not None]
    return np.array(pts, dtype=float).reshape(-1, 2)


def plot(results_dir, out_dir):
    meta, _ = load_results(results_dir, NAME)
    rows, methods = meta["rows"], meta["args"]["methods"]
    fig, axes = plt.subplots(1, 3, figsize=(11.0, 3.4))
    panels = [("cos_l2", "cosine with exact (4 log-L2)", "linear"),
              ("ratio_l2", "norm ratio estimate / exact (L2)", "log"),
              ("ratio_lr", "estimate / exact (log lr)", "symlog")]
    for ax, (key, label, scale) in zip(axes, panels):
        for i, m in enumerate(methods):
            pts = _series(rows, m, key)
            if len(pts):
                ax.plot(pts[:, 0], pts[:, 1], marker="o", ms=3, lw=1.2, label=m, color=f"C{i % 10}",
                        ls="--" if m.startswith("clip") else "-")
        if scale == "symlog":
            ax.set_yscale("symlog", linthresh=0.1)
        else:
            ax.set_yscale(scale)
        ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
        ax.set_xlabel(f"step of the online run (window W = {meta['args']['window']})")
        ax.set_title(label, fontsize=9)
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles.keys()), fontsize=8, loc="lower center",
               ncol=len(handles))
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{NAME}.png", out / f"{NAME}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=100)
    plt.close(fig)
    return paths


def main(argv=None):
    return run_figure("online_graded", __doc__, plot, argv)


if __name__ == "__main__":
    sys.exit(main())
