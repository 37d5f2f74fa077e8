"""Regression tests for the third adversary's findings (report: issue 11's closing note).
Rebinding of names read by compiled code: tests/test_rebinding.py."""

import os
import subprocess
import sys

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def polynomial(x):
    s = 0.0
    for k in range(4):
        s = s + (k + 1.0) * x ** k
    return s


def power_zero_plus_x(x):
    return np.sum(x ** 0 + x)


def power_of_arrays(x, y):
    return np.sum(x ** y)


@pytest.mark.parametrize("native", ["1", "0"])
def test_x_to_the_zero_has_a_zero_derivative_at_zero_on_every_road(native, tmp_path):
    """d/dx x**0 = 0, also at x = 0 (was 0 * 0**-1 = nan): native function, Python road."""
    script = tmp_path / "check.py"
    script.write_text(
        "import sys\nsys.path.insert(0, %r)\n" % os.path.dirname(__file__)
        + "import numpy as np, pullback as pb, test_adversary3_fixes as t\n"
        "print(pb.grad(t.polynomial)(0.0))\n")
    env = dict(os.environ, PULLBACK_NATIVE_FUNCTIONS=native,
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-W", "error", str(script)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.split()[-1]) == 2.0


def test_x_to_the_zero_in_arrays_fused_forward_mode_and_the_tape():
    with np.errstate(all="raise"):   # and no warning from a discarded branch
        np.testing.assert_array_equal(pb.grad(power_zero_plus_x)(np.array([0.0, 0.5])),
                                      [1.0, 1.0])
        np.testing.assert_array_equal(pb.jacfwd(power_zero_plus_x)(np.array([0.5, 0.0])),
                                      [1.0, 1.0])
        for n in (3, 1000):   # numpy calls and native kernels
            gx, gy = pb.grad(power_of_arrays, argnums=(0, 1))(np.zeros(n), np.zeros(n))
            np.testing.assert_array_equal(gx, np.zeros(n))
    x = nd.array([0.0, 2.0], dtype="float64")
    x.attach_grad()
    with ag.record():
        y = nd.sum(x ** 0 * 3 + x ** 2)
    y.backward()
    np.testing.assert_array_equal(x.grad.asnumpy(), [0.0, 4.0])
    # away from zero the rule is unchanged: central differences
    x0, y0, h = np.array([0.7, 1.3]), np.array([0.0, 2.5]), 1e-6
    gx, gy = pb.grad(power_of_arrays, argnums=(0, 1))(x0, y0)
    for i in range(2):
        e = np.eye(2)[i] * h
        fd = (power_of_arrays(x0 + e, y0) - power_of_arrays(x0 - e, y0)) / (2 * h)
        assert gx[i] == pytest.approx(fd, rel=1e-7, abs=1e-9)


SCALE = 2.0


def reads_a_global(x):
    return x * SCALE + x * x


def kw_default(x, a=2.0, n=3):
    return x * a * n


def test_explain_of_a_function_reading_a_global_and_one_with_defaults():
    assert pb.grad(reads_a_global)(1.5) == pytest.approx(5.0)
    text = pb.explain(reads_a_global)
    assert "reads_a_global differentiating x:" in text
    assert "reads_a_global differentiating x:" in pb.explain(reads_a_global, 1.5)
    assert "kw_default differentiating x:" in pb.explain(kw_default, 1.5)


def times_truncated(x):
    return np.sum(x.astype(np.int64) * x)


def times_bool(x):
    return np.sum(x.astype(bool) * x)


def test_a_cast_to_int_or_bool_has_no_gradient_on_every_road():
    """x.astype(int) is piecewise constant: its derivative is 0 (was the identity's)."""
    X = np.array([0.3, 1.7, -2.5])
    np.testing.assert_array_equal(pb.grad(times_truncated)(X), np.trunc(X))
    np.testing.assert_array_equal(pb.jacfwd(times_truncated)(X), np.trunc(X))
    _, tangent = pb.jvp(times_truncated, (X,), (np.ones(3),))
    assert tangent == pytest.approx(np.sum(np.trunc(X)))
    np.testing.assert_array_equal(pb.grad(times_bool)(X), np.ones(3))
    h = 1e-6   # central differences (away from the jumps)
    fd = [(times_truncated(X + h * e) - times_truncated(X - h * e)) / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(pb.grad(times_truncated)(X), fd, rtol=1e-6)
    x = nd.array(X, dtype="float64")
    x.attach_grad()
    with ag.record():
        y = nd.sum(x.astype("int32") * x)
    y.backward()
    np.testing.assert_array_equal(x.grad.asnumpy(), np.trunc(X))


def two_args(x, y):
    return np.sum(x * y)


@pytest.mark.parametrize("argnums", [-1, 5, (0, -1), (0, 2)])
def test_jacfwd_checks_argnums_like_jacrev(argnums):
    x, y = np.ones(2), np.arange(2.0)
    for jacobian in (pb.jacfwd, pb.jacrev):
        with pytest.raises(ValueError, match="out of range for 2 arguments"):
            jacobian(two_args, argnums=argnums)(x, y)


def times_int_square(x, n):
    return x * (n ** 2)


def times_power_of_two(x, n):
    return x * (2 ** n)


def times_abs(x, n):
    return x * abs(n)


def branch_on_abs(x, n):
    if abs(n) > 0:
        return x * 2.0
    return x * 3.0


@pytest.mark.parametrize("f, n", [(times_int_square, 2 ** 32), (times_int_square, 3037000500),
                                  (times_int_square, 2 ** 70), (times_power_of_two, 64),
                                  (times_power_of_two, -2), (times_abs, -2 ** 63),
                                  (branch_on_abs, -2 ** 63), (times_abs, -2 ** 70)])
def test_python_ints_keep_python_semantics_in_powers_and_abs(f, n):
    """n ** 2, 2 ** n and abs(n) of a Python int are exact (int64 wrapped to 0 or negative)."""
    value, gradient = pb.value_and_grad(f)(1.5, n)
    assert float(np.asarray(value).ravel()[0]) == pytest.approx(f(1.5, n), rel=1e-15)
    h = 1e-3   # f is linear in x: central differences are exact up to rounding
    assert gradient == pytest.approx((f(1.5 + h, n) - f(1.5 - h, n)) / (2 * h), rel=1e-9)
