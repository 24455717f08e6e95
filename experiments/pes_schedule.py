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
trajectories (Adam on theta) per estimator and for PES run online (a theta
update per truncation, as in the paper), and a graded table versus ``T``
(cosine and norm ratio against exact and against smoothed, time and peak
memory per estimate).  Deviations from the paper are listed in
``DEVIATIONS`` and written to the JSON.

    python -m experiments.pes_schedule --out results [--quick] [--mnist-dir DIR]
"""

import time

import autograd.numpy as anp
import numpy as np
from autograd import grad

from experiments.common import parse_experiment_args, save_results, timed_with_peak_memory

NAME = "pes_schedule"
DECAY_SCALE = 5000.0
MOMENTUM = 0.9
# the paper's lr0 = 0.003 with v <- m v + g, w <- w - lr v equals alpha0 = lr0 / (1 - m) here
THETA0 = (float(np.log(0.003 / (1 - MOMENTUM))), float(np.log(30.0)))
DEVIATIONS = [
    "meta-objective: validation NLL of the final weights w_T (the paper: sum of training "
    "losses over the unroll); the exact hypergradient is of a function of w_T",
    "graded estimates are of the full-horizon gradient at fixed theta; PES there is its "
    "terminal-loss estimate over truncations. The 'pes_online' trajectory is PES as the paper "
    "runs it (a theta update after every truncation), whose objective is the sum of the "
    "validation losses at the truncation ends over an episode, not the final loss alone",
    "trajectories use fewer ES / PES particles and smoothing samples than the graded table "
    "(see 'traj_particles', 'traj_smoothed_samples') and the surface's horizon 'surface_T'",
    "peak memory is the growth of the process's resident memory during the one timed run "
    "(sampled every 2 ms), not a separate traced run",
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


class StackedMLPGradient:
    """The minibatch NLL gradient of a tanh MLP for particles stacked as rows of ``W``.

    The same numbers as the task's ``train_loss`` differentiated by autograd one
    particle at a time (the flat layout is ``[W1, b1, W2, b2, ...]`` raveled, as
    :class:`reversible.structure.Structure` lays out ``init_mlp``'s list), in a
    few batched matrix products: ES and PES train 100 particles in one pass.
    """

    def __init__(self, data, layer_sizes, batch_size, seed):
        from reversible.models import mlp_shapes
        self.X, self.y = np.asarray(data.X, float), np.asarray(data.y)
        self.batch_size, self.seed = batch_size, seed
        self.shapes = mlp_shapes(layer_sizes)
        self.offsets = np.cumsum([0] + [int(np.prod(s)) for s in self.shapes])

    def __call__(self, W, metas, t):
        from reversible.data import batch_indices
        idx = batch_indices(len(self.X), self.batch_size, self.seed, int(t), True)
        X, y = self.X[idx], self.y[idx]
        P, B = W.shape[0], len(idx)
        params = [W[:, a:b].reshape((P,) + s)
                  for a, b, s in zip(self.offsets[:-1], self.offsets[1:], self.shapes)]
        L = len(params) // 2
        hs = [X]                                        # layer inputs; X is shared (B, d)
        for k in range(L):
            a = np.matmul(hs[-1], params[2 * k]) + params[2 * k + 1][:, None, :]
            hs.append(np.tanh(a) if k < L - 1 else a)
        z = hs[-1] - hs[-1].max(axis=2, keepdims=True)
        p = np.exp(z)
        delta = p / p.sum(axis=2, keepdims=True)        # d mean NLL / d logits
        delta[:, np.arange(B), y] -= 1.0
        delta /= B
        out = np.empty_like(W)
        for k in reversed(range(L)):
            h = hs[k]
            hT = h.T if h.ndim == 2 else np.swapaxes(h, 1, 2)
            gW = np.matmul(hT, delta)
            a, b = self.offsets[2 * k], self.offsets[2 * k + 1]
            out[:, a:b] = gW.reshape(P, -1)
            out[:, b:self.offsets[2 * k + 2]] = delta.sum(axis=1)
            if k:
                delta = np.matmul(delta, np.swapaxes(params[2 * k], 1, 2)) * (1.0 - h * h)
        return out


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
        self.stacked_grad = StackedMLPGradient(train, self.layer_sizes, batch_size, seed)
        self.T = int(T)
        self.betas = np.full(self.T, MOMENTUM)
        self._problem = None
        self.last_standard_error = None          # of the last ES / PES estimate

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
        return train_particles(p, alphas, betas, None, W, V, start, stop, "pes_schedule",
                               stacked_grad=self.stacked_grad)

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

    def truncations(self, centre, sigma, n, rng, K):
        """PES's persistent antithetic pairs over one run of ``T`` steps in truncations of ``K``:
        each truncation draws fresh noise around ``centre()`` (called then, so an online
        optimiser may move it between truncations), accumulates it in ``xi`` ``(n, 2)`` and
        trains the ``2 n`` particles on; yields ``(W, xi)`` after each truncation."""
        W = V = None
        xi = np.zeros((n, 2))
        for start in range(0, self.T, K):
            stop = min(start + K, self.T)
            eps = rng.standard_normal((n, 2))
            xi += eps
            theta = centre()
            th = np.concatenate([theta + sigma * eps, theta - sigma * eps])
            rows = np.array([schedule(x, self.T)[start:stop] for x in th])
            W, V = self.train_stack(rows, W, V, start, stop)
            yield W, xi

    def pair_estimates(self, W, xi, sigma):
        """One ES / PES estimate of ``d f / d theta`` per antithetic pair ``(n, 2)``."""
        L = self.losses(W)
        n = xi.shape[0]
        return (0.5 * (L[:n] - L[n:]))[:, None] * xi / sigma

    def es(self, theta, sigma, particles, seed, K=None):
        """Antithetic ES (K None) or PES over truncations of K steps, on theta; terminal loss."""
        theta = np.asarray(theta, float)
        n = particles // 2
        K = self.T if K is None else K
        for W, xi in self.truncations(lambda: theta, sigma, n, np.random.default_rng(seed), K):
            pass
        samples = self.pair_estimates(W, xi, sigma)
        self.last_standard_error = samples.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else \
            np.full(2, np.nan)
        return samples.mean(axis=0)


def estimators(args, particles=None, smoothed_samples=None):
    """name -> (function(task, theta, seed) -> gradient); ``particles`` / ``smoothed_samples``
    default to the graded table's ``--particles`` / ``--smoothed-samples``."""
    from reversible.smoothed import smoothed_gradient
    P = args.particles if particles is None else particles
    S = args.smoothed_samples if smoothed_samples is None else smoothed_samples
    return {
        "exact": lambda task, th, seed: task.gradient(th, "exact"),
        "smoothed": lambda task, th, seed: smoothed_gradient(
            lambda x: task.gradient(x, "exact"), th, args.sigma, S, seed),
        "es": lambda task, th, seed: task.es(th, args.sigma, P, seed),
        "pes": lambda task, th, seed: task.es(th, args.sigma, P, seed, K=min(args.pes_K, task.T)),
        "truncated10": lambda task, th, seed: task.gradient(th, "truncated", K=min(10, task.T)),
        "truncated100": lambda task, th, seed: task.gradient(th, "truncated", K=min(100, task.T)),
        "drmad": lambda task, th, seed: task.gradient(th, "drmad"),
    }


def _value_and_error(task, out):
    """An estimator's gradient and standard error (the smoothed one returns both at once)."""
    if hasattr(out, "standard_error"):
        return np.asarray(out.mean, float), out.standard_error
    return np.asarray(out, float), task.last_standard_error


def grade(g, ref):
    g, ref = np.asarray(g, float), np.asarray(ref, float)
    ng, nr = np.linalg.norm(g), np.linalg.norm(ref)
    return {"cosine": float(g @ ref / (ng * nr)) if ng * nr > 0 else 0.0,
            "norm_ratio": float(ng / nr) if nr > 0 else float("nan")}


def graded_table(args, data):
    """Every estimator at ``THETA0`` for each horizon, graded against exact and smoothed; time
    and peak memory come from the same single run of each (see ``timed_with_peak_memory``)."""
    from tqdm.auto import tqdm
    est = estimators(args)
    rows = []
    for T in args.T:
        task = Task(data, T, args.hidden, args.batch_size, args.n_val, args.seed)
        theta = np.array(THETA0)
        task.gradient(theta, "exact")                         # warm-up (imports, JIT)
        task.es(theta, args.sigma, 2, args.seed, K=min(args.pes_K, T))
        grads, times, peaks, errors = {}, {}, {}, {}
        for name, fn in tqdm(list(est.items()), desc=f"graded table, T={T}", disable=args.quick):
            task.last_standard_error = None
            out, times[name], peaks[name] = timed_with_peak_memory(
                lambda: fn(task, theta, args.seed))
            grads[name], errors[name] = _value_and_error(task, out)
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


def _adam(state, g, lr, k):
    """One Adam step on theta (``state``: theta, m, v); ``k`` counts from 0."""
    theta, m, v = state
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    theta = theta - lr * (m / (1 - 0.9 ** (k + 1))) / (np.sqrt(v / (1 - 0.999 ** (k + 1))) + 1e-8)
    return theta, m, v


def trajectories(args, data, T):
    """Adam on theta from ``THETA0``, one full-horizon estimate per meta-step, per estimator
    (ES / PES with ``--traj-particles``, smoothed with ``--traj-smoothed-samples``), plus
    PES online (:func:`online_pes`); each path's losses come from one stacked run."""
    task = Task(data, T, args.hidden, args.batch_size, args.n_val, args.seed)
    from tqdm.auto import tqdm
    out = {}
    est = estimators(args, args.traj_particles, args.traj_smoothed_samples)
    for name, fn in tqdm(list(est.items()), desc="trajectories", disable=args.quick):
        state = (np.array(THETA0), np.zeros(2), np.zeros(2))
        path = [state[0].copy()]
        for k in range(args.meta_steps):
            g, _ = _value_and_error(task, fn(task, state[0], args.seed + 1000 * k))
            if not np.all(np.isfinite(g)):
                break
            state = _adam(state, g, args.meta_lr, k)
            path.append(state[0].copy())
        out[name] = {"theta": np.array(path)}
    out["pes_online"] = online_pes(task, args)
    for tr in out.values():
        with np.errstate(all="ignore"):
            tr["loss"] = task.surface(tr["theta"])
    return out


def online_pes(task, args):
    """PES as its paper uses it: particles persist across truncations of ``K`` steps, theta
    takes an Adam step (``--online-meta-lr``) after every truncation, from the PES estimate
    of that truncation's loss (validation loss at its end), and the particles restart from
    ``w_0`` after each episode of ``T`` steps.  Its objective is thus the sum of those
    losses over an episode, not the final loss alone (a deviation the JSON records)."""
    from reversible.errors import NonFiniteError
    K, sigma = min(args.pes_K, task.T), args.sigma
    n = max(args.traj_particles // 2, 1)
    rng = np.random.default_rng(args.seed)
    state = (np.array(THETA0), np.zeros(2), np.zeros(2))
    path, k = [state[0].copy()], 0
    try:
        for _ in range(args.online_episodes):
            with np.errstate(all="ignore"):
                for W, xi in task.truncations(lambda: state[0], sigma, n, rng, K):
                    g = task.pair_estimates(W, xi, sigma).mean(axis=0)
                    state = _adam(state, g, args.online_meta_lr, k)
                    k += 1
                    path.append(state[0].copy())
    except NonFiniteError:                  # a particle diverged: the path ends there
        pass
    return {"theta": np.array(path), "updates_per_episode": -(-task.T // K)}


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
    p.add_argument("--traj-particles", type=int, default=None, help="ES / PES particles per "
                   "trajectory step, online PES too (default 10; --quick 4)")
    p.add_argument("--traj-smoothed-samples", type=int, default=None, help="exact "
                   "hypergradients per smoothed trajectory step (default 4; --quick 2)")
    p.add_argument("--online-episodes", type=int, default=None, help="episodes of T steps "
                   "for online PES (default 3; --quick 1)")
    p.add_argument("--online-meta-lr", type=float, default=0.01,
                   help="Adam step on theta after each online-PES truncation")
    p.add_argument("--particle-study", type=int, nargs="+", default=None, metavar="P",
                   help="instead of the main run: ES and PES with each of these particle "
                   "counts at the horizons --T, written to pes_schedule_particles.json "
                   "(e.g. --T 1000 --particle-study 10 100 1000; 1000 is the paper's count)")


def resolve(args):
    q = args.quick
    defaults = {"T": [8, 24] if q else [100, 1000, 5000], "surface_T": 12 if q else 1000,
                "hidden": [8] if q else [50], "n_val": 300 if q else 2000,
                "particles": 4 if q else 100, "smoothed_samples": 2 if q else 16,
                "grid": 3 if q else 25, "field": 2 if q else 7, "meta_steps": 2 if q else 30,
                "traj_particles": 4 if q else 10, "traj_smoothed_samples": 2 if q else 4,
                "online_episodes": 1 if q else 3}
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


def particle_study(args, data):
    """ES and PES at each particle count of ``--particle-study`` (the paper used 1000), for
    each horizon of ``--T``, graded against the exact and smoothed hypergradients."""
    from tqdm.auto import tqdm
    rows = []
    for T in args.T:
        task = Task(data, T, args.hidden, args.batch_size, args.n_val, args.seed)
        theta = np.array(THETA0)
        est = estimators(args)
        ref = {name: _value_and_error(task, est[name](task, theta, args.seed))[0]
               for name in ("exact", "smoothed")}
        for P in tqdm(args.particle_study, desc=f"particle study, T={T}", disable=args.quick):
            for name, K in (("es", None), ("pes", min(args.pes_K, T))):
                g, seconds, peak = timed_with_peak_memory(
                    lambda: task.es(theta, args.sigma, P, args.seed, K=K))
                rows.append({"T": T, "estimator": name, "particles": P, "gradient": g,
                             "standard_error": task.last_standard_error,
                             "vs_exact": grade(g, ref["exact"]),
                             "vs_smoothed": grade(g, ref["smoothed"]),
                             "exact_norm": float(np.linalg.norm(ref["exact"])),
                             "seconds": seconds, "peak_mb": peak})
            print(f"T={T}, {P} particles: " + ", ".join(
                f"{r['estimator']} cos {r['vs_exact']['cosine']:+.3f}" for r in rows[-2:]))
    return rows


def run_particle_study(args):
    """``--particle-study``: writes ``pes_schedule_particles.json`` (the main results untouched)."""
    data, source = load_data(args)
    t0 = time.perf_counter()
    rows = particle_study(args, data)
    settings = {k: getattr(args, k) for k in ("T", "hidden", "batch_size", "n_val", "sigma",
                                              "smoothed_samples", "pes_K", "particle_study",
                                              "quick")}
    meta = {"experiment": NAME + "_particles", "settings": settings, "data": source,
            "n_examples": int(data.n), "theta0": THETA0, "rows": rows,
            "seconds": time.perf_counter() - t0}
    path = save_results(args.out, NAME + "_particles", meta)
    print(f"wrote {path} ({meta['seconds']:.0f} s)")
    return meta


def run(args):
    args = resolve(args)
    if args.particle_study:
        return run_particle_study(args)
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
                                              "grid", "field", "meta_steps", "meta_lr",
                                              "traj_particles", "traj_smoothed_samples",
                                              "online_episodes", "online_meta_lr", "quick")}
    meta = {"experiment": NAME, "settings": settings, "data": source, "n_examples": int(data.n),
            "theta0": THETA0, "momentum": MOMENTUM, "decay_scale": DECAY_SCALE,
            "deviations": DEVIATIONS, "table": table,
            "trajectories": traj,
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


def particle_table(meta):
    """Markdown table of a ``--particle-study`` run."""
    lines = ["| T | estimator | particles | cos vs exact | norm ratio vs exact | cos vs smoothed "
             "| std. error / \\|exact\\| | seconds | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in meta["rows"]:
        se = np.linalg.norm(np.asarray(r["standard_error"], dtype=float)) / r["exact_norm"]
        peak = "-" if r.get("peak_mb") is None else f"{r['peak_mb']:.3g}"
        lines.append(f"| {r['T']} | {r['estimator']} | {r['particles']} | "
                     f"{r['vs_exact']['cosine']:+.3f} | {r['vs_exact']['norm_ratio']:.3g} | "
                     f"{r['vs_smoothed']['cosine']:+.3f} | {se:.2g} | {r['seconds']:.3g} | "
                     f"{peak} |")
    s = meta["settings"]
    note = (f"Same task and settings as the table above (sigma {s['sigma']}, PES K = "
            f"{s['pes_K']}); whole run {meta['seconds']:.0f} s on a shared machine. Source: "
            "docs/results/pes_schedule_particles.json, written by `python -m "
            f"experiments.pes_schedule --T {' '.join(map(str, s['T']))} --particle-study "
            f"{' '.join(map(str, s['particle_study']))}`.")
    return "\n".join(lines) + f"\n\n<sub>{note}</sub>"


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
            f"{s['pes_K']}, smoothed reference from {s['smoothed_samples']} exact hypergradients; "
            "seconds and peak resident-memory growth from the same single run of each estimate"
            f"{' (quick mode)' if s['quick'] else ''}; whole run {meta['seconds']['total']:.0f} s "
            "on a shared machine. Source: docs/results/pes_schedule.json, written by "
            "`python -m experiments.pes_schedule` with these settings.")
    return {NAME: "\n".join(lines) + f"\n\n<sub>{note}</sub>"}
