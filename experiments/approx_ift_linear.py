"""Inverse-Hessian approximations for implicit differentiation on ridge regression
(as in Lorraine, Vicol & Duvenaud 2020, Fig. 3), on scikit-learn's diabetes data.

Linear regression with one log-L2 penalty per weight is trained to convergence
with full-batch SGD-momentum; the hypergradient of the validation loss with
respect to the penalties is computed by ``neumann`` (i terms) and ``cg``
(i iterations) for a range of i, by ``identity``, and by ``exact`` (through
the actual training run), and graded against the closed-form IFT
hypergradient ``-H_{meta,w} H^{-1} dL_V/dw`` at the closed-form optimum.

    python -m experiments.approx_ift_linear --out results [--quick]
"""

import argparse
import sys

import autograd.numpy as anp
import numpy as np
from tqdm.auto import tqdm
from autograd import grad

from experiments.common import add_common_arguments, save_results

NAME = "approx_ift_linear"


def diabetes(seed=0, n_train=300):
    """Standardised diabetes features and target, split into train / validation."""
    from sklearn.datasets import load_diabetes
    X, y = load_diabetes(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    y = (y - y.mean()) / y.std()
    perm = np.random.default_rng(seed).permutation(len(y))
    tr, va = perm[:n_train], perm[n_train:]
    return X[tr], y[tr], X[va], y[va]


class Ridge:
    """``L_T(w, log_l2) = 0.5 mean((Xw - y)^2) + 0.5 sum(exp(log_l2) w^2)``, ``L_V`` without penalty."""

    def __init__(self, X, y, Xv, yv):
        self.X, self.y, self.Xv, self.yv = X, y, Xv, yv

    def train_loss(self, w, log_l2, t):
        return 0.5 * anp.mean((anp.dot(self.X, w) - self.y) ** 2) + 0.5 * anp.sum(anp.exp(log_l2) * w ** 2)

    def valid_loss(self, w):
        return 0.5 * anp.mean((anp.dot(self.Xv, w) - self.yv) ** 2)

    def hessian(self, log_l2):
        return self.X.T @ self.X / len(self.y) + np.diag(np.exp(log_l2))

    def optimum(self, log_l2):
        return np.linalg.solve(self.hessian(log_l2), self.X.T @ self.y / len(self.y))

    def ift_hypergradient(self, log_l2):
        """Closed form at the optimum: ``-(exp(log_l2) * w*) * H^{-1} dL_V/dw(w*)``."""
        w = self.optimum(log_l2)
        return -(np.exp(log_l2) * w) * np.linalg.solve(self.hessian(log_l2), grad(self.valid_loss)(w))


def hypergradient(problem, log_l2, T, alpha, beta, method, **options):
    import reversible

    def f(m):
        w = reversible.sgd(problem.train_loss, np.zeros(len(m)), np.full(T, alpha),
                           np.full(T, beta), m, method=method, **options)
        return problem.valid_loss(w)

    return grad(f)(log_l2)


def _grade(g, ref):
    """(cosine, l2 distance); the cosine of a zero vector is 0."""
    norm = np.linalg.norm(g) * np.linalg.norm(ref)
    return (float(g @ ref / norm) if norm > 0 else 0.0, float(np.linalg.norm(g - ref)))


def run(args):
    X, y, Xv, yv = diabetes(args.seed)
    problem = Ridge(X, y, Xv, yv)
    d = X.shape[1]
    log_l2 = np.log(np.full(d, args.l2))
    H = problem.hessian(log_l2)
    eig = np.linalg.eigvalsh(H)
    ref = problem.ift_hypergradient(log_l2)
    alpha, beta, T = args.alpha, args.beta, args.T
    iters = [0, 1, 2, 3, 5, 10] if args.quick else [0, 1, 2, 3, 5, 7, 10, 20, 50, 100, 200, 500, 1000]
    curves = {}
    for method, key in (("neumann", "terms"), ("cg", "iterations")):
        cos, dist, grads = [], [], []
        for i in tqdm(iters, desc=method, unit="setting", leave=False):
            g = hypergradient(problem, log_l2, T, alpha, beta, method, **{key: i})
            c, e = _grade(g, ref)
            cos.append(c)
            dist.append(e)
            grads.append(g)
            tqdm.write(f"{method:8s} i={i:5d}  cosine {c:+.6f}  l2 distance {e:.3e}")
        curves[method] = {"cosine": cos, "l2_distance": dist, "gradients": np.array(grads)}
    singles = {}
    for label, method, opts, horizon in [("identity", "identity", {}, T),
                                         (f"exact T={T}", "exact", {}, T),
                                         (f"exact T={T // 10}", "exact", {}, T // 10)]:
        g = hypergradient(problem, log_l2, horizon, alpha, beta, method, **opts)
        c, e = _grade(g, ref)
        singles[label] = {"cosine": c, "l2_distance": e, "T": horizon, "gradient": g}
        print(f"{label:14s} cosine {c:+.6f}  l2 distance {e:.3e}", flush=True)
    import reversible
    w_T = reversible.sgd(problem.train_loss, np.zeros(d), np.full(T, alpha), np.full(T, beta),
                         log_l2, method="exact")
    meta = {"experiment": NAME, "n_train": len(y), "n_valid": len(yv), "weights": d, "l2": args.l2,
            "alpha": alpha, "beta": beta, "T": T, "iterations": iters,
            "hessian_eigenvalues": eig, "neumann_step_times_max_eig": alpha * eig[-1],
            "distance_w_T_to_optimum": float(np.linalg.norm(w_T - problem.optimum(log_l2))),
            "reference_norm": float(np.linalg.norm(ref)),
            "neumann": {k: v for k, v in curves["neumann"].items() if k != "gradients"},
            "cg": {k: v for k, v in curves["cg"].items() if k != "gradients"},
            "single": {k: {kk: vv for kk, vv in v.items() if kk != "gradient"} for k, v in singles.items()}}
    arrays = {"reference": ref, "neumann_gradients": curves["neumann"]["gradients"],
              "cg_gradients": curves["cg"]["gradients"], "iterations": np.array(iters)}
    return save_results(args.out, NAME, meta, arrays)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--T", type=int, default=None, help="training steps (default 2000; quick 600)")
    parser.add_argument("--alpha", type=float, default=0.3, help="learning rate (and Neumann step)")
    parser.add_argument("--beta", type=float, default=0.9, help="momentum")
    parser.add_argument("--l2", type=float, default=0.1, help="initial L2 penalty of every weight")
    args = parser.parse_args(argv)
    if args.T is None:
        args.T = 600 if args.quick else 2000
    print("wrote", run(args))


if __name__ == "__main__":
    sys.exit(main())
