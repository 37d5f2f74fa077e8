"""Helpers that generated code calls: gradient accumulation and structural values.

Generated adjoint code represents a zero gradient as ``None``.  ``accumulate``
and ``add_grads`` keep that convention so no zero arrays are ever built.
Tuples and lists (a helper's several return values, local lists built with
``append``) get gradients of the same structure: a list of per-item gradients.
"""

from __future__ import annotations

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


ops, npops, vjp = _build_namespaces()


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
    """``total + part`` where either may be None (zero), or a per-item list."""
    if part is None:
        return total
    if total is None:
        return part
    if isinstance(part, list):
        return [add_grads(t, p) for t, p in zip(total, part, strict=True)]
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
        total[key] = add_grads(total[key], g)
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
    sizes = [np.shape(raw(v))[axis] for v in items]
    return np.split(g, np.cumsum(sizes)[:-1], axis=axis)


def item_grad(g, index):
    """The gradient of item ``index`` of a structure whose gradient is ``g``."""
    return None if g is None else g[index]


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
