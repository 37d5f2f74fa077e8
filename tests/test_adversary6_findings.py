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
# (3,), as pb.jacrev/jacfwd give for np.sum(x * x).  Both give shape (1, 3) for x @ x:
# expected (3,) == 2 * x, got [[0, 2, 4]].

def dot_of_itself(x):
    return x @ x


@pytest.mark.xfail(strict=True, reason="adv6 finding 1: jacobian of 1-d @ 1-d has shape (1, n)")
@pytest.mark.parametrize("mode", ["jacfwd", "jacrev"])
def test_jacobian_of_vector_dot_vector_has_the_input_shape(mode):
    x = np.array([0.0, 1.0, 2.0])
    jac = np.asarray(getattr(pb, mode)(dot_of_itself)(x))
    expected = _central_jacobian(dot_of_itself, x)
    assert jac.shape == expected.shape == (3,)
    np.testing.assert_allclose(jac, expected, rtol=1e-6, atol=1e-8)


# ----- 2: pb.jacfwd of a function of an empty array raises numpy's ValueError -------------
# pb.jacrev gives the (3, 0, 3) zero Jacobian; pb.jacfwd raises "cannot reshape array of
# size 0 into shape (0,newaxis)" (the batched tangents' reshape with -1 over 0 items).

def column_sums_of_squares(x):
    return np.sum(x * x, axis=0)


@pytest.mark.xfail(strict=True, reason="adv6 finding 2: jacfwd of an empty input crashes")
def test_jacfwd_of_an_empty_input():
    x = np.zeros((0, 3))
    jac = np.asarray(pb.jacfwd(column_sums_of_squares)(x))
    assert jac.shape == (3, 0, 3)
    np.testing.assert_array_equal(jac, np.asarray(pb.jacrev(column_sums_of_squares)(x)))
