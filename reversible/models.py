"""MLP and logistic-regression losses written with ``autograd.numpy``.

Parameters are a list ``[W1, b1, W2, b2, ...]`` (one parameter group per
array, the layout ``reversible.sgd`` expects); ``W_k`` has shape
``(d_{k-1}, d_k)`` and the input is a batch of rows, so a layer is one
``np.dot`` over the whole batch.  Everything is differentiable, in reverse
and forward mode, with respect to the parameters and also the inputs ``X``
(for learned training data).  Logistic regression is the MLP with
``layer_sizes = [d, classes]``.
"""

import autograd.numpy as np
import numpy as onp
from autograd.tracer import getval

from .data import Dataset, batch_indices

__all__ = ["mlp_shapes", "logistic_shapes", "init_mlp", "mlp_logprobs", "nll", "accuracy",
           "l2_penalty", "make_train_loss", "ACTIVATIONS"]

ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda a: np.maximum(a, 0.0),
    "sigmoid": lambda a: 0.5 * (np.tanh(0.5 * a) + 1.0),      # overflow-free logistic
}


def _check_layer_sizes(layer_sizes):
    sizes = list(layer_sizes)
    if len(sizes) < 2 or any(isinstance(s, bool) or not isinstance(s, (int, onp.integer)) or s < 1
                             for s in sizes):
        raise ValueError(f"layer_sizes must be >= 2 positive ints [inputs, ..., classes]; "
                         f"got {layer_sizes!r}")
    return [int(s) for s in sizes]


def mlp_shapes(layer_sizes):
    """Shapes ``[(d0, d1), (d1,), (d1, d2), (d2,), ...]`` of the MLP's parameter arrays."""
    sizes = _check_layer_sizes(layer_sizes)
    shapes = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        shapes += [(a, b), (b,)]
    return shapes


def logistic_shapes(d, classes):
    """Parameter shapes of multinomial logistic regression: ``[(d, classes), (classes,)]``."""
    return mlp_shapes([d, classes])


def init_mlp(layer_sizes, scale=0.1, seed=0):
    """Random parameters ``[W1, b1, ...]``, each ``scale * N(0, 1)`` (float64).

    ``scale`` is one float or a sequence with one entry per array (biases
    included).  Draws come from ``numpy.random.default_rng(seed)``.
    """
    shapes = mlp_shapes(layer_sizes)
    scales = onp.asarray(scale, dtype=onp.float64)
    if scales.ndim == 0:
        scales = onp.full(len(shapes), float(scales))
    elif scales.shape != (len(shapes),):
        raise ValueError(f"scale must be a float or have one entry per parameter array "
                         f"({len(shapes)}); got shape {scales.shape}")
    rng = onp.random.default_rng(seed)
    return [s * rng.standard_normal(shape) for s, shape in zip(scales, shapes)]


def _activation(name):
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


def mlp_logprobs(params, X, activation="tanh"):
    """Log class probabilities (n, classes): hidden layers use ``activation``, output log-softmax."""
    act = _activation(activation)
    if len(params) < 2 or len(params) % 2:
        raise ValueError(f"params must be [W1, b1, W2, b2, ...]; got {len(params)} arrays")
    h = X
    L = len(params) // 2
    for k in range(L):
        W, b = params[2 * k], params[2 * k + 1]
        if np.ndim(W) != 2 or np.shape(b) != (np.shape(W)[1],) or np.shape(h)[-1] != np.shape(W)[0]:
            raise ValueError(f"layer {k}: input width {np.shape(h)[-1]}, W shape {np.shape(W)}, "
                             f"b shape {np.shape(b)} do not fit (W must be (in, out), b (out,))")
        a = np.dot(h, W) + b
        h = act(a) if k < L - 1 else a
    # log-softmax; the shift is a constant (logsumexp is shift-invariant), so
    # it carries no derivative at any order.
    shift = onp.max(getval(h), axis=1, keepdims=True)
    z = h - shift
    return z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))


def _target_term(logp, y):
    """Mean of ``-log p(y)`` for int labels (n,) or of ``-sum(y * log p)`` for targets (n, C)."""
    y_val = getval(y)
    if onp.ndim(y_val) == 1:
        y_int = onp.asarray(y_val)
        if y_int.size and not onp.issubdtype(y_int.dtype, onp.integer):
            raise ValueError(f"1-D y must hold int labels; got dtype {y_int.dtype}")
        if y_int.shape[0] != np.shape(logp)[0]:
            raise ValueError(f"y has {y_int.shape[0]} labels for {np.shape(logp)[0]} inputs")
        return -np.mean(logp[onp.arange(y_int.shape[0]), y_int])
    if np.shape(y) != np.shape(logp):
        raise ValueError(f"targets must be int labels (n,) or probabilities {np.shape(logp)}; "
                         f"got shape {np.shape(y)}")
    return -np.mean(np.sum(y * logp, axis=1))


def nll(params, X, y, activation="tanh"):
    """Mean negative log-likelihood of labels ``y`` (int (n,), or one-hot / soft (n, classes))."""
    return _target_term(mlp_logprobs(params, X, activation), y)


def accuracy(params, X, y, activation="tanh"):
    """Fraction of rows whose most probable class is ``y`` (int labels or one-hot rows)."""
    logp = getval(mlp_logprobs([getval(p) for p in params], getval(X), activation))
    y = onp.asarray(getval(y))
    labels = y.argmax(axis=1) if y.ndim == 2 else y
    return float(onp.mean(logp.argmax(axis=1) == labels))


def l2_penalty(params, log_l2, mode):
    """``sum 0.5 * exp(log_l2) * w**2`` over all parameters.

    ``mode="group"``: ``log_l2`` has shape ``(G,)``, one entry per array;
    ``mode="weight"``: ``log_l2`` is a list of arrays shaped like ``params``.
    """
    G = len(params)
    if mode == "group":
        if np.shape(log_l2) != (G,):
            raise ValueError(f"l2 mode 'group' needs log_l2 of shape ({G},), one per parameter "
                             f"array; got {np.shape(log_l2)}")
        return sum(0.5 * np.exp(log_l2[i]) * np.sum(params[i] ** 2) for i in range(G))
    if mode == "weight":
        if not isinstance(getval(log_l2), (list, tuple)) or len(log_l2) != G or any(
                np.shape(l) != np.shape(p) for l, p in zip(log_l2, params)):
            raise ValueError("l2 mode 'weight' needs log_l2 as a list of arrays shaped like params "
                             f"{[np.shape(p) for p in params]}")
        return sum(0.5 * np.sum(np.exp(l) * p ** 2) for l, p in zip(log_l2, params))
    raise ValueError(f"unknown l2 mode {mode!r}; choose 'group' or 'weight'")


def make_train_loss(data, layer_sizes, batch_size, seed=0, activation="tanh", l2=None,
                    shuffle=True):
    """``train_loss(w, meta, t)`` for :func:`reversible.sgd`: minibatch NLL (+ L2 penalty).

    ``data`` is a :class:`~reversible.data.Dataset` or a pair ``(X, y)``.  The
    batch for step ``t`` is ``batch_indices(n, batch_size, seed, t, shuffle)``,
    so the loss is a pure function of ``(w, meta, t)``.  With ``l2`` ("group"
    or "weight") ``meta`` is the log-L2 in that mode (see :func:`l2_penalty`);
    with ``l2=None`` ``meta`` must be None.
    """
    if isinstance(data, Dataset):
        X, y = data.X, data.y
    else:
        try:
            X, y = data
        except (TypeError, ValueError):
            raise ValueError("data must be a Dataset or a pair (X, y)") from None
        X, y = onp.asarray(X, dtype=onp.float64), onp.asarray(y)
    sizes = _check_layer_sizes(layer_sizes)
    _activation(activation)
    if X.ndim != 2 or X.shape[1] != sizes[0]:
        raise ValueError(f"layer_sizes[0]={sizes[0]} must equal the number of features; "
                         f"X has shape {X.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
    if y.ndim == 1 and y.size and (y.min() < 0 or y.max() >= sizes[-1]):
        raise ValueError(f"labels span [{y.min()}, {y.max()}] but the output layer has "
                         f"{sizes[-1]} classes")
    if y.ndim == 2 and y.shape[1] != sizes[-1]:
        raise ValueError(f"targets have {y.shape[1]} columns but the output layer has {sizes[-1]}")
    if l2 not in (None, "group", "weight"):
        raise ValueError(f"l2 must be None, 'group' or 'weight'; got {l2!r}")
    n = X.shape[0]
    batch_indices(n, batch_size, seed, 0, shuffle)          # validates the batch arguments

    def train_loss(w, meta, t):
        idx = batch_indices(n, batch_size, seed, int(t), shuffle)
        loss = nll(w, X[idx], y[idx], activation)
        if l2 is None:
            if meta is not None:
                raise ValueError("this train_loss has no hyperparameters (l2=None) but got meta; "
                                 "build it with l2='group' or 'weight', or pass meta=None")
            return loss
        return loss + l2_penalty(w, meta, l2)

    return train_loss


class MLPClassifierProblem:
    """Tuning an MLP classifier's training run: hyperparameters -> validation loss after training.

    The network ``layer_sizes = [d, *hidden, classes]`` is trained by
    :func:`reversible.sgd` on ``train`` for ``T`` steps with deterministic
    minibatches (:func:`reversible.data.batch_indices`).  Hyperparameters, a
    dict with one entry per parameter array (group ``g``; weights and biases of
    a layer are separate groups):

    * ``log_alpha``, ``logit_beta``: learning rate ``exp(.)`` and momentum
      ``logistic(.)``, of shape ``(G,)`` (constant over the run) or ``(T, G)``
      (one value per step: a schedule); the logistic keeps every beta in (0, 1);
    * ``log_l2``: L2 penalty ``exp(.)`` per group, shape ``(G,)``;
    * ``log_init_scale``: ``w0[g] = exp(log_init_scale[g]) * noise[g]`` with
      fixed standard-normal ``noise`` drawn from ``seed``, shape ``(G,)``.

    :meth:`objective` is the validation NLL of ``w_T``; ``autograd.grad`` of it
    is the hypergradient computed by the chosen method.  Instances pickle by
    their constructor arguments, so process pools can use them.
    """

    #: forward-mode directions that span this parameterisation exactly
    FORWARD_BASIS = {"w0": "scale", "v0": None, "alphas": "groups", "betas": "groups",
                     "meta": "full"}

    def __init__(self, train, valid, T, hidden=(32,), batch_size=50, seed=0, activation="tanh"):
        T = int(T)
        if T < 1:
            raise ValueError(f"T must be a positive number of training steps; got {T}")
        self._args = (train, valid, T, tuple(hidden), batch_size, seed, activation)
        self.train_data, self.valid = train, valid
        self.layer_sizes = _check_layer_sizes([train.d] + list(hidden) + [train.n_classes])
        self.activation = activation
        self.train_loss = make_train_loss(train, self.layer_sizes, batch_size, seed=seed,
                                          activation=activation, l2="group")
        self.noise = init_mlp(self.layer_sizes, scale=1.0, seed=seed)
        self.shapes = [w.shape for w in self.noise]
        self.G = len(self.noise)
        self.N = int(sum(w.size for w in self.noise))
        self.T = T

    @classmethod
    def on_digits(cls, T, n_train=1000, n_valid=None, seed=0, **options):
        """The problem on scikit-learn's bundled digits: ``n_train`` examples to train on,
        ``n_valid`` (default: all the rest) to validate on, split by ``seed``."""
        from .data import load_digits, split
        digits = load_digits()
        if n_valid is None:
            n_valid = digits.n - int(n_train)
        train, valid = split(digits, (n_train, n_valid), seed=seed)[:2]
        return cls(train, valid, T, seed=seed, **options)

    def __reduce__(self):
        return (type(self), self._args)

    def group_names(self):
        """``W1, b1, W2, b2, ...``: one name per parameter array."""
        return [f"{'W' if len(s) == 2 else 'b'}{i // 2 + 1}" for i, s in enumerate(self.shapes)]

    def hypers0(self, alpha=0.2, beta=0.9, l2=1e-3, init_scale=0.1, schedule=False):
        """Starting hyperparameters: every group at ``alpha``, ``beta``, ``l2`` and ``init_scale``
        (a float, or one value per group); ``schedule=True`` gives per-step ``(T, G)`` alphas and betas."""
        G = self.G
        scale = onp.broadcast_to(onp.asarray(init_scale, dtype=onp.float64), (G,))
        if not (0 < beta < 1 and alpha > 0 and l2 > 0 and onp.all(scale > 0)):
            raise ValueError(f"need alpha > 0, 0 < beta < 1, l2 > 0 and init_scale > 0; got "
                             f"alpha={alpha}, beta={beta}, l2={l2}, init_scale={init_scale}")
        shape = (self.T, G) if schedule else (G,)
        return {"log_alpha": onp.full(shape, onp.log(alpha)),
                "logit_beta": onp.full(shape, onp.log(beta / (1 - beta))),
                "log_l2": onp.full(G, onp.log(l2)),
                "log_init_scale": onp.log(scale).copy()}

    def fan_in_scales(self, bias_scale=0.01):
        """Per-group initial scales ``1 / sqrt(fan_in)`` for weights and ``bias_scale`` for biases."""
        return [1.0 / onp.sqrt(s[0]) if len(s) == 2 else bias_scale for s in self.shapes]

    def weights(self, hypers, method="exact", stats=None):
        """``w_T``: train with ``hypers`` by ``method`` (a name or spec such as ``"truncated:K=10"``)."""
        from .api import sgd
        from .grading import method_kwargs
        kw = method_kwargs(method)
        if kw["method"] == "forward":
            kw.setdefault("basis", self.FORWARD_BASIS)
        ones = np.ones((self.T, 1))
        alphas = ones * np.exp(hypers["log_alpha"])
        betas = ones * (0.5 * (np.tanh(0.5 * hypers["logit_beta"]) + 1.0))
        w0 = [np.exp(hypers["log_init_scale"][g]) * self.noise[g] for g in range(self.G)]
        return sgd(self.train_loss, w0, alphas, betas, hypers["log_l2"], stats=stats, **kw)

    def objective(self, hypers, method="exact", stats=None):
        """Validation NLL after training: the meta-objective."""
        return nll(self.weights(hypers, method, stats), self.valid.X, self.valid.y, self.activation)

    def warmup_pair(self):
        """``(objective, hypers)`` of the same problem over 2 steps: a cheap untimed warm-up run."""
        train, valid, _, *rest = self._args
        short = type(self)(train, valid, 2, *rest)
        return short.objective, short.hypers0()
