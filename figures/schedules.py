"""Learned schedules figures from ``experiments.schedules`` results.

Writes ``schedules`` (learning-rate and momentum schedules per layer, initial
scales against 1/sqrt(fan-in)), ``schedules_curves`` (learning curves before
and after, meta-objective per meta-iteration) and ``schedules_smoothness``
(hypergradient wrt the schedule: one seed against the mean over seeds).
"""

import sys

import numpy as np

from experiments.common import load_results
from figures import figure_parser, save_figure


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _group_lines(ax, y, groups, ylabel, window):
    """One colour per layer (solid: weights, dotted: biases): the running mean over ``window``
    steps bold, the raw per-step values faint (Adam makes neighbouring steps zig-zag)."""
    from scipy.ndimage import uniform_filter1d
    plt = _plt()
    n_layers = len(groups) // 2
    cmap = plt.get_cmap("viridis")
    t = np.arange(1, y.shape[0] + 1)
    smooth = uniform_filter1d(y, window, axis=0, mode="nearest")
    for k, name in enumerate(groups):
        c = cmap((k // 2) / max(n_layers - 1, 1))
        ls = "-" if k % 2 == 0 else ":"
        ax.plot(t, y[:, k], ls, color=c, lw=0.6, alpha=0.25)
        ax.plot(t, smooth[:, k], ls, color=c, lw=2.0,
                label=("weights " if k % 2 == 0 else "biases ") + f"layer {k // 2 + 1}")
    ax.set_ylabel(ylabel)


def plot_schedules(meta, arr):
    """Learning rate and momentum schedules per array, and learned initial scales."""
    plt = _plt()
    groups = meta["groups"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    window = max(1, meta["T"] // 10)
    _group_lines(axes[0], np.exp(arr["log_alphas"]), groups, r"learning rate $\alpha_t$", window)
    _group_lines(axes[1], 1.0 / (1.0 + np.exp(-arr["logit_betas"])), groups,
                 r"momentum $\beta_t$", window)
    for ax in axes[:2]:
        ax.set_xlabel("training step t")
        ax.axhline(np.exp(meta["init"]["log_alpha"]) if ax is axes[0] else meta["init"]["beta"],
                   color="0.6", lw=0.6, ls="--")
        ax.set_title(f"running mean over {window} steps (bold), per step (faint)", fontsize=9)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=len(groups),
               fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.06))
    x = np.arange(len(groups))
    axes[2].bar(x - 0.2, meta["learned_scales"], 0.4, label="learned initial scale")
    axes[2].bar(x + 0.2, meta["inv_sqrt_fan_in"], 0.4, label=r"$1/\sqrt{\mathrm{fan\ in}}$")
    axes[2].axhline(np.exp(meta["init"]["log_scale"]), color="0.6", lw=0.6, ls="--")
    axes[2].set_xticks(x)
    axes[2].set_xticklabels(groups)
    axes[2].set_ylabel("initial scale")
    axes[2].legend(fontsize=7)
    sizes = "-".join(str(s) for s in meta["layer_sizes"])
    fig.suptitle(f"{meta['dataset']}, MLP {sizes}, T={meta['T']}: schedules after "
                 f"{meta['meta_steps']} meta-iterations (dashed grey: initial value)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_curves(meta, arr):
    """Training / validation NLL per step before and after, and the meta-objective."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    t = np.arange(arr["curve_train_before"].size)
    for tag, c in (("before", "C0"), ("after", "C3")):
        a1.plot(t, arr[f"curve_train_{tag}"], "-", color=c, label=f"training, {tag}")
        a1.plot(t, arr[f"curve_valid_{tag}"], "--", color=c, label=f"validation, {tag}")
    a1.set_yscale("log")
    a1.set_xlabel("training step t")
    a1.set_ylabel("NLL")
    a1.legend(fontsize=8)
    a1.set_title("learning curves (held-out seeds)", fontsize=9)
    a2.plot(np.arange(1, arr["objectives"].size + 1), arr["objectives"], ".-")
    a2.set_xlabel("meta-iteration")
    a2.set_ylabel(f"final {meta['objective']} NLL (meta-objective)")
    a2.set_yscale("log")
    a2.set_title("meta-optimisation (new seed each iteration)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_smoothness(meta, arr):
    """d loss / d alpha_t for the weights of each layer: one seed and the mean over seeds."""
    plt = _plt()
    g = arr["smooth_dalpha"]                    # (seeds, T, G)
    groups = meta["groups"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    w_groups = [k for k in range(len(groups)) if k % 2 == 0]
    cmap = plt.get_cmap("viridis")
    t = np.arange(1, g.shape[1] + 1)
    for j, k in enumerate(w_groups):
        c = cmap(j / max(len(w_groups) - 1, 1))
        axes[0].plot(t, g[0, :, k], color=c, lw=1, label=f"weights layer {j + 1}")
        axes[1].plot(t, g[:, :, k].mean(axis=0), color=c, lw=1)
    body = g[:, : max(1, int(0.9 * g.shape[1])), :][:, :, w_groups]
    span = 2.5 * max(np.abs(body.mean(axis=0)).max(), np.abs(body[0]).max(), 1e-12)
    if np.abs(g[:, :, w_groups]).max() > span:
        axes[0].set_ylim(-span, span)
        axes[1].text(0.02, 0.95, "y clipped: the last steps' gradients are larger",
                     transform=axes[1].transAxes, fontsize=7, va="top")
    axes[0].set_title("one seed", fontsize=9)
    axes[1].set_title(f"mean over {g.shape[0]} seeds", fontsize=9)
    for ax in axes:
        ax.axhline(0, color="0.6", lw=0.5)
        ax.set_xlabel("training step t")
    axes[0].set_ylabel(r"$\partial$ loss / $\partial \alpha_t$ (initial schedule)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv=None):
    args = figure_parser("schedules", __doc__.splitlines()[0]).parse_args(argv)
    meta, arr = load_results(args.results, "schedules")
    save_figure(plot_schedules(meta, arr), args.out, "schedules")
    save_figure(plot_curves(meta, arr), args.out, "schedules_curves")
    if "smooth_dalpha" in arr:
        save_figure(plot_smoothness(meta, arr), args.out, "schedules_smoothness")
    return 0


if __name__ == "__main__":
    sys.exit(main())
