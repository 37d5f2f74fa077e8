"""Findings of the sixth adversary (adv6): inputs where pb.jacfwd, pb.jacrev, nested
derivatives, the native road and central differences disagree, in what landed on 2026-12-07
(batched forward rules, nested derivatives in compiled code, the native float64-array entry,
the aliasing rule's may-share logic, the differentiated-int check).  Each test asserts the
CORRECT behaviour (plain Python's value and shape, central differences in float64) and is
``xfail(strict=True)`` while the finding is open (an XPASS fails the suite, so a fix must
remove the marker).  Details: /work/briefs/adv6-report.md."""

import numpy as np
import pytest

import pullback as pb


def _central_jacobian(fn, x, eps=1e-6):
    y0 = np.asarray(fn(x))
    jac = np.zeros(y0.shape + x.shape)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        jac[(Ellipsis,) + i] = (np.asarray(fn(xp)) - np.asarray(fn(xm))) / (2 * eps)
    return jac


# ----- 1: the Jacobian of a 0-d matmul result (1-d @ 1-d) has an extra leading axis -----
# x @ x of a 1-d x is a 0-d value (np.shape(x @ x) == ()), so its Jacobian has x's shape
# (3,), as pb.jacrev/jacfwd give for np.sum(x * x).  Both gave shape (1, 3) for x @ x
# (fixed: `@` computes numpy's 0-d result, as np.matmul does; the family in
# tests/test_forward_shapes.py).

def dot_of_itself(x):
    return x @ x


@pytest.mark.parametrize("mode", ["jacfwd", "jacrev"])
def test_jacobian_of_vector_dot_vector_has_the_input_shape(mode):
    x = np.array([0.0, 1.0, 2.0])
    jac = np.asarray(getattr(pb, mode)(dot_of_itself)(x))
    expected = _central_jacobian(dot_of_itself, x)
    assert jac.shape == expected.shape == (3,)
    np.testing.assert_allclose(jac, expected, rtol=1e-6, atol=1e-8)


# ----- 2: pb.jacfwd of a function of an empty array raises numpy's ValueError -------------
# pb.jacrev gives the (3, 0, 3) zero Jacobian; pb.jacfwd raised "cannot reshape array of
# size 0 into shape (0,newaxis)" (the batched tangents' reshape with -1 over 0 items; fixed).

def column_sums_of_squares(x):
    return np.sum(x * x, axis=0)


def test_jacfwd_of_an_empty_input():
    x = np.zeros((0, 3))
    jac = np.asarray(pb.jacfwd(column_sums_of_squares)(x))
    assert jac.shape == (3, 0, 3)
    np.testing.assert_array_equal(jac, np.asarray(pb.jacrev(column_sums_of_squares)(x)))


# ----- 3: pb.jacfwd of np.concatenate with a list literal beside the array crashes --------
# np.concatenate([x, [1.0, 2.0]]) and np.concatenate([[0.0], x]): pb.jacrev gives the right
# (n + k, n) Jacobian (and np.ones(2) in place of the list works in both), pb.jacfwd raises
# numpy's "all the input array dimensions except for the concatenation axis must match"
# (the constant list is not widened to the batch of tangents, as np.ones(2) is).

def concat_list_after(x):
    return np.concatenate([x, [1.0, 2.0]])


def concat_list_before(x):
    return np.concatenate([[0.0], x * x])


@pytest.mark.parametrize("fn", [concat_list_after, concat_list_before])
def test_jacfwd_of_concatenate_with_a_list_literal(fn):
    x = np.array([0.1, -0.2, 0.3])
    jac = np.asarray(pb.jacfwd(fn)(x))
    np.testing.assert_allclose(jac, _central_jacobian(fn, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(jac, np.asarray(pb.jacrev(fn)(x)), rtol=1e-12)


# ----- 4 (over-refusal): np.copy(v) of a differentiated v is refused ---------------------
# v.copy(), np.array(v) and v.astype(np.float64) are followed; the function spelling
# np.copy(v) is refused: "no gradient rule for np.copy, and it cannot be transformed".
# Expected: value 8.03 and gradient [5, -2.4, 4, 0.6] (as for v.copy()).

def write_into_np_copy(v):
    y = np.copy(v)
    y[0] = 5.0
    return np.sum(y * v)


@pytest.mark.xfail(strict=True, reason="adv6 finding 4: np.copy of a differentiated value refused")
def test_np_copy_is_followed_like_the_method():
    v = np.array([0.5, -1.2, 2.0, 0.3])
    value, grad = pb.value_and_grad(write_into_np_copy)(v.copy())
    np.testing.assert_allclose(value, write_into_np_copy(v.copy()), rtol=1e-12)
    np.testing.assert_allclose(grad, _central_jacobian(write_into_np_copy, v),
                               rtol=1e-6, atol=1e-8)


# ----- 5 (over-refusal): np.argmax / np.argsort of a differentiated value used as an index --
# v.argmax() is inert (calls.INERT_METHODS) and followed; the function spellings np.argmax(v)
# and np.argsort(v) are refused: "no gradient rule for np.argmax, and it cannot be
# transformed: v carries a gradient into it".  Their results are ints (no gradient), so the
# gradient is that of the indexed read: central differences.

def twice_the_largest(v):
    k = np.argmax(v)
    return v[k] * 2.0


def weighted_by_rank(v):
    order = np.argsort(v)
    return np.sum(v[order] * np.arange(4.0))


@pytest.mark.xfail(strict=True, reason="adv6 finding 5: np.argmax/np.argsort refused")
@pytest.mark.parametrize("fn", [twice_the_largest, weighted_by_rank])
def test_integer_valued_numpy_functions_as_indices(fn):
    v = np.array([0.5, -1.2, 2.0, 0.3])
    value, grad = pb.value_and_grad(fn)(v.copy())
    np.testing.assert_allclose(value, fn(v.copy()), rtol=1e-12)
    np.testing.assert_allclose(grad, _central_jacobian(fn, v), rtol=1e-6, atol=1e-8)
