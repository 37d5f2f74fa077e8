"""Python a numerical user writes every day (issue 11, item 4): conditional expressions,
chained comparisons, tuple targets in ``for``, ``enumerate``/``zip``/``reversed``, list
and dict comprehensions, the builtins ``sum``/``max``/``min``/``abs`` over
differentiated values.  Each is desugared by normalize into forms the compiler already
follows; every one is checked compiled = eager tape = central differences (float64)."""

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd
from tape_helpers import central_gradient


def conditional_expression(a, b):
    c = a * b if a > b else b - a
    return c * c + (a if b > 0.0 else b) * 2.0


def conditional_expression_only_one_branch_runs(a, b):
    return a * 3.0 if b > 0.0 else 1.0 / (a - 0.5)   # 1 / 0 where it does not run


def chained_comparison(a, b):
    s = a * b
    if -1.0 < a < b:
        s = s + a * a
    if a < b <= 10.0 > a:
        s = s * b
    return s


def tuple_targets_in_for(a, b):
    s = 0.0
    for x, (y, z) in [(a, (b, 1.0)), (b, (a * b, a))]:
        s = s + x * y - z
    return s


def enumerate_zip_reversed(a, b):
    xs = [a, b, a * b]
    s = 0.0
    for i, x in enumerate(xs):
        s = s + i * x
    for i, x in enumerate(xs, start=2):
        s = s + i * x * x
    for x, y in zip(xs, [b, a]):   # the shorter one ends it
        s = s + x * y
    for x in reversed(xs):
        s = s * 0.5 + x
    return s


def enumerate_with_break(a, b):
    s = a
    for i, x in enumerate([a, b, a + b, a * b]):
        if i == 2:
            break
        s = s * x
    return s


def list_comprehension(a, b):
    xs = [a, b, a * b]
    x = 100.0   # the comprehension's x is its own
    squares = [x * x for x in xs]
    kept = [x * 2.0 for x in xs if x > 0.0]
    pairs = [x * y for x in xs for y in (a, 1.0)]
    return squares[0] + squares[2] + len(kept) * kept[0] + pairs[1] * pairs[4] + x * 0.0


def dict_comprehension(a, b):
    d = {k: v * v for k, v in zip(['p', 'q', 'r'], [a, b, a * b])}
    e = {k: d[k] * 2.0 for k in d if k != 'q'}
    return d['p'] * d['q'] + e['r'] + len(e)


def builtin_sum(a, b):
    xs = [a, b, a * b]
    return sum(xs) + sum(xs, 1.0) * a + sum(x * x for x in xs) + sum([x * b for x in xs])


def builtin_max_min(a, b):
    top = max(a, b)
    low = min(a, b, 0.25)
    return top * low + max([a * a, b]) + min(x * 2.0 for x in [a, b]) + abs(a - b)


def sum_of_arrays(x, y):
    # Python's sum adds the arrays (not numpy's sum of every element)
    return sum([x, y * y, x * y]) * 2.0


def enumerate_of_zip(a, b):
    s = 0.0
    for i, (x, y) in enumerate(zip([a, b, a * b], [b, a, a]), 1):
        s = s + x * y * i
    return s


def zip_of_enumerate_and_reversed(a, b):
    s = a * 0.0
    for (i, x), y in zip(enumerate([a, b, a + b]), reversed([b, a * a, 2.0])):
        if i == 2:
            break
        s = s + x * y + i
    return s


def reversed_of_zip_nested(a, b):
    s = a * 1.0
    for x, (k, y) in reversed(list_of_pairs(a, b)):
        s = s * x + y * k
    return s


def list_of_pairs(a, b):
    return [(a, (1.0, b)), (b, (2.0, a))]


FORMS = [
    (enumerate_of_zip, [(0.5, -1.2)]),
    (zip_of_enumerate_and_reversed, [(0.5, -1.2), (1.5, 0.3)]),
    (reversed_of_zip_nested, [(0.5, -1.2)]),
    (conditional_expression, [(0.5, -1.2), (-0.5, 1.2)]),
    (conditional_expression_only_one_branch_runs, [(0.5, 1.0), (0.7, -1.0)]),
    (chained_comparison, [(0.5, 1.2), (-1.5, 1.2), (0.5, 0.2)]),
    (tuple_targets_in_for, [(0.5, -1.2)]),
    (enumerate_zip_reversed, [(0.5, -1.2)]),
    (enumerate_with_break, [(0.5, -1.2)]),
    (list_comprehension, [(0.5, -1.2), (0.7, 0.3)]),
    (dict_comprehension, [(0.5, -1.2)]),
    (builtin_sum, [(0.5, -1.2)]),
    (builtin_max_min, [(0.5, -1.2), (-0.7, 0.3), (0.1, 0.9)]),
]
CASES = [(fn, args) for fn, many in FORMS for args in many]


def _tape(fn, args):
    xs = [nd.array(np.array([a], dtype=np.float64)) for a in args]
    for x in xs:
        x.attach_grad()
    with ag.record():
        out = fn(*xs)
    out.backward()
    return [x.grad.asscalar() for x in xs]


@pytest.mark.parametrize("fn, args", CASES, ids=[f"{f.__name__}-{a}" for f, a in CASES])
def test_compiled_equals_tape_equals_central_differences(fn, args):
    grads = pb.grad(fn, argnums=(0, 1))(*args)
    tape = _tape(fn, args)
    for k, g in enumerate(grads):
        assert isinstance(g, float)
        assert g == pytest.approx(central_gradient(fn, list(args), k), rel=1e-6, abs=1e-7)
        assert g == pytest.approx(tape[k], rel=1e-10, abs=1e-12)


def test_python_sum_of_arrays_adds_them():
    x, y = np.array([0.3, -0.4, 1.2]), np.array([1.5, 0.2, -0.7])
    gx, gy = pb.grad(sum_of_arrays, argnums=(0, 1))(x, y)
    np.testing.assert_allclose(gx, central_gradient(sum_of_arrays, [x, y], 0), rtol=1e-6)
    np.testing.assert_allclose(gy, central_gradient(sum_of_arrays, [x, y], 1), rtol=1e-6)
    value, _ = pb.value_and_grad(sum_of_arrays)(x, y)
    np.testing.assert_allclose(np.asarray(value), sum_of_arrays(x, y))


def generator_into_numpy(a):
    return np.sum(x * x for x in [a, 1.0])


def max_with_a_key(a, b):
    return max([a, b], key=abs)


@pytest.mark.parametrize("fn, words", [(generator_into_numpy, "generator expressions"),
                                       (max_with_a_key, "no gradient rule for max")])
def test_forms_still_refused(fn, words):
    with pytest.raises(pb.CompileError, match=words) as info:
        pb.grad(fn)(0.5, -1.0) if fn is max_with_a_key else pb.grad(fn)(0.5)
    assert __file__ in str(info.value)


def asserted(a, b):
    assert a > -10.0, "a is too small"
    assert b < 10.0
    return a * b


def test_assert_is_checked_not_differentiated():
    assert pb.grad(asserted, argnums=(0, 1))(0.5, -1.5) == (-1.5, 0.5)
    with pytest.raises(AssertionError, match="a is too small"):
        pb.grad(asserted)(-20.0, 1.0)
    with pytest.raises(AssertionError):
        pb.grad(asserted)(1.0, 20.0)
