"""Figures: the multitask tasks (Maclaurin et al. 2015, Fig. 8) and the learned cross-task
correlation per layer with the separate / tied / learned comparison (Fig. 9 and table).

    python -m figures.multitask --results results --out docs/figures
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.common import load_results  # noqa: E402
from figures import run_figure  # noqa: E402
from figures.l2_per_weight import save  # noqa: E402

NAME = "multitask"


def correlation(S):
    C = S @ S.T
    sd = np.sqrt(np.diag(C))
    return C / np.outer(sd, sd)


def plot_tasks(meta, arrays, out_dir):
    ex = arrays["examples"]
    shape = tuple(int(s) for s in arrays["image_shape"])
    K = ex.shape[0]
    fig, axes = plt.subplots(1, K, figsize=(0.95 * K + 0.3, 1.5), squeeze=False)
    for k, ax in enumerate(axes[0]):
        ax.imshow(ex[k].reshape(shape), cmap="gray_r")
        ax.set_title(meta["tasks"][k].replace(" ", "\n"), fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return save(fig, out_dir, NAME + "_tasks")


def short_name(task):
    """``"Japanese_(katakana) 90°"`` -> ``"Jap 90"``: tick labels that fit."""
    parts = task.replace("°", "").split(" ")
    return parts[0][:3] + ("" if len(parts) == 1 else " " + parts[-1])


def plot_sharing(meta, arrays, out_dir):
    L = len(meta["layers"]) - 1
    K = len(meta["tasks"])
    labels = [short_name(t) for t in meta["tasks"]]
    fig, axes = plt.subplots(1, L + 1, figsize=(2.9 * (L + 1) + 0.6, 3.3),
                             constrained_layout=True)
    for l in range(L):
        ax = axes[l]
        im = ax.imshow(correlation(arrays[f"S_learned_{l}"]), cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(f"layer {l + 1}: learned task correlation", fontsize=8)
        ax.set_xticks(range(K))
        ax.set_yticks(range(K))
        ax.set_xticklabels(labels, rotation=90, fontsize=6)
        ax.set_yticklabels(labels if l == 0 else [], fontsize=6)
    fig.colorbar(im, ax=axes[:L].tolist(), shrink=0.7)
    ax = axes[L]
    names = ["separate", "tied", "learned"]
    x = np.arange(len(names))
    tab = meta["table"]
    ax.bar(x - 0.2, [tab[n]["train_nll"] for n in names], 0.4, label="train")
    ax.bar(x + 0.2, [tab[n]["test_nll"] for n in names], 0.4, label="test")
    ax.set_xticks(x)
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylabel("mean per-task NLL")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"{K} tasks ({meta['dataset']})", fontsize=8)
    return save(fig, out_dir, NAME + "_sharing")


def plot(results_dir, out_dir):
    meta, arrays = load_results(results_dir, NAME)
    return plot_tasks(meta, arrays, out_dir) + plot_sharing(meta, arrays, out_dir)


def main(argv=None):
    return run_figure("multitask", __doc__, plot, argv)


if __name__ == "__main__":
    sys.exit(main())
