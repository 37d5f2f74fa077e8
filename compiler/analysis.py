"""Step 4, analysis: which values carry gradients and which the adjoint must read.

Input: a normalized function and which parameters are differentiated.
Output: an ``Analysis`` with

- ``ops``: the ``Operation`` of every assignment (by node id);
- ``active``: variables that depend on a differentiated input through
  differentiable operations (flow-insensitive fixpoint, so loops are covered);
  integer counters, conditions and anything else get no adjoint code;
- ``needed``: variables whose values the adjoint reads (operands and results
  of active operations, index keys, loop variables);
- ``redefined``: variables assigned more than once or inside a loop: their old
  values are pushed before being overwritten when they are ``needed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gast

from .calls import describe
from .errors import error_at
from .normalize import local_names

_DIFFERENTIABLE = {"prim", "copy", "user", "index", "pack", "append", "kernel", "join"}


@dataclass
class Analysis:
    ops: dict = field(default_factory=dict)
    active: set = field(default_factory=set)
    needed: set = field(default_factory=set)
    redefined: set = field(default_factory=set)
    params: list = field(default_factory=list)
    active_params: list = field(default_factory=list)
    locals: set = field(default_factory=set)
    pushes: set = field(default_factory=set)   # ids of assignments that push the old value

    def op(self, node):
        return self.ops[id(node)]

    def is_active_atom(self, atom) -> bool:
        return isinstance(atom, gast.Name) and atom.id in self.active


def _assignments(stmts, in_loop=False):
    """(node, target name, in_loop) for every assignment and loop target."""
    for s in stmts:
        if isinstance(s, gast.Assign):
            yield s, s.targets[0].id, in_loop
        elif isinstance(s, gast.If):
            yield from _assignments(s.body, in_loop)
            yield from _assignments(s.orelse, in_loop)
        elif isinstance(s, gast.While):
            yield from _assignments(s.body, True)
        elif isinstance(s, gast.For):
            yield s, s.target.id, True
            yield from _assignments(s.body, True)


def _names(node) -> set:
    if node is None:
        return set()
    return {n.id for n in gast.walk(node) if isinstance(n, gast.Name)}


def _flows(op, index, analysis) -> bool:
    """Whether a gradient flows from the result into argument ``index``."""
    if op.kind == "prim":
        rules = op.prim.vjps
        return rules is not None and index < len(rules) and rules[index] is not None
    return op.kind in _DIFFERENTIABLE


def _result_names(fn) -> set:
    return _names(fn.body[-1].value) if isinstance(fn.body[-1], gast.Return) else set()


def _useful(fn, assignments, result, varied) -> set:
    """Variables through which a gradient can reach the result (backward fixpoint)."""
    useful = _result_names(fn) & varied
    changed = True
    while changed:
        changed = False
        for node, target, _ in assignments:
            if target not in useful or not isinstance(node, gast.Assign):
                continue
            op = result.ops[id(node)]
            for i, a in enumerate(op.args):
                if isinstance(a, gast.Name) and a.id in varied and a.id not in useful \
                        and _flows(op, i, result):
                    useful.add(a.id)
                    changed = True
    return useful


def decide_pushes(stmts, analysis, defined=None) -> None:
    """Mark which assignments must push the old value (``analysis.pushes``).

    A needed variable is pushed before an assignment when it may already hold
    a value there: assigned earlier on some path, a parameter, or assigned
    anywhere in an enclosing loop.  Forward and adjoint both read this one
    decision, so pushes and pops stay paired.
    """
    if defined is None:
        defined = set(analysis.params)
    for s in stmts:
        if isinstance(s, gast.Assign):
            target = s.targets[0].id
            if target in analysis.needed and target in defined:
                analysis.pushes.add(id(s))
            defined.add(target)
        elif isinstance(s, gast.If):
            other = set(defined)
            decide_pushes(s.body, analysis, defined)
            decide_pushes(s.orelse, analysis, other)
            defined |= other
        elif isinstance(s, (gast.While, gast.For)):
            if isinstance(s, gast.For):
                if s.target.id in analysis.needed and s.target.id in defined:
                    analysis.pushes.add(id(s))
                defined.add(s.target.id)
            defined |= {t for _, t, _ in _assignments(s.body)}
            decide_pushes(s.body, analysis, defined)


def maybe_undefined(stmts, analysis) -> list:
    """Needed locals that may be unbound when pushed or saved: set to None first."""
    definite, out = set(analysis.params), []
    for s in stmts:
        if isinstance(s, gast.Assign):
            definite.add(s.targets[0].id)
        elif not isinstance(s, (gast.Expr, gast.Return)):
            inner = {t for _, t, _ in _assignments([s])}
            out += sorted((inner & analysis.needed) - definite - set(out))
            definite |= inner
    out += sorted(analysis.needed - definite - set(out))
    return out


def analyze(parsed, fn: gast.FunctionDef, active_params) -> Analysis:
    """Activity, needed values and redefinitions of a normalized function."""
    result = Analysis(params=[a.id for a in fn.args.args], active_params=list(active_params),
                      locals=local_names(fn))
    assignments = list(_assignments(fn.body))
    counts = {}
    for node, target, in_loop in assignments:
        counts[target] = counts.get(target, 0) + 1
        if in_loop or counts[target] > 1 or target in result.params:
            result.redefined.add(target)
        if isinstance(node, gast.Assign):
            result.ops[id(node)] = describe(parsed, node.value, result.locals)
    active = set(active_params)
    changed = True
    while changed:
        changed = False
        for node, target, _ in assignments:
            if target in active or not isinstance(node, gast.Assign):
                continue
            op = result.ops[id(node)]
            if any(isinstance(a, gast.Name) and a.id in active and _flows(op, i, result)
                   for i, a in enumerate(op.args)):
                active.add(target)
                changed = True
    result.active = active & _useful(fn, assignments, result, active)
    for node, target, _ in assignments:
        if not isinstance(node, gast.Assign):
            continue
        op = result.ops[id(node)]
        if op.kind == "unknown" and any(isinstance(a, gast.Name) and a.id in active
                                        for a in op.args):
            raise error_at(parsed, node,
                           f"no gradient rule for {op.label or 'this call'}, and it cannot be "
                           "transformed", "What to do: express it with nd/numpy operations "
                           "pullback knows, move it out of the differentiated function, or "
                           "use @pb.compile(fallback='tape').")
        if target not in result.active:
            continue
        if op.kind == "prim":
            result.needed.add(target)
            for a in op.args:
                result.needed |= _names(a)
            for k in op.params:
                result.needed |= _names(k.value)
        elif op.kind == "index":
            result.needed |= _names(op.args[0]) | _names(op.params[0])
        elif op.kind in ("kernel", "join"):
            result.needed.add(target)
            for a in op.args:
                result.needed |= _names(a)
            for k in op.params:   # a join's axis (``axis=-1`` is a local after normalize)
                result.needed |= _names(k.value)
    result.needed &= result.locals
    decide_pushes(fn.body, result)
    return result


def narrow_needed(fn: gast.FunctionDef, analysis: Analysis, reads: set) -> None:
    """Keep as ``needed`` only what the emitted adjoint really reads, and decide the
    pushes again.

    ``analyze`` counts every operand of an active operation as needed; the
    adjoint's inline derivatives often read fewer (``b * 2`` reads neither ``b``
    nor its result).  ``reads`` are the names the adjoint loads, found by
    emitting it once; emitting it again with fewer pushes loads the same names.
    """
    analysis.needed &= reads
    analysis.pushes = set()
    decide_pushes(fn.body, analysis)
