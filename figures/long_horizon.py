"""Figure: the exact hypergradient over long horizons - time, memory beside the cost of storing
the trajectory, and the growth of the hypergradient's norm.

    python -m figures.long_horizon --results results --out docs/figures
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.common import load_results  # noqa: E402
from figures import horizon_axis, run_figure  # noqa: E402
from figures import save_figure as save  # noqa: E402

NAME = "long_horizon"


def plot(results_dir, out_dir):
    meta, _ = load_results(results_dir, NAME)
    rows = [r for r in meta["rows"] if not r.get("error")]
    alphas = list(dict.fromkeys(r.get("alpha") for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for k, alpha in enumerate(alphas):
        mine = [r for r in rows if r.get("alpha") == alpha]
        T = np.array([r["T"] for r in mine], dtype=float)
        col = lambda key: np.array([r.get(key, np.nan) for r in mine], dtype=float)
        axes[0].plot(T, col("seconds"), "o-", label=f"exact, alpha={alpha}")
        axes[2].plot(T, col("norm_log_alpha"), "o-", label=f"|d f / d log alpha|, alpha={alpha}")
        axes[2].plot(T, col("norm_alphas"), "s--", label=f"|d f / d alphas|, alpha={alpha}")
        if k == 0:
            axes[0].plot(T, col("unrolled_seconds"), "s--", label="unrolled (autograd tape)")
            axes[1].plot(T, col("peak_mb"), "ko-", label="exact: peak")
            axes[1].plot(T, col("buffer_mb"), "k:", label="exact: information buffer")
            axes[1].plot(T, col("unrolled_peak_mb"), "s--", label="unrolled: measured peak")
            axes[1].plot(T, col("unrolled_projected_mb"), "--", color="C0", alpha=0.5,
                         label="unrolled: linear projection")
            axes[1].plot(T, col("stored_trajectory_mb"), "-", color="C3",
                         label="stored (w, v): 16 N T bytes")
    axes[0].set(xscale="log", yscale="log", xlabel="T", ylabel="seconds per hypergradient",
                title="time")
    axes[1].set(xscale="log", yscale="log", xlabel="T", ylabel="MiB", title="memory")
    axes[2].set(xscale="log", yscale="log", xlabel="T", ylabel="norm",
                title="exact hypergradient norm")
    for ax in axes:
        horizon_axis(ax, T, "T (training steps)")
        ax.legend(fontsize=7)
    data = "MNIST" if "mnist" in meta["data"].lower() else meta["data"]
    fig.suptitle(f"{data}, layers {meta['layer_sizes']}", fontsize=9)
    fig.tight_layout()
    return save(fig, out_dir, NAME)


def main(argv=None):
    return run_figure(NAME, __doc__, plot, argv)


if __name__ == "__main__":
    sys.exit(main())
