"""Whole functions in native code (compiler/ir.py, infer.py, lower_function.py): the
native road equals the Python road (PULLBACK_NATIVE=0) and central differences, falls
back visibly, and never lets bad input or Python's exceptions through differently."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

import pullback as pb
from tape_helpers import central_gradient


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from workloads import w6_lotka_volterra as w6, w7_sin_loop as w7  # noqa: E402

@pytest.fixture(autouse=True)
def native_functions(monkeypatch):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")


#: libm's sin/cos/exp/... against numpy's: a few ulp per call, accumulated over a loop
LIBM_RTOL = 1e-12


def _roads(monkeypatch, fn, args, argnums):
    """(native (value, grads), python (value, grads), the road explain reports)."""
    vg = pb.value_and_grad(fn, argnums)
    native = vg(*args)
    road = pb.explain(fn)
    monkeypatch.setenv("PULLBACK_NATIVE", "0")
    python = vg(*args)
    monkeypatch.delenv("PULLBACK_NATIVE")
    return native, python, road


def _values(result):
    value, grads = result
    grads = grads if isinstance(grads, tuple) else (grads,)
    return [float(np.asarray(value.asnumpy() if hasattr(value, "asnumpy") else value)
                  .reshape(-1)[0])] + [float(g) for g in grads]


def _assert_close(native, python, rtol=LIBM_RTOL):
    for a, b in zip(_values(native), _values(python), strict=True):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=rtol, abs=1e-300)


def test_w7_native_equals_python_and_central_differences(monkeypatch):
    args = (0.5, 1.3, 200)
    native, python, road = _roads(monkeypatch, w7.loss, args, (0, 1))
    assert "native" in road and "Python road" not in road
    _assert_close(native, python)
    numeric = [central_gradient(w7.loss, args, k) for k in (0, 1)]
    assert _values(native)[1:] == pytest.approx(numeric, rel=1e-5)
    assert _values(native)[1:] == pytest.approx(w7.grad_manual(*args), rel=1e-10)


def test_w6_native_equals_python_bit_for_bit(monkeypatch):
    args = w6.make_inputs(100)
    native, python, road = _roads(monkeypatch, w6.loss, args, tuple(range(6)))
    assert "native" in road
    assert _values(native) == _values(python)   # + - * only: the same operations
    assert _values(native)[1:] == pytest.approx(w6.grad_manual(*args), rel=1e-10)


def test_vjp_and_grad_on_the_native_road():
    out, pullback = pb.vjp(w7.loss, 0.5, 1.3, 50, argnums=(0, 1))
    once = pullback(1.0)
    twice = pullback(2.0)
    assert [2 * g for g in once] == list(twice)
    assert pb.grad(w7.loss, (0, 1))(0.5, 1.3, 50) == once
    assert float(out.asnumpy()[0]) == pytest.approx(w7.primal_manual(0.5, 1.3, 50), rel=1e-12)


def int_accumulator(x, n):
    s = 0
    for i in range(n):
        s = s + x * i
    return s


def test_explain_names_the_line_that_keeps_the_python_road():
    assert pb.grad(int_accumulator)(2.0, 4) == 6.0
    text = pb.explain(int_accumulator)
    assert "Python road" in text and "`s = 0`" in text and "int" in text


def python_division(x, a, b):
    return x * (a / b)


def int_power(x, n):
    k = 1
    for _ in range(n):
        k = k * 1000
    return x * (k // 1000 ** (n - 1) if n else 1.0)


def test_python_exceptions_and_big_ints_leave_for_the_python_road():
    g = pb.grad(python_division)
    assert g(1.0, 3.0, 2.0) == 1.5
    assert "native" in pb.explain(python_division)
    with pytest.raises(ZeroDivisionError):   # Python floats: the Python road raises
        g(1.0, 3.0, 0.0)
    # k reaches 1000**7 > 2**63: the Python road computes with Python's big ints
    def power_loop(x, n):
        k = 1
        for _ in range(n):
            k = k * 1000
        return x * (k // 1000 ** 6)

    assert pb.grad(power_loop)(1.0, 7) == 1000.0
    assert pb.grad(power_loop)(1.0, 3) == 0.0


def numpy_division(x, y):
    return x / y


def test_numpy_semantics_inf_and_nan(monkeypatch):
    for args in ((1.0, 0.0), (0.0, 0.0), (float("inf"), 2.0), (float("nan"), 1.0)):
        with np.errstate(all="ignore"):
            native, python, road = _roads(monkeypatch, numpy_division, args, (0, 1))
        assert "native" in road
        assert _values(native) == pytest.approx(_values(python), nan_ok=True)


def test_other_argument_types_never_enter_native_code():
    g = pb.grad(w7.loss, (0, 1))
    reference = g(0.5, 1.3, 20)
    assert g(np.float64(0.5), 1.3, 20) == reference
    # not native, the Python road: glibc's sin where the native loop computes libmvec's
    # ahead (compiler/lower_loops.py), so equal within their ulp
    assert g(0.5, 1.3, np.int64(20)) == pytest.approx(reference, rel=1e-14, abs=1e-14)
    assert "Python road" in pb.explain(w7.loss, 0.5, 1.3, np.int64(20), argnums=(0, 1))
    with pytest.raises(TypeError):
        g(0.5, 1.3, 2.5)                                     # range() of a float


def big_int_scale(x, k):
    return x * (k - k + 2)


def test_ints_beyond_int64_take_the_python_road():
    g = pb.grad(big_int_scale)
    assert g(1.5, 3) == 2.0
    assert "native" in pb.explain(big_int_scale)
    assert g(1.5, 1 << 70) == 2.0    # does not fit an i64 argument: the Python road's ints
    assert g(1.5, -(1 << 63) - 1) == 2.0


def test_native_off_keeps_the_python_road(monkeypatch):
    monkeypatch.setenv("PULLBACK_NATIVE", "0")
    pb.grad(w7.loss, (0, 1))(0.5, 1.3, 5)
    assert "off" in pb.explain(w7.loss)
