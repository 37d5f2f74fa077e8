"""Transcendental calls of a ``for`` loop computed ahead (compiler/lower_loops.py).

A call like ``np.sin(x * i)`` whose argument is built from the loop's index and values the
loop never assigns is computed by libmvec four iterations at a time, into a buffer
refilled every ``BATCH`` iterations.  What can go wrong, and is checked here against the
Python road (``PULLBACK_NATIVE=0``: glibc's scalar libm, so within libmvec's ulp) and
central differences in float64:

- trip counts around the lane width and the batch (0, 1, 3, 4, 5, 63, 64, 65, 129, ...);
- ranges with a start, a step, a negative step, ``reversed``; the adjoint's reversed loop;
- a nested loop whose invariants change between its runs (the buffer must be refilled
  each time the loop is entered, not reused from the previous run);
- a value the loop assigns (before or after the call, or the index itself reassigned):
  never computed ahead -- the IR keeps the scalar call;
- calls under a branch; loops with ``break``, ``continue`` and an early ``return`` (while
  loops after normalisation: scalar calls);
- non-finite arguments (inf, nan) and an index beyond 2**53 (the iteration's own exact
  int-to-float check still sends the call to the Python road).
"""

import math
import sys

import numpy as np
import pytest

import pullback as pb
from pullback.compiler import infer
from pullback.compiler.api import _built_variant
from pullback.compiler.ir import function_ir
from pullback.compiler.lower_function import lower_function
from pullback.compiler.lower_loops import BATCH, MAX_SITES
from pullback.compiler.lower_arrays import has_vector_libm
from tape_helpers import central_gradient

LIBMVEC = has_vector_libm("sin") and has_vector_libm("cos")
needs_libmvec = pytest.mark.skipif(not LIBMVEC, reason="no AVX2 libmvec on this CPU: "
                                   "the loop keeps scalar libm (checked by the roads tests)")
RTOL = 1e-12


def sin_sum(x, y, n):
    s = 0.0
    for i in range(n):
        s = s + np.sin(x * i) * y
    return s


def several(x, y, n):
    s = 0.0
    for i in range(n):
        s = s + np.exp(-x * i * 0.01) * np.cos(y + i) - np.log(1.0 + x * x + i)
    return s * y


def stepped(x, y, n):
    s = 0.0
    for i in range(3, n, 2):
        s = s + np.sin(x * i + y)
    for j in range(n, -n, -3):
        s = s * 0.5 + np.cos(y * j)
    for k in reversed(range(n)):
        s = s + np.tanh(x - k * 0.1) * y
    return s


def nested_changing_invariant(x, y, n):
    s = 0.0
    for i in range(n):
        a = x * (i + 1)          # assigned by the outer loop, fixed inside the inner one
        for j in range(i + 2):
            s = s + np.sin(a * j) * y
    return s


def assigned_after_the_call(x, y, n):
    s = 0.0
    z = x
    for i in range(n):
        s = s + np.sin(z * i)    # z changes every iteration: never computed ahead
        z = z + y * 0.01
    return s


def augmented_after_the_call(x, y, n):
    s = 0.0
    c = 0.0
    for i in range(n):
        s = s + np.cos(x * i + c)
        c += y * 0.01
    return s


def index_reassigned(x, y, n):
    s = 0.0
    for i in range(n):
        i = i * 2
        s = s + np.sin(x * i) * y
    return s


def carried_argument(x, y, n):
    s = x
    for i in range(n):
        s = 0.5 * s + np.sin(s + x * i) * y * 0.1   # depends on the carried s: scalar call
    return s


def branches(x, y, n):
    s = 0.0
    for i in range(n):
        if i % 3 == 0:
            s = s + np.sin(x * i) * y
        elif s > 0.5:
            s = s - np.cos(x * i)
        else:
            s = s * 0.9
    return s


def break_and_continue(x, y, n):
    s = 0.0
    for i in range(n):
        if i % 3 == 1:
            continue
        s = s + np.sin(x * i) * y
        if s > 1e6:
            break
    return s


def early_return(x, y, n):
    s = 0.0
    for i in range(n):
        s = s + np.exp(np.sin(x * i)) * y
        if s > 40.0:
            return s * x
    return s


FUNCTIONS = [sin_sum, several, stepped, nested_changing_invariant, assigned_after_the_call,
             augmented_after_the_call,
             index_reassigned, carried_argument, branches, break_and_continue, early_return]
#: whether a call is computed ahead; a loop with break, continue or return is a while loop
#: over the sequence after normalisation (its adjoint pops the index): scalar calls
AHEAD = {"sin_sum": True, "several": True, "stepped": True, "nested_changing_invariant": True,
         "assigned_after_the_call": False, "augmented_after_the_call": False,
         "index_reassigned": False,
         "carried_argument": False, "branches": True, "break_and_continue": False,
         "early_return": False}
COUNTS = (0, 1, 2, 3, 4, 5, 7, 63, 64, 65, 127, 129, 300)


def _ir(fn, args, argnums=(0, 1)):
    variant = _built_variant(fn, argnums)
    name = variant._forward.__name__[:-len("_forward")]
    forward, adjoint = function_ir(variant.source, name)
    types = tuple(infer.argument_type(a) for a in args)
    typing = infer.infer(forward, adjoint, variant._forward.__globals__, types, variant)
    return lower_function(forward, adjoint, typing)[0]


def _value_and_grads(fn, args, monkeypatch, native):
    monkeypatch.setenv("PULLBACK_NATIVE", "1" if native else "0")
    value, grads = pb.value_and_grad(fn, (0, 1))(*args)
    monkeypatch.delenv("PULLBACK_NATIVE")
    return [float(value), *map(float, grads)]


def _close(a, b, rtol=RTOL):
    for p, q in zip(a, b, strict=True):
        assert (math.isnan(p) and math.isnan(q)) or p == pytest.approx(q, rel=rtol, abs=1e-12)


@needs_libmvec
@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_the_ir_computes_ahead_exactly_what_it_may(fn):
    text = _ir(fn, (0.3, 0.7, 10))
    assert ("_ZGVdN4v_" in text) == AHEAD[fn.__name__], text[:2000]


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("n", COUNTS)
def test_native_equals_python_road(fn, n, monkeypatch):
    args = (0.3, 0.7, n)
    native = _value_and_grads(fn, args, monkeypatch, True)
    assert "native" in pb.explain(fn, *args, argnums=(0, 1))
    python = _value_and_grads(fn, args, monkeypatch, False)
    _close(native, python)


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("n", (5, 66))
def test_native_gradient_equals_central_differences(fn, n, monkeypatch):
    args = (0.03, 0.7, n)   # small x: sin(x * i * j) stays smooth enough for differences
    native = _value_and_grads(fn, args, monkeypatch, True)
    for k in (0, 1):
        expected = central_gradient(fn, args, k)
        assert native[1 + k] == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_each_entry_of_a_nested_loop_refills_its_buffer(monkeypatch):
    # the inner loop's argument a*j changes with the outer i: a stale buffer would reuse the
    # previous run's sines.  Exact reference by plain Python:
    def reference(x, y, n):
        return sum(math.sin(x * (i + 1) * j) * y for i in range(n) for j in range(i + 2))

    for n in (1, 3, BATCH + 3):
        got = _value_and_grads(nested_changing_invariant, (0.3, 0.7, n), monkeypatch, True)
        assert got[0] == pytest.approx(reference(0.3, 0.7, n), rel=1e-12, abs=1e-12)


def test_many_batches_equal_plain_python(monkeypatch):
    n = 5 * BATCH + 7
    got = _value_and_grads(sin_sum, (0.5, 1.3, n), monkeypatch, True)
    i = np.arange(n, dtype=np.float64)
    assert got[0] == pytest.approx(float(np.sum(np.sin(0.5 * i)) * 1.3), rel=1e-12)
    assert got[1] == pytest.approx(float(np.sum(np.cos(0.5 * i) * i) * 1.3), rel=1e-12)
    assert got[2] == pytest.approx(float(np.sum(np.sin(0.5 * i))), rel=1e-12)


@pytest.mark.parametrize("x", (math.inf, -math.inf, math.nan, 1e300, -0.0))
def test_non_finite_and_huge_arguments(x, monkeypatch):
    args = (x, 0.7, 9)
    with np.errstate(all="ignore"):
        native = _value_and_grads(several, args, monkeypatch, True)
        python = _value_and_grads(several, args, monkeypatch, False)
    _close(native, python)


def shifted(x, y, start):
    s = 0.0
    for i in range(start, start + 6):
        s = s + np.sin(x * i) * y
    return s


def test_an_index_beyond_exact_floats_still_takes_the_python_road(monkeypatch):
    # i + 2**53 converts inexactly: the iteration's own check sends the call to the Python
    # road (whose ints are exact Python ints), whatever the buffer computed ahead
    start = (1 << 53) - 3
    native = _value_and_grads(shifted, (1e-16, 0.7, start), monkeypatch, True)
    python = _value_and_grads(shifted, (1e-16, 0.7, start), monkeypatch, False)
    assert native == python


def many_sites(x, y, n):
    s = 0.0
    for i in range(n):
        s = (s + np.sin(x * i) + np.sin(x * i + 0.1) + np.sin(x * i + 0.2)
             + np.sin(x * i + 0.3) + np.sin(x * i + 0.4) + np.sin(x * i + 0.5)
             + np.sin(x * i + 0.6) + np.sin(x * i + 0.7) + np.sin(x * i + 0.8)
             + np.sin(x * i + 0.9) + np.sin(x * i + 1.0) * y)
    return s


@needs_libmvec
def test_at_most_max_sites_per_function(monkeypatch):
    # 11 sines forward and 11 (sin's derivative cos) in the adjoint: 22 candidates
    text = _ir(many_sites, (0.3, 0.7, 10))
    assert text.count('call <4 x double> @"_ZGVdN4v_') == MAX_SITES
    native = _value_and_grads(many_sites, (0.3, 0.7, 70), monkeypatch, True)
    python = _value_and_grads(many_sites, (0.3, 0.7, 70), monkeypatch, False)
    _close(native, python)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
