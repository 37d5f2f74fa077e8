"""Reverse-over-reverse through a compiled call without re-running it eagerly.

Under ``create_graph=True`` the backward of a recorded compiled call (``api._CompiledCall``)
must itself be differentiable.  With a head gradient ``g`` for its output ``f(x)``, the
gradients it returns are ``G(x, g) = J(x)^T g``, the gradient of ``phi(x) = <g, f(x)>``.
``recorded_gradients`` computes them with the compiled adjoint and records them as one tape
node (``_GRADIENTS``) over the call's inputs and ``g``.  That node's VJP for a cotangent
``u`` of one gradient output needs two products, and forward-over-reverse gives both in one
run (``compiler/second.py``) with tangent ``u`` on that input and none on ``g``:

- with respect to ``x``: ``d<u, G>/dx = H_phi u`` (``H_phi`` is symmetric), the tangent of
  the adjoint's gradients;
- with respect to ``g``: ``d<u, J^T g>/dg = J u``, the tangent of the forward's output.

So second derivatives through compiled code run compiled code only.  A third derivative
(this node's VJP recorded once more) re-runs the user's function eagerly on the tape, as
every order did before; so does a function the second-order transform refuses.
"""

from __future__ import annotations

import copy

import numpy as np

from pullback.runtime import tape
from pullback.runtime.ndarray import NDArray, as_data
from pullback.runtime.primitives import Primitive
from pullback.runtime.stack import Stack

from .pytree import Kind, map_leaves
from .second import second_order_for


def recorded_gradients(call, out_index, g, raw_gradient):
    """The per-input gradients of ``call`` for head ``g`` (NDArrays or None), recorded as
    a node whose VJP is forward-over-reverse.  Raises CompileError when the function has no
    second-order code (the caller then re-runs it eagerly)."""
    second = second_order_for(call.function.fn, call.variant.mask)
    second._build()
    head = g._data if len(call.out_shapes) == 1 else tuple(
        g._data if k == out_index else None for k in range(len(call.out_shapes)))
    with tape.scope(recording=False, training=None):
        per_argument = call.variant.adjoint(copy.copy(call.stack), head)
    grads = [raw_gradient(per_argument, k) for k in range(len(call.inputs))]
    outputs = [gr for gr in grads if gr is not None]
    if outputs:
        slots = [k for k, gr in enumerate(grads) if gr is not None]
        state = _SecondOrderState(call, second, out_index, head, slots, g)
        tape.record_custom(_GRADIENTS, list(call.inputs) + [g], {"state": state}, outputs)
    return grads


def _raw_arguments(call):
    return [map_leaves(lambda leaf: leaf._data if isinstance(leaf, NDArray) else leaf, a)
            if isinstance(m, Kind) else a._data if isinstance(a, NDArray) else a
            for a, m in zip(call.args, call.variant.mask, strict=True)]


def _placed(value, path, like):
    """A tangent for an argument shaped ``like``: ``value`` at ``path``, None elsewhere."""
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(like, dict):
        return {k: _placed(value, rest, v) if k == key else None for k, v in like.items()}
    return type(like)(_placed(value, rest, v) if k == key else None
                      for k, v in enumerate(like))


def _at(gradient, path):
    for key in path:
        if gradient is None:
            return None
        gradient = gradient.get(key) if isinstance(gradient, dict) else gradient[key]
    return gradient


def _as_ndarray(value, like):
    if value is None:
        return None
    data = np.asarray(value)
    dtype = like._data.dtype if isinstance(like, NDArray) else None
    if dtype is not None and dtype.kind == "f" and data.dtype != dtype:
        data = data.astype(dtype)
    if isinstance(like, NDArray) and data.shape != like.shape:
        data = np.broadcast_to(data, like.shape) if data.size == 1 else data.reshape(like.shape)
    return NDArray(as_data(np.array(data)))


class _SecondOrderState:
    """What the gradient node keeps: the call, its head, which input each output is for."""

    def __init__(self, call, second, out_index, head, slots, g):
        self.call, self.second, self.out_index, self.head = call, second, out_index, head
        self.slots, self.g = slots, g
        self.cache = None

    def vjp(self, index, k, u):
        """Input ``index``'s part of output ``k``'s cotangent ``u`` (inputs: the call's,
        then the head gradient).  One second-order run serves every input of one pass."""
        if tape.is_recording():   # a third derivative: the eager road, recorded
            return self._eager(index, k, u)
        key = (tape.current_pass(), k)
        if self.cache is None or self.cache[0] != key or self.cache[1] is not u \
                or index not in self.cache[2]:
            self.cache = (key, u, dict(enumerate(self._run(k, u))))
        found = self.cache[2].pop(index)
        if not self.cache[2]:
            self.cache = None
        return found

    def _run(self, k, u):
        call = self.call
        internal = _raw_arguments(call)
        argument, path = call.places[self.slots[k]]
        dots = [None] * len(internal)
        dots[argument] = _placed(u._data, path, internal[argument])
        stack = Stack()
        with tape.scope(recording=False, training=None), call.rerun():
            tape._state.caller_recording = True   # as the recorded call's forward saw it
            out, out_dot = self.second.forward_tangent(stack, *internal, *dots)
            call.check_rerun(out)
            _, grad_dots = self.second.adjoint_tangent(stack, self.head, None)
        results = [_as_ndarray(_at(grad_dots[i], p), a)
                   for a, (i, p) in zip(call.inputs, call.places, strict=True)]
        if len(call.out_shapes) > 1:
            out_dot = out_dot[self.out_index]
        results.append(_as_ndarray(out_dot, self.g))
        return results

    def _eager(self, index, k, u):
        call = self.call
        slot = self.slots[k]
        gradients = call._eager_gradients(self.out_index, self.g)
        target = gradients[slot]
        variable = (list(call.inputs) + [self.g])[index]
        if target is None or not isinstance(variable, NDArray) \
                or not tape.is_tracked(variable):
            return None
        # input x's part is the partial derivative at this g: the path from x through g
        # (a head gradient that depends on x) is g's own input slot, not x's
        held = () if variable is self.g else (self.g,)
        return tape.grad([target], [variable], head_grads=[u], retain_graph=True,
                         create_graph=True, held=held)[0]


def _gradient_rule(index):
    def rule(u, ans, *args, state, out_index):
        return state.vjp(index, out_index, u)

    rule.__name__ = f"compiled_second_order_vjp_{index}"
    return rule


_GRADIENTS = Primitive("compiled_gradients", None,
                       tuple(_gradient_rule(i) for i in range(256)))
