"""Which road a variant's call takes: native (``ir`` -> ``infer`` -> ``lower_function``)
or Python, decided once per variant and argument signature, and explained.

``gradient_function(variant, args)`` returns the ``NativeGradient`` for the call's
argument types, or None: the Python road.  The reason a signature stays on the Python
road is kept (``explain``): the first statement that does not type or lower, and why.
Native code is used unless ``PULLBACK_NATIVE_FUNCTIONS=0`` or ``PULLBACK_NATIVE=0``
(read at each call), or the function was compiled with ``native=False``.
"""

from __future__ import annotations

import ast
import linecache
import os

from pullback.runtime import native
from pullback.runtime.native_function import (ARRAYS_SUPPORTED, NativeGradient, key_name,
                                              signature_key)

from . import infer
from .ir import NotInIR, function_ir
from .lower_function import lower_function


class Refused:
    """Why a signature takes the Python road."""

    def __init__(self, reason: str, generated: str = "", user_line: int = 0, text: str = ""):
        self.reason, self.generated, self.user_line, self.text = reason, generated, \
            user_line, text

    def __str__(self):
        where = f"line {self.user_line}: `{self.text}`: " if self.user_line else ""
        generated = f" (generated: `{self.generated}`)" if self.generated else ""
        return f"{where}{self.reason}{generated}"


def _roads(variant) -> dict:
    roads = getattr(variant, "_native_roads", None)
    if roads is None:
        roads = variant._native_roads = {}
    return roads


def functions_enabled() -> bool:
    return os.environ.get("PULLBACK_NATIVE_FUNCTIONS", "1") != "0" and native.native_enabled()


def enabled(variant) -> bool:
    return functions_enabled() and getattr(variant.function, "native", True)


def gradient_function(variant, args):
    """The native value-and-gradient function for ``args`` (internal values), or None."""
    if not enabled(variant):
        return None
    roads = _roads(variant)
    key = tuple(map(signature_key, args))
    found = roads.get(key)
    if found is None:
        found = roads[key] = _build(variant, args)
    if isinstance(found, Refused):
        return None
    return found if found.accepts(args) else None


def _build(variant, args):
    types = tuple(infer.argument_type(a) for a in args)
    for a, t in zip(args, types, strict=True):
        if t is None or (isinstance(t, infer.Arr) and not ARRAYS_SUPPORTED):
            return Refused(f"an argument of type {key_name(signature_key(a))} (native: "
                           f"Python and numpy float/int/bool scalars, float64 arrays of 1 to "
                           f"{infer.MAX_NDIM} axes)")
    variant._build()
    name = variant._forward.__name__[:-len("_forward")]
    namespace = variant._forward.__globals__
    try:
        forward, adjoint = function_ir(variant.source, name)
        typing = infer.infer(forward, adjoint, namespace, types)
        ir_text, symbol = lower_function(forward, adjoint, typing)
        kinds = [None if g is infer.NONE else infer.inner(g).kind for g in typing.gradients]
        return NativeGradient(ir_text, symbol, tuple(map(signature_key, args)),
                              typing.result.kind,
                              kinds)
    except infer.NotTyped as error:
        return _refusal(variant, error)
    except NotInIR as error:
        return Refused(str(error))
    except Exception as error:   # noqa: BLE001  a bug here must not fail a call Python runs
        return Refused(f"internal error of the native road ({type(error).__name__}: "
                       f"{error}); please report it")


def _refusal(variant, error) -> Refused:
    statement = error.statement
    generated = ""
    if statement is not None:
        import gast
        generated = ast.unparse(gast.gast_to_ast(statement)).splitlines()[0]
    line, text = _user_line(variant, statement)
    reason = f"{error.reason} (in the {error.part})" if error.part else error.reason
    return Refused(reason, generated, line, text)


def _user_line(variant, statement):
    """The user's line a generated statement comes from (by its tag, or the name it
    assigns), and that line's text; (0, "") if unknown."""
    import gast

    if statement is None:
        return 0, ""
    line = 0
    for node in gast.walk(statement):
        if isinstance(node, gast.Constant) and isinstance(node.value, str) and "@" in node.value:
            line = int(node.value.rsplit("@", 1)[1])
    fn = variant.function.fn
    code = fn.__code__
    if not line:
        names = [n.id for n in gast.walk(statement) if isinstance(n, gast.Name)]
        for candidate in names:
            for suffix in ("_out_grad", "_grad", "_out"):
                if candidate.endswith(suffix):
                    candidate = candidate[:-len(suffix)]
            line = _assigning_line(fn, candidate)
            if line:
                break
    if not line:
        return 0, ""
    return line, linecache.getline(code.co_filename, line).strip()


def _assigning_line(fn, name) -> int:
    import inspect
    import textwrap

    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return 0
    first = fn.__code__.co_firstlineno
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Store):
            return first + node.lineno - 1
    return 0


def explain(variant) -> list:
    """``(argument types, road)`` lines for every signature this variant was called with."""
    lines = []
    for key, found in _roads(variant).items():
        signature = ", ".join(map(key_name, key))
        if isinstance(found, Refused):
            lines.append(f"({signature}): Python road: {found}")
        else:
            lines.append(f"({signature}): native ({found.symbol}, {found.how})")
    return lines
