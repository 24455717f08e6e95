"""Figure: mean |lam - lam*| over training on the quadratic benchmark, one line per method.

    python -m figures.online_quadratic --results results --out docs/figures
"""

import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.common import load_results  # noqa: E402
from figures import run_figure  # noqa: E402

NAME = "online_quadratic"


def plot(results_dir, out_dir):
    meta, arrays = load_results(results_dir, NAME)
    steps = arrays["trace_steps"]
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for key in sorted(k for k in arrays if k.startswith("lam_err_")):
        name = key[len("lam_err_"):]
        ax.semilogy(steps, arrays[key], label=name, lw=1.4,
                    ls="--" if name.startswith("clip") else "-")
    ax.axvline(meta["args"]["steps"][0], color="0.5", lw=0.8, ls=":")
    ax.set_xlabel("training step")
    ax.set_ylabel(r"mean $|\lambda - \lambda^*|$")
    ax.set_title(f"Quadratic (D={meta['args']['dim']}, {meta['args']['reps']} repetitions); "
                 f"eta {meta['args']['etas'][0]:g} then {meta['args']['etas'][1]:g}", fontsize=9)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{NAME}.png", out / f"{NAME}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=110)
    plt.close(fig)
    return paths


def main(argv=None):
    return run_figure("online_quadratic", __doc__, plot, argv)


if __name__ == "__main__":
    sys.exit(main())
