"""The adjoint as IR: a variant's forward-with-stack and adjoint as gast functions.

The reverse step (``reverse.py``) emits the forward and the adjoint as Python source
text, and that text stays the reference road (``adjoint_source``).  This module is the
first step of issue 10's "one IR, two backends": it reads the *emitted* functions back
(so it works the same for a fresh transform and for a variant loaded from the artifact
cache, which has no parse) and rewrites them into a small statement language that a
typed lowering can follow.  reverse.py does not build these nodes directly yet.

``function_ir(source, name)`` returns ``(forward, adjoint)``: two ``gast.FunctionDef``
whose bodies contain only these statements (``atom`` is a Name or a Constant):

- ``name = atom``
- ``name = atom OP atom`` (``+ - * / // % **``), ``name = -atom`` / ``not atom``,
  ``name = atom CMP atom`` (one comparison, including ``is None`` / ``is not None``),
  ``name = atom and atom`` / ``or``
- ``name = f(atom, ...)`` where ``f`` is a Name or a dotted name of Names
  (``kernel_1``, ``kernel_1.vjp``, ``support.add_grads``, ``ops.sin``, ``_np.cos``,
  ``range``, ``reversed``); keyword arguments have atom values
- ``name = atom[atom]`` (a tuple by a constant, a range by an int, an array by an int
  or a slice) and ``name = (atom, ...)``; a slice ``x[a:b:c]`` becomes ``_irN =
  slice(a, b, c)`` (absent bounds None) and ``x[_irN]``, as the adjoint's
  ``support.index_grad(..., slice(a, b, c))`` spells it
- ``name = _stack.pop('tag')`` and the statement ``_stack.push(atom, 'tag')``: the
  explicit stack operations, paired by tag (``reverse.py`` guarantees one pop per push
  on every path)
- any other expression statement, kept as is (typing rejects it: a side effect)
- ``if name: ... else: ...``, ``while name: ...`` (the body recomputes ``name``),
  ``for name in name: ...`` over a range or ``reversed(range)`` bound to a name
- ``return atom`` or ``return (atom, ...)``, last

Nested expressions of the emitted code are flattened into temporaries ``_irN`` in
evaluation order (left to right, inner first), chained and tuple targets and ``+=``
are split, ``pass`` is dropped.  Each statement keeps the ``lineno`` of the emitted
line it came from (line 1 is the first line of ``source``).
"""

from __future__ import annotations

import copy

import gast

from .errors import CompileError


class NotInIR(CompileError):
    """Emitted code outside the forms above (an internal limitation, reported by
    ``pb.explain``; the Python road runs it)."""


def function_ir(source: str, name: str) -> tuple:
    """``(forward, adjoint)`` of the generated module ``source`` for the user function
    ``name`` (the generated functions are ``<name>_forward`` and ``<name>_adjoint``)."""
    import ast

    # Python's parser for the whole module (kernels included), gast's conversion (slow,
    # in Python) only for the two functions
    module = ast.parse(source)
    found = {node.name: node for node in module.body if isinstance(node, ast.FunctionDef)}
    return tuple(_Flatten().function(gast.ast_to_gast(found[f"{name}_{part}"]))
                 for part in ("forward", "adjoint"))


def tangent_ir(source: str, name: str) -> gast.FunctionDef:
    """The forward-mode function ``<name>_tangent`` of the generated module ``source``
    (``compiler/tangent.py``) in the same statement forms, shaped as a forward that never
    pushes: a leading ``_stack`` parameter it does not use, then the primals and their
    tangents; its final return is ``return (value, value_dot)``."""
    import ast

    module = ast.parse(source)
    found = {node.name: node for node in module.body if isinstance(node, ast.FunctionDef)}
    fn = _Flatten().function(gast.ast_to_gast(found[f"{name}_tangent"]))
    stack = gast.Name(id="_stack", ctx=gast.Param(), annotation=None, type_comment=None)
    fn.args.args.insert(0, stack)
    return fn


def _name(identifier: str, store: bool = False) -> gast.Name:
    return gast.Name(id=identifier, ctx=gast.Store() if store else gast.Load(),
                     annotation=None, type_comment=None)


def _assign(target: str, value, line: int) -> gast.Assign:
    node = gast.Assign(targets=[_name(target, store=True)], value=value, type_comment=None)
    node.lineno = line
    return node


def is_atom(node) -> bool:
    return isinstance(node, (gast.Name, gast.Constant))


def dotted(node) -> str | None:
    """``a.b.c`` as a string, or None when ``node`` is not a dotted name."""
    if isinstance(node, gast.Name):
        return node.id
    if isinstance(node, gast.Attribute):
        base = dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


class _Flatten:
    def __init__(self):
        self.count = 0
        self.out = None

    def fresh(self) -> str:
        self.count += 1
        return f"_ir{self.count}"

    def function(self, fn: gast.FunctionDef) -> gast.FunctionDef:
        """``fn`` (a tree of its own: changed in place) with its body flattened."""
        fn.body = self.block(fn.body)
        return fn

    def block(self, stmts) -> list:
        saved, self.out = self.out, []
        for s in stmts:
            handler = getattr(self, f"stmt_{type(s).__name__.lower()}", None)
            if handler is None:
                raise NotInIR(f"line {s.lineno}: {type(s).__name__} statement in emitted code")
            handler(s)
        result, self.out = self.out, saved
        return result

    def emit(self, node, line: int):
        node.lineno = line
        self.out.append(node)

    # ----- statements --------------------------------------------------------------------
    def stmt_pass(self, s):
        pass

    def stmt_assign(self, s):
        targets = s.targets
        value = self.operation(s.value, s.lineno)
        if len(targets) > 1:   # a = b = value: evaluate once
            temp = self.fresh()
            self.emit(_assign(temp, value, s.lineno), s.lineno)
            value = _name(temp)
        for target in targets:
            self.bind(target, value, s.lineno)

    def bind(self, target, value, line):
        if isinstance(target, gast.Name):
            self.emit(_assign(target.id, copy.deepcopy(value), line), line)
            return
        if isinstance(target, gast.Tuple):
            if not is_atom(value):
                temp = self.fresh()
                self.emit(_assign(temp, value, line), line)
                value = _name(temp)
            for k, element in enumerate(target.elts):
                item = gast.Subscript(value=copy.deepcopy(value),
                                      slice=gast.Constant(value=k, kind=None), ctx=gast.Load())
                self.bind(element, item, line)
            return
        raise NotInIR(f"line {line}: assignment to {type(target).__name__}")

    def stmt_augassign(self, s):
        value = gast.BinOp(left=_name(s.target.id), op=s.op, right=self.atom(s.value, s.lineno))
        self.emit(_assign(s.target.id, value, s.lineno), s.lineno)

    def stmt_expr(self, s):
        self.emit(gast.Expr(value=self.operation(s.value, s.lineno)), s.lineno)

    def stmt_if(self, s):
        test = self.atom(s.test, s.lineno, name_only=True)
        self.emit(gast.If(test=test, body=self.block(s.body), orelse=self.block(s.orelse)),
                  s.lineno)

    def stmt_while(self, s):
        if not isinstance(s.test, gast.Name):   # normalize guarantees a name
            raise NotInIR(f"line {s.lineno}: while over an expression")
        self.emit(gast.While(test=s.test, body=self.block(s.body), orelse=[]), s.lineno)

    def stmt_for(self, s):
        iterator = self.atom(s.iter, s.lineno, name_only=True)
        self.emit(gast.For(target=s.target, iter=iterator, body=self.block(s.body), orelse=[],
                           type_comment=None), s.lineno)

    def stmt_return(self, s):
        value = s.value
        if isinstance(value, gast.Tuple):
            value = gast.Tuple(elts=[self.atom(e, s.lineno) for e in value.elts],
                               ctx=gast.Load())
        else:
            value = self.atom(value, s.lineno)
        self.emit(gast.Return(value=value), s.lineno)

    # ----- expressions -------------------------------------------------------------------
    def atom(self, node, line, name_only=False):
        """``node`` as an atom, hoisting it into a temporary if it is not one."""
        if isinstance(node, gast.Name) or (isinstance(node, gast.Constant) and not name_only):
            return node
        temp = self.fresh()
        self.emit(_assign(temp, self.operation(node, line), line), line)
        return _name(temp)

    def operation(self, node, line):
        """``node`` with its operands made atoms (one operation)."""
        if is_atom(node):
            return node
        if isinstance(node, gast.BinOp):
            return gast.BinOp(left=self.atom(node.left, line), op=node.op,
                              right=self.atom(node.right, line))
        if isinstance(node, gast.UnaryOp):
            return gast.UnaryOp(op=node.op, operand=self.atom(node.operand, line))
        if isinstance(node, gast.BoolOp):
            values = [self.atom(v, line) for v in node.values]
            while len(values) > 2:   # a and b and c -> (a and b) and c
                temp = self.fresh()
                self.emit(_assign(temp, gast.BoolOp(op=node.op, values=values[:2]), line), line)
                values = [_name(temp)] + values[2:]
            return gast.BoolOp(op=node.op, values=values)
        if isinstance(node, gast.Compare):
            if len(node.ops) != 1:
                raise NotInIR(f"line {line}: chained comparison in emitted code")
            return gast.Compare(left=self.atom(node.left, line), ops=node.ops,
                                comparators=[self.atom(node.comparators[0], line)])
        if isinstance(node, gast.Call):
            if dotted(node.func) is None:
                raise NotInIR(f"line {line}: call of a computed function")
            args = [self.atom(a, line) for a in node.args]
            keywords = [gast.keyword(arg=k.arg, value=self.atom(k.value, line))
                        for k in node.keywords]
            return gast.Call(func=node.func, args=args, keywords=keywords)
        if isinstance(node, gast.Subscript):
            if isinstance(node.slice, gast.Tuple):
                raise NotInIR(f"line {line}: a tuple index (several axes) in emitted code")
            if isinstance(node.slice, gast.Slice):   # x[a:b:c] -> x[slice(a, b, c)]
                bounds = [gast.Constant(value=None, kind=None) if part is None else part
                          for part in (node.slice.lower, node.slice.upper, node.slice.step)]
                key = gast.Call(func=_name("slice"), args=bounds, keywords=[])
                return gast.Subscript(value=self.atom(node.value, line),
                                      slice=self.atom(key, line), ctx=gast.Load())
            return gast.Subscript(value=self.atom(node.value, line),
                                  slice=self.atom(node.slice, line), ctx=gast.Load())
        if isinstance(node, gast.Tuple):
            return gast.Tuple(elts=[self.atom(e, line) for e in node.elts], ctx=gast.Load())
        if isinstance(node, gast.Attribute) and dotted(node) is not None:
            return node
        raise NotInIR(f"line {line}: {type(node).__name__} expression in emitted code")
