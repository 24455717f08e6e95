"""Learned multitask weight sharing (Maclaurin et al. 2015, Figs. 8-9 and their table).

One MLP per task; tasks are Omniglot alphabets and rotated copies of them
(bundled-digits fallback: disjoint groups of digits with their own label
permutation, and rotated copies).  The weights of layer ``l`` of task ``k``
are ``W_k = sum_j S_l[k, j] Z_j``: latent weights ``Z`` are trained by exact
SGD with momentum (full batch, T = 50, alpha = 1, beta = 0.9, L2 on ``Z``)
and the per-layer sharing matrices ``S_l`` are hyperparameters, learned by
Adam on the mean validation NLL of the tasks.  ``S = I``: separate networks,
``S = ones / K`` fully tied weights (one network trained on the mean task
loss); the learned ``S`` starts at ``(1 - c) I + c ones / K``.  The
learned cross-task covariance of layer ``l`` is ``S_l S_l^T``.

    python -m experiments.multitask --omniglot-zip ../shared/data/omniglot --out results
"""

import time
from dataclasses import dataclass

import autograd.numpy as anp
import numpy as np

from experiments.common import load_data_from_args, parse_experiment_args, save_results

NAME = "multitask"

FULL = dict(n_alphabets=5, rotations="0,90", split="10,5,5", hidden="100,50", T=50, alpha=1.0,
            beta=0.9, log_l2=-4.0, init_log_scale=-2.0, init_sharing=0.5, meta_steps=9,
            meta_lr=0.05, digit_groups=3, image_size=28, time_budget=0.0)
QUICK = dict(n_alphabets=2, rotations="0,90", split="2,1,1", hidden="16", T=5, alpha=1.0,
             beta=0.9, log_l2=-4.0, init_log_scale=-2.0, init_sharing=0.5, meta_steps=2,
             meta_lr=0.02, digit_groups=2, image_size=28, time_budget=0.0)
SHARINGS = ("separate", "tied", "initial", "learned")


@dataclass
class Task:
    """One task's data: rows of images and labels in ``[0, n_classes)`` per split."""

    name: str
    X: dict          # split name -> (n, d)
    y: dict          # split name -> (n,)
    n_classes: int


HELP = dict(n_alphabets="Omniglot alphabets used (the first N by name)",
            rotations="comma-separated rotations in degrees; each alphabet x rotation is a task",
            split="drawings per character for train,valid,test",
            hidden="hidden layer sizes, comma-separated",
            log_l2="log of the L2 strength on the latent weights Z",
            init_sharing="initial S = (1-c) I + c ones/K",
            digit_groups="bundled-digits fallback: disjoint groups, each a task per rotation",
            image_size="Omniglot images are downsampled to this size",
            time_budget="stop the meta-optimisation after this many seconds (0: no limit)")


def add_arguments(parser):
    for key in FULL:
        what = HELP.get(key, key.replace("_", " "))
        parser.add_argument("--" + key.replace("_", "-"), type=type(FULL[key]), default=None,
                            help=f"{what}; default {FULL[key]} (quick: {QUICK[key]})")
    parser.add_argument("--alphabets", nargs="+", default=None,
                        help="Omniglot alphabet names (default: the first --n-alphabets)")
    return parser


def resolve(args):
    cfg = dict(QUICK if args.quick else FULL)
    cfg.update({k: getattr(args, k) for k in FULL if getattr(args, k, None) is not None})
    cfg["alphabets"] = getattr(args, "alphabets", None)
    return cfg


def _ints(text, what):
    try:
        vals = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers; got {text!r}") from None
    if not vals or any(v < 0 for v in vals):
        raise ValueError(f"{what} must be non-negative integers; got {text!r}")
    return vals


def rotate(X, shape, degrees):
    """Rotate every row-image of ``X`` (images of ``shape``) by a multiple of 90 degrees."""
    if degrees % 90:
        raise ValueError(f"rotations must be multiples of 90 degrees; got {degrees}")
    imgs = X.reshape((-1,) + tuple(shape))
    return np.rot90(imgs, k=(degrees // 90) % 4, axes=(1, 2)).reshape(X.shape[0], -1)


def _split_per_class(labels, counts, rng):
    """Indices per split: within each class, a random ``counts[0]`` / ``counts[1]`` / ... ."""
    parts = [[] for _ in counts]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) < sum(counts):
            raise ValueError(f"class {c} has {len(idx)} examples, fewer than split {counts}")
        start = 0
        for p, n in zip(parts, counts):
            p.extend(idx[start:start + n])
            start += n
    return [np.array(sorted(p), dtype=np.int64) for p in parts]


def omniglot_tasks(data, cfg, seed=0):
    """Tasks = alphabets x rotations; characters split per class into train / valid / test."""
    counts = _ints(cfg["split"], "split")
    rotations = _ints(cfg["rotations"], "rotations")
    names = cfg.get("alphabets") or data.alphabet_names[:cfg["n_alphabets"]]
    unknown = [a for a in names if a not in data.alphabet_names]
    if unknown:
        raise ValueError(f"unknown alphabets {unknown}; loaded: {data.alphabet_names}")
    rng = np.random.default_rng(seed)
    n_classes = max(int(data.character[data.alphabet == data.alphabet_names.index(a)].max()) + 1
                    for a in names)
    tasks = []
    for a in names:
        rows = np.flatnonzero(data.alphabet == data.alphabet_names.index(a))
        X, y = data.X[rows], data.character[rows]
        parts = _split_per_class(y, counts, rng)
        for r in rotations:
            Xr = rotate(X, data.image_shape, r)
            tasks.append(Task(f"{a}" + (f" {r}°" if r else ""),
                              {s: Xr[p] for s, p in zip(("train", "valid", "test"), parts)},
                              {s: y[p] for s, p in zip(("train", "valid", "test"), parts)},
                              n_classes))
    return tasks


def digit_tasks(data, cfg, seed=0):
    """Fallback tasks: disjoint groups of examples, each with its own label permutation
    (like alphabets), times rotations; each group is split 50 / 25 / 25 % per class."""
    rotations = _ints(cfg["rotations"], "rotations")
    groups = int(cfg["digit_groups"])
    rng = np.random.default_rng(seed)
    perm = rng.permutation(data.n)
    tasks = []
    for g in range(groups):
        rows = perm[g::groups]
        X, y = data.X[rows], rng.permutation(data.n_classes)[data.y[rows]]
        per_class = int(np.bincount(y, minlength=data.n_classes).min())
        n_tr = max(per_class // 2, 1)
        n_va = max(per_class // 4, 1)
        counts = [n_tr, n_va, max(per_class - n_tr - n_va, 1)]
        parts = _split_per_class(y, counts, rng)
        for r in rotations:
            Xr = rotate(X, data.image_shape, r)
            tasks.append(Task(f"group {g}" + (f" {r}°" if r else ""),
                              {s: Xr[p] for s, p in zip(("train", "valid", "test"), parts)},
                              {s: y[p] for s, p in zip(("train", "valid", "test"), parts)},
                              data.n_classes))
    return tasks


def tied_matrix(K):
    """``ones / K``: every task uses the same weights, the mean of the latent ``Z_j``.

    Each step then moves the shared weights by the mean of the task gradients:
    one network trained on the mean task loss at the same learning rate (the
    original code's fully correlated transform).
    """
    return np.full((K, K), 1.0 / K)


def sharing_matrix(K, mix):
    """``(1 - mix) I + mix * ones / K``: 0 = separate networks, 1 = fully tied."""
    return (1.0 - mix) * np.eye(K) + mix * np.full((K, K), 1.0 / K)


class MultitaskModel:
    """Per-task MLPs whose weights are shared across tasks through per-layer matrices S_l."""

    def __init__(self, tasks, hidden, log_l2, init_log_scale, seed=0):
        from reversible.models import mlp_shapes
        self.tasks = tasks
        self.K = len(tasks)
        d = tasks[0].X["train"].shape[1]
        self.layers = [d] + list(hidden) + [tasks[0].n_classes]
        self.shapes = mlp_shapes(self.layers)
        self.log_l2 = log_l2
        rng = np.random.default_rng(seed)
        scale = np.exp(init_log_scale)
        self.z0 = [scale * rng.standard_normal((self.K,) + s) for s in self.shapes]

    @property
    def n_layers(self):
        return len(self.layers) - 1

    def weights(self, z, S):
        """Per-array task weights ``(K, ...)``: layer l's weight and bias both use ``S[l]``."""
        return [anp.reshape(anp.dot(S[i // 2], anp.reshape(x, (self.K, -1))), anp.shape(x))
                for i, x in enumerate(z)]

    def task_params(self, params, k):
        return [p[k] for p in params]

    def task_nlls(self, z, S, split):
        from reversible.models import nll
        params = self.weights(z, S)
        return [nll(self.task_params(params, k), t.X[split], t.y[split])
                for k, t in enumerate(self.tasks)]

    def train_loss(self, z, S, t):
        reg = anp.exp(self.log_l2) * sum(anp.sum(x ** 2) for x in z)
        return sum(self.task_nlls(z, S, "train")) + reg

    def train(self, S, cfg):
        import reversible
        T = cfg["T"]
        return reversible.sgd(self.train_loss, self.z0, np.full(T, cfg["alpha"]),
                              np.full(T, cfg["beta"]), list(S))

    def scores(self, S, cfg):
        """Per-task NLL and accuracy on every split after training with sharing ``S``."""
        from reversible.models import accuracy
        S = [np.asarray(s) for s in S]
        z = [np.asarray(x) for x in self.train(S, cfg)]
        params = self.weights(z, S)
        out = {}
        for split in ("train", "valid", "test"):
            nlls = [float(v) for v in self.task_nlls(z, S, split)]
            accs = [accuracy(self.task_params(params, k), t.X[split], t.y[split])
                    for k, t in enumerate(self.tasks)]
            out[split] = {"nll": float(np.mean(nlls)), "accuracy": float(np.mean(accs)),
                          "nll_per_task": nlls, "accuracy_per_task": accs}
        return out


def covariance(S):
    """Cross-task covariance ``S S^T`` and the correlation matrix it implies."""
    C = np.asarray(S) @ np.asarray(S).T
    sd = np.sqrt(np.diag(C))
    return C, C / np.outer(sd, sd)


def run(data, cfg, seed=0, progress=True):
    """Compare separate / tied / learned sharing; returns ``(json_dict, arrays)``."""
    from reversible.meta import optimize
    if getattr(data, "alphabet_names", None):
        tasks = omniglot_tasks(data, cfg, seed)
    else:
        tasks = digit_tasks(data, cfg, seed)
    model = MultitaskModel(tasks, _ints(cfg["hidden"], "hidden"), cfg["log_l2"],
                           cfg["init_log_scale"], seed)
    K, L = model.K, model.n_layers
    S0 = [sharing_matrix(K, cfg["init_sharing"]) for _ in range(L)]

    def meta_objective(S, i):
        z = model.train(S, cfg)
        return sum(model.task_nlls(z, S, "valid")) / K

    t0 = time.perf_counter()

    def out_of_time(i, hypers, value, g):
        budget = cfg["time_budget"]
        return budget > 0 and time.perf_counter() - t0 > budget

    res = optimize(meta_objective, S0, cfg["meta_steps"], optimizer="adam", lr=cfg["meta_lr"],
                   progress=progress, callback=out_of_time)
    seconds = time.perf_counter() - t0
    # a stop by the time budget happens before the update: keep the last evaluated point
    learned = [np.asarray(s) for s in (res.hypers_history[-1] if res.stopped_early
                                       else res.hypers)]
    fixed = {"separate": [np.eye(K)] * L, "tied": [tied_matrix(K)] * L,
             "initial": S0, "learned": learned}
    results = {name: model.scores(fixed[name], cfg) for name in SHARINGS}
    table = {name: {"train_nll": r["train"]["nll"], "test_nll": r["test"]["nll"],
                    "train_accuracy": r["train"]["accuracy"],
                    "test_accuracy": r["test"]["accuracy"]}
             for name, r in results.items()}
    out = {"experiment": NAME, "dataset": data.name, "config": cfg, "seed": seed,
           "tasks": [t.name for t in tasks], "layers": model.layers,
           "n_latent_weights": int(sum(x.size for x in model.z0)),
           "examples_per_task": {s: [int(t.y[s].size) for t in tasks]
                                 for s in ("train", "valid", "test")},
           "table": table, "results": results, "meta": res.to_json(), "seconds": seconds}
    arrays = {"objectives": res.objectives}
    for l in range(L):
        arrays[f"S_learned_{l}"] = learned[l]
        arrays[f"S_initial_{l}"] = S0[l]
    arrays["examples"] = np.stack([t.X["train"][0] for t in tasks])
    arrays["image_shape"] = np.array(data.image_shape)
    return out, arrays


def main(argv=None):
    args = parse_experiment_args(NAME, __doc__, add_arguments, argv)
    cfg = resolve(args)
    if args.omniglot_zip:
        from reversible.data import load_omniglot
        data = load_omniglot(args.omniglot_zip, size=cfg["image_size"])
    else:
        data = load_data_from_args(args, kind="omniglot")
    out, arrays = run(data, cfg, seed=args.seed, progress=not args.quick)
    path = save_results(args.out, NAME, out, arrays)
    for name, row in out["table"].items():
        print(f"{name:>9}: train NLL {row['train_nll']:.3f}  test NLL {row['test_nll']:.3f}")
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
