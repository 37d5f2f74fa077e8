"""Step 1, parse: a Python function -> its gast FunctionDef plus where it came from.

Guarantees: ``ParsedFunction.tree`` is the function's own ``FunctionDef``
(decorators removed), and ``resolve(name)`` looks a free name up the way
Python would at call time: closure cells first, then globals, then builtins.
"""

from __future__ import annotations

import __future__
import builtins
import dis
import functools
import inspect
import operator
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
        # the code's own source: inspect.getsourcelines(fn) follows ``__wrapped__`` (set
        # by functools.wraps) to the wrapped function, whose code is not the one that runs
        code = fn.__code__
        lines, first_line = inspect.getsourcelines(code)
        filename = inspect.getsourcefile(code) or "<unknown>"
    except (AttributeError, OSError, TypeError) as exc:
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
    in_class = "." in fn.__qualname__ and fn.__qualname__.split(".")[-2] != "<locals>"
    private = _mangled_name(tree) if in_class else None
    if private is not None:
        raise CompileError(f"{fn.__qualname__} uses the private name {private!r}, which Python "
                           "renames inside a class (name mangling); pullback does not follow "
                           "it: use a name with at most one leading underscore", filename,
                           first_line)
    if not _same_code(dedented, code):
        raise CompileError(
            f"the source of {fn.__qualname__} in {filename} is not the code Python runs: the "
            "file changed after it was imported (pullback reads the file); reload the module "
            "(importlib.reload) or restart the interpreter", filename, first_line)
    tree.decorator_list = []
    return ParsedFunction(fn, tree, filename, first_line, indent, lines)


def _mangled_name(tree) -> str | None:
    """A ``__name`` (not a dunder) the function reads or writes, if any."""
    for node in gast.walk(tree):
        name = node.attr if isinstance(node, gast.Attribute) else \
            node.id if isinstance(node, gast.Name) else None
        if name and name.startswith("__") and not name.endswith("__"):
            return name
    return None


def _same_code(source: str, code) -> bool:
    """Whether the definition ``source`` compiles to ``code``'s bytecode (line numbers
    aside).  A function with free variables is compiled inside a function binding them,
    so it reads them as Python does (cells, not globals)."""
    if _rewritten_asserts(code):
        return True   # pytest rewrote its asserts on import: no longer the source's code
    free = code.co_freevars
    if free:
        source = ("def _pullback_outer():\n"
                  + "".join(f"    {v} = None\n" for v in free)
                  + textwrap.indent(source, "    ") + "\n")
    try:
        compiled = compile(source, "<pullback check>", "exec", dont_inherit=True,
                           flags=code.co_flags & _FUTURE_FLAGS)
    except SyntaxError:
        return True   # not compilable on its own (parsed above): nothing to compare with
    target = _instructions(code)
    return any(_instructions(c) == target for c in _code_objects(compiled, code.co_name))


def _rewritten_asserts(code) -> bool:
    """Whether pytest's assertion rewriting changed ``code`` (its helpers are named
    ``@py_builtins``, ``@pytest_ar``: names no source can spell)."""
    return any(n.startswith("@py") for n in code.co_names) or any(
        _rewritten_asserts(c) for c in code.co_consts if isinstance(c, type(code)))


_IGNORED_OPS = {"CACHE", "PUSH_NULL", "RESUME", "NOP", "EXTENDED_ARG"}


def _instructions(code) -> list:
    """``code``'s instructions as (operation, argument) without what depends on the module
    around the definition: CPython calls a function of an imported module with
    LOAD_ATTR, of other names with LOAD_METHOD (different sizes, so jump offsets too)."""
    out = []
    for ins in dis.get_instructions(code):
        if ins.opname in _IGNORED_OPS:
            continue
        op = "LOAD_ATTR" if ins.opname == "LOAD_METHOD" else ins.opname
        arg = ins.argval
        if "JUMP" in op or op in ("FOR_ITER", "SEND"):
            arg = None
        elif isinstance(arg, type(code)):
            arg = (arg.co_name, tuple(_instructions(arg)))
        out.append((op, repr(arg)))
    return out


#: the compiler flags of every ``from __future__ import`` (the user's code kept its own)
_FUTURE_FLAGS = functools.reduce(operator.or_, (getattr(__future__, f).compiler_flag
                                                for f in __future__.all_feature_names))


def _code_objects(code, name):
    for const in code.co_consts:
        if isinstance(const, type(code)):
            if const.co_name == name:
                yield const
            yield from _code_objects(const, name)
