"""Chaos figure for Adam: final training loss and d loss / d log alpha against log alpha, one
curve per T, Adam beside SGD with momentum (from ``experiments.adam_chaos``)."""

import sys

import numpy as np

from experiments.common import load_results
from figures import run_figure, save_figure
from figures.chaos import symlog_axis


def plot(meta, arr):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex="col")
    cmap = plt.get_cmap("viridis")
    Ts = arr["Ts"]
    for col, (opt, title) in enumerate((("adam", "Adam (beta1 0.9, beta2 0.999)"),
                                        ("sgd", "SGD with momentum 0.9"))):
        la = arr[f"{opt}_log_alpha"]
        top, bottom = axes[0, col], axes[1, col]
        for k, T in enumerate(Ts):
            c = cmap(k / max(len(Ts) - 1, 1))
            top.plot(la, arr[f"{opt}_loss"][k], ".-", lw=0.8, ms=3, color=c, label=f"T = {T}")
            bottom.plot(la, arr[f"{opt}_grad"][k], ".-", lw=0.8, ms=3, color=c)
            onset = meta["onset_of_chaos"].get(f"{opt}_T{T}")
            if onset is not None and np.isfinite(onset):
                for ax in (top, bottom):
                    ax.axvline(onset, color=c, ls="--", lw=0.7)
        top.set_yscale("log")
        top.set_title(title, fontsize=9)
        top.legend(fontsize=8)
        symlog_axis(bottom, arr[f"{opt}_grad"].ravel(), clip=1e6)
        bottom.axhline(0, color="0.6", lw=0.5)
        bottom.set_xlabel(r"$\log\alpha$")
    axes[0, 0].set_ylabel("final training loss")
    axes[1, 0].set_ylabel(r"exact $\partial$ loss / $\partial\log\alpha$ (symlog)")
    sizes = "-".join(str(s) for s in meta["layer_sizes"])
    fig.suptitle(f"{meta['dataset']}, MLP {sizes}: dashed lines mark where the exact "
                 "hypergradient stops following the loss curve", fontsize=9)
    fig.tight_layout()
    return fig


def draw(results, out):
    meta, arr = load_results(results, "adam_chaos")
    return save_figure(plot(meta, arr), out, "adam_chaos")


def main(argv=None):
    return run_figure("adam_chaos", __doc__, draw, argv)


if __name__ == "__main__":
    sys.exit(main())
