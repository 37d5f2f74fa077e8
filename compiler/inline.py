"""Step 3a, inline: nested functions and lambdas of the function, inlined at their calls.

Guarantees: after ``inline_local_functions`` the body holds no ``def`` and no ``lambda``.
A local function -- ``def g(t): ...`` or ``g = lambda t: ...`` at the top level of the
body, bound once -- whose every use is a call ``g(a, b)`` by position is replaced at
each call by its body, its parameters and locals renamed to fresh names: the call
reads the enclosing variables it closes over as they are at the call, as Python's late
binding does.  A body of one expression (a lambda, a ``def`` that only returns) is
substituted into the expression; a longer straight-line body (assignments, then one
``return``) is placed before the statement holding the call.  Anything else is a
CompileError at the user's line: a local function returned, stored, passed to another
function, called by keyword, recursive, defined inside a block or bound twice; a lambda
that is not bound to a name (or bound inside a block); a body with loops, branches or nested functions.
"""

from __future__ import annotations

import copy

import gast

from .errors import error_at

_MAX_DEPTH = 16   # inlining inside inlined bodies: deeper is mutual recursion
_HOISTABLE = (gast.Assign, gast.AugAssign, gast.Expr, gast.Return, gast.If, gast.For,
              gast.Assert)
# expressions evaluated conditionally or in their own scope: a body placed before the
# statement would run unconditionally
_CONDITIONAL = (gast.IfExp, gast.BoolOp, gast.Lambda, gast.ListComp, gast.DictComp,
                gast.SetComp, gast.GeneratorExp)


class _Local:
    def __init__(self, name, params, body, result, node):
        self.name, self.params, self.body, self.result, self.node = \
            name, params, body, result, node


def _definition(parsed, s):
    """The _Local a top-level statement defines, or None."""
    if isinstance(s, gast.FunctionDef):
        return _from_def(parsed, s)
    if isinstance(s, gast.Assign) and isinstance(s.value, gast.Lambda):
        if len(s.targets) != 1 or not isinstance(s.targets[0], gast.Name):
            raise error_at(parsed, s, "a lambda must be bound to one plain name here",
                           "write name = lambda ...: ...")
        return _Local(s.targets[0].id, _params(parsed, s.value, s.value.args), [],
                      s.value.body, s)
    return None


def _params(parsed, node, args) -> list:
    if args.vararg or args.kwarg or args.kwonlyargs or args.defaults or args.kw_defaults \
            or args.posonlyargs:
        raise error_at(parsed, node, "a nested function or lambda with defaults, *args, "
                       "**kwargs or keyword-only parameters cannot be inlined",
                       "give it plain positional parameters")
    return [a.id for a in args.args]


def _from_def(parsed, s):
    if s.decorator_list:
        raise error_at(parsed, s, "a decorated nested function cannot be inlined",
                       "define the helper at module level")
    body = list(s.body)
    if body and isinstance(body[0], gast.Expr) and isinstance(body[0].value, gast.Constant):
        body = body[1:]   # docstring
    if not body or not isinstance(body[-1], gast.Return) or body[-1].value is None:
        raise error_at(parsed, s, f"the nested function {s.name}() must end with "
                       "'return value' to be inlined", "return its result")
    for stmt in body[:-1]:
        if not (isinstance(stmt, gast.Assign) and all(
                isinstance(t, gast.Name) for t in stmt.targets)):
            raise error_at(parsed, stmt, f"the nested function {s.name}() can only be "
                           "inlined when its body is assignments to plain names and one "
                           "return", "define the helper at module level (pullback "
                           "differentiates module-level functions it calls)")
    for node in gast.walk(gast.Module(body=body, type_ignores=[])):
        if isinstance(node, (gast.Lambda, gast.FunctionDef, gast.Return)) \
                and node is not body[-1]:
            raise error_at(parsed, node, f"the nested function {s.name}() holds a "
                           "nested function or an early return", "define the helper at "
                           "module level")
    return _Local(s.name, _params(parsed, s, s.args), body[:-1], body[-1].value, s)


def _check_uses(parsed, fn, locals_) -> None:
    """Every use of a local function is a positional call with the right arity, and the
    name is bound nowhere else."""
    calls = {}
    for node in gast.walk(fn):
        if isinstance(node, gast.Call) and isinstance(node.func, gast.Name):
            calls[id(node.func)] = node
    definitions = {id(f.node) for f in locals_.values()}
    bound = {id(n.value) for n in gast.walk(fn) if isinstance(n, gast.Assign)
             and isinstance(n.value, gast.Lambda)}   # name = lambda ..., anywhere
    for node in gast.walk(fn):
        if isinstance(node, gast.FunctionDef) and node is not fn and id(node) not in \
                definitions:
            raise error_at(parsed, node, "a nested function defined inside a block (or "
                           "twice) cannot be inlined", "define it once, at the top level "
                           "of the function")
        if isinstance(node, gast.Lambda) and not any(f.node.value is node for f in
                                                     locals_.values()
                                                     if isinstance(f.node, gast.Assign)):
            if id(node) in bound:   # bound, but inside a block (a branch, a loop)
                raise error_at(parsed, node, "a lambda bound inside a block (an if, a "
                               "loop, a with) cannot be inlined", "bind it once, at the "
                               "top level of the function (it reads the enclosing "
                               "variables when called, as Python's late binding does)")
            raise error_at(parsed, node, "a lambda that is not bound to a name and called "
                           "cannot be differentiated (passed to a function, returned or "
                           "stored)", "bind it (f = lambda ...) and call it, or write the "
                           "loop it stands for")
        if not isinstance(node, gast.Name) or node.id not in locals_:
            continue
        local = locals_[node.id]
        if isinstance(node.ctx, gast.Store):
            if not (isinstance(local.node, gast.Assign) and node is local.node.targets[0]):
                raise error_at(parsed, node, f"{node.id} is a nested function and is bound "
                               "again here", "use another name")
            continue
        call = calls.get(id(node))
        if call is None:
            raise error_at(parsed, node, f"the nested function {node.id} is used other than "
                           "by calling it (returned, stored or passed to a function)",
                           "call it where it is defined, or define it at module level")
        if call.keywords or any(isinstance(a, gast.Starred) for a in call.args) \
                or len(call.args) != len(local.params):
            raise error_at(parsed, call, f"{node.id}() is called with other arguments than "
                           f"its {len(local.params)} positional parameters",
                           "pass each parameter by position")
    for local in locals_.values():
        inside = gast.Module(body=local.body + [gast.Expr(value=local.result)],
                             type_ignores=[])
        if any(isinstance(n, gast.Name) and n.id == local.name for n in gast.walk(inside)):
            raise error_at(parsed, local.node, f"the nested function {local.name}() is "
                           "recursive", "write the recursion as a loop")


class _Substitute(gast.NodeTransformer):
    def __init__(self, names):
        self.names = names   # old name -> expression (copied at each use)

    def visit_Name(self, node):
        if node.id not in self.names:
            return node
        new = copy.deepcopy(self.names[node.id])
        if isinstance(new, gast.Name):
            new.ctx = node.ctx
        return gast.copy_location(new, node)


class _Inliner(gast.NodeTransformer):
    """Replaces the calls of local functions in one statement's own expressions."""

    def __init__(self, parsed, locals_, namer, hoistable):
        self.parsed, self.locals, self.namer = parsed, locals_, namer
        self.hoistable = hoistable
        self.before = []   # statements placed before the statement
        self.changed = False
        self.conditional = 0

    def generic_visit(self, node):
        conditional = isinstance(node, _CONDITIONAL)
        self.conditional += conditional
        node = super().generic_visit(node)
        self.conditional -= conditional
        return node

    def visit_Call(self, node):
        node = self.generic_visit(node)
        if not (isinstance(node.func, gast.Name) and node.func.id in self.locals):
            return node
        local = self.locals[node.func.id]
        self.changed = True
        uses = {p: 0 for p in local.params}
        for n in gast.walk(gast.Module(body=local.body + [gast.Expr(value=local.result)],
                                       type_ignores=[])):
            if isinstance(n, gast.Name) and n.id in uses:
                uses[n.id] += 1
        simple = all(isinstance(a, (gast.Name, gast.Constant)) or uses[p] <= 1
                     for p, a in zip(local.params, node.args, strict=True))
        if not local.body and simple:   # one expression: substituted
            names = dict(zip(local.params, node.args, strict=True))
            return _Substitute(names).visit(copy.deepcopy(local.result))
        if not self.hoistable or self.conditional:
            raise error_at(self.parsed, node, f"{local.name}() is called where its body "
                           "cannot be placed before the statement (a loop condition, a "
                           "conditional expression, and/or, a comprehension)",
                           "call it in a statement of its own first")
        assigned = {t.id for s in local.body for t in s.targets}
        renamed = {v: gast.Name(id=self.namer.fresh(f"{local.name}_{v}_"), ctx=gast.Load(),
                                annotation=None, type_comment=None)
                   for v in local.params + sorted(assigned - set(local.params))}
        for p, a in zip(local.params, node.args, strict=True):
            target = copy.deepcopy(renamed[p])
            target.ctx = gast.Store()
            self.before.append(gast.copy_location(gast.Assign(
                targets=[target], value=a, type_comment=None), node))
        substitute = _Substitute(renamed)
        for s in local.body:
            self.before.append(substitute.visit(copy.deepcopy(s)))
        return substitute.visit(copy.deepcopy(local.result))


_OWN_FIELDS = {gast.If: ("test",), gast.While: ("test",), gast.For: ("iter",)}


def _inline_block(parsed, stmts, locals_, namer, depth=0) -> list:
    if depth > _MAX_DEPTH:
        raise error_at(parsed, stmts[0], "nested functions call each other too deeply "
                       "(recursion?) to be inlined", "write the recursion as a loop")
    out = []
    for s in stmts:
        for field_name in ("body", "orelse"):
            inner = getattr(s, field_name, None)
            if inner and isinstance(s, (gast.If, gast.While, gast.For, gast.With)):
                setattr(s, field_name, _inline_block(parsed, inner, locals_, namer, depth))
        pending = [s]
        for level in range(_MAX_DEPTH + 1):
            inliner = _Inliner(parsed, locals_, namer, isinstance(s, _HOISTABLE))
            if isinstance(s, tuple(_OWN_FIELDS)):
                for field_name in _OWN_FIELDS[type(s)]:
                    setattr(s, field_name, inliner.visit(getattr(s, field_name)))
            else:
                s = inliner.visit(s)
            if not inliner.changed:
                break
            if level == _MAX_DEPTH:
                raise error_at(parsed, s, "nested functions call each other too deeply "
                               "(recursion?) to be inlined", "write the recursion as a loop")
            # what was placed before may itself call local functions
            pending = _inline_block(parsed, inliner.before, locals_, namer, depth + 1) \
                if inliner.before else []
            out.extend(pending)
        out.append(s)
    return out


def inline_local_functions(parsed, fn: gast.FunctionDef, namer) -> None:
    """Inline the nested functions and lambdas of ``fn`` (normalized in place)."""
    if not any(isinstance(n, (gast.FunctionDef, gast.Lambda)) for n in gast.walk(fn)
               if n is not fn):
        return
    locals_ = {}
    for s in fn.body:
        local = _definition(parsed, s)
        if local is None:
            continue
        if local.name in locals_ or local.name in {a.id for a in fn.args.args}:
            raise error_at(parsed, s, f"the nested function {local.name} is bound twice",
                           "use another name")
        locals_[local.name] = local
    _check_uses(parsed, fn, locals_)
    fn.body = [s for s in fn.body if not any(s is f.node for f in locals_.values())]
    fn.body = _inline_block(parsed, fn.body, locals_, namer)
