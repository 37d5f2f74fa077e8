"""MXNet's ``autograd`` API over the tape: scopes, backward, grad and ``Function``."""

from __future__ import annotations

import numpy as np

from . import tape
from .errors import FunctionReuseError, GradReqError
from .ndarray import NDArray, check_float_gradient
from .primitives import Primitive
from .tape import backward as _backward
from .tape import grad as _grad
from .tape import is_training, set_recording, set_training  # noqa: F401
from .tape import user_recording as is_recording  # noqa: F401  (compiled forwards too)


def record(train_mode: bool = True) -> tape.StateScope:
    """``with record():`` records operations (in this thread) so they can be differentiated.

    The previous recording and training state is restored when the block exits.
    """
    return tape.StateScope(recording=True, training=train_mode)


def pause(train_mode: bool = False) -> tape.StateScope:
    """``with pause():`` stops recording inside a ``record()`` block."""
    return tape.StateScope(recording=False, training=train_mode)


def train_mode() -> tape.StateScope:
    """``with train_mode():`` training mode (affects e.g. dropout); recording unchanged."""
    return tape.StateScope(recording=None, training=True)


def predict_mode() -> tape.StateScope:
    """``with predict_mode():`` prediction mode; recording unchanged."""
    return tape.StateScope(recording=None, training=False)


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
        if req != "null":
            check_float_gradient(var.dtype, "mark_variables() of")
            check_float_gradient(grad.dtype, "mark_variables() with a gradient buffer of")
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

    Args:
        heads: an NDArray or a list of them; several heads' gradients are summed.
        variables: an NDArray or a list of them (each with ``attach_grad`` or history).
        head_grads: one gradient per head (None: ones).
        retain_graph: keep the graph for another backward; defaults to ``create_graph``.
        create_graph: record the backward pass, so the returned gradients can be
            differentiated again (higher-order derivatives).
    Returns:
        A list with one gradient per variable, even for a single variable (as MXNet does).
    """
    heads = _as_list(heads)
    if head_grads is not None:
        head_grads = _as_list(head_grads)
    return _grad(heads, _as_list(variables), head_grads, retain_graph, create_graph,
                 train_mode)


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
    read ``saved_tensors`` in ``backward``.  As in MXNet, an instance serves one
    recorded call: its saved tensors belong to that call's node, so calling it again
    raises ``FunctionReuseError`` instead of corrupting the first call's gradient.
    """

    def __init__(self):
        self._saved = ()
        self._recorded = False
        self._pending = None  # ((pass, out_index), output gradient, {input: gradient})

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
        if self._recorded:
            raise FunctionReuseError(
                f"this {type(self).__name__} instance was already called inside record(); its "
                "saved tensors belong to that call. Create a new instance for each call, e.g. "
                f"`{type(self).__name__}()(x)`."
            )
        with pause():
            outputs = self.forward(*inputs)
        single = isinstance(outputs, NDArray)
        outputs = [outputs] if single else list(outputs)
        # Outputs must be fresh arrays with no history of their own; an input returned
        # as is becomes a new array over the same buffer.
        outputs = [o._alias() if o._node is not None or any(o is i for i in inputs)
                   else o for o in outputs]
        shapes = tuple((o.shape, o._data.dtype) for o in outputs)
        tape.record_custom(_FUNCTION, inputs, {"function": self, "out_shapes": shapes}, outputs)
        self._recorded = outputs[0]._node is not None
        return outputs[0] if single else tuple(outputs)

    def _input_gradient(self, index, out_index, out_shapes, g):
        """The gradient of input ``index`` from output ``out_index``'s gradient ``g``.

        ``backward`` is linear in the output gradients, so each output's share is
        computed with zeros for the other outputs.  The tape asks for each tracked
        input's gradient in turn with the same ``g``, so one ``backward`` call serves
        them all: its results are keyed by the backward pass (``tape.current_pass``) and
        handed out once each, so a later pass (``retain_graph``) never sees a gradient
        computed from an older ``g``, even one passed again after an in-place change.
        """
        pending = self._pending
        key = (tape.current_pass(), out_index)
        if pending is None or pending[0] != key or pending[1] is not g or index not in pending[2]:
            grads = [g if k == out_index else NDArray(np.zeros(shape, dtype))
                     for k, (shape, dtype) in enumerate(out_shapes)]
            with pause():
                result = self.backward(*grads)
            result = [result] if isinstance(result, NDArray) else list(result)
            pending = self._pending = (key, g, dict(enumerate(result)))
        return pending[2].pop(index)
