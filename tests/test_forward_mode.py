"""Forward mode on every corpus function: jvp = central differences along random
directions (float64), the transpose identity <u, J v> = <J^T u, v> between jvp and vjp,
jacfwd = jacrev, and hvp = central differences of gradients; plus the API's conventions
and the missing-rule error."""

import numpy as np
import pytest

import pullback as pb
from pullback import nd
from pullback.runtime import primitives as P

from corpus import CASES

IDS = [c["fn"].__name__ for c in CASES]


def _inputs(entry, seed=0):
    rng = np.random.default_rng(seed)
    low, high = (0.2, 2.0) if entry["positive"] else (entry["low"], entry["high"])
    return [rng.uniform(low, high, shape) for shape in entry["shapes"]]


def _flat(value) -> np.ndarray:
    """A value (array, NDArray, number, or a tuple of them) as one float64 vector."""
    if isinstance(value, (tuple, list)):
        return np.concatenate([_flat(v) for v in value]) if value else np.zeros(0)
    if isinstance(value, pb.NDArray):
        value = value.asnumpy()
    return np.asarray(value, dtype=np.float64).reshape(-1)


def _args(entry, arrays):
    return [a.copy() for a in arrays] if entry["numpy"] else [nd.array(a) for a in arrays]


def _value(entry, arrays):
    return _flat(entry["fn"](*_args(entry, arrays)))


def _central_jvp(entry, arrays, directions, eps=1e-6):
    up = [a + eps * d for a, d in zip(arrays, directions, strict=True)]
    down = [a - eps * d for a, d in zip(arrays, directions, strict=True)]
    return (_value(entry, up) - _value(entry, down)) / (2 * eps)


@pytest.mark.parametrize("entry", CASES, ids=IDS)
def test_jvp_matches_central_differences_and_vjp(entry):
    arrays = _inputs(entry)
    rng = np.random.default_rng(1)
    directions = [rng.standard_normal(a.shape) for a in arrays]
    args = _args(entry, arrays)
    tangents = _args(entry, directions)
    out, out_dot = pb.jvp(entry["fn"], args, tangents)
    np.testing.assert_allclose(_flat(out), _value(entry, arrays), rtol=1e-12, atol=1e-12)
    numeric = _central_jvp(entry, arrays, directions)
    np.testing.assert_allclose(_flat(out_dot), numeric, rtol=1e-5, atol=1e-6)
    # the transpose identity <u, J v> = <J^T u, v>, to rounding
    value, pullback = pb.vjp(entry["fn"], *args)
    shown = value if isinstance(value, tuple) else (value,)
    heads = [rng.standard_normal(np.shape(v.asnumpy() if isinstance(v, pb.NDArray) else v))
             for v in shown]
    head_args = [nd.array(h) if isinstance(v, pb.NDArray) else h
                 for h, v in zip(heads, shown, strict=True)]
    grads = pullback(tuple(head_args) if isinstance(value, tuple) else head_args[0])
    left = float(np.dot(_flat(heads), _flat(out_dot)))
    right = float(sum(np.dot(_flat(g), d.reshape(-1))
                      for g, d in zip(grads, directions, strict=True)))
    assert left == pytest.approx(right, rel=1e-10, abs=1e-12)


SMALL = [c for c in CASES if sum(int(np.prod(s)) for s in c["shapes"]) <= 24]


@pytest.mark.parametrize("entry", SMALL, ids=[c["fn"].__name__ for c in SMALL])
def test_jacfwd_equals_jacrev(entry):
    args = _args(entry, _inputs(entry, seed=2))
    if isinstance(entry["fn"](*args), tuple):
        with pytest.raises(TypeError, match="several outputs"):
            pb.jacfwd(entry["fn"])(*args)
        return
    nums = tuple(range(len(args)))
    forward = pb.jacfwd(entry["fn"], argnums=nums)(*args)
    reverse = pb.jacrev(entry["fn"], argnums=nums)(*args)
    for f, r in zip(forward, reverse, strict=True):
        f = f.asnumpy() if isinstance(f, pb.NDArray) else f
        r = r.asnumpy() if isinstance(r, pb.NDArray) else r
        assert f.shape == r.shape
        np.testing.assert_allclose(f, r, rtol=1e-10, atol=1e-12)


def _tape_hvp(fn, arrays, vectors):
    """The reference: reverse-over-reverse on the eager tape (nd code only)."""
    from pullback import autograd as ag

    inputs = [nd.array(a) for a in arrays]
    for x in inputs:
        x.attach_grad()
    with ag.record():
        out = fn(*inputs)
        grads = ag.grad([out], inputs, create_graph=True, retain_graph=True)
        inner = None
        for g, v in zip(grads, vectors, strict=True):
            term = (g * nd.array(v)).sum()
            inner = term if inner is None else inner + term
    inner.backward()
    return [x.grad.asnumpy() for x in inputs]


def _as_args(entry, arrays):
    return [a.copy() for a in arrays] if entry["numpy"] else [nd.array(a) for a in arrays]


SINGLE = [c for c in CASES if not isinstance(c["fn"](*_args(c, _inputs(c))), tuple)]


@pytest.mark.parametrize("entry", CASES, ids=IDS)
def test_hvp_matches_central_differences_of_gradients_and_the_tape(entry):
    """Forward-over-reverse on the compiled road = central differences of pb.grad (every
    corpus function, numpy ones too) = reverse-over-reverse on the tape (nd ones)."""
    arrays = _inputs(entry, seed=3)
    rng = np.random.default_rng(4)
    vectors = [rng.standard_normal(a.shape) for a in arrays]
    nums = tuple(range(len(arrays)))
    gradient, product = pb.hvp(entry["fn"], _as_args(entry, arrays),
                               _as_args(entry, vectors))
    if len(arrays) == 1:
        gradient, product = (gradient,), (product,)
    grad_fn = pb.grad(entry["fn"], argnums=nums)
    eps = 1e-5
    up = grad_fn(*_as_args(entry, [a + eps * v for a, v in zip(arrays, vectors, strict=True)]))
    down = grad_fn(*_as_args(entry, [a - eps * v for a, v in zip(arrays, vectors,
                                                                   strict=True)]))
    np.testing.assert_allclose(_flat(gradient), _flat(grad_fn(*_as_args(entry, arrays))),
                               rtol=1e-10, atol=1e-12)
    numeric = (_flat(up) - _flat(down)) / (2 * eps)
    np.testing.assert_allclose(_flat(product), numeric, rtol=1e-5, atol=1e-6)
    if not entry["numpy"] and entry in SINGLE:
        np.testing.assert_allclose(_flat(product), _flat(_tape_hvp(entry["fn"], arrays,
                                                                   vectors)),
                                   rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("entry", SINGLE, ids=[c["fn"].__name__ for c in SINGLE])
def test_grad_of_grad_and_jvp_of_grad_are_forward_over_reverse(entry):
    """pb.grad(pb.grad(f)) = the gradient of sum(grad f) by central differences;
    pb.jvp(pb.grad(f)) = (grad f, pb.hvp's product); no tape."""
    arrays = _inputs(entry, seed=8)
    nums = tuple(range(len(arrays)))
    inner = pb.grad(entry["fn"], argnums=nums)
    outer = pb.grad(inner, argnums=nums)(*_as_args(entry, arrays))

    def total(values):
        return float(sum(np.sum(_flat(g)) for g in inner(*_as_args(entry, values))))

    eps = 1e-5
    for k, x in enumerate(arrays):
        numeric = []
        for i in range(x.size):
            step = np.zeros(x.size)
            step[i] = eps
            up = [a.copy() for a in arrays]
            down = [a.copy() for a in arrays]
            up[k] = x + step.reshape(x.shape)
            down[k] = x - step.reshape(x.shape)
            numeric.append((total(up) - total(down)) / (2 * eps))
        np.testing.assert_allclose(_flat(outer[k]), numeric, rtol=1e-5, atol=1e-6)
    rng = np.random.default_rng(9)
    vectors = [rng.standard_normal(a.shape) for a in arrays]
    value, dot = pb.jvp(inner, _as_args(entry, arrays), _as_args(entry, vectors))
    gradient, product = pb.hvp(entry["fn"], _as_args(entry, arrays), _as_args(entry, vectors))
    np.testing.assert_allclose(_flat(value), _flat(gradient), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(_flat(dot), _flat(product), rtol=1e-12, atol=1e-14)


SMALL_SINGLE = [c for c in SINGLE if c in SMALL]


@pytest.mark.parametrize("entry", SMALL_SINGLE, ids=[c["fn"].__name__ for c in SMALL_SINGLE])
def test_hessian_is_symmetric_and_the_jacobian_of_the_gradient(entry):
    arrays = _inputs(entry, seed=5)
    for n in range(len(arrays)):
        h = pb.hessian(entry["fn"], argnums=n)(*_as_args(entry, arrays))
        h = h.asnumpy() if isinstance(h, pb.NDArray) else np.asarray(h)
        x = arrays[n]
        h = h.reshape(x.size, x.size)
        np.testing.assert_allclose(h, h.T, rtol=1e-9, atol=1e-10)
        grad_fn = pb.grad(entry["fn"], argnums=n)
        columns = []
        eps = 1e-5
        for k in range(x.size):
            step = np.zeros(x.size)
            step[k] = eps
            shifted = [a.copy() for a in arrays]
            shifted[n] = x + step.reshape(x.shape)
            up = _flat(grad_fn(*_as_args(entry, shifted)))
            shifted[n] = x - step.reshape(x.shape)
            columns.append((up - _flat(grad_fn(*_as_args(entry, shifted)))) / (2 * eps))
        np.testing.assert_allclose(h, np.stack(columns, axis=1), rtol=1e-5, atol=1e-6)


# ----- conventions --------------------------------------------------------------------------

def scalar_loop(x, y):
    total = 0.0
    k = 0
    while k < 3:
        total = total + x * y
        x = x * 0.5
        k = k + 1
    return total


def matrix_poly(a, b):
    return np.tanh(a @ b) * np.sum(a)


def test_numbers_stay_numbers_and_none_means_no_tangent():
    out, dot = pb.jvp(scalar_loop, (2.0, 3.0), (1.0, None))
    # as pb.vjp's value: a number result of numbers is a (1,) NDArray
    assert isinstance(dot, pb.NDArray) and dot.shape == (1,)
    # d/dx of y * (x + x/2 + x/4) = 1.75 * y
    assert float(_flat(dot)[0]) == pytest.approx(5.25)
    assert float(_flat(out)[0]) == pytest.approx(10.5)
    # a Python number runs as in the primal (a Python float): the same value, bit for bit
    assert float(_flat(out)[0]) == pb.compile(scalar_loop)(2.0, 3.0)
    assert pb.jacfwd(scalar_loop)(2.0, 3.0) == pytest.approx(5.25)
    assert pb.jacrev(scalar_loop, argnums=1)(2.0, 3.0) == pytest.approx(3.5)


def test_numpy_in_numpy_out_and_nd_in_nd_out():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((3, 2))
    out, dot = pb.jvp(matrix_poly, (a, b), (np.ones_like(a), np.zeros_like(b)))
    assert type(out) is np.ndarray and type(dot) is np.ndarray and dot.shape == (2, 2)
    jac = pb.jacfwd(matrix_poly, argnums=(0, 1))(a, b)
    assert [j.shape for j in jac] == [(2, 2, 2, 3), (2, 2, 3, 2)]
    np.testing.assert_allclose(np.tensordot(jac[0], np.ones_like(a), axes=2), dot,
                               rtol=1e-12, atol=1e-12)
    x = nd.array(np.array([0.1, 0.2, 0.3]))
    out, dot = pb.jvp(lambda v: nd.exp(v) * 2, (x,), (nd.ones_like(x),))
    assert isinstance(out, pb.NDArray) and isinstance(dot, pb.NDArray)
    np.testing.assert_allclose(dot.asnumpy(), 2 * np.exp(x.asnumpy()), rtol=1e-6)


def test_tangent_source_is_readable_python_without_a_stack():
    source = pb.tangent_source(scalar_loop, argnums=0)
    assert "def scalar_loop_tangent(x, y, x_dot):" in source
    assert "x_dot" in source and "total_dot" in source
    assert "_stack" not in source
    compile(source, "<tangent>", "exec")


def test_hessian_of_a_quadratic_form():
    rng = np.random.default_rng(6)
    m = rng.standard_normal((3, 3))

    def quadratic(v):
        return nd.sum(v * nd.dot(nd.array(m), v))

    h = pb.hessian(quadratic)(nd.array(rng.standard_normal(3)))
    np.testing.assert_allclose(h.asnumpy(), m + m.T, rtol=1e-12, atol=1e-12)


def test_every_differentiable_primitive_has_a_jvp_rule():
    missing = [n for n, p in P.REGISTRY.items() if p.vjps is not None and not p.has_jvp]
    assert missing == []


def _no_jvp_forward(x):
    return x * 3.0


def _no_jvp_vjp(g, ans, x):
    return P.multiply(g, 3.0)


def triple_it(x):
    return np.sin(tripled(x))


tripled = None


def test_a_primitive_without_a_jvp_rule_is_a_compile_error_at_the_users_line():
    global tripled
    tripled = P.primitive("test_no_jvp_triple", _no_jvp_forward, [_no_jvp_vjp])
    try:
        x = np.array([0.5, 1.0])
        with pytest.raises(pb.CompileError, match="no JVP rule") as info:
            pb.jvp(triple_it, (x,), (np.ones(2),))
        assert "test_forward_mode.py" in str(info.value)
    finally:
        P.REGISTRY.pop("test_no_jvp_triple", None)


# ----- random programs ----------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from test_random_programs import SHAPES, _load, programs  # noqa: E402


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=programs(), seed=st.integers(0, 2**16), shapes=SHAPES)
def test_random_programs_jvp_agrees_with_reverse_mode_and_differences(
        tmp_path_factory, source, seed, shapes):
    """<1, J v> = <grad, v> to rounding (the result is summed, as by pb.grad), and J v
    = central differences, on hypothesis's programs (loops, branches, helpers, lists)."""
    fn = _load(source, tmp_path_factory.getbasetemp())
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-1, 1, shapes[0]), rng.uniform(-1, 1, shapes[1])]
    directions = [rng.standard_normal(a.shape) for a in arrays]
    _, out_dot = pb.jvp(fn, [nd.array(a) for a in arrays], [nd.array(d) for d in directions])
    grads = pb.grad(fn, argnums=(0, 1))(*[nd.array(a) for a in arrays])
    reverse = sum(float(np.dot(g.asnumpy().reshape(-1), d.reshape(-1)))
                  for g, d in zip(grads, directions, strict=True))
    assert float(np.sum(_flat(out_dot))) == pytest.approx(reverse, rel=1e-9, abs=1e-11), \
        "failing program:\n" + source
    entry = {"fn": fn, "numpy": False}
    np.testing.assert_allclose(_flat(out_dot), _central_jvp(entry, arrays, directions),
                               rtol=1e-5, atol=1e-6, err_msg="failing program:\n" + source)
    # batched tangents (one pass, a leading axis of directions) = rows of the reverse mode
    args = [nd.array(a) for a in arrays]
    forward = pb.jacfwd(fn, argnums=(0, 1))(*args)
    reverse = pb.jacrev(fn, argnums=(0, 1))(*args)
    for f, r in zip(forward, reverse, strict=True):
        np.testing.assert_allclose(f.asnumpy(), r.asnumpy(), rtol=1e-10, atol=1e-12,
                                   err_msg="failing program:\n" + source)


# ----- every JVP rule of the table, on the primitives' own test cases -------------------------

from pullback import autograd as ag  # noqa: E402
from pullback.compiler.fuse import numpy_source, substitute  # noqa: E402
from pullback.runtime import fused, support  # noqa: E402
from pullback.runtime.ndarray import NDArray  # noqa: E402

import test_primitives  # noqa: E402


def _recorded_nodes(head):
    nodes, seen, todo = [], set(), [head]
    while todo:
        arr = todo.pop()
        if id(arr) in seen or arr._node is None:
            continue
        seen.add(id(arr))
        nodes.append(arr._node)
        todo.extend(a for a in arr._node.args if isinstance(a, NDArray))
    return nodes


def _jvp_contribution(prim, index, t, ans, args, params):
    """Argument ``index``'s tangent contribution as forward mode computes it: the table's
    rule, or the scalar derivative with ``g`` read as the tangent (as tangent code does)."""
    if prim.jvp_from_scalar:
        formula = prim.scalar_vjps[index]
        if formula is None:
            return np.zeros(np.shape(ans))
        names = {"t": t, "ans": ans, "x": args[0], "y": args[1] if len(args) > 1 else None,
                 "_np": np, "_kernels": fused, "support": support}
        source = numpy_source(substitute(formula, {"g": "t", "ans": "ans", "x": "x", "y": "y"}))
        return eval(source, names)   # noqa: S307 (the table's own formula)
    if prim.jvp is not None:
        tangents = [None] * len(args)
        tangents[index] = t
        return prim.jvp(tangents, ans, *args, **params)
    return prim.jvps[index](t, ans, *args, **params)


@pytest.mark.parametrize("case", test_primitives.CASES, ids=test_primitives.CASE_IDS)
def test_every_jvp_rule_matches_differences_and_its_vjp_rule(case):
    xs = [nd.array(a) for a in case.args]
    for x in xs:
        x.attach_grad()
    with ag.record():
        out = case.fn(*xs)
    rng = np.random.default_rng(7)
    checked = 0
    for node in _recorded_nodes(out):
        prim = node.prim
        args = [a._data if isinstance(a, NDArray) else a for a in node.args]
        ans = P.raw_result(prim.forward(*args, **node.params), args)   # as compiled code
        for i, a in enumerate(args):
            if i >= len(prim.vjps) or prim.vjps[i] is None or not (   # the rest: parameters
                    isinstance(a, np.ndarray) and a.dtype.kind == "f"):
                continue
            t = rng.standard_normal(a.shape)
            got = support.tangent_like(_jvp_contribution(prim, i, t, ans, args, node.params),
                                       ans)
            eps = 1e-6
            up = [b + eps * t if k == i else b for k, b in enumerate(args)]
            down = [b - eps * t if k == i else b for k, b in enumerate(args)]
            numeric = (P.raw_result(prim.forward(*up, **node.params), args)
                       - P.raw_result(prim.forward(*down, **node.params), args)) / (2 * eps)
            np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-7,
                                       err_msg=f"{prim.name} argument {i}")
            u = rng.standard_normal(np.shape(ans))
            back = np.asarray(prim.vjps[i](u, ans, *args, **node.params))
            assert float(np.sum(u * got)) == pytest.approx(
                float(np.sum(np.broadcast_to(back, a.shape) * t)), rel=1e-10, abs=1e-12), \
                f"{prim.name} argument {i}: the JVP rule is not the VJP rule's transpose"
            checked += 1
    assert checked > 0


def test_float32_stays_float32_and_compiled_functions_take_jvp_under_record():
    compiled = pb.compile(matrix_poly)
    rng = np.random.default_rng(8)
    a = nd.array(rng.standard_normal((2, 3)).astype(np.float32))
    b = nd.array(rng.standard_normal((3, 2)).astype(np.float32))
    a.attach_grad()
    with ag.record():   # forward mode records nothing on the tape
        out, dot = pb.jvp(compiled, (a, b), (nd.ones_like(a), None))
    assert out.dtype == np.float32 and dot.dtype == np.float32 and out._node is None
    a64, b64 = a.asnumpy().astype(np.float64), b.asnumpy().astype(np.float64)
    _, dot64 = pb.jvp(matrix_poly, (a64, b64), (np.ones_like(a64), None))
    np.testing.assert_allclose(dot.asnumpy(), dot64, rtol=1e-4, atol=1e-5)


def test_a_tangent_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="shape"):
        pb.jvp(matrix_poly, (np.ones((2, 3)), np.ones((3, 2))), (np.ones(3), None))


# ----- fused tangents: one native pass computes a run's values and tangents ----------------

def fused_sum(x, c):
    return np.sum(np.tanh(x) * np.exp(-x * x) + np.sin(x) ** 2 * c)


def fused_mean_and_rows(x, w):
    h = np.tanh(x * w + 1.0) * x
    return np.mean(h * h) + np.sum(h * 0.5)


def fused_norm(x):
    return np.linalg.norm(np.sin(x) * x + 2.0)


def fused_max(x):
    return np.max(np.cos(x) * x - x * x)


def fused_min_nd(x):
    return nd.min(nd.exp(x) * x + x)


FUSED = [(fused_sum, 2), (fused_mean_and_rows, 2), (fused_norm, 1), (fused_max, 1),
         (fused_min_nd, 1)]


@pytest.mark.parametrize("fn, n_args", FUSED, ids=[f.__name__ for f, _ in FUSED])
def test_fused_tangent_kernels_run_natively_and_match_differences_and_vjp(monkeypatch, fn,
                                                                          n_args):
    from pullback.runtime import fused

    # the kernels' own native road: the whole tangent function on the Python road (on the
    # native road the kernels are inlined into it; tests/test_native_tangent.py)
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "0")

    rng = np.random.default_rng(7)
    size = 4 * fused.NATIVE_MIN_SIZE + 3   # the native road (and a masked tail)
    arrays = [rng.uniform(-1, 1, size)]
    if n_args == 2:
        arrays.append(np.float64(0.7) if fn is fused_sum else rng.uniform(-1, 1, size))
    directions = [rng.standard_normal(np.shape(a)) for a in arrays]
    as_args = (lambda xs: [nd.array(a) for a in xs]) if fn is fused_min_nd else list
    out, dot = pb.jvp(fn, as_args(arrays), as_args(directions))
    eps = 1e-6
    up = _flat(fn(*as_args([a + eps * d for a, d in zip(arrays, directions, strict=True)])))
    down = _flat(fn(*as_args([a - eps * d for a, d in zip(arrays, directions, strict=True)])))
    np.testing.assert_allclose(_flat(dot), (up - down) / (2 * eps), rtol=1e-6, atol=1e-8)
    grads = pb.grad(fn, argnums=tuple(range(n_args)))(*as_args(arrays))
    right = sum(float(np.dot(_flat(g), np.reshape(d, -1)))
                for g, d in zip(grads, directions, strict=True))
    assert float(_flat(dot)[0]) == pytest.approx(right, rel=1e-10)
    from pullback.compiler.api import as_compiled

    tangent = as_compiled(fn).tangent_variant((True,) * n_args)
    kernels = [v for v in tangent._tangent.__globals__.values()
               if isinstance(v, fused.FusedKernel) and v.name.endswith("_tangent")]
    from pullback.runtime import native

    assert kernels
    if native.native_enabled():
        assert all(any(k is not None for k in v._native.values()) for v in kernels)
