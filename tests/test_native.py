"""The native kernel backend: lowering (compiler/lower.py) and runtime (runtime/native.py).

Accuracy.  A kernel is checked against ``reference``, a numpy interpreter of the
same scalar language (numpy's functions, numpy's dtype rules, the runtime's own
``sigmoid`` forward).  Alone, each function must be within 4 ulp (float64) or
2 ulp (float32) of numpy; for float32, where numpy's own function is further
than that from the correctly rounded value (its float32 log is up to 3 ulp
off), being within 1 ulp of correctly rounded also passes.  A composite
expression (a derivative, a fused kernel) only differs from numpy through its
math-library calls, since the kernels' arithmetic is IEEE and unfused: its
tolerance is the sum, over those calls, of how much moving the call's numpy
result by 4 ulp moves the expression (``tolerance``), plus 4 / 2 ulp.  NaN
must appear exactly where numpy gives NaN.

Determinism.  Every element goes through the same vector code: results are
bit-identical for any array length and position (``test_position_and_length``),
and reductions for any thread count.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from pullback.compiler.api import CompiledFunction
from pullback.compiler.lower import lower
from pullback.runtime import native
from pullback.runtime.native import (
    CHUNK,
    KernelSpec,
    KernelSpecError,
    NativeCacheWarning,
    compile_kernel,
)
from pullback.runtime.primitives import _sigmoid_forward

import pullback as pb
import pullback.ndarray as nd
from pullback.testing import check_grads

pytestmark = pytest.mark.skipif(not native.native_enabled(), reason="native kernels disabled")

ROOT = Path(__file__).resolve().parents[1]
DTYPES = ("float64", "float32")
ULPS = {"float64": 4, "float32": 2}

# ----- the numpy reference ----------------------------------------------------------------

NUMPY = {
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "sin": np.sin, "cos": np.cos,
    "tan": np.tan, "tanh": np.tanh, "log1p": np.log1p, "expm1": np.expm1, "pow": np.power,
    "fabs": np.abs, "sign": np.sign, "floor": np.floor, "ceil": np.ceil, "round": np.round,
    "max": np.maximum, "min": np.minimum, "sigmoid": _sigmoid_forward,
    "where": lambda c, a, b: np.where(c != 0, a, b),
    # numpy coverage (issue 11 item 5)
    "sinh": np.sinh, "cosh": np.cosh, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan,
    "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh, "log2": np.log2,
    "log10": np.log10, "exp2": np.exp2, "cbrt": np.cbrt, "atan2": np.arctan2,
    "hypot": np.hypot, "logaddexp": np.logaddexp,
}
COVERAGE = {"sinh", "cosh", "asin", "acos", "atan", "asinh", "acosh", "atanh", "log2", "log10",
            "exp2", "cbrt", "atan2", "hypot", "logaddexp"}
LIBRARY = {"exp", "log", "sin", "cos", "tan", "tanh", "log1p", "expm1", "pow", "sigmoid",
           *COVERAGE}
#: functions lowered as formulas of library calls (numpy computes them the same way, so the
#: tolerance is what each inner call's ulps can move the result: logaddexp cancels when the
#: result is near 0)
EXPANDED = {"logaddexp": "where(x == y, x + 0.6931471805599453, "
                         "max(x, y) + log1p(exp(-fabs(x - y))))"}
EXACT_EXPONENTS = {2.0, 0.5, -1.0, 1.0, 0.0}
BINARY = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide,
          ast.Pow: np.power}
COMPARE = {ast.Eq: np.equal, ast.NotEq: np.not_equal, ast.Lt: np.less, ast.LtE: np.less_equal,
           ast.Gt: np.greater, ast.GtE: np.greater_equal}


class Reference:
    """Evaluates a KernelSpec with numpy; ``nudge=(k, ulps)`` moves the k-th math-library
    call's result by ``ulps`` ulp (to measure how the expression reacts)."""

    def __init__(self, spec: KernelSpec, nudge=None):
        self.spec, self.nudge, self.calls = spec, nudge, 0
        self.kind = np.dtype(spec.dtype).type

    def run(self, arrays, scalars):
        env = dict(zip(self.spec.arrays, arrays, strict=True))
        env.update({s: self.kind(v) for s, v in zip(self.spec.scalars, scalars, strict=True)})
        n = len(arrays[0])
        with np.errstate(all="ignore"):
            for target, text in self.spec.statements:
                value = self.eval(ast.parse(text.strip(), mode="eval").body, env)
                env[target] = np.broadcast_to(np.asarray(value, self.spec.dtype), (n,))
        outputs = [np.array(env[name]) for name in self.spec.outputs]
        return outputs, env

    def library(self, value):
        k, self.calls = self.calls, self.calls + 1
        if self.nudge is None or self.nudge[0] != k:
            return value
        value = np.asarray(value, self.spec.dtype)
        step = np.where(np.isfinite(value), np.spacing(value.astype(self.spec.dtype)), 0)
        return value + self.nudge[1] * np.abs(step)

    def eval(self, node, env):
        kind = type(node)
        if kind is ast.Name:
            return env[node.id]
        if kind is ast.Constant:
            return self.kind(node.value)
        if kind is ast.UnaryOp:
            value = self.eval(node.operand, env)
            return -value if isinstance(node.op, ast.USub) else value
        if kind is ast.Compare:
            holds = COMPARE[type(node.ops[0])](self.eval(node.left, env),
                                               self.eval(node.comparators[0], env))
            return np.asarray(holds, self.spec.dtype)
        if kind is ast.BinOp:
            left, right = self.eval(node.left, env), self.eval(node.right, env)
            result = BINARY[type(node.op)](left, right)
            if isinstance(node.op, ast.Pow) and _literal(node.right) not in EXACT_EXPONENTS:
                return self.library(result)
            return result
        name = node.func.id
        if name in EXPANDED:   # a lowering that is a formula: its own library calls count
            x, y = node.args
            formula = ast.parse(EXPANDED[name], mode="eval").body
            return self.eval(formula, {**env, "x": self.eval(x, env), "y": self.eval(y, env)})
        args = [self.eval(a, env) for a in node.args]
        result = NUMPY[name](*args)
        if name in LIBRARY and not (name == "pow" and _literal(node.args[1]) in EXACT_EXPONENTS):
            return self.library(result)
        return result


def _literal(node):
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand)
        return None if value is None else -value
    return float(node.value) if isinstance(node, ast.Constant) else None


def ulp_distance(a, b) -> np.ndarray:
    """Distance in units in the last place; both NaN is 0, one NaN is huge."""
    a, b = np.asarray(a), np.asarray(b)
    ints = np.int64 if a.dtype == np.float64 else np.int32
    ia, ib = a.view(ints).astype(np.int64), b.view(ints).astype(np.int64)
    lowest = np.iinfo(ints).min
    ia = np.where(ia < 0, lowest - ia, ia)
    ib = np.where(ib < 0, lowest - ib, ib)
    distance = np.abs(ia - ib)
    distance[np.isnan(a) & np.isnan(b)] = 0
    distance[np.isnan(a) ^ np.isnan(b)] = 1 << 40
    return distance


def tolerance(spec, arrays, scalars, expected) -> list:
    """Per output: how far the kernel may be from numpy (see the module docstring)."""
    probe = Reference(spec)
    probe.run(arrays, scalars)
    total = [np.zeros(len(arrays[0])) for _ in spec.outputs]
    for k in range(probe.calls):
        reaction = [np.zeros(len(arrays[0])) for _ in spec.outputs]
        for direction in (4, -4):
            moved, _ = Reference(spec, (k, direction)).run(arrays, scalars)
            for r, m, e in zip(reaction, moved, expected, strict=True):
                with np.errstate(all="ignore"):
                    delta = np.abs(m.astype(np.float64) - e.astype(np.float64))
                r[...] = np.maximum(r, np.where(np.isfinite(delta), delta, 0))
        for t, r in zip(total, reaction, strict=True):
            t += r
    return total


def check_against_numpy(spec, arrays, scalars=(), kernel=None):
    kernel = kernel or build(spec)
    got = kernel(*arrays, *scalars)[: len(spec.outputs)]
    reference = Reference(spec)
    expected, _ = reference.run(arrays, scalars)
    allowed = tolerance(spec, arrays, scalars, expected)
    for name, g, e, t in zip(spec.outputs, got, expected, allowed, strict=True):
        assert g.dtype == np.dtype(spec.dtype)
        np.testing.assert_array_equal(np.isnan(g), np.isnan(e), err_msg=f"NaNs of {name}")
        if reference.calls == 0:
            # No math-library call: IEEE arithmetic, so bit for bit (signed zeros too).
            same = (g.tobytes() == e.tobytes()) or np.array_equal(
                np.where(np.isnan(g), 0, g).view(g.dtype.str.replace("f", "i")),
                np.where(np.isnan(e), 0, e).view(e.dtype.str.replace("f", "i")))
            assert same, f"{name} ({spec.dtype}) differs from numpy's exact result"
            continue
        ulps = ulp_distance(g, e)
        with np.errstate(all="ignore"):
            within = np.abs(g.astype(np.float64) - e.astype(np.float64)) <= t
        ok = (ulps <= ULPS[spec.dtype]) | within
        if spec.dtype == "float32" and not ok.all():
            ok |= ulp_distance(g, _correctly_rounded(spec, arrays, scalars, name)) <= 1
        bad = np.flatnonzero(~ok)
        assert bad.size == 0, (
            f"{name} = {dict(spec.statements).get(name, name)}"
            f" ({spec.dtype}): {bad.size} elements off, e.g. input "
            f"{[a[bad[0]] for a in arrays]} -> native {g[bad[0]]!r}, numpy {e[bad[0]]!r} "
            f"({ulps[bad[0]]} ulp, tolerance {t[bad[0]]:.3g})")


def _correctly_rounded(spec, arrays, scalars, name):
    wide = KernelSpec("float64", spec.arrays, spec.scalars, spec.statements, spec.outputs)
    outputs, _ = Reference(wide).run([a.astype(np.float64) for a in arrays], scalars)
    return outputs[spec.outputs.index(name)].astype(spec.dtype)


_BUILT: dict = {}


def build(spec, **options):
    key = (spec, tuple(sorted(options.items())))
    if key not in _BUILT:
        _BUILT[key] = compile_kernel(spec, lower(spec, **options))
    return _BUILT[key]


# ----- inputs -------------------------------------------------------------------------------

def wide_inputs(dtype: str, n_random: int = 6000, seed: int = 0) -> np.ndarray:
    """Specials (0, -0, tiny, huge, +-inf, NaN, ties), then random values of every
    magnitude and many values in [-20, 20]."""
    info = np.finfo(dtype)
    specials = [0.0, -0.0, info.smallest_subnormal, -info.smallest_subnormal,
                info.smallest_normal, -info.smallest_normal, info.max, -info.max, np.inf,
                -np.inf, np.nan, 1.0, -1.0, 0.5, -0.5, 1.5, 2.5, -2.5, 3.0, 1e-8, -1e-8,
                np.log(info.max), -np.log(info.max), 700.0, 89.0, -745.0, -104.0, 1e5, 1e22]
    rng = np.random.default_rng(seed)
    exponents = rng.uniform(np.log2(info.smallest_normal), np.log2(info.max), n_random)
    magnitudes = np.exp2(exponents) * rng.choice([-1.0, 1.0], n_random)
    near = rng.uniform(-20, 20, n_random)
    small = rng.uniform(-1.5, 1.5, n_random)
    with np.errstate(over="ignore"):
        return np.concatenate([specials, magnitudes, near, small]).astype(dtype)


def second_inputs(x: np.ndarray, seed: int = 1) -> np.ndarray:
    """A second argument: a shuffle of x with some ties and small exponents mixed in."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(x)
    y[::7] = x[::7]                                  # ties for max/min/comparisons
    y[1::5] = rng.uniform(-4, 4, len(y[1::5])).round(1)
    return y


# ----- every function and its derivative --------------------------------------------------

#: name -> (value, derivative) in the scalar language, over x (and y, a).
FUNCTIONS = {
    "exp": ("exp(x)", "exp(x)"),
    "log": ("log(x)", "1 / x"),
    "sqrt": ("sqrt(x)", "0.5 / sqrt(x)"),
    "sin": ("sin(x)", "cos(x)"),
    "cos": ("cos(x)", "-sin(x)"),
    "tan": ("tan(x)", "1 + tan(x) ** 2"),
    "tanh": ("tanh(x)", "1 - tanh(x) ** 2"),
    "sigmoid": ("sigmoid(x)", "sigmoid(x) * (1 - sigmoid(x))"),
    "log1p": ("log1p(x)", "1 / (1 + x)"),
    "expm1": ("expm1(x)", "exp(x)"),
    "pow": ("pow(x, y)", "y * pow(x, y - 1)"),
    "pow_y": ("pow(x, y)", "pow(x, y) * log(where(x > 0, x, 1))"),
    "pow_scalar": ("x ** a", "a * x ** (a - 1)"),
    "cube": ("x ** 3", "3 * x ** 2"),
    "square": ("x ** 2", "2 * x"),
    "root": ("x ** 0.5", "0.5 * x ** -0.5"),
    "reciprocal": ("x ** -1", "-(x ** -2)"),
    "fabs": ("fabs(x)", "sign(x)"),
    "sign": ("sign(x)", "0 * x"),
    "floor": ("floor(x)", "0 * x"),
    "ceil": ("ceil(x)", "0 * x"),
    "round": ("round(x)", "0 * x"),
    "max": ("max(x, y)", "where(x >= y, 1, 0)"),
    "min": ("min(x, y)", "where(x <= y, 1, 0)"),
    "relu": ("max(x, 0)", "x > 0"),
    "where": ("where(x > y, x * y, x - y)", "where(x > y, y, 1)"),
    "where_nan": ("where(x, y, -y)", "where(x, 1, -1) + 0 * y"),
    "add": ("x + y", "1 + 0 * x"),
    "subtract": ("x - y", "-1 + 0 * y"),
    "multiply": ("x * y", "y"),
    "divide": ("x / y", "-x / (y * y)"),
    "negative": ("-x", "-1 + 0 * x"),
    "compare": ("(x < y) + (x <= y) + (x > y) + (x >= y) + (x == y) + (x != y)", "x != x"),
    # numpy coverage (issue 11 item 5): the table's derivatives
    "sinh": ("sinh(x)", "cosh(x)"),
    "cosh": ("cosh(x)", "sinh(x)"),
    "asin": ("asin(x)", "1 / sqrt(1.0 - x * x)"),
    "acos": ("acos(x)", "-(1 / sqrt(1.0 - x * x))"),
    "atan": ("atan(x)", "1 / (1.0 + x * x)"),
    "asinh": ("asinh(x)", "1 / hypot(x, 1.0)"),
    "acosh": ("acosh(x)", "1 / (sqrt(x - 1.0) * sqrt(x + 1.0))"),
    "atanh": ("atanh(x)", "1 / ((1.0 - x) * (1.0 + x))"),
    "log2": ("log2(x)", "1 / (x * 0.6931471805599453)"),
    "log10": ("log10(x)", "1 / (x * 2.302585092994046)"),
    "exp2": ("exp2(x)", "exp2(x) * 0.6931471805599453"),
    "cbrt": ("cbrt(x)", "1 / (3.0 * (cbrt(x) * cbrt(x)))"),
    "atan2": ("atan2(x, y)", "y / (x * x + y * y)"),
    "hypot": ("hypot(x, y)", "x / hypot(x, y)"),
    "logaddexp": ("logaddexp(x, y)", "exp(x - logaddexp(x, y))"),
    "sinc": ("sin(3.141592653589793 * where(x == 0.0, 1e-20, x)) / "
             "(3.141592653589793 * where(x == 0.0, 1e-20, x))",
             "where(fabs(x) < 0.01, x * (-3.289868133696453 + x * x * "
             "(3.246969701133414 + x * x * -1.144510944732505)), "
             "(cos(3.141592653589793 * x) - sin(3.141592653589793 * where(x == 0.0, 1e-20, x))"
             " / (3.141592653589793 * where(x == 0.0, 1e-20, x)))"
             " / where(fabs(x) < 0.01, 1.0, x))"),
}


def _spec(dtype, statements, outputs):
    names = set()
    for _, text in statements:
        names |= {n.id for n in ast.walk(ast.parse(text, mode="eval")) if isinstance(n, ast.Name)}
    arrays = tuple(a for a in ("x", "y") if a in names)
    scalars = ("a",) if "a" in names else ()
    return KernelSpec(dtype, arrays, scalars, tuple(statements), tuple(outputs))


def function_specs(name, dtype):
    """The function alone, its derivative alone, and both fused in one kernel."""
    value, derivative = FUNCTIONS[name]
    return {
        "alone": _spec(dtype, [("f", value)], ["f"]),
        "derivative": _spec(dtype, [("df", derivative)], ["df"]),
        "fused": _spec(dtype, [("f", value), ("df", derivative), ("both", "f * df")],
                       ["f", "df", "both"]),
    }


def arguments(spec, x):
    arrays = [x if name == "x" else second_inputs(x) for name in spec.arrays]
    return arrays, [2.5][: len(spec.scalars)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_and_derivative_match_numpy(name, dtype):
    x = wide_inputs(dtype)
    for spec in function_specs(name, dtype).values():
        arrays, scalars = arguments(spec, x)
        check_against_numpy(spec, arrays, scalars)


@pytest.mark.parametrize("exponent", [2.0, 0.5, -1.0, 1.0, 0.0, 3.0, -2.5])
def test_scalar_exponent_takes_numpys_shortcuts(exponent):
    for dtype in DTYPES:
        x = wide_inputs(dtype, n_random=500)
        spec = _spec(dtype, [("f", "x ** a")], ["f"])
        kernel = build(spec)
        got = kernel(x, exponent)[0]
        with np.errstate(all="ignore"):
            expected = x ** exponent
        if exponent in EXACT_EXPONENTS:
            np.testing.assert_array_equal(got, expected)
        else:
            check_against_numpy(spec, [x], [exponent], kernel)


def _tanh_sweep(dtype: str, n: int, seed: int = 4) -> np.ndarray:
    """|x| at every scale, dense in [0, 1.2] (lower._tanh's 3-ulp cases are near 0.015) and
    through saturation in [0, 25], both signs."""
    rng = np.random.default_rng(seed)
    k = n // 4
    scales = np.exp2(rng.uniform(np.log2(np.finfo(dtype).smallest_normal), 10, k))
    x = np.concatenate([scales, rng.uniform(0, 1.2, k), rng.uniform(0, 25, k),
                        rng.uniform(0.3, 0.8, n - 3 * k)])
    return (x * rng.choice([-1.0, 1.0], n)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_edges_and_sweep(dtype):
    """tanh (float64: from libmvec's expm1, ``lower._tanh``) keeps numpy's signed zeros
    and NaN, is exactly +-1 from |x| = 20 on and never beyond, and stays within 4 / 2 ulp
    of numpy over a million values (measured: 3 ulp at most in float64)."""
    info = np.finfo(dtype)
    with np.errstate(over="ignore"):
        edges = np.array([0.0, -0.0, info.smallest_subnormal, -info.smallest_subnormal,
                          info.smallest_normal, 1e-300, -1e-20, 1e-8, 2.0 ** -28, 0.0156,
                          0.5493, -0.5493, 1.0, 9.0, 18.5, 19.06, -19.07, 20.0, -20.0,
                          20.000001, 22.0, 354.0, 710.0, 1e300, -1e300, info.max, -info.max,
                          np.inf, -np.inf, np.nan, -np.nan], dtype=dtype)
    kernel = build(_spec(dtype, [("f", "tanh(x)")], ["f"]))
    got, expected = kernel(edges)[0], np.tanh(edges)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.signbit(got[~np.isnan(got)]),
                                  np.signbit(expected[~np.isnan(expected)]))
    large = np.abs(edges) >= 20
    np.testing.assert_array_equal(got[large], np.sign(edges[large]))
    assert np.all(np.abs(got[~np.isnan(got)]) <= 1)
    assert ulp_distance(got, expected).max() <= ULPS[dtype]
    x = _tanh_sweep(dtype, 1_000_000)
    ulps = ulp_distance(kernel(x)[0], np.tanh(x))
    worst = int(np.argmax(ulps))
    assert ulps[worst] <= ULPS[dtype], f"tanh({x[worst]!r}) is {ulps[worst]} ulp from numpy"
    check_against_numpy(function_specs("tanh", dtype)["fused"], [x[:200_000]])


# ----- determinism -------------------------------------------------------------------------

LENGTHS = (1, 7, 8, 9, 1000, 100003)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["tanh", "sigmoid", "pow", "sin", "expm1", "log", "tan"])
def test_position_and_length(name, dtype):
    """Each value gives the same bits at every index, in arrays of every length."""
    spec = function_specs(name, dtype)["fused"]
    values = wide_inputs(dtype, n_random=20, seed=3)
    arrays, scalars = arguments(spec, values)
    kernel = build(spec)
    canonical = [np.stack([kernel(*[a[i:i + 1] for a in arrays], *scalars)[k][0]
                           for i in range(len(values))]) for k in range(len(spec.outputs))]
    for length in LENGTHS:
        for shift in (0, 3):
            index = (np.arange(length) + shift) % len(values)
            outputs = kernel(*[a[index] for a in arrays], *scalars)
            for got, want in zip(outputs, canonical, strict=True):
                assert got.tobytes() == want[index].tobytes(), (name, length, shift)


def _host_at(lanes: int, isa: str) -> native.Host:
    """This machine's host description, narrowed to another vector width."""
    host, libmvec = native.host(), native._load_libmvec()
    probe = native.Host(host.cpu, host.features, lanes, isa, frozenset(), host.mathlib)
    available = [frozenset(f for f in native.LIBM_FUNCTIONS
                           if libmvec is not None and hasattr(libmvec, probe.vector_symbol(f, s)))
                 for s in (False, True)]
    return native.Host(host.cpu, host.features, lanes, isa, available[0], host.mathlib,
                       available[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_scalar_libm_fallback_and_narrower_vectors(dtype):
    """Without libmvec (scalar libm per lane) and at AVX2 / SSE2 widths, results are
    still numpy's and still position-independent."""
    host = native.host()
    targets = [host] + [_host_at(lanes, isa) for lanes, isa in ((4, "d"), (2, "b"))
                        if lanes < host.lanes]
    x = wide_inputs(dtype, n_random=300)
    for name in ("tanh", "pow"):
        spec = function_specs(name, dtype)["fused"]
        arrays, scalars = arguments(spec, x)
        for target in targets:
            for vector_math in (True, False):
                kernel = build(spec, vector_math=vector_math, target=target)
                check_against_numpy(spec, arrays, scalars, kernel=kernel)
                single = [kernel(*[a[i:i + 1] for a in arrays])[0][0] for i in range(19)]
                np.testing.assert_array_equal(kernel(*[a[:19] for a in arrays])[0], single)


# ----- reductions, scalars, aliasing, layouts ----------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_reductions(dtype):
    spec = KernelSpec(dtype, ("x",), ("a",), (("y", "tanh(x) * a"),),
                      ("y",), (("y", "sum"), ("y", "max"), ("x", "min")))
    kernel = build(spec)
    rng = np.random.default_rng(5)
    for n in (1, 9, CHUNK - 1, CHUNK + 1, 100003):
        x = rng.standard_normal(n).astype(dtype)
        y, total, largest, smallest = kernel(x, 1.5)
        expected = np.tanh(x.astype(np.float64)) * 1.5
        bound = 8 * np.finfo(dtype).eps * np.abs(expected).sum() + 1e-300
        assert abs(total - expected.sum()) <= bound
        assert largest == float(y.max()) and smallest == float(x.min())
        assert type(total) is float
    x[17] = np.nan
    _, total, largest, smallest = kernel(x, 1.5)
    assert np.isnan(total) and np.isnan(largest) and np.isnan(smallest)


def test_reductions_do_not_depend_on_threads_or_path():
    spec = KernelSpec("float64", ("x",), (), (("y", "exp(-x * x) * sin(x)"),), (),
                      (("y", "sum"), ("y", "max")))
    kernel = build(spec)
    x = np.random.default_rng(6).standard_normal(300007)
    results = []
    try:
        for threads in (1, 2, 3):
            native.set_threads(threads)
            results.append(kernel(x))
            results.append(kernel.call(x))
    finally:
        native.set_threads(None)
    assert len({r for r in results}) == 1
    small = x[:3 * CHUNK + 5]
    fast = kernel(small)
    careful = kernel(small.astype(np.float32))      # a safe cast: the careful path
    assert fast == kernel(small.copy()) and careful != ()


def test_reduction_of_zero_elements():
    empty = np.zeros(0)
    total, = build(KernelSpec("float64", ("x",), (), (), (), (("x", "sum"),)))(empty)
    assert total == 0.0
    with pytest.raises(ValueError, match="zero elements"):
        build(KernelSpec("float64", ("x",), (), (), (), (("x", "max"),)))(empty)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scalars_broadcast(dtype):
    spec = _spec(dtype, [("f", "x * a + where(x > a, a, 2 * x) - a / 3")], ["f"])
    x = wide_inputs(dtype, n_random=200)
    kernel = build(spec)
    for a in (2.5, 3, np.float64(-1.25), np.float32(0.1), 0.1):
        expected, _ = Reference(spec).run([x], [float(a)])
        np.testing.assert_array_equal(kernel(x, a)[0], expected[0])


def test_in_place_and_overlap():
    spec = _spec("float64", [("f", "tanh(x) * y + 1")], ["f"])
    kernel = build(spec)
    x = np.random.default_rng(7).standard_normal(1001)
    y = second_inputs(x)
    expected, = kernel(x, y)
    for alias in ("x", "y"):
        buffers = {"x": x.copy(), "y": y.copy()}
        result, = kernel(buffers["x"], buffers["y"], out=(buffers[alias],))
        assert result is buffers[alias]
        np.testing.assert_array_equal(result, expected)
    # Output overlapping an input shifted by one element: the input is copied first.
    buffer = np.concatenate([x, [0.0]])
    kernel(buffer[:-1], y, out=(buffer[1:],))
    np.testing.assert_array_equal(buffer[1:], expected)


def test_non_contiguous_and_cast_inputs_are_copied():
    spec = _spec("float64", [("f", "exp(-x * x) + y")], ["f"])
    kernel = build(spec)
    base = np.random.default_rng(8).standard_normal((3, 2001))
    x, y = base[0, ::2], np.resize(base[:, 5], 1001)       # a strided view
    expected, = kernel(x.copy(), y.copy())
    np.testing.assert_array_equal(kernel(x, y)[0], expected)
    np.testing.assert_array_equal(kernel(x[::-1], y[::-1])[0], expected[::-1])
    ints = np.arange(10)
    floats = ints.astype(np.float64)
    np.testing.assert_array_equal(kernel(ints, ints)[0], kernel(floats, floats)[0])
    out = np.zeros(2 * len(x))[::2]
    kernel(x, y, out=(out,))
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(TypeError, match="float32"):
        build(_spec("float32", [("f", "x + 1")], ["f"]))(x)


def test_bad_arguments_are_reported():
    kernel = build(_spec("float64", [("f", "x + y")], ["f"]))
    with pytest.raises(TypeError, match="2 arrays"):
        kernel(np.zeros(3))
    with pytest.raises(ValueError, match="length"):
        kernel(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="1-d"):
        kernel(np.zeros((2, 2)), np.zeros((2, 2)))


@pytest.mark.parametrize("text, message", [
    ("tanhh(x)", "unknown function 'tanhh'"),
    ("tanh(x, x)", "tanh takes 1"),
    ("x +", "syntax error"),
    ("z * 2", "'z' is not an array"),
    ("x < x < x", "one comparison"),
    ("x % 2", "operator Mod"),
    ("x[0]", "Subscript is not part"),
])
def test_lowering_errors_point_at_the_construct(text, message):
    spec = KernelSpec("float64", ("x",), (), (("t", "x"), ("f", text)), ("f",))
    with pytest.raises(KernelSpecError, match=message) as error:
        lower(spec)
    assert "kernel statement 2" in str(error.value) and f"f = {text}" in str(error.value)


def test_spec_is_checked():
    with pytest.raises(KernelSpecError, match="defined twice"):
        KernelSpec("float64", ("x",), (), (("x", "x + 1"),), ("x",))
    with pytest.raises(KernelSpecError, match="never defined"):
        KernelSpec("float64", ("x",), (), (), ("y",))
    with pytest.raises(KernelSpecError, match="dtype"):
        KernelSpec("float16", ("x",), (), (), ("x",))


def test_kernel_ir_reads_like_the_spec():
    spec = KernelSpec("float64", ("x",), (), (("t", "tanh(x)"), ("g", "1 - t ** 2")), ("g",))
    text = lower(spec)
    assert '%"t" = call <' in text and '%"g" = fsub' in text
    assert "vector.body" in text and "tail.mask" in text
    assert " fast" not in text and "contract" not in text     # no fast-math anywhere
    vector_math = native.host().vector_math
    if "expm1" in vector_math:                # tanh from expm1 (lower._tanh)
        assert native.host().vector_symbol("expm1") in text and "_tanh" not in text
    elif "tanh" in vector_math:
        assert native.host().vector_symbol("tanh") in text


def test_native_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("PULLBACK_NATIVE", "0")
    assert not native.native_enabled()
    monkeypatch.setenv("PULLBACK_NATIVE", "1")
    assert native.native_enabled()


def test_compiled_once_per_process():
    spec = _spec("float64", [("f", "x * 3.25")], ["f"])
    text = lower(spec)
    assert compile_kernel(spec, text) is compile_kernel(spec, text)


# ----- the disk cache ----------------------------------------------------------------------

def test_unsafe_cache_directory_is_ignored_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("PULLBACK_CACHE_DIR", str(tmp_path))
    (tmp_path / "kernels").mkdir()
    os.chmod(tmp_path / "kernels", 0o777)
    factor = float(np.random.default_rng().integers(1 << 30)) + 0.5
    spec = _spec("float64", [("f", f"x * {factor!r}")], ["f"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kernel = compile_kernel(spec, lower(spec))
    assert [w.category for w in caught] == [NativeCacheWarning]
    assert "writable by other users" in str(caught[0].message)
    assert kernel.loaded_from == "compiled" and not list((tmp_path / "kernels").iterdir())
    np.testing.assert_array_equal(kernel(np.ones(3))[0], np.full(3, factor))


_CHILD = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np
    from pullback.compiler.lower import lower
    from pullback.runtime.native import KernelSpec, compile_kernel
    spec = KernelSpec("float64", ("x",), (), (("f", sys.argv[1]),), ("f",), (("f", "sum"),))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kernel = compile_kernel(spec, lower(spec))
    x = np.linspace(-2, 2, 1001)
    f, total = kernel(x)
    print(json.dumps({"how": kernel.loaded_from, "total": total, "first": f[0],
                      "warnings": [f"{w.category.__name__}: {w.message}" for w in caught]}))
""")


def _child(cache: Path, expression: str) -> subprocess.Popen:
    env = {**os.environ, "PULLBACK_CACHE_DIR": str(cache)}
    return subprocess.Popen([sys.executable, "-c", _CHILD, expression], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return json.loads(out)


def _objects(cache: Path) -> list:
    return sorted((cache / "kernels").glob("*.o"))


def _kernel_file(cache: Path, expression: str) -> Path:
    """The cache file of the child's kernel (the only one that is not the trampoline's)."""
    spec = KernelSpec("float64", ("x",), (), (("f", expression),), ("f",), (("f", "sum"),))
    key = native._engine().cache_key(lower(spec))
    return cache / "kernels" / f"{key}.o"


@pytest.mark.parametrize("damage", ["corrupted", "truncated"])
def test_damaged_cache_file_is_reported_once_and_rebuilt(tmp_path, damage):
    expression = f"tanh(x) * {np.random.default_rng().integers(1 << 30)}.25"
    first = _finish(_child(tmp_path, expression))
    assert first["how"] == "compiled" and first["warnings"] == []
    path = _kernel_file(tmp_path, expression)
    blob = bytearray(path.read_bytes())
    if damage == "corrupted":
        blob[len(blob) // 2] ^= 0xFF
    else:
        del blob[len(blob) // 3:]
    path.write_bytes(bytes(blob))
    second = _finish(_child(tmp_path, expression))
    assert len(second["warnings"]) == 1 and "NativeCacheWarning" in second["warnings"][0]
    assert second["how"] == "compiled" and second["total"] == first["total"]
    third = _finish(_child(tmp_path, expression))
    assert third == {**first, "how": "cached"}


def test_two_processes_compiling_at_once_leave_no_torn_file(tmp_path):
    expression = f"sin(x) * {np.random.default_rng().integers(1 << 30)}.75"
    results = [_finish(p) for p in [_child(tmp_path, expression) for _ in range(2)]]
    assert all(r["warnings"] == [] for r in results)
    assert results[0]["total"] == results[1]["total"]
    assert not list((tmp_path / "kernels").glob(".*"))          # no temporary files left
    path = _kernel_file(tmp_path, expression)
    blob = path.read_bytes()
    magic, length, digest = native._HEADER.unpack_from(blob)
    import hashlib
    assert magic == native.OBJECT_MAGIC and length == len(blob) - native._HEADER.size
    assert hashlib.sha256(blob[native._HEADER.size:]).digest() == digest
    again = _finish(_child(tmp_path, expression))
    assert again["how"] == "cached" and again["warnings"] == []


def test_long_calls_release_the_gil():
    """Another Python thread runs *during* one long single-threaded kernel call."""
    import threading
    import time

    kernel = build(_spec("float64", [("f", "tanh(x) * exp(x) + sin(x)")], ["f"]))
    x = np.random.default_rng(9).uniform(-3, 3, 4_000_000)
    native.set_threads(1)
    for _ in range(3):   # long enough to tell, however fast this machine is today
        start = time.perf_counter()
        kernel.call(x)
        if time.perf_counter() - start > 0.03:
            break
        x = np.concatenate([x, x, x])
    stamps, done = [], threading.Event()

    def count():
        while not done.is_set():
            stamps.append(time.perf_counter())

    counter = threading.Thread(target=count)
    native.set_threads(1)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    try:
        counter.start()
        time.sleep(0.01)
        calls = []
        for _ in range(3):
            start = time.perf_counter()
            kernel.call(x)
            calls.append((start, time.perf_counter()))
    finally:
        done.set()
        counter.join()
        sys.setswitchinterval(interval)
        native.set_threads(None)
    stamps = np.array(stamps)
    # Holding the GIL, the counter could only run just before the kernel starts or after
    # it returns; so look at the first 40% of each call, after a margin.
    early = [np.count_nonzero((stamps > a + 0.003) & (stamps < a + 0.4 * (b - a)))
             for a, b in calls]
    assert all(b - a > 0.01 for a, b in calls), "calls too short to tell"
    assert max(early) > 10, early


def test_fork_after_a_threaded_call():
    """A child forked after threads were used can still split a call (fresh pool)."""
    if not hasattr(os, "fork") or native.thread_count() < 2:
        pytest.skip("needs fork and two cores")
    kernel = build(_spec("float64", [("f", "exp(-x * x) * sin(x)")], ["f"]))
    x = np.random.default_rng(10).standard_normal(400_000)
    expected, = kernel(x)
    pid = os.fork()
    if pid == 0:                                        # the child: exit status is the verdict
        try:
            got, = kernel._call_carefully((x,), None)
            os._exit(0 if np.array_equal(got, expected) else 1)
        finally:
            os._exit(2)
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.WEXITSTATUS(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung (a thread pool inherited from the parent?)")


def test_threads_compiling_and_calling_at_once():
    import threading

    factor = float(np.random.default_rng().integers(1 << 30)) + 0.375
    spec = _spec("float64", [("f", f"tanh(x) * {factor!r}")], ["f"])
    text = lower(spec)
    x = np.random.default_rng(11).standard_normal(5000)
    barrier, results = threading.Barrier(6), []

    def work():
        barrier.wait()
        kernel = compile_kernel(spec, text)
        results.append((kernel, kernel(x)[0].tobytes()))

    workers = [threading.Thread(target=work) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len({id(k) for k, _ in results}) == 1 and len({r for _, r in results}) == 1


def test_split_over_threads_gives_the_same_bits():
    spec = function_specs("sigmoid", "float64")["fused"]
    spec = KernelSpec(spec.dtype, spec.arrays, spec.scalars, spec.statements, spec.outputs,
                      (("both", "sum"), ("f", "max")))
    kernel = build(spec)
    x = wide_inputs("float64", n_random=30000, seed=12)
    saved = kernel.parallel_min
    try:
        native.set_threads(1)
        alone = kernel(x)
        native.set_threads(3)
        kernel.set_parallel_min(2 * CHUNK)
        split = kernel(x)
    finally:
        kernel.set_parallel_min(saved)
        native.set_threads(None)
    assert len(x) > 4 * CHUNK
    for a, b in zip(alone, split, strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


# ----- fused runs ending in a norm, max or min ---------------------------------------------
# The fuser absorbs a trailing whole-array norm / max / min (compiler/fuse.py, REDUCTIONS).
# Three roads must agree: native kernels (forced: size threshold 1), the kernel's numpy
# functions (PULLBACK_NATIVE=0) and the unfused primitives (PULLBACK_FUSE=0).


def arithmetic_max(x):
    return nd.max(x * 0.5 - 0.0)


def arithmetic_min(x):
    return nd.min(x * 0.5 - 0.0)


def arithmetic_norm(x):
    return nd.norm(x * 0.5 - 0.0)


def library_max(x):
    return np.max(np.tanh(x) * np.exp(x))


def library_min(x):
    return (np.sin(x) * x).min()


def library_norm(x):
    return np.linalg.norm(np.tanh(x) * np.exp(x))


def live_norm(x):
    t = nd.sin(x) * x            # read again after the norm: a live output of the kernel
    r = nd.norm(t, ord=2)
    return r * t


ARITHMETIC_RUNS = {"max": arithmetic_max, "min": arithmetic_min, "norm": arithmetic_norm}
LIBRARY_RUNS = {"max": library_max, "min": library_min, "norm": library_norm}
LENGTHS = (1, 7, 8, 9, 1000, 100003)
SPECIALS = ("plain", "nan", "inf", "ties", "zeros")


def reduction_inputs(n: int, dtype: str, special: str) -> np.ndarray:
    """Random values with ``special`` mixed in: a NaN; +inf and -inf; the largest and the
    smallest value three times each; only +-0."""
    rng = np.random.default_rng(n)
    x = rng.uniform(-3, 3, n).astype(dtype)
    where = rng.permutation(n)
    if special == "nan":
        x[where[0]] = np.nan
    elif special == "inf":
        x[where[0]] = np.inf
        x[where[-1]] = -np.inf
    elif special == "ties":
        x[where[:3]] = 3.0
        x[where[-3:]] = -3.0
    elif special == "zeros":
        x = np.where(rng.random(n) < 0.5, -0.0, 0.0).astype(dtype)
    return x


def roads(fn, x, monkeypatch, roads=("native", "numpy", "unfused")) -> dict:
    """{road: (value, gradient)} of ``fn`` at ``x``, each from a freshly compiled function."""
    from pullback.runtime import fused

    found = {}
    for road in roads:
        with monkeypatch.context() as patch:
            patch.setattr(fused, "NATIVE_MIN_SIZE", 1)
            patch.setenv("PULLBACK_NATIVE", "1" if road == "native" else "0")
            patch.setenv("PULLBACK_FUSE", "0" if road == "unfused" else "1")
            with np.errstate(all="ignore"):
                value, grad = pb.value_and_grad(CompiledFunction(fn))(x.copy())
        found[road] = (np.asarray(value), np.asarray(grad))
    return found


def same_values(a, b) -> bool:
    """Equal, NaN where the other is NaN (+0 and -0 count as equal)."""
    return a.shape == b.shape and a.dtype == b.dtype and bool(
        np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def same_bits(a, b) -> bool:
    """Bit for bit, except that any NaN equals any NaN."""
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(
        np.where(np.isnan(a), 0, a).tobytes(), np.where(np.isnan(b), 0, b).tobytes()) \
        and np.array_equal(np.isnan(a), np.isnan(b))


def test_trailing_norm_max_min_are_absorbed():
    """Every spelling of a whole-array norm / max / min after a run ends up in the kernel;
    an axis, keepdims or another order does not."""
    for fn, helper in [(arithmetic_max, "largest"), (arithmetic_min, "smallest"),
                       (arithmetic_norm, "norm"), (library_max, "largest"),
                       (library_min, "smallest"), (library_norm, "norm"), (live_norm, "norm")]:
        source = pb.adjoint_source(fn)
        assert f"= _kernels.{helper}(" in source, fn.__name__
        assert "ops.max" not in source and "ops.min" not in source and "ops.norm" not in source

    def over_axis(x):
        return nd.max(nd.sin(x) * x, axis=0)

    def kept(x):
        return nd.norm(nd.sin(x) * x, keepdims=True)

    def first_order(x):
        return nd.norm(nd.sin(x) * x, ord=1)

    for fn, op in [(over_axis, "max"), (kept, "norm"), (first_order, "norm")]:
        source = pb.adjoint_source(fn)
        assert f"ops.{op}(" in source and "_kernels.largest" not in source \
            and "_kernels.norm" not in source, fn.__name__


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["max", "min", "norm"])
def test_trailing_reduction_of_arithmetic_on_three_roads(kind, dtype, monkeypatch):
    """No math-library call in the run: max and min, and their gradients, are the same bits
    on every road (NaN, infinities, ties, signed zeros included); a norm is within a few
    ulp (its sum is reassociated) and so is its gradient."""
    fn = ARITHMETIC_RUNS[kind]
    for n in LENGTHS:
        for special in SPECIALS:
            x = reduction_inputs(n, dtype, special)
            found = roads(fn, x, monkeypatch)
            unfused_value, unfused_grad = found["unfused"]
            label = f"{kind} n={n} {special}"
            for road in ("native", "numpy"):
                value, grad = found[road]
                exact = kind != "norm" or road == "numpy"
                assert value.dtype == np.dtype(dtype) and grad.dtype == np.dtype(dtype), label
                if exact:
                    assert same_values(value, unfused_value), (label, road, value, unfused_value)
                    assert same_bits(grad, unfused_grad), (label, road)
                    continue
                assert ulp_distance(value, unfused_value).max() <= ULPS[dtype], (
                    label, value, unfused_value)
                # the gradient is x / 2 * (1 / norm): the norm's few ulp, one division and
                # two products
                assert ulp_distance(grad, unfused_grad).max() <= ULPS[dtype] + 3, label


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["max", "min", "norm"])
def test_trailing_reduction_of_library_calls_on_three_roads(kind, dtype, monkeypatch):
    """With libm in the run, the kernel's numpy functions are still the unfused primitives'
    bits; native values and gradients are within the math library's ulps."""
    fn = LIBRARY_RUNS[kind]
    rtol = 64 * np.finfo(dtype).eps   # a few libm ulp, through a product and a derivative
    for n in LENGTHS:
        for special in SPECIALS:
            x = reduction_inputs(n, dtype, special)
            found = roads(fn, x, monkeypatch)
            unfused_value, unfused_grad = found["unfused"]
            label = f"{kind} n={n} {special}"
            assert same_values(found["numpy"][0], unfused_value), label
            assert same_bits(found["numpy"][1], unfused_grad), label
            value, grad = found["native"]
            assert value.dtype == unfused_value.dtype and grad.dtype == unfused_grad.dtype
            np.testing.assert_allclose(value, unfused_value, rtol=rtol, err_msg=label)
            np.testing.assert_allclose(grad, unfused_grad, rtol=rtol, atol=rtol, err_msg=label)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_share_the_gradient_and_nan_poisons_it(dtype, monkeypatch):
    """The max primitive's rule: equal maxima split the gradient evenly; a NaN makes the
    max NaN, equal to nothing, and every element's gradient NaN (0 / 0)."""
    x = np.linspace(-1, 1, 1001).astype(dtype)
    x[[10, 500, 900]] = 2.0
    for road, (value, grad) in roads(arithmetic_max, x, monkeypatch).items():
        assert value[0] == 1.0, road
        expected = np.zeros_like(x)
        expected[[10, 500, 900]] = np.asarray(0.5, dtype) * np.asarray(1 / 3, dtype)
        assert same_bits(grad, expected), road
    x[77] = np.nan
    for road, (value, grad) in roads(arithmetic_max, x, monkeypatch).items():
        assert np.isnan(value[0]) and np.isnan(grad).all(), road


@pytest.mark.parametrize("dtype", DTYPES)
def test_native_norm_is_near_the_exact_norm(dtype, monkeypatch):
    """The native norm accumulates the squares (computed in the kernel's dtype) in float64:
    within 1 ulp of the norm of those squares summed in extended precision."""
    x = np.random.default_rng(3).standard_normal(100003).astype(dtype)
    value, _ = roads(arithmetic_norm, x, monkeypatch, roads=("native",))["native"]
    t = x * np.asarray(0.5, dtype)
    exact = np.sqrt(np.sum((t * t).astype(np.longdouble))).astype(dtype)
    assert ulp_distance(value, np.asarray([exact])).max() <= 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", [arithmetic_max, library_min, library_norm, live_norm],
                         ids=lambda f: f.__name__)
def test_fused_reduction_gradients_match_finite_differences(fn, dtype, monkeypatch):
    """The compiled gradient, native kernels forced, = central differences (float64 points;
    float32 inputs are checked against the unfused primitives' gradient instead)."""
    from pullback.runtime import fused

    monkeypatch.setattr(fused, "NATIVE_MIN_SIZE", 1)
    x = np.random.default_rng(4).uniform(-2, 2, 1000)
    if dtype == "float64":
        check_grads(pb.compile(fn), [x])
        return
    x = x.astype(dtype)
    found = roads(fn, x, monkeypatch, roads=("native", "unfused"))
    np.testing.assert_allclose(found["native"][1], found["unfused"][1], rtol=2e-5, atol=2e-5)


def test_max_adjoint_takes_the_forwards_road_for_a_seed_of_another_dtype(monkeypatch):
    """The tie mask compares recomputed values with the forward's result: a float64 seed
    for a float32 native forward still runs the native adjoint (numpy's tanh would make
    the mask empty and every gradient NaN)."""
    from pullback.runtime import fused

    monkeypatch.setattr(fused, "NATIVE_MIN_SIZE", 1)
    from pullback.compiler.api import as_compiled
    from pullback.runtime.stack import Stack

    x = np.random.default_rng(5).uniform(-2, 2, 5000).astype(np.float32)
    variant = as_compiled(library_max).variant((True,))   # pb.vjp refuses such a head: a
    stack = Stack()                                       # caller's adjoint may still pass one
    variant.forward(stack, x)
    (grad,) = variant.adjoint(stack, np.ones(1, np.float64))
    assert np.isfinite(grad).all() and np.count_nonzero(grad) == 1
