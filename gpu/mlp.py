"""A multilayer perceptron written once for any array module (NumPy or CuPy).

:class:`MLP` gives the softmax cross-entropy training loss of a fully connected
network on a fixed data set, its gradient, and the joint product the reverse
pass needs, ``(g, H_ww u, H_meta,w u)``, by Pearlmutter's R-operator written
out by hand (no autodiff framework), so the same code runs on the CPU (tested
against autograd) and on the GPU.  ``grad`` and ``vjp`` compute ``g`` with the
same operations, so both give the same bits, as the exact reverse pass needs.

``meta``, if given, is a per-weight L2 coefficient vector: the loss gains
``0.5 * sum(meta * w**2)``.  Minibatches are a pure function of ``(seed, t)``:
batch ``t`` is ``perm[(t * B + j) % n]`` for a fixed permutation ``perm``.
"""

import numpy as np

from ._cupy import array_module

ACTIVATIONS = ("tanh", "relu")


class MLP:
    """Fully connected network ``sizes[0] -> ... -> sizes[-1]`` (logits), flat parameters.

    Parameters are laid out layer by layer as ``W_l`` (``(in, out)``, row-major)
    then ``b_l``; :meth:`group_index` gives one group per array.
    """

    def __init__(self, sizes, X, y, *, activation="tanh", batch_size=None, seed=0, dtype=None):
        self.xp = xp = array_module(X)
        self.sizes = [int(s) for s in sizes]
        if len(self.sizes) < 2 or min(self.sizes) < 1:
            raise ValueError(f"sizes must list at least two positive layer widths; got {sizes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}; got {activation!r}")
        self.activation = activation
        self.dtype = np.dtype(np.float64 if dtype is None else dtype)
        if X.ndim != 2 or X.shape[1] != self.sizes[0]:
            raise ValueError(f"X must have shape (n, {self.sizes[0]}); got {tuple(X.shape)}")
        if y.shape != (X.shape[0],):
            raise ValueError(f"y must hold one integer label per row of X; got shape {tuple(y.shape)}")
        self.X = xp.asarray(X, dtype=self.dtype)
        self.y = xp.asarray(y).astype(xp.int64)
        self.classes = xp.arange(self.sizes[-1])
        n = X.shape[0]
        self.batch_size = n if batch_size is None or batch_size >= n else int(batch_size)
        if self.batch_size < n:
            perm = np.random.Generator(np.random.Philox(key=int(seed))).permutation(n)
            self._perm = xp.asarray(perm)
            self._ar = xp.arange(self.batch_size)
        self.shapes = []
        for a, b in zip(self.sizes[:-1], self.sizes[1:]):
            self.shapes += [(a, b), (b,)]
        self.sizes_flat = [int(np.prod(s)) for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes_flat)]).astype(int)
        self.N = int(self.offsets[-1])

    # --------------------------------------------------------------- layout
    def group_index(self):
        """Group (array) number of every parameter: ``W_1, b_1, W_2, ...`` (NumPy int64)."""
        return np.repeat(np.arange(len(self.shapes)), self.sizes_flat).astype(np.int64)

    def unpack(self, w):
        """``[(W_1, b_1), ...]`` as views of the flat vector ``w``."""
        arrs = [w[self.offsets[i]:self.offsets[i + 1]].reshape(s) for i, s in enumerate(self.shapes)]
        return list(zip(arrs[0::2], arrs[1::2]))

    def init(self, scale=1.0, seed=0):
        """Weights ``N(0, scale**2 / fan_in)``, zero biases, as a float64 vector of this module."""
        rng = np.random.Generator(np.random.Philox(key=int(seed)))
        parts = []
        for s in self.shapes:
            parts.append(rng.standard_normal(s).ravel() * scale / np.sqrt(s[0]) if len(s) == 2
                         else np.zeros(s))
        return self.xp.asarray(np.concatenate(parts))

    def batch(self, t):
        """``(X_t, onehot(y_t))``: a pure function of the step ``t``."""
        if self.batch_size == self.X.shape[0]:
            X, y = self.X, self.y
        else:
            idx = self._perm[(int(t) * self.batch_size + self._ar) % self.X.shape[0]]
            X, y = self.X[idx], self.y[idx]
        return X, (y[:, None] == self.classes[None, :]).astype(self.dtype)

    # ------------------------------------------------------------ pieces
    def _phi(self, a):
        return self.xp.tanh(a) if self.activation == "tanh" else self.xp.maximum(a, 0)

    def _d1(self, a, h):
        return 1 - h * h if self.activation == "tanh" else (a > 0).astype(self.dtype)

    def _d2(self, a, h, d1):
        return -2 * h * d1 if self.activation == "tanh" else None

    def _forward(self, params, X):
        hs, acts = [X], []
        for l, (W, b) in enumerate(params):
            a = hs[-1] @ W + b
            if l == len(params) - 1:
                return hs, acts, a
            acts.append(a)
            hs.append(self._phi(a))

    def _softmax(self, z):
        xp = self.xp
        z = z - z.max(axis=1, keepdims=True)
        e = xp.exp(z)
        s = e.sum(axis=1, keepdims=True)
        return e / s, z - xp.log(s)

    def _flat(self, pairs):
        parts = []
        for dW, db in pairs:
            parts += [dW.ravel(), db.ravel()]
        return self.xp.concatenate(parts).astype(np.float64)

    def _grad_parts(self, w, t):
        """The data-term gradient and everything the R-operator reuses."""
        params = self.unpack(w.astype(self.dtype, copy=False))
        X, Y = self.batch(t)
        hs, acts, z = self._forward(params, X)
        p, logp = self._softmax(z)
        delta = (p - Y) / self.dtype.type(X.shape[0])
        deltas, dhs, d1s = [None] * len(params), [None] * len(params), [None] * len(params)
        grads = [None] * len(params)
        for l in range(len(params) - 1, -1, -1):
            deltas[l] = delta
            grads[l] = (hs[l].T @ delta, delta.sum(axis=0))
            if l > 0:
                dh = delta @ params[l][0].T
                d1 = self._d1(acts[l - 1], hs[l])
                dhs[l - 1], d1s[l - 1] = dh, d1
                delta = dh * d1
        ctx = dict(params=params, X=X, Y=Y, hs=hs, acts=acts, p=p, logp=logp,
                   deltas=deltas, dhs=dhs, d1s=d1s)
        return self._flat(grads), ctx

    # --------------------------------------------------------------- API
    def loss(self, w, meta, t):
        """Mean cross-entropy of batch ``t`` (+ ``0.5 * sum(meta * w**2)``), a float."""
        params = self.unpack(w.astype(self.dtype, copy=False))
        X, Y = self.batch(t)
        _, _, z = self._forward(params, X)
        _, logp = self._softmax(z)
        out = -float((Y * logp).sum()) / X.shape[0]
        if meta is not None:
            out += 0.5 * float((meta * w * w).sum())
        return out

    def grad(self, w, meta, t):
        """``dL/dw`` at ``(w, meta, t)``: float64, same shape as ``w``."""
        g, _ = self._grad_parts(w, t)
        if meta is not None:
            g = g + meta * w
        return g

    def vjp(self, w, meta, t, u):
        """``(g, H_ww u, H_meta,w u)`` (the last is None without ``meta``); ``H`` is symmetric."""
        g, c = self._grad_parts(w, t)
        params, hs, acts, deltas = c["params"], c["hs"], c["acts"], c["deltas"]
        U = self.unpack(u.astype(self.dtype, copy=False))
        L = len(params)
        # R-forward: R{a_l} = R{h_{l-1}} W_l + h_{l-1} U_l + c_l,  R{h_l} = phi'(a_l) R{a_l}
        Ras, Rhs = [], [None]
        for l in range(L):
            Ra = hs[l] @ U[l][0] + U[l][1]
            if l > 0:
                Ra = Ra + Rhs[l] @ params[l][0]
            if l < L - 1:
                Ras.append(Ra)
                Rhs.append(c["d1s"][l] * Ra)
            else:
                Rz = Ra
        p = c["p"]
        Rdelta = p * (Rz - (p * Rz).sum(axis=1, keepdims=True)) / self.dtype.type(hs[0].shape[0])
        Rgrads = [None] * L
        for l in range(L - 1, -1, -1):
            RdW = hs[l].T @ Rdelta
            if l > 0:
                RdW = RdW + Rhs[l].T @ deltas[l]
            Rgrads[l] = (RdW, Rdelta.sum(axis=0))
            if l > 0:
                Rdh = Rdelta @ params[l][0].T + deltas[l] @ U[l][0].T
                Rdelta = Rdh * c["d1s"][l - 1]
                d2 = self._d2(acts[l - 1], hs[l], c["d1s"][l - 1])
                if d2 is not None:
                    Rdelta = Rdelta + c["dhs"][l - 1] * d2 * Ras[l - 1]
        hu = self._flat(Rgrads)
        if meta is None:
            return g, hu, None
        return g + meta * w, hu + meta * u, w * u
