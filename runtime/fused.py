"""Fused elementwise kernels at run time.

The compiler emits each fused run as two plain numpy functions (the kernel and
its VJP) into the generated module, plus the same two programs in the scalar
language, and wraps them in a ``FusedKernel``.  The numpy functions are the
reference and run small or irregular calls; a call on same-shape float arrays
of one dtype, at least ``NATIVE_MIN_SIZE`` elements, runs the native kernel
(``runtime/native.py``) made from the scalar programs instead.  Native kernels
are specialised per dtype and per which arguments are arrays or scalars, and
built on first use.

The lowering (scalar program -> LLVM IR) belongs to the compiler; it registers
it here with ``set_lowering`` so the runtime never imports the compiler.
"""

from __future__ import annotations

import ast
import functools
import math
import os

import numpy as np

from . import native, primitives
from .primitives import shape_of

#: Below this many elements the numpy functions run: bench/fused_threshold.py puts the
#: crossover of a whole compiled gradient call between ~128 and ~1000 elements.
NATIVE_MIN_SIZE = int(os.environ.get("PULLBACK_NATIVE_MIN_SIZE", "512"))

_lowering = None
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def set_lowering(lower) -> None:
    """Install ``lower(spec) -> IR text`` (done by ``pullback.compiler`` on import)."""
    global _lowering
    _lowering = lower


def sigmoid(x):
    """1 / (1 + exp(-x)) without overflow (the primitive's own formula)."""
    x = np.asarray(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype)


def power(x, y):
    """``np.power``, but Python's ``**`` for two Python ints (exact, no int64 wrap-around;
    a negative exponent gives a float), as the user's ``n ** 2`` computes it."""
    if type(x) is int and type(y) is int:
        return x ** y
    return np.power(x, y)


#: ``np.abs``, but Python's ``abs`` for a Python int: the abs primitive's own forward
absolute = primitives._abs_forward


def where(condition, a, b):
    return np.where(np.asarray(condition) != 0, a, b)


def spread(g, *arrays):
    """``g`` broadcast over the shape ``arrays`` broadcast to (the seed of a sum's adjoint)."""
    shape = np.broadcast_shapes(np.shape(g), *(np.shape(a) for a in arrays))
    return np.broadcast_to(g, shape)


def total(values):
    """A full sum as the ``sum`` primitive computes it: shape (1,)."""
    return np.reshape(np.add.reduce(values, axis=None), (1,))


def average(values):
    """A full mean as the ``mean`` primitive computes it: shape (1,)."""
    return np.reshape(np.mean(values), (1,))


def largest(values):
    """A full max as the ``max`` primitive computes it (NaN propagates): shape (1,)."""
    return np.reshape(np.maximum.reduce(values, axis=None), (1,))


def smallest(values):
    """A full min as the ``min`` primitive computes it: shape (1,)."""
    return np.reshape(np.minimum.reduce(values, axis=None), (1,))


def norm(values):
    """A full 2-norm as the ``norm`` primitive computes it: shape (1,)."""
    return np.reshape(primitives.REGISTRY["norm"].forward(np.asarray(values)), (1,))


def count_equal(values, result):
    """How many elements equal ``result``, in the values' float dtype, shape (1,): the
    count the max and min primitives' gradient divides by (``_extremum_vjp``)."""
    count = np.count_nonzero(np.equal(values, result))
    return np.full(1, count, np.result_type(values, 1.0))


def _layout(values):
    """(dtype, shape, kinds) if ``values`` suit a native kernel, else None.

    Suitable: the arrays share one float dtype and one shape, except one-element
    arrays of no more dimensions, which (like Python numbers and numpy scalars of
    that dtype) become scalars broadcast to every element.  ``kinds`` has "a" (array) or "s" (scalar)
    per value.
    """
    arrays = [v for v in values if type(v) is np.ndarray]
    if not arrays:
        return None
    big = max(arrays, key=lambda a: (a.size, a.ndim))   # (1, 1) beside (1,): shape (1, 1)
    dtype, shape = big.dtype, big.shape
    if dtype not in _FLOAT_DTYPES:
        return None
    kinds = []
    for v in values:
        if type(v) is np.ndarray:
            if v.dtype != dtype:
                return None
            if v.shape == shape:
                kinds.append("a")
            elif v.size == 1 and v.ndim <= len(shape):
                kinds.append("s")   # broadcasts to ``shape``; a (1, 1) beside (n,) would not
            else:
                return None
        elif type(v) in (float, int):   # weak: takes the arrays' dtype, as in numpy
            kinds.append("s")
        elif isinstance(v, np.floating) and v.dtype == dtype:   # np.float64 is a float too
            kinds.append("s")
        else:
            return None
    return dtype, shape, tuple(kinds)


def _without_spread(statements):
    """Native kernels broadcast by construction: ``spread(g, ...)`` is just ``g``."""
    out = []
    for target, expression in statements:
        tree = ast.parse(expression, mode="eval")
        for node in ast.walk(tree):
            for name, child in ast.iter_fields(node):
                if isinstance(child, ast.Call) and getattr(child.func, "id", "") == "spread":
                    setattr(node, name, child.args[0])
        if isinstance(tree.body, ast.Call) and getattr(tree.body.func, "id", "") == "spread":
            tree.body = tree.body.args[0]
        out.append((target, ast.unparse(tree)))
    return tuple(out)


def _fresh(base, taken) -> str:
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}{k}"
    return name


def _program_names(params, statements) -> set:
    return set(params) | {t for t, _ in statements}


def _native_reduction(reduction, params, statements):
    """A trailing reduction on the native road: ``(extra statements, reductions)`` of the
    KernelSpec.  A norm sums the squares (computed in the kernel's dtype, so they overflow
    where numpy's do); ``_finish`` takes the square root."""
    _, operand, kind = reduction
    if kind == "norm":
        squares = _fresh(f"{operand}_squared", _program_names(params, statements))
        return ((squares, f"{operand} * {operand}"),), ((squares, "sum"),)
    return (), ((operand, "sum" if kind == "mean" else kind),)


def _counts(statements) -> dict:
    """``{target: (a, b)}`` for the statements ``target = count_equal(a, b)``: whole-array
    counts (a max's or min's ties) that the native road computes in a first pass."""
    found = {}
    for target, expression in statements:
        node = ast.parse(expression, mode="eval").body
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "count_equal":
            found[target] = tuple(ast.unparse(a) for a in node.args)
    return found


def _counting_pass(params, statements, counts):
    """``(statements, reductions)`` of the first pass: what the counted values need, a 0/1
    mask per count, each summed."""
    needed = set()
    for a, b in counts.values():
        needed |= _names(a) | _names(b)
    kept = []
    for target, expression in reversed(statements):
        if target in needed and target not in counts:
            kept.append((target, expression))
            needed |= _names(expression)
    kept.reverse()
    taken = _program_names(params, statements)
    reductions = []
    for target, (a, b) in counts.items():
        mask = _fresh(f"{target}_mask", taken)
        taken.add(mask)
        kept.append((mask, f"{a} == {b}"))
        reductions.append((mask, "sum"))
    return tuple(kept), tuple(reductions)


def _names(expression: str) -> set:
    return {n.id for n in ast.walk(ast.parse(expression, mode="eval")) if isinstance(n, ast.Name)}


def _gradient_outputs(results, kinds, wanted=None):
    """What a native kernel returns for the inputs' gradients: an array input's as an
    output array, a scalar input's as a sum over the elements."""
    takes = [r is not None and (wanted is None or w)
             for r, w in zip(results, wanted or results, strict=True)]
    outputs = tuple(r for r, k, t in zip(results, kinds, takes, strict=True) if t and k == "a")
    sums = tuple((r, "sum") for r, k, t in zip(results, kinds, takes, strict=True)
                 if t and k == "s")
    return outputs, sums


def _gradients_of(produced, results, inputs, kinds, shape, dtype, wanted=None):
    """One gradient per input (None where none was computed) from what a kernel built
    with ``_gradient_outputs`` returned: the output arrays, then the sums."""
    takes = [r is not None and (wanted is None or w)
             for r, w in zip(results, wanted or results, strict=True)]
    produced = list(produced)
    n_arrays = sum(1 for t, k in zip(takes, kinds, strict=True) if t and k == "a")
    arrays, sums = iter(produced[:n_arrays]), iter(produced[n_arrays:])
    grads = []
    for value, take, kind in zip(inputs, takes, kinds, strict=True):
        if not take:
            grads.append(None)
        elif kind == "a":
            grads.append(next(arrays).reshape(shape))
        else:
            grads.append(np.full(np.shape(value), next(sums), dtype))
    return tuple(grads)


def _value(operand, env):
    return env[operand] if operand in env else float(operand)


def _lists_as_arrays(values) -> tuple:
    """Lists and tuples among a kernel's inputs as arrays (``np.multiply(x, [1.0, 2.0])``:
    the kernel's ``x * lst`` must not meet a Python sequence)."""
    for v in values:
        if type(v) is list or type(v) is tuple:
            return tuple(np.asarray(u) if type(u) is list or type(u) is tuple else u
                         for u in values)
    return values


def _all_numbers(values) -> bool:
    """Whether no value is an array (None counts as a number: a zero gradient)."""
    for v in values:
        if type(v) is np.ndarray:
            return False
    return True


def _positions_read(sources, statements, ends) -> tuple:
    """Per name of ``ends`` (None: nothing), the positions in ``sources`` of the names it
    is computed from through ``statements``."""
    reads = {name: {k} for k, name in enumerate(sources)}
    for target, expression in statements:
        reads[target] = set().union(*(reads.get(n, ()) for n in _names(expression)))
    return tuple(frozenset(reads.get(e, ())) if e is not None else frozenset() for e in ends)


def _gradient_sources(adjoint_program) -> tuple:
    """Per input, the positions of the output gradients its gradient is computed from."""
    grads, _, _, statements, results = adjoint_program
    return _positions_read(grads, statements, results)


def _output_inputs(forward_program) -> tuple:
    """Per output of the run, the positions of the inputs it is computed from."""
    names, statements, outputs, _ = forward_program
    return _positions_read(names, statements, outputs)


def program_reads(adjoint_program, one_pass=False) -> frozenset:
    """THE read set of a kernel's VJP: the forward outputs and inputs whose *values* any of
    its roads reads (numpy, native, statement by statement).  Every other output and input
    the VJP is passed only for its shape and dtype (uniformity, layouts, summing
    gradients down), so the compiled forward may save a stand-in (``support.like``)
    instead.  A one-pass kernel's outputs carry the gradients its forward computed: read."""
    _, outputs, inputs, statements, _ = adjoint_program
    names = set()
    for _, expression in statements:
        names |= _names(expression)
    reads = names & (set(outputs) | set(inputs))
    if one_pass:
        reads |= set(outputs)
    return frozenset(reads)


class FusedKernel:
    """A fused run: ``kernel(*inputs) -> outputs``; ``kernel.vjp(grads, outputs, *inputs)``."""

    def __init__(self, name, forward, vjp, forward_program, adjoint_program, steps,
                 with_gradient=None, gradient_program=None):
        self.name = name
        self.forward = forward
        self._vjp = vjp
        self.forward_program = forward_program
        self.adjoint_program = adjoint_program
        self.steps = steps
        self._with_gradient = with_gradient
        self.gradient_program = gradient_program
        self._n_outputs = len(adjoint_program[1])
        reduction = forward_program[3]
        # which output (and output gradient) is the trailing reduction's result
        self._reduction_slot = None if reduction is None else adjoint_program[1].index(
            reduction[0])
        self._native = {}
        self._uniform_cache = {}
        #: where native object code is cached first (set by the compiler's artifact
        #: cache to ``__pullback_cache__/kernels`` beside the user's source)
        self.object_directory = None

    # What the programs read, computed on first use (each parses the programs' statements:
    # a module of kernels loaded from its artifact, or a native function's, needs none).
    @functools.cached_property
    def _has_counts(self) -> bool:
        return bool(_counts(self.adjoint_program[3]))

    @functools.cached_property
    def _sources(self):
        return _gradient_sources(self.adjoint_program)

    @functools.cached_property
    def _every_input_reached(self) -> bool:   # by some output gradient
        return all(self._sources)

    @functools.cached_property
    def _output_inputs(self):
        return _output_inputs(self.forward_program)

    @functools.cached_property
    def reads(self):
        return program_reads(self.adjoint_program, self._with_gradient is not None)

    @functools.cached_property
    def _adjoint_keep(self) -> tuple:
        """The native adjoint takes only the values it reads (an unread one may be a
        stand-in, which flattening would copy): the gradients, then the read outputs and
        inputs."""
        program = self.adjoint_program
        params = (*program[0], *program[1], *program[2])
        return tuple(k < len(program[0]) or p in self.reads for k, p in enumerate(params))

    def with_gradient(self, wanted, *inputs):
        """The outputs (the sum) followed by each wanted input's gradient for a seed of 1:
        value and gradient in one pass.  ``vjp`` then only scales them."""
        inputs = _lists_as_arrays(inputs)
        layout = self._native_layout(inputs)
        if layout is not None and (not self.uniform(inputs) or self._integer_output(inputs)):
            layout = None
        if layout is not None:
            kernel = self._native_kernel(("gradient", wanted), layout)
            if kernel is not None:
                return self._run_with_gradient(kernel, inputs, layout, wanted)
        if not self.uniform(inputs):
            outputs = self.forward(*inputs)
            seed = np.ones_like(outputs[0])
            return outputs + self._vjp_by_steps([seed], inputs, outputs, as_sum=True)
        return self._with_gradient(*inputs)

    def _run_with_gradient(self, kernel, inputs, layout, wanted):
        """Native one-pass call: the gradients, then the value (the run's reduction)."""
        dtype, shape, kinds = layout
        arrays, scalars = self._split(inputs, kinds)
        produced = list(kernel.call(*arrays, *scalars))
        total = np.full(1, self._finish(produced.pop(), shape), dtype)
        grads = _gradients_of(produced, self.gradient_program[2], inputs, kinds, shape, dtype,
                              wanted)
        # the layout of the numpy road: every output (values the adjoint would have read
        # are not computed here: None), then the gradients -- vjp finds them after the
        # outputs, so a run that saves an intermediate (2.0 ** a) must keep its slot
        return (total, *([None] * (self._n_outputs - 1)), *grads)

    def precompile(self, dtype: str) -> int:
        """Build (or load from the object cache) the native kernels for ``dtype`` with
        every argument an array: the layout of an ordinary call.  Returns how many."""
        if _lowering is None or not native.native_enabled():
            return 0
        dtype = np.dtype(dtype)
        n_inputs = len(self.forward_program[0])
        grads, outputs = self.adjoint_program[0], self.adjoint_program[1]
        reduction = self.forward_program[3]
        total = reduction[0] if reduction is not None else None
        # a sum and its gradient are one-element arrays: scalars in the kernel
        adjoint_kinds = tuple("s" if name == total else "a"
                              for name in (*outputs[:len(grads)], *outputs)) + ("a",) * n_inputs
        jobs = [("forward", ("a",) * n_inputs), ("adjoint", adjoint_kinds)]
        if self._has_counts:
            jobs.append(("counts", adjoint_kinds))
        if self.gradient_program is not None:
            jobs.append((("gradient", (True,) * n_inputs), ("a",) * n_inputs))
        return sum(self._native_kernel(which, (dtype, None, kinds)) is not None
                   for which, kinds in jobs)

    def uniform(self, inputs) -> bool:
        """Whether every statement of the run has the shape all inputs broadcast to (or
        one element, broadcast to every element), every live output has it, and so has
        a trailing reduction's operand.

        Only then may gradient contributions be summed per element and reduced to
        each input's shape at the end (and a native kernel, which is per element,
        be used); otherwise the VJP runs statement by statement.  A reduction of a
        one-element value beside a longer statement is not uniform: a native kernel
        reduces over all of its elements (counting the value once per element), and
        the per-element adjoint would add the value's one gradient to every element.
        """
        return self._shapes(inputs)[0]

    def _shapes(self, inputs) -> tuple:
        """``(uniform, count, flat)`` for inputs of these shapes (cached per shapes):
        ``count`` is how many elements a trailing reduction reduces, its operand's own size
        (what a mean divides by), not the kernel's length; ``flat`` whether every input has
        the full shape or one element (``_layout``'s shape rule: else no native kernel can
        take them, a bias ``b`` of shape ``(n,)`` beside ``(batch, n)`` values, say)."""
        key = tuple([shape_of(v) for v in inputs])
        found = self._uniform_cache.get(key)
        if found is None:
            found = self._uniform_cache[key] = self._plan(key)
        return found

    def _plan(self, key) -> tuple:
        shapes = dict(zip(self.forward_program[0], key, strict=True))
        try:
            full = np.broadcast_shapes(*key)
        except ValueError:   # independent statements over unrelated shapes
            return False, None, False
        flat = all(shape == full or (math.prod(shape) == 1 and len(shape) <= len(full))
                   for shape in key)
        uniform = True
        for target, _, operands in self.steps:
            shape = np.broadcast_shapes(*(shapes.get(o, ()) for o in operands))
            shapes[target] = shape
            # a one-element value broadcasts to every element: also fine
            uniform = uniform and (shape == full or math.prod(shape) == 1)
        live = self.adjoint_program[1][:len(self.adjoint_program[0])]
        reduction = self.forward_program[3]
        uniform = uniform and all(shapes[o] == full for o in live
                                  if reduction is None or o != reduction[0])
        if reduction is None:
            return uniform, None, flat
        operand = shapes[reduction[1]]
        spans = operand == full or math.prod(full) == 1
        return uniform and spans, math.prod(operand), flat

    def _integer_output(self, inputs) -> bool:
        """Whether an output is computed from Python ints only (a loop index ``i + 1``):
        numpy keeps it an int, a native kernel would make it a float array."""
        if not any(type(v) is int for v in inputs):
            return False
        return any(deps and all(type(inputs[k]) is int for k in deps)
                   for deps in self._output_inputs)

    def __call__(self, *inputs):
        inputs = _lists_as_arrays(inputs)
        layout = None
        for v in inputs:   # small arrays: numpy; large ones no native kernel takes: too
            if type(v) is np.ndarray and v.size >= NATIVE_MIN_SIZE:
                if self._shapes(inputs)[2]:   # (cached per shapes)
                    layout = self._native_layout(inputs)
                break
        if layout is not None and self._integer_output(inputs):
            layout = None
        if layout is not None and not self.uniform(inputs):
            layout = None
        if layout is not None:
            kernel = self._native_kernel("forward", layout)
            if kernel is not None:
                return self._run(kernel, inputs, layout)
        return self.forward(*inputs)

    def vjp(self, grads, outputs, *inputs):
        """Gradients of the inputs given the list of output gradients (None = zero)."""
        if grads is None:
            return (None,) * len(inputs)
        grads = list(grads)[:len(self.adjoint_program[0])]   # saved outputs get none
        if self._plain_numpy_vjp(grads, outputs, inputs):
            results = self._vjp(grads, outputs, *inputs)
            return results if self._every_input_reached else self._reached(
                [True] * len(grads), results)
        inputs = _lists_as_arrays(inputs)
        reduction = self.forward_program[3]
        if (reduction is not None and reduction[2] in ("norm", "max", "min")
                and len(outputs) == self._n_outputs
                and grads[self._reduction_slot] is None):
            # the reduced value carries no gradient: its seed (t * (g / r), g * (t == r) /
            # ties) must not run with g = 0, as 0 * (0 / 0) is nan for a zero norm or a nan
            if all(g is None for g in grads):
                return (None,) * len(inputs)
            return self._vjp_by_steps(grads, inputs, outputs)
        if len(outputs) == self._n_outputs and _all_numbers(inputs) and _all_numbers(grads):
            # numbers only (a scalar loop): uniform by definition, no native road
            if all(g is None for g in grads):
                return (None,) * len(inputs)
            present = [g is not None for g in grads]
            return self._exact(present, grads, outputs, inputs, self._reached(
                present, self._vjp([0.0 if g is None else g for g in grads], outputs, *inputs)))
        if len(outputs) > self._n_outputs:   # from with_gradient: gradients for a seed of 1
            seed = grads[0]
            if seed is None:
                return (None,) * len(inputs)
            seed = self._sum_seed(seed, inputs)
            unit = outputs[self._n_outputs:]
            if np.all(np.asarray(seed) == 1):
                return tuple(unit)
            return tuple(None if u is None else u * seed for u in unit)
        if all(g is None for g in grads):
            return (None,) * len(inputs)
        if not self.uniform(inputs):
            return self._vjp_by_steps(grads, inputs, outputs)
        given = list(grads)
        if reduction is not None and reduction[2] == "mean":
            k = self._reduction_slot
            if grads[k] is not None:
                grads[k] = self._sum_seed(grads[k], inputs)
        present = [g is not None for g in grads]
        grads = [0.0 if g is None else g for g in grads]
        values = (*grads, *outputs, *inputs)
        layout = self._native_layout(values)
        if layout is None and self._has_counts:
            values, layout = self._cast_to_forward(grads, outputs, inputs)
        if layout is not None:
            kernels = self._native_adjoint(layout)
            if kernels is not None:
                return self._exact(present, given, outputs, inputs, self._reached(
                    present, self._run_vjp(kernels, values, layout)))
        grads = [np.zeros_like(outputs[k]) if isinstance(g, float) and g == 0.0 else g
                 for k, g in enumerate(grads)]
        return self._exact(present, given, outputs, inputs,
                           self._reached(present, self._vjp(grads, outputs, *inputs)))

    def _plain_numpy_vjp(self, grads, outputs, inputs) -> bool:
        """Whether this call's VJP is the numpy adjoint and nothing else (the road the
        general code below reaches for it, decided in one pass): no trailing reduction or
        tie count, every output gradient present and a numpy array, the inputs arrays and
        numbers (no lists), all below ``NATIVE_MIN_SIZE`` or with inputs no native kernel
        takes (``_shapes``' ``flat``: a broadcast bias), of uniform shapes.  Then the
        statement-by-statement fallbacks cannot apply: every gradient is present (nothing
        to recompute for absent ones: ``_exact``) and no native kernel is chosen."""
        if self._reduction_slot is not None or self._has_counts \
                or len(outputs) != self._n_outputs:
            return False
        large = False
        for g in grads:
            if type(g) is not np.ndarray:
                return False
            large = large or g.size >= NATIVE_MIN_SIZE
        for v in (*outputs, *inputs):
            kind = type(v)
            if kind is np.ndarray:
                large = large or v.size >= NATIVE_MIN_SIZE
            elif kind is list or kind is tuple:
                return False
        uniform, _, flat = self._shapes(inputs)
        # a large call whose inputs no native kernel takes (a broadcast bias) is numpy too:
        # the output gradients and outputs of a uniform call have the inputs' full shape
        return uniform and (not large or not flat)

    def _exact(self, present, grads, outputs, inputs, results) -> tuple:
        """``results``, computed with 0 standing for each absent output gradient, if
        they equal the unfused adjoint's, else that adjoint's (statement by statement).

        An absent gradient contributes nothing to the unfused adjoint, but its zero
        stand-in times an infinite partial (``0 / x`` of ``log(x)`` at 0) is nan.  A zero
        times a finite partial is zero, so finite results are exact: only a non-finite
        one (rare) needs the statement-by-statement VJP to tell which it is.  The same
        holds for a max's or min's tie count: the adjoint compares recomputed values
        with the forward's result, and if the two came from different code (a native
        forward, a numpy adjoint) nothing ties and ``g * 0 / 0`` is nan; the
        statement-by-statement VJP recomputes the result with the values it compares."""
        if (all(present) and not self._has_counts) or all(
                r is None or np.isfinite(r).all() for r in results):
            return results
        return self._vjp_by_steps(grads, inputs, outputs)

    def _reached(self, present, results) -> tuple:
        """``results`` with None for each input that no present output gradient reaches:
        the kernel computes those from zeros (``0.0`` for an absent gradient), but
        unfused code gives them no gradient at all, and a number where an array's
        gradient is expected breaks the rule that receives it."""
        return tuple(None if not any(present[k] for k in sources) else r
                     for r, sources in zip(results, self._sources, strict=True))

    def _cast_to_forward(self, grads, outputs, inputs):
        """A max's or min's adjoint takes the road its forward took: its tie mask compares
        the recomputed values with the forward's result, so both must come from the same
        code (numpy's tanh is not libmvec's).  When the forward ran natively but a gradient
        has another dtype, the gradients are cast to the kernel's.  Returns
        ``(values, layout)``; layout None if the forward ran numpy."""
        forward = self._native_layout(inputs)
        if forward is None:
            return (*grads, *outputs, *inputs), None
        dtype = forward[0]
        grads = [g if type(g) is float else np.asarray(g, dtype) for g in grads]
        values = (*grads, *outputs, *inputs)
        return values, _layout(values)

    def _sum_seed(self, g, inputs):
        """A trailing mean's gradient as the gradient of the sum the programs compute."""
        reduction = self.forward_program[3]
        if reduction is None or reduction[2] == "sum":
            return g
        return g / self._shapes(inputs)[1]

    def _finish(self, value, shape):
        """A native reduction's value (a Python float): the sum, max or min itself, the
        mean from the sum, the norm from the sum of squares."""
        kind = self.forward_program[3][2]
        if kind == "mean":
            return value / int(np.prod(shape))
        if kind == "norm":
            return math.sqrt(value)
        return value

    def _vjp_by_steps(self, grads, inputs, outputs, as_sum=False):
        """The VJP statement by statement with the primitives' own rules (irregular shapes).
        ``as_sum``: treat a trailing mean's gradient as its sum's (for ``with_gradient``).

        Inputs outside ``self.reads`` may be stand-ins (``support.like``: right shape and
        dtype, no values): the statements are recomputed from them all the same (errors
        ignored), which gives every intermediate its shape, and the values the rules read
        are exact: each is computed from read inputs only, or is a read output, taken as
        the forward computed it."""
        from . import support

        names = self.forward_program[0]
        env = dict(zip(names, inputs, strict=True))
        given = {name: value for name, value in zip(self.adjoint_program[1], outputs,
                                                      strict=False) if name in self.reads}
        for target, prim_name, operands in self.steps:
            if target in given:
                env[target] = given[target]
                continue
            values = [_value(o, env) for o in operands]
            with np.errstate(all="ignore"):
                result = getattr(support.ops, prim_name)(*values)
            if type(result) is np.ndarray and not any(type(v) is np.ndarray for v in values):
                result = result.reshape(-1)[0]   # numbers stay (numpy) numbers, of their dtype
            env[target] = result
        outputs_names = self.adjoint_program[1]
        flowing = {}
        for name, g in zip(outputs_names, grads, strict=False):
            if g is not None:
                flowing[name] = g
        reduction = self.forward_program[3]
        if reduction is not None and reduction[0] in flowing:
            result, operand, kind = reduction
            seed = flowing.pop(result)
            if kind in ("sum", "mean"):
                if kind == "mean" and not as_sum:
                    seed = seed / np.size(env[operand])
                shape = np.shape(env[operand])
                part = np.broadcast_to(seed if shape else np.reshape(seed, ()), shape)
            else:   # the primitive's own rule, which reads the result
                value = env[operand]
                part = primitives.REGISTRY[kind].vjps[0](
                    seed, getattr(support.ops, kind)(value), value)
            flowing[operand] = support.add_grads(flowing.get(operand), part)
        for target, prim_name, operands in reversed(self.steps):
            g = flowing.pop(target, None)
            if g is None:
                continue
            prim = primitives.REGISTRY[prim_name]
            values = [_value(o, env) for o in operands]
            for i, operand in enumerate(operands):
                if operand in env and prim.vjps[i] is not None:
                    part = prim.vjps[i](g, env[target], *values)
                    flowing[operand] = support.add_grads(flowing.get(operand), part)
        return tuple(flowing.get(name) for name in names)

    # ----- native road ----------------------------------------------------------------------
    #: False for the kernels of a ``pb.compile(native=False)`` function: numpy only.
    native_allowed = True

    def _native_layout(self, values):
        if _lowering is None or not self.native_allowed:
            return None
        for v in values:
            if type(v) is np.ndarray and v.size >= NATIVE_MIN_SIZE:
                break
        else:
            return None
        if not native.native_enabled():
            return None
        return _layout(values)

    def _native_adjoint(self, layout):
        """(counting pass or None, adjoint) for ``layout``, or None if either cannot be
        built."""
        adjoint = self._native_kernel("adjoint", layout)
        if adjoint is None or not self._has_counts:
            return None if adjoint is None else (None, adjoint)
        counting = self._native_kernel("counts", layout)
        return None if counting is None else (counting, adjoint)

    def _native_kernel(self, which, layout):
        key = (which, layout[0].name, layout[2])
        if key not in self._native:
            try:
                spec = self._spec(which, layout[0].name, layout[2])
                self._native[key] = native.compile_kernel(spec, _lowering(spec),
                                                          self.object_directory)
            except native.KernelSpecError:
                self._native[key] = None
        return self._native[key]

    def _spec(self, which, dtype, kinds):
        """The KernelSpec of one native kernel: "forward", "adjoint", "counts" (the adjoint's
        first pass, when it has ``count_equal`` statements) or ("gradient", wanted)."""
        extra_scalars = ()
        if isinstance(which, tuple):   # ("gradient", wanted): the one-pass kernel
            params, statements, results, reduction = self.gradient_program
            outputs, reductions = _gradient_outputs(results, kinds, which[1])
            reductions += ((reduction[1], "sum"),)
        elif which == "forward":
            params, statements, outputs, reduction = self.forward_program
            reductions = ()
            if reduction is not None:
                outputs = tuple(o for o in outputs if o != reduction[0])
                extra, reductions = _native_reduction(reduction, params, statements)
                statements = (*statements, *extra)
        else:
            grads, outs, inputs, statements, results = self.adjoint_program
            params = (*grads, *outs, *inputs)
            counts = _counts(statements)
            if which == "counts":
                outputs = ()
                statements, reductions = _counting_pass(params, statements, counts)
            else:   # the counts come in as scalars
                statements = tuple((t, e) for t, e in statements if t not in counts)
                extra_scalars = tuple(counts)
                input_kinds = kinds[len(grads) + len(outs):]
                outputs, reductions = _gradient_outputs(results, input_kinds)
        if which in ("adjoint", "counts"):   # only the values it reads (see __init__)
            params, kinds = self._kept(params, kinds)
        arrays = tuple(p for p, k in zip(params, kinds, strict=True) if k == "a")
        scalars = tuple(p for p, k in zip(params, kinds, strict=True) if k == "s")
        return native.KernelSpec(dtype, arrays, (*scalars, *extra_scalars),
                                 _without_spread(statements), outputs, reductions)

    def _kept(self, values, kinds) -> tuple:
        """``(values, kinds)`` the native adjoint takes: the read ones, and the first array
        if none of them is one (an array sets the kernel's length)."""
        keep = list(self._adjoint_keep)
        if not any(k == "a" for k, kept in zip(kinds, keep, strict=True) if kept) \
                and "a" in kinds:
            keep[kinds.index("a")] = True
        return (tuple(v for v, kept in zip(values, keep, strict=True) if kept),
                tuple(k for k, kept in zip(kinds, keep, strict=True) if kept))

    @staticmethod
    def _split(values, kinds):
        arrays = [v.reshape(-1) for v, k in zip(values, kinds, strict=True) if k == "a"]
        scalars = [float(np.reshape(v, -1)[0]) if type(v) is np.ndarray else float(v)
                   for v, k in zip(values, kinds, strict=True) if k == "s"]
        return arrays, scalars

    def _run(self, kernel, inputs, layout):
        dtype, shape, kinds = layout
        arrays, scalars = self._split(inputs, kinds)
        produced = kernel.call(*arrays, *scalars)
        _, _, outputs, reduction = self.forward_program
        if reduction is None:
            return tuple(o.reshape(shape) for o in produced)
        arrays_out = iter(produced[:-1])
        value = self._finish(produced[-1], shape)
        return tuple(np.full(1, value, dtype) if name == reduction[0]
                     else next(arrays_out).reshape(shape) for name in outputs)

    def _run_vjp(self, kernels, values, layout):
        """The native adjoint: the counting pass first if there is one (its sums are the
        adjoint's last scalars), then the adjoint."""
        dtype, shape, kinds = layout
        arrays, scalars = self._split(*self._kept(values, kinds))
        counting, adjoint = kernels
        if counting is not None:
            scalars += counting.call(*arrays, *scalars)
        grads, outs, _, _, results = self.adjoint_program
        first = len(grads) + len(outs)
        return _gradients_of(adjoint.call(*arrays, *scalars), results, values[first:],
                             kinds[first:], shape, dtype)

    def __repr__(self) -> str:
        return f"<fused kernel {self.name}>"
