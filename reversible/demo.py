"""``reversible demo``: exact hypergradients of an MLP's training run on the bundled digits.

Hyperparameters, one entry per parameter array (weights and biases of each
layer are separate groups): learning-rate schedules ``exp(log_alpha[t, g])``,
momentum schedules ``logistic(logit_beta[t, g])``, initial scales
``exp(log_scale[g])`` (times fixed noise) and L2 strengths
``exp(log_l2[g])``.  The meta-objective is the validation loss after training.
"""

import json
import os
import time

import autograd.numpy as np
import numpy as onp
from autograd import grad

from .api import sgd
from .meta import optimize


def add_arguments(parser):
    parser.add_argument("--out", default="reversible-demo", help="output directory (default: %(default)s)")
    parser.add_argument("--layers", default="64,32,10", help="MLP layer sizes (default: %(default)s)")
    parser.add_argument("--T", type=int, default=100, help="training steps (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=100, help="minibatch size (default: %(default)s)")
    parser.add_argument("--meta-steps", type=int, default=15, help="meta-iterations (default: %(default)s)")
    parser.add_argument("--meta-lr", type=float, default=0.05, help="Adam step (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny settings (a few seconds)")


def _logistic(x):
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def build_problem(layers, T, batch, seed):
    """Digits split, the training loss, fixed init noise, initial hypers and the meta-objective."""
    from .data import load_digits, split
    from .models import init_mlp, make_train_loss, mlp_shapes, nll

    train, valid, test = split(load_digits(), (1000, 397, 400), seed=seed)
    shapes = mlp_shapes(layers)
    G = len(shapes)
    noise = init_mlp(layers, scale=1.0, seed=seed)
    train_loss = make_train_loss(train, layers, batch, seed=seed, l2="group")

    hypers0 = {
        "log_alpha": onp.full((T, G), onp.log(0.3)),
        "logit_beta": onp.full((T, G), onp.log(0.9 / 0.1)),
        "log_scale": onp.array([onp.log(1.0 / onp.sqrt(s[0])) if len(s) == 2 else onp.log(0.01)
                                for s in shapes]),
        "log_l2": onp.full(G, -6.0),
    }

    def train_run(h, method="exact", stats=None):
        w0 = [np.exp(h["log_scale"][g]) * noise[g] for g in range(G)]
        return sgd(train_loss, w0, np.exp(h["log_alpha"]), _logistic(h["logit_beta"]), h["log_l2"],
                   method=method, stats=stats)

    def meta_objective(h, i=0, method="exact", stats=None):
        return nll(train_run(h, method, stats), valid.X, valid.y)

    return dict(train=train, valid=valid, test=test, shapes=shapes, hypers0=hypers0,
                meta_objective=meta_objective, train_run=train_run)


def _agreement(g_exact, g_ref):
    rows = {}
    for k in g_exact:
        a, b = onp.ravel(g_exact[k]), onp.ravel(g_ref[k])
        rel = onp.linalg.norm(a - b) / max(onp.linalg.norm(b), 1e-300)
        cos = float(onp.dot(a, b) / max(onp.linalg.norm(a) * onp.linalg.norm(b), 1e-300))
        rows[k] = {"relative_error": float(rel), "cosine": cos}
    return rows


def main(args):
    if args.quick:
        args.T, args.meta_steps, args.layers = min(args.T, 20), min(args.meta_steps, 3), "64,16,10"
    layers = [int(s) for s in args.layers.split(",")]
    os.makedirs(args.out, exist_ok=True)
    p = build_problem(layers, args.T, args.batch, args.seed)
    h0 = p["hypers0"]
    N = sum(int(onp.prod(s)) for s in p["shapes"])
    print(f"MLP {layers} on the bundled digits: {N} weights in {len(p['shapes'])} groups, "
          f"T = {args.T} steps, batch {args.batch}")

    stats = {}
    t0 = time.perf_counter()
    g_exact = grad(p["meta_objective"])(h0, 0, "exact", stats)
    t_exact = time.perf_counter() - t0
    t0 = time.perf_counter()
    g_unrolled = grad(p["meta_objective"])(h0, 0, "unrolled")
    t_unrolled = time.perf_counter() - t0
    agree = _agreement(g_exact, g_unrolled)
    print("\nexact hypergradient vs autograd through the unrolled float64 loop:")
    for k, row in agree.items():
        print(f"  {k:11s} relative error {row['relative_error']:.2e}   cosine {row['cosine']:.12f}")
    print(f"  reversed bit for bit: {stats['reversed_exactly']}   "
          f"time exact {t_exact:.2f} s, unrolled {t_unrolled:.2f} s")
    bits, ideal = stats["bits_per_element_step"], stats["ideal_bits_per_element_step"]
    traj_bytes = 2 * 8 * N * args.T
    print(f"\ninformation buffer: {bits:.4f} bits per weight per step "
          f"(ideal log2(1/beta) = {ideal:.4f}, ratio {bits / ideal:.4f})")
    print(f"memory: buffer {stats['buffer_bits'] / 8 / 1024:.1f} KiB of information "
          f"({stats['buffer_bytes'] / 1024:.1f} KiB allocated) vs {traj_bytes / 1024:.1f} KiB to store "
          f"the trajectory (w and v in float64): {traj_bytes / max(stats['buffer_bytes'], 1):.0f}x less")

    print(f"\n{args.meta_steps} meta-iterations of Adam on the validation loss:")
    result = optimize(lambda h, i: p["meta_objective"](h, i), h0, args.meta_steps,
                      lr=args.meta_lr, progress=True)
    print(f"  validation loss {result.objectives[0]:.4f} -> {result.objectives[-1]:.4f} "
          f"(last evaluated iterate)")
    final = float(p["meta_objective"](result.hypers))
    print(f"  validation loss at the final hyperparameters: {final:.4f}")

    png = os.path.join(args.out, "learned_schedules.png")
    _plot_schedules(h0, result.hypers, p["shapes"], png)
    summary = {"layers": layers, "T": args.T, "weights": N, "agreement": agree,
               "reversed_exactly": bool(stats["reversed_exactly"]),
               "bits_per_element_step": bits, "ideal_bits_per_element_step": ideal,
               "buffer_bytes": stats["buffer_bytes"], "trajectory_bytes": traj_bytes,
               "seconds_exact": t_exact, "seconds_unrolled": t_unrolled,
               "meta": result.to_json(), "final_validation_loss": final}
    with open(os.path.join(args.out, "demo.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"\nwrote {png} and {os.path.join(args.out, 'demo.json')}")
    return 0


def _plot_schedules(h0, h1, shapes, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    names = [f"{'W' if len(s) == 2 else 'b'}{i // 2 + 1}" for i, s in enumerate(shapes)]
    colors = plt.cm.viridis(onp.linspace(0, 0.9, len(shapes)))
    for g, name in enumerate(names):
        axes[0].plot(onp.exp(h1["log_alpha"][:, g]), color=colors[g], label=name)
        axes[1].plot(1 / (1 + onp.exp(-h1["logit_beta"][:, g])), color=colors[g], label=name)
    axes[0].plot(onp.exp(h0["log_alpha"][:, 0]), "k--", lw=1, label="initial")
    axes[1].plot(1 / (1 + onp.exp(-h0["logit_beta"][:, 0])), "k--", lw=1, label="initial")
    axes[0].set(title="learning rate schedule", xlabel="step t", ylabel="alpha_t")
    axes[1].set(title="momentum schedule", xlabel="step t", ylabel="beta_t")
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
