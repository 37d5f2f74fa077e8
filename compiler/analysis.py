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

import inspect
import textwrap
from dataclasses import dataclass, field

import gast
import numpy as np

from .calls import Operation, _resolve, describe
from .errors import error_at
from .normalize import local_names
from .parse import parameter_names
from .pytree import ANY, LEAF, Kind, container, join

_DIFFERENTIABLE = {"prim", "copy", "user", "index", "pack", "append", "kernel", "join",
                   "dict", "setitem", "get", "values", "items", "extend", "without",
                   "derivative"}
# operations whose operands are read as arrays (a container there is numpy's array of it)
_ARRAY_OPERATIONS = {"prim", "kernel", "severs"}
# THE list of primitives whose result may share memory with their (first) operand: numpy
# returns a view or the operand itself (np.reshape, np.transpose and .T, np.squeeze,
# np.expand_dims, np.broadcast_to, np.atleast_1d/2d/3d, np.flip, np.diag of a matrix,
# np.einsum's 'ii->i' / 'ij->ji', basic indexing), or the compiled forward does (nd's
# slice, slice_axis, flatten; sum_to of the same shape).  A write through one name is seen
# through the other (the aliasing rule, _check_array_writes).  Operations marked ``view``
# (np.asarray, .astype(copy=False): the operand itself when no conversion is needed) count
# too; tests/test_adversary5_fixes.py checks every numpy spelling of calls.py against what
# numpy returns (np.shares_memory), so a new view cannot be left out.
_VIEWS = {"reshape", "transpose", "squeeze", "expand_dims", "broadcast_to", "flatten",
          "getitem", "atleast_1d", "atleast_2d", "atleast_3d", "flip", "diag", "einsum",
          "slice", "slice_axis", "sum_to"}


def _is_view(op) -> bool:
    """Whether the operation's result may share memory with its first operand."""
    return op.kind == "prim" and (op.prim.name in _VIEWS or op.view)


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
    shape_only: set = field(default_factory=set)   # needed for their shape and dtype only
    containers: set = field(default_factory=set)   # locals that hold lists or tuples
    shared_updates: set = field(default_factory=set)   # ids of ``x += v`` where x may be shared
    kinds: dict = field(default_factory=dict)   # local -> Kind (compiler/pytree.py)
    leaf_checks: dict = field(default_factory=dict)   # id(statement) -> names to check
    key_iterations: set = field(default_factory=set)   # ids of ``k = d[index]`` (for k in d)
    written: set = field(default_factory=set)   # locals an array write (x[k] = v) may change
    copied_writes: set = field(default_factory=set)   # ids of writes that copy the array first

    def kind(self, atom) -> Kind:
        if not isinstance(atom, gast.Name):
            return LEAF
        return self.kinds.get(atom.id, LEAF)

    def argument_mask(self, args, active=True) -> tuple:
        """A user callee's mask for ``args``: False, True, or the Kind of a container."""
        mask = []
        for a in args:
            if not (active and self.is_active_atom(a)):
                mask.append(False)
            else:
                kind = self.kind(a)
                mask.append(kind if kind.tag != "leaf" else True)
        return tuple(mask)

    def op(self, node):
        return self.ops[id(node)]

    def is_active_atom(self, atom) -> bool:
        return isinstance(atom, gast.Name) and atom.id in self.active


def _assignments(stmts, in_loop=False):
    """(node, target name or None, in_loop) for every assignment, call statement and loop
    target."""
    for s in stmts:
        if isinstance(s, gast.Assign):
            yield s, s.targets[0].id, in_loop
        elif isinstance(s, gast.Expr):
            yield s, None, in_loop
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


def _flows(op, index, through_severs=False) -> bool:
    """Whether a gradient flows from the result into argument ``index``."""
    if op.kind == "prim":
        rules = op.prim.vjps
        return rules is not None and index < len(rules) and rules[index] is not None
    return op.kind in _DIFFERENTIABLE or (through_severs and op.kind == "severs")


def _kind_of(op, node, kinds) -> Kind:
    """The kind of an assignment's result, given the kinds known so far."""
    def of(atom):
        return kinds.get(atom.id, LEAF) if isinstance(atom, gast.Name) else LEAF

    kind = op.kind
    if kind == "copy":
        return of(op.args[0])
    if kind == "index":
        key = op.params[0]
        known = isinstance(key, gast.Constant)
        return of(op.args[0]).item(key.value if known else None, known)
    if kind == "pack":
        tag = "tuple" if isinstance(node.value, gast.Tuple) else "list"
        return container(tag, ((k, of(a)) for k, a in enumerate(op.args)))
    if kind == "dict":
        return container("dict", ((k.value, of(a)) for k, a in zip(op.params, op.args,
                                                                     strict=True)))
    if kind == "append":
        items, value = of(op.args[0]), of(op.args[1])
        if items.tag == "list" and items.items is not None:
            return container("list", items.items + ((len(items.items), value),))
        return Kind("list", None, join(items.elem, value)) if items.tag == "list" else ANY
    if kind == "setitem":
        items, value, key = of(op.args[0]), of(op.args[1]), op.params[0]
        if not items.container:
            return items
        if isinstance(key, gast.Constant) and items.items is not None:
            def same(k):
                return k == key.value and type(k) is type(key.value)

            pairs = [(k, value if same(k) else v) for k, v in items.items]
            if any(same(k) for k, _ in items.items):
                return container(items.tag, pairs)
            if items.tag == "dict":
                return container("dict", pairs + [(key.value, value)])
        return Kind(items.tag, None, join(items.elem, value))
    if kind == "extend":
        items, more = of(op.args[0]), of(op.args[1])
        if items.tag == "list" and more.container and items.items is not None \
                and more.items is not None and more.tag != "dict":
            return container("list", items.items + tuple(
                (len(items.items) + k, v) for k, (_, v) in enumerate(more.items)))
        return Kind("list", None, join(items.elem, more.elem if more.container else ANY))
    if kind == "without":
        items, key = of(op.args[0]), op.params[0]
        if items.tag == "dict" and items.items is not None and isinstance(key, gast.Constant):
            return container("dict", ((k, v) for k, v in items.items if not (
                k == key.value and type(k) is type(key.value))))
        return Kind(items.tag, None, items.elem) if items.container else items
    if kind == "get":
        key = op.params[0]
        known = isinstance(key, gast.Constant)
        return join(of(op.args[0]).item(key.value if known else None, known), of(op.args[1]))
    if kind == "values":
        return Kind("list", None, of(op.args[0]).elem if of(op.args[0]).container else ANY)
    if kind == "items":
        d = of(op.args[0])
        return Kind("list", None, container("tuple", ((0, LEAF), (1, d.elem if d.container
                                                                   else ANY))))
    if kind == "unknown":   # a new array (np.zeros(n)) is a leaf; anything else may not be
        return LEAF if op.fresh else ANY
    return LEAF   # primitives, kernels, joins, constants, inert values; user calls (limit)


def _kinds(assignments, ops, params, param_kinds) -> dict:
    """Each local's kind, joined over all its assignments (flow-insensitive fixpoint):
    parameters' from the variant's mask (a differentiated one is an array or a number
    unless its mask says otherwise; others may be anything)."""
    kinds = {p: param_kinds.get(p, ANY) for p in params}
    changed = True
    while changed:
        changed = False
        for node, target, _ in assignments:
            if target is None or not isinstance(node, gast.Assign):
                continue
            new = join(kinds.get(target), _kind_of(ops[id(node)], node, kinds))
            if new != kinds.get(target):
                kinds[target] = new
                changed = True
    return kinds


def _unpause_container_items(assignments, ops, kinds) -> bool:
    """Inside ``ag.pause()`` an item read from a list, tuple or dict is the item itself, as
    on the tape (no operation recorded), so it keeps its gradient: its
    ``support.stop_gradient`` becomes a copy.  Whether anything changed."""
    changed = False
    for node, _, _ in assignments:
        base = getattr(node, "pb_paused_item", None)
        if base is not None and kinds.get(base, LEAF).container:
            ops[id(node)] = Operation("copy", args=[node.value.args[0]])
            changed = True
    return changed


def _result_names(fn) -> set:
    return _names(fn.body[-1].value) if isinstance(fn.body[-1], gast.Return) else set()


def _is_complex_source(parsed, node) -> bool:
    """A complex literal (``1j``) or a call of ``complex``."""
    if isinstance(node, gast.Constant):
        return isinstance(node.value, complex)
    if isinstance(node, gast.Call) and isinstance(node.func, gast.Name) \
            and node.func.id == "complex":
        try:
            return parsed.resolve("complex") is complex
        except KeyError:
            return False
    return False


_REAL_PARTS = {"real", "imag"}
_REAL_FUNCTIONS = {abs, np.abs, np.real, np.imag, np.angle}


def _makes_real(parsed, value) -> bool:
    """``abs(z)``, ``z.real``, ``np.imag(z)``, ...: a real result of a complex operand."""
    if isinstance(value, gast.Attribute):
        return value.attr in _REAL_PARTS
    if isinstance(value, gast.Call):
        if isinstance(value.func, gast.Attribute) and value.func.attr in _REAL_PARTS:
            return False
        target = _resolve(parsed, value.func)
        return any(target is f for f in _REAL_FUNCTIONS)
    return False


def _check_complex(parsed, assignments, active) -> None:
    """A CompileError where a complex value (a complex literal, ``complex(...)``, or a
    local computed from one) meets a differentiated one: the rules are for real values,
    and the real part of a complex gradient is not the gradient (d/dx |x (1+1j)| would be
    0).  Complex arrays passed in are caught at run time (``api._in_dtype_of``)."""
    complex_names, changed = set(), True
    while changed:
        changed = False
        for node, target, _ in assignments:
            if target is None or target in complex_names or not isinstance(node, gast.Assign) \
                    or _makes_real(parsed, node.value):
                continue
            if any(_is_complex_source(parsed, n) or (isinstance(n, gast.Name)
                                                     and n.id in complex_names)
                   for n in gast.walk(node.value)):
                complex_names.add(target)
                changed = True
    for node, target, _ in assignments:
        if target in active and target in complex_names:
            raise error_at(parsed, node, "a complex value meets a differentiated one here: "
                           "pullback differentiates real values only (the real part of a "
                           "complex gradient is not the gradient)",
                           "What to do: carry the real and imaginary parts as two real "
                           "values (|a + bi| = sqrt(a*a + b*b)).")


def _kernel_item_inputs(assignments, ops) -> dict:
    """``id(v = fusedK[i])`` -> the positions of the kernel's arguments that its output
    ``i`` is computed from: a kernel's items are varied one by one (``x * 0.5`` and
    ``n - 1`` fused into one run: the int ``n - 1`` is not differentiated with ``x``)."""
    from .fuse import _depends_on   # fuse reads this module's shared_updates
    kernels = {t: ops[id(node)].callee for node, t, _ in assignments
               if isinstance(node, gast.Assign) and ops[id(node)].kind == "kernel"}
    found = {}
    for node, _, _ in assignments:
        op = ops.get(id(node))
        if not (isinstance(node, gast.Assign) and op.kind == "index" and op.params
                and isinstance(op.args[0], gast.Name) and op.args[0].id in kernels
                and isinstance(op.params[0], gast.Constant)
                and type(op.params[0].value) is int):
            continue
        kernel = kernels[op.args[0].id]
        if not 0 <= op.params[0].value < len(kernel.outputs):
            continue
        output = kernel.outputs[op.params[0].value]
        if kernel.reduction is not None and output == kernel.reduction[0]:
            output = kernel.reduction[1]
        inputs = [output] if output in kernel.inputs else _depends_on(kernel, output)
        found[id(node)] = {kernel.inputs.index(name) for name in inputs}
    return found


def _varied(assignments, ops, seeds, through_severs) -> set:
    """Variables that depend on ``seeds`` through differentiable operations (fixpoint)."""
    varied = set(seeds)
    items = _kernel_item_inputs(assignments, ops)
    kernel_args = {t: ops[id(node)].args for node, t, _ in assignments
                   if isinstance(node, gast.Assign) and ops[id(node)].kind == "kernel"}
    changed = True
    while changed:
        changed = False
        for node, target, _ in assignments:
            if target is None or target in varied or not isinstance(node, gast.Assign):
                continue
            op = ops[id(node)]
            if id(node) in items:   # one output of a fused run: the inputs it reads
                args = kernel_args[op.args[0].id]
                if any(isinstance(args[k], gast.Name) and args[k].id in varied
                       for k in items[id(node)]) and op.args[0].id in varied:
                    varied.add(target)
                    changed = True
                continue
            if any(isinstance(a, gast.Name) and a.id in varied and _flows(op, i, through_severs)
                   for i, a in enumerate(op.args)):
                varied.add(target)
                changed = True
    return varied


def _useful(fn, assignments, ops, varied, through_severs=False) -> set:
    """Variables through which a gradient can reach the result (backward fixpoint)."""
    useful = _result_names(fn) & varied
    changed = True
    while changed:
        changed = False
        for node, target, _ in assignments:
            if target not in useful or not isinstance(node, gast.Assign):
                continue
            op = ops[id(node)]
            for i, a in enumerate(op.args):
                if isinstance(a, gast.Name) and a.id in varied and a.id not in useful \
                        and _flows(op, i, through_severs):
                    useful.add(a.id)
                    changed = True
    return useful


_WHAT_TO_DO = ("What to do: express it with nd/numpy operations pullback knows, move it out "
               "of the differentiated function, or use @pb.compile(fallback='tape').")


def _channel(value, node) -> str:
    """How the read ``node`` reaches the operation ``value`` (for messages)."""
    if isinstance(value, gast.Call):
        for k, a in enumerate(value.args):
            if a is node:
                return f"as its argument {k + 1}"
        for k in value.keywords:
            if k.value is node:
                return f"by keyword {k.arg}="
        if isinstance(value.func, gast.Attribute) and value.func.value is node:
            return "as the object of the method"
    if isinstance(value, gast.Attribute):
        return "as the object of the attribute"
    return "as an operand"


def check_flows(parsed, node, op, active) -> None:
    """THE invariant: every differentiated value a statement reads is an operand a gradient
    rule follows (``op.args``) or one read on purpose without a gradient (``op.cut``);
    any other read -- a keyword, a starred or nested argument, the object of a method or
    attribute, a parameter that is not differentiated -- is a CompileError at the user's
    line.  Every normalized statement's every operand position passes through here."""
    value = node.value
    covered = {id(n) for a in op.args + op.cut for n in gast.walk(a)}
    if op.kind == "unknown":
        covered = set()
    for n in gast.walk(value):
        if isinstance(n, gast.Name) and n.id in active and id(n) not in covered:
            label = op.label or "this operation"
            if op.kind == "unknown":
                message = (f"no gradient rule for {label}, and it cannot be transformed: "
                           f"{n.id} carries a gradient into it {_channel(value, n)}")
            else:
                message = (f"{n.id} carries a gradient into {label} where pullback does "
                           f"not differentiate it ({_channel(value, n)})")
            raise error_at(parsed, node, message, _WHAT_TO_DO)


def _alias_edges(assignments, ops, callee_returns_argument, whole_lists=False):
    """(a, b, both_ways) for every pair of locals that may share memory: copies and views
    both ways; an item put into a container one way (a write to the item is seen through
    the container, not the other way round); results of calls that may return an
    argument.  ``whole_lists``: for a list's own changes (``append``), an item read from a
    container is not the container (``y = xs[0]`` does not see ``xs`` grow)."""
    for node, target, _ in assignments:
        if target is None or not isinstance(node, gast.Assign):
            continue
        op = ops[id(node)]
        names = [a.id for a in op.args if isinstance(a, gast.Name)]
        if op.kind == "index" and whole_lists:
            yield from ((target, n, False) for n in names[:1])
        elif op.kind in ("copy", "index") or _is_view(op):
            yield from ((n, target, True) for n in names[:1])
        elif op.kind in ("pack", "append", "dict", "setitem", "extend", "without"):
            if op.kind in ("append", "setitem", "extend", "without"):
                yield names[0], target, True   # the same list, one item longer
                names = names[1:]
            yield from ((n, target, False) for n in names)
        elif op.kind in ("get", "values", "items"):
            yield from ((n, target, True) for n in names)
        elif op.kind == "user" and callee_returns_argument(op.callee):
            yield from ((n, target, True) for n in names)
        elif op.kind == "unknown" and not op.fresh:
            value = node.value
            yield from ((n, target, True) for n in _names(value) if n != target)


def _sharing(edges, name) -> set:
    """The locals that see a write through ``name`` (itself excluded)."""
    seen, todo = {name}, [name]
    while todo:
        current = todo.pop()
        for a, b, both in edges:
            for src, dst in ((a, b), (b, a)) if both else ((a, b),):
                if src == current and dst not in seen:
                    seen.add(dst)
                    todo.append(dst)
    return seen - {name}


def _returns_argument(callee) -> bool:
    """Whether ``callee`` may return one of its parameters itself (an alias of the
    caller's value); True when its source cannot be read."""
    callee = getattr(callee, "pullback_function", callee)   # a CompiledFunction's own
    code = callee.__code__
    params = set(parameter_names(callee))
    try:
        tree = gast.parse(textwrap.dedent(inspect.getsource(callee)))
    except (OSError, TypeError, SyntaxError):
        return True
    for n in gast.walk(tree):
        if isinstance(n, gast.Return) and n.value is not None:
            values = n.value.elts if isinstance(n.value, (gast.Tuple, gast.List)) else [n.value]
            if any(isinstance(v, gast.Name) and v.id in params for v in values):
                return True
    return False


def _may_share_argument(callee, _seen=None) -> bool:
    """Whether ``callee``'s result may share memory with one of its arguments (or an array
    it reads from outside): returning a parameter itself, a view of one (``m[0]``,
    ``np.squeeze(y)``, ``y.T``), a local bound to one, or anything not provably a new
    value.  Provably new (by reading its source, no types known): numbers and other
    constants, arithmetic (``x * w + b``: a new array), comparisons, a call of a numpy
    function or ufunc whose primitive is no view (np.dot, np.exp, np.sum, ...), of a
    FRESH_CALLS constructor, a ``.copy()``, a method that is a primitive which is no view,
    a user function that itself returns new values, a tuple/list/dict/conditional of new
    values, or a local every assignment of which is one.  True when the source cannot be
    read.  For array writes (the aliasing rule); a list's own changes need only
    ``_returns_argument``."""
    from .calls import FRESH_CALLS, METHODS, NUMPY, _numpy_name
    from pullback.runtime import primitives as P
    callee = getattr(callee, "pullback_function", callee)   # a CompiledFunction's own
    seen = set() if _seen is None else _seen
    if not hasattr(callee, "__code__") or callee.__code__ in seen:
        return True
    seen.add(callee.__code__)
    try:
        tree = gast.parse(textwrap.dedent(inspect.getsource(callee)))
    except (OSError, TypeError, SyntaxError):
        return True
    fn = tree.body[0] if tree.body else None
    if not isinstance(fn, gast.FunctionDef):
        return True   # a lambda (or something else): not read
    params = set(parameter_names(callee))
    closure = dict(zip(callee.__code__.co_freevars,
                       (c.cell_contents for c in (callee.__closure__ or ())
                        if _has_contents(c))))

    def resolve(expr):
        if isinstance(expr, gast.Name):
            if expr.id in params or expr.id in bindings:
                return None   # a value of the callee's (its methods are the value's)
            if expr.id in closure:
                return closure[expr.id]
            if expr.id in callee.__globals__:
                return callee.__globals__[expr.id]
            return getattr(__builtins__, expr.id, None) if not isinstance(__builtins__, dict) \
                else __builtins__.get(expr.id)
        if isinstance(expr, gast.Attribute):
            base = resolve(expr.value)
            return None if base is None else getattr(base, expr.attr, None)
        return None

    bindings = {}   # local -> the values assigned to it (None: bound another way)
    for n in gast.walk(fn):
        if isinstance(n, gast.Assign):
            for t in n.targets:
                if isinstance(t, gast.Name):
                    bindings.setdefault(t.id, []).append(n.value)
                else:   # unpacking (a, b = ...) and attribute/item targets
                    for m in gast.walk(t):
                        if isinstance(m, gast.Name) and isinstance(m.ctx, gast.Store):
                            bindings.setdefault(m.id, []).append(None)
        elif isinstance(n, (gast.AnnAssign, gast.NamedExpr)) and isinstance(n.target, gast.Name):
            bindings.setdefault(n.target.id, []).append(n.value)
        elif isinstance(n, (gast.For, gast.comprehension, gast.withitem, gast.ExceptHandler,
                            gast.FunctionDef, gast.Lambda, gast.Import, gast.ImportFrom)) \
                and n is not fn:
            for m in gast.walk(getattr(n, "target", None) or getattr(n, "optional_vars", None)
                               or n):
                if isinstance(m, gast.Name) and isinstance(m.ctx, gast.Store):
                    bindings.setdefault(m.id, []).append(None)
            if isinstance(n, gast.FunctionDef):
                bindings.setdefault(n.name, []).append(None)
    visiting = set()

    def fresh_call(call):
        if any(k.arg in ("out", "copy") for k in call.keywords):
            return False
        if isinstance(call.func, gast.Attribute) and resolve(call.func) is None:
            method = call.func.attr   # a method of a value
            if method == "copy" or method == "astype":
                return True
            prim = P.REGISTRY.get(METHODS.get(method, ""))
            return prim is not None and prim.name not in _VIEWS
        target = resolve(call.func)
        if target is None:
            return False
        if any(target is f for f in FRESH_CALLS) or isinstance(target, np.ufunc) \
                or any(target is f for f in _NEW_VALUE_BUILTINS) \
                or getattr(target, "__module__", None) == "math":
            return True
        prim = P.REGISTRY.get(getattr(target, "__name__", ""))
        if prim is not None and getattr(P, prim.name, None) is target:   # nd.dot, nd.exp
            return prim.name not in _VIEWS
        name = _numpy_name(target)
        if name is not None:
            return NUMPY[name] not in _VIEWS and NUMPY[name] != "asarray" or name == "array"
        if isinstance(getattr(target, "pullback_function", target), type(_may_share_argument)):
            module = getattr(target, "__module__", "") or ""
            if not module.startswith(("pullback", "numpy")):
                return not _may_share_argument(target, seen)
        return False

    def fresh(expr):
        if expr is None:
            return False
        if isinstance(expr, gast.Constant):
            return True
        if isinstance(expr, (gast.BinOp, gast.UnaryOp, gast.Compare)):
            return True
        if isinstance(expr, gast.IfExp):
            return fresh(expr.body) and fresh(expr.orelse)
        if isinstance(expr, (gast.Tuple, gast.List)):
            return all(fresh(e) for e in expr.elts)
        if isinstance(expr, gast.Dict):
            return all(fresh(e) for e in expr.values)
        if isinstance(expr, gast.Call):
            return fresh_call(expr)
        if isinstance(expr, gast.Name):
            if expr.id in params or expr.id not in bindings:
                return False   # a parameter, or something read from outside
            if expr.id in visiting:
                return True    # a cycle: decided by its other bindings
            visiting.add(expr.id)
            try:
                return all(fresh(v) for v in bindings[expr.id])
            finally:
                visiting.discard(expr.id)
        return False   # item reads (views), attributes (.T), anything else

    for n in gast.walk(fn):
        if isinstance(n, gast.Return) and n.value is not None and not fresh(n.value):
            return True
        if isinstance(n, (gast.Yield, gast.YieldFrom)):
            return True
    return False


# builtins whose result is a new value whatever they read (a number, a new array or string)
_NEW_VALUE_BUILTINS = (float, int, bool, len, abs, round, str, sum)


def _has_contents(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


_CALLER = "<caller>"   # the caller's references to the arguments


class _Sharing:
    """Flow-sensitive may-share analysis: a set of pairs ``(a, b)``, "a change to the
    object ``a`` holds is seen through ``b``", at each statement (``check(node, pairs)``
    is called before each assignment or call statement; loops run to a fixpoint).
    ``whole_lists``: only a list's own changes count (``y = xs[0]`` does not see ``xs``
    grow); else in-place array writes (``y = x[0:2]`` is a view both ways)."""

    def __init__(self, ops, params, returns_argument, whole_lists, check, in_place=(),
                 tuples=()):
        self.ops, self.returns_argument = ops, returns_argument
        self.whole_lists, self.check = whole_lists, check
        self.in_place = in_place   # ids of the values of array writes: the same object after
        self.tuples = tuples   # fused kernels' results: tuples of new arrays

    def block(self, stmts, pairs):
        for s in stmts:
            if isinstance(s, (gast.Assign, gast.Expr)):
                self.check(s, pairs)
                if isinstance(s, gast.Assign):
                    pairs = self.assign(s.targets[0].id, self.ops[id(s)], s.value, pairs)
            elif isinstance(s, gast.If):
                pairs = self.block(s.body, set(pairs)) | self.block(s.orelse, set(pairs))
            elif isinstance(s, (gast.While, gast.For)):
                if isinstance(s, gast.For):
                    pairs = {p for p in pairs if s.target.id not in p}
                while True:
                    after = self.block(s.body, set(pairs)) | pairs
                    if after == pairs:
                        break
                    pairs = after
        return pairs

    def assign(self, target, op, value, pairs):
        if id(value) in self.in_place:   # x[k] = v copies v's values into x's memory
            return pairs
        both, into, inside = self.edges(op, value)
        kept = {p for p in pairs if target not in p}
        if op.kind in ("append", "setitem", "extend", "without"):   # the same object
            kept |= {(a, target) for a, b in pairs if b == target}
        new = set()
        for src in both:
            new |= {(src, target), (target, src)}
            new |= {(target, b) for a, b in pairs if a == src}
            new |= {(a, target) for a, b in pairs if b == src}
        for item in into:   # the target holds item: it sees item's changes
            new.add((item, target))
            new |= {(a, target) for a, b in pairs if b == item}
        for holder in inside:   # the target is an item of holder
            new.add((target, holder))
            new |= {(target, b) for a, b in pairs if a == holder}
        return kept | {p for p in new if p[0] != p[1]}

    def edges(self, op, value):
        """(names the target may be the same object as, names it may hold, names it may
        be an item of)."""
        names = [a.id for a in op.args if isinstance(a, gast.Name)]
        if op.kind == "copy" or _is_view(op):
            return names[:1], [], []
        if op.kind == "index":
            inside = self.whole_lists or (names[:1] and names[0] in self.tuples)
            return ([], [], names[:1]) if inside else (names[:1], [], [])
        if op.kind in ("pack", "dict"):
            return [], names, []
        if op.kind in ("append", "setitem", "extend", "without"):
            return [], names[1:], []
        if op.kind in ("get", "values", "items"):   # items of the dict (or the default)
            return ([], [], names) if self.whole_lists else (names, [], [])
        if op.kind == "user" and self.returns_argument(op.callee):
            return names, [], []
        if op.kind == "unknown" and not op.fresh:
            return sorted(_names(value)), [], []
        return [], [], []


def _check_mutations(parsed, fn, assignments, result) -> None:
    """Writes the compiler does not follow are refused where they could be observed.

    - A call that may change an operand in place (``x.sort()``, ``np.copyto(x, v)``, an
      unknown method) must not touch a value that carries a gradient or that the adjoint
      reads, nor anything sharing memory with one (flow-insensitive: any time).
    - ``lst.append(v)`` rebinds ``lst`` to a new list in compiled code: refused when,
      at that statement, another name (or the caller, for a parameter) refers to the list.
    - ``x += v`` is ``x = x + v``: where ``x`` may share its object with another local at
      that statement, the forward checks at run time that it is not an array or list
      (numbers rebind in Python too).
    """
    edges = list(_alias_edges(assignments, result.ops, _may_share_argument))
    watched = result.active | result.needed
    for node, target, _ in assignments:
        if isinstance(node, gast.For):
            continue
        op = result.ops[id(node)]
        for m in op.mutates:
            if not isinstance(m, gast.Name) or m.id not in result.locals:
                continue
            hit = ({m.id} | _sharing(edges, m.id)) & watched
            if hit:
                raise error_at(parsed, node, f"{op.label or 'this call'} may change "
                               f"{m.id} in place, but the gradient needs "
                               f"{', '.join(sorted(hit))} as it was before",
                               "What to do: work on a copy (y = x.copy()) or compute a new "
                               "value instead of changing it in place.")

    def check_append(node, pairs):
        op = result.ops[id(node)]
        if op.kind not in ("append", "setitem", "extend", "without") \
                or not isinstance(op.args[0], gast.Name) \
                or (op.kind == "setitem" and result.kind(op.args[0]).tag == "leaf"):
            return   # an array write: _check_array_writes
        lst = op.args[0].id
        seen = sorted({b for a, b in pairs if a == lst and b != lst})
        if seen:
            who = "the caller" if _CALLER in seen else ", ".join(seen)
            what = {"append": f"{lst}.append()", "extend": f"{lst}.extend()",
                    "without": f"{lst}.pop()"}.get(op.kind, f"{lst}[...] = ...")
            raise error_at(parsed, node, f"{what} changes a list or dict that {who} also "
                           "refers to; compiled code treats containers as values and would "
                           "not change it there", "What to do: build a new one (new = [] "
                           "and append, new = {} and new[k] = v), or return it.")

    _Sharing(result.ops, result.params, _returns_argument, True, check_append).block(
        fn.body, {(p, _CALLER) for p in result.params})
    result.shared_updates |= shared_updates(parsed, fn)


def _live_after(stmts, live, found) -> set:
    """Backward liveness over the normalized form: ``found[id(s)]`` is the set of names
    that an assignment or call statement ``s`` leaves live (read later on some path before
    being assigned again); returns the names live before ``stmts``."""
    for s in reversed(stmts):
        if isinstance(s, (gast.Assign, gast.Expr)):
            found[id(s)] = set(live)
            if isinstance(s, gast.Assign):
                live = live - {s.targets[0].id}
            live = live | _names(s.value)
        elif isinstance(s, gast.Return):
            live = live | _names(s.value)
        elif isinstance(s, gast.If):
            live = _live_after(s.body, live, found) | _live_after(s.orelse, live, found) \
                | _names(s.test)
        elif isinstance(s, (gast.While, gast.For)):
            head = set(live) | _names(s.test if isinstance(s, gast.While) else s.iter)
            while True:   # the loop's head: after it, or around once more
                inner = _live_after(s.body, head, found)
                if isinstance(s, gast.For):
                    inner = inner - {s.target.id}
                if inner <= head:
                    break
                head |= inner
            live = head
    return live


def _array_writes(assignments, result) -> list:
    """The ``x[k] = v`` statements that may write into an array: those on a local whose
    kind is not known to be a dict, list or tuple (a value of unknown kind is an array at
    run time, or a container)."""
    return [node for node, _, _ in assignments if isinstance(node, gast.Assign)
            and result.ops[id(node)].kind == "setitem"
            and not result.kind(result.ops[id(node)].args[0]).container]


def _check_array_writes(parsed, fn, assignments, result) -> None:
    """THE aliasing rule for array writes (docs/ARCHITECTURE.md, "Array writes").

    ``x[k] = v`` writes into ``x``'s memory, as Python does.  It is refused where another
    name could observe the write: the caller (``x`` is an argument, or an alias or a view
    of one), or a local that may share ``x``'s memory (``b = x``, ``b = x[1:]``,
    ``b = x.reshape(...)``, a list holding ``x``) and is read after the write (liveness).
    Item reads of written arrays are copies in compiled code (``support.read``), so the
    adjoint's saved values never change under it; a write copies the array first
    (``support.setitem_copied``) where an older reference to its memory may be read later
    by the adjoint: a needed local that may share it, or an argument of a user call (the
    callee's forward may have saved it)."""
    for node, _, _ in assignments:
        op = result.ops.get(id(node))
        if isinstance(node, gast.Assign) and op.kind == "setitem" \
                and result.kind(op.args[0]).container \
                and any(isinstance(n, gast.Slice) for n in gast.walk(op.params[0])):
            raise error_at(parsed, node, f"{op.args[0].id}[i:j] = ... on a list (which may "
                           "change its length) is not supported in compiled code",
                           "What to do: build a new list (append, or xs[:i] + ys + xs[j:]), "
                           "or assign one item at a time.")
    writes = _array_writes(assignments, result)
    if not writes:
        return
    ops = result.ops
    result.written = {ops[id(n)].args[0].id for n in writes}
    live = {}
    _live_after(fn.body, set(), live)

    write_ids = {id(n) for n in writes}

    def check(node, pairs):
        if id(node) not in write_ids:
            return
        x = ops[id(node)].args[0].id
        sharers = {b for a, b in pairs if a == x and b != x}
        if _CALLER in sharers:
            what = "an argument (or a global, read as one)" if x in result.params else \
                "an array the caller also refers to (an alias or view of an argument)"
            raise error_at(parsed, node, f"{x}[...] = ... writes into {what}: Python would "
                           "change the caller's array, which compiled code does not follow",
                           f"What to do: write into a copy ({x} = {x}.copy() first) and "
                           "return it.")
        seen = sorted(sharers & live.get(id(node), set()))
        if seen:
            raise error_at(parsed, node, f"{x}[...] = ... writes into an array that "
                           f"{', '.join(seen)} may share (an alias, a numpy view such as "
                           f"b = {x}[1:] or a reshape, a helper's result that may be "
                           "one, or a list holding it), and "
                           f"{'it is' if len(seen) == 1 else 'they are'} used after this "
                           "write: compiled code does not follow the write through another "
                           "name", "What to do: make the other one a copy (b = x.copy()), "
                           "or read it only after the write.")

    tuples = {t for node, t, _ in assignments
              if isinstance(node, gast.Assign) and ops[id(node)].kind == "kernel"}
    _Sharing(ops, result.params, _may_share_argument, False, check,
             {id(n.value) for n in writes}, tuples).block(
        fn.body, {(p, _CALLER) for p in result.params})

    # what really shares memory in compiled code: item reads of written arrays are copies,
    # a write copies the value it writes, a kernel's tuple holds its outputs (one way)
    def source(node):
        op = ops.get(id(node))
        if isinstance(node, gast.Assign) and op.kind == "index" \
                and isinstance(op.args[0], gast.Name):
            return op.args[0].id
        return None

    kept = [(node, target, loop) for node, target, loop in assignments
            if id(node) not in write_ids and source(node) not in result.written | tuples]
    edges = list(_alias_edges(kept, ops, _may_share_argument))
    edges += [(target, source(node), False) for node, target, _ in assignments
              if source(node) in tuples]
    passed = {a.id for node, _, _ in assignments if id(node) in ops
              and ops[id(node)].kind == "user" for a in ops[id(node)].args
              if isinstance(a, gast.Name)}
    for node in writes:
        x = ops[id(node)].args[0].id
        others = _sharing(edges, x)
        if others & result.needed or ({x} | others) & passed:
            result.copied_writes.add(id(node))


def shared_updates(parsed, fn: gast.FunctionDef) -> set:
    """Ids of the ``x += v`` statements of ``fn`` where ``x`` may share its object with
    another local (the run-time ``check_rebind`` guards them).  Asked by the fuser before
    fusion, which would otherwise absorb the statement and its check into a kernel."""
    locals_ = local_names(fn)
    ops = {id(node): describe(parsed, node.value, locals_)
           for node, _, _ in _assignments(fn.body) if isinstance(node, (gast.Assign, gast.Expr))}
    found = set()

    def check(node, pairs):
        if getattr(node, "pb_augmented", False):
            target = node.targets[0].id
            if any(a == target and b not in (target, _CALLER) for a, b in pairs):
                found.add(id(node))

    params = [a.id for a in fn.args.args]
    _Sharing(ops, params, _may_share_argument, False, check).block(
        fn.body, {(p, _CALLER) for p in params})
    return found


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


def analyze(parsed, fn: gast.FunctionDef, active_params, param_kinds=None) -> Analysis:
    """Activity, needed values and redefinitions of a normalized function
    (``param_kinds``: the Kind of each differentiated container parameter)."""
    result = Analysis(params=[a.id for a in fn.args.args], active_params=list(active_params),
                      locals=local_names(fn))
    assignments = list(_assignments(fn.body))
    counts = {}
    for node, target, in_loop in assignments:
        if isinstance(node, (gast.Assign, gast.Expr)):
            result.ops[id(node)] = describe(parsed, node.value, result.locals)
        if target is None:
            continue
        counts[target] = counts.get(target, 0) + 1
        if in_loop or counts[target] > 1 or target in result.params:
            result.redefined.add(target)
    ops = result.ops
    seeds = {p: LEAF for p in active_params}
    seeds.update(param_kinds or {})
    result.kinds = _kinds(assignments, ops, result.params, seeds)
    if _unpause_container_items(assignments, ops, result.kinds):
        result.kinds = _kinds(assignments, ops, result.params, seeds)
    iterated_any = _dict_iterations(assignments, result)
    varied = _varied(assignments, ops, active_params, through_severs=False)
    result.active = varied & _useful(fn, assignments, ops, varied)
    for node in iterated_any:   # for k in xs, xs of unknown kind: a dict's keys, if not varied
        if node.value.value.id not in varied:
            result.key_iterations.add(id(node))
    _check_complex(parsed, assignments, varied)
    for node, _, _ in assignments:
        if not isinstance(node, gast.For):
            check_flows(parsed, node, ops[id(node)], varied)
    _check_counts_and_indices(parsed, assignments, ops, list(active_params), result.kinds)
    _check_severed(parsed, fn, assignments, ops, active_params)
    for node, target, _ in assignments:
        if isinstance(node, gast.Expr) and ops[id(node)].kind == "user" and any(
                result.is_active_atom(a) or (isinstance(a, gast.Name) and a.id in varied)
                for a in ops[id(node)].args):
            raise error_at(parsed, node, f"the result of {ops[id(node)].label}() is not used, "
                           "so it could only matter by changing its arguments in place, "
                           "which pullback does not follow",
                           "What to do: return the new value from the function and assign "
                           "it (s = put(s, a)).")
        if id(node) in ops and ops[id(node)].kind in ("pack", "append"):
            result.containers.add(target)
        if target is None or not isinstance(node, gast.Assign):
            continue
        op = ops[id(node)]
        if target not in result.active:
            continue
        _check_container_operands(parsed, node, op, result, varied)
        if op.kind == "prim":
            result.needed.add(target)
            for a in op.args:
                result.needed |= _names(a)
            for k in op.params:
                result.needed |= _names(k.value)
        elif op.kind == "index":
            result.needed |= _names(op.args[0]) | _names(op.params[0])
        elif op.kind == "setitem":   # the key; an array's dtype and the value's shape
            result.needed |= _names(op.params[0])
            if not result.kind(op.args[0]).container:
                result.needed |= _names(op.args[0]) | _names(op.args[1])
        elif op.kind == "without":
            result.needed |= _names(op.args[0]) | _names(op.params[0])
        elif op.kind == "extend":
            result.needed |= _names(op.args[0])
        elif op.kind == "get":
            result.needed |= _names(op.args[0]) | _names(op.params[0])
        elif op.kind in ("values", "items"):
            result.needed |= _names(op.args[0])
        elif op.kind == "derivative":   # its VJP runs the inner function again at them
            for a in op.args:
                result.needed |= _names(a)
        elif op.kind in ("kernel", "join"):
            result.needed.add(target)
            for a in op.args:
                result.needed |= _names(a)
            for k in op.params:   # a join's axis (``axis=-1`` is a local after normalize)
                result.needed |= _names(k.value)
    result.containers |= {n for n, k in result.kinds.items() if k.tag in ("list", "tuple")}
    result.needed &= result.locals
    _check_array_writes(parsed, fn, assignments, result)
    _check_mutations(parsed, fn, assignments, result)
    decide_pushes(fn.body, result)
    return result


def _check_counts_and_indices(parsed, assignments, ops, seeds, kinds) -> None:
    """A differentiated value is a float in compiled code (an int argument in argnums is
    differentiated as float64, as pullback's entries differentiate integer arrays): as a
    count (``range(n)``) or in an index or slice (``x[n]``, ``x[:n]``, ``x[n] = v``) it is
    a CompileError at the user's line, as for np.tile's or reshape's counts, never numpy's
    TypeError from generated code (a dict's keys may be any values).  ``varied`` here
    follows no fused kernel (a kernel counts every input as differentiated, so its outputs
    -- ``k + 1`` beside ``x[k]``, a mask -- would be taken for differentiated ones)."""
    kernels = {t for node, t, _ in assignments
               if isinstance(node, gast.Assign) and ops[id(node)].kind == "kernel"}

    def through_kernel(node):
        op = ops.get(id(node))
        return isinstance(node, gast.Assign) and (op.kind == "kernel" or (
            op.kind == "index" and op.args and isinstance(op.args[0], gast.Name)
            and op.args[0].id in kernels))

    kept = [a for a in assignments if not through_kernel(a[0])]
    varied = _varied(kept, ops, seeds, through_severs=False)
    for node, _, _ in assignments:
        if not isinstance(node, gast.Assign):
            continue
        op, value = ops[id(node)], node.value
        if op.kind == "inert" and isinstance(value, gast.Call) \
                and _resolve(parsed, value.func) is range:
            names, what = [n for a in value.args for n in _names(a)], "range() (a count)"
        elif op.kind in ("index", "setitem") and op.params \
                and kinds.get(getattr(op.args[0], "id", None), ANY).tag != "dict":
            names = sorted(_names(op.params[0]))
            what = "an index or slice"
        else:
            continue
        for n in names:
            if n in varied:
                raise error_at(parsed, node, f"{n} carries a gradient into {what}, where "
                               "pullback does not differentiate it: a differentiated int is "
                               "a float in compiled code",
                               f"What to do: leave {n} out of argnums= (an int used as a "
                               "count or an index has no gradient), or give jvp/hvp None as "
                               "its tangent.")


def _dict_iterations(assignments, result) -> list:
    """``for k in d`` over a dict reads its keys: ``k = d[index]`` becomes an inert
    ``support.nth_key``; over a value of unknown kind, the statements that may do so."""
    unknown = []
    for node, _, _ in assignments:
        value = getattr(node, "value", None)
        if isinstance(node, gast.Assign) and isinstance(value, gast.Subscript) \
                and getattr(value, "pb_iteration", False):
            kind = result.kind(value.value)
            if kind.tag == "dict":
                result.ops[id(node)] = Operation("inert", cut=[value], label="for ... in")
                result.key_iterations.add(id(node))
            elif kind.tag == "any":
                unknown.append(node)
    return unknown


def _check_container_operands(parsed, node, op, result, varied) -> None:
    """A dict, list or tuple read where a differentiated array operation reads its
    operands: Python's operators would concatenate or repeat a list (its gradient would
    follow numpy's), a dict has no array: refused.  A numpy function of a list or tuple
    reads it as the array numpy makes of it (``np.sum([1, a, 2])``).  A value of unknown
    kind with a gradient is checked at run time (``support.leaf``)."""
    if op.kind not in _ARRAY_OPERATIONS:
        return
    for a in op.args:
        if not isinstance(a, gast.Name):
            continue
        kind = result.kind(a)
        # a fused run may hold an operator: refused when the container carries a gradient
        # (a constant list there is the array numpy makes of it, as in its numpy calls)
        if kind.container and (kind.tag == "dict" or (op.kind == "kernel" and a.id in varied)
                               or isinstance(node.value, (gast.BinOp, gast.UnaryOp))):
            what = "a dict" if kind.tag == "dict" else "a list or tuple"
            raise error_at(parsed, node, f"{a.id} is {what}: an operator or array operation "
                           f"on it ({op.label or 'concatenation, repetition'}) is not "
                           "differentiated (an operator on a list or tuple concatenates or "
                           "repeats it)", "What to do: convert it first (np.stack(xs)), read "
                           "its items (d['a']), or build a new list with append.")
        if kind.tag == "any" and a.id in varied:
            result.leaf_checks.setdefault(id(node), []).append(a.id)


def _check_severed(parsed, fn, assignments, ops, active_params) -> None:
    """``float(x)``, ``x.item()``, ``x.asscalar()``, ... of a differentiated value are fine
    where their result only decides control flow; where it reaches the result, the
    gradient through it would silently be zero: a CompileError."""
    if not any(ops[id(n)].kind == "severs" for n, _, _ in assignments if id(n) in ops):
        return
    varied = _varied(assignments, ops, active_params, through_severs=True)
    useful = _useful(fn, assignments, ops, varied, through_severs=True)
    for node, target, _ in assignments:
        op = ops.get(id(node))
        if op is not None and op.kind == "severs" and target in useful and any(
                isinstance(a, gast.Name) and a.id in varied for a in op.args):
            raise error_at(parsed, node, f"no gradient rule for {op.label}: it turns a "
                           "differentiated value into a plain number, and the result depends "
                           "on it (its gradient would be lost)", "What to do: use the array itself (x or x[0]); call "
                           "x.detach() to stop the gradient on purpose.")


def narrow_needed(fn: gast.FunctionDef, analysis: Analysis, reads: tuple) -> None:
    """THE decision of what the forward saves: keep as ``needed`` only what the emitted
    adjoint really reads, and decide the pushes again.

    ``analyze`` counts every operand of an active operation as needed; the
    adjoint's inline derivatives often read fewer (``b * 2`` reads neither ``b``
    nor its result), and a kernel's VJP reads only what its derivatives name
    (``fuse.reads``).  ``reads`` is ``(values, shapes)`` from emitting the adjoint
    once (``ReverseTransform.adjoint_reads``): a name outside both is never saved,
    however often it is overwritten (restoring it would serve nobody); a name read
    only for its shape and dtype is ``shape_only``: its pushes save a stand-in without
    data.  Emitting the adjoint again with fewer pushes loads the same names, or fewer.
    """
    values, shapes = reads
    analysis.needed &= values | shapes
    analysis.shape_only = (analysis.needed & shapes) - values
    analysis.pushes = set()
    decide_pushes(fn.body, analysis)
