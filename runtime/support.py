"""Helpers that generated code calls: gradient accumulation and structural values.

Generated adjoint code represents a zero gradient as ``None``.  ``accumulate``
and ``add_grads`` keep that convention so no zero arrays are ever built.
Tuples and lists (a helper's several return values, local lists built with
``append``) get gradients of the same structure: a list of per-item gradients.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np

from . import primitives as P
from .ndarray import NDArray, index_key


def _raw_op(prim):
    """The primitive on numpy arrays only (what compiled code calls): no NDArray check,
    no tape; results of arrays are at least 1-d, as everywhere in pullback; results of
    numbers only are numpy scalars (active Python numbers stay numbers)."""
    forward = prim.forward

    def raw_op(*args, **params):
        return P.raw_result(forward(*args, **params), args)

    raw_op.__name__ = prim.name
    return raw_op


def _numpy_op(prim):
    """The primitive as its numpy spelling (``np.sum``) computes it: a 0-d result is a
    numpy scalar, as numpy gives it, not a (1,) array."""
    forward = prim.forward

    def numpy_op(*args, **params):
        result = forward(*args, **params)
        return result[()] if type(result) is np.ndarray and not result.ndim else result

    numpy_op.__name__ = prim.name
    return numpy_op


def _build_namespaces():
    op_functions = {prim.name: _raw_op(prim) for prim in P.REGISTRY.values()
                    if prim.forward is not None}
    numpy_functions = {prim.name: _numpy_op(prim) for prim in P.REGISTRY.values()
                       if prim.forward is not None}
    rules = {}
    for prim in P.REGISTRY.values():
        for i, rule in enumerate(prim.vjps or ()):
            if rule is not None:
                rules[f"{prim.name}_{i}"] = rule
    return (SimpleNamespace(**op_functions), SimpleNamespace(**numpy_functions),
            SimpleNamespace(**rules))


def _jvp_namespace():
    """Forward-mode rules as tangent code calls them: ``jvp.dot_0`` (per argument),
    ``jvp.concat`` (one rule for all arguments)."""
    rules = {}
    for prim in P.REGISTRY.values():
        if prim.jvp is not None:
            rules[prim.name] = prim.jvp
        for i, rule in enumerate(prim.jvps or ()):
            if rule is not None:
                rules[f"{prim.name}_{i}"] = rule
    return SimpleNamespace(**rules)


ops, npops, vjp = _build_namespaces()


def _math_op(op):
    """A primitive as a math-module function computes it: in double precision whatever
    the argument, a number's result a Python float (``math.cos(np.float32(x))`` is one:
    weak under NEP 50, so ``math.exp(x) - x`` is a float32 again, as in Python)."""
    def math_op(*args):
        result = op(*(_double(a) for a in args))
        return float(result) if type(result) is np.float64 else result

    math_op.__name__ = op.__name__
    return math_op


def _double(value):
    dtype = getattr(value, "dtype", None)
    if dtype is not None and dtype.kind == "f" and dtype.itemsize < 8:
        return value.astype(np.float64)
    return value


mathops = SimpleNamespace(**{name: _math_op(getattr(ops, name))
                             for name in vars(ops)})
_general_dot = ops.dot


def _dot(x, y, **params):
    """``ops.dot``: two numpy matrices (most calls in compiled code) go to ``np.dot``
    directly, which is what the primitive computes for them; anything else to the
    primitive."""
    if not params and type(x) is np.ndarray and type(y) is np.ndarray \
            and x.ndim == 2 and y.ndim == 2:
        return np.dot(x, y)
    return _general_dot(x, y, **params)


ops.dot = _dot
jvp = _jvp_namespace()


def zero_tangent(value, batch=None):
    """The zero tangent of a value that carries none (an active variable given an inactive
    value, ``s = 0.0`` before a loop): zeros of its shape in a float dtype, a numpy zero
    for a number, the same structure for a list or tuple; ``batch``: with a leading axis
    of that many directions."""
    if isinstance(value, (list, tuple)):
        return type(value)(zero_tangent(v, batch) for v in value)
    if isinstance(value, dict):
        return {k: zero_tangent(v, batch) for k, v in value.items()}
    kind = type(value)
    lead = () if batch is None else (batch,)
    if kind is np.ndarray:
        dtype = value.dtype if value.dtype.kind in "fc" else np.float64
        return np.zeros(lead + value.shape, dtype)
    dtype = value.dtype.type if isinstance(value, np.inexact) else np.float64
    return dtype(0) if batch is None else np.zeros(lead, dtype)


# ----- batched tangents (pb.jacfwd): a leading axis of directions -------------------------

def lift(t, ans):
    """A batched operand tangent with ones inserted after its batch axis, so that it
    broadcasts against the result ``ans`` as its operand does (a number's against an
    array, a row against a matrix)."""
    if type(t) is np.ndarray and type(ans) is np.ndarray and t.ndim - 1 >= ans.ndim:
        return t   # the common case first: nothing to insert
    missing = np.ndim(ans) - (np.ndim(t) - 1)
    if missing <= 0:
        return t
    t = np.asarray(t)
    return t.reshape(t.shape[:1] + (1,) * missing + t.shape[1:])


def batched_like(t, ans, batch):
    """A batched tangent of shape ``(batch,) + shape(ans)`` (broadcast or reshaped)."""
    if type(t) is np.ndarray and type(ans) is np.ndarray and t.shape[1:] == ans.shape \
            and t.ndim and t.shape[0] == batch:
        return t   # the common case first: already of the batched shape
    if isinstance(t, (list, tuple, dict)):   # a container's tangent: its items' own
        return t
    shape = (batch,) + P.shape_of(ans)
    t = np.asarray(t)
    if t.shape == shape:
        return t
    if t.size == int(np.prod(shape)) and t.ndim and t.shape[0] == batch:
        return t.reshape(shape)
    return np.ascontiguousarray(np.broadcast_to(t, shape))


def batched_index(t, key):
    """``value[key]``'s batched tangent: a container's item, an array's elements under
    the batch axis."""
    if isinstance(t, (list, tuple, dict)):
        return t[key]
    return P.batched_getitem(np.asarray(t), key)


def batched_join(items, axis=0, stack=False):
    """``support.join``'s batched tangent: the pieces' tangents joined under the batch
    axis."""
    axis = axis + 1 if axis >= 0 else axis
    parts = [_batched_array(i) for i in items]
    return np.stack(parts, axis=axis) if stack else np.concatenate(parts, axis=axis)


def _batched_array(t):
    """A batched tangent as one array: a list literal's (``[1.0, x]``: one tangent per
    item, each with the directions' axis first) stacked after that axis."""
    if isinstance(t, (list, tuple)):
        return np.stack([_batched_array(item) for item in t], axis=1)
    return np.asarray(t)


def batched_rule(rule, t, ans, *args, **params):
    """A table JVP rule over a batch of tangents: its batched form in one call where the
    table has one for the case (``primitives.BATCHED_JVPS``), else once per direction,
    stacked.  ``t`` may be a list, tuple or dict of batched tangents (``np.array([x, y,
    2.0])``'s): direction ``b`` is then each item's ``b``-th, not the ``b``-th item."""
    batched = P.BATCHED_JVPS.get(rule)
    if batched is not None and type(t) is np.ndarray:
        position, form = batched
        if t.shape[1:] == P.shape_of(args[position]):
            result = _batched_shape(form(t, ans, *args, **params), len(t), ans)
            if result is not None:
                return result
    return np.stack([np.asarray(tangent_like(rule(_direction(t, b), ans, *args, **params),
                                             ans))
                     for b in range(_batch_size(t))])


def _direction(t, b):
    """Direction ``b`` of a batched tangent (None: none), containers item by item."""
    if t is None:
        return None
    if isinstance(t, (list, tuple)):
        return type(t)(_direction(item, b) for item in t)
    if isinstance(t, dict):
        return {k: _direction(item, b) for k, item in t.items()}
    return t[b]


def _batch_size(t):
    if isinstance(t, (list, tuple, dict)):
        for item in (t.values() if isinstance(t, dict) else t):
            found = _batch_size(item)
            if found is not None:
                return found
        return None
    return None if t is None else len(t)


def _batched_shape(result, batch, ans):
    """A batched form's result as ``(batch,) + shape(ans)`` (a 0-d result spelled (1,)
    by ``ops``), or None where only the per-direction rule knows how it spreads."""
    if result is None:
        return None
    shape = (batch,) + P.shape_of(ans)
    if result.shape == shape:
        return result
    if result.shape[:1] == (batch,) and result.size == int(np.prod(shape)):
        return result.reshape(shape)
    return None


def batched_joint(rule, tangents, ans, *args, **params):
    """A whole-primitive JVP rule (``jvp.concat``) over a batch of tangents."""
    batched = P.BATCHED_JOINT_JVPS.get(rule)
    if batched is not None:
        batch = next(len(t) for t in tangents if t is not None)
        result = _batched_shape(batched(tangents, ans, *args, **params), batch, ans)
        if result is not None:
            return result
    batch = next(len(t) for t in tangents if t is not None)
    return np.stack([np.asarray(tangent_like(
        rule([None if t is None else t[b] for t in tangents], ans, *args, **params), ans))
        for b in range(batch)])


def tangent_like(t, ans):
    """A tangent given the shape of its value ``ans``: contributions of broadcast operands
    spread to the result (``x + y`` with ``y`` larger and inactive), a (1,)-shaped
    reduction's tangent as the numpy scalar of a numpy-spelled reduction."""
    kind = type(ans)
    if kind is np.ndarray:
        if type(t) is np.ndarray and t.shape == ans.shape:
            return t
    elif type(t) is kind:   # numbers (scalar loops): the common case, first
        return t
    shape = P.shape_of(ans)
    if P.shape_of(t) == shape:
        return t
    if kind is not np.ndarray:   # a number: its tangent is one element
        return np.asarray(t).reshape(-1)[0]
    if np.size(t) == ans.size:
        return np.reshape(t, shape)
    return np.ascontiguousarray(np.broadcast_to(t, shape))


def numpy_scalar(value):
    """A fused run's trailing reduction spelled as numpy (``np.sum``): numpy's scalar."""
    return value.reshape(-1)[0] if type(value) is np.ndarray and value.size == 1 else value

# Whole-array reductions whose only use is ``.asscalar()`` (loop and branch conditions
# such as ``nd.norm(b).asscalar() < 1000``): the generated forward calls these
# instead of the op then ``asscalar``, skipping the (1,)-array round trip.
SCALAR_REDUCTIONS = ("sum", "mean", "max", "min", "prod", "norm")


def _scalar_reduction(name):
    forward = P.REGISTRY[name].forward
    op = getattr(ops, name)

    def scalar(x):
        if type(x) is np.ndarray:
            result = forward(x)
            return asscalar(result) if type(result) is np.ndarray else result
        return asscalar(op(x))

    scalar.__name__ = f"scalar_{name}"
    return scalar


#: up to this many elements numpy computes ``x + x`` faster than ``x * 2`` (measured: half
#: the time at 3..1000 elements, where the Python number's conversion dominates; 1.5x
#: more from ~8000 on, where ``x * 2`` streams one operand)
DOUBLE_BY_ADDING_MAX = 4096


_BOOL = np.dtype(bool)


def double(x):
    """``x * 2`` (the same value either way), spelled the faster way: ``x + x`` for small
    arrays and numbers, but never for numpy booleans (they add to booleans)."""
    if type(x) is np.ndarray:
        if x.size <= DOUBLE_BY_ADDING_MAX and x.dtype is not _BOOL:
            return x + x
        return x * 2
    if type(x) is np.bool_:
        return x * 2
    return x + x


def add_grads(total, part):
    """``total + part`` where either may be None (zero), a per-item list (the gradient of a
    list or tuple; an array gradient of one, from a primitive that read it as an array,
    counts by its rows) or a per-key dict (the gradient of a dict; absent keys are zero)."""
    if part is None:
        return total
    if total is None:
        return part
    if isinstance(part, dict) or isinstance(total, dict):
        merged = dict(total)
        for key, value in part.items():
            merged[key] = add_grads(merged.get(key), value)
        return merged
    if isinstance(part, list) or isinstance(total, list):
        return [add_grads(t, p) for t, p in zip(list(total), list(part), strict=True)]
    return total + part


def accumulate(total, rule, g, *args, **params):
    """``total += rule(g, *args, **params)``, skipping the rule when ``g`` is zero."""
    if g is None:
        return total
    return add_grads(total, rule(g, *args, **params))


def unbroadcast(g, value):
    """A per-element gradient summed down to the shape of ``value`` (None stays None)."""
    if g is None:
        return None
    if type(g) is np.ndarray and type(value) is np.ndarray:   # the common case, directly
        shape = value.shape
        if g.shape == shape:
            return g
        if shape and g.ndim:   # what P.sum_to computes for them, without its op call
            return P.sum_to.prim.forward(g, shape=shape)
    if type(g) in P.SCALAR_TYPES and type(value) in P.SCALAR_TYPES:
        return g   # a number's gradient (scalar loops): nothing to sum
    shape = P.shape_of(value)
    if P.shape_of(g) == shape:
        return g
    if shape == ():
        return np.sum(g)   # a number's gradient is a number, not a one-element array
    return P.sum_to(np.asarray(g), shape=shape)


_LIKE = {}


def like(value):
    """What the forward saves of a value whose every adjoint read is of its shape or dtype
    only (``unbroadcast(g, x)``, a kernel VJP's input it never reads): an array becomes a
    read-only broadcast of one element of its dtype (no data, the same object for every
    array of that shape and dtype); a number, one ``1`` of its type (shared); a tuple of
    them, item by item; anything else (lists, None, bools) is itself."""
    kind = type(value)
    if kind is np.ndarray:
        key = (value.dtype, value.shape)
        found = _LIKE.get(key)
        if found is None:
            if len(_LIKE) > 4096:
                _LIKE.clear()
            found = _LIKE[key] = np.broadcast_to(np.ones((), value.dtype), value.shape)
        return found
    if kind is tuple:
        return tuple([like(v) for v in value])
    if kind is float or kind is int or isinstance(value, np.generic):
        found = _LIKE.get(kind)   # a number's stand-in: one 1 of its type (no new object)
        if found is None:
            found = _LIKE[kind] = kind(1)
        return found
    return value


def item_grad_into(total, g, key, length):
    """Adjoint of ``y = t[key]`` for a tuple ``t`` of ``length`` items (a fused kernel's
    outputs): the per-item gradient list, without reading ``t``."""
    if g is None:
        return total
    total = [None] * length if total is None else list(total)   # never shared
    total[key] = add_grads(total[key], g)
    return total


def index_grad(total, g, value, key):
    """Adjoint of ``y = value[key]`` for arrays, tuples, lists and ranges."""
    if g is None:
        return total
    if isinstance(value, (list, tuple)):
        total = [None] * len(value) if total is None else list(total)   # never shared
        if isinstance(key, slice):   # a slice of a list: its gradient is a list
            for k, part in zip(range(*key.indices(len(value))), g, strict=True):
                total[k] = add_grads(total[k], part)
            return total
        total[key] = add_grads(total[key], g)
        return total
    if isinstance(value, dict):
        total = {} if total is None else dict(total)   # never shared
        total[key] = add_grads(total.get(key), g)
        return total
    if isinstance(value, np.generic):   # a numpy scalar indexed (``np.sum(a)[None]``)
        part = P._getitem_vjp(np.asarray(raw(g)), None, np.asarray(value), index_key(key))
        return add_grads(total, np.asarray(raw(part)).sum())   # a number's: a number
    if not isinstance(value, (NDArray, np.ndarray)):
        return total
    g = np.asarray(raw(g))
    return add_grads(total, raw(P._getitem_vjp(g, None, value, index_key(key))))


def join(items, axis=0, stack=False):
    """``np.stack(items, axis)`` or ``np.concatenate(items, axis)`` of raw arrays."""
    items = [raw(v) for v in items]
    return np.stack(items, axis=axis) if stack else np.concatenate(items, axis=axis)


def join_grad(g, items, axis=0, stack=False):
    """The per-item gradient list of ``join(items, axis, stack)`` given its gradient."""
    if g is None:
        return None
    if stack:
        return [np.take(g, k, axis=axis) for k in range(len(items))]
    g = np.asarray(g)
    axis = axis % g.ndim
    lead, parts, start = (slice(None),) * axis, [], 0
    for v in items:   # views of g, as np.split gives them (without its Python cost)
        end = start + np.shape(raw(v))[axis]
        parts.append(g[(*lead, slice(start, end))])
        start = end
    return parts


def item_grad(g, index):
    """The gradient of item ``index`` of a structure whose gradient is ``g`` (a dict's
    gradient holds only the keys that got one)."""
    if g is None:
        return None
    if isinstance(g, dict):
        return g.get(index)
    return g[index]


# ----- containers in compiled code are values: every change makes a new one --------------

def setitem(items, key, value):
    """``items[key] = value``: into an array's memory, in place (as Python does; the
    analysis refused the statement where another name, or the caller, would see it), or on
    a dict or list as a new container (refused where another name refers to the old one)."""
    if isinstance(items, NDArray):
        items = items._data   # made inside the function (nd.zeros): compiled code is raw
    if isinstance(items, np.ndarray):
        items[key] = raw(value)   # numpy casts the value into the array's dtype
        return items
    if isinstance(items, dict):
        new = dict(items)
    elif isinstance(items, list):
        if isinstance(key, slice):
            raise TypeError("xs[i:j] = ... on a list (which may change its length) is not "
                            "supported in compiled code: build a new list instead")
        new = list(items)
    else:
        raise TypeError(f"item assignment into a {type(items).__name__} is not supported in "
                        "compiled code (only into arrays, dicts and lists)")
    new[key] = value
    return new


def setitem_copied(items, key, value):
    """``setitem`` into a copy of an array: an older reference to its memory may still be
    read by the adjoint (analysis: ``copied_writes``)."""
    if isinstance(items, (NDArray, np.ndarray)):
        items = np.array(raw(items), copy=True)
    return setitem(items, key, value)


def read(items, key):
    """``items[key]`` of an array that compiled code writes into: a copy where numpy would
    give a view, so no value read before a write changes under it (the analysis refused a
    view that is used after the write, where Python would see the change)."""
    items = raw(items)
    value = items[key]
    if isinstance(value, np.ndarray) and isinstance(items, np.ndarray) \
            and np.may_share_memory(value, items):
        return value.copy()
    return value


class Overwritten(tuple):
    """What the forward saves before a write into an array: ``(items it overwrites,)`` (a
    tuple, so ``Stack.nbytes`` counts the data)."""

    __slots__ = ()

    @property
    def values(self):
        return self[0]


def overwritten(items, key):
    """Before ``items[key] = value``: an array's items at ``key`` (a copy), or a dict or
    list itself (never changed: the write makes a new one)."""
    items = raw(items)
    if isinstance(items, np.ndarray):
        return Overwritten((np.array(items[key], copy=True),))
    return items


def restore(items, key, saved):
    """The adjoint's value before ``items[key] = value`` from what ``overwritten`` saved:
    a copy of the array with its old items put back (the forward's arrays, which a second
    adjoint run reads too, are never changed), or the saved container."""
    if isinstance(saved, Overwritten):
        old = np.array(items, copy=True)
        old[key] = saved.values
        return old
    return saved


def setitem_grad(g, key):
    """The gradient of the container before ``items[key] = value``: the old item at
    ``key`` was overwritten, so it gets none (an array's: a copy with zeros there)."""
    if g is None:
        return None
    if isinstance(g, dict):
        return {k: v for k, v in g.items() if k != key} or None
    if isinstance(g, list):
        g = list(g)
        g[key] = None
        return g
    g = np.array(g, copy=True)
    g[key] = 0
    return g


def _repeats_an_index(shape, key) -> bool:
    """Whether an index with integer arrays names an element twice (``x[[0, -3]] = v`` of
    3 items: only one write lands, so the other item of ``v`` has no gradient, which numpy
    does not say): counted exactly, as ``np.add.at`` of ones."""
    parts = key if isinstance(key, tuple) else (key,)
    if not any(isinstance(p, (list, np.ndarray)) and np.asarray(p).dtype.kind in "iu"
               for p in parts):
        return False
    count = np.zeros(shape, dtype=np.int64)
    np.add.at(count, key, 1)
    return bool((count > 1).any())


def setitem_value_grad(g, items, key, value):
    """The gradient of ``value`` in ``items[key] = value`` given ``items``' gradient ``g``
    after it: the item's gradient (a container's), or the written region of ``g`` summed
    to ``value``'s shape (an array's: ``value`` broadcast into the region)."""
    if g is None:
        return None
    if isinstance(g, (dict, list)):
        return item_grad(g, key)
    dtype = getattr(raw(items), "dtype", None)
    if dtype is not None and dtype.kind not in "fc":
        raise TypeError(f"a differentiated value written into an array of {dtype} is cast "
                        "to it (its gradient is not defined); make the array float "
                        "(np.zeros(n) rather than np.zeros(n, dtype=int))")
    if _repeats_an_index(np.shape(raw(items)), key):
        raise ValueError("x[index] = v with an integer index array that repeats an element "
                         "(or several index arrays): only one of the writes lands, so the "
                         "gradient of v is ambiguous; use distinct indices or a mask")
    part = np.asarray(g)[key]
    if isinstance(value, (list, tuple)):   # an array gradient of a list counts by its rows
        return P.sum_to(np.asarray(part), shape=np.shape(raw(value)))
    return unbroadcast(part, value)


def setitem_tangent(t, key, value_dot):
    """Forward mode: the tangent after ``items[key] = value`` is the tangent before with
    ``value``'s tangent written in (a new array: tangents may be shared)."""
    if isinstance(t, (dict, list)):
        return setitem(t, key, value_dot)
    new = np.array(raw(t), copy=True)
    new[key] = raw(value_dot)
    return new


def batched_setitem_tangent(t, key, value_dot):
    """``setitem_tangent`` for tangents with a leading axis of directions."""
    if isinstance(t, (dict, list)):
        return setitem(t, key, value_dot)
    new = np.array(raw(t), copy=True)
    full = (slice(None),) + (key if isinstance(key, tuple) else (key,))
    region = P.batched_getitem(new, key)   # the directions first (separated indices too)
    dots = np.asarray(raw(value_dot))
    if dots.ndim < region.ndim:   # broadcast past the direction axis
        dots = dots.reshape(dots.shape[:1] + (1,) * (region.ndim - dots.ndim) + dots.shape[1:])
    axis = P.batched_axis(key)
    if axis:   # where numpy's indexing puts the directions' axis
        dots = np.moveaxis(np.broadcast_to(dots, region.shape), 0, axis)
    new[full] = dots
    return new


def extend(items, more):
    """``lst.extend(more)`` as a new list."""
    if not isinstance(items, list):
        raise TypeError(f"extend() of a {type(items).__name__} is not supported in compiled "
                        "code (only of lists)")
    return items + list(more)


def head_grad(g, items):
    """The gradient of ``items`` from that of ``items + list(more)``."""
    return None if g is None else list(g)[:len(items)]


def tail_grad(g, items):
    """The gradient of ``more`` from that of ``items + list(more)``."""
    return None if g is None else list(g)[len(items):]


def without(items, key):
    """The container after ``items.pop(key)`` (its item was read before), as a new one."""
    if isinstance(items, dict):
        new = dict(items)
        new.pop(key, None)
        return new
    if isinstance(items, list):
        new = list(items)
        del new[key]
        return new
    raise TypeError(f"pop() of a {type(items).__name__} is not supported in compiled code")


def without_grad(g, items, key):
    """The gradient of ``items`` before ``items.pop(key)``: the popped item's comes from
    its read; a list's gradient gets a None back at its position."""
    if g is None:
        return None
    if isinstance(g, dict):
        return g
    g = list(g)
    g.insert(key % len(items), None)
    return g


def get(items, key, default=None):
    """``d.get(key, default)`` (a list of a dict's own items stays a value)."""
    return items.get(key, default)


def get_grad(g, items, key):
    """The gradient of ``d`` from ``y = d.get(key, default)``'s gradient ``g``."""
    if g is None or key not in items:
        return None
    return {key: g}


def default_grad(g, items, key):
    """The gradient of ``default`` from ``y = d.get(key, default)``'s gradient ``g``."""
    return None if key in items else g


def values(items):
    """``list(d.values())``: iterating over a dict's values in compiled code."""
    return list(items.values())


def items(items):
    """``list(d.items())``: iterating over a dict's (key, value) pairs."""
    return list(items.items())


def keys(items):
    """``list(d.keys())``: no gradient."""
    return list(items.keys())


def nth_key(items, index):
    """The ``index``-th key of a dict (``for k in d`` in compiled code); any other
    sequence's ``index``-th item."""
    if isinstance(items, dict):
        return list(items)[index]
    return items[index]


def values_grad(g, items):
    """The gradient of ``d`` from the gradient (a list) of ``list(d.values())``."""
    if g is None:
        return None
    return {k: part for k, part in zip(items, list(g), strict=True) if part is not None} or None


def items_grad(g, items):
    """The gradient of ``d`` from the gradient of ``list(d.items())`` (one per pair)."""
    if g is None:
        return None
    found = {}
    for k, pair in zip(items, list(g), strict=True):
        part = None if pair is None else pair[1]
        if part is not None:
            found[k] = part
    return found or None


class _OpenScopes(threading.local):
    def __init__(self):
        self.managers = []


_OPEN_SCOPES = _OpenScopes()


def scope_enter(manager):
    """The start of ``with manager:`` in compiled code (a state-only context manager)."""
    manager.__enter__()
    _OPEN_SCOPES.managers.append(manager)


def scope_exit(manager):
    """The end of ``with manager:`` in compiled code."""
    _OPEN_SCOPES.managers.pop()
    manager.__exit__(None, None, None)


def closes_scopes(function):
    """``function`` (generated code with ``with`` blocks), closing the blocks it opened when
    it raises -- as Python's ``with`` would: the flat generated code has no ``finally``."""
    import functools

    @functools.wraps(function)
    def closing(*args):
        depth = len(_OPEN_SCOPES.managers)
        try:
            return function(*args)
        except BaseException as exc:
            managers = _OPEN_SCOPES.managers
            while len(managers) > depth:
                managers.pop().__exit__(type(exc), exc, exc.__traceback__)
            raise
    return closing


def stop_gradient(value):
    """A value computed inside ``ag.pause()``: the same value, carrying no gradient (the
    compiler reads this call as an operation without one)."""
    return value


def assertion_failed(message=None):
    """``assert c, message`` in compiled code, where ``c`` was false."""
    raise AssertionError() if message is None else AssertionError(message)


def leaf(value, where):
    """Before a primitive reads a value the compiler could not prove to be an array or a
    number: a list, tuple or dict there would be read by Python's rules (concatenation,
    repetition) while its gradient followed numpy's."""
    if isinstance(value, (list, tuple, dict)):
        raise TypeError(f"{where}: a {type(value).__name__} is an operand of an operation "
                        "pullback differentiates as an array operation; convert it first "
                        "(np.asarray(xs), np.stack(xs)) or read its items")
    return value


def append(items, value):
    """``items + [value]`` (lists in compiled code are values, never mutated)."""
    return list(items) + [value]


def check_rebind(value, where):
    """Before ``x += v`` in compiled code, which rebinds ``x``: Python would change an
    array (or list) in place, and another name sharing it would see the change."""
    if isinstance(value, (np.ndarray, NDArray, list)):
        raise TypeError(f"{where}: this augmented assignment changes an array or list "
                        "that another name also refers to; compiled code would rebind it "
                        "instead (the other name would keep the old value). Write "
                        "x = x + v (a new value), or x = x.copy() before updating it.")


def as_array(items):
    """A list or tuple operand of a primitive as the array numpy makes of it."""
    return np.asarray(raw(items))


def without_last(g):
    """The gradient of ``items`` given the gradient of ``items + [value]``."""
    return None if g is None else g[:-1]


# ----- raw arrays: compiled code computes on numpy arrays, not NDArrays ---------------------

def raw(value):
    """The numpy array behind an NDArray (containers mapped); anything else unchanged."""
    if isinstance(value, NDArray):
        return value._data
    if isinstance(value, (tuple, list)):
        return type(value)(raw(v) for v in value)
    return value


def asscalar(value):
    """``x.asscalar()`` for NDArrays, numpy arrays and numbers alike."""
    if type(value) is np.ndarray and value.shape == (1,):
        return value[0]
    if isinstance(value, NDArray):
        return value.asscalar()
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(f"asscalar() needs an array of exactly one element, got shape "
                             f"{value.shape}")
        return value.reshape(-1)[0]
    return value


def item(value):
    scalar = asscalar(value)
    return scalar.item() if hasattr(scalar, "item") else scalar


def asnumpy(value):
    return np.array(raw(value), copy=True)


def detach(value):
    return value


def context(value, name):
    """``x.context`` / ``x.ctx`` of a value compiled code holds: an array's is the CPU
    (pullback's only device; numpy arrays have no such attribute), any other object's its
    own attribute."""
    if isinstance(value, (np.ndarray, np.generic, NDArray)):
        from .ndarray import cpu
        return cpu()
    return getattr(value, name)


def wait_to_read(value):
    return None


scalar_sum = _scalar_reduction("sum")
scalar_mean = _scalar_reduction("mean")
scalar_max = _scalar_reduction("max")
scalar_min = _scalar_reduction("min")
scalar_prod = _scalar_reduction("prod")
_norm_of_any_shape = _scalar_reduction("norm")


def scalar_norm(x):
    """``asscalar(norm(x))``; a 1-d float array (a loop condition's usual operand) takes
    the norm's own formula (``_norm_forward``: sqrt of the dot product) without layers."""
    if type(x) is np.ndarray and x.ndim == 1 and x.dtype.kind == "f":
        return np.sqrt(x.dot(x))
    return _norm_of_any_shape(x)
