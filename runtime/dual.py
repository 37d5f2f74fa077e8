"""Tangent rules that second-order code calls (``compiler/second.py``: forward-over-reverse).

The tangent of a generated adjoint is generated Python like the adjoint itself; this module
holds the rules its statements call.  A zero tangent is ``None`` (as a zero gradient is in
adjoint code), so every rule takes ``None`` for an operand without a tangent and returns
``None`` when no tangent reaches its result.

- arithmetic on values (``add``, ``mul``, ... over the operands and their tangents), the
  operators of inline derivatives (``g * y``);
- ``prim(name, dots, ans, *args, **params)``: the tangent of a primitive call, from the
  table's JVP rules (an elementwise op's from its VJP rule on operands broadcast to the
  result: its Jacobian is diagonal, so the two products are one formula);
- ``support(name, dots, *args)``: the tangent of a ``support`` helper; every helper the
  adjoint calls is linear in its gradient or container arguments, so its tangent is the
  helper applied to their tangents (``LINEAR``), or it carries none (``NO_TANGENT``);
- ``accumulate``: the tangent of ``support.accumulate(total, rule, g, *args)``, a VJP rule
  of the table applied to values that have tangents.  A rule is written with the table's
  ops (``primitives.py``), so it is evaluated once on ``Dual`` values: each op meeting a
  Dual runs its forward and its JVP rule (``apply``).  Nothing else meets a Dual: a numpy
  function reached with one raises a TypeError (``Dual.__array__``), never a lost tangent.
"""

from __future__ import annotations

import numpy as np

from . import primitives as P
from . import support as S
from .ndarray import NDArray


#: how many VJP rules are being evaluated on Dual values (any thread): only then may an op
#: meet a Dual beside an NDArray (a constant), which ``primitives.op`` checks for
evaluating = 0


def _evaluate(rule, g, args, params):
    global evaluating
    evaluating += 1
    try:
        return rule(g, *args, **params)
    finally:
        evaluating -= 1


class Dual:
    """A value and its tangent, inside a VJP rule evaluated for its tangent."""

    __slots__ = ("value", "tangent")

    def __init__(self, value, tangent):
        self.value, self.tangent = value, tangent

    shape = property(lambda self: P.shape_of(self.value))
    ndim = property(lambda self: np.ndim(self.value))
    size = property(lambda self: np.size(self.value))
    dtype = property(lambda self: np.asarray(self.value).dtype)

    def __array__(self, *args, **kwargs):
        raise TypeError("pullback: a numpy function met a value with a tangent inside a "
                        "VJP rule (forward-over-reverse follows the table's ops only)")

    def __float__(self):
        raise TypeError("pullback: float() of a value with a tangent inside a VJP rule")

    def __bool__(self):
        return bool(self.value)

    def sum(self, axis=None, dtype=None, out=None, keepdims=False, **kwargs):   # np.sum
        return P.sum(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        return P.reshape_raw(self, shape=shape[0] if len(shape) == 1 else shape)

    __add__ = lambda self, other: P.add(self, other)   # noqa: E731
    __radd__ = lambda self, other: P.add(other, self)   # noqa: E731
    __sub__ = lambda self, other: P.subtract(self, other)   # noqa: E731
    __rsub__ = lambda self, other: P.subtract(other, self)   # noqa: E731
    __mul__ = lambda self, other: P.multiply(self, other)   # noqa: E731
    __rmul__ = lambda self, other: P.multiply(other, self)   # noqa: E731
    __truediv__ = lambda self, other: P.divide(self, other)   # noqa: E731
    __rtruediv__ = lambda self, other: P.divide(other, self)   # noqa: E731
    __pow__ = lambda self, other: P.power(self, other)   # noqa: E731
    __rpow__ = lambda self, other: P.power(other, self)   # noqa: E731
    __neg__ = lambda self: P.negative(self)   # noqa: E731
    __gt__ = lambda self, other: self.value > _value(other)   # noqa: E731
    __ge__ = lambda self, other: self.value >= _value(other)   # noqa: E731
    __lt__ = lambda self, other: self.value < _value(other)   # noqa: E731
    __le__ = lambda self, other: self.value <= _value(other)   # noqa: E731


def _value(x):
    if type(x) is Dual:
        return x.value
    return x._data if type(x) is NDArray else x   # a constant read as raw data


def apply(prim, args, params):
    """An op of the table called with a Dual among ``args``: its value and tangent."""
    values = [_value(a) for a in args]
    ans = P.raw_result(prim.forward(*values, **params), values)
    if prim.vjps is None:
        return ans
    t = jvp(prim, [a.tangent if type(a) is Dual else None for a in args], ans, values, params)
    return ans if t is None else Dual(ans, t)


def jvp(prim, dots, ans, args, params):
    """The tangent of ``ans = prim(*args, **params)`` given the operands' tangents."""
    if prim.vjps is None or all(d is None for d in dots):   # not differentiable, or no tangent
        return None
    if prim.jvp is not None:
        return like(prim.jvp(tuple(dots), ans, *args, **params), ans)
    total = None
    if prim.jvps is not None:
        for rule, d in zip(prim.jvps, dots):
            if d is not None and rule is not None:
                total = _plus(total, rule(d, ans, *args, **params))
        return like(total, ans)
    if not prim.jvp_from_scalar:
        raise TypeError(f"pullback: the primitive {prim.name!r} has no JVP rule")
    shape = P.shape_of(ans)   # elementwise: the VJP rule on operands of the result's shape
    wide = [np.broadcast_to(a, shape) if _is_number_or_array(a) and P.shape_of(a) != shape
            else a for a in args]   # a 0-d operand too: its rule would sum over the result
    for rule, d in zip(prim.vjps, dots):
        if d is not None and rule is not None:
            spread = np.broadcast_to(d, shape) if P.shape_of(d) != shape else d
            total = _plus(total, rule(spread, ans, *wide, **params))
    return like(total, ans)


def _is_array(x) -> bool:
    return type(x) is np.ndarray


def _is_number_or_array(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic, float, int)) and not isinstance(x, bool)


def _plus(a, b):
    if a is None:
        return b
    return a if b is None else a + b


def like(t, ans):
    """``t`` (None: zero) with the shape of its value ``ans``."""
    if t is None or isinstance(ans, (list, tuple, dict)) or ans is None:
        return t
    return S.tangent_like(t, ans)


def prim(name, dots, ans, *args, **params):
    """The tangent of ``ans = ops.<name>(*args, **params)``."""
    return jvp(P.REGISTRY[name], dots, ans, args, params)


# ----- operators of the adjoint's inline derivatives --------------------------------------

def add(da, db, ans):
    return like(_plus(da, db), ans)


def sub(da, db, ans):
    return like(_plus(da, None if db is None else -db), ans)


def mul(a, b, da, db, ans):
    return like(_plus(None if da is None else da * b, None if db is None else a * db), ans)


def div(a, b, da, db, ans):
    return like(_plus(None if da is None else da / b,
                      None if db is None else -(ans * db) / b), ans)


def pow(a, b, da, db, ans):
    part_b = None
    if db is not None:
        log_a = np.log(np.where(np.greater(a, 0), a, 1.0)) if _is_array(a) else \
            (np.log(a) if a > 0 else 0.0)
        part_b = db * (ans * log_a)
    return like(_plus(None if da is None else da * (b * a ** (b - 1)), part_b), ans)


def mod(a, b, da, db, ans):
    return like(_plus(da, None if db is None else -(db * np.floor(a / b))), ans)


def neg(da):
    return None if da is None else -da


def index(da, key):
    """The tangent of ``value[key]`` (an array, or a tuple, list or dict of tangents)."""
    if da is None:
        return None
    return da[key]


def pack(kind, *dots):
    """The tangent of a tuple or list display: the items' tangents, or None if none."""
    if all(d is None for d in dots):
        return None
    return kind(dots)


def mapping(keys, dots):
    if all(d is None for d in dots):
        return None
    return dict(zip(keys, dots, strict=True))


def dense(dot, value):
    """A tangent with zeros in place of None (for helpers that build containers)."""
    if dot is None:
        return S.zero_tangent(value)
    if isinstance(dot, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(dot)(dense(d, v) for d, v in zip(dot, value, strict=True))
    if isinstance(dot, dict) and isinstance(value, dict):
        return {k: dense(dot.get(k), v) for k, v in value.items()}
    return dot


# ----- support helpers -----------------------------------------------------------------------

#: helper -> (positions it is linear in, whether None there must become zeros)
LINEAR = {
    "add_grads": ((0, 1), False), "unbroadcast": ((0,), False),
    "item_grad_into": ((0, 1), False), "index_grad": ((0, 1), False),
    "join_grad": ((0,), False), "item_grad": ((0,), False), "double": ((0,), False),
    "setitem_grad": ((0,), False), "head_grad": ((0,), False), "tail_grad": ((0,), False),
    "without_grad": ((0,), False), "get_grad": ((0,), False),
    "default_grad": ((0,), False), "values_grad": ((0,), False),
    "items_grad": ((0,), False), "without_last": ((0,), False),
    "numpy_scalar": ((0,), False), "raw": ((0,), False), "leaf": ((0,), False),
    "join": ((0,), True), "setitem": ((0, 2), True), "get": ((0, 2), True),
    "without": ((0,), True), "extend": ((0, 1), True), "append": ((0, 1), True),
    "values": ((0,), True), "items": ((0,), True), "as_array": ((0,), True),
    # array writes (support.setitem & co.): reads and saved items are linear in the array
    "read": ((0,), False), "overwritten": ((0,), False), "setitem_value_grad": ((0,), False),
    "setitem_copied": ((0, 2), True),
    # forward-mode code read again (forward over forward): a tangent takes its value's shape
    "tangent_like": ((0,), False),
    # batched forward-mode code read again (pb.jacfwd's directions at once): the same
    "batched_like": ((0,), False), "lift": ((0,), False), "batched_index": ((0,), False),
}
#: helpers with a tangent rule of their own in ``support`` below
SPECIAL = {"setitem", "restore", "batched_rule"}
#: helpers whose result carries no tangent (shapes, keys, conditions, checks)
NO_TANGENT = {"like", "keys", "nth_key", "check_rebind", "assertion_failed",
              "zero_tangent"} | {
    f"scalar_{name}" for name in S.SCALAR_REDUCTIONS}


def support(name, dots, *args, **params):
    """The tangent of ``support.<name>(*args, **params)``; ``dots``: one per argument."""
    if name == "setitem":   # into a copy: a tangent array may be shared (never in place)
        name = "setitem_copied"
    if name == "restore":
        return _restore_tangent(dots, *args)
    if name == "batched_rule":
        return _batched_rule_tangent(dots, *args, **params)
    positions, zeros = LINEAR[name]
    for i in positions:
        if i < len(dots) and dots[i] is not None:
            break
    else:   # no tangent reaches it
        return None
    given = list(args)
    for i in positions:
        if i < len(given):
            given[i] = dense(dots[i], args[i]) if zeros else dots[i]
    return getattr(S, name)(*given, **params)


def _batched_rule_tangent(dots, rule, t, ans, *args, **params):
    """The tangent of ``support.batched_rule(rule, t, ans, *args, **params)`` (batched
    forward-mode code read again): a JVP rule is linear in its tangent ``t``, so that part
    is the batched rule of ``t``'s tangent; where a tangent reaches the rule's other
    operands (a rule that reads them: ``matmul``'s the other factor), each direction's
    rule is read again as ``jvp_rule`` does, on Dual values."""
    t_dot, rest = dots[1], dots[2:]
    if all(d is None for d in rest) or _linear_rule(rule):
        return None if t_dot is None else S.batched_rule(rule, t_dot, ans, *args, **params)
    shape = P.shape_of(ans)
    directions = []
    for b in range(len(t)):
        given = (None if t_dot is None else t_dot[b],) + tuple(rest)
        d = jvp_rule(rule, given, t[b], ans, *args, **params)
        directions.append(np.zeros(shape) if d is None else np.asarray(S.tangent_like(d, ans)))
    return np.stack(directions)


def _linear_rule(rule) -> bool:
    """A JVP rule of an op linear in its argument (``_linear_jvp``): it reads its other
    operands for their shapes only."""
    return getattr(rule, "__qualname__", "").startswith("_linear_jvp.")


def _restore_tangent(dots, items, key, saved):
    """The tangent of ``support.restore(items, key, saved)``: the array's tangent with the
    saved items' tangent put back at ``key`` (a new array), or the saved container's."""
    items_dot, _, saved_dot = (list(dots) + [None] * 3)[:3]
    if not isinstance(saved, S.Overwritten):
        return saved_dot
    if items_dot is None and saved_dot is None:
        return None
    old = np.array(dense(items_dot, items), copy=True)
    old[key] = 0.0 if saved_dot is None else saved_dot.values
    return old


def rule_tangent(rule, g, g_dot, args, dots, params):
    """The tangent of ``rule(g, *args, **params)`` (a VJP rule of the table)."""
    if g_dot is None and all(d is None for d in dots):
        return None
    kind = _rule_kinds().get(rule)
    if kind is not None:
        return _structured_tangent(kind, rule, g, g_dot, args, dots, params)
    wrapped = [a if d is None else Dual(a, d) for a, d in zip(args, dots, strict=True)]
    result = _evaluate(rule, g if g_dot is None else Dual(g, g_dot), wrapped, params)
    return result.tangent if type(result) is Dual else None


def jvp_rule(rule, dots, t, ans, *args, **params):
    """The tangent of ``rule(t, ans, *args, **params)``, a JVP rule of the table called by
    forward-mode code (``jvp.norm_0``) read again for its own tangent (forward over
    forward); ``dots``: one per argument of the call.  A rule is linear in ``t`` and
    written with the table's ops, so it is evaluated once on Dual values."""
    if all(d is None for d in dots):
        return None
    values = (t, ans) + args
    wrapped = [a if d is None else Dual(a, d) for a, d in zip(values, dots, strict=True)]
    result = _evaluate(rule, wrapped[0], wrapped[1:], params)
    return like(result.tangent, ans) if type(result) is Dual else None


def accumulate(total_dot, rule, g_dot, dots, total, g, *args, **params):
    """The tangent of ``support.accumulate(total, rule, g, *args, **params)``."""
    if g is None:
        return total_dot
    return S.add_grads(total_dot, rule_tangent(rule, g, g_dot, args, dots, params))


_KINDS = None


def _rule_kinds() -> dict:
    """VJP rule -> how its tangent follows without Duals: ``("linear",)`` for an op linear
    in its arguments (a constant Jacobian: the rule is linear in ``g`` and reads its
    operands for their shapes only), ``("bilinear", i)`` for argument ``i`` of an op linear
    in each of two arguments (``dot``, ``matmul``: the rule is linear in ``g`` and in the
    other operand and does not read its own)."""
    global _KINDS
    if _KINDS is None:
        kinds = {}
        for prim in P.REGISTRY.values():
            names = [getattr(r, "__qualname__", "") for r in prim.jvps or ()]
            for i, rule in enumerate(prim.vjps or ()):
                if rule is None or not names:
                    continue
                if all(n.startswith("_linear_jvp.") for n in names):
                    kinds[rule] = ("linear",)
                elif len(names) == 2 and names[0].startswith("_bilinear_jvps.") \
                        and names[1].startswith("_bilinear_jvps."):
                    kinds[rule] = ("bilinear", i)
        _KINDS = kinds
    return _KINDS


def _structured_tangent(kind, rule, g, g_dot, args, dots, params):
    """The tangent of ``rule(g, *args)`` for a linear or bilinear op's rule: the rule
    itself applied to tangents (no Duals)."""
    total = None if g_dot is None else rule(g_dot, *args, **params)
    if kind[0] == "bilinear":
        other = 2 - kind[1]   # args are (ans, x, y): the other operand's position
        if dots[other] is not None:
            swapped = list(args)
            swapped[other] = dots[other]
            total = _plus(total, rule(g, *swapped, **params))
    return total


def accumulate_pair(total, total_dot, rule, g, g_dot, dots, *args, **params):
    """``(value, tangent)`` of ``support.accumulate(total, rule, g, *args, **params)``: the
    rule evaluated once, on Dual values where a tangent reaches it (a linear or bilinear
    op's rule: on tangents directly, ``_rule_kinds``)."""
    if g is None:
        return total, total_dot
    if g_dot is None and all(d is None for d in dots):
        return S.add_grads(total, rule(g, *args, **params)), total_dot
    kind = _rule_kinds().get(rule)
    if kind is not None:
        value = rule(g, *args, **params)
        tangent = _structured_tangent(kind, rule, g, g_dot, args, dots, params)
        return S.add_grads(total, value), S.add_grads(total_dot, tangent)
    wrapped = [a if d is None else Dual(a, d) for a, d in zip(args, dots, strict=True)]
    result = _evaluate(rule, g if g_dot is None else Dual(g, g_dot), wrapped, params)
    if type(result) is Dual:
        return S.add_grads(total, result.value), S.add_grads(total_dot, result.tangent)
    return S.add_grads(total, result), total_dot
