"""PES's learning-rate-schedule task (Vicol et al. 2021, MNIST), graded against ground truth.

An MLP is trained by SGD with momentum for ``T`` steps with the
inverse-time-decay schedule of the PES code,

    alpha_t = exp(theta_0) / (1 + t / 5000) ** exp(theta_1),

``theta = (log initial rate, log decay power)``, from the paper's start
(initial rate 0.003 in the paper's ``v <- m v + g`` convention, decay power 30).
The meta-objective is the validation loss of ``w_T``.  Estimators of
``d f / d theta``, all at the theta level (2 hyperparameters, as in the paper):

* ``exact``: ``reversible.sgd(method="exact")`` (bit-exact reversal);
* ``smoothed``: ``E grad f(theta + sigma eps)`` from exact hypergradients
  (``reversible.smoothed``), with its standard error;
* ``es``: antithetic ES on ``theta`` over the whole run (particles stacked);
* ``pes``: PES on ``theta`` with truncations of ``K_pes`` steps (particles
  persistent, perturbations accumulated; terminal loss);
* ``truncated10``, ``truncated100``: backprop through the last K steps;
* ``drmad``: reverse along the straight line from ``w_0`` to ``w_T``.

Outputs: the meta-loss surface over theta (a grid, trained as one stacked
run), the exact hypergradient on a coarser grid, meta-optimisation
trajectories (Adam on theta) per estimator, and a graded table versus ``T``
(cosine and norm ratio against exact and against smoothed, time and peak
memory per estimate).  Deviations from the paper are listed in
``DEVIATIONS`` and written to the JSON.

    python -m experiments.pes_schedule --out results [--quick] [--mnist-dir DIR]
"""

import time
import tracemalloc

import autograd.numpy as anp
import numpy as np
from autograd import grad

from experiments.common import parse_experiment_args, save_results

NAME = "pes_schedule"
DECAY_SCALE = 5000.0
MOMENTUM = 0.9
# the paper's lr0 = 0.003 with v <- m v + g, w <- w - lr v equals alpha0 = lr0 / (1 - m) here
THETA0 = (float(np.log(0.003 / (1 - MOMENTUM))), float(np.log(30.0)))
DEVIATIONS = [
    "meta-objective: validation NLL of the final weights w_T (the paper: sum of training "
    "losses over the unroll); the exact hypergradient is of a function of w_T",
    "estimates are of the full-horizon gradient at fixed theta; PES here is its terminal-loss "
    "estimate over truncations (online PES, one theta update per truncation, is "
    "reversible.online.PersistentES and is not used for the trajectories)",
    "momentum convention v <- b v - (1 - b) g, w <- w + alpha v: the paper's initial rate 0.003 "
    "is alpha0 = 0.03 here (b = 0.9)",
    "data: MNIST's 10k test images split into train/validation (or the bundled 8x8 digits); "
    "a smaller MLP (see 'layer_sizes'), batch size 100, tanh",
    "fewer particles and meta-steps than the paper (1000 particles, 5000 outer steps), "
    "see 'settings'",
]


def schedule(theta, T):
    t = np.arange(T, dtype=np.float64)
    return anp.exp(theta[0]) / (1.0 + t / DECAY_SCALE) ** anp.exp(theta[1])


class Task:
    """The LR-schedule task at one horizon: losses, problem and the estimators of d f / d theta."""

    def __init__(self, data, T, hidden, batch_size, n_val, seed):
        from reversible import data as rdata
        from reversible import models
        train, val = rdata.split(data, (data.n - n_val, n_val), seed=seed)
        self.val = val
        self.layer_sizes = [data.d] + list(hidden) + [data.n_classes]
        self.train_loss = models.make_train_loss(train, self.layer_sizes, batch_size, seed=seed)
        self.w0 = models.init_mlp(self.layer_sizes, scale=0.1, seed=seed)
        self.T = int(T)
        self.betas = np.full(self.T, MOMENTUM)
        self._problem = None

    def val_loss(self, w):
        from reversible.models import nll
        return nll(w, self.val.X, self.val.y)

    def f(self, theta, method="exact", **options):
        from reversible import sgd
        w = sgd(self.train_loss, self.w0, schedule(theta, self.T), self.betas, None,
                method=method, **options)
        return self.val_loss(w)

    def gradient(self, theta, method="exact", **options):
        return np.asarray(grad(lambda th: self.f(th, method, **options))(np.asarray(theta, float)))

    # ------------------------------------------------------------ stacked particles
    def problem(self):
        if self._problem is None:
            from reversible.fixedpoint import DEFAULT_FRAC_BITS
            from reversible.problem import Problem
            from reversible.structure import Structure
            s = Structure(self.w0, "w0")
            self._structure = s
            G = s.num_groups
            self._problem = Problem.from_containers(
                self.train_loss, s, None, w0=np.asarray(s.flatten(self.w0), float),
                v0=np.zeros(s.size), alphas=np.zeros((self.T, G)),
                betas=np.tile(self.betas[:, None], (1, G)), meta=None, frac_bits=DEFAULT_FRAC_BITS)
        return self._problem

    def train_stack(self, alphas_rows, W=None, V=None, start=0, stop=None):
        """Train particles with per-particle schedules ``alphas_rows`` (P, stop - start)."""
        from reversible.methods.es import train_particles
        p = self.problem()
        stop = self.T if stop is None else stop
        P = alphas_rows.shape[0]
        W = np.tile(p.w0, (P, 1)) if W is None else W
        V = np.zeros_like(W) if V is None else V
        alphas = np.zeros((self.T, P, p.G))
        alphas[start:stop] = alphas_rows.T[:, :, None]
        betas = np.broadcast_to(p.effective_betas()[:, None, :], (self.T, P, p.G))
        return train_particles(p, alphas, betas, None, W, V, start, stop, "pes_schedule")

    def losses(self, W):
        return np.array([float(self.val_loss(self._structure.unflatten(w))) for w in W])

    def surface(self, thetas):
        """Validation loss at each row of ``thetas`` (one stacked run; NaN where it diverges)."""
        out = np.full(len(thetas), np.nan)
        rows = np.array([schedule(th, self.T) for th in thetas])
        W, _ = self._train_tolerant(rows)
        ok = np.all(np.isfinite(W), axis=1)
        out[ok] = self.losses(W[ok])
        return out

    def _train_tolerant(self, rows):
        from reversible.errors import NonFiniteError
        with np.errstate(all="ignore"):
            try:
                return self.train_stack(rows)
            except NonFiniteError:          # a diverging grid point: train one by one
                res = [self._one(r) for r in rows]
                return np.array([r[0] for r in res]), None

    def _one(self, row):
        from reversible.errors import NonFiniteError
        try:
            W, V = self.train_stack(row[None, :])
            return W[0], V[0]
        except NonFiniteError:
            return np.full(self.problem().N, np.nan), None

    def es(self, theta, sigma, particles, seed, K=None):
        """Antithetic ES (K None) or PES over truncations of K steps, on theta; terminal loss."""
        theta = np.asarray(theta, float)
        n = particles // 2
        rng = np.random.default_rng(seed)
        K = self.T if K is None else K
        W = V = None
        xi = np.zeros((n, 2))
        for start in range(0, self.T, K):
            stop = min(start + K, self.T)
            eps = rng.standard_normal((n, 2))
            xi += eps
            th = np.concatenate([theta + sigma * eps, theta - sigma * eps])
            rows = np.array([schedule(x, self.T)[start:stop] for x in th])
            W, V = self.train_stack(rows, W, V, start, stop)
        L = self.losses(W)
        samples = (0.5 * (L[:n] - L[n:]))[:, None] * xi / sigma       # one estimate per pair
        self.last_standard_error = samples.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else \
            np.full(2, np.nan)
        return samples.mean(axis=0)


def estimators(args):
    """name -> (function(task, theta, seed) -> gradient)."""
    from reversible.smoothed import smoothed_gradient
    return {
        "exact": lambda task, th, seed: task.gradient(th, "exact"),
        "smoothed": lambda task, th, seed: smoothed_gradient(
            lambda x: task.gradient(x, "exact"), th, args.sigma, args.smoothed_samples,
            seed).mean,
        "es": lambda task, th, seed: task.es(th, args.sigma, args.particles, seed),
        "pes": lambda task, th, seed: task.es(th, args.sigma, args.particles, seed,
                                              K=min(args.pes_K, task.T)),
        "truncated10": lambda task, th, seed: task.gradient(th, "truncated", K=min(10, task.T)),
        "truncated100": lambda task, th, seed: task.gradient(th, "truncated", K=min(100, task.T)),
        "drmad": lambda task, th, seed: task.gradient(th, "drmad"),
    }


def grade(g, ref):
    g, ref = np.asarray(g, float), np.asarray(ref, float)
    ng, nr = np.linalg.norm(g), np.linalg.norm(ref)
    return {"cosine": float(g @ ref / (ng * nr)) if ng * nr > 0 else 0.0,
            "norm_ratio": float(ng / nr) if nr > 0 else float("nan")}


def graded_table(args, data):
    from reversible.smoothed import smoothed_gradient
    est = estimators(args)
    rows = []
    for T in args.T:
        task = Task(data, T, args.hidden, args.batch_size, args.n_val, args.seed)
        theta = np.array(THETA0)
        task.gradient(theta, "exact")                         # warm-up (imports, JIT)
        grads, times, peaks, errors = {}, {}, {}, {}
        for name, fn in est.items():
            if name == "smoothed":
                t0 = time.perf_counter()
                sm = smoothed_gradient(lambda x: task.gradient(x, "exact"), theta, args.sigma,
                                       args.smoothed_samples, args.seed)
                times[name] = time.perf_counter() - t0
                grads[name], errors[name] = sm.mean, sm.standard_error
                peaks[name] = None
                continue
            t0 = time.perf_counter()
            task.last_standard_error = None
            grads[name] = fn(task, theta, args.seed)
            times[name] = time.perf_counter() - t0
            errors[name] = task.last_standard_error
            peaks[name] = None
            if args.memory:
                tracemalloc.start()
                try:
                    fn(task, theta, args.seed)
                    peaks[name] = tracemalloc.get_traced_memory()[1] / 2 ** 20
                finally:
                    tracemalloc.stop()
        for name in est:
            rows.append({"T": T, "estimator": name, "gradient": grads[name],
                         "standard_error": errors.get(name),
                         "vs_exact": grade(grads[name], grads["exact"]),
                         "vs_smoothed": grade(grads[name], grads["smoothed"]),
                         "seconds": times[name], "peak_mb": peaks[name]})
        print(f"T={T}: " + ", ".join(f"{r['estimator']} cos {r['vs_exact']['cosine']:+.3f}"
                                     for r in rows[-len(est):]))
    return rows


def surface_and_field(args, data, T):
    task = Task(data, T, args.hidden, args.batch_size, args.n_val, args.seed)
    a = np.linspace(*args.grid_log_lr, args.grid)
    d = np.linspace(*args.grid_log_decay, args.grid)
    thetas = np.array([(x, y) for y in d for x in a])
    loss = task.surface(thetas).reshape(args.grid, args.grid)
    fa = np.linspace(*args.grid_log_lr, args.field)
    fd = np.linspace(*args.grid_log_decay, args.field)
    field = np.full((args.field, args.field, 2), np.nan)
    from tqdm.auto import tqdm
    points = [(j, i, y, x) for j, y in enumerate(fd) for i, x in enumerate(fa)]
    from reversible.errors import ReversibleError
    for j, i, y, x in tqdm(points, desc="exact hypergradient field", disable=args.quick):
        try:
            with np.errstate(all="ignore"):
                g = task.gradient(np.array([x, y]), "exact")
            field[j, i] = g if np.all(np.isfinite(g)) else np.nan
        except (ReversibleError, FloatingPointError, OverflowError):
            pass                  # training diverges at this point: left NaN, counted in the JSON
    return {"log_lr": a, "log_decay": d, "loss": loss, "field_log_lr": fa,
            "field_log_decay": fd, "field": field}


def trajectories(args, data, T):
    task = Task(data, T, args.hidden, args.batch_size, args.n_val, args.seed)
    from tqdm.auto import tqdm
    out = {}
    for name, fn in tqdm(list(estimators(args).items()), desc="trajectories", disable=args.quick):
        theta = np.array(THETA0)
        m, v = np.zeros(2), np.zeros(2)
        path, losses = [theta.copy()], []
        for k in range(args.meta_steps):
            g = fn(task, theta, args.seed + 1000 * k)
            if not np.all(np.isfinite(g)):
                break
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            theta = theta - args.meta_lr * (m / (1 - 0.9 ** (k + 1))) / (
                np.sqrt(v / (1 - 0.999 ** (k + 1))) + 1e-8)
            path.append(theta.copy())
        for th in path:
            with np.errstate(all="ignore"):
                losses.append(float(task.f(th, "checkpointed")))
        out[name] = {"theta": np.array(path), "loss": np.array(losses)}
    return out


def add_arguments(p):
    p.add_argument("--T", type=int, nargs="+", default=None,
                   help="horizons of the graded table (default 100 1000 5000; --quick 8 24)")
    p.add_argument("--surface-T", type=int, default=None, help="horizon of the surface and "
                   "trajectories (default 1000; --quick 12)")
    p.add_argument("--hidden", type=int, nargs="*", default=None,
                   help="hidden layer sizes (default 50; --quick 8)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--n-val", type=int, default=None, help="validation examples (default 2000; "
                   "--quick 300)")
    p.add_argument("--sigma", type=float, default=0.1, help="ES / PES / smoothing scale on theta")
    p.add_argument("--particles", type=int, default=None, help="ES / PES particles "
                   "(default 100; --quick 4)")
    p.add_argument("--smoothed-samples", type=int, default=None,
                   help="exact hypergradients averaged by the smoothed reference (default 16; "
                   "--quick 2)")
    p.add_argument("--pes-K", type=int, default=10, help="PES truncation length")
    p.add_argument("--grid", type=int, default=None, help="surface grid per axis (default 25; "
                   "--quick 3)")
    p.add_argument("--field", type=int, default=None, help="exact-hypergradient grid per axis "
                   "(default 7; --quick 2)")
    p.add_argument("--grid-log-lr", type=float, nargs=2, default=(-7.0, 1.0))
    p.add_argument("--grid-log-decay", type=float, nargs=2, default=(-3.0, 5.0))
    p.add_argument("--meta-steps", type=int, default=None, help="Adam steps per trajectory "
                   "(default 30; --quick 2)")
    p.add_argument("--meta-lr", type=float, default=0.1)
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="skip the second, tracemalloc-traced run of each estimator")


def resolve(args):
    q = args.quick
    defaults = {"T": [8, 24] if q else [100, 1000, 5000], "surface_T": 12 if q else 1000,
                "hidden": [8] if q else [50], "n_val": 300 if q else 2000,
                "particles": 4 if q else 100, "smoothed_samples": 2 if q else 16,
                "grid": 3 if q else 25, "field": 2 if q else 7, "meta_steps": 2 if q else 30}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def load_data(args):
    """MNIST from ``--mnist-dir`` or, by default, the user data folder (``reversible data
    download mnist``); with neither, or with ``--quick``, the bundled digits."""
    from reversible import data as rdata
    mnist_dir = args.mnist_dir
    if mnist_dir is None and not args.quick:
        mnist_dir = rdata.downloaded("mnist")
    if mnist_dir is None:
        return rdata.load_dataset("digits"), "bundled digits"
    n = 2000 if args.quick else None
    return rdata.load_dataset("mnist", mnist_dir=mnist_dir, n=n), str(mnist_dir)


def run(args):
    args = resolve(args)
    data, source = load_data(args)
    t0 = time.perf_counter()
    table = graded_table(args, data)
    t_table = time.perf_counter() - t0
    surf = surface_and_field(args, data, args.surface_T)
    t_surface = time.perf_counter() - t0 - t_table
    traj = trajectories(args, data, args.surface_T)
    t_total = time.perf_counter() - t0
    settings = {k: getattr(args, k) for k in ("T", "surface_T", "hidden", "batch_size", "n_val",
                                              "sigma", "particles", "smoothed_samples", "pes_K",
                                              "grid", "field", "meta_steps", "meta_lr", "quick")}
    meta = {"experiment": NAME, "settings": settings, "data": source, "n_examples": int(data.n),
            "theta0": THETA0, "momentum": MOMENTUM, "decay_scale": DECAY_SCALE,
            "deviations": DEVIATIONS, "table": table,
            "trajectories": {k: {"theta": v["theta"], "loss": v["loss"]} for k, v in traj.items()},
            "seconds": {"table": t_table, "surface": t_surface, "total": t_total},
            "field_nonfinite": int(np.sum(~np.isfinite(surf["field"][..., 0])))}
    arrays = {k: v for k, v in surf.items()}
    path = save_results(args.out, NAME, meta, arrays)
    print(f"wrote {path} ({t_total:.0f} s)")
    return meta


def main(argv=None):
    args = parse_experiment_args(NAME, __doc__, add_arguments, argv)
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def tables(meta):
    """Markdown tables for docs/long-horizons.md: ``{"pes_schedule": text}``."""
    lines = ["| T | estimator | cos vs exact | norm ratio vs exact | cos vs smoothed | "
             "norm ratio vs smoothed | std. error / \\|exact\\| | seconds | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    exact = {r["T"]: np.linalg.norm(r["gradient"]) for r in meta["table"]
             if r["estimator"] == "exact"}
    for r in meta["table"]:
        peak = "-" if r.get("peak_mb") is None else f"{r['peak_mb']:.3g}"
        se = r.get("standard_error")
        if se is not None:
            se = np.linalg.norm(np.asarray(se, dtype=float)) / exact[r["T"]]
        se = "-" if se is None else f"{se:.2g}"
        lines.append(f"| {r['T']} | {r['estimator']} | {r['vs_exact']['cosine']:+.3f} | "
                     f"{r['vs_exact']['norm_ratio']:.3g} | {r['vs_smoothed']['cosine']:+.3f} | "
                     f"{r['vs_smoothed']['norm_ratio']:.3g} | {se} | {r['seconds']:.3g} | {peak} |")
    s = meta["settings"]
    data = "MNIST" if "mnist" in meta["data"].lower() else meta["data"]
    note = (f"{data} ({meta['n_examples']} images, {s['n_val']} for validation), "
            f"hidden {s['hidden']}, sigma {s['sigma']}, {s['particles']} ES/PES particles, PES K = "
            f"{s['pes_K']}, smoothed reference from {s['smoothed_samples']} exact hypergradients"
            f"{' (quick mode)' if s['quick'] else ''}; whole run {meta['seconds']['total']:.0f} s "
            "on a shared machine. Source: docs/results/pes_schedule.json, written by "
            "`python -m experiments.pes_schedule` with these settings.")
    for extra in meta.get("extra_runs", []):      # rows added from a later run of the same settings
        note += (f" Rows T = {', '.join(str(T) for T in extra['T'])}: a separate run of the same "
                 f"settings ({extra['seconds']:.0f} s for the table{'' if extra['memory'] else ', no peak-memory pass'}): "
                 f"`{extra['command']}`.")
    return {NAME: "\n".join(lines) + f"\n\n<sub>{note}</sub>"}
