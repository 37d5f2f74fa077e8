"""The fastcall entry of native functions (runtime/native_entry.py): ``pb.grad`` of a
function of numbers is one native call that checks its arguments and boxes its results
as the Python road does -- same values, same types -- and falls back to the careful path
for anything else (other types, keyword arguments, Python's exceptions, the environment
turning native functions off between two calls of the same gradient function)."""

import math

import numpy as np
import pytest

import pullback as pb
from pullback.runtime import native_entry
from tape_helpers import central_gradient

pytestmark = pytest.mark.skipif(not native_entry.available(),
                                reason="the entry needs CPython's and numpy's object layouts")


@pytest.fixture(autouse=True)
def native_functions(monkeypatch):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")


def loop(x, y, n, flag):
    s = x
    for _ in range(n):
        s = s * y + np.sin(x)
    if flag:
        s = s / y
    return s


def python_division(x, a, b):
    return x * (a / b)   # a, b Python floats (not differentiated): ZeroDivisionError at 0


def _python_road(monkeypatch, fn, argnums, args):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "0")
    try:
        return pb.grad(fn, argnums)(*args)
    finally:
        monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")


def _same(native, python):
    """Equal values of the same Python types (a tuple item by item)."""
    native = native if isinstance(native, tuple) else (native,)
    python = python if isinstance(python, tuple) else (python,)
    assert [type(g) for g in native] == [type(g) for g in python]
    for a, b in zip(native, python, strict=True):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-13, abs=0)


ARGUMENTS = [
    (1.5, 0.5, 3, True),
    (np.float64(1.5), 0.5, 3, False),
    (1.5, np.float64(0.7), 4, True),
    (np.float32(1.5), np.float32(0.5), 3, True),
    (2, 0.5, 2, True),          # a differentiated int: float64 inside, a float gradient
    (1.5, -0.25, 0, False),     # no trip: x's gradient through s = x only
]


@pytest.mark.parametrize("args", ARGUMENTS, ids=[repr(a) for a in ARGUMENTS])
@pytest.mark.parametrize("argnums", [0, 1, (0, 1), (1, 0)])
def test_entry_equals_python_road_and_central_differences(monkeypatch, args, argnums):
    g = pb.grad(loop, argnums)
    first, second = g(*args), g(*args)   # the first installs the entry, the second uses it
    road = pb.explain(loop)
    assert "native (" in road and "fastcall" in road, road
    python = _python_road(monkeypatch, loop, argnums, args)
    _same(first, python)
    _same(second, python)
    positions = (argnums,) if isinstance(argnums, int) else argnums
    numeric = [central_gradient(loop, [float(a) if isinstance(a, np.floating) else a
                                       for a in args], k) for k in positions]
    got = second if isinstance(second, tuple) else (second,)
    tolerance = 1e-3 if isinstance(args[0], np.float32) else 1e-6
    assert [float(v) for v in got] == pytest.approx(numeric, rel=tolerance, abs=tolerance)


def test_other_signatures_keywords_and_wrong_types_take_the_careful_path(monkeypatch):
    g = pb.grad(loop, (0, 1))
    expected = _python_road(monkeypatch, loop, (0, 1), (1.5, 0.5, 3, True))
    _same(g(1.5, 0.5, 3, True), expected)
    _same(g(x=1.5, y=0.5, n=3, flag=True), expected)              # keywords
    _same(g(np.float32(1.5), np.float32(0.5), 3, True),             # another signature
          _python_road(monkeypatch, loop, (0, 1), (np.float32(1.5), np.float32(0.5), 3, True)))
    _same(g(1.5, 0.5, 3, True), expected)                            # and back
    _same(g(1.5, 0.5, 3, 1), _python_road(monkeypatch, loop, (0, 1), (1.5, 0.5, 3, 1)))
    big = 1 << 70   # out of int64: the careful path, which leaves the native road
    assert g(1.5, 0.5, 0, big) == _python_road(monkeypatch, loop, (0, 1), (1.5, 0.5, 0, big))
    with pytest.raises(TypeError):
        g(1.5, 0.5, 3)   # a missing argument: Python's error, not a native read
    with pytest.raises(TypeError):
        g(1.5, "0.5", 3, True)


def test_python_exceptions_and_the_environment_at_each_call(monkeypatch):
    g = pb.grad(python_division)
    assert g(1.0, 1.0, 4.0) == 0.25
    assert "fastcall" in pb.explain(python_division)
    with pytest.raises(ZeroDivisionError):   # native asks for the Python road, which raises
        g(1.0, 1.0, 0.0)
    assert g(3.0, 1.0, 2.0) == 0.5
    for variable, off in (("PULLBACK_NATIVE_FUNCTIONS", "0"), ("PULLBACK_NATIVE", "0"),
                          ("PULLBACK_NATIVE", " Off")):
        monkeypatch.setenv(variable, off)     # read at each call, by the entry too
        calls = []
        monkeypatch.setattr(pb.compiler.api.native_road, "gradient_function",
                            lambda *a: calls.append(a))
        assert g(3.0, 1.0, 2.0) == 0.5
        assert calls, f"{variable}={off!r} did not reach the careful path"
        monkeypatch.undo()
        monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")


def test_value_and_grad_and_vjp_use_the_entry_with_their_seed(monkeypatch):
    args = (0.3, 0.9, 5, True)
    value, grads = pb.value_and_grad(loop, (0, 1))(*args)
    _, pullback = pb.vjp(loop, *args, argnums=(0, 1))
    scaled = pullback(2.5)
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "0")
    python_value, python_grads = pb.value_and_grad(loop, (0, 1))(*args)
    _, python_pullback = pb.vjp(loop, *args, argnums=(0, 1))
    assert float(value.asnumpy()[0]) == pytest.approx(float(python_value.asnumpy()[0]),
                                                      rel=1e-13)
    _same(grads, python_grads)
    _same(scaled, python_pullback(2.5))
