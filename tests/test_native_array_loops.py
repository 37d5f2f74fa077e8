"""How the native road runs array loops (compiler/lower_arrays.py): the bump-allocated
arena, outer products accumulated in place into private gradients, LLVM's vectorisers and
libmvec inside element loops.  Each against the Python road and central differences."""

import numpy as np
import pytest

import pullback as pb
from pullback.compiler.ir import function_ir
from pullback.compiler.lower_function import private_accumulators
from tape_helpers import central_gradient

RTOL = 1e-12   # index-order sums against numpy's pairwise sums and BLAS


def _both_roads(monkeypatch, fn, args, argnums):
    results = []
    for flag in ("1", "0"):
        monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", flag)
        value, grads = pb.value_and_grad(fn, argnums)(*args)
        results.append((float(value), [np.asarray(g, dtype=np.float64) for g in grads]))
        if flag == "1":
            road = pb.explain(fn)
            assert "native (" in road and "Python road" not in road, road
    (on_value, on), (off_value, off) = results
    assert on_value == pytest.approx(off_value, rel=RTOL)
    for a, b in zip(on, off, strict=True):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-13)
    return on


def two_matrices(W, V, h, xs):
    for t in range(xs.shape[0]):
        h = np.tanh(np.dot(W, h) + np.dot(V, xs[t]) * 0.5 + np.dot(W, xs[t]))
    return np.sum(h * h)


def test_outer_products_accumulate_in_place_as_the_python_road_adds_them(monkeypatch):
    rng = np.random.default_rng(3)
    args = (rng.normal(size=(5, 5)) / 2, rng.normal(size=(5, 5)) / 2, rng.normal(size=5),
            rng.normal(size=(7, 5)))
    grads = _both_roads(monkeypatch, two_matrices, args, (0, 1, 2))
    for k, g in zip((0, 1, 2), grads, strict=True):
        np.testing.assert_allclose(g, central_gradient(two_matrices, args, k), rtol=1e-5,
                                   atol=1e-7)


def test_private_accumulators_are_the_gradients_nothing_else_reads():
    source = (
        "def f_forward(_stack, x):\n    return x\n"
        "def f_adjoint(_stack, result_grad):\n"
        "    _ir1 = None\n    A = _ir1\n    B = None\n    D = None\n"
        "    A = support.accumulate(A, rule, result_grad, None, x)\n"
        "    B = support.accumulate(B, rule, result_grad, None, x)\n"
        "    C = B\n"
        "    D = support.add_grads(D, result_grad)\n"
        "    return (A, C, D)\n")
    _, adjoint = function_ir(source, "f")
    assert private_accumulators(adjoint) == {"A"}


def test_rnn_weights_are_private_accumulators():
    from test_native_arrays import rnn

    rng = np.random.default_rng(0)
    args = (rng.normal(size=(4, 4)), rng.normal(size=(4, 3)), rng.normal(size=4),
            rng.normal(size=(6, 3)), np.zeros(4))
    pb.grad(rnn, argnums=(0, 1, 2))(*args)
    _, adjoint = function_ir(pb.adjoint_source(rnn), "rnn")
    names = private_accumulators(adjoint)
    assert {"W_grad", "U_grad"} <= names and "h_grad" not in names


def tanh_sum(v):
    return np.sum(np.tanh(v) * 2.0)


def test_vector_math_gives_an_element_the_same_result_at_every_position(monkeypatch):
    """Lengths 1 to 13 put equal elements in the vectorised body and in the remainder:
    every gradient element is the same number (libmvec's lane 0 in the scalar call)."""
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    seen = set()
    for n in range(1, 14):
        v = np.full(n, 0.37)
        g = pb.grad(tanh_sum)(v)
        assert "native (" in pb.explain(tanh_sum)
        seen |= set(g.tolist())
    assert len(seen) == 1, seen
    np.testing.assert_allclose(seen.pop(), 2.0 * (1.0 - np.tanh(0.37) ** 2), rtol=1e-14)


def sines(M, v):
    return np.sum(np.sin(M * v) + np.exp(v * 0.5) * M)


@pytest.mark.parametrize("shapes", [((3, 9), (9,)), ((4, 1), (7,)), ((2, 5), (1,))])
def test_vectorised_element_loops_flat_and_broadcasting(monkeypatch, shapes):
    rng = np.random.default_rng(11)
    args = tuple(rng.normal(size=s) for s in shapes)
    grads = _both_roads(monkeypatch, sines, args, (0, 1))
    for k, g in enumerate(grads):
        np.testing.assert_allclose(g, central_gradient(sines, args, k), rtol=1e-5, atol=1e-7)


def many_arrays(v, x):
    for i in range(300):
        v = np.sin(v) * 0.99 + x
    return np.sum(v * v)


def test_arrays_beyond_the_first_arena_chunk(monkeypatch):
    """300 steps of arrays of 100 elements and one array of 20000 (both past the first
    64 KiB chunk)."""
    rng = np.random.default_rng(4)
    args = (rng.normal(size=100), rng.normal(size=100))
    _both_roads(monkeypatch, many_arrays, args, (0, 1))
    small = (rng.normal(size=3), rng.normal(size=3))
    grads = _both_roads(monkeypatch, many_arrays, small, (0, 1))
    for k, g in enumerate(grads):
        np.testing.assert_allclose(g, central_gradient(many_arrays, small, k), rtol=1e-5,
                                   atol=1e-7)
    big = (rng.normal(size=20000), rng.normal(size=20000))
    _both_roads(monkeypatch, tanh_sum, big[:1], (0,))


def test_element_loops_call_libmvec_where_the_host_has_avx2(monkeypatch):
    from pullback.compiler import native_road
    from pullback.runtime import native

    roads = []
    original = native_road.gradient_function

    def spy(variant, internal):
        roads.append(original(variant, internal))
        return roads[-1]

    monkeypatch.setattr(native_road, "gradient_function", spy)
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    pb.grad(tanh_sum)(np.linspace(-1.0, 1.0, 9))
    text = roads[-1].ir_text
    assert f"!{native.VECTORISE_METADATA} =" in text
    host = native.host()
    if "tanh" in host.vector_math and "+avx2" in host.features.split(","):
        assert "_ZGVdN4v_tanh" in text and "vector-function-abi-variant" in text
    else:
        assert "_ZGVdN4v_tanh" not in text
