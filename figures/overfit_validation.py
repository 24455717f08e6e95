"""Figure: accuracy on train / validation / test while per-weight decay is tuned on 50
validation examples (Lorraine et al. 2020, section 5.2).

    python -m figures.overfit_validation --results results --out docs/figures
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.common import load_results  # noqa: E402
from figures import run_figure  # noqa: E402
from figures.l2_per_weight import save  # noqa: E402

NAME = "overfit_validation"


def plot(results_dir, out_dir):
    meta, arrays = load_results(results_dir, NAME)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8.0, 3.2))
    for split, color in (("train", "C0"), ("valid", "C1"), ("test", "C2")):
        ax1.plot(100 * arrays[f"{split}_accuracy"], color=color, label=split)
        ax2.plot(arrays[f"{split}_nll"], color=color, label=split)
    hit = meta.get("reached_100_percent_valid_at")
    for ax in (ax1, ax2):
        if hit is not None:
            ax.axvline(hit, color="0.5", ls=":", lw=0.8)
        ax.set_xlabel("meta-iteration")
    ax1.set_ylabel("accuracy (%)")
    ax2.set_ylabel("NLL")
    ax1.legend(fontsize=8)
    c = meta["config"]
    fig.suptitle(f"Per-weight decay tuned on {c['n_valid']} validation examples "
                 f"({c['n_train']} training, {meta['dataset']})", fontsize=9)
    fig.tight_layout()
    return save(fig, out_dir, NAME)


def main(argv=None):
    return run_figure("overfit_validation", __doc__, plot, argv)


if __name__ == "__main__":
    sys.exit(main())
