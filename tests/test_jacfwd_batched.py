"""pb.jacfwd's batched rules (primitives.BATCHED_JVPS, BATCHED_JOINT_JVPS): the structural
ops a Jacobian goes through take all directions in one numpy call; each case, the ones the
batched forms cover and the ones that fall back to one call per direction, checked against
jacrev and central differences in float64, and the batched forms seen to run."""

import numpy as np
import pytest

import pullback as pb
from pullback.runtime import primitives as P


def matmul_stack_x(a):            # x (p, m, k) @ y (k, n): batched form
    return np.sum(np.tanh(a @ W23) ** 2, axis=-1)


def matmul_y_deeper(a):           # x (m, k) @ y (p, k, n): y has more stack axes, x's rule falls back
    return np.sin(a @ np.reshape(V24, (2, 3, 4)))


def matmul_vector(v):             # 1-d operands on either side
    return np.cos(v @ W23) + np.cos(W32 @ v[:2]) + (v @ v)


def matmul_y_side(b):             # x (m, k) @ y (k, n) and x (k,) @ y (p, k, n): y's rule
    return np.tanh(W32 @ b)[:, :2] + np.tanh(np.ones(3) @ np.reshape(b, (1, 3, 2)))


def reshape_transpose(a):
    t = np.transpose(np.reshape(a, (2, 3, 2)), (2, -3, 1))
    return np.reshape(np.exp(t.T), (-1,)) * 0.5


def reductions(a):
    m = np.reshape(a, (2, 3, 2))
    return (np.sum(m * m, axis=(0, -1)) + np.mean(np.sin(m), axis=1)[0, 0]
            + np.sum(np.mean(m, axis=-2, keepdims=True), axis=0)[0, 1])


def indexing(a):
    m = np.reshape(a, (3, 4))
    picked = m[[0, 2]]                      # one index array: batched
    apart = m[[0, 1], 1:3][:, [1, 0]]       # separated from a slice by nothing: batched
    corner = m[1, -2:]                      # ints and slices
    cross = np.reshape(a[:12], (2, 3, 2))[[0, 1], :, [1, 0]]   # separated: per direction
    return (np.sum(picked ** 2, axis=0)[:2] + np.sum(apart, axis=1) * corner
            + np.sum(cross, axis=1))


def joins(a, b):
    c = np.concatenate((np.sin(a), b * 3.0, np.ones(2)))
    s = np.stack((a * b, np.cos(b)), axis=-1)
    return c[1:4] + np.sum(s, axis=1)


W23 = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
W32 = np.linspace(0.5, -0.7, 6).reshape(3, 2)
V24 = np.linspace(-0.3, 0.9, 24)


def _central(fn, args, n, eps=1e-6):
    x = np.asarray(args[n], dtype=np.float64)
    columns = []
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = eps
        up = list(args)
        down = list(args)
        up[n] = x + e.reshape(x.shape)
        down[n] = x - e.reshape(x.shape)
        columns.append((np.asarray(fn(*up)) - np.asarray(fn(*down))) / (2 * eps))
    out = np.asarray(fn(*args))
    return np.stack(columns, axis=-1).reshape(out.shape + x.shape)


RNG = np.random.default_rng(7)
CASES = [
    (matmul_stack_x, (RNG.standard_normal((4, 3, 2)),)),
    (matmul_y_deeper, (RNG.standard_normal((2, 3)) * 0.5,)),
    (matmul_vector, (RNG.standard_normal(2),)),
    (matmul_y_side, (RNG.standard_normal((2, 3)) * 0.5,)),
    (reshape_transpose, (RNG.standard_normal(12),)),
    (reductions, (RNG.standard_normal(12),)),
    (indexing, (RNG.standard_normal(12),)),
    (joins, (RNG.standard_normal(3), RNG.standard_normal(3))),
]


@pytest.mark.parametrize("fn,args", CASES, ids=[c[0].__name__ for c in CASES])
def test_jacfwd_equals_jacrev_and_central_differences(fn, args):
    for n in range(len(args)):
        forward = pb.jacfwd(fn, argnums=n)(*args)
        reverse = pb.jacrev(fn, argnums=n)(*args)
        np.testing.assert_allclose(forward, reverse, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(forward, _central(fn, args, n), rtol=1e-6, atol=1e-7)


def test_the_batched_forms_run_and_agree_with_the_per_direction_rules(monkeypatch):
    calls = []
    table = dict(P.BATCHED_JVPS)
    for rule, (position, form) in table.items():
        def counted(*a, _form=form, _rule=rule, **k):
            result = _form(*a, **k)
            calls.append((_rule.__name__, result is not None))
            return result
        monkeypatch.setitem(P.BATCHED_JVPS, rule, (position, counted))
    for fn, args in CASES:
        pb.jacfwd(fn)(*args)
    taken = {name for name, done in calls if done}
    declined = {name for name, done in calls if not done}
    assert {"reshape_raw_jvp", "transpose_jvp", "sum_jvp", "mean_jvp",
            "matmul_jvp_x", "matmul_jvp_y"} <= taken
    assert "matmul_jvp_x" in declined   # the fallback case ran too


def test_float32_jacobians_through_joins_match_reverse_mode():
    a = np.linspace(0.1, 0.6, 3, dtype=np.float32)
    b = np.linspace(-0.2, 0.4, 3, dtype=np.float32)
    forward = pb.jacfwd(joins, argnums=1)(a, b)
    reverse = pb.jacrev(joins, argnums=1)(a, b)
    assert forward.dtype == reverse.dtype
    np.testing.assert_allclose(forward, reverse, rtol=1e-6)


def lone_index(a):
    m = np.reshape(a, (2, 3, 2))
    return (m[[1, 0], :, 1][:, :2] * 2.0 + m[0, :, [1, 0, 1]].T[:2, :2][0, 0]
            + np.sum(m[:, [True, False, True], :], axis=1)[:, 0:1] * m[1, [0, 2], :][0])


@pytest.mark.parametrize("batch", [2, 3, 12])
def test_separated_advanced_indices_keep_the_directions_first(batch):
    """An integer and an array separated by a slice put their axes first in numpy; with
    2 directions the wrong order had the right shape (a silently transposed Jacobian)."""
    a = np.linspace(-1.0, 1.0, 12)
    x = a[:batch] if batch < 12 else a
    fn = lone_index if batch == 12 else None
    if fn is None:
        def fn_local(v):
            return lone_index(np.concatenate((v, a[batch:])))
        expected = _central(fn_local, (x,), 0)
        got = pb.jacfwd(_prefix_index, argnums=0)(x, a[batch:])
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got, pb.jacrev(_prefix_index, argnums=0)(x, a[batch:]),
                                   rtol=1e-12, atol=1e-12)
    else:
        np.testing.assert_allclose(pb.jacfwd(fn)(x), _central(fn, (x,), 0), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(pb.jacfwd(fn)(x), pb.jacrev(fn)(x), rtol=1e-12, atol=1e-12)


def _prefix_index(v, rest):
    return lone_index(np.concatenate((v, rest)))


C10 = np.linspace(0.1, 1.0, 10)


def separated_same_size(v):
    m = (np.reshape(np.concatenate((v, C10)), (2, 3, 2))
         * np.reshape(np.concatenate((v * v, v, v, v, v, v)), (2, 3, 2)))
    return m[[1, 0], :, 1] * 2.0


def test_separated_advanced_indices_with_as_many_directions_as_indices():
    """Two directions, two indices: the misplaced axis had the right shape (main gave a
    Jacobian off by 2.0 against jacrev, no error)."""
    v = np.array([0.3, 0.7])
    np.testing.assert_allclose(pb.jacfwd(separated_same_size)(v),
                               pb.jacrev(separated_same_size)(v), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pb.jacfwd(separated_same_size)(v),
                               _central(separated_same_size, (v,), 0), rtol=1e-6, atol=1e-7)


def separated_write(v):
    m = np.reshape(np.concatenate((v, C10)), (2, 3, 2)) * 1.0
    m[[1, 0], :, 1] = np.reshape(np.concatenate((v * v, v, v)), (2, 3)) * 3.0
    m[0, 1:, [0]] = np.sin(v)
    return m * m[::-1]


def test_batched_writes_with_separated_advanced_indices():
    v = np.array([0.3, 0.7])
    np.testing.assert_allclose(pb.jacfwd(separated_write)(v),
                               pb.jacrev(separated_write)(v), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pb.jacfwd(separated_write)(v),
                               _central(separated_write, (v,), 0), rtol=1e-6, atol=1e-7)
