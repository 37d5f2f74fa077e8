"""Recording state, tape nodes and the backward pass.

The tape knows no operation.  ``apply`` runs a primitive's numpy forward and,
while recording, links the result to a ``Node`` that keeps the primitive, its
inputs and their versions.  ``backward`` walks the nodes reachable from the
heads in reverse topological order and calls each primitive's per-argument
VJP rules.  The rules are written with other primitives, so running them while
recording (``create_graph=True``) records the backward pass itself and any
order of derivative works.

Guarantees:
- recording state (recording, training) is per thread;
- a node is only created when recording and at least one input is tracked
  (has a node or a gradient buffer);
- backward never returns a gradient computed from a value that was changed in
  place after it was recorded: versions are checked, and a mismatch raises
  ``InPlaceError``;
- without ``retain_graph`` every node a backward pass used is freed, and a
  second backward through it raises ``GraphFreedError``.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np

from .errors import GraphFreedError, HeadGradientError, InPlaceError, NotRecordedError


class _State(threading.local):
    recording = False
    training = False


_state = _State()


def is_recording() -> bool:
    return _state.recording


def is_training() -> bool:
    return _state.training


def set_recording(is_recording: bool) -> bool:
    """Turn recording on or off for this thread; returns the previous state."""
    previous = _state.recording
    _state.recording = bool(is_recording)
    return previous


def set_training(train_mode: bool) -> bool:
    """Turn training mode on or off for this thread; returns the previous state."""
    previous = _state.training
    _state.training = bool(train_mode)
    return previous


@contextmanager
def scope(recording: bool | None, training: bool | None):
    """Set recording/training for a block and restore both afterwards, even on error."""
    old_recording, old_training = _state.recording, _state.training
    if recording is not None:
        _state.recording = recording
    if training is not None:
        _state.training = training
    try:
        yield
    finally:
        _state.recording, _state.training = old_recording, old_training


def is_tracked(value) -> bool:
    """Whether gradients can flow into ``value``: it has history or a gradient buffer."""
    return getattr(value, "_node", None) is not None or getattr(value, "_grad", None) is not None


class Node:
    """One recorded primitive application: ``out = prim(*args, **params)``."""

    __slots__ = ("prim", "args", "params", "tracked", "versions", "out_version", "freed")

    def __init__(self, prim, args, params, tracked, out_version):
        self.prim = prim
        self.args = args
        self.params = params
        self.tracked = tracked
        self.versions = tuple(getattr(a, "_version", 0) for a in args)
        self.out_version = out_version
        self.freed = False
        for a in args:
            if hasattr(a, "_users"):
                a._users += 1

    def free(self) -> None:
        if not self.freed:
            self.freed = True
            for a in self.args:
                if hasattr(a, "_users"):
                    a._users -= 1
            self.args = ()

    def __del__(self):
        try:
            self.free()
        except Exception:  # interpreter shutdown: module globals may be gone
            pass


def apply(prim, args, params):
    """Run ``prim`` on ``args`` and, while recording, record it on the tape."""
    from .ndarray import NDArray, as_data

    raw = [a._data if type(a) is NDArray else a for a in args]
    result = NDArray(as_data(prim.forward(*raw, **params)))
    if prim.vjps is None:
        return result
    if _state.recording:
        tracked = tuple(i for i, a in enumerate(args)
                        if type(a) is NDArray and (a._node is not None or a._grad is not None)
                        and prim.vjps[i] is not None)
        if tracked:
            result._node = Node(prim, tuple(args), params, tracked, 0)
        else:
            result._why = "none of its inputs had a gradient attached (attach_grad)"
    elif any(type(a) is NDArray and (a._node is not None or a._grad is not None) for a in args):
        result._why = "it was computed outside autograd.record()"
    return result


def record_custom(prim, args, params, outputs):
    """Link already-computed ``outputs`` to one node per output (custom Functions,
    compiled functions).  ``prim.vjps[i]`` receives ``g, ans, *args, out_index=k``."""
    from .ndarray import NDArray

    if not _state.recording:
        return
    tracked = tuple(i for i, a in enumerate(args)
                    if type(a) is NDArray and (a._node is not None or a._grad is not None))
    if not tracked:
        return
    for k, out in enumerate(outputs):
        out._node = Node(prim, tuple(args), dict(params, out_index=k), tracked, out._version)


# ----------------------------------------------------------------------------------------
# backward


def _not_recorded_message(head) -> str:
    why = head._why or (
        "it was created directly (nd.array, nd.zeros, ...) rather than computed from a "
        "variable with attach_grad() inside autograd.record()"
    )
    return (
        f"cannot differentiate an array of shape {head.shape}: it has no recorded history "
        f"because {why}. Call attach_grad() on the inputs, then compute the output inside "
        "`with autograd.record():`."
    )


def _topological_order(heads):
    """Arrays reachable from heads, each after every array that consumes it."""
    from .ndarray import NDArray

    order, visited = [], set()
    stack = [(h, False) for h in heads]
    while stack:
        arr, expanded = stack.pop()
        if expanded:
            order.append(arr)
            continue
        if id(arr) in visited:
            continue
        visited.add(id(arr))
        stack.append((arr, True))
        node = arr._node
        if node is not None:
            for i in node.tracked:
                a = node.args[i] if not node.freed else None
                if type(a) is NDArray and id(a) not in visited:
                    stack.append((a, False))
    order.reverse()
    return order


def _check_versions(arr, node) -> None:
    for a, v in zip(node.args, node.versions, strict=True):
        if getattr(a, "_version", v) != v:
            raise InPlaceError(
                f"an input of shape {a.shape} to a recorded '{node.prim.name}' was changed in "
                "place after it was recorded, so its gradient can no longer be computed. Do the "
                "in-place update after backward(), or write the new value to a new array."
            )
    if arr._version != node.out_version:
        raise InPlaceError(
            f"the result (shape {arr.shape}) of a recorded '{node.prim.name}' was changed in "
            "place after it was recorded; its gradient would be wrong. Write the new value "
            "to a new array instead."
        )


def _head_gradients(heads, head_grads):
    from .ndarray import NDArray

    if head_grads is None:
        head_grads = [None] * len(heads)
    if len(head_grads) != len(heads):
        raise HeadGradientError(
            f"got {len(head_grads)} head gradients for {len(heads)} heads; pass one per head"
        )
    out = []
    for h, g in zip(heads, head_grads, strict=True):
        if g is None:
            out.append(NDArray(np.ones_like(h._data)))
            continue
        g = g if isinstance(g, NDArray) else NDArray(np.asarray(g))
        if g.shape != h.shape:
            raise HeadGradientError(
                f"head gradient has shape {g.shape} but its head has shape {h.shape}; "
                "they must match"
            )
        if g._data.dtype != h._data.dtype:
            raise HeadGradientError(
                f"head gradient has dtype {g._data.dtype} but its head has dtype "
                f"{h._data.dtype}; convert it with .astype('{h._data.dtype}')"
            )
        out.append(g)
    return out


def _run_backward(heads, head_grads, retain_graph, create_graph, train_mode):
    """Propagate; returns {id(array): (array, gradient)} for arrays with a gradient buffer
    or that were asked for, and the set of nodes visited."""
    from . import primitives as P

    for h in heads:
        if h._node is None and h._grad is None:
            raise NotRecordedError(_not_recorded_message(h))
    grads = {}
    for h, g in zip(heads, _head_gradients(heads, head_grads), strict=True):
        grads[id(h)] = g if id(h) not in grads else P.add(grads[id(h)], g)
    reached = {}
    with scope(recording=create_graph, training=train_mode):
        for arr in _topological_order(heads):
            g = grads.pop(id(arr), None)
            if g is None:
                continue
            reached[id(arr)] = (arr, g)
            node = arr._node
            if node is None:
                continue
            if node.freed:
                raise GraphFreedError(
                    "backward() reached a part of the graph that an earlier backward() already "
                    "freed. Pass retain_graph=True to the first backward() to differentiate the "
                    "same graph again, or recompute the output inside record()."
                )
            _check_versions(arr, node)
            for i in node.tracked:
                gi = node.prim.vjps[i](g, arr, *node.args, **node.params)
                if gi is None:
                    continue
                key = id(node.args[i])
                if key in grads:
                    grads[key] = P.add(grads[key], gi)
                else:
                    grads[key] = gi
                    reached.setdefault(key, None)
            if not retain_graph:
                node.free()
    return {k: v for k, v in reached.items() if v is not None}


def backward(heads, head_grads=None, retain_graph=False, train_mode=True):
    """Accumulate d(heads)/d(variable) into each reached variable's ``.grad``."""
    heads = list(heads)
    reached = _run_backward(heads, head_grads, retain_graph, False, train_mode)
    for arr, g in reached.values():
        if arr._grad is None:
            continue
        data = g._data if g._data.shape == arr.shape else np.broadcast_to(g._data, arr.shape)
        if arr._grad_req == "add":
            arr._grad._data += data
        else:
            arr._grad._data[...] = data
        arr._grad._version += 1


def grad(heads, variables, head_grads=None, retain_graph=None, create_graph=False,
         train_mode=True):
    """Gradients of heads with respect to variables, as new arrays (``.grad`` untouched)."""
    from .ndarray import NDArray

    for v in variables:
        if not isinstance(v, NDArray) or not is_tracked(v):
            raise NotRecordedError(
                "autograd.grad() needs variables that had attach_grad() called before "
                "recording; one of the variables has no gradient buffer and no history"
            )
    if retain_graph is None:
        retain_graph = create_graph
    reached = _run_backward(list(heads), head_grads, retain_graph, create_graph, train_mode)
    out = []
    for v in variables:
        hit = reached.get(id(v))
        out.append(hit[1] if hit is not None else NDArray(np.zeros_like(v._data)))
    return out
