"""Figure: PES's LR-schedule task - meta-loss surface with the exact hypergradient field and
meta-optimisation trajectories; estimator quality against the exact and smoothed hypergradients.

    python -m figures.pes_schedule --results results --out docs/figures
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.common import load_results  # noqa: E402
from figures import run_figure  # noqa: E402
from figures import save_figure as save  # noqa: E402

NAME = "pes_schedule"


def plot(results_dir, out_dir):
    meta, arr = load_results(results_dir, NAME)
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.6))
    ax = axes[0]
    loss = np.log10(np.maximum(arr["loss"], 1e-12))
    im = ax.pcolormesh(arr["log_lr"], arr["log_decay"], np.ma.masked_invalid(loss),
                       shading="nearest", cmap="viridis")
    fig.colorbar(im, ax=ax, label="log10 validation loss at T")
    X, Y = np.meshgrid(arr["field_log_lr"], arr["field_log_decay"])
    field = arr["field"]
    norm = np.linalg.norm(field, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ax.quiver(X, Y, -field[..., 0] / norm, -field[..., 1] / norm, color="w", width=0.004)
    for name, tr in meta["trajectories"].items():
        th = np.asarray(tr["theta"], dtype=float)
        if name == "pes_online":            # one point per truncation: a line, episode ends marked
            every = int(tr["updates_per_episode"])
            line, = ax.plot(th[:, 0], th[:, 1], "-", lw=1, color="k",
                            label=f"PES online ({len(th) - 1} updates)")
            ax.plot(th[every::every, 0], th[every::every, 1], "kx", ms=5)
        else:
            ax.plot(th[:, 0], th[:, 1], "-o", ms=2, label=name)
    ax.plot(*meta["theta0"], "r*", ms=12)
    ax.set(xlabel="log initial learning rate", ylabel="log decay power",
           title=f"surface and -exact hypergradient direction (T={meta['settings']['surface_T']})")
    ax.legend(fontsize=7, loc="lower left")
    ax = axes[1]
    with np.errstate(divide="ignore"):
        im = ax.pcolormesh(arr["field_log_lr"], arr["field_log_decay"],
                           np.ma.masked_invalid(np.log10(norm)), shading="nearest", cmap="magma")
    fig.colorbar(im, ax=ax, label="log10 |exact hypergradient|")
    ax.set(xlabel="log initial learning rate", ylabel="log decay power",
           title="exact hypergradient norm")
    rows = meta["table"]
    Ts = sorted({r["T"] for r in rows})

    def series(name, key, field):
        return [next(r for r in rows if r["T"] == T and r["estimator"] == name)[key][field]
                for T in Ts]
    names = [n for n in dict.fromkeys(r["estimator"] for r in rows) if n != "exact"]
    lowest = 1.0
    for name in names:
        c_ex, c_sm = series(name, "vs_exact", "cosine"), series(name, "vs_smoothed", "cosine")
        lowest = min(lowest, *c_ex, *c_sm)
        line, = axes[2].plot(Ts, c_ex, "o-", label=name)
        axes[2].plot(Ts, c_sm, "s--", color=line.get_color(), alpha=0.6)
        axes[3].plot(Ts, series(name, "vs_exact", "norm_ratio"), "o-", color=line.get_color(),
                     label=name)
    axes[2].set(xscale="log", xlabel="horizon T",
                ylabel="cosine (solid: vs exact, dashed: vs smoothed)",
                title="direction against ground truth", ylim=(min(lowest, 0.5) - 0.05, 1.02))
    axes[2].legend(fontsize=7)
    axes[3].axhline(1.0, color="k", lw=0.8)
    axes[3].set(xscale="log", yscale="log", xlabel="horizon T",
                ylabel="|estimate| / |exact hypergradient|", title="magnitude against ground truth")
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out_dir, NAME)


def main(argv=None):
    return run_figure(NAME, __doc__, plot, argv)


if __name__ == "__main__":
    sys.exit(main())
