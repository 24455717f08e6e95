"""Information buffer figure from ``experiments.infobuffer`` results.

Left: bits stored per weight per step against log2(1/beta), with the
information bound.  Right: memory of exact reversal against storing the
trajectory and against sqrt(T) checkpointing as T grows.
"""

import sys


from experiments.common import load_results
from figures import figure_parser, save_figure


def plot(meta, arr):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.5, 4))
    x = arr["log2_inv_beta"]
    lim = [x.min() * 0.7, x.max() * 1.4]
    a1.plot(lim, lim, "-", color="0.6", lw=1, label=r"bound $\log_2(1/\beta)$")
    a1.plot(x, arr["measured_bits"], "o", color="C3", ms=5, label="measured (InfoBuffer)")
    for b, xi, yi in zip(arr["betas"], x, arr["measured_bits"]):
        a1.annotate(f"{b:g}", (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=7)
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel(r"$\log_2(1/\beta)$")
    a1.set_ylabel("bits stored per weight per step")
    a1.set_title(f"{meta['dataset']}, N = {meta['N']}, T = {meta['T_bits']} "
                 f"(max overhead {meta['max_overhead_percent']:.2f} %)", fontsize=9)
    a1.legend(fontsize=8)
    Ts = arr["Ts"]
    mb = 1.0 / 2 ** 20
    a2.plot(Ts, arr["trajectory_bytes"] * mb, "s-", label=r"store trajectory ($16NT$)")
    a2.plot(Ts, arr["checkpoint_bytes"] * mb, "^-", label=r"$\sqrt{T}$ checkpointing")
    a2.plot(Ts, arr["exact_bytes"] * mb, "o-", color="C3", label="exact reversal (allocated)")
    a2.plot(Ts, arr["exact_ideal_bytes"] * mb, "o--", color="C3", mfc="none",
            label="exact reversal (bits held)")
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.set_xlabel("training steps T")
    a2.set_ylabel("memory (MiB)")
    sizes = "-".join(str(s) for s in meta.get("memory_layer_sizes", meta["layer_sizes"]))
    a2.set_title(f"MLP {sizes}, N = {meta.get('N_memory', meta['N'])}, "
                 f"beta = {meta['beta_memory']}", fontsize=9)
    a2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv=None):
    args = figure_parser("infobuffer", __doc__.splitlines()[0]).parse_args(argv)
    meta, arr = load_results(args.results, "infobuffer")
    save_figure(plot(meta, arr), args.out, "infobuffer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
