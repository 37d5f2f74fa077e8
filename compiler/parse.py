"""Step 1, parse: a Python function -> its gast FunctionDef plus where it came from.

Guarantees: ``ParsedFunction.tree`` is the function's own ``FunctionDef``
(decorators removed), and ``resolve(name)`` looks a free name up the way
Python would at call time: closure cells first, then globals, then builtins.
"""

from __future__ import annotations

import builtins
import inspect
import textwrap
from dataclasses import dataclass, field

import gast

from .errors import CompileError


@dataclass
class ParsedFunction:
    fn: object
    tree: gast.FunctionDef
    filename: str
    first_line: int
    indent: int
    lines: list
    implicit: dict = field(default_factory=dict)   # implicit input key -> parameter name

    def source_line(self, lineno: int) -> str:
        """Line ``lineno`` (1-based, relative to the parsed text) as the user wrote it."""
        return self.lines[lineno - 1].rstrip("\n") if 0 < lineno <= len(self.lines) else ""

    def location(self, node) -> str:
        return f"{self.filename}:{getattr(node, 'lineno', 1) + self.first_line - 1}"

    def resolve(self, name: str):
        """The object a free name refers to, or raise KeyError."""
        code = self.fn.__code__
        if self.fn.__closure__ and name in code.co_freevars:
            return self.fn.__closure__[code.co_freevars.index(name)].cell_contents
        if name in self.fn.__globals__:
            return self.fn.__globals__[name]
        if hasattr(builtins, name):
            return getattr(builtins, name)
        raise KeyError(name)


def _lambda_as_function(module, fn, filename, first_line) -> gast.FunctionDef:
    """The lambda of ``fn`` in its source line, rewritten as ``def <lambda>: return ...``."""
    wanted = list(fn.__code__.co_varnames[:fn.__code__.co_argcount])
    found = [n for n in gast.walk(module) if isinstance(n, gast.Lambda)
             and [a.id for a in n.args.args] == wanted]
    if len(found) != 1:
        raise CompileError("cannot tell which lambda on this line to differentiate; "
                           "define the function with def", filename, first_line)
    node = found[0]
    body = [gast.copy_location(gast.Return(value=node.body), node.body)]
    tree = gast.FunctionDef(name="lambda_fn", args=node.args, body=body, decorator_list=[],
                            returns=None, type_comment=None, type_params=[])
    return gast.copy_location(tree, node)


def parse_function(fn) -> ParsedFunction:
    """Parse ``fn``'s source. Raises CompileError if it has none (builtins, C code)."""
    try:
        lines, first_line = inspect.getsourcelines(fn)
        filename = inspect.getsourcefile(fn) or "<unknown>"
    except (OSError, TypeError) as exc:
        raise CompileError(
            f"cannot read the source of {getattr(fn, '__qualname__', fn)!r} ({exc}); pullback "
            "transforms Python source, so the function must be defined in a .py file"
        ) from None
    text = "".join(lines)
    dedented = textwrap.dedent(text)
    indent = len(lines[0]) - len(lines[0].lstrip())
    try:
        module = gast.parse(dedented)
    except SyntaxError:
        raise CompileError(f"cannot parse the source of {fn.__qualname__} on its own; "
                           "define it with def at module level", filename, first_line) from None
    tree = module.body[0]
    if fn.__name__ == "<lambda>":
        tree = _lambda_as_function(module, fn, filename, first_line)
    if not isinstance(tree, gast.FunctionDef):
        raise CompileError(f"{fn!r} is not a plain function definition", filename, first_line)
    tree.decorator_list = []
    return ParsedFunction(fn, tree, filename, first_line, indent, lines)
