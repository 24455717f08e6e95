"""The autograd primitive that turns a hypergradient method into a differentiable training run.

``reversible.sgd`` and ``reversible.adam`` each build one with
:func:`training_primitive`: its value is ``w_T`` from the method's forward
pass, and its VJP is the method's reverse pass, whose cotangents are returned
for the arguments autograd asks about (one reverse pass serves them all).
"""

import numpy as np
from autograd.extend import defvjp_argnums, primitive


class MethodCall:
    """Static (non-differentiable) last argument of the primitive: method, problem, options, stats."""

    def __init__(self, method, problem, options, stats):
        self.method, self.problem, self.options, self.stats = method, problem, options, stats
        self.backward = None

    def forward(self):
        w_T, self.backward = self.method.run(self.problem, self.stats, **self.options)
        if self.problem.first_step_rounding is not None:
            self.stats["first_step_rounding"] = self.problem.first_step_rounding
        return np.asarray(w_T, dtype=np.float64)


def training_primitive(arg_names):
    """``f(*args, call)`` with ``args`` named by ``arg_names`` (flat arrays) and ``call`` a
    :class:`MethodCall`: ``f`` returns ``call.forward()``; its VJP runs ``call.backward``."""

    @primitive
    def run(*args):
        return args[-1].forward()

    def vjp_maker(argnums, ans, args, kwargs):
        call = args[-1]
        wanted = [arg_names[i] for i in argnums]
        call.method.check_sees(wanted)

        def vjp(g):
            cot = call.backward(np.asarray(g, dtype=np.float64))
            return tuple(np.zeros(np.shape(args[i])) if cot.get(name) is None
                         else np.reshape(cot[name], np.shape(args[i]))
                         for name, i in zip(wanted, argnums))

        return vjp

    defvjp_argnums(run, vjp_maker)
    return run
