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

import numpy as np

from pullback.runtime import native
from pullback.runtime.native_function import (ARRAYS_SUPPORTED, NativeGradient,
                                              NativeTangent, key_name, signature_key)

from . import infer
from .ir import NotInIR, function_ir, tangent_ir
from .lower_function import lower_function, lower_tangent


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
    return _remembered(variant, args, _build)


def _remembered(variant, args, build):
    """The road for ``args``' signature, built by ``build(variant, args)`` once and then
    remembered: the native function if it accepts these arguments, else None."""
    roads = _roads(variant)
    key = tuple(map(signature_key, args))
    found = roads.get(key)
    if found is None:
        found = roads[key] = build(variant, args)
    if isinstance(found, Refused):
        return None
    return found if found.accepts(args) else None


def _argument_types(args):
    """The infer types of ``args``, or the Refused of the first the native road takes not."""
    types = tuple(infer.argument_type(a) for a in args)
    for a, t in zip(args, types, strict=True):
        if t is None or (isinstance(t, infer.Arr) and not ARRAYS_SUPPORTED):
            return Refused(f"an argument of type {key_name(signature_key(a))} (native: "
                           f"Python and numpy float/int/bool scalars, float64 arrays of 1 to "
                           f"{infer.MAX_NDIM} axes)")
    return types


def _build(variant, args):
    types = _argument_types(args)
    if isinstance(types, Refused):
        return types
    return build_for_types(variant, tuple(map(signature_key, args)), types)


def tangent_function(variant, args):
    """The native tangent function of the tangent variant ``variant`` (not batched) for
    ``args`` (internal primals, then their tangents), or None: the Python road.  Decided
    and remembered per signature as ``gradient_function`` does (``explain`` reports it);
    lowered in each process (no manifest yet; the object code is cached on disk)."""
    if not enabled(variant) or variant.batched:
        return None
    return _remembered(variant, args, _build_tangent)


def _build_tangent(variant, args):
    types = _argument_types(args)
    if isinstance(types, Refused):
        return types
    variant._build()
    name = variant._tangent.__name__[:-len("_tangent")]
    try:
        tangent = tangent_ir(variant.source, name)
        typing = infer.infer_tangent(tangent, variant._tangent.__globals__, types, variant)
        ir_text, symbol = lower_tangent(tangent, typing)
        value, dot = typing.result.items
        return NativeTangent(ir_text, symbol, tuple(map(signature_key, args)), value.kind,
                             dot.kind)
    except infer.NotTyped as error:
        return _refusal(variant, error)
    except NotInIR as error:
        return Refused(str(error))
    except Exception as error:   # noqa: BLE001  a bug here must not fail a call Python runs
        return Refused(f"internal error of the native road ({type(error).__name__}: "
                       f"{error}); please report it")


def build_for_types(variant, signature: tuple, types: tuple):
    """The NativeGradient (or Refused) of ``variant`` for arguments of the exact
    signature ``signature`` (``native_function.signature_key`` of each) (``types``: their infer types): from a manifest and cached object
    code when both are on disk (no IR, typing or LLVM), else lowered and compiled (and
    the manifest written)."""
    variant._build()
    manifest = _Manifest(variant, signature)
    found = manifest.load()
    if found is not None:
        return found
    name = variant._forward.__name__[:-len("_forward")]
    namespace = variant._forward.__globals__
    try:
        forward, adjoint = function_ir(variant.source, name)
        typing = infer.infer(forward, adjoint, namespace, types, variant)
        ir_text, symbol = lower_function(forward, adjoint, typing)
        kinds = [None if g is infer.NONE else infer.inner(g).kind for g in typing.gradients]
        road = NativeGradient(ir_text, symbol, signature, typing.result.kind, kinds,
                              directory=manifest.directory)
        manifest.write(road, native._engine().cache_key(ir_text))
        return road
    except infer.NotTyped as error:
        return _refusal(variant, error)
    except NotInIR as error:
        return Refused(str(error))
    except Exception as error:   # noqa: BLE001  a bug here must not fail a call Python runs
        return Refused(f"internal error of the native road ({type(error).__name__}: "
                       f"{error}); please report it")


class _Manifest:
    """What a later process needs to use a native function without lowering it: its
    symbol, the cache key of its object code, its value's and gradients' kinds; one small
    JSON file per variant and signature, named by a digest of the generated sources of
    the variant and every variant it calls (they decide the IR), the signature, pullback's
    build and the engine's LLVM version and CPU.  Files live beside the variant's
    artifact (``__pullback_cache__/kernels``, where ``pullback compile`` puts them) or,
    without one, in the kernel cache; every file operation goes through
    ``runtime/safefile.py``, and a file whose fields are not exactly what ``write``
    writes is ignored (then rebuilt)."""

    FORMAT = "pullback-native-function-1"

    def __init__(self, variant, signature):
        from . import cache

        # arrays' signatures (dtype, ndim) are not stored yet: lowered in each process
        self.numbers_only = not any(isinstance(t, tuple) for t in signature)
        self.signature = tuple(key_name(t) for t in signature)
        where = cache.artifact_path(variant.function.fn, variant.mask)
        self.directory = None if where is None else where[0].child("kernels")
        sources, seen, queue = [], set(), [variant]
        while queue:
            v = queue.pop()
            if id(v) in seen:
                continue
            seen.add(id(v))
            v._build()
            sources.append(v.source)
            queue.extend(x for x in v._forward.__globals__.values()
                         if hasattr(x, "_build") and hasattr(x, "function"))
        text = "\0".join([self.FORMAT, cache.build_fingerprint(), *self.signature, *sources])
        self.name = f"{native._engine().cache_key(text)}.native.json"

    def _caches(self):
        locations = [self.directory] if self.directory is not None else []
        return [*locations, native.cache_directory()]

    def load(self):
        import json

        if not self.numbers_only:
            return None
        for location in self._caches():
            try:
                folder = location.open(create=False)
            except OSError:
                continue
            if folder is None:
                continue
            try:
                blob = folder.read(self.name, limit=1 << 16)
            except OSError:
                blob = None
            finally:
                folder.close()
            if blob is None:
                continue
            try:
                fields = json.loads(blob)
            except ValueError:
                continue
            road = self._from(fields)
            if road is not None:
                return road
        return None

    def _from(self, fields):
        import re

        kinds = ("f64", "f32", "pyfloat", "float")
        if not (isinstance(fields, dict) and fields.get("format") == self.FORMAT
                and fields.get("signature") == list(self.signature)
                and isinstance(fields.get("symbol"), str)
                and re.fullmatch(r"pb_native_[0-9a-f]{16}", fields["symbol"])
                and isinstance(fields.get("object"), str)
                and re.fullmatch(r"[0-9a-f]{64}", fields["object"])
                and fields.get("value") in kinds and isinstance(fields.get("gradients"), list)
                and len(fields["gradients"]) == len(self.signature)
                and all(k is None or k in kinds for k in fields["gradients"])):
            return None
        address = native._engine().load_cached(fields["object"], fields["symbol"],
                                               self.directory)
        if address is None:
            return None
        types = {t.__name__: t for t in (float, int, bool, np.float64, np.float32)}
        signature = tuple(types[name] for name in self.signature)
        return NativeGradient(None, fields["symbol"], signature, fields["value"],
                              fields["gradients"], loaded=(address, "cached, no lowering"))

    def write(self, road, object_key):
        import json

        fields = {"format": self.FORMAT, "signature": list(self.signature),
                  "symbol": road.symbol, "object": object_key, "value": road.value_kind,
                  "gradients": list(road.gradient_kinds)}
        if not self.numbers_only:
            return
        data = json.dumps(fields, sort_keys=True).encode()
        for location in self._caches()[:1]:   # the preferred cache, as for object code
            try:
                folder = location.open(create=True)
            except OSError:
                continue
            if folder is None:
                continue
            try:
                folder.write(self.name, data, 0o600)
            except OSError:
                pass   # the function runs anyway; the next process lowers it again
            finally:
                folder.close()


def precompile(variant, signature: tuple) -> bool:
    """Build (and store) the native function of ``variant`` for arguments of the exact
    types ``signature``, for ``python -m pullback compile``; whether it is native."""
    if not enabled(variant):
        return False
    types = tuple(infer.argument_type(t(0)) for t in signature)
    road = build_for_types(variant, signature, types)
    _roads(variant)[tuple(signature)] = road
    if isinstance(road, Refused):
        return False
    # pb.grad's entries for Python floats as the differentiated arguments
    positions = tuple(k for k, m in enumerate(variant.mask) if m)
    user = tuple(float if k in positions and t is np.float64 else t
                 for k, t in enumerate(signature))
    for single in {len(positions) == 1, False}:
        road.gradient_entry(user, positions, single, _no_fallback)
    road.prepare_entry()   # value_and_grad's and vjp's
    return True


def _no_fallback(*args):   # the entries precompile makes are only compiled, never called
    raise AssertionError("pullback bug: a precompiled entry was called")


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
    """The user's line a generated statement comes from, and that line's text; (0, "") if
    unknown.  In order: a location the statement carries (a stack tag ``'what@line'``, a
    check's ``'file:line'``); a user function's call it makes (``h1 = h_1.forward(...)``:
    the k-th call of ``h`` in the source, as normalize numbers its temporaries); the
    user's assignment of a name it assigns or reads (``x_grad`` -> ``x``)."""
    import gast

    if statement is None:
        return 0, ""
    fn = variant.function.fn
    code = fn.__code__
    line = _carried_line(statement, code.co_filename)
    tree = _user_tree(fn)
    if not line:
        line = _kernel_line(statement, variant)
    if not line and tree is not None:
        line = _callee_line(statement, tree, variant)
    if not line and tree is not None:
        names = [n.id for n in gast.walk(statement) if isinstance(n, gast.Name)]
        targets = [t.id for t in getattr(statement, "targets", ()) if isinstance(t, gast.Name)]
        for candidate in targets + names:
            for suffix in ("_out_grad", "_grad", "_out"):
                if candidate.endswith(suffix):
                    candidate = candidate[:-len(suffix)]
            line = _assigning_line(tree, candidate)
            if line:
                break
    if not line:
        return 0, ""
    return line, linecache.getline(code.co_filename, line).strip()


def _kernel_line(statement, variant) -> int:
    """The first user line of a fused kernel the statement calls (``kernel_1(...)``,
    ``kernel_1.vjp(...)``): its forward's docstring names them ("Fused forward of lines
    3-5, 8."), also for a variant loaded from its artifact."""
    import re

    import gast

    from pullback.runtime.fused import FusedKernel

    namespace = _namespace(variant)
    for node in gast.walk(statement):
        if isinstance(node, gast.Name) and isinstance(namespace.get(node.id), FusedKernel):
            doc = getattr(namespace[node.id].forward, "__doc__", None) or ""
            found = re.search(r"lines (\d+)", doc)
            if found:
                return int(found.group(1))
    return 0


def _namespace(variant) -> dict:
    """The generated module's names of a variant (a gradient's or a tangent's)."""
    code = getattr(variant, "_forward", None) or getattr(variant, "_tangent", None)
    return getattr(code, "__globals__", {})


def _carried_line(statement, filename) -> int:
    import gast

    for node in gast.walk(statement):
        if not (isinstance(node, gast.Constant) and isinstance(node.value, str)):
            continue
        text = node.value
        if "@" in text and text.rsplit("@", 1)[1].isdigit():
            return int(text.rsplit("@", 1)[1])
        if text.startswith(f"{filename}:") and text.rsplit(":", 1)[1].isdigit():
            return int(text.rsplit(":", 1)[1])
    return 0


def _user_tree(fn):
    """The user function's source as an ``ast`` tree, line numbers the file's."""
    import inspect
    import textwrap

    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return None
    tree = ast.parse(source)
    ast.increment_lineno(tree, fn.__code__.co_firstlineno - 1)
    return tree


def _callee_line(statement, tree, variant) -> int:
    """The line of the user call a ``name = ref.forward(...)`` statement makes: the
    temporary ``<callee><k>`` is the k-th call of that callee in the source."""
    import gast

    value = getattr(statement, "value", None)
    if not (isinstance(value, gast.Call) and isinstance(value.func, gast.Attribute)
            and value.func.attr in ("forward", "adjoint", "tangent")):
        return 0
    target = _namespace(variant).get(getattr(value.func.value, "id", ""))
    callee = getattr(getattr(getattr(target, "function", None), "fn", None), "__name__", None)
    if callee is None:
        return 0
    calls = sorted((node.lineno, node.col_offset) for node in ast.walk(tree)
                   if isinstance(node, ast.Call) and _called_name(node.func) == callee)
    k = 1
    targets = getattr(statement, "targets", ())
    if targets and isinstance(targets[0], gast.Name):
        digits = targets[0].id[len(callee):]
        k = int(digits) if targets[0].id.startswith(callee) and digits.isdigit() else 1
    return calls[k - 1][0] if 0 < k <= len(calls) else (calls[0][0] if calls else 0)


def _called_name(func):
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(
        func, ast.Attribute) else None


def _assigning_line(tree, name) -> int:
    """The first line assigning ``name`` in the user's source (0: none)."""
    lines = [node.lineno for node in ast.walk(tree)
             if isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx,
                                                                              ast.Store)]
    return min(lines, default=0)


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
