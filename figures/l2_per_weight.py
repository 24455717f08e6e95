"""Figure: learned per-weight log-L2 penalties of logistic regression, one image per class
(Maclaurin et al. 2015, Fig. 6).

    python -m figures.l2_per_weight --results results --out docs/figures
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.common import load_results  # noqa: E402
from figures import run_figure  # noqa: E402
from figures import save_figure as save  # noqa: E402

NAME = "l2_per_weight"


def plot(results_dir, out_dir):
    meta, arrays = load_results(results_dir, NAME)
    L = arrays["log_l2_weights"]                        # (d, classes)
    shape = tuple(meta["image_shape"])
    C = L.shape[1]
    cols = min(C, 5)
    rows = int(np.ceil(C / cols))
    lo, hi = np.percentile(L, [1, 99])
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols + 0.8, 1.6 * rows + 0.4),
                             squeeze=False)
    for c, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if c >= C:
            ax.axis("off")
            continue
        im = ax.imshow(L[:, c].reshape(shape), cmap="viridis", vmin=lo, vmax=hi)
        ax.set_title(str(c), fontsize=9)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="learned log L2")
    a, b = meta["before"], meta["after"]
    fig.suptitle(f"Per-weight L2 ({meta['dataset']}, {meta['n_hyperparameters']} hypers): "
                 f"test NLL {a['test']['nll']:.3f} -> {b['test']['nll']:.3f}", fontsize=9)
    return save(fig, out_dir, NAME)


def main(argv=None):
    return run_figure("l2_per_weight", __doc__, plot, argv)


if __name__ == "__main__":
    sys.exit(main())
