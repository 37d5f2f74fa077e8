"""Lowering of a typed variant (``compiler/ir.py`` + ``compiler/infer.py``) to one native
function computing value and gradient: LLVM IR text through llvmlite.

``lower_function(forward, adjoint, typing)`` returns ``(ir_text, symbol)``.  The function

    i32 pb_native_<digest>(<one argument per parameter>, double seed, ptr results)

runs the forward, then the adjoint seeded with ``seed``, in one call.  Arguments are
``double`` for floats (float32 values passed as doubles, exact), ``i64`` for ints and
bools.  ``results`` (doubles) receives the value, then ``flag, gradient`` per parameter
(flag 0: the gradient is None).  It returns ``OK`` (0), or ``PYTHON_ROAD`` (1) when a check
of ``infer`` failed (the Python road would raise, or leave int64: it must run the call
instead), ``NO_MEMORY`` (2), ``UNPAIRED`` (3, an internal error).

What the code guarantees:

- **The IR's control flow as LLVM control flow**: ``if`` as branches, ``while`` and
  ``for`` over ranges as loops.  Every name is one stack slot of its static type
  (``alloca``; LLVM's SROA turns them into SSA values); ``Opt`` values are
  ``{i1 present, T}``.
- **The stack is data**: one growable buffer of 8-byte slots (``realloc``); a push stores
  its value's leaves (numbers, presence flags, range fields) in order, the pop of its tag
  loads them back with the tag's type; the buffer is freed on every exit.  No Python
  object is touched between entry and exit.
- **The Python road's arithmetic** (``infer.binary``/``infer.ufunc`` decide it): no
  fast-math, no FMA contraction; kernels' statements, unfused primitives and inline
  derivatives use the scalar language (the table's ``scalar`` formulas) and
  ``lower.FUNCTIONS`` with scalar libm calls (inside array element loops libmvec's AVX2
  variant, ``lower_arrays.element_libm``; in a ``for`` loop, a call depending only on the
  index and invariants is computed ahead by libmvec, ``lower_loops``): transcendental functions within libm's or
  libmvec's ulp of numpy's, everything else bit-equal; int arithmetic is int64 with overflow checks.

Where a new op's native lowering goes: an elementwise primitive needs nothing here (its
``scalar`` formula is lowered, ``infer.ELEMENTWISE`` lists the ones allowed unfused); a
new scalar-language function is one entry in ``lower.FUNCTIONS`` (and
``infer.SCALAR_FUNCTIONS``); a new runtime helper the adjoint calls gets a typing rule in
``infer._CALLS`` and a ``call_<helper>`` method in ``_Lowering``.
"""

from __future__ import annotations

import ast
import hashlib

import numpy as np
from llvmlite import ir

from pullback.runtime.irhelpers import I1, I32, I64, PTR
from pullback.runtime.native import VECTORISE_METADATA
from pullback.runtime.primitives import REGISTRY

from . import infer
from .infer import (NONE, RANGE, STR, Arr, GList, Num, Opt, Parts, Rule, Slice, Tup,
                    can_be_none, inner)
from .ir import dotted, is_atom
from .lower_arrays import ArrayLowering, array_ltype
from .lower_loops import LoopAhead
from .lower import FUNCTIONS, _target_triple

OK, PYTHON_ROAD, NO_MEMORY, UNPAIRED = 0, 1, 2, 3
F64T, F32T = ir.DoubleType(), ir.FloatType()
_EMPTY = ir.LiteralStructType([])
_CMP = {"Eq": "==", "NotEq": "!=", "Lt": "<", "LtE": "<=", "Gt": ">", "GtE": ">="}
_FCMP = {"==": "oeq", "!=": "une", "<": "olt", "<=": "ole", ">": "ogt", ">=": "oge"}
_EXACT_INT = {"f64": 1 << 53, "f32": 1 << 24}   # ints that convert exactly
_FLOAT_OPS = {"add": "fadd", "sub": "fsub", "mul": "fmul", "div": "fdiv"}
#: the first size of the stack buffer and of the arena's list (8-byte slots): under 1 KiB,
#: glibc serves and keeps it in its per-thread cache; a first request of 1 KiB or more
#: would consolidate the fast bins (that the arena's small arrays were just freed to) on
#: every call -- half of a small call's time
MIN_BUFFER_SLOTS = 120


def ltype(t):
    """The LLVM type holding a value of type ``t``."""
    if isinstance(t, Num):
        return {"f32": F32T, "int": I64, "bool": I1}.get(t.kind, F64T)
    if t is NONE or t is STR or isinstance(t, Rule):
        return _EMPTY
    if isinstance(t, Arr):
        return array_ltype(t)
    if t is RANGE:
        return ir.LiteralStructType([I64, I64, I64])   # start, step, length
    if isinstance(t, Opt):
        return ir.LiteralStructType([I1, ltype(t.inner)])
    if isinstance(t, (Tup, GList, Slice)):
        return ir.LiteralStructType([ltype(x) for x in t.items])
    if isinstance(t, Parts):
        return ir.LiteralStructType([I1] + [ltype(x) for x in t.items])
    raise infer.NotTyped(f"no native representation for {t}")


def lower_function(forward, adjoint, typing: infer.Typing) -> tuple:
    """``(ir_text, symbol)`` of the value-and-gradient function of a typed variant."""
    key = repr((ast.dump(forward), ast.dump(adjoint), typing.arguments,
                sorted((k, str(v)) for k, v in typing.tags.items()),
                sorted(k for k, v in typing.namespace.items()
                       if isinstance(v, infer.FusedKernel))))
    symbol = f"pb_native_{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    module = ir.Module(name=f"pullback native {symbol}")
    module.triple = _target_triple()
    lowering = _Lowering(module, symbol, forward, adjoint, typing)
    lowering.emit()
    text = str(module)
    if lowering.callees.functions:   # the callees' code is part of what the symbol names
        renamed = f"pb_native_{hashlib.sha256(text.encode()).hexdigest()[:16]}"
        text, symbol = text.replace(symbol, renamed), renamed
    return text, symbol


def private_accumulators(function) -> frozenset:
    """Names of ``function`` (an adjoint) that only ever hold None or an array no other
    name, tuple or stack slot holds: every assignment is ``X = None`` or ``X =
    support.accumulate(X, ...)``, and ``X`` is read only there (as the total) and by the
    final return.  ``accumulate`` returns its total or a freshly allocated array, so such
    an ``X`` may be updated in place (``ArrayLowering.accumulate_in_place``)."""
    assigned, candidates, reads = {}, set(), {}
    body = function.body
    final = body[-1] if body and isinstance(body[-1], gast.Return) else None
    nones = {}   # name -> whether every assignment of it is the constant None

    def is_none(value):
        return isinstance(value, gast_Constant) and value.value is None

    for node in gast.walk(function):
        if isinstance(node, gast.Assign) and isinstance(node.targets[0], gast_Name):
            name = node.targets[0].id
            nones[name] = nones.get(name, True) and is_none(node.value)
    for node in gast.walk(function):
        if isinstance(node, gast.Assign) and isinstance(node.targets[0], gast_Name):
            name, value = node.targets[0].id, node.value
            accumulates = (isinstance(value, gast.Call) and dotted(value.func)
                           == "support.accumulate" and value.args
                           and isinstance(value.args[0], gast_Name)
                           and value.args[0].id == name)
            none = is_none(value) or (isinstance(value, gast_Name)
                                      and nones.get(value.id, False))
            assigned.setdefault(name, []).append(accumulates or none)
            if accumulates:
                reads[id(value.args[0])] = True   # the total: an allowed read
        elif isinstance(node, (gast.For,)) and isinstance(node.target, gast_Name):
            assigned.setdefault(node.target.id, []).append(False)
    if final is not None:
        for node in gast.walk(final):
            if isinstance(node, gast_Name):
                reads[id(node)] = True
    for name, kinds in assigned.items():
        if all(kinds):
            candidates.add(name)
    for node in gast.walk(function):
        if (isinstance(node, gast_Name) and isinstance(node.ctx, gast.Load)
                and id(node) not in reads):
            candidates.discard(node.id)
    return frozenset(candidates)


# ----- scalar math for lower.FUNCTIONS (the vector helpers' interface, one lane) --------------

class _ScalarMath:
    vector_math = frozenset()

    def __init__(self, module, b, scalar):
        self.module, self.b, self.scalar, self.type = module, b, scalar, scalar
        self.single = scalar == F32T

    def const(self, value, vtype=None):
        return ir.Constant(vtype or self.type, float(value))

    def compare(self, predicate, a, b, name):
        return self.b.fcmp_ordered(predicate, a, b, name=name)

    def function(self, name, ftype, attributes=()):
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        fn = ir.Function(self.module, ftype, name=name)
        for attribute in attributes:
            fn.attributes.add(attribute)
        return fn

    def intrinsic(self, name, *args, name_as):
        t = args[0].type
        suffix = "f32" if t == F32T else "f64"
        fn = self.function(f"llvm.{name}.{suffix}", ir.FunctionType(t, [a.type for a in args]))
        return self.b.call(fn, args, name=name_as)

    element_libm = None   # (function, args, name) -> value or None: in array loops
    loop_libm = None   # the same in a for loop's body (lower_loops: computed ahead)

    def libm(self, function, *args, name):
        """The double libm function (float32: computed in double and rounded)."""
        for hook in (self.element_libm, self.loop_libm):
            if hook is not None and self.scalar == F64T:
                found = hook(function, args, name)
                if found is not None:
                    return found
        fn = self.function(function, ir.FunctionType(F64T, [F64T] * len(args)),
                           ("nounwind", "readnone"))
        wide = [a if a.type == F64T else self.b.fpext(a, F64T, name=f"{name}.wide")
                for a in args]
        result = self.b.call(fn, wide, name=name)
        return result if self.scalar == F64T else self.b.fptrunc(result, F32T, name=f"{name}.f32")

    def maximum(self, a, b, name):
        keep_a = self.b.or_(self.compare("ogt", a, b, f"{name}.gt"),
                            self.compare("uno", a, a, f"{name}.nan"), name=f"{name}.keep")
        return self.b.select(keep_a, a, b, name=name)

    def minimum(self, a, b, name):
        keep_a = self.b.or_(self.compare("olt", a, b, f"{name}.lt"),
                            self.compare("uno", a, a, f"{name}.nan"), name=f"{name}.keep")
        return self.b.select(keep_a, a, b, name=name)


class _Value:
    """A lowered value and its static type."""

    __slots__ = ("v", "t")

    def __init__(self, v, t):
        self.v, self.t = v, t


class _Lowering(ArrayLowering, LoopAhead):
    _value = _Value
    ltype = staticmethod(ltype)
    NO_MEMORY = NO_MEMORY

    def __init__(self, module, symbol, forward, adjoint, typing, callees=None):
        self.module, self.forward, self.adjoint, self.typing = module, forward, adjoint, typing
        self.namespace = typing.namespace
        self.callees = _Callees(symbol) if callees is None else callees
        self.fn = self.make_function(module, symbol, typing)
        self.fn.attributes.add("nounwind")
        self.arena = None
        self.arguments = {}   # array parameters' values, read once at the entry
        self.entry = self.fn.append_basic_block("entry")
        self.b = ir.IRBuilder(self.entry)
        self.exit = self.fn.append_basic_block("exit")
        with self.b.goto_block(self.exit):
            self.status = self.b.phi(I32, name="status")
        self.slots = {}
        self.env = None
        self.target, self.private = None, frozenset()   # see private_accumulators
        self.prefix = ""
        self.parsed = {}

    def make_function(self, module, symbol, typing):
        params = [PTR if isinstance(t, Arr) else I64 if t.kind in ("int", "bool") else F64T
                  for t in typing.arguments]
        # after the results: one numpy array per array parameter, for its gradient
        outs = [f"{p}.gradient" for p, t in zip(typing.params, typing.arguments, strict=True)
                if isinstance(t, Arr)]
        ftype = ir.FunctionType(I32, [*params, F64T, PTR, *[PTR] * len(outs)])
        fn = ir.Function(module, ftype, name=symbol)
        for arg, name in zip(fn.args, [*typing.params, "seed", "results", *outs], strict=True):
            arg.name = name
        return fn

    # ----- infrastructure ----------------------------------------------------------------
    def alloca(self, typ, name):
        with self.b.goto_block(self.entry):
            self.b.position_at_start(self.entry)
            slot = self.b.alloca(typ, name=name)
            self.b.store(ir.Constant(typ, None), slot)
        return slot

    def bail(self, ok, code=PYTHON_ROAD, name="check"):
        """Continue if ``ok``; else leave with ``code``."""
        following = self.fn.append_basic_block(f"{name}.ok")
        failing = self.fn.append_basic_block(f"{name}.fail")
        self.b.cbranch(ok, following, failing)
        self.b.position_at_end(failing)
        self.status.add_incoming(ir.Constant(I32, code), failing)
        self.b.branch(self.exit)
        self.b.position_at_end(following)

    def function(self, name, ftype, attributes=()):
        return _ScalarMath(self.module, self.b, F64T).function(name, ftype, attributes)

    def slot(self, name):
        key = self.prefix + name
        if key not in self.slots:
            self.slots[key] = self.alloca(ltype(self.env[name]), key)
        return self.slots[key]

    def load(self, name):
        return _Value(self.b.load(self.slot(name), name=name), self.env[name])

    def store(self, name, value: _Value):
        self.b.store(self.coerce(value, self.env[name]), self.slot(name))

    def atom(self, node) -> _Value:
        if isinstance(node, gast_Constant):
            return self.constant(node.value)
        return self.load(node.id)

    def constant(self, value) -> _Value:
        t = infer.constant_type(value)
        if t is NONE or t is STR:
            return _Value(ir.Constant(_EMPTY, None), t)
        if t.kind == "bool":
            return _Value(ir.Constant(I1, int(value)), t)
        if t.kind == "int":
            return _Value(ir.Constant(I64, value), t)
        return _Value(ir.Constant(F64T, value), t)

    # ----- coercion between types (joins) -------------------------------------------------
    def coerce(self, value: _Value, target):
        """``value``'s LLVM value as a ``target`` (a join of its type)."""
        b, t = self.b, value.t
        if t == target:
            return value.v
        if isinstance(t, Num) and isinstance(target, Num):
            return value.v   # pyfloat/f64 -> float: the same double
        if t is NONE and isinstance(target, Opt):
            return ir.Constant(ltype(target), None)
        if isinstance(target, Opt):
            if isinstance(t, Opt):
                flag = b.extract_value(value.v, 0)
                item = self.coerce(_Value(b.extract_value(value.v, 1), t.inner), target.inner)
            else:
                flag, item = ir.Constant(I1, 1), self.coerce(value, target.inner)
            result = b.insert_value(ir.Constant(ltype(target), None), flag, 0)
            return b.insert_value(result, item, 1)
        for kind, first in ((Tup, 0), (GList, 0), (Parts, 1)):
            if isinstance(t, kind) and isinstance(target, kind):
                result = ir.Constant(ltype(target), None)
                if first:
                    result = b.insert_value(result, b.extract_value(value.v, 0), 0)
                for k, (src, dst) in enumerate(zip(t.items, target.items, strict=True)):
                    item = _Value(b.extract_value(value.v, k + first), src)
                    result = b.insert_value(result, self.coerce(item, dst), k + first)
                return result
        raise infer.NotTyped(f"internal: no coercion from {t} to {target}")

    def present(self, value: _Value):
        """i1: the value is not None."""
        if value.t is NONE:
            return ir.Constant(I1, 0)
        if isinstance(value.t, Opt):
            return self.b.extract_value(value.v, 0, name="present")
        return ir.Constant(I1, 1)

    def unwrap(self, value: _Value) -> _Value:
        """An ``Opt`` value's content, leaving for the Python road if it is None (where
        Python would raise a TypeError)."""
        if isinstance(value.t, Opt):
            self.bail(self.b.extract_value(value.v, 0), name="not_none")
            return _Value(self.b.extract_value(value.v, 1), value.t.inner)
        if value.t is NONE:
            self.bail(ir.Constant(I1, 0), name="not_none")
            raise infer.NotTyped("None where a value is needed")
        return value

    # ----- numbers ------------------------------------------------------------------------
    def as_kind(self, value: _Value, kind: str):
        """A number converted to ``kind`` as the Python road converts it (ints exactly)."""
        b, src = self.b, value.t.kind
        if src == kind or (src in ("pyfloat", "float", "f64") and kind in ("pyfloat", "float",
                                                                            "f64")):
            return value.v
        if src == "int":
            limit = ir.Constant(I64, _EXACT_INT["f32" if kind == "f32" else "f64"])
            magnitude_ok = b.and_(b.icmp_signed("<=", value.v, limit),
                                  b.icmp_signed(">=", value.v, b.neg(limit)), name="exact")
            self.bail(magnitude_ok, name="int_to_float")
            return b.sitofp(value.v, F32T if kind == "f32" else F64T)
        if src == "f32":
            return b.fpext(value.v, F64T)
        if kind == "f32":   # a Python float as numpy's weak float32 (NEP 50)
            return b.fptrunc(value.v, F32T)
        raise infer.NotTyped(f"internal: {src} as {kind}")

    def binary(self, op: str, a: _Value, c: _Value) -> _Value:
        a, c = self.unwrap(a), self.unwrap(c)
        plan = infer.binary(op, a.t.kind, c.t.kind)
        b = self.b
        if plan.operand == "int":
            return self.int_binary(op, a.v, c.v, plan)
        x, y = self.as_kind(a, plan.operand), self.as_kind(c, plan.operand)
        if plan.python_division:
            self.bail(b.fcmp_unordered("!=", y, ir.Constant(y.type, 0.0)), name="division")
        if op == "pow":
            math = _ScalarMath(self.module, b, x.type)
            return _Value(math.libm("pow", x, y, name="pow"), Num(plan.kind))
        return _Value(getattr(b, _FLOAT_OPS[op])(x, y), Num(plan.kind))

    def int_binary(self, op, x, y, plan) -> _Value:
        b = self.b
        if op in ("add", "sub", "mul"):
            pair = getattr(b, {"add": "sadd", "sub": "ssub", "mul": "smul"}[op]
                           + "_with_overflow")(x, y)
            self.bail(b.not_(b.extract_value(pair, 1)), name="int_overflow")
            return _Value(b.extract_value(pair, 0), infer.INT)
        zero = ir.Constant(I64, 0)
        self.bail(b.icmp_signed("!=", y, zero), name="int_division")
        if op == "div":   # Python's true division: exact for |ints| <= 2**53
            fx = self.as_kind(_Value(x, infer.INT), "f64")
            fy = self.as_kind(_Value(y, infer.INT), "f64")
            return _Value(b.fdiv(fx, fy), infer.PYFLOAT)
        minimum = ir.Constant(I64, -(1 << 63))
        self.bail(b.not_(b.and_(b.icmp_signed("==", x, minimum),
                                b.icmp_signed("==", y, ir.Constant(I64, -1)))),
                  name="int_overflow")
        quotient, remainder = b.sdiv(x, y), b.srem(x, y)
        # floor semantics: adjust when the remainder's sign differs from the divisor's
        adjust = b.and_(b.icmp_signed("!=", remainder, zero),
                        b.icmp_signed("<", b.xor(remainder, y), zero))
        if op == "floordiv":
            return _Value(b.sub(quotient, b.zext(adjust, I64)), infer.INT)
        return _Value(b.select(adjust, b.add(remainder, y), remainder), infer.INT)

    def negate(self, a: _Value) -> _Value:
        a = self.unwrap(a)
        if a.t.kind == "int":
            self.bail(self.b.icmp_signed("!=", a.v, ir.Constant(I64, -(1 << 63))),
                      name="int_overflow")
            return _Value(self.b.neg(a.v), a.t)
        return _Value(self.b.fneg(a.v), a.t)

    def compare(self, op: str, a: _Value, c: _Value) -> _Value:
        a, c = self.unwrap(a), self.unwrap(c)
        b = self.b
        if a.t.kind == c.t.kind == "int":
            return _Value(b.icmp_signed(op, a.v, c.v), infer.BOOL)
        kind = "f32" if a.t.kind == c.t.kind == "f32" else "f64"
        x, y = self.as_kind(a, kind), self.as_kind(c, kind)
        return _Value(b.fcmp_ordered(_FCMP[op], x, y) if op != "!=" else
                      b.fcmp_unordered("!=", x, y), infer.BOOL)

    def truth(self, value: _Value):
        v, kind = value.v, value.t.kind
        if kind == "bool":
            return v
        if kind == "int":
            return self.b.icmp_signed("!=", v, ir.Constant(I64, 0))
        return self.b.fcmp_unordered("!=", v, ir.Constant(v.type, 0.0))

    def ufunc(self, function: str, args) -> _Value:
        """numpy's ``function`` (scalar-language name) of numbers."""
        args = [self.unwrap(a) for a in args]
        kind = infer.ufunc(function, [a.t.kind for a in args])
        values = [self.as_kind(a, kind) for a in args]
        return _Value(self.math_call(function, values, kind), Num(kind))

    def math_call(self, function, values, kind):
        math = _ScalarMath(self.module, self.b, F32T if kind == "f32" else F64T)
        if getattr(self, "in_elements", False):   # an array loop's body: vectorisable
            math.element_libm = self.element_libm
        elif self.loops:   # a for loop's body: computed ahead where it can be
            math.loop_libm = self.loop_libm
        arity, lowering = FUNCTIONS[function]
        if lowering is None:   # pow: libm
            return math.libm("pow", *values, name="pow")
        return lowering(math, *values, name=function)

    def formula(self, text: str, env: dict, kind: str):
        """A primitive's scalar formula over values already of ``kind`` (numpy's
        arithmetic in one dtype, as the unfused primitive computes)."""
        node = self.parse(text)
        return self.formula_node(node, env, kind)

    def formula_node(self, node, env, kind):
        b, ftype = self.b, F32T if kind == "f32" else F64T
        if isinstance(node, ast.Name):
            return env[node.id]
        if isinstance(node, ast.Constant):
            return ir.Constant(ftype, float(node.value))
        if isinstance(node, ast.BinOp):
            op = infer._AST_OPS[type(node.op)]
            x, y = self.formula_node(node.left, env, kind), self.formula_node(node.right, env,
                                                                                kind)
            if op == "pow":
                return self.math_call("pow", [x, y], kind)
            return getattr(b, _FLOAT_OPS[op])(x, y)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return b.fneg(self.formula_node(node.operand, env, kind))
        if isinstance(node, ast.Call):
            return self.math_call(node.func.id, [self.formula_node(a, env, kind)
                                                 for a in node.args], kind)
        raise infer.NotTyped(f"`{ast.unparse(node)}` in a formula")

    def parse(self, text):
        if text not in self.parsed:
            self.parsed[text] = ast.parse(text.strip(), mode="eval").body
        return self.parsed[text]

    def expression(self, node, env: dict) -> _Value:
        """A scalar-language expression with the Python road's semantics (a kernel's
        numpy function: Python operators, numpy functions)."""
        if isinstance(node, ast.Name):
            return env[node.id]
        if isinstance(node, ast.Constant):
            return self.constant(node.value)
        if isinstance(node, ast.BinOp):
            return self.binary(infer._AST_OPS[type(node.op)], self.expression(node.left, env),
                               self.expression(node.right, env))
        if isinstance(node, ast.UnaryOp):
            operand = self.expression(node.operand, env)
            return operand if isinstance(node.op, ast.UAdd) else self.negate(operand)
        if isinstance(node, ast.Compare):   # numpy's bool, as the number it promotes to
            a, c = self.expression(node.left, env), self.expression(node.comparators[0], env)
            kind = infer.compare_kind([a.t.kind, c.t.kind])
            holds = self.compare(_CMP[type(node.ops[0]).__name__], a, c)
            return _Value(self.b.uitofp(holds.v, F64T), Num(kind))
        if isinstance(node, ast.Call) and node.func.id == "where":
            condition, a, c = (self.expression(n, env) for n in node.args)
            kind = infer.ufunc("where", [a.t.kind, c.t.kind])
            x, y = self.as_kind(self.unwrap(a), kind), self.as_kind(self.unwrap(c), kind)
            return _Value(self.b.select(self.truth(self.unwrap(condition)), x, y), Num(kind))
        if isinstance(node, ast.Call):
            return self.ufunc(node.func.id, [self.expression(a, env) for a in node.args])
        raise infer.NotTyped(f"`{ast.unparse(node)}` in a kernel")

    def program(self, statements, env: dict) -> dict:
        env = dict(env)
        for target, text in statements:
            env[target] = self.expression(self.parse(text), env)
        return env

    # ----- the stack ---------------------------------------------------------------------
    def leaves(self, value: _Value) -> list:
        b, t = self.b, value.t
        if isinstance(t, Num):
            return [value.v]
        if t is NONE or t is STR or isinstance(t, Rule):
            return []
        if isinstance(t, Arr):
            data, dims = self.parts(value)
            return [b.ptrtoint(data, I64), *dims]
        if t is RANGE:
            return [b.extract_value(value.v, k) for k in range(3)]
        items = {Opt: lambda: [t.inner], Tup: lambda: list(t.items),
                 GList: lambda: list(t.items), Parts: lambda: list(t.items),
                 Slice: lambda: list(t.items)}[type(t)]()
        first = 0 if isinstance(t, (Tup, GList, Slice)) else 1
        out = [] if first == 0 else [b.extract_value(value.v, 0)]
        for k, item in enumerate(items):
            out += self.leaves(_Value(b.extract_value(value.v, k + first), item))
        return out

    def rebuild(self, leaves: list, t):
        """(LLVM value of type t, leaves left) from leaves (the inverse of ``leaves``)."""
        b = self.b
        if isinstance(t, Num):
            return leaves[0], leaves[1:]
        if t is NONE or t is STR or isinstance(t, Rule):
            return ir.Constant(_EMPTY, None), leaves
        if isinstance(t, Arr):
            array = self.make_array(b.inttoptr(leaves[0], PTR), leaves[1:1 + t.ndim], t)
            return array.v, leaves[1 + t.ndim:]
        if t is RANGE:
            value = ir.Constant(ltype(t), None)
            for k in range(3):
                value = b.insert_value(value, leaves[k], k)
            return value, leaves[3:]
        value, first = ir.Constant(ltype(t), None), 0
        if isinstance(t, (Opt, Parts)):
            value, leaves, first = b.insert_value(value, leaves[0], 0), leaves[1:], 1
        items = [t.inner] if isinstance(t, Opt) else list(t.items)
        for k, item in enumerate(items):
            part, leaves = self.rebuild(leaves, item)
            value = b.insert_value(value, part, k + first)
        return value, leaves

    def leaf_types(self, t) -> list:
        return [leaf.type for leaf in self.leaves(_Value(ir.Constant(ltype(t), None), t))]

    def push(self, value: _Value, tag: str):
        b = self.b
        value = _Value(self.coerce(value, self.typing.tags[tag]), self.typing.tags[tag])
        leaves = self.leaves(value)
        if not leaves:
            return
        top = b.load(self.top, typ=I64, name="stack.top")
        end = b.add(top, ir.Constant(I64, len(leaves)), name="stack.end")
        full = b.icmp_unsigned(">", end, b.load(self.capacity, typ=I64, name="stack.capacity"))
        with b.if_then(full, likely=False):
            grown = b.call(self.reserve, [self.base, self.capacity, end], name="grown")
            self.bail(grown, NO_MEMORY, name="stack_grow")
        base = b.load(self.base, typ=PTR, name="stack.base")
        for k, leaf in enumerate(leaves):
            address = b.gep(base, [b.add(top, ir.Constant(I64, k))], source_etype=I64)
            if leaf.type == I1:
                leaf = b.zext(leaf, I64)
            b.store(leaf, address)
        b.store(end, self.top)

    def pop(self, tag: str) -> _Value:
        b, t = self.b, self.typing.tags[tag]
        types = self.leaf_types(t)
        if not types:
            return _Value(ir.Constant(ltype(t), None), t)
        top = b.load(self.top, typ=I64, name="stack.top")
        count = ir.Constant(I64, len(types))
        self.bail(b.icmp_unsigned(">=", top, count), UNPAIRED, name="stack_pop")
        start = b.sub(top, count, name="stack.start")
        base = b.load(self.base, typ=PTR, name="stack.base")
        leaves = []
        for k, typ in enumerate(types):
            address = b.gep(base, [b.add(start, ir.Constant(I64, k))], source_etype=I64)
            if typ == I1:
                leaves.append(b.trunc(b.load(address, typ=I64), I1))
            else:
                leaves.append(b.load(address, typ=typ))
        b.store(start, self.top)
        return _Value(self.rebuild(leaves, t)[0], t)

    def emit_reserve(self):
        """``i1 reserve(ptr *base, i64 *capacity, i64 need)``: grow the buffer (doubling)."""
        fn = ir.Function(self.module, ir.FunctionType(I1, [PTR, PTR, I64]),
                         name=f"{self.fn.name}.reserve")
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        base_slot, capacity_slot, need = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        doubled = b.mul(b.load(capacity_slot, typ=I64), ir.Constant(I64, 2))
        at_least = b.select(b.icmp_unsigned(">", doubled, need), doubled, need)
        least = ir.Constant(I64, MIN_BUFFER_SLOTS)
        capacity = b.select(b.icmp_unsigned(">", at_least, least), at_least, least,
                            name="capacity")
        realloc = self.function("realloc", ir.FunctionType(PTR, [PTR, I64]), ("nounwind",))
        grown = b.call(realloc, [b.load(base_slot, typ=PTR), b.mul(capacity,
                                                                   ir.Constant(I64, 8))])
        failed = b.icmp_unsigned("==", grown, ir.Constant(PTR, None))
        with b.if_then(failed):
            b.ret(ir.Constant(I1, 0))
        b.store(grown, base_slot)
        b.store(capacity, capacity_slot)
        b.ret(ir.Constant(I1, 1))
        return fn

    # ----- statements --------------------------------------------------------------------
    def emit(self):
        b = self.b
        self.base = self.alloca(PTR, "stack.base_slot")
        self.top = self.alloca(I64, "stack.top_slot")
        self.capacity = self.alloca(I64, "stack.capacity_slot")
        self.depth = self.alloca(I64, "calls.depth_slot")   # native calls in progress
        self.reserve = self.callees.reserve = self.emit_reserve()
        body = self.fn.append_basic_block("forward")
        b.position_at_end(body)
        self.env, self.prefix = self.typing.forward, "forward."
        for arg, name, t in zip(self.fn.args, self.typing.params, self.typing.arguments,
                                strict=False):
            if isinstance(t, Arr):
                self.arguments[name] = self.argument_array(arg, t)
                self.store(name, self.arguments[name])
                continue
            value = b.icmp_signed("!=", arg, ir.Constant(I64, 0)) if t.kind == "bool" else arg
            if t.kind == "f32":   # passed as a double (exact)
                value = b.fptrunc(arg, F32T)
            self.store(name, _Value(value, t))
        self.block(self.forward.body)
        self.result = self.returned
        self.env, self.prefix = self.typing.adjoint, "adjoint."
        self.private = private_accumulators(self.adjoint)
        n = len(self.typing.params)
        self.store("result_grad", _Value(self.fn.args[n] if self.typing.seed.kind == "f64"
                                         else b.fptrunc(self.fn.args[n], F32T),
                                         self.typing.seed))
        self.block(self.adjoint.body)
        self.write_results(self.returned)
        self.status.add_incoming(ir.Constant(I32, OK), b.block)
        b.branch(self.exit)
        b.position_at_end(self.exit)
        self.free_arena()
        free = self.function("free", ir.FunctionType(ir.VoidType(), [PTR]), ("nounwind",))
        b.call(free, [b.load(self.base, typ=PTR)])
        b.ret(self.status)
        if self.arena is not None and VECTORISE_METADATA not in self.module.namedmetadata:
            self.module.add_named_metadata(VECTORISE_METADATA)   # array loops: vectorised
        with b.goto_block(self.entry):   # the allocas are placed; now enter the forward
            b.position_at_end(self.entry)
            b.branch(body)
        self.callees.emit_pending(self)

    def write_results(self, gradients: _Value):
        n = len(self.typing.params)
        b, results = self.b, self.fn.args[n + 1]
        outs = iter(self.fn.args[n + 2:])

        def put(k, value):
            address = b.gep(results, [ir.Constant(I64, k)], source_etype=F64T)
            b.store(value, address)

        put(0, self.as_double(self.result))
        for k, g in enumerate(gradients.t.items):
            item = _Value(b.extract_value(gradients.v, k), g)
            put(1 + 2 * k, b.uitofp(self.present(item), F64T))
            argument = self.typing.arguments[k]
            if isinstance(argument, Arr):
                out = next(outs)
                if g is not NONE:
                    with b.if_then(self.present(item)):
                        self.copy_gradient(out, self.content(item),
                                           self.arguments[self.typing.params[k]])
                continue
            if g is not NONE:
                inner_value = _Value(b.extract_value(item.v, 1), g.inner) \
                    if isinstance(g, Opt) else item
                put(2 + 2 * k, self.as_double(inner_value))

    def as_double(self, value: _Value):
        return self.b.fpext(value.v, F64T) if value.t.kind == "f32" else value.v

    def block(self, stmts):
        for s in stmts:
            getattr(self, f"stmt_{type(s).__name__.lower()}")(s)

    def stmt_assign(self, s):
        self.target = s.targets[0].id
        self.store(self.target, self.value(s.value))
        self.target = None

    def stmt_expr(self, s):   # only pushes (and support.leaf, a no-op on typed values) type
        call = s.value
        if dotted(call.func) == "support.leaf":
            return
        self.push(self.atom(call.args[0]), call.args[1].value)

    def stmt_if(self, s):
        with self.b.if_else(self.truth(self.unwrap(self.load(s.test.id)))) as (then, otherwise):
            with then:
                self.block(s.body)
            with otherwise:
                self.block(s.orelse)

    def stmt_while(self, s):
        b = self.b
        head = self.fn.append_basic_block("while.head")
        body = self.fn.append_basic_block("while.body")
        done = self.fn.append_basic_block("while.done")
        b.branch(head)
        b.position_at_end(head)
        b.cbranch(self.truth(self.unwrap(self.load(s.test.id))), body, done)
        b.position_at_end(body)
        self.block(s.body)
        b.branch(head)
        b.position_at_end(done)

    def stmt_for(self, s):
        b = self.b
        r = self.load(s.iter.id).v
        start, step, length = (b.extract_value(r, k) for k in range(3))
        counter = self.alloca(I64, "for.k")
        b.store(ir.Constant(I64, 0), counter)
        preheader = self.fn.append_basic_block("for.pre")
        before = {id(block) for block in self.fn.blocks}
        head = self.fn.append_basic_block("for.head")
        body = self.fn.append_basic_block("for.body")
        done = self.fn.append_basic_block("for.done")
        b.branch(preheader)
        b.position_at_end(preheader)
        b.branch(head)
        b.position_at_end(head)
        k = b.load(counter, name="k")
        b.cbranch(b.icmp_signed("<", k, length), body, done)
        loop = self.enter_loop(s, k, start, step, length, before)
        b.position_at_end(body)
        self.store(s.target.id, _Value(b.add(start, b.mul(k, step)), infer.INT))
        b.store(b.add(k, ir.Constant(I64, 1)), counter)
        self.block(s.body)
        b.branch(head)
        self.leave_loop(loop, preheader)
        b.position_at_end(done)

    def stmt_return(self, s):
        value = s.value
        if isinstance(value, gast_Tuple):
            items = [self.atom(e) for e in value.elts]
            t = Tup(tuple(i.t for i in items))
            v = ir.Constant(ltype(t), None)
            for k, item in enumerate(items):
                v = self.b.insert_value(v, item.v, k)
            self.returned = _Value(v, t)
        else:
            self.returned = self.unwrap(self.atom(value))

    # ----- values ------------------------------------------------------------------------
    def value(self, node) -> _Value:
        if is_atom(node):
            return self.atom(node)
        return getattr(self, f"value_{type(node).__name__.lower()}")(node)

    def value_binop(self, node):
        a, c = self.atom(node.left), self.atom(node.right)
        op = infer._GAST_OPS[type(node.op)]
        if infer.is_array(a.t) or infer.is_array(c.t):
            return self.array_binary(op, a, c)
        return self.binary(op, a, c)

    def value_attribute(self, node):
        base, _, attr = dotted(node).rpartition(".")
        if base == "vjp":
            return _Value(ir.Constant(_EMPTY, None), Rule(attr))
        return self.array_attribute(self.load(base), attr)

    def value_unaryop(self, node):
        operand = self.atom(node.operand)
        name = type(node.op).__name__
        if name == "Not":
            return _Value(self.b.not_(self.truth(self.unwrap(operand))), infer.BOOL)
        if infer.is_array(operand.t):
            return self.unwrap(operand) if name == "UAdd" else self.array_negate(operand)
        return self.unwrap(operand) if name == "UAdd" else self.negate(operand)

    def value_boolop(self, node):
        a, c = (self.unwrap(self.atom(v)).v for v in node.values)
        op = self.b.and_ if type(node.op).__name__ == "And" else self.b.or_
        return _Value(op(a, c), infer.BOOL)

    def value_compare(self, node):
        a, c = self.atom(node.left), self.atom(node.comparators[0])
        op = type(node.ops[0]).__name__
        if op in ("Is", "IsNot"):
            present = self.present(a)
            return _Value(present if op == "IsNot" else self.b.not_(present), infer.BOOL)
        return self.compare(_CMP[op], a, c)

    def value_subscript(self, node):
        if infer.is_array(self.env.get(getattr(node.value, "id", None))):
            key = self.atom(node.slice)
            if isinstance(key.t, Slice):
                return self.array_slice(self.atom(node.value), key)
            return self.array_item(self.atom(node.value), self.atom(node.slice))
        if isinstance(node.slice, gast_Name):
            return self.range_item(self.unwrap(self.atom(node.value)),
                                   self.unwrap(self.atom(node.slice)))
        value, key = self.atom(node.value), node.slice.value
        b = self.b
        if isinstance(value.t, Parts):
            item_t = value.t.items[key]
            item = b.extract_value(value.v, key + 1)
            if not isinstance(item_t, (Num, Arr)):
                return _Value(item, item_t)
            t = Opt(item_t)
            result = b.insert_value(ir.Constant(ltype(t), None), b.extract_value(value.v, 0), 0)
            return _Value(b.insert_value(result, item, 1), t)
        value = self.unwrap(value)
        return _Value(b.extract_value(value.v, key), value.t.items[key])

    def value_tuple(self, node):
        items = [self.atom(e) for e in node.elts]
        t = Tup(tuple(i.t for i in items))
        v = ir.Constant(ltype(t), None)
        for k, item in enumerate(items):
            v = self.b.insert_value(v, item.v, k)
        return _Value(v, t)

    def value_call(self, node):
        name = dotted(node.func)
        if name == "_stack.pop":
            return self.pop(node.args[0].value)
        head, _, attr = name.partition(".")
        target = self.namespace.get(head)
        if attr in ("forward", "adjoint", "tangent") and hasattr(target, "function"):
            return self.user_call(head, target, attr, node)
        args = [self.atom(a) for a in node.args]
        if attr in infer.NUMPY_CONSTRUCTORS and target is np:
            return getattr(self, f"call_np_{attr}")(node, args)
        if name in infer.ARRAY_CALLS:
            keywords = {k.arg: k.value.value for k in node.keywords}
            if name in infer.SCALAR_REDUCTIONS or name in infer.NUMPY_REDUCTIONS:
                return self.call_reduction(node, args, keywords)
            if name == "support.double" and infer.is_array(args[0].t):
                return self.array_binary("add", args[0], args[0])
            if name != "support.double":
                return getattr(self, f"call_{name.replace('.', '_')}")(node, args, keywords)
        if isinstance(target, infer.FusedKernel) and any(infer.is_array(a.t) for a in args):
            if attr == "with_gradient":
                return self.array_with_gradient(target, args)
            if attr == "vjp" and len(inner(args[1].t).items) > len(target.forward_program[2]):
                return self.unit_gradients(target, args)
            return self.array_kernel_vjp(target, args) if attr == "vjp" else \
                self.array_kernel(target, args)
        if isinstance(target, infer.FusedKernel):
            return self.kernel_vjp(target, args) if attr == "vjp" else self.kernel(target, args)
        if name in infer.NUMPY_NAMES:
            return self.ufunc(infer.NUMPY_NAMES[name], args)
        if head == "mathops":   # never of a float32 (infer): a double, as a Python float
            return _Value(self.primitive(attr, args).v, Num("pyfloat"))
        if head in ("ops", "npops"):
            return self.primitive(attr, args)
        return getattr(self, f"call_{name.replace('.', '_')}")(node, args)

    def primitive(self, name, args):
        args = [self.unwrap(a) for a in args]
        kind = infer.ufunc(name, [a.t.kind for a in args])
        values = [self.as_kind(a, kind) for a in args]
        env = dict(zip(("x", "y"), values, strict=False))
        return _Value(self.formula(REGISTRY[name].scalar, env, kind), Num(kind))

    def kernel(self, kernel, args):
        params, statements, outputs, _ = kernel.forward_program
        env = self.program(statements, dict(zip(params, (self.unwrap(a) for a in args),
                                                strict=True)))
        t = Tup(tuple(env[o].t for o in outputs))
        v = ir.Constant(ltype(t), None)
        for k, o in enumerate(outputs):
            v = self.b.insert_value(v, env[o].v, k)
        return _Value(v, t)

    def kernel_vjp(self, kernel, args):
        grads, outputs, inputs = args[0], args[1], args[2:]
        result_t = infer.kernel_vjp(kernel, grads.t, outputs.t,
                                    [infer.number(a.t, "") for a in inputs])
        if grads.t is NONE:
            return _Value(ir.Constant(ltype(result_t), None), result_t)
        b = self.b
        gnames, onames, inames, statements, results = kernel.adjoint_program
        slot = self.alloca(ltype(result_t), f"{kernel.name}.parts")
        b.store(ir.Constant(ltype(result_t), None), slot)
        glist_t = inner(grads.t)
        glist = _Value(b.extract_value(grads.v, 1) if isinstance(grads.t, Opt) else grads.v,
                       glist_t)
        items = [_Value(b.extract_value(glist.v, k), glist_t.items[k])
                 for k in range(len(gnames))]
        any_present = ir.Constant(I1, 0)
        for item in items:
            any_present = b.or_(any_present, self.present(item))
        with b.if_then(b.and_(self.present(grads), any_present)):
            env = {}
            for gname, item, kind in zip(gnames, items, infer.vjp_seed_kinds(kernel, glist_t),
                                         strict=True):
                if item.t is NONE:
                    v = ir.Constant(F64T, 0.0)
                elif isinstance(item.t, Opt):
                    v = b.select(b.extract_value(item.v, 0), b.extract_value(item.v, 1),
                                 ir.Constant(F64T, 0.0))
                else:
                    v = item.v
                env[gname] = _Value(v, kind)
            out = self.unwrap(outputs)
            for k, oname in enumerate(onames):
                env[oname] = _Value(b.extract_value(out.v, k), out.t.items[k])
            for iname, a in zip(inames, inputs, strict=True):
                env[iname] = self.unwrap(a)
            env = self.program(statements, env)
            v = b.insert_value(ir.Constant(ltype(result_t), None), ir.Constant(I1, 1), 0)
            for k, r in enumerate(results):
                if r is not None:   # None: that input has no gradient (an empty value)
                    v = b.insert_value(v, env[r].v, k + 1)
            b.store(v, slot)
        return _Value(b.load(slot), result_t)

    def call_range(self, node, args):
        b = self.b
        args = [self.unwrap(a).v for a in args]
        zero, one = ir.Constant(I64, 0), ir.Constant(I64, 1)
        start, stop, step = (zero, args[0], one) if len(args) == 1 else (
            args[0], args[1], args[2] if len(args) == 3 else one)
        self.bail(b.icmp_signed("!=", step, zero), name="range_step")   # ValueError
        up = b.icmp_signed(">", step, zero)
        low, high = b.select(up, start, stop), b.select(up, stop, start)
        span_pair = b.ssub_with_overflow(high, low)
        self.bail(b.not_(b.extract_value(span_pair, 1)), name="range_span")
        span = b.extract_value(span_pair, 0)
        self.bail(b.icmp_signed("!=", step, ir.Constant(I64, -(1 << 63))), name="range_step")
        magnitude = b.select(up, step, b.neg(step))
        length = b.select(b.icmp_signed(">", span, zero),
                          b.add(b.sdiv(b.sub(span, one), magnitude), one), zero)
        value = ir.Constant(ltype(RANGE), None)
        for k, field in enumerate((start, step, length)):
            value = b.insert_value(value, field, k)
        return _Value(value, RANGE)

    def range_item(self, r: _Value, index: _Value) -> _Value:
        """``r[index]``; an index outside ``0 <= index < len(r)`` leaves for the Python
        road (negative indices and IndexError are Python's)."""
        b = self.b
        start, step, length = (b.extract_value(r.v, k) for k in range(3))
        inside = b.and_(b.icmp_signed(">=", index.v, ir.Constant(I64, 0)),
                        b.icmp_signed("<", index.v, length), name="range.inside")
        self.bail(inside, name="range_index")
        return _Value(b.add(start, b.mul(index.v, step), name="range.item"), infer.INT)

    def call_slice(self, node, args):
        t = infer._slice_call(node, [a.t for a in args])
        given = [*args, None][:3] if len(args) > 1 else [None, args[0], None]
        v = ir.Constant(ltype(t), None)
        for k, item in enumerate(given):
            if item is not None and item.t is not NONE:
                v = self.b.insert_value(v, item.v, k)
        return _Value(v, t)

    def call_len(self, node, args):
        return _Value(self.b.extract_value(self.unwrap(args[0]).v, 2, name="len"), infer.INT)

    def call_reversed(self, node, args):
        b, r = self.b, args[0].v
        start, step, length = (b.extract_value(r, k) for k in range(3))
        last = b.add(start, b.mul(b.sub(length, ir.Constant(I64, 1)), step))
        start = b.select(b.icmp_signed(">", length, ir.Constant(I64, 0)), last, start)
        value = ir.Constant(ltype(RANGE), None)
        for k, field in enumerate((start, b.neg(step), length)):
            value = b.insert_value(value, field, k)
        return _Value(value, RANGE)

    def call_support_double(self, node, args):
        return self.binary("add", args[0], args[0])


    def call_support_item_grad(self, node, args):
        g, index = args[0], node.args[1].value
        t = infer._item_grad(node, [g.t, None])
        if g.t is NONE:
            return _Value(ir.Constant(_EMPTY, None), NONE)
        b = self.b
        base = _Value(b.extract_value(g.v, 1), g.t.inner) if isinstance(g.t, Opt) else g
        item = _Value(b.extract_value(base.v, index), base.t.items[index])
        if t == item.t:
            return item
        flag = b.and_(self.present(g), self.present(item))
        content = b.extract_value(item.v, 1) if isinstance(item.t, Opt) else item.v
        v = b.insert_value(ir.Constant(ltype(t), None), flag, 0)
        return _Value(b.insert_value(v, content, 1), t)

    def call_support_add_grads(self, node, args):
        return self.add_grads(args[0], args[1])

    def add_grads(self, total: _Value, part: _Value) -> _Value:
        rt = infer.add_grads(total.t, part.t)
        if part.t is NONE:
            return total
        if total.t is NONE:
            return part
        if not can_be_none(total.t) and not can_be_none(part.t):
            return self.add_present(total, part, rt)
        b = self.b
        slot = self.alloca(ltype(rt), "add_grads")
        cases = []   # (condition, store the result of that case)
        if can_be_none(part.t):
            cases.append((b.not_(self.present(part)), lambda: self.coerce(total, rt)))
        if can_be_none(total.t):
            cases.append((b.not_(self.present(total)), lambda: self.coerce(part, rt)))
        self.store_cases(slot, cases, lambda: self.coerce(self.add_present(
            self.content(total), self.content(part), rt), rt))
        return _Value(b.load(slot), rt)

    def store_cases(self, slot, cases, otherwise):
        """``if c1: slot = v1() elif c2: ... else: slot = otherwise()``."""
        if not cases:
            self.b.store(otherwise(), slot)
            return
        (condition, make), rest = cases[0], cases[1:]
        with self.b.if_else(condition) as (then, orelse):
            with then:
                self.b.store(make(), slot)
            with orelse:
                self.store_cases(slot, rest, otherwise)

    def content(self, value: _Value) -> _Value:
        if isinstance(value.t, Opt):
            return _Value(self.b.extract_value(value.v, 1), value.t.inner)
        return value

    def add_present(self, total: _Value, part: _Value, rt) -> _Value:
        """``total + part`` of two present gradients (numbers, or lists item by item)."""
        if isinstance(total.t, (Num, Arr)) and (infer.is_array(total.t)
                                                 or infer.is_array(part.t)):
            return self.array_binary("add", total, part)
        if isinstance(total.t, Num):
            return self.binary("add", total, part)
        b = self.b
        items = [self.add_grads(_Value(b.extract_value(total.v, k), a),
                                _Value(b.extract_value(part.v, k), c))
                 for k, (a, c) in enumerate(zip(total.t.items, part.t.items, strict=True))]
        t = GList(tuple(i.t for i in items))
        v = ir.Constant(ltype(t), None)
        for k, item in enumerate(items):
            v = b.insert_value(v, item.v, k)
        return _Value(v, t)

    def call_support_like(self, node, args):
        return args[0]   # a shape-only stand-in: natively, the value itself (numbers)

    def call_support_item_grad_into(self, node, args):
        total, g = args[0], args[1]
        key, n = node.args[2].value, node.args[3].value
        rt = infer.index_grad(total.t, g.t, infer.Tup((NONE,) * n), key)
        if g.t is NONE:
            return total
        return self._tuple_item_grad(total, g, key, n, rt, self.present(g))

    def call_support_index_grad_tuple(self, node, args):
        total, g, value = args[0], args[1], args[2]
        key = node.args[3].value
        rt = infer.index_grad(total.t, g.t, value.t, key)
        if g.t is NONE or value.t is RANGE:
            return total
        n = len(inner(value.t).items)
        return self._tuple_item_grad(total, g, key, n, rt,
                                     self.b.and_(self.present(g), self.present(value)))

    def _tuple_item_grad(self, total, g, key, n, rt, present):
        """``total`` (a gradient list of ``n`` items, or None) with ``g`` added to item
        ``key`` where ``present``."""
        b = self.b
        slot = self.alloca(ltype(rt), "index_grad")
        b.store(self.coerce(total, rt), slot)
        with b.if_then(present):
            base_t = inner(total.t)
            with b.if_else(self.present(total)) as (have_list, new_list):
                for present_case in (have_list, new_list):
                    with present_case:
                        if present_case is have_list and base_t is not None:
                            base = self.content(total)
                            items = [_Value(b.extract_value(base.v, k), base.t.items[k])
                                     for k in range(n)]
                        else:
                            items = [_Value(ir.Constant(_EMPTY, None), NONE)] * n
                        items[key] = self.add_grads(items[key], g)
                        lt = GList(tuple(i.t for i in items))
                        v = ir.Constant(ltype(lt), None)
                        for k, item in enumerate(items):
                            v = b.insert_value(v, item.v, k)
                        b.store(self.coerce(_Value(v, lt), rt), slot)
        return _Value(b.load(slot), rt)


# ----- calls of other user functions: one LLVM function per typed part -----------------------

#: most native calls in progress at once (each a native stack frame of the allocas of its
#: names): deeper, the call reruns on the Python road
MAX_CALL_DEPTH = 200


class _Callees:
    """The callee parts (``infer.Part``) a native function calls, each lowered once into the
    same module as an internal function sharing the caller's stack and call depth:

        i32 <symbol>.<k>(ptr base_slot, ptr top_slot, ptr capacity_slot, ptr depth_slot,
                         ptr out, args...)

    (a forward: its arguments; an adjoint: its seed) storing its result (a forward's value,
    an adjoint's gradient tuple) at ``out``; a status other than OK is passed up by the
    caller.  A recursive call is a call of the function being emitted."""

    def __init__(self, symbol):
        self.symbol, self.functions, self.pending, self.reserve = symbol, {}, [], None

    def function(self, module, part):
        fn = self.functions.get(part.key)
        if fn is None:
            t = part.typing
            args = [ltype(a) for a in t.arguments] if part.key[0] == "forward" else \
                [ltype(t.seed)]
            fn = ir.Function(module, ir.FunctionType(I32, [PTR, PTR, PTR, PTR, PTR, *args]),
                             name=f"{self.symbol}.{len(self.functions) + 1}")
            fn.linkage = "internal"
            self.functions[part.key] = fn
            self.pending.append(part)
        return fn

    def emit_pending(self, top):
        while self.pending:
            part = self.pending.pop()
            _PartLowering(top.module, part, self).emit()


class _PartLowering(_Lowering):
    """Lowers one callee part into the function ``_Callees`` declared for it."""

    def __init__(self, module, part, callees):
        self.part = part
        is_forward = part.key[0] == "forward"
        super().__init__(module, None, part.ir if is_forward else None,
                         None if is_forward else part.ir, part.typing, callees)

    def make_function(self, module, symbol, typing):
        fn = self.callees.functions[self.part.key]
        names = ["stack.base_slot", "stack.top_slot", "stack.capacity_slot",
                 "calls.depth_slot", "out"]
        names += list(typing.params) if self.part.key[0] == "forward" else ["seed"]
        for arg, name in zip(fn.args, names, strict=True):
            arg.name = name
        return fn

    def emit(self):
        b, is_forward = self.b, self.part.key[0] == "forward"
        self.base, self.top, self.capacity, self.depth, out = self.fn.args[:5]
        self.reserve = self.callees.reserve
        body = self.fn.append_basic_block("forward" if is_forward else "adjoint")
        b.position_at_end(body)
        t = self.typing
        if is_forward:
            self.env, self.prefix = t.forward, "forward."
            for arg, name, at in zip(self.fn.args[5:], t.params, t.arguments, strict=True):
                self.store(name, _Value(arg, at))
            self.block(self.forward.body)
        else:
            self.env, self.prefix = t.adjoint, "adjoint."
            self.store("result_grad", _Value(self.fn.args[5], t.seed))
            self.block(self.adjoint.body)
        b.store(self.coerce(self.returned, t.result), out)
        self.status.add_incoming(ir.Constant(I32, OK), b.block)
        b.branch(self.exit)
        b.position_at_end(self.exit)
        b.ret(self.status)
        with b.goto_block(self.entry):
            b.position_at_end(self.entry)
            b.branch(body)


def _user_call(self, ref, variant, attr, node):
    """``ref.forward(_stack, *args)`` / ``ref.adjoint(_stack, g)`` as a native call of the
    callee's part (typed by ``infer.Functions``, for the signature ``infer`` recorded)."""
    b, functions = self.b, self.typing.functions
    signature = self.typing.calls[ref]
    if attr in ("forward", "tangent"):   # a tangent variant's call: no _stack argument
        part = functions.forward_part(variant, signature)
        args = [self.coerce(self.atom(a), t) for a, t in zip(node.args[attr == "forward":],
                                                             signature, strict=True)]
    else:
        seed = self.atom(node.args[1])
        part = functions.adjoint_part(variant, signature, seed.t)
        args = [seed.v]
    fn = self.callees.function(self.module, part)
    out = self.alloca(ltype(part.typing.result), f"{ref}.{attr}.out")
    # A bounded depth: deeper recursion leaves for the Python road (its RecursionError,
    # or its result), never a native stack overflow.
    depth = b.load(self.depth, typ=I64, name="calls.depth")
    self.bail(b.icmp_signed("<", depth, ir.Constant(I64, MAX_CALL_DEPTH)), name="call_depth")
    b.store(b.add(depth, ir.Constant(I64, 1)), self.depth)
    status = b.call(fn, [self.base, self.top, self.capacity, self.depth, out, *args],
                    name=f"{ref}.status")
    b.store(depth, self.depth)
    following = self.fn.append_basic_block(f"{ref}.{attr}.ok")
    failing = self.fn.append_basic_block(f"{ref}.{attr}.fail")
    b.cbranch(b.icmp_signed("==", status, ir.Constant(I32, OK)), following, failing)
    b.position_at_end(failing)
    self.status.add_incoming(status, failing)
    b.branch(self.exit)
    b.position_at_end(following)
    return _Value(b.load(out, typ=ltype(part.typing.result)), part.typing.result)


_Lowering.user_call = _user_call


# ----- forward mode (issue 12): a tangent function, forward only ----------------------------

def lower_tangent(tangent, typing: infer.Typing) -> tuple:
    """``(ir_text, symbol)`` of the native tangent function of a typed tangent IR
    (``ir.tangent_ir``, ``infer.infer_tangent``):

        i32 pb_native_<digest>(<one argument per primal, then per tangent>, ptr results)

    ``results`` (doubles) receives the value and its tangent; statuses as the gradient's
    (a failed check: ``PYTHON_ROAD``).  The body is the tangent IR lowered by the same
    statement and value rules as a forward (it has no stack: the stack slots stay empty;
    native calls of other user functions' tangents are callee parts as forwards are)."""
    key = repr(("tangent", ast.dump(tangent), typing.arguments,
                sorted(k for k, v in typing.namespace.items()
                       if isinstance(v, infer.FusedKernel))))
    symbol = f"pb_native_{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    module = ir.Module(name=f"pullback native tangent {symbol}")
    module.triple = _target_triple()
    lowering = _TangentLowering(module, symbol, tangent, None, typing)
    lowering.emit()
    text = str(module)
    if lowering.callees.functions:   # the callees' code is part of what the symbol names
        renamed = f"pb_native_{hashlib.sha256(text.encode()).hexdigest()[:16]}"
        text, symbol = text.replace(symbol, renamed), renamed
    return text, symbol


class _TangentLowering(_Lowering):
    """The top-level tangent function: the forward's entry (arguments stored, arrays read)
    and body, then the value and its tangent written to ``results``."""

    def make_function(self, module, symbol, typing):
        params = [PTR if isinstance(t, Arr) else I64 if t.kind in ("int", "bool") else F64T
                  for t in typing.arguments]
        fn = ir.Function(module, ir.FunctionType(I32, [*params, PTR]), name=symbol)
        for arg, name in zip(fn.args, [*typing.params, "results"], strict=True):
            arg.name = name
        return fn

    def emit(self):
        b = self.b
        self.base = self.alloca(PTR, "stack.base_slot")
        self.top = self.alloca(I64, "stack.top_slot")
        self.capacity = self.alloca(I64, "stack.capacity_slot")
        self.depth = self.alloca(I64, "calls.depth_slot")   # native calls in progress
        self.reserve = self.callees.reserve = self.emit_reserve()
        body = self.fn.append_basic_block("tangent")
        b.position_at_end(body)
        self.env, self.prefix = self.typing.forward, "tangent."
        for arg, name, t in zip(self.fn.args, self.typing.params, self.typing.arguments,
                                strict=False):
            if isinstance(t, Arr):
                self.arguments[name] = self.argument_array(arg, t)
                self.store(name, self.arguments[name])
                continue
            value = b.icmp_signed("!=", arg, ir.Constant(I64, 0)) if t.kind == "bool" else arg
            if t.kind == "f32":   # passed as a double (exact)
                value = b.fptrunc(arg, F32T)
            self.store(name, _Value(value, t))
        self.block(self.forward.body)
        pair, results = self.returned, self.fn.args[len(self.typing.params)]
        for k, t in enumerate(self.typing.result.items):
            item = _Value(b.extract_value(pair.v, k), t)
            b.store(self.as_double(item), b.gep(results, [ir.Constant(I64, k)],
                                                source_etype=F64T))
        self.status.add_incoming(ir.Constant(I32, OK), b.block)
        b.branch(self.exit)
        b.position_at_end(self.exit)
        self.free_arena()
        free = self.function("free", ir.FunctionType(ir.VoidType(), [PTR]), ("nounwind",))
        b.call(free, [b.load(self.base, typ=PTR)])
        b.ret(self.status)
        if self.arena is not None and VECTORISE_METADATA not in self.module.namedmetadata:
            self.module.add_named_metadata(VECTORISE_METADATA)   # array loops: vectorised
        with b.goto_block(self.entry):   # the allocas are placed; now enter the body
            b.position_at_end(self.entry)
            b.branch(body)
        self.callees.emit_pending(self)


def _call_support_zero_tangent(self, node, args):
    """numpy's zero of the value's float dtype; an array's: fresh zeros of its shape."""
    value = args[0]
    if infer.is_array(value.t):
        return self.elementwise([value], lambda elements: [_Value(ir.Constant(F64T, 0.0), infer.F64)],
                                1,
                                name="zeros")[0]
    if value.t.kind == "f32":
        return _Value(ir.Constant(F32T, 0.0), infer.F32)
    return _Value(ir.Constant(F64T, 0.0), infer.F64)


def _call_support_tangent_like(self, node, args):
    """The tangent itself (infer typed it as its value's type); an array tangent whose shape
    is not its value's (numpy would broadcast or reshape it) leaves for the Python road."""
    t, ans = args
    if isinstance(t.t, Num) and infer.is_array(ans.t):   # numpy's reshape or broadcast
        number = _Value(self.as_kind(self.unwrap(t), "f64"), infer.F64)
        return self.elementwise([ans], lambda elements: [number], 1, name="spread")[0]
    if infer.is_array(t.t):
        b, same = self.b, ir.Constant(I1, 1)
        for d, e in zip(self.parts(t)[1], self.parts(ans)[1], strict=True):
            same = b.and_(same, b.icmp_signed("==", d, e))
        self.bail(same, name="tangent_shape")
    return t


def _reduction_rule(self, how, args):
    """``jvp.<how>_0(t, ans, x)`` over a whole float64 array, the rule's numpy operations
    one by one: sum and mean are the reduction of the tangent (numpy's pairwise sum);
    max and min are ``sum(t * (mask / sum(mask)))`` with ``mask = (x == ans)`` as 0/1,
    each product an element of a fresh array, so the sum is numpy's, bit for bit."""
    t, ans, x = args
    if how in ("sum", "mean"):
        return self.reduce_all(how, t)
    b = self.b

    def equal(elements):
        hit = b.fcmp_ordered("==", elements[0].v, elements[1].v, name="mask")
        return [_Value(b.uitofp(hit, F64T), infer.F64)]

    mask = self.elementwise([x, ans], equal, 1, name="mask")[0]
    count = self.reduce_all("sum", mask)

    def share(elements):
        part = b.fdiv(elements[1].v, elements[2].v, name="share")
        return [_Value(b.fmul(elements[0].v, part, name="shared"), infer.F64)]

    return self.reduce_all("sum", self.elementwise([t, mask, count], share, 1,
                                                   name="shares")[0])


for _rule, _how in infer.TANGENT_REDUCTION_RULES.items():
    setattr(_Lowering, f"call_{_rule.replace('.', '_')}",
            lambda self, node, args, how=_how: _reduction_rule(self, how, args))
_Lowering.call_support_zero_tangent = _call_support_zero_tangent
_Lowering.call_support_tangent_like = _call_support_tangent_like


import gast  # noqa: E402  (after the class: only the node types are needed)

gast_Constant, gast_Tuple, gast_Name = gast.Constant, gast.Tuple, gast.Name
