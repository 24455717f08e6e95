"""Figure: cosine to the exact hypergradient and norms against the training horizon
(DrMAD, its hybrid variant, truncated backprop, identity IFT).

    python -m figures.approx_horizon --results results --out docs/figures
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.common import load_results  # noqa: E402
from figures import horizon_axis, run_figure  # noqa: E402
from figures import save_figure as save  # noqa: E402

NAME = "approx_horizon"


RATIO_RANGE = (1e-4, 1e4)          # norm ratios outside are drawn at the edge, labelled with their value


def _row(result, label):
    return next(x for x in result["rows"] if x["method"].split(":")[0] == label)


def _value(row, key):
    return np.nan if row.get("error") else row[key]


def plot(results_dir, out_dir):
    from reversible.grading import coinciding_groups
    meta, _ = load_results(results_dir, NAME)
    results = meta["results"]
    Ts = np.array([r["T"] for r in results], dtype=float)
    labels = [row["method"].split(":")[0] for row in results[0]["rows"] if
              row["method"].split(":")[0] != "exact"]
    markers = dict(zip(labels, "osD^vP"))
    colors = {label: plt.cm.tab10(i) for i, label in enumerate(labels)}
    dodge = {label: np.exp(0.04 * (i - (len(labels) - 1) / 2)) for i, label in enumerate(labels)}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.0))
    lo, hi = RATIO_RANGE
    clipped = []
    for label in labels:
        rows = [_row(r, label) for r in results]
        cos = np.array([_value(row, "cosine") for row in rows])
        ratio = np.array([_value(row, "norm_ratio") for row in rows])
        style = dict(marker=markers[label], color=colors[label], ms=6, lw=1.4, label=label)
        axes[0].plot(Ts * dodge[label], cos, **style)
        axes[1].plot(Ts * dodge[label], np.clip(ratio, lo, hi), **style)
        clipped += [f"{label} {r:.0e} at T={int(T)}" for T, r in zip(Ts, ratio)
                    if np.isfinite(r) and not lo <= r <= hi]
    if clipped:
        axes[1].text(0.03, 0.97, "off the scale:\n" + "\n".join(clipped), transform=axes[1].transAxes,
                     va="top", fontsize=7, color="0.25")
    # per hyperparameter kind, DrMAD (solid) and its hybrid (dashed); where they agree within
    # 5 % they share one line
    kinds = list(_row(results[0], "exact")["kinds"])
    curves = {}
    for label in ("drmad", "drmad_hybrid"):
        for k in kinds:
            curves[(k, label)] = [_row(r, label)["kinds"][k]["cosine"] if not _row(r, label).get("error")
                                  else np.nan for r in results]
    for i, k in enumerate(kinds):
        per_kind = {label: curves[(k, label)] for label in ("drmad", "drmad_hybrid")}
        for group in coinciding_groups(per_kind, rtol=0.05, atol=0.02):
            axes[2].plot(Ts * np.exp(0.04 * (i - 1.5)), per_kind[group[0]], marker="o",
                         color=plt.cm.Dark2(i), ls="-" if group[0] == "drmad" else "--",
                         label=f"{k}: {' ~ '.join(group)}")
    axes[0].set(ylabel="cosine to exact", title="direction (all hyperparameters)", ylim=(-1.05, 1.05))
    axes[1].set(yscale="log", ylabel="|g| / |g_exact|", ylim=(lo / 3, hi * 3),
                title=f"magnitude (clipped to [{lo:.0e}, {hi:.0e}])")
    axes[2].set(ylabel="cosine to exact", title="DrMAD per hyperparameter kind", ylim=(-1.05, 1.05))
    for ax in axes:
        horizon_axis(ax, Ts)
        ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    axes[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.suptitle(f"MLP {meta['layer_sizes']} on digits; K = {meta['fraction']:.0%} of T for "
                 "drmad_hybrid and truncated; dotted: the exact value", fontsize=9)
    fig.tight_layout()
    return save(fig, out_dir, NAME)


def main(argv=None):
    return run_figure("approx_horizon", __doc__, plot, argv)


if __name__ == "__main__":
    sys.exit(main())
