"""Transcendental calls of a ``for`` loop computed ahead, four iterations per call
(mixed into ``lower_function._Lowering``).

A call of a libmvec function (``lower_arrays.VECTOR_LIBM``: exp, log, sin, cos, ...) in
the body of a ``for`` loop over a range, whose argument is computed from the loop's index
and from values the loop does not assign (parameters, names assigned before the loop) --
``np.sin(x * i)`` in ``s = s + np.sin(x * i) * y`` -- depends on nothing the loop
carries.  Left scalar, it is one libm call per iteration, and LLVM cannot vectorise the
loop around it (the sum is carried in order, the stack is pushed).  So the lowering
computes such a call ahead: at the call it emits a lookup in a per-site buffer of
``BATCH`` results; a miss (the loop's first iteration, then every ``BATCH``-th) refills
the buffer for the next ``min(BATCH, iterations left)`` iterations with libmvec's 4-lane
AVX2 variant, the argument recomputed lane by lane by the same instructions as vector
instructions (``_Ahead.vector``), the index lanes being ``start + k * step`` of the next
counters.  The call's result is then exactly libmvec's value of the argument the
iteration computes (the vector lanes are independent; the same holds for the array
loops' ``element_libm``): within libmvec's 4 ulp of numpy, like every transcendental
function of an array loop.  Every check of the iteration (an int converted to float
exactly, ...) still runs at the iteration itself, before its value is read.

What is followed (``_Ahead.hoistable``): constants, function arguments, values computed
before the loop, loads of names the loop body never assigns (the static set
``assigned_names``; a call of an inlined callee is never computed ahead: its names have
another prefix), the loop's index (the target's slot, also inside its ``Opt``), float
add/sub/mul/div/neg and int-to-float conversions of those; the argument must use the
index (else LLVM hoists the call out of the loop by itself).  Anything else -- a select,
a phi, a value the loop carries, an array element -- keeps the scalar call.  Buffers are
invalidated each time the loop is entered (a nested loop's invariants change between its
runs), in the loop's preheader.
"""

from __future__ import annotations

import gast
from llvmlite import ir

from pullback.runtime.irhelpers import I64, counted_loop

from .lower_arrays import has_vector_libm

F64T = ir.DoubleType()
LANES = 4
V4 = ir.VectorType(F64T, LANES)
V4I = ir.VectorType(I64, LANES)
#: iterations computed per refill (a multiple of LANES)
BATCH = 64
#: the largest argument expression followed (instructions)
MAX_NODES = 48
#: call sites computed ahead per native function (each has a BATCH-double stack buffer;
#: recursion multiplies them): later ones keep the scalar call
MAX_SITES = 16
_FLOAT_BINARY = frozenset({"fadd", "fsub", "fmul", "fdiv"})
_TO_FLOAT = frozenset({"sitofp", "uitofp", "fpext"})


def assigned_names(statements) -> set:
    """Every name a statement of ``statements`` (the IR's normalized form) stores to,
    nested bodies included: any name in a store context (assignments, augmented
    assignments, for targets, tuple targets)."""
    return {node.id for s in statements for node in gast.walk(s)
            if isinstance(node, gast.Name) and isinstance(node.ctx, gast.Store)}


class _Loop:
    """One ``for`` loop being lowered: its counter, index and range fields, what its
    body assigns, the blocks that existed before it and its buffers' fill counts."""

    __slots__ = ("k", "start", "step", "length", "target", "assigned", "prefix", "before",
                 "fills")

    def __init__(self, k, start, step, length, target, assigned, prefix, before):
        self.k, self.start, self.step, self.length = k, start, step, length
        self.target, self.assigned, self.prefix, self.before = (target, assigned, prefix,
                                                                before)
        self.fills = []


class _Ahead:
    """The argument of one call, followed back to the loop's index and invariants."""

    def __init__(self, lowering, loop):
        self.lowering, self.loop = lowering, loop
        self.names = {id(slot): key for key, slot in lowering.slots.items()}
        self.uses_index = False
        self.seen = {}

    def slot_name(self, pointer):
        """The IR name of the slot ``pointer`` of this loop's function, or None."""
        key = self.names.get(id(pointer))
        prefix = self.loop.prefix
        if key is None or not key.startswith(prefix):
            return None
        return key[len(prefix):]

    def role(self, v):
        """'fixed' (the same in every iteration), 'index', 'float' (a float computation
        of those) or None (not followed)."""
        found = self.seen.get(id(v), False)
        if found is not False:
            return found
        if len(self.seen) > MAX_NODES:
            return None
        self.seen[id(v)] = None   # cycles are not followed
        self.seen[id(v)] = found = self._role(v)
        return found

    def _role(self, v):
        loop = self.loop
        if isinstance(v, (ir.Constant, ir.Argument)):
            return "fixed"
        if not isinstance(v, ir.Instruction):
            return None
        if id(v.parent) in loop.before:
            return "fixed"
        if isinstance(v, ir.LoadInstr):
            name = self.slot_name(v.operands[0])
            if name is None:
                return None
            if name == loop.target and name not in loop.assigned:
                self.uses_index = True
                return "index"
            return "fixed" if name not in loop.assigned else None
        if isinstance(v, ir.ExtractValue):
            inner = self.role(v.aggregate)
            if inner == "fixed":
                return "fixed"
            # the index stored in an Opt slot: {present, value}
            return "index" if inner == "index" and list(v.indices) == [1] else None
        if isinstance(v, ir.CastInstr) and v.opname in _TO_FLOAT:
            return "float" if self.role(v.operands[0]) is not None else None
        if v.opname in _FLOAT_BINARY and len(v.operands) == 2 and not v.flags:
            return "float" if all(self.role(o) is not None for o in v.operands) else None
        if v.opname == "fneg" and len(v.operands) == 1:
            return "float" if self.role(v.operands[0]) is not None else None
        return None

    def hoistable(self, v) -> bool:
        return v.type == F64T and self.role(v) is not None and self.uses_index

    # ----- emitted at the refill ---------------------------------------------------------
    def scalar(self, v, memo):
        """The value of a 'fixed' ``v`` at the refill (a load re-read, an extract
        re-done; anything computed before the loop used as it is)."""
        if id(v) in memo:
            return memo[id(v)]
        b, loop = self.lowering.b, self.loop
        if isinstance(v, (ir.Constant, ir.Argument)) or id(v.parent) in loop.before:
            out = v
        elif isinstance(v, ir.LoadInstr):
            out = b.load(v.operands[0], typ=v.type)
        elif isinstance(v, ir.ExtractValue):
            out = b.extract_value(self.scalar(v.aggregate, memo), list(v.indices))
        else:   # role() calls nothing else fixed
            raise AssertionError(f"not a fixed value: {v}")
        memo[id(v)] = out
        return out

    def splat(self, value, vtype):
        b = self.lowering.b
        lanes = b.insert_element(ir.Constant(vtype, None), value, ir.Constant(I64, 0))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        return b.shuffle_vector(lanes, lanes, zeros)

    def vector(self, v, counters, memo):
        """``v`` for the four iterations whose counters are the lanes of ``counters``."""
        key = ("vector", id(v))
        if key in memo:
            return memo[key]
        b, loop, role = self.lowering.b, self.loop, self.role(v)
        if role == "fixed":
            value = self.scalar(v, memo)
            out = self.splat(value, ir.VectorType(value.type, LANES))
        elif role == "index":   # what the loop computes: start + k * step
            out = b.add(self.splat(loop.start, V4I), b.mul(counters, self.splat(loop.step, V4I)))
        elif isinstance(v, ir.CastInstr):
            source = self.vector(v.operands[0], counters, memo)
            out = getattr(b, v.opname)(source, ir.VectorType(v.type, LANES))
        elif v.opname == "fneg":
            out = b.fneg(self.vector(v.operands[0], counters, memo))
        else:
            x, y = (self.vector(o, counters, memo) for o in v.operands)
            out = getattr(b, v.opname)(x, y)
        memo[key] = out
        return out


class LoopAhead:
    """The ``for`` loop context and the computed-ahead calls."""

    loops = ()
    ahead_sites = 0

    def enter_loop(self, s, k, start, step, length, before):
        """``before``: the ids of the blocks that existed before the loop's own."""
        loop = _Loop(k, start, step, length, s.target.id, assigned_names(s.body),
                     self.prefix, before)
        self.loops = (*self.loops, loop)
        return loop

    def leave_loop(self, loop, preheader):
        """Close ``loop``: its buffers start empty each time it is entered."""
        self.loops = self.loops[:-1]
        b = self.b
        with b.goto_block(preheader):
            b.position_before(preheader.terminator)
            for fill in loop.fills:
                b.store(ir.Constant(I64, 0), fill)

    def loop_libm(self, function, args, name):
        """``function(*args)`` computed ahead for the innermost ``for`` loop, or None."""
        if not self.loops or getattr(self, "in_elements", False) or len(args) != 1:
            return None
        loop = self.loops[-1]
        if loop.prefix != self.prefix or not has_vector_libm(function):
            return None
        ahead = _Ahead(self, loop)
        if self.ahead_sites >= MAX_SITES or not ahead.hoistable(args[0]):
            return None
        self.ahead_sites += 1
        vector_fn = self.function(f"_ZGVdN4v_{function}", ir.FunctionType(V4, [V4]),
                                  ("nounwind", "readnone"))
        b = self.b
        with b.goto_block(self.entry):   # not zeroed: read only after a refill
            b.position_at_start(self.entry)
            buffer = b.alloca(F64T, size=ir.Constant(I64, BATCH), name=f"{name}.ahead")
        first, fill = self.alloca(I64, f"{name}.ahead_first"), self.alloca(I64, f"{name}.ahead_n")
        loop.fills.append(fill)
        k = loop.k
        miss = b.icmp_unsigned(">=", b.sub(k, b.load(first)), b.load(fill))
        with b.if_then(miss, likely=False):
            left = b.sub(loop.length, k)
            count = b.select(b.icmp_signed("<", left, ir.Constant(I64, BATCH)), left,
                             ir.Constant(I64, BATCH))
            groups = b.lshr(b.add(count, ir.Constant(I64, LANES - 1)), ir.Constant(I64, 2))
            memo = {}
            step_lanes = ir.Constant(V4I, list(range(LANES)))
            with counted_loop(b, f"{name}.ahead", ir.Constant(I64, 0), ir.Constant(I64, 1),
                              lambda bb, g: bb.icmp_signed("<", g, groups)) as group:
                offset = b.mul(group.index, ir.Constant(I64, LANES))
                counters = b.add(ahead.splat(b.add(k, offset), V4I), step_lanes)
                value = b.call(vector_fn, [ahead.vector(args[0], counters, memo)])
                for lane in range(LANES):   # (LLVM joins the four stores)
                    at = b.add(offset, ir.Constant(I64, lane))
                    b.store(b.extract_element(value, ir.Constant(I64, lane)),
                            b.gep(buffer, [at], inbounds=True, source_etype=F64T))
            b.store(k, first)
            b.store(count, fill)
        at = b.sub(k, b.load(first))
        return b.load(b.gep(buffer, [at], inbounds=True, source_etype=F64T), typ=F64T,
                      name=name)
