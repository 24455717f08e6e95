"""Information buffer: bits stored per weight per step, and memory against T.

1. For a range of momenta beta, train logistic regression with
   ``reversible.sgd`` (exact method, then the reverse pass) and record the
   buffer's bits per element per step against the information bound
   ``log2(1/beta)`` (for the quantised beta ``n / 2**32``: ``log2(2**32 / n)``).
2. For growing T at one beta, record the memory of exact reversal (the final
   fixed-point state plus the buffer as allocated) against storing the whole
   trajectory (``8 * 2 * N * T`` bytes) and against sqrt(T) checkpointing
   (``16 N (ceil(T / k) + k)`` bytes with ``k = ceil(sqrt(T))``).

    python -m experiments.infobuffer --out results
"""

import argparse
import math
import sys

import numpy as np
from tqdm.auto import tqdm

from experiments.common import add_common_arguments, load_data_from_args, save_results

NAME = "infobuffer"
DEFAULT_BETAS = [0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999]


def add_arguments(parser):
    add_common_arguments(parser)
    parser.add_argument("--betas", type=float, nargs="+", default=DEFAULT_BETAS,
                        help="momenta of the bits sweep")
    parser.add_argument("--T", type=int, default=500, help="steps per run of the bits sweep")
    parser.add_argument("--Ts", type=int, nargs="+", default=[10, 30, 100, 300, 1000, 3000],
                        help="training lengths of the memory sweep")
    parser.add_argument("--beta", type=float, default=0.9, help="momentum of the memory sweep")
    parser.add_argument("--mem-hidden", type=int, nargs="*", default=[200, 50],
                        help="hidden widths of the MLP of the memory sweep (none: logistic)")
    parser.add_argument("--alpha", type=float, default=0.1, help="learning rate")
    parser.add_argument("--batch", type=int, default=50, help="batch size")
    parser.add_argument("--n-train", type=int, default=1000, help="training examples")
    return parser


def quick_settings(args):
    """Shrink ``args`` in place to a smoke test that runs in seconds."""
    args.betas, args.T, args.Ts, args.n_train = [0.3, 0.9, 0.99], 20, [5, 20], 200
    args.mem_hidden = []


def trajectory_bytes(N, T):
    """Bytes to store w and v (float64) at every step: ``8 * 2 * N * T``."""
    return 16.0 * N * T


def checkpoint_bytes(N, T):
    """Bytes of sqrt(T) checkpointing: ``ceil(T/k)`` stored states plus one recomputed
    segment of ``k`` states, ``k = ceil(sqrt(T))``, each 16 N bytes."""
    k = max(1, math.ceil(math.sqrt(T)))
    return 16.0 * N * (math.ceil(T / k) + k)


def _train(loss, w0, T, alpha, beta, reverse):
    """One exact run; returns its stats (with the reverse pass if ``reverse``)."""
    from autograd import grad

    import reversible
    from reversible.models import nll  # noqa: F401  (keeps the import cost out of timings)
    stats = {}
    alphas, betas = np.full(T, alpha), np.full(T, beta)
    if reverse:
        grad(lambda w: _sum_sq(reversible.sgd(loss, w, alphas, betas, stats=stats)))(w0)
    else:
        reversible.sgd(loss, w0, alphas, betas, stats=stats)
    return stats


def _sum_sq(ws):
    import autograd.numpy as anp
    return sum(anp.sum(w ** 2) for w in ws)


def run(args):
    """Run both sweeps; save ``infobuffer.json`` / ``infobuffer.npz`` in ``args.out``."""
    from reversible.buffer import ideal_bits, quantize_beta
    from reversible.models import init_mlp, make_train_loss
    if args.quick:
        quick_settings(args)
    data = load_data_from_args(args, n=None)
    data = data.subset(slice(0, min(args.n_train, data.n)))
    sizes = [data.d, data.n_classes]
    loss = make_train_loss(data, sizes, args.batch, seed=args.seed)
    w0 = init_mlp(sizes, scale=0.1, seed=args.seed)
    N = sum(w.size for w in w0)

    betas = np.array(args.betas, dtype=np.float64)
    measured, ideal, exact_flags, words = [], [], [], []
    for b in tqdm(betas, desc="bits per beta", leave=False):
        st = _train(loss, w0, args.T, args.alpha, float(b), reverse=True)
        measured.append(st["bits_per_element_step"])
        ideal.append(float(ideal_bits(quantize_beta(b))))
        exact_flags.append(bool(st.get("reversed_exactly", False)))
        words.append(st.get("buffer_words", 0))
    measured, ideal = np.array(measured), np.array(ideal)

    Ts = np.array(args.Ts, dtype=np.int64)
    mem_sizes = [data.d] + list(args.mem_hidden) + [data.n_classes]
    mem_loss = make_train_loss(data, mem_sizes, args.batch, seed=args.seed)
    mem_w0 = init_mlp(mem_sizes, scale=0.1, seed=args.seed)
    N_mem = sum(w.size for w in mem_w0)
    buf_bytes, buf_bits = [], []
    for T in tqdm(Ts, desc="memory per T", leave=False):
        st = _train(mem_loss, mem_w0, int(T), args.alpha, args.beta, reverse=False)
        buf_bytes.append(st["buffer_bytes"])
        buf_bits.append(st["buffer_bits"])
    buf_bytes, buf_bits = np.array(buf_bytes, dtype=np.float64), np.array(buf_bits)
    state = 16.0 * N_mem                         # fixed-point w and v (int64)
    arrays = {
        "betas": betas, "log2_inv_beta": np.log2(1.0 / betas), "ideal_bits": ideal,
        "measured_bits": measured, "Ts": Ts, "buffer_bytes": buf_bytes,
        "buffer_bits": buf_bits,
        "exact_bytes": state + buf_bytes, "exact_ideal_bytes": state + buf_bits / 8.0,
        "trajectory_bytes": np.array([trajectory_bytes(N_mem, int(T)) for T in Ts]),
        "checkpoint_bytes": np.array([checkpoint_bytes(N_mem, int(T)) for T in Ts]),
    }
    i9 = int(np.argmin(np.abs(betas - 0.9)))
    summary = {"experiment": NAME, "dataset": data.name, "layer_sizes": sizes, "N": N,
               "T_bits": args.T, "memory_layer_sizes": mem_sizes, "N_memory": N_mem, "alpha": args.alpha, "beta_memory": args.beta,
               "quick": args.quick, "reversed_exactly": all(exact_flags),
               "max_overhead_percent": float(100 * np.max(measured / ideal - 1.0)),
               "beta_closest_to_0.9": float(betas[i9]),
               "bits_at_beta_0.9": {"measured": float(measured[i9]), "ideal": float(ideal[i9])},
               "ratio_trajectory_over_exact_at_max_T": float(
                   arrays["trajectory_bytes"][-1] / arrays["exact_bytes"][-1]),
               "ratio_trajectory_over_ideal_buffer": 128.0 / float(measured[i9]),
               "tail_words": words}
    save_results(args.out, NAME, summary, arrays)
    return summary


def main(argv=None):
    parser = add_arguments(argparse.ArgumentParser(prog="python -m experiments.infobuffer",
                                                   description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    s = run(args)
    b = s["bits_at_beta_0.9"]
    print(f"infobuffer: {b['measured']:.6f} bits per element-step at beta "
          f"{s['beta_closest_to_0.9']} (ideal {b['ideal']:.6f}); max overhead "
          f"{s['max_overhead_percent']:.3f} %; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
