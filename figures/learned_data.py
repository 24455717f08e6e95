"""Figure: ten learned training images, one per class (Maclaurin et al. 2015, Fig. 7).

    python -m figures.learned_data --results results --out docs/figures
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.common import load_results  # noqa: E402
from figures import run_figure  # noqa: E402
from figures.l2_per_weight import save  # noqa: E402

NAME = "learned_data"


def plot(results_dir, out_dir):
    meta, arrays = load_results(results_dir, NAME)
    imgs = arrays["images"]
    shape = tuple(meta["image_shape"])
    C = imgs.shape[0]
    fig, axes = plt.subplots(1, C, figsize=(1.0 * C + 0.4, 1.6), squeeze=False)
    lim = float(np.max(np.abs(imgs))) or 1.0
    for c, ax in enumerate(axes[0]):
        ax.imshow(imgs[c].reshape(shape), cmap="gray", vmin=-lim, vmax=lim)
        ax.set_title(str(c), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    lt = meta["learned"]["test"]["accuracy"]
    rt = meta["one_real_image_per_class"]["test"]["accuracy"]
    fig.suptitle(f"Learned training set ({meta['dataset']}): test accuracy {lt:.1%} "
                 f"(one real image per class: {rt:.1%})", fontsize=9)
    fig.tight_layout()
    return save(fig, out_dir, NAME)


def main(argv=None):
    return run_figure("learned_data", __doc__, plot, argv)


if __name__ == "__main__":
    sys.exit(main())
