"""MXNet's ``autograd`` API over the tape: scopes, backward, grad and ``Function``."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from . import tape
from .errors import GradReqError
from .ndarray import NDArray
from .primitives import Primitive
from .tape import backward as _backward
from .tape import grad as _grad
from .tape import is_recording, is_training, set_recording, set_training  # noqa: F401


@contextmanager
def record(train_mode: bool = True):
    """Record operations in this block (per thread) so they can be differentiated."""
    with tape.scope(recording=True, training=train_mode):
        yield


@contextmanager
def pause(train_mode: bool = False):
    """Stop recording inside a ``record()`` block."""
    with tape.scope(recording=False, training=train_mode):
        yield


@contextmanager
def train_mode():
    """Training mode (affects e.g. dropout) without changing recording."""
    with tape.scope(recording=None, training=True):
        yield


@contextmanager
def predict_mode():
    """Prediction mode without changing recording."""
    with tape.scope(recording=None, training=False):
        yield


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def mark_variables(variables, gradients, grad_reqs="write"):
    """Make ``variables`` differentiable, storing their gradients in ``gradients``."""
    variables, gradients = _as_list(variables), _as_list(gradients)
    reqs = [grad_reqs] * len(variables) if isinstance(grad_reqs, str) else list(grad_reqs)
    for var, grad, req in zip(variables, gradients, reqs, strict=True):
        if req not in ("write", "add", "null"):
            raise GradReqError(
                f"invalid grad_req {req!r}; valid values are 'write', 'add' and 'null'")
        if grad.shape != var.shape:
            raise ValueError(f"gradient buffer of shape {grad.shape} for a variable of shape "
                             f"{var.shape}")
        var._grad_req = req
        var._grad = None if req == "null" else grad


def backward(heads, head_grads=None, retain_graph=False, train_mode=True):
    """Back-propagate from ``heads`` into the ``.grad`` of every variable they depend on."""
    heads = _as_list(heads)
    if head_grads is not None:
        head_grads = _as_list(head_grads)
    _backward(heads, head_grads, retain_graph=retain_graph, train_mode=train_mode)


def grad(heads, variables, head_grads=None, retain_graph=None, create_graph=False,
         train_mode=True):
    """Gradients of ``heads`` w.r.t. ``variables`` as new arrays; ``.grad`` is untouched.

    With ``create_graph=True`` the backward pass is recorded, so the returned
    gradients can be differentiated again.  Returns a list (one per variable).
    """
    single = isinstance(variables, NDArray)
    heads = _as_list(heads)
    if head_grads is not None:
        head_grads = _as_list(head_grads)
    result = _grad(heads, _as_list(variables), head_grads, retain_graph, create_graph,
                   train_mode)
    return result if not single else result


def _function_vjp(index):
    def rule(g, ans, *args, function, out_index, out_shapes, **params):
        return function._input_gradient(index, out_index, out_shapes, g)

    rule.__name__ = f"function_vjp_{index}"
    return rule


_FUNCTION = Primitive("custom_function", None, tuple(_function_vjp(i) for i in range(64)))


class Function:
    """A user-defined differentiable operation (MXNet's ``autograd.Function``).

    Subclass it, define ``forward(self, *inputs)`` and ``backward(self, *output_grads)``
    (returning one gradient per input), call ``save_for_backward`` in ``forward`` and
    read ``saved_tensors`` in ``backward``.  Each call of an instance records one node.
    """

    def __init__(self):
        self._saved = ()
        self._grad_cache = None

    def save_for_backward(self, *args) -> None:
        self._saved = args

    @property
    def saved_tensors(self):
        return self._saved

    def forward(self, *inputs):
        raise NotImplementedError

    def backward(self, *output_grads):
        raise NotImplementedError

    def __call__(self, *inputs):
        with pause():
            outputs = self.forward(*inputs)
        single = isinstance(outputs, NDArray)
        outputs = [outputs] if single else list(outputs)
        # Outputs must be fresh arrays with no history of their own.
        outputs = [NDArray(o._data) if o._node is not None or any(o is i for i in inputs)
                   else o for o in outputs]
        shapes = tuple((o.shape, o._data.dtype) for o in outputs)
        tape.record_custom(_FUNCTION, inputs, {"function": self, "out_shapes": shapes}, outputs)
        return outputs[0] if single else tuple(outputs)

    def _input_gradient(self, index, out_index, out_shapes, g):
        """The gradient of input ``index`` from output ``out_index``'s gradient ``g``.

        ``backward`` is linear in the output gradients, so each output's share is
        computed with zeros for the other outputs; results are cached per call.
        """
        key = (out_index, id(g))
        if self._grad_cache is None or self._grad_cache[0] != key:
            grads = [g if k == out_index else NDArray(np.zeros(shape, dtype))
                     for k, (shape, dtype) in enumerate(out_shapes)]
            with pause():
                result = self.backward(*grads)
            result = [result] if isinstance(result, NDArray) else list(result)
            self._grad_cache = (key, result)
        return self._grad_cache[1][index]
