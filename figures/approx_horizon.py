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
from figures import run_figure  # noqa: E402
from figures import save_figure as save  # noqa: E402

NAME = "approx_horizon"


def plot(results_dir, out_dir):
    meta, _ = load_results(results_dir, NAME)
    Ts = [r["T"] for r in meta["results"]]
    labels = [row["method"].split(":")[0] for row in meta["results"][0]["rows"]]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for label in labels:
        cos, norm = [], []
        for r in meta["results"]:
            row = next(x for x in r["rows"] if x["method"].split(":")[0] == label)
            ok = not row.get("error")
            cos.append(row["cosine"] if ok else np.nan)
            norm.append(row["norm"] if ok else np.nan)
        style = "k-o" if label == "exact" else "o-"
        if label != "exact":
            axes[0].plot(Ts, cos, style, label=label)
        axes[1].plot(Ts, norm, style, label=label)
    # per-kind cosine of DrMAD and its hybrid
    kinds = list(meta["results"][0]["rows"][0]["kinds"])
    for label, ls in (("drmad", "-"), ("drmad_hybrid", "--")):
        for k in kinds:
            vals = [next(x for x in r["rows"] if x["method"].split(":")[0] == label)["kinds"][k]["cosine"]
                    for r in meta["results"]]
            axes[2].plot(Ts, vals, ls, marker="o", label=f"{label}: {k}")
    axes[0].set(xscale="log", xlabel="forward iterations T", ylabel="cosine to exact",
                title="direction (all hyperparameters)")
    axes[1].set(xscale="log", yscale="log", xlabel="forward iterations T",
                ylabel="hypergradient norm", title="magnitude")
    axes[2].set(xscale="log", xlabel="forward iterations T", ylabel="cosine to exact",
                title="per hyperparameter kind")
    axes[1].legend(fontsize=7)
    axes[2].legend(fontsize=6)
    fig.suptitle(f"MLP {meta['layer_sizes']} on digits; K = {meta['fraction']:.0%} of T for "
                 "drmad_hybrid and truncated", fontsize=9)
    fig.tight_layout()
    return save(fig, out_dir, NAME)


def main(argv=None):
    return run_figure("approx_horizon", __doc__, plot, argv)


if __name__ == "__main__":
    sys.exit(main())
