"""Forward mode on the native road (issue 12): ``pb.jvp``'s tangent function read back,
typed and lowered (``native_road.tangent_function``), checked against the Python road
(``PULLBACK_NATIVE_FUNCTIONS=0``: the same generated tangent code run by Python), central
differences in float64 and ``<pb.grad, v>``.  Every program marked native must really take
the native road (``pb.explain`` says so); refused ones run on the Python road, named."""

import numpy as np
import pytest

import pullback as pb
from pullback.compiler import forward_api

LIBM_RTOL = 1e-12   # libm/libmvec against numpy, accumulated over a loop


def sin_loop(x, y, n):
    s = 0.0
    for i in range(n):
        s = s + np.sin(x * i) * y
    return s


def branch_while(x, y):
    s = x * x + 0.1
    k = 0
    while s < 8.0:
        s = s * 1.7 + np.abs(y)
        k = k + 1
    if x > y:
        s = s * np.exp(-x)
    else:
        s = s + np.tanh(y)
    return s * (k + 1)


def for_break(x, y, n):
    s = 0.0
    for i in range(n):
        s = s + np.sin(x * i + y)
        if s > 1.5:
            break
    return s * y


def helper(a, b):
    return a * np.sin(b) + b * b


def helper_calls(x, y, n):
    s = 0.0
    for i in range(n):
        s = s + helper(x, y * i) * 0.1
    return s


def rk4_like(a, b, x, n):
    for _ in range(n):
        k1 = a * x - b * x * x
        k2 = a * (x + 0.05 * k1) - b * (x + 0.05 * k1) ** 2
        x = x + 0.1 * k2
    return x


def array_sum(x, y):
    return np.sum(np.sin(x) * y)


def array_loop(x, w, n):
    s = 0.0
    for i in range(n):
        s = s + np.dot(x, w) * 0.1 + np.mean(x * i)
    return s


def array_max_index(x):
    return np.max(x * x) + x[0] * x[-1]


def refused_mod(x, y):
    return (x * 7.0) % 1.0 + y   # float % is not lowered natively


rng0 = np.random.default_rng(7)
PROGRAMS = [   # (function, arguments, positions with tangents, native expected)
    (sin_loop, (0.5, 1.3, 40), (0, 1), True),
    (branch_while, (0.7, 0.4), (0, 1), True),
    (branch_while, (-0.3, 0.9), (0, 1), True),
    (for_break, (0.4, -0.2, 30), (0, 1), True),
    (helper_calls, (0.3, 0.8, 12), (0, 1), True),
    (rk4_like, (1.1, 0.4, 0.5, 50), (0, 1, 2), True),
    (array_sum, (rng0.standard_normal(9), rng0.standard_normal(9)), (0, 1), True),
    (array_loop, (rng0.standard_normal(6), rng0.standard_normal(6), 5), (0, 1), True),
    (array_max_index, (rng0.standard_normal(7),), (0,), True),
    (refused_mod, (0.3, 0.4), (0, 1), False),
]


def _tangents(args, nums, rng):
    return tuple((float(rng.standard_normal()) if np.ndim(a) == 0 else
                  rng.standard_normal(np.shape(a))) if i in nums else None
                 for i, a in enumerate(args))


def _raw(monkeypatch, fn, args, tangents, flag):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", flag)
    return forward_api._run_tangent(fn, args, tangents)


def _road(fn, nums, args):
    variant = forward_api._tangent_variant(fn, tuple(i in nums for i in range(len(args))))
    return "\n".join(forward_api.native_road.explain(variant))


@pytest.mark.parametrize("fn, args, nums, native", PROGRAMS,
                         ids=[f"{p[0].__name__}{k}" for k, p in enumerate(PROGRAMS)])
def test_native_tangent_equals_python_road_grad_and_central_differences(
        monkeypatch, fn, args, nums, native):
    rng = np.random.default_rng(20261208)
    tangents = _tangents(args, nums, rng)
    on = _raw(monkeypatch, fn, args, tangents, "1")
    road = _road(fn, nums, args)
    off = _raw(monkeypatch, fn, args, tangents, "0")
    if native:
        assert "native (" in road and "Python road" not in road, road
    else:
        assert "Python road" in road and "not lowered" in road, road
    assert [type(v) for v in on] == [type(v) for v in off]   # the same kinds of result
    assert on == pytest.approx(off, rel=LIBM_RTOL, abs=1e-14), (on, off)
    # the public API on both roads
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    public = pb.jvp(fn, args, tangents)
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "0")
    python = pb.jvp(fn, args, tangents)
    assert type(public[1]) is type(python[1])
    assert float(np.asarray(public[1]).reshape(-1)[0] if not hasattr(public[1], "asnumpy")
                 else public[1].asnumpy().reshape(-1)[0]) == pytest.approx(
        float(on[1]), rel=0, abs=0)
    # central differences along the tangent, float64
    eps = 1e-6

    def moved(sign):
        return tuple(a if t is None else (a + sign * eps * t) for a, t in
                     zip(args, tangents, strict=True))

    numeric = (fn(*moved(1)) - fn(*moved(-1))) / (2 * eps)
    assert float(on[1]) == pytest.approx(float(numeric), rel=1e-5, abs=1e-6)
    # J v = <grad, v> for a scalar output
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    grads = pb.grad(fn, argnums=nums)(*args)
    inner = sum(float(np.sum(np.asarray(g) * tangents[n])) for g, n in
                zip(grads, nums, strict=True))
    assert float(on[1]) == pytest.approx(inner, rel=1e-10, abs=1e-12)


def test_native_off_keeps_the_python_road(monkeypatch):
    monkeypatch.setenv("PULLBACK_NATIVE", "0")
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")

    def cube_loop(x, n):
        s = x
        for _ in range(n):
            s = s * x * 0.5
        return s

    out = forward_api._run_tangent(cube_loop, (0.9, 3), (1.0, None))
    variant = forward_api._tangent_variant(cube_loop, (True, False))
    assert forward_api.native_road.explain(variant) == []   # never decided: Python road
    assert out[1] == pytest.approx(4 * 0.9 ** 3 * 0.5 ** 3)


def test_other_argument_types_take_the_python_road(monkeypatch):
    """A float32 array (not the native road's) or a strided one: Python road's results."""
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    for x in (np.arange(12.0)[::2], np.arange(6.0, dtype=np.float32)):
        assert not (x.flags.c_contiguous and x.dtype == np.float64)
        tangent = np.ones(6, x.dtype)
        monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
        on = forward_api._run_tangent(array_sum, (x, x), (tangent, tangent))
        monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "0")
        off = forward_api._run_tangent(array_sum, (x, x), (tangent, tangent))
        # (the strided view is copied to a contiguous internal array, which may go native)
        assert on == pytest.approx(off, rel=LIBM_RTOL) and \
            [type(v) for v in on] == [type(v) for v in off]


def test_explain_names_the_tangent_road(monkeypatch):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    pb.jvp(sin_loop, (0.2, 0.3, 5), (1.0, 0.0, None))
    text = pb.explain(sin_loop)
    assert "tangents of x, y" in text and "native (" in text, text
    pb.jacfwd(array_sum)(np.ones(3), np.ones(3))
    assert "batched" in pb.explain(array_sum), pb.explain(array_sum)
