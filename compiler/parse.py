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


_STARS = inspect.CO_VARARGS | inspect.CO_VARKEYWORDS


def signature_function(fn):
    """The function whose parameters ``fn`` takes: ``fn`` itself, or for a
    ``functools.wraps`` wrapper taking ``*args, **kwargs`` the function it wraps (the
    wrapper forwards them: ``_forwarding_wrapper``)."""
    if fn.__code__.co_flags & _STARS and hasattr(fn, "__wrapped__"):
        inner = inspect.unwrap(fn)
        if inspect.isfunction(inner) and not inner.__code__.co_flags & _STARS:
            return inner
    return fn


def parameter_names(fn) -> tuple:
    """``fn``'s parameters in the order compiled code takes them all, positionally: the
    positional ones, then ``*args`` (one tuple), then the keyword-only ones."""
    fn = signature_function(fn)
    code = fn.__code__
    count, keyword_only = code.co_argcount, code.co_kwonlyargcount
    names = code.co_varnames
    varargs = (names[count + keyword_only],) if code.co_flags & inspect.CO_VARARGS else ()
    return names[:count] + varargs + names[count:count + keyword_only]


def parameter_count(fn) -> int:
    """How many parameters compiled code takes for ``fn``'s own (``parameter_names``)."""
    code = signature_function(fn).__code__
    return code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & inspect.CO_VARARGS)


def _all_positional(args) -> None:
    """``*args`` and keyword-only parameters as positional parameters after the positional
    ones (``parameter_names``); ``**kwargs`` is left for the fence to refuse."""
    if args.vararg is None and not args.kwonlyargs:
        return
    vararg = [args.vararg] if args.vararg is not None else []
    args.args = list(args.posonlyargs) + list(args.args) + vararg + list(args.kwonlyargs)
    args.posonlyargs, args.vararg, args.kwonlyargs = [], None, []
    args.defaults, args.kw_defaults = [], []   # complete_arguments fills them in


def _forwarding_wrapper(tree, names, inner, parsed) -> None:
    """A ``functools.wraps`` wrapper ``def w(*args, **kwargs): ... f(*args, **kwargs) ...``
    rewritten to take ``inner``'s parameters ``names`` and to pass them on by name; any
    other use of ``args`` or ``kwargs`` is a CompileError at its line."""
    from .errors import error_at

    args = tree.args
    stars = {a.id for a in (args.vararg, args.kwarg) if a is not None}
    if args.args or args.posonlyargs or args.kwonlyargs:
        raise error_at(parsed, tree, "a functools.wraps wrapper with parameters besides "
                       "*args and **kwargs is not supported", "take (*args, **kwargs) only")
    taken = {n.id for n in gast.walk(tree) if isinstance(n, gast.Name)} - stars
    renamed = {n: n if n not in taken else f"{n}_arg" for n in names}
    code = inner.__code__
    positional = names[:code.co_argcount]
    forwarded = {id(n) for n in gast.walk(tree) if isinstance(n, gast.Call)
                 and _forwards(n, args)
                 for n in ([n.args[0].value] if n.args else [])
                 + [k.value for k in n.keywords]}
    for node in gast.walk(tree):
        if isinstance(node, gast.Name) and node.id in stars and id(node) not in forwarded \
                and not isinstance(node.ctx, gast.Param):
            raise error_at(parsed, node, f"this functools.wraps wrapper uses {node.id} other "
                           "than by passing it on as f(*args, **kwargs)",
                           "give the wrapper the wrapped function's parameters")
        if isinstance(node, gast.Call) and _forwards(node, args):
            node.args = [_load(renamed[n]) for n in positional]
            node.keywords = [gast.keyword(arg=n, value=_load(renamed[n]))
                             for n in names[code.co_argcount:]]
    tree.args = gast.arguments(
        args=[gast.Name(id=renamed[n], ctx=gast.Param(), annotation=None, type_comment=None)
              for n in names], posonlyargs=[], vararg=None, kwonlyargs=[], kw_defaults=[],
        kwarg=None, defaults=[])


def _load(identifier):
    return gast.Name(id=identifier, ctx=gast.Load(), annotation=None, type_comment=None)


def _forwards(call, args) -> bool:
    """``f(*args, **kwargs)`` exactly, with the wrapper's own star parameters."""
    star = [gast.Starred] if args.vararg is not None else []
    if [type(a) for a in call.args] != star or (star and not (
            isinstance(call.args[0].value, gast.Name)
            and call.args[0].value.id == args.vararg.id)):
        return False
    if args.kwarg is None:
        return not call.keywords
    return len(call.keywords) == 1 and call.keywords[0].arg is None and isinstance(
        call.keywords[0].value, gast.Name) and call.keywords[0].value.id == args.kwarg.id


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
    if signature_function(fn) is not fn:
        _forwarding_wrapper(tree, parameter_names(fn), signature_function(fn),
                            ParsedFunction(fn, tree, filename, first_line, indent, lines))
    _all_positional(tree.args)
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
