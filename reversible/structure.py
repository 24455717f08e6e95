"""Flatten containers of arrays to one vector and back, differentiably.

A :class:`Structure` remembers how a float array or a list / tuple / dict of
float arrays is laid out; its ``flatten`` and ``unflatten`` are written with
``autograd.numpy`` so gradients flow through them.  Each leaf array is one
parameter group, in container order (dict insertion order).
"""

import autograd.numpy as anp
import numpy as np
from autograd.tracer import getval


class Structure:
    """Layout of an array or a flat list / tuple / dict of arrays."""

    def __init__(self, example, name="w0"):
        self.name = name
        raw = getval(example)   # the container itself when autograd boxed it whole
        if isinstance(raw, dict):
            self.kind, self.keys = "dict", list(raw.keys())
            leaves = [example[k] for k in self.keys]
        elif isinstance(raw, (list, tuple)):
            self.kind, self.keys = type(raw).__name__, None
            leaves = [example[i] for i in range(len(raw))]
        else:
            self.kind, self.keys = "array", None
            leaves = [example]
        if not leaves:
            raise ValueError(f"{name} is an empty container; give at least one array")
        self.shapes = []
        for i, leaf in enumerate(leaves):
            arr = np.asarray(getval(leaf))
            label = self._label(i)
            if isinstance(getval(leaf), (dict, list, tuple)):
                raise ValueError(f"{label} is a nested container; {name} must be an array or a "
                                 "flat list/tuple/dict of arrays")
            if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
                raise ValueError(f"{label} must be a real float array; got dtype {arr.dtype}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{label} contains NaN or Inf")
            self.shapes.append(arr.shape)
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        self.size = int(self.offsets[-1])

    def _label(self, i):
        if self.kind == "dict":
            return f"{self.name}[{self.keys[i]!r}]"
        if self.kind == "array":
            return self.name
        return f"{self.name}[{i}]"

    @property
    def num_groups(self):
        return len(self.shapes)

    def group_index(self):
        """Group number of every element of the flat vector."""
        return np.repeat(np.arange(self.num_groups), self.sizes).astype(np.int64)

    def leaves(self, x):
        raw = getval(x)
        if self.kind == "dict":
            if not isinstance(raw, dict) or list(raw.keys()) != self.keys:
                raise ValueError(f"expected a dict with keys {self.keys} for {self.name}")
            return [x[k] for k in self.keys]
        if self.kind == "array":
            return [x]
        if not isinstance(raw, (list, tuple)) or len(raw) != len(self.shapes):
            raise ValueError(f"expected a {self.kind} of {len(self.shapes)} arrays for {self.name}")
        return [x[i] for i in range(len(raw))]

    def flatten(self, x):
        """One float64 vector (differentiable under autograd)."""
        leaves = self.leaves(x)
        for i, (leaf, shape) in enumerate(zip(leaves, self.shapes)):
            if anp.shape(leaf) != shape:
                raise ValueError(f"{self._label(i)} has shape {anp.shape(leaf)}, expected {shape} "
                                 f"(the shape in {self.name})")
        parts = [anp.reshape(leaf, (-1,)) for leaf in leaves]
        flat = parts[0] if len(parts) == 1 else anp.concatenate(parts)
        return flat * 1.0 if getattr(getval(flat), "dtype", None) != np.float64 else flat

    def unflatten(self, flat):
        """The container back from a flat vector (differentiable under autograd)."""
        leaves = [anp.reshape(flat[self.offsets[i]:self.offsets[i + 1]], shape)
                  for i, shape in enumerate(self.shapes)]
        if self.kind == "dict":
            return dict(zip(self.keys, leaves))
        if self.kind == "array":
            return leaves[0]
        return tuple(leaves) if self.kind == "tuple" else leaves
