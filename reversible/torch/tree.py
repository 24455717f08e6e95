"""Containers of tensors as one flat float64 vector, and back, differentiably.

A :class:`TensorTree` remembers how a tensor or a (nested) dict / list / tuple
of tensors is laid out (dict insertion order, depth first, as
:class:`reversible.structure.Structure` does for NumPy).  Each leaf is one
parameter group.  ``flatten`` concatenates the leaves into one contiguous
float64 vector; ``views`` cuts a flat vector back into per-leaf views (no
copy when the leaf is float64) in each leaf's own dtype.
"""

import torch

_REAL = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class TensorTree:
    """Layout of a tensor or a nested dict / list / tuple of tensors (one group per leaf)."""

    def __init__(self, example, name):
        self.name = name
        self.labels, self.shapes, self.dtypes, self.devices = [], [], [], []
        self.tree = self._describe(example, name)
        if not self.shapes:
            raise ValueError(f"{name} is an empty container; give at least one tensor")
        self.sizes = [int(torch.Size(s).numel()) for s in self.shapes]
        self.offsets = [0]
        for size in self.sizes:
            self.offsets.append(self.offsets[-1] + size)
        self.size = self.offsets[-1]
        if len(set(self.devices)) > 1:
            raise ValueError(f"every tensor of {name} must be on one device; got "
                             f"{sorted(set(map(str, self.devices)))}")
        self.device = self.devices[0]

    def _describe(self, x, label):
        if isinstance(x, dict):
            keys = list(x.keys())
            return ("dict", keys, [self._describe(x[k], f"{label}[{k!r}]") for k in keys])
        if isinstance(x, (list, tuple)):
            return (type(x).__name__, None,
                    [self._describe(c, f"{label}[{i}]") for i, c in enumerate(x)])
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{label} must be a torch tensor (or a dict / list / tuple of "
                            f"tensors); got {type(x).__name__}")
        if x.dtype not in _REAL:
            raise TypeError(f"{label} must be a real floating-point tensor; got dtype {x.dtype} "
                            "(convert it with .double() or .float())")
        if x.is_sparse or x.layout != torch.strided:
            raise TypeError(f"{label} must be a dense tensor; got layout {x.layout}")
        self.labels.append(label)
        self.shapes.append(tuple(x.shape))
        self.dtypes.append(x.dtype)
        self.devices.append(x.device)
        return ("leaf", None, None)

    @property
    def num_groups(self):
        return len(self.shapes)

    def group_index(self):
        """Group number of every element of the flat vector (NumPy int64)."""
        import numpy as np
        return np.repeat(np.arange(self.num_groups), self.sizes).astype(np.int64)

    # ------------------------------------------------------------------ leaves
    def leaves(self, x, name=None):
        """The leaves of ``x`` in group order, checking that ``x`` has this layout."""
        out = []
        self._collect(x, self.tree, name or self.name, out)
        for leaf, shape, label in zip(out, self.shapes, self._relabel(name)):
            if not isinstance(leaf, torch.Tensor):
                raise TypeError(f"{label} must be a torch tensor; got {type(leaf).__name__}")
            if tuple(leaf.shape) != shape:
                raise ValueError(f"{label} has shape {tuple(leaf.shape)}, expected {shape} "
                                 f"(the shape in {self.name})")
        return out

    def _relabel(self, name):
        if name is None or name == self.name:
            return self.labels
        return [name + label[len(self.name):] for label in self.labels]

    def _collect(self, x, tree, label, out):
        kind, keys, subtrees = tree
        if kind == "leaf":
            out.append(x)
            return
        if kind == "dict":
            if not isinstance(x, dict) or list(x.keys()) != keys:
                got = list(x.keys()) if isinstance(x, dict) else type(x).__name__
                raise ValueError(f"{label} must be a dict with keys {keys} in that order, like "
                                 f"{self.name}; got {got}")
            children = [x[k] for k in keys]
            names = [f"{label}[{k!r}]" for k in keys]
        else:
            if not isinstance(x, (list, tuple)) or type(x).__name__ != kind \
                    or len(x) != len(subtrees):
                raise ValueError(f"{label} must be a {kind} of {len(subtrees)} items, like "
                                 f"{self.name}; got {type(x).__name__}")
            children = list(x)
            names = [f"{label}[{i}]" for i in range(len(children))]
        for child, sub, name in zip(children, subtrees, names):
            self._collect(child, sub, name, out)

    def build(self, leaves):
        """The container of ``self``'s kind holding ``leaves`` (in group order)."""
        it = iter(leaves)
        return self._build(self.tree, it)

    def _build(self, tree, it):
        kind, keys, subtrees = tree
        if kind == "leaf":
            return next(it)
        items = [self._build(sub, it) for sub in subtrees]
        if kind == "dict":
            return dict(zip(keys, items))
        return tuple(items) if kind == "tuple" else items

    # ------------------------------------------------------------------ flat
    def flatten(self, x, name=None):
        """One contiguous float64 vector of the leaves of ``x`` (differentiable)."""
        parts = [leaf.reshape(-1).to(torch.float64) for leaf in self.leaves(x, name)]
        return parts[0].contiguous() if len(parts) == 1 else torch.cat(parts)

    def views(self, flat, cast=True):
        """Per-leaf tensors cut from ``flat``: views, cast to each leaf's dtype when ``cast``."""
        out = []
        for i, shape in enumerate(self.shapes):
            piece = flat[self.offsets[i]:self.offsets[i + 1]].view(shape)
            out.append(piece.to(self.dtypes[i]) if cast else piece)
        return out

    def unflatten(self, flat):
        """The container back from a flat vector, each leaf in its own dtype (differentiable)."""
        return self.build(self.views(flat))

    def concat_into(self, leaves, out):
        """Write per-leaf tensors into the flat float64 ``out`` (one copy, O(N)); returns ``out``."""
        for i, leaf in enumerate(leaves):
            out[self.offsets[i]:self.offsets[i + 1]].copy_(leaf.reshape(-1))
        return out
