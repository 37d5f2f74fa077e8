"""Calls of other user functions on the native road (infer.Functions, lower_function's
_Callees): a helper, a helper in a loop, recursion with a depth argument, mutual
recursion and nested helpers stay native, and equal the Python road and central
differences; a callee that does not type keeps its caller on the Python road, named."""

import math

import numpy as np
import pytest

import pullback as pb
from tape_helpers import central_gradient


@pytest.fixture(autouse=True)
def native_functions(monkeypatch):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")


def sq(a):
    return a * a


def scaled_sin(a, b):
    return a * np.sin(b) + b


def helper_once(x):
    return sq(x) + 1.0


def helper_in_a_loop(x, y, n):
    s = 0.0
    for i in range(n):
        s = s + scaled_sin(x, y * i) * sq(y)
    return s


def power_tower(x, depth):
    if depth == 0:
        return x
    return np.sin(power_tower(x * 0.99, depth - 1)) + x * 0.5


def is_even_sum(x, n):
    if n == 0:
        return x
    return is_odd_sum(x * 0.9, n - 1) + 1.0


def is_odd_sum(x, n):
    if n == 0:
        return -x
    return is_even_sum(np.cos(x), n - 1) * 2.0


def nested(x, y):
    return helper_once(x * y) + helper_in_a_loop(x, y, 2) + power_tower(y, 3)


def uses_python_division(x, a, b):
    return x * quotient(a, b)


def quotient(a, b):
    return a / b   # not differentiated: Python floats, ZeroDivisionError at b == 0


def calls_unlowered(x):
    return x * int_mod(x, 3)


def int_mod(x, k):
    return x % k   # % has no native gradient rule (vjp.mod_0)


CASES = [
    (helper_once, (0.7,), (0,)),
    (helper_in_a_loop, (0.3, -0.8, 5), (0, 1)),
    (power_tower, (0.4, 6), (0,)),
    (power_tower, (0.4, 0), (0,)),
    (is_even_sum, (0.6, 7), (0,)),
    (nested, (0.5, 0.9), (0, 1)),
    (uses_python_division, (1.5, 2.0, 4.0), (0,)),
]


def _both_roads(monkeypatch, fn, args, argnums):
    on = pb.value_and_grad(fn, argnums)(*args)
    road = pb.explain(fn)
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "0")
    off = pb.value_and_grad(fn, argnums)(*args)
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    return on, off, road


def _numbers(result):
    value, grads = result
    value = float(np.asarray(value.asnumpy() if hasattr(value, "asnumpy") else value)
                  .reshape(-1)[0])
    return [value] + [float(g) for g in grads]


@pytest.mark.parametrize("fn, args, argnums", CASES,
                         ids=[f"{c[0].__name__}{c[1]}" for c in CASES])
def test_calls_stay_native_and_equal_python_road_and_central_differences(
        monkeypatch, fn, args, argnums):
    on, off, road = _both_roads(monkeypatch, fn, args, argnums)
    assert "native (" in road and "Python road" not in road.split("\n")[0], road
    for a, b in zip(_numbers(on), _numbers(off), strict=True):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-300)
    numeric = [central_gradient(fn, args, k) for k in argnums]
    assert _numbers(on)[1:] == pytest.approx(numeric, rel=1e-6, abs=1e-7)


def test_recursion_deeper_than_the_stack_buffer_grows(monkeypatch):
    """A depth whose saved values outgrow the stack's first 1024 slots."""
    args = (0.2, 190)   # under lower_function.MAX_CALL_DEPTH
    on, off, road = _both_roads(monkeypatch, power_tower, args, (0,))
    assert "native (" in road
    assert _numbers(on) == pytest.approx(_numbers(off), rel=1e-12)
    assert math.isfinite(_numbers(on)[1])


def test_python_exception_inside_a_callee_is_the_python_roads(monkeypatch):
    g = pb.grad(uses_python_division)
    assert g(1.5, 2.0, 4.0) == 0.5
    assert "native (" in pb.explain(uses_python_division)
    with pytest.raises(ZeroDivisionError):
        g(1.5, 2.0, 0.0)


def test_a_callee_that_does_not_type_is_named_at_the_callers_line(monkeypatch):
    pb.grad(calls_unlowered)(0.7)
    road = pb.explain(calls_unlowered)
    assert "Python road" in road and "int_mod()" in road, road
    line = calls_unlowered.__code__.co_firstlineno + 1
    assert f"line {line}:" in road, road


# ----- pb.explain names the user's line of a refused form --------------------------------

def leaf_rebound(x, y):
    s = x
    for k in range(3):
        s = s * y + abs(k - 5)   # refused here (abs of an int: Python's ints)
    return s


def float_modulo(x):
    z = x * 2.0
    z = z + 1.0
    w = z % 3.0   # refused here
    return w * x


def callee_refused(x, y):
    a = x * y
    b = sq(a) + a
    return b + int_mod(a, 2) * y   # refused here


def unlowered_numpy(x):
    t = np.sin(x)
    u = np.clip(t, -0.5, 0.5)   # refused here
    return u * t


def _marked_line(fn):
    import inspect

    lines, first = inspect.getsourcelines(fn)
    return first + next(k for k, text in enumerate(lines) if "# refused here" in text)


@pytest.mark.parametrize("fn, args, argnums", [
    (leaf_rebound, (0.5, 0.7), 1), (float_modulo, (0.4,), 0),
    (callee_refused, (0.3, 0.9), (0, 1)), (unlowered_numpy, (0.2,), 0)],
    ids=["leaf", "modulo", "callee", "numpy"])
def test_explain_names_the_refused_line(fn, args, argnums):
    pb.grad(fn, argnums)(*args)
    road = pb.explain(fn)
    assert "Python road" in road, road
    assert f"line {_marked_line(fn)}:" in road, road


def test_recursion_deeper_than_the_native_limit_reruns_on_the_python_road(monkeypatch):
    """Past lower_function.MAX_CALL_DEPTH nested native calls the call leaves for the
    Python road (no native stack overflow): the same gradient, from Python."""
    import sys

    from pullback.compiler import lower_function

    depth = lower_function.MAX_CALL_DEPTH + 50
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20 * depth))
    try:
        on, off, road = _both_roads(monkeypatch, power_tower, (0.2, depth), (0,))
        shallow = pb.grad(power_tower)(0.2, 3)
    finally:
        sys.setrecursionlimit(limit)
    assert "native (" in road
    assert _numbers(on) == _numbers(off)
    assert shallow == pytest.approx(central_gradient(power_tower, (0.2, 3), 0), rel=1e-6)
