"""Figure: mean |lam - lam*| over training on the quadratic benchmark, one line per method.

    python -m figures.online_quadratic --results results --out docs/figures
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.common import load_results  # noqa: E402
from figures import run_figure, save_figure  # noqa: E402

NAME = "online_quadratic"


def plot(results_dir, out_dir):
    from reversible.grading import coinciding_groups
    meta, arrays = load_results(results_dir, NAME)
    steps = arrays["trace_steps"]
    curves = {key[len("lam_err_"):]: arrays[key] for key in arrays if key.startswith("lam_err_")}
    # methods that settle on the same curve (the short unrolls; clip with a huge radius and
    # clip5) share one colour and one legend entry ("=": identical, "~": within 10 %)
    fig, ax = plt.subplots(figsize=(7.8, 3.6))
    for i, group in enumerate(coinciding_groups(curves, rtol=0.1, atol=0.0)):
        identical = coinciding_groups({m: curves[m] for m in group}, rtol=1e-6, atol=0.0)
        label = " ~ ".join(" = ".join(same) for same in identical)
        color = plt.cm.tab10(i % 10)
        ls = "--" if group[0].startswith("clip") else "-"
        for m in group[1:]:
            ax.semilogy(steps, curves[m], lw=0.8, color=color, ls=ls, alpha=0.6)
        ax.semilogy(steps, curves[group[0]], lw=1.8, color=color, ls=ls, label=label)
    ax.axvline(meta["args"]["steps"][0], color="0.5", lw=0.8, ls=":")
    ax.text(meta["args"]["steps"][0], 1.0, " learning rate / 10", transform=ax.get_xaxis_transform(),
            va="top", fontsize=8, color="0.4")
    ax.set_xlabel("training step")
    ax.set_ylabel(r"mean $|\lambda - \lambda^*|$")
    ax.set_title(f"Quadratic (D={meta['args']['dim']}, {meta['args']['reps']} repetitions); "
                 f"eta {meta['args']['etas'][0]:g} then {meta['args']['etas'][1]:g}", fontsize=9)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False,
              title="method", title_fontsize=8)
    ax.grid(alpha=0.3, which="major")
    return save_figure(fig, out_dir, NAME, dpi=110)


def main(argv=None):
    return run_figure("online_quadratic", __doc__, plot, argv)


if __name__ == "__main__":
    sys.exit(main())
