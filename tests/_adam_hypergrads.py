"""Shared by the Adam tests: every hyperparameter kind's hypergradient of one objective."""

import autograd
import autograd.numpy as anp

import reversible

ADAM_KINDS = ("w0", "alphas", "beta1s", "beta2s", "eps", "weight_decay", "meta")


def adam_hypergrads(loss, hyp, method, kinds=ADAM_KINDS, **options):
    """``autograd.grad`` of ``|w_T|^2 + sum(w_T)`` through ``reversible.adam`` with respect to
    the ``kinds`` of ``hyp`` (a dict with every kind of ``ADAM_KINDS``)."""
    def f(h):
        a = dict(hyp, **h)
        w = reversible.adam(loss, a["w0"], a["alphas"], a["beta1s"], a["beta2s"], a["meta"],
                            eps=a["eps"], weight_decay=a["weight_decay"], method=method, **options)
        flat = anp.concatenate(w)
        return anp.sum(flat ** 2) + anp.sum(flat)

    return autograd.grad(f)({k: hyp[k] for k in kinds})
