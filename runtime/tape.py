"""Recording state, tape nodes and the backward pass.

The tape knows no operation.  ``apply`` runs a primitive's numpy forward and,
while recording, links the result to a ``Node`` that keeps the primitive, its
inputs and the versions of their buffers.  ``backward`` walks the nodes
reachable from the heads in reverse topological order and calls each
primitive's per-argument VJP rules.  The rules are written with other
primitives, so running them while recording (``create_graph=True``) records
the backward pass itself and any order of derivative works.

Guarantees:
- recording state (recording, training) is per thread;
- a node is only created when recording and at least one input is tracked
  (has a node or a gradient buffer);
- an array that gets no node remembers why (``_why``), so differentiating it
  fails with the reason, not just "no history";
- backward never returns a gradient computed from a value that was changed in
  place after it was recorded: versions are checked, and a mismatch raises
  ``InPlaceError``.  Arrays that view one buffer (``reshape``, basic indexing,
  ``detach``) share one version counter, kept on the array that owns the
  buffer (``NDArray._base``), so a write through any of them is seen;
- without ``retain_graph`` every node a backward pass used is freed, and a
  second backward through it raises ``GraphFreedError``.  As in MXNet 1.x, an
  array whose history was freed is a constant for operations recorded *after*
  the free (an RNN state carried into the next batch: truncated
  backpropagation); an array with a gradient buffer becomes a leaf.  A node
  recorded *before* the free still needs that history, so reaching the freed
  part from it raises ``GraphFreedError``, never a silently truncated gradient;
- ``grad()`` runs only the rules whose result can reach one of its variables (the
  gradient of a parameter that a nested ``grad`` does not ask for is never computed).
"""

from __future__ import annotations

import itertools
import operator
import sys
import threading

import numpy as np

from .errors import (ComplexValueError, GraphFreedError, HeadGradientError, InPlaceError,
                     NotRecordedError)


class _State(threading.local):
    recording = False
    training = False
    backward_pass = None   # the serial of the backward pass running in this thread
    # inside a compiled call's forward (numpy code: ``recording`` is off so that nothing in
    # it records) whether the call itself was made while recording: what the user's code
    # there sees as ``autograd.is_recording()`` (``user_recording``), as it would eagerly
    caller_recording = False


_state = _State()


def is_recording() -> bool:
    return _state.recording


def is_training() -> bool:
    return _state.training


def user_recording() -> bool:
    """``autograd.is_recording()``: whether the user's code runs recorded, inside a compiled
    call's forward too (where the tape itself is off: ``_State.caller_recording``)."""
    return _state.recording or _state.caller_recording


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


class StateScope:
    """A ``with`` block that sets recording/training and restores both on exit, even on error.

    ``None`` leaves that flag as it is.  Each entry pushes the state it replaces and
    the matching exit pops it, so one scope object may be entered again, nested.
    """

    __slots__ = ("_saved", "recording", "training")

    def __init__(self, recording: bool | None, training: bool | None):
        self.recording = recording
        self.training = training
        self._saved = []

    def __enter__(self):
        state = _state
        self._saved.append((state.recording, state.training, state.caller_recording))
        if self.recording is not None:   # record()/pause() decide for the code inside
            state.recording = self.recording
            state.caller_recording = False
        if self.training is not None:
            state.training = self.training
        return self

    def __exit__(self, *exc_info) -> bool:
        _state.recording, _state.training, _state.caller_recording = self._saved.pop()
        return False


scope = StateScope


def is_tracked(value) -> bool:
    """Whether gradients can flow into ``value``: it has live history (not freed by a
    backward pass) or a gradient buffer."""
    node = getattr(value, "_node", None)
    return (node is not None and not node.freed) or getattr(value, "_grad", None) is not None


def has_history(array) -> bool:
    """Whether ``array`` was recorded and its history is still alive."""
    node = array._node
    return node is not None and not node.freed


def _owner(array):
    """The array that owns ``array``'s buffer and so keeps its version and user count."""
    return array if array._base is None else array._base


_serials = itertools.count()   # next() is atomic: threads never share a serial
_passes = itertools.count()


def current_pass():
    """The serial of the backward pass running in this thread (None outside one).

    A rule that computes the gradients of all its inputs at once (a compiled call, a
    custom Function) keys what it hands out by this: within one pass the tape asks
    it once per tracked input with the same head; any other pass computes anew."""
    return _state.backward_pass


class Node:
    """One recorded primitive application: ``out = prim(*args, **params)``.

    ``versions[i]`` is the buffer version of ``args[i]`` when it was recorded (None for
    non-arrays); ``out_version`` the same for the output.  While the node is alive and
    not freed it counts as a user of each input buffer (``_users``), which is how an
    in-place change inside ``record()`` knows it would corrupt the graph.
    """

    __slots__ = ("args", "freed", "out_version", "params", "prim", "serial", "tracked",
                 "versions")

    def __init__(self, prim, args, params, tracked, out_version):
        self.serial = next(_serials)   # creation order: a topological order of the graph
        self.prim = prim
        self.args = args
        self.params = params
        self.tracked = tracked
        self.out_version = out_version
        self.freed = False
        versions = []
        for a in args:
            if type(a) is NDArray:
                owner = a if a._base is None else a._base
                owner._users += 1
                versions.append(owner._version)
            else:
                versions.append(None)
        self.versions = versions

    def free(self) -> None:
        if self.freed:
            return
        self.freed = True
        for a in self.args:
            if type(a) is NDArray:
                (a if a._base is None else a._base)._users -= 1
        self.args = ()
        self.params = {}   # what a compiled call saved for its adjoint (its stack) goes too

    def __del__(self):
        # Also safe at interpreter shutdown: with NDArray gone, free() touches no array.
        if not self.freed:
            self.free()


class _Constant:
    """The "primitive" of a node with no inputs: a value recorded as constant.

    ``grad(create_graph=True)`` gives such a node to a gradient that does not depend on
    any variable (the gradient of ``sum(x)``, say), so differentiating it again yields
    zeros instead of a "not recorded" error.
    """

    name = "constant"
    vjps = ()
    vjp_all = None


# Why an array has no node; the three reasons users hit, worded to follow "because".
_NO_VARIABLE = (
    "none of the arrays it was computed from had a gradient attached (attach_grad(), "
    "with a grad_req other than 'null')"
)
_OUTSIDE_RECORD = (
    "it (or an array it was computed from) was computed outside a `with autograd.record():` "
    "block"
)
DETACHED = "it (or an array it was computed from) was detached from the graph with detach()"
FREED = (
    "it was computed from arrays whose history an earlier backward() freed, which makes "
    "them constants (as in MXNet); pass retain_graph=True to that backward() to "
    "differentiate through them again"
)


def _why_untracked(prim, args, recording: bool) -> str | None:
    """Why the result of ``prim`` on ``args`` gets no node (None when nothing is amiss)."""
    inherited = None
    for a in args:
        if type(a) is not NDArray:
            continue
        node = a._node
        if (node is not None and not node.freed) or a._grad is not None:
            if not recording:
                return _OUTSIDE_RECORD
            return f"'{prim.name}' passes no gradient to the inputs that have one"
        if inherited is None:
            inherited = FREED if node is not None else a._why
    if inherited is not None:
        return inherited
    return _NO_VARIABLE if recording else None


def _viewed_owner(data, args):
    """The owner of the buffer that ``data`` (a numpy view) looks into, if an input owns it.

    numpy points a view's ``base`` at the array that owns the memory, so comparing bases
    by identity finds the input without a memory-overlap test.
    """
    root = data.base
    for a in args:
        if type(a) is NDArray:
            d = a._data
            if d is root or d.base is root:
                return a if a._base is None else a._base
    return None


def apply(prim, args, params):
    """Run ``prim`` on ``args`` and, while recording, record it on the tape.

    This is the eager road's per-op cost, so it is written as straight-line code with
    one pass over the arguments.
    """
    raw = []
    history = False  # some input has a node or a gradient buffer
    inherited = False  # some input knows why it has no node
    for a in args:
        if type(a) is NDArray:
            raw.append(a._data)
            node = a._node
            if (node is not None and not node.freed) or a._grad is not None:
                history = True
            elif a._why is not None or node is not None:   # detached, freed, ...
                inherited = True
        else:
            raw.append(a)
    data = prim.forward(*raw, **params)
    if type(data) is not np.ndarray or data.ndim == 0 or not data.flags.c_contiguous:
        data = as_data(data)
    owner = None
    if data.base is not None:
        if not data.flags.writeable:  # e.g. np.broadcast_to views
            data = data.copy()
        else:
            owner = _viewed_owner(data, args)
    result = NDArray(data)
    if owner is not None:
        result._base = owner
    recording = _state.recording
    if history:
        if not recording:   # e.g. a rule run by backward() without create_graph
            result._why = _OUTSIDE_RECORD
            return result
        vjps = prim.vjps
        if vjps is not None:
            tracked = [i for i, a in enumerate(args)
                       if type(a) is NDArray and vjps[i] is not None and is_tracked(a)]
            if tracked:
                if data.dtype.kind == "c":
                    raise ComplexValueError(
                        f"{prim.name} of a recorded array gives a complex result: pullback "
                        "does not differentiate complex values (their gradients would lose "
                        "the imaginary part). What to do: compute with the real and "
                        "imaginary parts as two real arrays, or outside record().")
                result._node = Node(prim, args, params, tracked,
                                    0 if owner is None else owner._version)
                return result
    if history or inherited or recording:
        result._why = _why_untracked(prim, args, recording)
    return result


def record_custom(prim, args, params, outputs, tracked=None):
    """Link already-computed ``outputs`` to one node per output (custom Functions,
    compiled functions).  ``prim.vjps[i]`` (or ``prim.vjp_all``, with the tracked
    positions after ``ans``) receives ``g, ans, *args, out_index=k``.
    ``tracked``: the positions of the args gradients flow into, if the caller knows them
    (``is_tracked`` of each NDArray, in order)."""
    args = tuple(args)
    if tracked is None:
        tracked = [i for i, a in enumerate(args) if type(a) is NDArray and is_tracked(a)]
    if _state.recording and tracked:
        for k, out in enumerate(outputs):
            out._node = Node(prim, args, dict(params, out_index=k), tracked,
                             _owner(out)._version)
        return
    why = _why_untracked(prim, args, _state.recording)
    for out in outputs:
        out._why = why


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


def _topological_order(heads, stop=frozenset()):
    """Arrays reachable from heads, each after every array that consumes it; the history
    behind an array whose id is in ``stop`` is not walked.

    A node is always created after the nodes of its inputs, so newest first is such an
    order: the walk only collects the arrays, and one sort orders them."""
    reached = set()
    recorded, leaves = [], []   # arrays with a node, newest first after the sort; the rest
    stack = list(heads)
    while stack:
        arr = stack.pop()
        key = id(arr)
        if key in reached:
            continue
        reached.add(key)
        node = arr._node
        if node is None:
            leaves.append(arr)
            continue
        recorded.append(arr)
        if not node.freed and key not in stop:
            args = node.args
            for i in node.tracked:
                stack.append(args[i])
    recorded.sort(key=_serial, reverse=True)
    recorded += leaves   # leaves last, in the order reached
    return recorded


_serial = operator.attrgetter("_node.serial")


def _check_versions(arr, node) -> None:
    versions = node.versions
    for i, a in enumerate(node.args):
        v = versions[i]
        if v is not None and (a if a._base is None else a._base)._version != v:
            raise InPlaceError(
                f"an input of shape {a.shape} to a recorded '{node.prim.name}' was changed in "
                "place after it was recorded, so its gradient can no longer be computed. Do the "
                "in-place update after backward(), or write the new value to a new array."
            )
    if (arr if arr._base is None else arr._base)._version != node.out_version:
        raise InPlaceError(
            f"the result (shape {arr.shape}) of a recorded '{node.prim.name}' was changed in "
            "place after it was recorded; its gradient would be wrong. Write the new value "
            "to a new array instead."
        )


def check_head_count(n_grads: int, n_heads: int) -> None:
    """The head-gradient rules (``backward``, ``pb.vjp``): one gradient per head..."""
    if n_grads != n_heads:
        raise HeadGradientError(
            f"got {n_grads} head gradients for {n_heads} heads; pass one per head"
        )


def check_head_gradient(shape, dtype, head_shape, head_dtype) -> None:
    """... of its head's shape and dtype: never broadcast, never cast (a complex head
    of a real output would lose its imaginary part)."""
    if shape != head_shape:
        raise HeadGradientError(
            f"head gradient has shape {shape} but its head has shape {head_shape}; "
            "they must match"
        )
    if dtype != head_dtype:
        raise HeadGradientError(
            f"head gradient has dtype {dtype} but its head has dtype "
            f"{head_dtype}; convert it with .astype('{head_dtype}')"
        )


def _head_gradients(heads, head_grads):
    if head_grads is None:
        head_grads = [None] * len(heads)
    check_head_count(len(head_grads), len(heads))
    out = []
    for h, g in zip(heads, head_grads, strict=True):
        if g is None:
            ones = np.empty(h._data.shape, h._data.dtype)   # np.ones_like, at half its cost
            ones.fill(1)
            out.append(NDArray(ones))
            continue
        g = g if isinstance(g, NDArray) else NDArray(as_data(g))
        check_head_gradient(g.shape, g._data.dtype, h.shape, h._data.dtype)
        out.append(g)
    return out


def _leading_to(order, targets, stop):
    """The ids of the arrays in ``order`` (a topological order) from which an array whose
    id is in ``targets`` can be reached, the targets included.  A freed node counts as
    leading there, so that reaching it still raises GraphFreedError."""
    useful = set(targets)
    for arr in reversed(order):  # every array after the arrays it was computed from
        key = id(arr)
        node = arr._node
        if node is None or key in useful or key in stop:
            continue
        if node.freed:
            useful.add(key)
            continue
        args = node.args
        for i in node.tracked:
            if id(args[i]) in useful:
                useful.add(key)
                break
    return useful


def _run_backward(heads, head_grads, retain_graph, create_graph, train_mode,
                  stop=frozenset(), targets=None):
    """Propagate from ``heads``; returns {id(array): (array, gradient)} for every array
    the pass reached with a gradient.  Nothing propagates past an array in ``stop``.
    With ``targets`` (ids), gradients flow only into arrays that lead to a target: a rule
    whose result could reach no target is not run."""
    add = primitives.add
    for h in heads:
        if type(h) is not NDArray:
            raise TypeError(f"backward()/grad() heads must be NDArrays, got {type(h).__name__}")
        if h._node is None and h._grad is None:
            raise NotRecordedError(_not_recorded_message(h))
    grads = {}
    for h, g in zip(heads, _head_gradients(heads, head_grads), strict=True):
        grads[id(h)] = g if id(h) not in grads else add(grads[id(h)], g)
    reached = {}
    outer_pass, _state.backward_pass = _state.backward_pass, next(_passes)
    try:
        _walk_backward(heads, grads, reached, retain_graph, create_graph, train_mode, stop,
                       targets)
    finally:
        _state.backward_pass = outer_pass
    return reached


def _walk_backward(heads, grads, reached, retain_graph, create_graph, train_mode, stop,
                   targets):
    """The body of ``_run_backward``: fills ``reached`` from the head gradients."""
    add = primitives.add
    state = _state   # a StateScope(recording=create_graph, training=train_mode), inline
    saved = state.recording, state.training
    if create_graph is not None:
        state.recording = create_graph
    if train_mode is not None:
        state.training = train_mode
    try:
        order = _topological_order(heads, stop)
        useful = None if targets is None else _leading_to(order, targets, stop)
        for arr in order:
            g = grads.pop(id(arr), None)
            if g is None:
                continue
            reached[id(arr)] = (arr, g)
            node = arr._node
            if node is None or id(arr) in stop:
                continue
            if node.freed:
                raise GraphFreedError(
                    "backward() reached a part of the graph that an earlier backward() already "
                    "freed. Pass retain_graph=True to the first backward() to differentiate the "
                    "same graph again, or recompute the output inside record()."
                )
            _check_versions(arr, node)
            args, prim = node.args, node.prim
            parts = None if prim.vjp_all is None else prim.vjp_all(
                g, arr, node.tracked, *args, **node.params)
            for k, i in enumerate(node.tracked):
                key = id(args[i])
                if useful is not None and key not in useful:
                    continue
                gi = prim.vjps[i](g, arr, *args, **node.params) if parts is None else parts[k]
                if gi is None:
                    continue
                grads[key] = gi if key not in grads else add(grads[key], gi)
            if not retain_graph:
                node.free()
                if arr._grad is not None:   # a variable keeps its buffer, as a leaf (MXNet)
                    arr._node = None
    finally:
        state.recording, state.training = saved


def backward(heads, head_grads=None, retain_graph=False, train_mode=True):
    """Accumulate d(heads)/d(variable) into each reached variable's ``.grad``."""
    heads = list(heads)
    reached = _run_backward(heads, head_grads, retain_graph, False, train_mode)
    while reached:
        arr, g = reached.popitem()[1]   # popped: the gradient's last holder is ``g``
        buffer = arr._grad
        if buffer is None:
            continue
        if arr._grad_req == "add":
            buffer._data += g._data if g._data.shape == arr.shape else \
                np.broadcast_to(g._data, arr.shape)
        elif _adoptable(buffer, g) == _ADOPTABLE:
            buffer._data = g._data   # a fresh gradient nobody else sees: no copy
        else:
            buffer._data[...] = g._data if g._data.shape == arr.shape else \
                np.broadcast_to(g._data, arr.shape)
        _owner(buffer)._version += 1


def _adoptable(buffer, g):
    """Whether a 'write' gradient buffer may take the gradient's array instead of a copy
    of it (a product such as W1's gradient is 800 kB, copied every step): both arrays own
    their memory and match in shape, dtype and layout, the buffer is no view, and nothing
    but ``buffer`` holds the old array and nothing but ``g`` (the caller's local) holds
    ``g`` and its array -- no numpy view, alias, user reference, node or stack that would
    see the swap.  Returns ``_ADOPTABLE`` (the reference counts of a sole owner, measured
    once by ``_calibrate`` through this same code) or something else."""
    data, old = g._data, buffer._data
    if type(data) is not np.ndarray or data.base is not None or old.base is not None \
            or buffer._base is not None or g._base is not None or g._node is not None \
            or data.shape != old.shape or data.dtype != old.dtype \
            or not data.flags.c_contiguous or not data.flags.writeable:
        return None
    return sys.getrefcount(g), sys.getrefcount(data), sys.getrefcount(old)


def _calibrate():
    """``_adoptable``'s counts for arrays held as ``backward`` holds a sole-owned one."""
    g, buffer = NDArray(np.zeros(1)), NDArray(np.zeros(1))
    return _adoptable(buffer, g)


def grad(heads, variables, head_grads=None, retain_graph=None, create_graph=False,
         train_mode=True, held=()):
    """Gradients of heads with respect to variables, as new arrays (``.grad`` untouched).

    With ``create_graph`` every returned gradient can be differentiated again: one that
    depends on no variable becomes a recorded constant (its derivative is zero).  Only
    the rules on a path from a head to a variable run (the gradient of anything else
    would be thrown away).  ``held``: arrays taken as constants (their history is not
    walked): a partial derivative, as a node's VJP for one of several inputs needs.
    """
    for v in variables:
        if not isinstance(v, NDArray) or not is_tracked(v):
            raise NotRecordedError(
                "autograd.grad() needs variables that had attach_grad() called before "
                "recording; one of the variables has no gradient buffer and no history"
            )
    if retain_graph is None:
        retain_graph = create_graph
    # With one variable, the history behind it cannot matter: not walking it keeps
    # nested reverse mode (grad of an intermediate inside a loop) linear, not quadratic.
    stop = frozenset({id(variables[0])}) if len(variables) == 1 else frozenset()
    if held:
        stop = stop | {id(h) for h in held}
    reached = _run_backward(list(heads), head_grads, retain_graph, create_graph, train_mode,
                            stop, targets={id(v) for v in variables})
    out = []
    given = {id(h) for h in (head_grads or ()) if h is not None}
    for v in variables:
        hit = reached.get(id(v))
        g = hit[1] if hit is not None else NDArray(np.zeros_like(v._data))
        if id(g) in given and g._node is None:   # never hand the caller's head back
            g = NDArray(g._data.copy())
        if create_graph and g._node is None:
            g = g._alias()
            g._node = Node(_Constant, (), {}, (), _owner(g)._version)
        out.append(g)
    return out


# ndarray.py and primitives.py import this module, so they are bound last (any import
# order works: each of the three modules imports the others at its end or uses them late).
from . import primitives
from .ndarray import NDArray, as_data

_ADOPTABLE = _calibrate()
