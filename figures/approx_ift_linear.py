"""Figure: Neumann and CG inverse-Hessian approximations against the closed-form IFT
hypergradient of ridge regression on diabetes (cf. Lorraine et al. 2020, Fig. 3).

    python -m figures.approx_ift_linear --results results --out docs/figures
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.common import load_results  # noqa: E402
from figures import run_figure  # noqa: E402
from figures.approx_horizon import save  # noqa: E402

NAME = "approx_ift_linear"


def plot(results_dir, out_dir):
    meta, _ = load_results(results_dir, NAME)
    it = np.array(meta["iterations"], dtype=float)
    x = it + 1.0                                   # log axis: i = 0 is drawn at 1
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    ref_norm = meta["reference_norm"]
    for method, style in (("neumann", "o-"), ("cg", "s-")):
        axes[0].plot(x, meta[method]["cosine"], style, label=method)
        axes[1].plot(x, np.array(meta[method]["l2_distance"]) / ref_norm, style, label=method)
    colors = ["gray", "tab:green", "tab:red", "tab:purple"]
    for n, (label, single) in enumerate(meta["single"].items()):
        c = colors[n % len(colors)]
        axes[0].axhline(single["cosine"], ls="--", lw=1, color=c, label=label)
        axes[1].axhline(single["l2_distance"] / ref_norm, ls="--", lw=1, color=c, label=label)
    axes[0].set(xscale="log", xlabel="i + 1 (Neumann terms / CG iterations)",
                ylabel="cosine to closed-form IFT", ylim=(min(0, axes[0].get_ylim()[0]), 1.02))
    axes[1].set(xscale="log", yscale="log", xlabel="i + 1 (Neumann terms / CG iterations)",
                ylabel="l2 distance / |closed form|")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"Ridge on diabetes: {meta['weights']} per-weight L2 hypers, training T={meta['T']} "
                 f"(|w_T - w*| = {meta['distance_w_T_to_optimum']:.1e})", fontsize=9)
    fig.tight_layout()
    return save(fig, out_dir, NAME)


def main(argv=None):
    return run_figure("approx_ift_linear", __doc__, plot, argv)


if __name__ == "__main__":
    sys.exit(main())
