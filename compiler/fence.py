"""Step 2, fence: reject every construct the compiler does not support, in one place.

Guarantees: after ``check`` passes, the function body contains only statements
and expressions that ``normalize`` knows how to rewrite.  Each rejection is a
CompileError at the construct's line, with a caret and what to do instead.
"""

from __future__ import annotations

import builtins

import gast
import numpy as np

from pullback.runtime import primitives as P

from .errors import error_at

# calls whose one positional argument may be ``*seq`` (MXNet's RNN chapters join their
# per-step outputs with ``nd.concat(*outputs, dim=0)``): normalize and calls.py read
# them as a join of the list, like ``np.concatenate(outputs, axis=0)``
STARRED_JOINS = (P.concat, P.stack)

_REJECTED = {
    gast.Try: ("try/except", "move the error handling outside the differentiated function"),
    gast.AsyncWith: ("async with", "differentiate a synchronous function"),
    gast.AsyncFor: ("async for", "differentiate a synchronous function"),
    gast.AsyncFunctionDef: ("async functions", "differentiate a synchronous function"),
    gast.Yield: ("yield (generators)", "return a list or tuple instead"),
    gast.YieldFrom: ("yield from (generators)", "return a list or tuple instead"),
    gast.Await: ("await", "differentiate a synchronous function"),
    gast.Global: ("global declarations (writing globals)",
                  "return the value instead of writing a global"),
    gast.Nonlocal: ("nonlocal declarations (writing enclosing variables)",
                    "return the value instead of writing an enclosing variable"),
    gast.Delete: ("del", "let the variable go out of scope, or rebind it"),
    gast.ClassDef: ("class definitions", "define the class outside the function"),
    gast.Raise: ("raise", "check inputs before calling the differentiated function"),
    gast.Import: ("import statements", "import at module level"),
    gast.ImportFrom: ("import statements", "import at module level"),
    gast.SetComp: ("set comprehensions", "write a for loop"),
    gast.GeneratorExp: ("generator expressions", "write a for loop"),
    gast.Starred: ("*args unpacking", "pass the arguments one by one"),
    gast.NamedExpr: ("the walrus operator :=", "assign in a separate statement"),
    gast.Match: ("match statements", "write if/elif/else"),
}


def scope_kind(parsed, item) -> str | None:
    """``"pause"`` for ``with ag.pause(...)``, ``"state"`` for the other context managers
    compiled code supports (they only change state: ``np.errstate``, ``ag.train_mode``,
    ``ag.predict_mode``), else None."""
    from pullback.runtime import autograd

    expr = item.context_expr
    if item.optional_vars is not None or not isinstance(expr, gast.Call):
        return None
    target = _resolve(parsed, expr.func)
    if target is None:
        return None
    if target is autograd.pause:
        return "pause"
    if any(target is t for t in (np.errstate, autograd.train_mode, autograd.predict_mode)):
        return "state"
    return None


_SUPPORTED_SCOPES = ("np.errstate(...), ag.pause(), ag.train_mode() and ag.predict_mode() "
                     "(without 'as')")


def _check_with(parsed, node) -> None:
    for item in node.items:
        if scope_kind(parsed, item) is None:
            raise error_at(parsed, node, "this with block cannot be "
                           "differentiated by pullback: the supported context managers are "
                           f"{_SUPPORTED_SCOPES}",
                           "What to do: move the with block outside the differentiated "
                           "function, or use @pb.compile(fallback='tape').")
    for stmt in node.body:
        for inner in _walk_outside_loops(stmt):
            if isinstance(inner, (gast.Return, gast.Break, gast.Continue)):
                raise error_at(parsed, inner, f"{type(inner).__name__.lower()} out of a with "
                               "block is not supported",
                               "set a variable and leave the block at its end")


def _walk_outside_loops(stmt):
    """The statement and those nested in it, not descending into loops' bodies (a break
    there stays inside) except for return, which any depth reaches."""
    yield stmt
    if isinstance(stmt, (gast.FunctionDef, gast.Lambda)):
        return
    for child in gast.iter_child_nodes(stmt):
        if isinstance(stmt, (gast.For, gast.While)) and child in stmt.body:
            yield from (n for n in gast.walk(child) if isinstance(n, gast.Return))
            continue
        yield from _walk_outside_loops(child)


def _check_target(parsed, target) -> None:
    if isinstance(target, gast.Name):
        return
    if isinstance(target, (gast.Tuple, gast.List)):
        for elt in target.elts:
            _check_target(parsed, elt)
        return
    if isinstance(target, gast.Subscript):
        # ``d[k] = v`` on a local dict or list (normalize: a new container), ``x[i] = v``,
        # ``x[i:j] = v``, ``x[i, j] = v``, ``x[mask] = v`` on a local array (analysis
        # refuses it where another name, or the caller, would see the write)
        if isinstance(target.value, gast.Name):
            return
        raise error_at(parsed, target, "writes into attributes' items or nested items "
                       "(x.a[i] = v, d['a']['b'] = v) are not supported",
                       "write into a local variable (t = d['a']; t[k] = v; d['a'] = t)")
    raise error_at(parsed, target, f"assignment to {type(target).__name__} is not supported",
                   "assign to a plain variable name")


def _resolve(parsed, expr):
    """The object a global name or attribute chain refers to (None if unknown)."""
    if isinstance(expr, gast.Attribute):
        base = _resolve(parsed, expr.value)
        return getattr(base, expr.attr, None) if base is not None else None
    if isinstance(expr, gast.Name):
        try:
            return parsed.resolve(expr.id)
        except KeyError:
            return None
    return None


def _is_starred_join(parsed, node) -> bool:
    """``nd.concat(*seq, dim=...)`` or ``nd.stack(*seq, axis=...)``: one starred
    positional argument, nothing else by position."""
    return (isinstance(node, gast.Call) and len(node.args) == 1
            and isinstance(node.args[0], gast.Starred)
            and any(_resolve(parsed, node.func) is f for f in STARRED_JOINS))


def _plain_names(target) -> bool:
    if isinstance(target, gast.Name):
        return True
    return isinstance(target, (gast.Tuple, gast.List)) and all(
        _plain_names(e) for e in target.elts)


def _folded_generators(parsed, fn) -> set:
    """Generator expressions that are the argument of the builtin ``sum``, ``max`` or
    ``min`` (normalize folds them into a loop); any other stays refused."""
    found = set()
    for node in gast.walk(fn):
        if isinstance(node, gast.Call) and isinstance(node.func, gast.Name) and node.args \
                and isinstance(node.args[0], gast.GeneratorExp) and len(node.args) == 1:
            try:
                target = parsed.resolve(node.func.id)
            except KeyError:
                continue
            if any(target is b for b in (builtins.sum, builtins.max, builtins.min)):
                found.add(id(node.args[0]))
    return found


def check(parsed) -> None:
    """Raise CompileError at the first unsupported construct of the function."""
    fn = parsed.tree
    args = fn.args
    if args.kwarg:   # (parse made *args and keyword-only parameters positional)
        raise error_at(parsed, fn, "**kwargs parameters are not supported",
                       "name each keyword parameter (keyword-only parameters are supported)")
    body = gast.Module(body=fn.body, type_ignores=[])
    joined = {id(node.args[0]) for node in gast.walk(body) if _is_starred_join(parsed, node)}
    folded = _folded_generators(parsed, fn)
    for node in gast.walk(body):
        rejected = _REJECTED.get(type(node))
        if rejected and id(node) not in joined and id(node) not in folded:
            what, hint = rejected
            raise error_at(parsed, node, f"{what} cannot be differentiated by pullback",
                           f"What to do: {hint}, or use @pb.compile(fallback='tape').")
        if isinstance(node, gast.With):
            _check_with(parsed, node)
        if isinstance(node, (gast.Assign, gast.AugAssign)):
            for target in (node.targets if isinstance(node, gast.Assign) else [node.target]):
                _check_target(parsed, target)
        if isinstance(node, gast.For) and not _plain_names(node.target):
            raise error_at(parsed, node.target, "for loops must bind plain variables "
                           "(a name or a tuple of names)", "unpack inside the loop body")
        if isinstance(node, (gast.For, gast.While)) and node.orelse:
            raise error_at(parsed, node, "else clauses on loops are not supported",
                           "use a flag variable")
