"""Step 3, normalize: rewrite the function into the normalized form (the IR).

Output guarantees (DESIGN 2.0).  The body contains only:

- ``name = simple`` where ``simple`` is a Name or Constant, one operator over
  atoms (``a * b``, ``-a``, ``a < b``), one call whose arguments are atoms, an
  attribute of an atom (``a.T``), a subscript of an atom by atoms, or a
  tuple/list of atoms (an *atom* is a Name or a Constant);
- ``name = support.append(name, atom)`` for ``lst.append(x)``;
- ``expr`` statements holding one call over atoms (e.g. ``print(a)``);
- ``if name: ... else: ...``, ``while name: ...`` (the condition's statements
  are repeated at the end of the body), ``for name in name: ...`` over a range
  object;
- exactly one ``return atom`` (or a tuple of atoms), the last statement.

``break``, ``continue`` and early ``return`` are lowered to boolean flags
first, so no jump statement is left; ``for`` loops that broke become ``while``
loops over an index.  Temporaries get deterministic names derived from the
operation (``mul1``, ``norm2``); user names are kept.
"""

from __future__ import annotations

import builtins
import copy

import gast

from .errors import error_at
from .inline import inline_local_functions

_OP_NAMES = {
    gast.Add: "add", gast.Sub: "sub", gast.Mult: "mul", gast.Div: "div", gast.Pow: "pow",
    gast.MatMult: "matmul", gast.Mod: "mod", gast.FloorDiv: "floordiv", gast.USub: "neg",
    gast.UAdd: "pos", gast.Not: "not", gast.Eq: "eq", gast.NotEq: "ne", gast.Lt: "lt",
    gast.LtE: "le", gast.Gt: "gt", gast.GtE: "ge", gast.And: "and", gast.Or: "or",
}


def name(identifier: str, store: bool = False) -> gast.Name:
    return gast.Name(id=identifier, ctx=gast.Store() if store else gast.Load(),
                     annotation=None, type_comment=None)


def const(value) -> gast.Constant:
    return gast.Constant(value=value, kind=None)


def assign(target: str, value, like=None) -> gast.Assign:
    node = gast.Assign(targets=[name(target, store=True)], value=value, type_comment=None)
    if like is not None:
        gast.copy_location(node, like)
    return node


def is_atom(node) -> bool:
    return isinstance(node, (gast.Name, gast.Constant))


#: Names the generated module and its functions define or take as parameters
#: (``codegen.load``'s helpers, the stack, the adjoint's head, a kernel VJP's parameters,
#: the jump lowering's flags).  A user's parameter, local or implicit input of one of
#: these names is renamed (``rename_generated``, ``implicit.hidden_names``): it would
#: shadow the generated code's own, or be shadowed by it.
GENERATED_NAMES = frozenset({
    "support", "ops", "npops", "mathops", "vjp", "jvp", "_stack", "_np", "_kernels", "grads",
    "outputs", "result_grad", "_result", "_returned", "_batch",
})


def reserved_for(fn_name: str) -> frozenset:
    """The generated names of the function ``fn_name``'s module."""
    return GENERATED_NAMES | {f"{fn_name}_forward", f"{fn_name}_adjoint", f"{fn_name}_tangent"}


def rename_generated(fn: gast.FunctionDef, namer) -> None:
    """Rename the user's parameters and locals that are generated names, in place."""
    reserved = reserved_for(fn.name)
    clashes = {n: namer.fresh(f"{n}_") for n in sorted(local_names(fn) & reserved)}
    if not clashes:
        return
    for node in gast.walk(fn):
        if isinstance(node, gast.Name) and node.id in clashes:
            node.id = clashes[node.id]


class Namer:
    """Deterministic fresh names that never clash with the user's."""

    def __init__(self, used):
        self.used = set(used)
        self.counts = {}

    def fresh(self, base: str) -> str:
        n = self.counts.get(base, 0)
        while True:
            n += 1
            candidate = f"{base}{n}"
            if candidate not in self.used:
                self.counts[base] = n
                self.used.add(candidate)
                return candidate


def local_names(fn: gast.FunctionDef) -> set:
    """Parameters and every name the function assigns."""
    names = {a.id for a in fn.args.args}
    for node in gast.walk(fn):
        if isinstance(node, gast.Name) and isinstance(node.ctx, gast.Store):
            names.add(node.id)
    return names


# ---------------------------------------------------------------------------------------
# Jump lowering: break / continue / return -> flags


def _contains(stmts, kinds, into_loops: bool) -> bool:
    for s in stmts:
        for node in _walk_stmt(s, into_loops):
            if isinstance(node, kinds):
                return True
    return False


def _walk_stmt(stmt, into_loops):
    yield stmt
    children = []
    if isinstance(stmt, gast.If):
        children = stmt.body + stmt.orelse
    elif isinstance(stmt, (gast.For, gast.While)) and into_loops:
        children = stmt.body
    for child in children:
        yield from _walk_stmt(child, into_loops)


class _JumpLowering:
    def __init__(self, namer):
        self.namer = namer
        self.returned = None  # flag name once any early return exists

    def flags_test(self, loop) -> gast.expr:
        """``not (returned or broke or continued)`` for the current position."""
        flags = [f for f in (self.returned, loop and loop.get("break"),
                             loop and loop.get("continue")) if f]
        test = gast.BoolOp(op=gast.Or(), values=[name(f) for f in flags]) if len(flags) > 1 \
            else name(flags[0])
        return gast.UnaryOp(op=gast.Not(), operand=test)

    def block(self, stmts, loop):
        out = []
        for i, s in enumerate(stmts):
            jumps = _contains([s], (gast.Return,), True) or (
                loop is not None and _contains([s], (gast.Break, gast.Continue), False))
            out.extend(self.stmt(s, loop))
            if jumps and i + 1 < len(stmts):
                rest = self.block(stmts[i + 1:], loop)
                if rest:
                    out.append(gast.copy_location(
                        gast.If(test=self.flags_test(loop), body=rest, orelse=[]), stmts[i + 1]))
                return out
        return out

    def stmt(self, s, loop):
        if isinstance(s, gast.Return):
            value = s.value if s.value is not None else const(None)
            return [assign("_result", value, s), assign(self.returned, const(True), s)]
        if isinstance(s, gast.Break):
            return [assign(loop["break"], const(True), s)]
        if isinstance(s, gast.Continue):
            return [assign(loop["continue"], const(True), s)]
        if isinstance(s, gast.If):
            s.body, s.orelse = self.block(s.body, loop), self.block(s.orelse, loop)
            return [s]
        if isinstance(s, gast.While):
            return self.loop(s, s.test, s.body, None)
        if isinstance(s, gast.For):
            breaks = _contains(s.body, (gast.Break,), False) or _contains(
                s.body, (gast.Return,), True)
            if breaks:
                return self.loop(s, None, s.body, s)
            inner = {"continue": self.namer.fresh("_continue")} if _contains(
                s.body, (gast.Continue,), False) else None
            body = self.block(s.body, inner)
            if inner:
                body = [assign(inner["continue"], const(False), s)] + body
            s.body = body
            return [s]
        return [s]

    def loop(self, s, test, body, for_node):
        """A while loop whose condition also stops on break/return flags."""
        returns = _contains(body, (gast.Return,), True)   # before lowering replaces them
        info = {}
        if _contains(body, (gast.Break,), False):
            info["break"] = self.namer.fresh("_break")
        if _contains(body, (gast.Continue,), False):
            info["continue"] = self.namer.fresh("_continue")
        pre = []
        if for_node is not None:  # for x in seq (with break/return) -> while over an index
            idx = self.namer.fresh("_index")
            if _iterated_as_itself(for_node.iter, for_node, self.namer.used):
                seq = for_node.iter.id
            else:
                seq = self.namer.fresh("_seq")
                pre.append(assign(seq, for_node.iter, s))
            pre.append(assign(idx, const(0), s))
            length = gast.Call(func=name("len"), args=[name(seq)], keywords=[])
            test = gast.Compare(left=name(idx), ops=[gast.Lt()], comparators=[length])
            step = [gast.copy_location(gast.Assign(
                        targets=[for_node.target], value=gast.Subscript(
                            value=name(seq), slice=name(idx), ctx=gast.Load()),
                        type_comment=None), s),
                    assign(idx, gast.BinOp(left=name(idx), op=gast.Add(), right=const(1)), s)]
            body = step + body
        if "break" in info:
            pre.append(assign(info["break"], const(False), s))
        new_body = self.block(body, info)
        if "continue" in info:
            new_body = [assign(info["continue"], const(False), s)] + new_body
        stops = [f for f in (self.returned if returns else None, info.get("break")) if f]
        if stops:
            guard = [gast.UnaryOp(op=gast.Not(), operand=name(f)) for f in stops]
            test = gast.BoolOp(op=gast.And(), values=guard + [test])
        loop = gast.copy_location(gast.While(test=test, body=new_body, orelse=[]), s)
        return pre + [loop]


def _iterated_as_itself(iterable, loop, locals_) -> bool:
    """``for x in xs`` over a local the loop does not rebind reads ``xs`` itself (a copy
    into a temporary would be a second name for the same list)."""
    return (isinstance(iterable, gast.Name) and iterable.id in locals_
            and not any(isinstance(n, gast.Name) and isinstance(n.ctx, gast.Store)
                        and n.id == iterable.id for b in loop.body for n in gast.walk(b)))


def lower_jumps(fn: gast.FunctionDef, namer: Namer) -> None:
    """Replace break/continue/early return with flags (in place)."""
    body = fn.body
    returns = [n for s in body for n in _walk_stmt(s, True) if isinstance(n, gast.Return)]
    simple_end = (returns and isinstance(body[-1], gast.Return) and len(returns) == 1)
    lowering = _JumpLowering(namer)
    if simple_end:
        fn.body = lowering.block(body[:-1], None) + [body[-1]]
        return
    lowering.returned = "_returned"
    namer.used.update({"_returned", "_result"})
    start = [assign("_result", const(None)), assign("_returned", const(False))]
    fn.body = start + lowering.block(body, None) + [
        gast.Return(value=name("_result"))]


# ---------------------------------------------------------------------------------------
# Iteration builtins: for ... in enumerate / zip / reversed -> a loop over an index


def call(func: str, *args) -> gast.Call:
    return gast.Call(func=name(func), args=list(args), keywords=[])


def builtin_called(parsed, node, locals_, *wanted):
    """The builtin among ``wanted`` that the call ``node`` makes (None if another)."""
    if not (isinstance(node, gast.Call) and isinstance(node.func, gast.Name)
            and node.func.id not in locals_):
        return None
    try:
        found = parsed.resolve(node.func.id)
    except KeyError:
        return None
    return found if any(found is w for w in wanted) else None


def _iteration_form(parsed, it, locals_):
    """``(kind, sequences, start)`` of a call ``enumerate(xs[, start])``, ``zip(xs, ...)``
    or ``reversed(xs)`` of the builtins, else None."""
    kind = builtin_called(parsed, it, locals_, builtins.enumerate, builtins.zip,
                          builtins.reversed)
    if kind is None:
        return None
    args = list(it.args)
    start = None
    if kind is builtins.enumerate:
        keywords = {k.arg: k.value for k in it.keywords}
        if set(keywords) - {"start"} or not 1 <= len(args) + len(keywords) <= 2:
            return None
        start = keywords.get("start", args[1] if len(args) > 1 else None)
        args = args[:1]
    elif it.keywords or not args or (kind is builtins.reversed and len(args) != 1):
        return None
    return kind, args, start


def _sequence(parsed, expr, loop, namer, locals_, pre):
    """``(length, item)`` of what ``expr`` iterates over: ``item(at)`` is the expression of
    its element at index ``at``.  ``enumerate``/``zip``/``reversed`` nest (``enumerate(zip(
    xs, ys))``) as index arithmetic over their sequences; any other sequence is evaluated
    once, before the loop (``pre``), and read as ``seq[at]`` marked as an iteration."""
    form = _iteration_form(parsed, expr, locals_)
    if form is None:
        if _iterated_as_itself(expr, loop, locals_):
            seq = expr.id
        else:
            seq = namer.fresh("seq")
            locals_.add(seq)
            pre.append(assign(seq, expr, loop))

        def read(at):
            item = gast.Subscript(value=name(seq), slice=copy.deepcopy(at), ctx=gast.Load())
            item.pb_iteration = True
            return item
        return call("len", name(seq)), read
    kind, args, start = form
    parts = [_sequence(parsed, a, loop, namer, locals_, pre) for a in args]
    lengths = [length for length, _ in parts]
    if kind is builtins.enumerate:
        (length, inner), = parts

        def item(at):
            count = copy.deepcopy(at) if start is None else gast.BinOp(
                left=copy.deepcopy(at), op=gast.Add(), right=copy.deepcopy(start))
            return gast.Tuple(elts=[count, inner(at)], ctx=gast.Load())
        return length, item
    if kind is builtins.zip:
        length = lengths[0] if len(lengths) == 1 else call("min", *lengths)
        return length, lambda at: gast.Tuple(elts=[inner(at) for _, inner in parts],
                                              ctx=gast.Load())
    (length, inner), = parts   # reversed
    n = namer.fresh("length")
    locals_.add(n)
    pre.append(assign(n, length, loop))

    def item(at):
        last = gast.BinOp(left=name(n), op=gast.Sub(), right=const(1))
        return inner(gast.BinOp(left=last, op=gast.Sub(), right=copy.deepcopy(at)))
    return name(n), item


def rewrite_iteration(parsed, loop, namer, locals_):
    """``for t in enumerate(xs, start)`` / ``zip(xs, ys, ...)`` / ``reversed(xs)`` (nested
    in each other too) as statements looping over an index into the sequences (each
    evaluated once, before the loop), or None for any other loop.  Reading an item is
    ``seq[i]`` marked as an iteration (a dict's keys, analysis)."""
    if _iteration_form(parsed, loop.iter, locals_) is None:
        return None
    pre = []
    length, item = _sequence(parsed, loop.iter, loop, namer, locals_, pre)
    index = namer.fresh("_i")
    locals_.add(index)
    first = gast.copy_location(gast.Assign(targets=[loop.target], value=item(name(index)),
                                           type_comment=None), loop)
    new = gast.copy_location(gast.For(target=name(index, store=True),
                                      iter=call("range", length), body=[first] + loop.body,
                                      orelse=[], type_comment=None), loop)
    return pre + [new]


def rewrite_iterations(parsed, stmts, namer, locals_):
    """``rewrite_iteration`` on every loop of ``stmts`` (in place, nested loops too)."""
    out = []
    for s in stmts:
        if isinstance(s, gast.If):
            s.body = rewrite_iterations(parsed, s.body, namer, locals_)
            s.orelse = rewrite_iterations(parsed, s.orelse, namer, locals_)
        elif isinstance(s, (gast.For, gast.While)):
            s.body = rewrite_iterations(parsed, s.body, namer, locals_)
            if isinstance(s, gast.For):
                new = rewrite_iteration(parsed, s, namer, locals_)
                if new is not None:
                    out.extend(new)
                    continue
        out.append(s)
    return out


# ---------------------------------------------------------------------------------------
# with blocks of context managers that only change state (fence.scope_kind)


def _support_call(attr, *args):
    return gast.Call(func=gast.Attribute(value=name("support"), attr=attr, ctx=gast.Load()),
                     args=list(args), keywords=[])


def _mark_paused(stmts) -> None:
    for s in stmts:
        s.pb_paused = True
        for field_name in ("body", "orelse"):
            _mark_paused(getattr(s, field_name, None) or [])


def rewrite_scopes(parsed, stmts, namer) -> list:
    """``with m: body`` -> ``scopeK = m``, ``support.scope_enter(scopeK)``, ``body``,
    ``support.scope_exit(scopeK)`` (fence refused jumps out of the body).  The body of
    ``ag.pause()`` is marked: what its operations compute carries no gradient, as on the
    tape, where they are not recorded (``_Flattener.pause``)."""
    from .fence import scope_kind

    out = []
    for s in stmts:
        for field_name in ("body", "orelse"):
            inner = getattr(s, field_name, None)
            if inner and not isinstance(s, gast.FunctionDef):
                setattr(s, field_name, rewrite_scopes(parsed, inner, namer))
        if not isinstance(s, gast.With):
            out.append(s)
            continue
        scopes = [namer.fresh("scope") for _ in s.items]
        for scope, item in zip(scopes, s.items, strict=True):
            out.append(assign(scope, item.context_expr, s))
            out.append(gast.copy_location(gast.Expr(
                value=_support_call("scope_enter", name(scope))), s))
        if any(scope_kind(parsed, item) == "pause" for item in s.items):
            _mark_paused(s.body)
        out.extend(s.body)
        for scope in reversed(scopes):
            out.append(gast.copy_location(gast.Expr(
                value=_support_call("scope_exit", name(scope))), s))
    return out


class _Renamer(gast.NodeTransformer):
    def __init__(self, names):
        self.names = names

    def visit_Name(self, node):
        if node.id in self.names:
            return gast.copy_location(name(self.names[node.id],
                                           isinstance(node.ctx, gast.Store)), node)
        return node


# ---------------------------------------------------------------------------------------
# Flattening: one operation per statement


class _Flattener:
    def __init__(self, parsed, namer, locals_):
        self.parsed, self.namer, self.locals = parsed, namer, locals_
        self.handlers = {
            gast.Assign: self.assign_stmt, gast.AugAssign: self.augassign_stmt,
            gast.Expr: self.expr_stmt, gast.If: self.if_stmt, gast.While: self.while_stmt,
            gast.For: self.for_stmt, gast.Return: self.return_stmt, gast.Pass: self.pass_stmt,
            gast.Assert: self.assert_stmt,
        }

    def error(self, node, message, hint=None):
        return error_at(self.parsed, node, message, hint)

    def block(self, stmts):
        out = []
        for s in stmts:
            handler = self.handlers.get(type(s))
            if handler is None:
                raise self.error(s, f"{type(s).__name__} statements are not supported")
            done = handler(s)
            out.extend(self.pause(done) if getattr(s, "pb_paused", False) else done)
        return out

    def pause(self, stmts):
        """Inside ``ag.pause()``: the result of each operation becomes a constant
        (``support.stop_gradient``), as the tape records none of them; a plain copy, a
        container built or grown and the statements nested in loops and branches (marked
        themselves) are left as they are.  An item read is a constant unless analysis
        finds that it reads a container (``pb_paused_item``)."""
        out = []
        for s in stmts:
            value = getattr(s, "value", None)
            if not isinstance(s, gast.Assign) or not _computes(value):
                out.append(s)
                continue
            target = s.targets[0].id
            temp = self.namer.fresh(f"paused_{target}_")
            out.append(assign(temp, value, s))
            stop = assign(target, _support_call("stop_gradient", name(temp)), s)
            if isinstance(value, gast.Subscript) and isinstance(value.value, gast.Name):
                stop.pb_paused_item = value.value.id
            out.append(stop)
        return out

    # ----- statements ------------------------------------------------------------------
    def assign_stmt(self, s):
        if len(s.targets) != 1:
            raise self.error(s, "chained assignment (a = b = ...) is not supported",
                             "assign one name at a time")
        out = []
        self.bind(s.targets[0], s.value, out, s)
        return out

    def bind(self, target, value, out, like):
        if isinstance(target, gast.Name):
            out.append(assign(target.id, self.simple(value, out, base=target.id), like))
            return
        if isinstance(target, gast.Subscript):   # d[k] = v: a new container (values)
            item = self.atom(value, out)
            key = self.index(target.slice, out)
            out.append(self.setitem(target.value.id, key, item, like))
            return
        elts = target.elts
        if isinstance(value, (gast.Tuple, gast.List)) and len(value.elts) == len(elts):
            # evaluate all first (swaps: a, b = b, a) -- but a name no other item reads
            # is bound to its item directly, without a temporary: ``xs, ys = [x], [y]``
            # must leave no second name for the list that ``xs.append`` then changes
            atoms = []
            for i, (t, v) in enumerate(zip(elts, value.elts, strict=True)):
                others = value.elts[:i] + value.elts[i + 1:]
                if isinstance(t, gast.Name) and not isinstance(v, gast.Name) and not any(
                        isinstance(n, gast.Name) and n.id == t.id
                        for other in others for n in gast.walk(other)):
                    self.bind(t, v, out, like)
                    atoms.append(None)
                else:
                    atoms.append(self.atom(v, out))
            atoms = [a if a is None else self.copy_if_target(a, elts, out, like)
                     for a in atoms]
            for t, a in zip(elts, atoms, strict=True):
                if a is not None:
                    self.bind(t, a, out, like)
            return
        whole = self.atom(value, out, base="unpack")
        for i, t in enumerate(elts):
            item = gast.Subscript(value=whole, slice=const(i), ctx=gast.Load())
            self.bind(t, item, out, like)

    def copy_if_target(self, atom, targets, out, like):
        """In ``a, b = b, a`` the right side must be read before any target is written."""
        if isinstance(atom, gast.Name) and any(
                isinstance(t, gast.Name) and t.id == atom.id for t in targets):
            fresh = self.namer.fresh(f"old_{atom.id}_")
            out.append(assign(fresh, atom, like))
            return name(fresh)
        return atom

    def setitem(self, container, key, item, like):
        """``container = support.setitem(container, key, item)``."""
        if container not in self.locals:
            raise self.error(like, f"{container}[...] = ... writes into a value that is not "
                             "a local variable", "work on a local copy")
        call = gast.Call(func=gast.Attribute(value=name("support"), attr="setitem",
                                             ctx=gast.Load()),
                         args=[name(container), key, item], keywords=[])
        return assign(container, gast.copy_location(call, like), like)

    def augassign_stmt(self, s):
        out = []
        if isinstance(s.target, gast.Subscript):   # d[k] += v: read, add, write back
            key = self.index(s.target.slice, out)
            current = self.atom(gast.Subscript(value=name(s.target.value.id), slice=key,
                                               ctx=gast.Load()), out, base="item",
                                force_name=True)
            right = self.atom(s.value, out)
            total = self.atom(gast.BinOp(left=current, op=s.op, right=right), out,
                              force_name=True)
            out.append(self.setitem(s.target.value.id, key, total, s))
            return out
        right = self.atom(s.value, out)
        value = gast.BinOp(left=name(s.target.id), op=s.op, right=right)
        update = assign(s.target.id, value, s)
        update.pb_augmented = True   # Python changes an array in place here (analysis)
        out.append(update)
        return out

    def expr_stmt(self, s):
        value = s.value
        if isinstance(value, gast.Constant):
            return []  # docstring or bare literal
        if not isinstance(value, gast.Call):
            raise self.error(s, "an expression statement that is not a call does nothing here")
        func = value.func
        if (isinstance(func, gast.Attribute) and func.attr == "append"
                and isinstance(func.value, gast.Name) and func.value.id in self.locals
                and len(value.args) == 1):
            out = []
            item = self.atom(value.args[0], out)
            call = gast.Call(func=gast.Attribute(value=name("support"), attr="append",
                                                 ctx=gast.Load()),
                             args=[name(func.value.id), item], keywords=[])
            out.append(assign(func.value.id, call, s))
            return out
        if (isinstance(func, gast.Attribute) and func.attr == "extend"
                and isinstance(func.value, gast.Name) and func.value.id in self.locals
                and len(value.args) == 1 and not value.keywords):
            out = []
            items = self.atom(value.args[0], out)
            out.append(assign(func.value.id, gast.Call(
                func=gast.Attribute(value=name("support"), attr="extend", ctx=gast.Load()),
                args=[name(func.value.id), items], keywords=[]), s))
            return out
        out = []
        simple = self.simple(value, out)
        if is_atom(simple):   # a call desugared into statements (lst.pop())
            return out
        out.append(gast.copy_location(gast.Expr(value=simple), s))
        return out

    def if_stmt(self, s):
        out = []
        test = self.atom(s.test, out, base="cond", force_name=True)
        out.append(gast.copy_location(
            gast.If(test=test, body=self.block(s.body), orelse=self.block(s.orelse)), s))
        return out

    def while_stmt(self, s):
        out, again = [], []
        cond = self.namer.fresh("cond")
        self.bind(name(cond, store=True), s.test, out, s)
        self.bind(name(cond, store=True), copy.deepcopy(s.test), again, s)
        out.append(gast.copy_location(
            gast.While(test=name(cond), body=self.block(s.body) + again, orelse=[]), s))
        return out

    def for_stmt(self, s):
        rewritten = rewrite_iteration(self.parsed, s, self.namer, self.locals)
        if rewritten is not None:   # enumerate / zip / reversed (a loop built here)
            return self.block(rewritten)
        out = []
        it = s.iter
        is_range = (isinstance(it, gast.Call) and isinstance(it.func, gast.Name)
                    and it.func.id == "range" and it.func.id not in self.locals)
        if is_range:
            seq = self.atom(it, out, base="range", force_name=True)
            body = self.block(s.body)
            out.append(gast.copy_location(gast.For(target=s.target, iter=seq, body=body,
                                                   orelse=[], type_comment=None), s))
            return out
        # a local is iterated as itself (a copy would be an alias of it)
        seq = name(it.id) if _iterated_as_itself(it, s, self.locals) \
            else self.atom(it, out, base="seq", force_name=True)
        index = self.namer.fresh("index")
        count = gast.Call(func=name("len"), args=[seq], keywords=[])
        rng = self.atom(gast.Call(func=name("range"), args=[count], keywords=[]), out,
                        base="range", force_name=True)
        first = []
        item = gast.Subscript(value=seq, slice=name(index), ctx=gast.Load())
        item.pb_iteration = True   # for k in d: a dict's keys (analysis knows its kind)
        self.bind(s.target, item, first, s)
        body = first + self.block(s.body)
        out.append(gast.copy_location(gast.For(target=name(index, store=True), iter=rng,
                                               body=body, orelse=[], type_comment=None), s))
        return out

    def return_stmt(self, s):
        out = []
        value = s.value if s.value is not None else const(None)
        if isinstance(value, gast.Tuple):
            result = gast.Tuple(elts=[self.atom(v, out) for v in value.elts], ctx=gast.Load())
        else:
            result = self.atom(value, out, base="result")
        out.append(gast.copy_location(gast.Return(value=result), s))
        return out

    def pass_stmt(self, s):
        return []

    def assert_stmt(self, s):
        """``assert c, msg`` -> ``if not c: support.assertion_failed(msg)`` (checked, not
        differentiated; the message is computed only when the check fails)."""
        out = []
        test = self.atom(s.test, out, base="cond")
        failed = self.atom(gast.UnaryOp(op=gast.Not(), operand=test), out, base="cond",
                           force_name=True)
        body = []
        message = const(None) if s.msg is None else self.atom(s.msg, body)
        body.append(gast.copy_location(gast.Expr(value=gast.Call(
            func=gast.Attribute(value=name("support"), attr="assertion_failed",
                                ctx=gast.Load()), args=[message], keywords=[])), s))
        out.append(gast.copy_location(gast.If(test=failed, body=body, orelse=[]), s))
        return out

    # ----- expressions -----------------------------------------------------------------
    def atom(self, e, out, base=None, force_name=False):
        if isinstance(e, gast.Constant) and not force_name:
            return e
        if isinstance(e, gast.Name) and (e.id in self.locals or not force_name):
            return name(e.id)
        simple = self.simple(e, out, base)
        if is_atom(simple) and not force_name:
            return simple
        temp = self.namer.fresh(base or _base_name(e))
        out.append(assign(temp, simple, e))
        return name(temp)

    def simple(self, e, out, base=None):
        if isinstance(e, (gast.Name, gast.Constant)):
            return name(e.id) if isinstance(e, gast.Name) else e
        if isinstance(e, gast.BinOp):
            return gast.BinOp(left=self.atom(e.left, out), op=e.op, right=self.atom(e.right, out))
        if isinstance(e, gast.UnaryOp):
            if isinstance(e.op, gast.UAdd):
                return self.atom(e.operand, out)
            return gast.UnaryOp(op=e.op, operand=self.atom(e.operand, out))
        if isinstance(e, gast.Compare):
            return self.compare(e, out, base)
        if isinstance(e, gast.BoolOp):
            return self.boolop(e, out, base)
        if isinstance(e, gast.Call):
            return self.call(e, out)
        if isinstance(e, gast.Attribute):
            if self.is_global_chain(e):
                return e
            return gast.Attribute(value=self.atom(e.value, out), attr=e.attr, ctx=gast.Load())
        if isinstance(e, gast.Subscript):
            item = gast.Subscript(value=self.atom(e.value, out), slice=self.index(e.slice, out),
                                  ctx=gast.Load())
            item.pb_iteration = getattr(e, "pb_iteration", False)
            return item
        if isinstance(e, gast.Dict):
            return self.dict_display(e, out)
        if isinstance(e, gast.IfExp):
            return self.if_expression(e, out, base)
        if isinstance(e, (gast.ListComp, gast.DictComp)):
            return self.comprehension(e, out)
        if isinstance(e, (gast.Tuple, gast.List)):
            kind = gast.Tuple if isinstance(e, gast.Tuple) else gast.List
            return kind(elts=[self.atom(v, out) for v in e.elts], ctx=gast.Load())
        raise self.error(e, f"{type(e).__name__} expressions are not supported")

    def dict_display(self, e, out):
        """``{'a': x, 'b': y}`` with distinct constant keys stays a literal over atoms;
        any other (computed keys) is built with ``support.setitem`` one key at a time, so
        that a repeated key keeps only its last value, as in Python."""
        if any(k is None for k in e.keys):
            raise self.error(e, "**unpacking in a dict display is not supported",
                             "What to do: add the items one by one (d[k] = v)")
        constant = all(isinstance(k, gast.Constant) for k in e.keys)
        if constant and len({(type(k.value), k.value) for k in e.keys}) == len(e.keys):
            return gast.Dict(keys=[const(k.value) for k in e.keys],
                             values=[self.atom(v, out) for v in e.values])
        pairs = [(self.atom(k, out), self.atom(v, out)) for k, v in zip(e.keys, e.values,
                                                                     strict=True)]
        temp = self.namer.fresh("dict")
        self.locals.add(temp)
        out.append(assign(temp, gast.Dict(keys=[], values=[]), e))
        for key, value in pairs:
            out.append(self.setitem(temp, key, value, e))
        return name(temp)

    def if_expression(self, e, out, base):
        """``a if c else b`` -> ``if c: t = a else: t = b`` (only the branch taken runs)."""
        result = self.namer.fresh(base or "ifexp")
        self.locals.add(result)
        test = self.atom(e.test, out, base="cond", force_name=True)
        body, orelse = [], []
        body.append(assign(result, self.simple(e.body, body), e))
        orelse.append(assign(result, self.simple(e.orelse, orelse), e))
        out.append(gast.copy_location(gast.If(test=test, body=body, orelse=orelse), e))
        return name(result)

    def comprehension(self, e, out, action=None):
        """``[elt for t in xs if c ...]`` -> a new list and loops appending to it; a dict
        comprehension assigns ``d[k] = v``.  ``action(elt)`` (``sum``, ``max``) replaces
        the append: the statements that fold one element.  The targets get fresh names
        (a comprehension's variables are its own, as in Python)."""
        renames = {}
        for gen in e.generators:
            for n in gast.walk(gen.target):
                if isinstance(n, gast.Name):
                    renames[n.id] = self.namer.fresh(f"{n.id}_")
                    self.locals.add(renames[n.id])
        if any(getattr(gen, "is_async", 0) for gen in e.generators):
            raise self.error(e, "async comprehensions are not supported")
        result = None
        if action is None:
            result = self.namer.fresh("comp")
            self.locals.add(result)
            empty = gast.Dict(keys=[], values=[]) if isinstance(e, gast.DictComp) \
                else gast.List(elts=[], ctx=gast.Load())
            out.append(assign(result, empty, e))
        rename = _Renamer(renames)
        generators = [copy.deepcopy(g) for g in e.generators]
        for k, gen in enumerate(generators):
            gen.target = rename.visit(gen.target)
            gen.ifs = [rename.visit(c) for c in gen.ifs]
            if k > 0:   # the first iterable is evaluated outside the comprehension's scope
                gen.iter = rename.visit(gen.iter)
        if isinstance(e, gast.DictComp):
            target = gast.Subscript(value=name(result), slice=rename.visit(copy.deepcopy(e.key)),
                                    ctx=gast.Store())
            body = [gast.copy_location(gast.Assign(
                targets=[target], value=rename.visit(copy.deepcopy(e.value)),
                type_comment=None), e)]
        else:
            elt = rename.visit(copy.deepcopy(e.elt))
            body = action(elt) if action is not None else [gast.copy_location(gast.Expr(
                value=gast.Call(func=gast.Attribute(value=name(result), attr="append",
                                                    ctx=gast.Load()),
                                args=[elt], keywords=[])), e)]
        for gen in reversed(generators):
            for condition in reversed(gen.ifs):
                body = [gast.copy_location(gast.If(test=condition, body=body, orelse=[]), e)]
            body = [gast.copy_location(gast.For(target=gen.target, iter=gen.iter, body=body,
                                                orelse=[], type_comment=None), e)]
        out.extend(self.block(body))
        return None if result is None else name(result)

    def fold(self, e, out, base):
        """``sum(xs[, start])``, ``max(...)``, ``min(...)`` as Python computes them: a loop
        adding the items from ``start`` (0), or keeping the first item no later item is
        greater (less) than; ``max(a, b, ...)`` compares its arguments in order."""
        func = builtin_called(self.parsed, e, self.locals, builtins.sum, builtins.max,
                              builtins.min)
        if func is None or any(k.arg not in (("start",) if func is builtins.sum else ())
                               for k in e.keywords):
            return None
        args = list(e.args)
        if func is builtins.sum and not (1 <= len(args) + len(e.keywords) <= 2):
            return None
        if func is not builtins.sum and not args:
            return None
        result = self.namer.fresh(base or func.__name__)
        self.locals.add(result)
        if func is builtins.sum:
            start = e.keywords[0].value if e.keywords else (args[1] if len(args) > 1
                                                             else const(0))
            out.append(assign(result, self.simple(start, out), e))

            def add(elt):
                return [gast.copy_location(gast.Assign(
                    targets=[name(result, store=True)],
                    value=gast.BinOp(left=name(result), op=gast.Add(), right=elt),
                    type_comment=None), e)]

            self.fold_items(args[0], add, out, e)
            return name(result)
        op = gast.Gt() if func is builtins.max else gast.Lt()
        first = self.namer.fresh("first")
        self.locals.add(first)

        def keep(elt):
            item = self.namer.fresh("item")
            self.locals.add(item)
            test = gast.BoolOp(op=gast.Or(), values=[
                name(first), gast.Compare(left=name(item), ops=[op],
                                          comparators=[name(result)])])
            return [gast.copy_location(s, e) for s in (
                gast.Assign(targets=[name(item, store=True)], value=elt, type_comment=None),
                gast.If(test=test, body=[
                    gast.Assign(targets=[name(result, store=True)], value=name(item),
                                type_comment=None),
                    gast.Assign(targets=[name(first, store=True)], value=const(False),
                                type_comment=None)], orelse=[]))]

        out.append(assign(result, const(None), e))
        out.append(assign(first, const(True), e))
        if len(args) > 1:
            for a in args:
                out.extend(self.block(keep(a)))
        else:
            self.fold_items(args[0], keep, out, e)
        return name(result)

    def pop(self, e, out):
        """``x.pop()``, ``x.pop(i)``, ``d.pop(k[, default])`` on a local: the item read
        (``x[-1]``, ``x[i]``, ``d[k]``; ``support.get(d, k, default)``), then
        ``x = support.without(x, key)``, a new container without it."""
        func = e.func
        if not (isinstance(func, gast.Attribute) and func.attr == "pop"
                and isinstance(func.value, gast.Name) and func.value.id in self.locals
                and len(e.args) <= 2 and not e.keywords):
            return None
        container = func.value.id
        key = self.atom(e.args[0], out) if e.args else const(-1)
        if len(e.args) == 2:
            read = gast.Call(func=gast.Attribute(value=name(container), attr="get",
                                                 ctx=gast.Load()),
                             args=[key, self.atom(e.args[1], out)], keywords=[])
        else:
            read = gast.Subscript(value=name(container), slice=key, ctx=gast.Load())
        item = self.atom(gast.copy_location(read, e), out, base="popped", force_name=True)
        self.locals.add(item.id)
        out.append(assign(container, gast.copy_location(gast.Call(
            func=gast.Attribute(value=name("support"), attr="without", ctx=gast.Load()),
            args=[name(container), key], keywords=[]), e), e))
        return item

    def fold_items(self, iterable, action, out, like):
        """``action(item)``'s statements for each item of ``iterable`` (a comprehension or
        generator expression folded directly, anything else iterated)."""
        if isinstance(iterable, (gast.GeneratorExp, gast.ListComp)):
            self.comprehension(iterable, out, action)
            return
        item = self.namer.fresh("item")
        self.locals.add(item)
        loop = gast.copy_location(gast.For(target=name(item, store=True), iter=iterable,
                                           body=action(name(item)), orelse=[],
                                           type_comment=None), like)
        out.extend(self.block([loop]))

    def index(self, s, out):
        if isinstance(s, gast.Slice):
            parts = [None if p is None else self.atom(p, out) for p in (s.lower, s.upper, s.step)]
            return gast.Slice(lower=parts[0], upper=parts[1], step=parts[2])
        if isinstance(s, gast.Tuple):
            return gast.Tuple(elts=[self.index(p, out) for p in s.elts], ctx=gast.Load())
        return self.atom(s, out)

    def compare(self, e, out, base):
        if len(e.ops) == 1:
            return gast.Compare(left=self.atom(e.left, out), ops=e.ops,
                                comparators=[self.atom(e.comparators[0], out)])
        parts, left = [], e.left
        for op, right in zip(e.ops, e.comparators, strict=True):
            parts.append(gast.Compare(left=left, ops=[op], comparators=[right]))
            left = right
        return self.boolop(gast.BoolOp(op=gast.And(), values=parts), out, base)

    def boolop(self, e, out, base):
        """``a and b`` -> ``t = a; if t: t = b`` (short-circuit kept)."""
        result = self.namer.fresh(base or _OP_NAMES[type(e.op)])
        out.append(assign(result, self.simple(e.values[0], out), e))
        for value in e.values[1:]:
            rest = []
            rest.append(assign(result, self.simple(value, rest), e))
            test = name(result) if isinstance(e.op, gast.And) else gast.UnaryOp(
                op=gast.Not(), operand=name(result))
            if not isinstance(e.op, gast.And):
                flag = self.namer.fresh("cond")
                out.append(assign(flag, test, e))
                test = name(flag)
            out.append(gast.copy_location(gast.If(test=test, body=rest, orelse=[]), e))
        return name(result)

    def is_global_chain(self, e) -> bool:
        while isinstance(e, gast.Attribute):
            e = e.value
        return isinstance(e, gast.Name) and e.id not in self.locals

    def call(self, e, out):
        folded = self.fold(e, out, None)
        if folded is not None:
            return folded
        popped = self.pop(e, out)
        if popped is not None:
            return popped
        func = e.func
        if isinstance(func, gast.Name) or self.is_global_chain(func):
            new_func = func
        elif isinstance(func, gast.Attribute):
            new_func = gast.Attribute(value=self.atom(func.value, out), attr=func.attr,
                                      ctx=gast.Load())
        else:
            raise self.error(e, "calls must name a function or a method")
        args = [gast.Starred(value=self.atom(a.value, out), ctx=gast.Load())
                if isinstance(a, gast.Starred) else self.atom(a, out)   # nd.concat(*seq)
                for a in e.args]
        keywords = [gast.keyword(arg=k.arg, value=self.atom(k.value, out)) for k in e.keywords]
        if any(k.arg is None for k in keywords):
            raise self.error(e, "**kwargs in calls is not supported")
        # keep the user's position: errors found later (calls.py) point at this call
        return gast.copy_location(gast.Call(func=new_func, args=args, keywords=keywords), e)


_CONTAINER_BUILDERS = {"append", "extend", "setitem", "without", "assertion_failed"}


def _computes(value) -> bool:
    """Whether a normalized right-hand side is an operation the tape would record."""
    if isinstance(value, gast.Call):
        func = value.func
        return not (isinstance(func, gast.Attribute) and isinstance(func.value, gast.Name)
                    and func.value.id == "support" and func.attr in _CONTAINER_BUILDERS)
    return isinstance(value, (gast.BinOp, gast.UnaryOp, gast.Subscript, gast.Attribute))


def _base_name(e) -> str:
    if isinstance(e, gast.Call):
        func = e.func
        return func.attr if isinstance(func, gast.Attribute) else getattr(func, "id", "call")
    if isinstance(e, (gast.BinOp, gast.UnaryOp, gast.BoolOp)):
        return _OP_NAMES.get(type(e.op), "tmp")
    if isinstance(e, gast.Compare):
        return _OP_NAMES.get(type(e.ops[0]), "cmp")
    if isinstance(e, gast.Attribute):
        return e.attr
    if isinstance(e, gast.Subscript):
        return "item"
    return "tmp"


def normalize(parsed) -> gast.FunctionDef:
    """The function in normalized form (a new tree; ``parsed.tree`` is not modified)."""
    fn = copy.deepcopy(parsed.tree)
    namer = Namer(local_names(fn) | reserved_for(fn.name))
    rename_generated(fn, namer)
    inline_local_functions(parsed, fn, namer)
    fn.body = rewrite_scopes(parsed, fn.body, namer)
    fn.body = rewrite_iterations(parsed, fn.body, namer, local_names(fn))
    lower_jumps(fn, namer)
    flattener = _Flattener(parsed, namer, local_names(fn))
    fn.body = flattener.block(fn.body)
    if not fn.body or not isinstance(fn.body[-1], gast.Return):
        fn.body.append(gast.Return(value=const(None)))
    fn.namer = namer
    return fn
