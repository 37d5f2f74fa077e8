"""The compiler pipeline as an explicit list of named steps.

parse -> fence -> normalize -> analysis -> reverse -> codegen.  ``transform``
runs them all; ``show(fn, step)`` returns the function as it is after one step,
for debugging the compiler ("show me the code after normalize").
"""

from __future__ import annotations

import os
import threading
import zlib

import gast
import numpy

from pullback.runtime import fused

from . import cache, codegen
from .analysis import analyze, narrow_needed
from .fence import check
from .fuse import adjoint_source as kernel_adjoint_source
from .fuse import forward_source, fuse, value_and_gradient_source, wrapper_source
from .normalize import normalize
from .parse import parse_function
from .pytree import Kind
from .reverse import ReverseTransform, unparse

STEPS = ("parse", "fence", "normalize", "fuse", "analysis", "reverse", "codegen")


_BUILD_LOCK = threading.RLock()


class Variant:
    """One compiled version of a function: which parameters are differentiated."""

    def __init__(self, function, mask):
        self.function = function
        self.mask = mask
        self._forward = None
        self._adjoint = None
        self.source = None

    def _build(self):
        if self._forward is not None:
            return
        with _BUILD_LOCK:   # one thread builds; the others wait and reuse it
            if self._forward is None:   # from the variant's artifact if valid, else transformed
                self.source, namespace, name = cache.build(self.function, self.mask, transform)
                if not getattr(self.function, "native", True):   # pb.compile(native=False)
                    for value in namespace.values():
                        if isinstance(value, fused.FusedKernel):
                            value.native_allowed = False
                self._adjoint = namespace[f"{name}_adjoint"]
                self._forward = namespace[f"{name}_forward"]   # last: it marks "built"

    def forward(self, stack, *args):
        if self._forward is None:   # a callee's call from generated code: usually built
            self._build()
        return self._forward(stack, *args)

    def adjoint(self, stack, result_grad):
        if self._forward is None:
            self._build()
        return self._adjoint(stack, result_grad)


def _free_names(fn: gast.FunctionDef, locals_) -> set:
    return {n.id for n in gast.walk(fn) if isinstance(n, gast.Name)
            and isinstance(n.ctx, gast.Load) and n.id not in locals_}


def fusion_enabled() -> bool:
    """Elementwise runs are fused unless ``PULLBACK_FUSE=0`` (for debugging and comparison)."""
    return os.environ.get("PULLBACK_FUSE", "1") != "0"


def transform(parsed, mask, variant_for, meta=None, fusion=None):
    """Generate and load the forward/adjoint pair of ``parsed`` for ``mask``.

    ``fusion``: whether to fuse elementwise runs (None: ``fusion_enabled()``; the
    forward-over-reverse of compiler/second.py transforms an unfused adjoint).

    Returns (source, namespace).  If ``meta`` is a dict, it receives what
    ``cache`` stores to load the source again without parsing: ``name`` (of the
    generated functions), ``names`` (bound in the namespace), ``kernels``.
    """
    check(parsed)
    fn = normalize(parsed)
    if fusion is None:
        fusion = fusion_enabled()
    kernels = fuse(parsed, fn, fn.namer) if fusion else []
    params = [a.id for a in fn.args.args]
    if len(mask) != len(params):
        raise TypeError(f"{fn.name}() takes {len(params)} arguments, got {len(mask)}")
    active = [p for p, m in zip(params, mask, strict=True) if m]
    kinds = {p: m for p, m in zip(params, mask, strict=True) if isinstance(m, Kind)}
    analysis = analyze(parsed, fn, active, kinds)
    callees = {}

    def callee_ref(callee, callee_mask):
        key = (id(callee), callee_mask)
        if key not in callees:
            bits = "".join("1" if m else "0" for m in callee_mask)
            if any(isinstance(m, Kind) for m in callee_mask):   # one name per structure
                bits += f"_s{zlib.crc32(repr(callee_mask).encode()):08x}"
            stem = callee.__name__ if callee.__name__.isidentifier() else "lambda_fn"
            made_by = getattr(callee, "pullback_derivative", None)
            if made_by is not None:   # a nested derivative: its own VJP (no artifact)
                from .forward_api import derivative_adjoint

                callees[key] = (f"{stem}_{made_by.split('.')[-1]}_{bits}",
                                derivative_adjoint(callee, callee_mask))
            else:
                callees[key] = (f"{stem}_{bits}", variant_for(callee, callee_mask))
        return callees[key][0]

    # emit the adjoint once to learn what it reads, then for real with only those pushes
    reads = ReverseTransform(parsed, fn, analysis, callee_ref).adjoint_reads()
    narrow_needed(fn, analysis, reads)
    transformer = ReverseTransform(parsed, fn, analysis, callee_ref)
    forward_src, adjoint_src = transformer.sources(fn.name)
    values, shapes = transformer.adjoint_reads()
    unsaved = ((values | shapes) & analysis.locals) - analysis.needed
    unsaved |= (values & analysis.shape_only)   # a stand-in's values would be read
    if unsaved:   # an internal error: the adjoint would read a value the forward lost
        raise RuntimeError(f"pullback bug: the adjoint of {fn.name}() reads "
                           f"{sorted(unsaved)} but the forward does not keep them")
    names = {}
    for free in _free_names(fn, analysis.locals) - {"support", "ops", "vjp"}:
        try:
            names[free] = parsed.resolve(free)
        except KeyError:
            pass
    names.update({ref: variant for ref, variant in callees.values()})
    header = (f"# Generated by pullback from {fn.name}() at {os.path.basename(parsed.filename)}:"
              f"{parsed.first_line}\n# Differentiated parameters: "
              f"{', '.join(active) or '(none)'}\n")
    kernel_src = "".join(
        f"{forward_source(k)}\n\n\n{kernel_adjoint_source(k)}\n\n\n"
        + (f"{value_and_gradient_source(k)}\n\n\n" if k.one_pass else "")
        + f"{wrapper_source(k)}\n\n\n"
        for k in kernels)
    names.update({"_np": numpy, "_kernels": fused})
    source = f"{header}\n\n{kernel_src}{forward_src}\n\n\n{adjoint_src}\n"
    stem = f"{getattr(parsed.fn, '__module__', 'module')}.{fn.name}"
    if meta is not None:
        meta.update(name=fn.name, names=names, kernels=[k.name for k in kernels])
    return source, codegen.load(source, stem, names)


class TangentVariant:
    """One forward-mode version of a function: which parameters carry tangents."""

    def __init__(self, function, mask, batched=False):
        self.function = function
        self.mask = mask
        self.batched = batched   # tangents with a leading batch axis (``_batch`` first)
        self._tangent = None
        self.source = None

    def _build(self):
        if self._tangent is not None:
            return
        with _BUILD_LOCK:
            if self._tangent is None:
                self.source, namespace = transform_tangent(
                    self.function.parsed(), self.mask, self.function.tangent_variant_for,
                    self.batched)
                self._tangent = namespace[f"{self.function.parsed().tree.name}_tangent"]

    def tangent(self, *args):
        """``(result, result tangent)`` of the primals ``args`` followed by one tangent
        per parameter of the mask."""
        self._build()
        return self._tangent(*args)


def transform_tangent(parsed, mask, variant_for, batched=False, fusion=None):
    """Generate and load the tangent (forward-mode) function of ``parsed`` for ``mask``:
    parse -> fence -> normalize -> fuse -> analysis -> tangent -> codegen (no disk
    artifact: the generated module is rebuilt in each process).

    ``batched``: every tangent carries a leading axis of directions (``pb.jacfwd``);
    ``fusion=False``: no fused kernels (for code that is transformed again).
    Returns (source, namespace)."""
    from .tangent import TangentTransform

    check(parsed)
    fn = normalize(parsed)
    # elementwise runs fuse as in the reverse mode; each run with a tangent gets a kernel
    # computing values and tangents in one pass (batched tangents stay unfused)
    fused_runs = fusion_enabled() if fusion is None else fusion
    kernels = fuse(parsed, fn, fn.namer) if fused_runs and not batched else []
    params = [a.id for a in fn.args.args]
    if len(mask) != len(params):
        raise TypeError(f"{fn.name}() takes {len(params)} arguments, got {len(mask)}")
    active = [p for p, m in zip(params, mask, strict=True) if m]
    analysis = analyze(parsed, fn, active)
    analysis.pushes = set()   # forward mode saves nothing
    callees = {}

    def callee_ref(callee, callee_mask):
        key = (id(callee), callee_mask)
        if key not in callees:
            bits = "".join("1" if m else "0" for m in callee_mask)
            stem = callee.__name__ if callee.__name__.isidentifier() else "lambda_fn"
            made_by = getattr(callee, "pullback_derivative", None)
            if made_by is not None:   # a nested derivative: its own tangent rule
                from .forward_api import derivative_tangent

                callees[key] = (f"{stem}_{made_by.split('.')[-1]}_{bits}",
                                derivative_tangent(callee, callee_mask))
            else:
                callees[key] = (f"{stem}_{bits}", variant_for(callee, callee_mask, batched))
        return callees[key][0]

    transformer = TangentTransform(parsed, fn, analysis, callee_ref, mask, batched)
    tangent_src = transformer.source(fn.name)
    kernel_src = "".join(
        f"{forward_source(k)}\n\n\n{kernel_adjoint_source(k)}\n\n\n"
        + (f"{value_and_gradient_source(k)}\n\n\n" if k.one_pass else "")
        + f"{wrapper_source(k)}\n\n\n" for k in kernels)
    kernel_src += "".join(f"{t.source()}\n\n\n" for t in transformer.tangent_kernels)
    names = {}
    for free in _free_names(fn, analysis.locals) - {"support", "ops", "vjp", "jvp"}:
        try:
            names[free] = parsed.resolve(free)
        except KeyError:
            pass
    names.update({ref: variant for ref, variant in callees.values()})
    names.update({"_np": numpy, "_kernels": fused})
    header = (f"# Forward mode, generated by pullback from {fn.name}() at "
              f"{os.path.basename(parsed.filename)}:{parsed.first_line}\n"
              f"# Parameters with tangents: {', '.join(active) or '(none)'}"
              f"{' (batched: a leading axis of _batch directions)' if batched else ''}\n")
    source = f"{header}\n\n{kernel_src}{tangent_src}\n"
    stem = (f"{getattr(parsed.fn, '__module__', 'module')}.{fn.name}."
            f"{'batched_tangent' if batched else 'tangent'}")
    return source, codegen.load(source, stem, names)


def show(fn, step: str = "normalize") -> str:
    """The function as source after ``step`` (parse, normalize)."""
    parsed = parse_function(fn)
    if step == "parse":
        return unparse(parsed.tree)
    check(parsed)
    if step == "fence":
        return unparse(parsed.tree)
    if step == "normalize":
        return unparse(normalize(parsed))
    raise ValueError(f"show() knows the steps parse, fence, normalize; got {step!r}")
