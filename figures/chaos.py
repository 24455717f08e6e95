"""Chaos figure: final training loss and d loss / d log alpha against log learning rate.

Writes ``chaos.png/.pdf`` (the main sweep) and ``chaos_T.png/.pdf`` (one curve
per number of training steps T) from ``experiments.chaos`` results.
"""

import sys

import numpy as np

from experiments.common import load_results
from figures import figure_parser, save_figure


def symlog_axis(ax, g, clip=None):
    """Symmetric log y axis with decade ticks; ``clip`` caps |y| (for wild chaotic values)."""
    finite = np.abs(g[np.isfinite(g)])
    finite = finite[finite > 0]
    lo = 10.0 ** np.floor(np.log10(np.percentile(finite, 10))) if finite.size else 1e-3
    hi = finite.max() if finite.size else 1.0
    if clip is not None:
        hi = min(hi, clip)
    ax.set_yscale("symlog", linthresh=lo)
    d_lo, d_hi = int(np.log10(lo)), int(np.ceil(np.log10(max(hi, lo * 10))))
    step = max(1, int(np.ceil((d_hi - d_lo) / 3)))
    decades = list(range(d_lo, d_hi + 1, step))
    ticks = [-10.0 ** d for d in decades[::-1]] + [0.0] + [10.0 ** d for d in decades]
    ax.set_yticks(ticks)
    ax.set_yticklabels(["0" if t == 0 else f"{'-' if t < 0 else ''}1e{int(np.log10(abs(t)))}"
                        for t in ticks], fontsize=8)
    ax.set_ylim(-10.0 ** d_hi * 1.5, 10.0 ** d_hi * 1.5)


def plot_main(meta, arr):
    """Two stacked panels: loss and hypergradient of the main sweep."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    la, loss, grad = arr["log_alpha"], arr["loss"], arr["grad"]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True)
    a1.plot(la, loss, ".", ms=2, color="C0")
    a1.set_yscale("log")
    a1.set_ylabel("final training loss")
    a2.plot(la, grad, ".", ms=2, color="C3")
    symlog_axis(a2, grad)
    a2.axhline(0, color="0.6", lw=0.5)
    a2.set_ylabel(r"$\partial$ loss / $\partial \log\alpha$ (symlog)")
    a2.set_xlabel(r"$\log\alpha$ (learning rate)")
    onset = meta.get("onset_of_chaos")
    for ax in (a1, a2):
        if onset is not None and np.isfinite(onset):
            ax.axvline(onset, color="0.4", ls="--", lw=0.8)
    sizes = "-".join(str(s) for s in meta["layer_sizes"])
    a1.set_title(f"{meta['dataset']}, MLP {sizes}, T={meta['T']}, {meta['points']} points"
                 + (f" (onset ~ {onset:.2f})" if onset is not None else ""), fontsize=9)
    fig.tight_layout()
    return fig


def plot_T(meta, arr):
    """Loss and hypergradient against log alpha, one curve per T."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    la, Ts = arr["T_log_alpha"], arr["T_values"]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True)
    cmap = plt.get_cmap("viridis")
    for k, T in enumerate(Ts):
        c = cmap(k / max(len(Ts) - 1, 1))
        a1.plot(la, arr["T_loss"][k], "-", lw=0.8, color=c, label=f"T = {T}")
        a2.plot(la, arr["T_grad"][k], "-", lw=0.8, color=c)
    a1.set_yscale("log")
    a1.set_ylabel("final training loss")
    a1.legend(fontsize=8)
    symlog_axis(a2, arr["T_grad"].ravel(), clip=1e6)
    a2.set_ylabel(r"$\partial$ loss / $\partial \log\alpha$ (symlog)")
    a2.set_xlabel(r"$\log\alpha$ (learning rate)")
    a1.set_title(f"{meta['dataset']}: chaos sets in at smaller learning rates as T grows",
                 fontsize=9)
    fig.tight_layout()
    return fig


def main(argv=None):
    args = figure_parser("chaos", __doc__.splitlines()[0]).parse_args(argv)
    meta, arr = load_results(args.results, "chaos")
    save_figure(plot_main(meta, arr), args.out, "chaos")
    if "T_values" in arr:
        save_figure(plot_T(meta, arr), args.out, "chaos_T")
    return 0


if __name__ == "__main__":
    sys.exit(main())
