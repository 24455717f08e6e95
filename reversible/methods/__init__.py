"""Hypergradient methods: one module per family, all behind ``sgd(..., method=NAME)``.

A method is registered with :func:`register` and has one of two forms:

* ``traced=False`` (most): ``run(problem, stats, **options) -> (w_T, backward)``,
  where ``backward(dw_T)`` returns the cotangents as a dict with keys
  ``w0``, ``v0``, ``alphas``, ``betas`` (``(T, G)``) and ``meta``; it becomes
  the VJP of an autograd primitive;
* ``traced=True``: ``run(problem, w0, v0, alphas, betas, meta, stats, **options)``
  is evaluated on autograd boxes and autograd differentiates it directly
  (``unrolled``).

``blind_to`` names the hyperparameters a method cannot see (their
hypergradients are zero by construction).
"""

import inspect
from dataclasses import dataclass, field

HYPER_KINDS = ("w0", "v0", "alphas", "betas", "meta")


@dataclass
class Method:
    name: str
    run: object
    traced: bool = False
    blind_to: tuple = ()
    doc: str = field(default="", repr=False)

    def option_names(self):
        """The keyword options ``run`` takes (its problem, stats and hyperparameters excluded)."""
        fixed = {"problem", "stats", *HYPER_KINDS}
        return [name for name in inspect.signature(self.run).parameters if name not in fixed]

    def check_sees(self, wanted):
        """Refuse a VJP asked only for hyperparameters this method is blind to (zero by construction)."""
        blind = [name for name in wanted if name in self.blind_to]
        if blind and len(blind) == len(wanted):
            raise ValueError(
                f"method {self.name!r} cannot see {', '.join(blind)}: its hypergradient with "
                "respect to them is zero by construction. Use method='exact' for these, or also "
                "differentiate with respect to a hyperparameter it does see")


def check_options(name, options, allowed):
    """Unknown keyword options for method ``name`` are a ValueError listing the ones it takes."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"method {name!r} does not take option(s) {unknown}; its options are "
                         f"{allowed or 'none'}")


_METHODS = {}


def register(name, traced=False, blind_to=()):
    """Decorator registering ``run`` as method ``name``."""
    def deco(run):
        _METHODS[name] = Method(name, run, traced, tuple(blind_to), (run.__doc__ or "").strip())
        return run
    return deco


def _load_all():
    from . import exact, unrolled  # noqa: F401  (registration side effects)
    for optional in ("checkpointed", "drmad", "truncated", "ift", "forward_mode", "es", "pes"):
        try:
            __import__(f"{__name__}.{optional}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{optional}":
                raise


def get(name):
    _load_all()
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(_METHODS)}")
    return _METHODS[name]


def names():
    _load_all()
    return sorted(_METHODS)
