"""Learned Adam schedules: alpha_t and beta1_t per layer against the best constant grid point,
and the validation loss over meta-iterations (from ``experiments.adam_schedules``)."""

import sys

import numpy as np

from experiments.common import load_results
from figures import run_figure, save_figure


def _smooth(x, width=9):
    """Centred moving average (shorter windows at the ends), to show trends over step noise."""
    kernel = np.ones(min(width, x.size))   # "same" would return the kernel's length otherwise
    return np.convolve(x, kernel, "same") / np.convolve(np.ones_like(x), kernel, "same")


def plot(meta, arr):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(12, 3.6))
    t = np.arange(1, meta["T"] + 1)
    best = meta["best_constant"]
    G = arr["learned_alpha"].shape[1]
    labels = [f"{'W' if g % 2 == 0 else 'b'}{g // 2 + 1}" for g in range(G)]  # layer arrays
    for g, label in enumerate(labels):
        for ax, key in ((a1, "learned_alpha"), (a2, "learned_beta1")):
            raw = arr[key][:, g]
            ax.plot(t, raw, lw=0.5, alpha=0.25, color=f"C{g}")
            ax.plot(t, _smooth(raw), lw=1.5, color=f"C{g}", label=label)
    a1.axhline(best["alpha"], color="k", ls="--", lw=0.8, label="best constant")
    a2.axhline(best["beta1"], color="k", ls="--", lw=0.8, label="best constant")
    a1.set_yscale("log")
    a1.set_title(r"learned $\alpha_t$ per parameter array (9-step mean; raw faint)", fontsize=9)
    a2.set_title(r"learned $\beta_{1,t}$ per parameter array (9-step mean; raw faint)", fontsize=9)
    for ax in (a1, a2):
        ax.set_xlabel("training step t")
        ax.legend(fontsize=7, ncol=2)
    it = np.arange(arr["meta_objectives"].size)
    a3.plot(it, arr["meta_objectives"], "o-", ms=3, lw=1, label="learned schedule")
    a3.axhline(best["valid_loss"], color="k", ls="--", lw=0.8, label="best constant (grid)")
    k = meta["best_iteration"]
    a3.plot([k], [arr["meta_objectives"][k]], "r*", ms=10, label="schedule kept")
    a3.set_xlabel("meta-iteration")
    a3.set_ylabel("validation loss")
    a3.legend(fontsize=7)
    f = meta["final"]
    a3.set_title(f"test accuracy {f['best_constant']['test_accuracy']:.3f} (constant) -> "
                 f"{f['learned']['test_accuracy']:.3f} (learned)", fontsize=9)
    sizes = "-".join(str(s) for s in meta["layer_sizes"])
    fig.suptitle(f"{meta['dataset']}, MLP {sizes}, T = {meta['T']} Adam steps", fontsize=9)
    fig.tight_layout()
    return fig


def draw(results, out):
    meta, arr = load_results(results, "adam_schedules")
    return save_figure(plot(meta, arr), out, "adam_schedules")


def main(argv=None):
    return run_figure("adam_schedules", __doc__, draw, argv)


if __name__ == "__main__":
    sys.exit(main())
