"""Small llvmlite.ir helpers so IR-building code reads like the code it emits.

Used by the kernel lowering (``compiler/lower.py``) and by the fastcall
trampoline (``runtime/fastcall.py``).  Every block and value gets a name, so
printed IR is readable: a loop named ``vector`` is the blocks ``vector.head``,
``vector.body`` and ``vector.done`` with the index ``vector.i``.
"""

from __future__ import annotations

import math
import struct
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal

from llvmlite import ir

I1 = ir.IntType(1)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()


def add_string_attribute(attributes, key: str, value: str) -> None:
    """Add ``"key"="value"`` to a function's attributes (llvmlite only knows the built-in ones)."""
    set.add(attributes, f'"{key}"="{value}"')


@dataclass
class LoopState:
    """Inside the loop: ``index`` and ``carried`` are this iteration's values; assign
    ``next`` to set the carried values of the next iteration.  After the loop they are
    the values the loop exited with."""

    index: ir.Value
    carried: list = field(default_factory=list)
    next: list | None = None


@contextmanager
def counted_loop(b: ir.IRBuilder, name: str, start, step, keep_going, carried=(),
                 carried_names=()):
    """Emit ``for i = start; keep_going(b, i); i += step`` with loop-carried values.

    ``keep_going(b, index)`` builds the i1 condition in the loop head.  The body is the
    ``with`` block; the builder is left in ``<name>.done``.
    """
    preheader = b.block
    head = b.append_basic_block(f"{name}.head")
    body = b.append_basic_block(f"{name}.body")
    done = b.append_basic_block(f"{name}.done")
    b.branch(head)
    b.position_at_end(head)
    index = b.phi(start.type, name=f"{name}.i")
    index.add_incoming(start, preheader)
    names = list(carried_names) or [f"{name}.carried" for _ in carried]
    phis = []
    for value, value_name in zip(carried, names, strict=True):
        phi = b.phi(value.type, name=value_name)
        phi.add_incoming(value, preheader)
        phis.append(phi)
    b.cbranch(keep_going(b, index), body, done)
    b.position_at_end(body)
    state = LoopState(index, phis)
    yield state
    following = state.next if state.next is not None else phis
    latch = b.block
    index.add_incoming(b.add(index, step, name=f"{name}.next"), latch)
    for phi, value in zip(phis, following, strict=True):
        phi.add_incoming(value, latch)
    b.branch(head)
    b.position_at_end(done)


@dataclass
class Branch:
    """Values that a conditional block may replace (``values``); after the block they
    are the merged values (phis)."""

    values: list


@contextmanager
def conditional(b: ir.IRBuilder, cond, name: str, values=(), value_names=()):
    """Emit ``if cond: <with block>``; values assigned to ``branch.values`` inside are
    merged with the incoming ones after it."""
    before = b.block
    then = b.append_basic_block(f"{name}.then")
    merge = b.append_basic_block(f"{name}.merge")
    b.cbranch(cond, then, merge)
    b.position_at_end(then)
    branch = Branch(list(values))
    yield branch
    b.branch(merge)
    then_end = b.block
    b.position_at_end(merge)
    names = list(value_names) or [f"{name}.value" for _ in values]
    merged = []
    for old, new, value_name in zip(values, branch.values, names, strict=True):
        phi = b.phi(old.type, name=value_name)
        phi.add_incoming(old, before)
        phi.add_incoming(new, then_end)
        merged.append(phi)
    branch.values = merged


def require(b: ir.IRBuilder, ok, otherwise: ir.Block, name: str) -> None:
    """Continue in a new block ``name`` if ``ok``, else jump to ``otherwise``."""
    following = b.append_basic_block(name)
    b.cbranch(ok, following, otherwise)
    b.position_at_end(following)


class FloatConstant(ir.Constant):
    """A float or double constant printed as a decimal when that is exact (``1.0``,
    ``-0.5``), in LLVM's hex notation otherwise (``0.1``, infinities)."""

    def _get_reference(self):
        value = float(self.constant)
        if self.type == ir.FloatType():
            value = struct.unpack("f", struct.pack("f", value))[0]
        text = repr(value)
        if math.isfinite(value) and Decimal(text) == Decimal(value):
            return text
        return super()._get_reference()


class Splat(ir.Constant):
    """A vector with every lane ``value``, printed ``splat (double 1.0)``."""

    def __init__(self, vtype: ir.VectorType, value: float):
        self.element = FloatConstant(vtype.element, value)
        super().__init__(vtype, [self.element] * vtype.count)

    def _get_reference(self):
        return f"splat ({self.element._to_string()})"


class Poison(ir.Constant):
    """``poison`` of a type: a placeholder whose value is never used."""

    def __init__(self, typ):
        super().__init__(typ, None)

    def _get_reference(self):
        return "poison"
