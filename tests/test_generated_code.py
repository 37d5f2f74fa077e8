"""The shortcuts the generated code takes compute exactly what the long way computes.

- the forward pushes only values the adjoint reads (not every operand of an active op);
- a whole-array reduction used only by ``.asscalar()`` runs as one ``support.scalar_*``
  call, equal to the op followed by ``asscalar``;
- an active ``x * 2`` is emitted as ``support.double(x)`` (``x + x`` on small arrays and
  numbers, ``x * 2`` on large arrays: the same bits), never for other values.
"""

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd
from pullback.runtime import support
from pullback.runtime.support import SCALAR_REDUCTIONS, asscalar, ops
from pullback.testing import check_grads
from tape_helpers import central_gradient


def scaled_loop(a):
    b = a * 2
    while nd.norm(b).asscalar() < 100:
        b = b * 2
    return b


def reads_its_operand(a):
    b = a
    for _ in range(3):
        b = nd.sin(b)    # the adjoint of sin reads b: each old b is pushed
    return b


def norm_used_twice(a):
    n = nd.norm(a)
    if n.asscalar() > 1:
        return a * n
    return a


def mask_doubled(x):
    m = (x > 0) * 2     # booleans times 2 are integers 0/2, not booleans
    return nd.dot(x, m)


VALUES = [
    np.array([0.5, -1.5, 3.0]),
    np.array([[1.0, -2.0], [3.0, 4.0]]),
    np.array([2.5]),
    np.arange(7, dtype=np.float32) - 3,
    np.array([1, -2, 3]),
    np.array([1e300, -1e300, 1e-300]),
    np.array([np.inf, 1.0, -0.0]),
]


@pytest.mark.parametrize("name", SCALAR_REDUCTIONS)
@pytest.mark.parametrize("value", VALUES, ids=lambda v: f"{v.dtype}{v.shape}")
def test_scalar_reductions_equal_the_op_then_asscalar(name, value):
    with np.errstate(over="ignore", invalid="ignore"):
        expected = asscalar(getattr(ops, name)(value))
        got = getattr(support, f"scalar_{name}")(value)
    assert type(got) is type(expected)
    np.testing.assert_array_equal(got, expected)


def test_forward_pushes_only_what_the_adjoint_reads():
    source = pb.adjoint_source(scaled_loop, argnums=0)
    forward = source.split("def scaled_loop_adjoint")[0]
    pushes = [line.strip() for line in forward.splitlines() if "_stack.push" in line]
    assert [p.split(",")[0] for p in pushes] == ["_stack.push(trips1"], forward
    assert "support.scalar_norm(b)" in forward and "ops.norm" not in forward
    check_grads(scaled_loop, (np.array([0.3, -0.7, 1.1]),))


def test_values_the_adjoint_reads_are_still_pushed():
    source = pb.adjoint_source(reads_its_operand, argnums=0)
    assert source.count("_stack.push(b, ") == 1   # inside the loop
    check_grads(reads_its_operand, (np.array([0.3, -0.7, 1.1]),))


def test_a_reduction_used_elsewhere_keeps_its_array():
    source = pb.adjoint_source(norm_used_twice, argnums=0)
    assert "scalar_norm" not in source
    check_grads(norm_used_twice, (np.array([0.3, -0.7, 1.1]),))
    check_grads(norm_used_twice, (np.array([0.1, -0.2, 0.3]),))


@pytest.mark.parametrize("size", [9, support.DOUBLE_BY_ADDING_MAX + 1])
def test_doubling_is_bitwise_equal_on_both_sides_of_the_threshold(size):
    special = [0.0, -0.0, 1.5, -3e307, 1e308, np.inf, -np.inf, np.nan, 5e-324]
    x = np.resize(np.array(special), size)
    with np.errstate(over="ignore"):
        value, grad = pb.value_and_grad(lambda v: v * 2)(x)
        assert "support.double(v)" in pb.adjoint_source(lambda v: v * 2)
        np.testing.assert_array_equal(value, x * 2)
        assert np.array_equal(np.signbit(value), np.signbit(x * 2))
        np.testing.assert_array_equal(support.double(x), x * 2)
    np.testing.assert_array_equal(grad, np.full_like(x, 2.0))


def test_inactive_values_are_doubled_by_multiplying():
    x = np.array([0.5, -1.5, 3.0])
    source = pb.adjoint_source(mask_doubled, argnums=0)
    assert "m = gt1 * 2" in source
    np.testing.assert_array_equal(pb.grad(mask_doubled)(x), np.array([2.0, 0.0, 2.0]))
    check_grads(mask_doubled, (x,))


# ----- Python numbers stay numbers in compiled code -----------------------------------------

def scalar_loop(x, y):
    s = 0.0
    for i in range(20):
        s = s + np.sin(x * i) * y
    return s


def scalar_branches(a, b):
    c = a * b
    while c < 50.0:
        c = c * 1.5 + np.exp(-a)
    if c > 60.0:
        c = c / b
    return np.tanh(c / 100.0) + np.sqrt(a * a + 1.0)


def scalar_and_array(w, x):
    return np.sum(np.tanh(w * x)) * w


@pytest.mark.parametrize("fn, args", [(scalar_loop, (0.3, 1.7)), (scalar_branches, (2.0, 3.0)),
                                      (scalar_branches, (0.5, 0.25))],
                         ids=["loop", "branches", "branches-other-path"])
def test_python_number_arguments_give_python_number_gradients(fn, args):
    grads = pb.grad(fn, argnums=(0, 1))(*args)
    assert all(type(g) is float for g in grads)
    np.testing.assert_allclose(grads, [central_gradient(fn, args, k) for k in range(2)],
                               rtol=1e-6, atol=1e-8)
    value, _ = pb.value_and_grad(fn, argnums=(0, 1))(*args)
    assert isinstance(value, nd.NDArray) and value.shape == (1,)
    assert value.asscalar() == pytest.approx(float(fn(*args)), rel=1e-15)


def test_a_number_times_an_array_gets_the_summed_gradient():
    x = np.array([0.1, -0.4, 0.9])
    gw, gx = pb.grad(scalar_and_array, argnums=(0, 1))(0.7, x)
    assert type(gw) is float and gx.shape == x.shape
    expected = central_gradient(scalar_and_array, (0.7, x))
    assert gw == pytest.approx(expected, rel=1e-6)


# ----- numpy conditions: a reduction only compared for an if/while is a number ----------------

def numpy_scaled_loop(a):
    b = a * 2
    while np.linalg.norm(b) < 100:
        b = b * 2
    if np.sum(b) > 0:
        c = b
    else:
        c = 100 * b
    return np.sum(c)


def comparison_used_as_a_value(a):
    n = np.sum(a)
    big = n > 0          # used in arithmetic below, not only as a condition
    return a * big


def reduction_compared_and_used(a):
    n = np.linalg.norm(a)
    if n > 1:
        return a / n
    return a


@pytest.mark.parametrize("x", [np.array([0.3, -0.7, 1.1]), np.array([-0.3, -0.7, 0.1])])
def test_numpy_conditions_use_numbers(x):
    source = pb.adjoint_source(numpy_scaled_loop, argnums=0)
    assert "support.scalar_norm(b)" in source and "support.scalar_sum(b)" in source
    assert "ops.norm" not in source
    grad = pb.grad(numpy_scaled_loop)(x)
    np.testing.assert_allclose(grad, central_gradient(numpy_scaled_loop, (x,)), rtol=1e-6)


@pytest.mark.parametrize("fn", [comparison_used_as_a_value, reduction_compared_and_used])
def test_reductions_with_other_uses_stay_arrays(fn):
    source = pb.adjoint_source(fn, argnums=0)
    assert "scalar_" not in source
    for x in (np.array([0.3, -0.7, 1.1]), np.array([0.1, -0.2, 0.05])):
        value, grad = pb.value_and_grad(fn)(x)
        np.testing.assert_array_equal(value, fn(x))
        np.testing.assert_allclose(grad, central_gradient(fn, (x,)), rtol=1e-6, atol=1e-9)





def doubled(x):
    return x * 2.0


def test_plain_call_of_numbers_returns_a_number():
    f = pb.compile(doubled)
    assert f(3.0) == 6.0 and type(f(3.0)) is float
    value, grad = pb.value_and_grad(doubled)(3.0)
    assert isinstance(value, nd.NDArray) and value.asscalar() == 6.0 and grad == 2.0


def divided_by_zero(x):
    return x / 0.0


def overflowing(x):
    return np.exp(x) * 2.0


def test_numbers_keep_numpy_semantics_in_both_passes():
    """Differentiated numbers are numpy float64 in the forward and in the adjoint (its
    head gradient too): inf and nan as numpy gives them, never a Python exception."""
    with np.errstate(divide="ignore", over="ignore"):
        value, grad = pb.value_and_grad(divided_by_zero)(1.0)
        assert value.asscalar() == np.inf and grad == np.inf
        value, grad = pb.value_and_grad(overflowing)(1000.0)
        assert value.asscalar() == np.inf and grad == np.inf


# ----- regressions found by review (each was a wrong value, a nan or a crash) -----------------

def norm_only_decides(x, c):
    r = x - c
    z = r * r
    n = np.linalg.norm(z)      # fused as the run's trailing norm; its gradient is None
    if n < 1:
        z = z * 2
    return z


def max_of_nans_only_decides(x):
    a = x * 2
    t = a - 3
    z = np.log(t)              # nan where t < 0: no element equals the max
    m = np.max(z)
    if m > 0:
        a = a * 3
    return a


def active_booleans_doubled(x):
    b = x.astype(bool)
    y = b * 2
    return np.dot(y, x)


def sum_of_a_number(x):
    return np.sum(x) + np.mean(x * 3.0) * np.array([1.0, -2.0])


def dot_of_numbers(x):
    return np.dot(x, x) + np.dot(x, np.array([1.0, 2.0]))


def number_times_a_list(x):
    lst = [1.0, 2.0, 3.0]
    a = np.multiply(x, lst)
    return np.sum(np.sin(a)) + np.sum(np.add(x, lst) * x)


def axis_sum_of_a_number(x):
    return np.sum(x, axis=0) * np.array([1.0, -2.0, 0.5])


def number_plus_a_list_in_a_run(x):
    lst = [1.0, 2.0, 3.0]
    a = np.add(x, lst)
    b = np.sin(x)
    c = a * a
    return np.dot(c, c) + b


def unused_norm_in_a_loop(x):
    i = 0
    y = x
    while i < 3:
        y = y * 0.0
        z = np.sin(y)
        n = np.linalg.norm(z)   # noqa: F841 (the point: a norm nothing uses)
        i = i + 1
    return np.sum(y) + x


def mod_and_floordiv(x):
    return x * (x // 1.0) + x % 1.0 + np.mod(x, 0.75) * np.remainder(x, 0.5)


def unary_plus(x):
    y = +x
    return y * x


def norm_of_a_runtime_order(x, p):
    return np.linalg.norm(x * 2.0, p)


@pytest.mark.parametrize("fn, args", [
    (norm_only_decides, (np.array([1.0, 2.0]), np.array([1.0, 2.0]))),
    (max_of_nans_only_decides, (np.array([1.0, 0.5]),)),
    (sum_of_a_number, (0.7,)),
    (dot_of_numbers, (0.7,)),
    (number_times_a_list, (1.5,)),
    (axis_sum_of_a_number, (1.5,)),
    (number_plus_a_list_in_a_run, (1.5,)),
    (unused_norm_in_a_loop, (np.array([1.0, 2.0]),)),
    (unary_plus, (np.array([1.0, -2.0]),)),
    (mod_and_floordiv, (2.3,)),
    (mod_and_floordiv, (np.array([2.3, -0.4, 0.2]),)),
], ids=lambda v: getattr(v, "__name__", ""))
def test_review_regressions_match_central_differences(fn, args):
    with np.errstate(invalid="ignore"):
        value, grad = pb.value_and_grad(fn)(*args)
        expected_value = fn(*args)
        expected_grad = central_gradient(fn, args)
    value = value.asnumpy() if isinstance(value, nd.NDArray) else value
    np.testing.assert_allclose(np.sum(value), np.sum(expected_value), rtol=1e-14)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-9)


def test_active_booleans_are_doubled_by_multiplying():
    x = np.array([1.5, 0.0, -2.0])
    value, grad = pb.value_and_grad(active_booleans_doubled)(x)
    assert value == active_booleans_doubled(x)   # b * 2 is 0/2, not b + b (logical or)
    # a cast to bool is piecewise constant: no gradient through b (MXNet's Cast passes it
    # through, a wrong derivative pullback does not copy); only the direct y = b * 2
    np.testing.assert_array_equal(grad, [2.0, 0.0, 2.0])


def test_a_norm_order_known_only_at_run_time():
    x = np.array([3.0, -4.0])
    assert pb.grad(norm_of_a_runtime_order)(x, None) == pytest.approx([1.2, -1.6])
    np.testing.assert_allclose(pb.grad(norm_of_a_runtime_order)(x, 1), [2.0, -2.0])


def test_vjp_with_one_argnum_returns_one_gradient():
    out, back = pb.vjp(sum_of_a_number, 0.7, argnums=0)
    assert type(back(np.array([1.0, 1.0]))) is float


@pytest.mark.parametrize("value", [np.array([True, False]), np.True_, True,
                                   np.array([1, -3], dtype=np.int8), np.arange(5000.0),
                                   np.float32(1.5), [1.0, 2.0]],
                         ids=lambda v: type(v).__name__)
def test_double_equals_times_two(value):
    got, expected = support.double(value), value * 2
    assert type(got) is type(expected)
    np.testing.assert_array_equal(got, expected)


def power_of_two(x):
    return np.sum(2.0 ** x - x)


def test_float32_inputs_get_float32_gradients_through_float64_constants():
    """The adjoint of 2.0 ** x meets log(2.0), a float64 number; the gradient still has
    the input's dtype, as on the tape."""
    x = np.array([0.1, 0.5, -0.3, 0.9], dtype=np.float32)
    assert pb.grad(power_of_two)(x).dtype == np.float32
    xn = nd.array(x)
    xn.attach_grad()
    with ag.record():
        y = pb.compile(power_of_two)(xn)
    y.backward()
    assert xn.grad.asnumpy().dtype == np.float32
    np.testing.assert_allclose(xn.grad.asnumpy(), 2.0 ** x * np.log(2.0) - 1, rtol=1e-6)


# ----- numpy's spelling gives numpy's shapes: 0-d reductions ---------------------------------

def stacked_reductions(a, w):
    s = np.stack([np.sum(a), np.sum(a * a), np.dot(a, a), np.linalg.norm(a)])
    return np.sum(s * w)


def branch_on_ndim(a):
    s = np.sum(np.tanh(a) * a)      # fused with its trailing sum
    if s.ndim == 0:
        return s * 2.0
    return s * 3.0


def concatenated_reduction(a):
    return np.sum(np.concatenate([a, np.max(a * 2.0)[None]]) ** 2)


@pytest.mark.parametrize("fuse", ["1", "0"])
@pytest.mark.parametrize("fn, args", [
    (stacked_reductions, (np.array([0.3, -1.2, 0.7, 1.5]), np.array([1.0, 2.0, -1.0, 0.5]))),
    (branch_on_ndim, (np.array([0.3, -1.2, 0.7, 1.5]),)),
    (concatenated_reduction, (np.array([0.3, -1.2, 0.7, 1.5]),)),
], ids=lambda v: getattr(v, "__name__", ""))
def test_numpy_reductions_are_numpy_scalars(fn, args, fuse, monkeypatch):
    monkeypatch.setenv("PULLBACK_FUSE", fuse)
    value, grad = pb.value_and_grad(fn)(*args)
    expected = fn(*args)
    assert np.shape(value) == np.shape(expected) == ()
    assert value == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(grad, central_gradient(fn, args), rtol=1e-6, atol=1e-9)


def test_a_fused_numpy_sum_is_a_numpy_scalar_on_the_native_road(monkeypatch):
    from pullback.runtime import fused

    monkeypatch.setattr(fused, "NATIVE_MIN_SIZE", 1)
    x = np.linspace(-1.0, 1.0, 700)
    value, grad = pb.value_and_grad(branch_on_ndim)(x)
    assert np.shape(value) == () and value == pytest.approx(branch_on_ndim(x), rel=1e-12)
    np.testing.assert_allclose(grad, 2.0 * (np.tanh(x) + x * (1 - np.tanh(x) ** 2)),
                               rtol=1e-12)
