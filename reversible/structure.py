"""Flatten containers of arrays to one vector and back, differentiably.

A :class:`Structure` remembers how a float array or a (possibly nested) list /
tuple / dict of float arrays is laid out; its ``flatten`` and ``unflatten``
are written with ``autograd.numpy`` so gradients flow through them, also when
autograd hands over a whole boxed container.  Each leaf array is one
parameter group, in depth-first container order (dict insertion order).
"""

import autograd.numpy as anp
import numpy as np
from autograd.extend import SparseObject, defjvp, defvjp, primitive, vspace
from autograd.tracer import getval

from .validate import real_array


@primitive
def _leaf(flat, start, stop, shape):
    """``flat[start:stop].reshape(shape)`` as one primitive (unflatten costs one op per leaf)."""
    return np.reshape(flat[start:stop], shape)


@primitive
def _scatter(x, start, stop, vs):
    """``x`` (raveled) placed at ``[start:stop]`` of a zero vector of ``vs``: the adjoint of _leaf.

    Returned as an autograd sparse object: autograd adds the groups' pieces into
    one full-size vector per gradient, so a gradient costs O(N), not O(N x G).
    """
    def add_into(out):
        out[start:stop] += np.ravel(x)
        return out
    return SparseObject(vs, add_into)


def _leaf_vjp(ans, flat, start, stop, shape):
    if start == 0 and stop == np.shape(flat)[0]:
        return lambda g: anp.reshape(g, (-1,))          # the leaf covers the whole vector
    vs = vspace(flat)
    return lambda g: _scatter(g, start, stop, vs)


# Both maps are linear, so each one's VJP and JVP is the other map or itself;
# this keeps gradients, forward-over-reverse and reverse-over-reverse products O(N).
defvjp(_leaf, _leaf_vjp)
defjvp(_leaf, lambda g, ans, flat, start, stop, shape: _leaf(g, start, stop, shape))
defvjp(_scatter, lambda ans, x, start, stop, vs: lambda g: _leaf(g, start, stop, np.shape(x)))
defjvp(_scatter, lambda g, ans, x, start, stop, vs: _scatter(g, start, stop, vs))


def _children(x):
    """``(kind, keys, children)`` of a container, or None for a leaf."""
    raw = getval(x)   # the container itself when autograd boxed it whole
    if isinstance(raw, dict):
        keys = list(raw.keys())
        return "dict", keys, [x[k] for k in keys]
    if isinstance(raw, (list, tuple)):
        return type(raw).__name__, None, [x[i] for i in range(len(raw))]
    return None


class Structure:
    """Layout of an array or a nested list / tuple / dict of arrays."""

    def __init__(self, example, name="w0"):
        self.name = name
        self.shapes, self.labels = [], []
        self.tree = self._describe(example, name)
        if not self.shapes:
            raise ValueError(f"{name} is an empty container; give at least one array")
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        self.size = int(self.offsets[-1])
        self._bounds = [(int(a), int(b)) for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def _describe(self, x, label):
        node = _children(x)
        if node is None:
            arr = real_array(x, label)
            self.shapes.append(arr.shape)
            self.labels.append(label)
            return ("array", arr.shape)
        kind, keys, children = node
        names = [f"{label}[{k!r}]" for k in keys] if keys is not None else \
            [f"{label}[{i}]" for i in range(len(children))]
        return (kind, keys, [self._describe(c, n) for c, n in zip(children, names)])

    @property
    def kind(self):
        return self.tree[0]

    @property
    def num_groups(self):
        return len(self.shapes)

    def group_index(self):
        """Group number of every element of the flat vector."""
        return np.repeat(np.arange(self.num_groups), self.sizes).astype(np.int64)

    def leaves(self, x):
        """The leaf arrays of ``x`` in group order, checking that ``x`` has this structure."""
        out = []
        self._collect(x, self.tree, self.name, out)
        return out

    def _collect(self, x, tree, label, out):
        if tree[0] == "array":
            out.append(x)
            return
        kind, keys, subtrees = tree
        node = _children(x)
        if node is None or node[0] != kind or (keys is not None and node[1] != keys) \
                or len(node[2]) != len(subtrees):
            want = f"a dict with keys {keys}" if keys is not None else f"a {kind} of {len(subtrees)} items"
            raise ValueError(f"expected {want} for {label}")
        names = [f"{label}[{k!r}]" for k in keys] if keys is not None else \
            [f"{label}[{i}]" for i in range(len(subtrees))]
        for child, sub, name in zip(node[2], subtrees, names):
            self._collect(child, sub, name, out)

    def flatten(self, x):
        """One float64 vector (differentiable under autograd)."""
        leaves = self.leaves(x)
        for leaf, shape, label in zip(leaves, self.shapes, self.labels):
            if anp.shape(leaf) != shape:
                raise ValueError(f"{label} has shape {anp.shape(leaf)}, expected {shape} "
                                 f"(the shape in {self.name})")
        parts = [anp.reshape(leaf, (-1,)) for leaf in leaves]
        flat = parts[0] if len(parts) == 1 else anp.concatenate(parts)
        return flat * 1.0 if getattr(getval(flat), "dtype", None) != np.float64 else flat

    def unflatten(self, flat):
        """The container back from a flat vector (differentiable under autograd)."""
        if self.tree == ("array", (self.size,)):
            return flat                                  # a vector: nothing to unflatten
        bounds = self._bounds
        leaves = iter([_leaf(flat, a, b, shape) for (a, b), shape in zip(bounds, self.shapes)])
        return self._build(self.tree, leaves)

    def _build(self, tree, leaves):
        if tree[0] == "array":
            return next(leaves)
        kind, keys, subtrees = tree
        items = [self._build(sub, leaves) for sub in subtrees]
        if kind == "dict":
            return dict(zip(keys, items))
        return tuple(items) if kind == "tuple" else items
