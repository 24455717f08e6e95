"""Figure: time (CPU seconds where recorded) and peak memory of every hypergradient method against T (log-log).

    python -m figures.approx_cost --results results --out docs/figures
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.common import load_results  # noqa: E402
from figures import run_figure  # noqa: E402
from figures.approx_horizon import save  # noqa: E402

NAME = "approx_cost"


def series(meta, label, key):
    Ts, vals = [], []
    for r in meta["results"]:
        row = next((x for x in r["rows"] if x["method"] == label), None)
        if row and not row.get("error") and row.get(key) is not None:
            Ts.append(r["T"])
            vals.append(row[key])
    return np.array(Ts), np.array(vals)


def plot(results_dir, out_dir):
    meta, _ = load_results(results_dir, NAME)
    labels = [row["method"] for row in meta["results"][0]["rows"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    markers = "os^vD<>pX*h"
    # CPU seconds when recorded: less sensitive than wall time to other load on the machine
    has_cpu = any(row.get("cpu_seconds") for r in meta["results"] for row in r["rows"])
    time_key = "cpu_seconds" if has_cpu else "seconds"
    for i, label in enumerate(labels):
        for ax, key in zip(axes, (time_key, "peak_mb")):
            T, y = series(meta, label, key)
            ax.plot(T, y, marker=markers[i % len(markers)], ls="-" if i < 8 else "--", label=label)
    axes[0].set(xscale="log", yscale="log", xlabel="training steps T",
                ylabel=f"{'CPU' if has_cpu else 'wall'} time of training + hypergradient (s)",
                title="time")
    axes[1].set(xscale="log", yscale="log", xlabel="training steps T",
                ylabel="peak traced memory (MiB)", title="memory")
    axes[1].legend(fontsize=7, ncol=2)
    N = meta["results"][0].get("N")
    fig.suptitle(f"MLP {meta['layer_sizes']} on digits (N = {N} weights), batch "
                 f"{meta['batch_size']}", fontsize=9)
    fig.tight_layout()
    return save(fig, out_dir, NAME)


def main(argv=None):
    return run_figure("approx_cost", __doc__, plot, argv)


if __name__ == "__main__":
    sys.exit(main())
