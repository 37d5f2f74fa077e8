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
from .ndarray import NDArray, as_data

def _build_namespaces():
    op_functions = {}
    for value in vars(P).values():
        prim = getattr(value, "prim", None)
        if prim is not None and P.REGISTRY.get(prim.name) is prim:
            op_functions.setdefault(prim.name, value)
    rules = {}
    for prim in P.REGISTRY.values():
        for i, rule in enumerate(prim.vjps or ()):
            if rule is not None:
                rules[f"{prim.name}_{i}"] = rule
    return SimpleNamespace(**op_functions), SimpleNamespace(**rules)


ops, vjp = _build_namespaces()


def add_grads(total, part):
    """``total + part`` where either may be None (zero), or a per-item list."""
    if part is None:
        return total
    if total is None:
        return part
    if isinstance(part, list):
        return [add_grads(t, p) for t, p in zip(total, part, strict=True)]
    if isinstance(part, NDArray) or isinstance(total, NDArray):
        return P.add(total, part)
    return total + part


def accumulate(total, rule, g, *args, **params):
    """``total += rule(g, *args, **params)``, skipping the rule when ``g`` is zero."""
    if g is None:
        return total
    return add_grads(total, rule(g, *args, **params))


def index_key(key):
    """An index as numpy wants it: NDArrays inside become integer arrays."""
    if isinstance(key, NDArray):
        return key._data.astype(np.int64)
    if isinstance(key, tuple):
        return tuple(index_key(k) for k in key)
    return key


def index_grad(total, g, value, key):
    """Adjoint of ``y = value[key]`` for arrays, tuples, lists and ranges."""
    if g is None:
        return total
    if isinstance(value, (list, tuple)):
        part = [None] * len(value)
        part[key] = g
        return add_grads(total if total is not None else [None] * len(value), part)
    if not isinstance(value, NDArray):
        return total
    return add_grads(total, P._getitem_vjp(g, None, value, index_key(key)))


def item_grad(g, index):
    """The gradient of item ``index`` of a structure whose gradient is ``g``."""
    return None if g is None else g[index]


def pack_grad(g, count):
    """Normalise a structure's gradient: None or a list of ``count`` items."""
    if g is None:
        return [None] * count
    return list(g)


def append(items, value):
    """``items + [value]`` (lists in compiled code are values, never mutated)."""
    return list(items) + [value]


def without_last(g):
    """The gradient of ``items`` given the gradient of ``items + [value]``."""
    return None if g is None else g[:-1]


def ones_like(value):
    return NDArray(np.ones_like(value._data)) if isinstance(value, NDArray) else 1.0


def to_array(value, dtype=None):
    """An input as an NDArray (numpy arrays and Python numbers are wrapped)."""
    if isinstance(value, NDArray):
        return value
    data = np.asarray(value, dtype=dtype)
    if dtype is None and not np.issubdtype(data.dtype, np.inexact):
        data = data.astype(np.float64)
    return NDArray(as_data(data))
