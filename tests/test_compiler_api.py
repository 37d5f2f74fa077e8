"""The public compiler API: compile, grad, value_and_grad, vjp, and compiled calls on the tape."""

import math

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd
from pullback.compiler.api import as_compiled
from pullback.runtime.stack import Stack, StackMismatchError
from tape_helpers import central_gradient


def cube_sum(x):
    return (x * x * x).sum()


def loop_fn(x, n):
    y = x
    for i in range(n):
        y = y * x + i
    return y


def one_elementwise_op(x):
    return nd.dot(x, x) * 2.0


def two_outputs(x):
    return x * 2, nd.sin(x)


def test_decorator_with_and_without_arguments():
    @pb.compile
    def f(x):
        return x * 3

    @pb.compile(fallback="tape")
    def g(x):
        return x * 4

    x = nd.array([1.0, 2.0])
    assert f(x).asnumpy().tolist() == [3.0, 6.0]
    assert g(x).asnumpy().tolist() == [4.0, 8.0]
    assert f.__name__ == "f"


def test_outside_record_runs_the_forward_without_stack_work():
    compiled = pb.compile(loop_fn)
    x = nd.array([0.5, 2.0], dtype="float64")
    out = compiled(x, 3)
    np.testing.assert_allclose(out.asnumpy(), loop_fn(x, 3).asnumpy())
    assert list(compiled._variants) == [(False, False)]
    assert "_stack.push" not in compiled._variants[(False, False)].source
    numpy_out = pb.compile(loop_fn)(np.array([0.5, 2.0]), 3)
    assert isinstance(numpy_out, np.ndarray)


def test_compiled_once_per_activity_pattern():
    compiled = pb.compile(loop_fn)
    x = nd.array([0.5, 0.2])
    x.attach_grad()
    for _ in range(3):
        with ag.record():
            y = compiled(x, 3)
        y.backward()
    assert list(compiled._variants) == [(True, False)]


def test_under_record_head_gradient_and_grad_req_add():
    compiled = pb.compile(loop_fn)
    x = nd.array([0.5, -0.3], dtype="float64")
    x.attach_grad(grad_req="add")
    head = nd.array([2.0, 3.0], dtype="float64")
    for _ in range(2):
        with ag.record():
            y = compiled(x, 2)
        y.backward(head)
    xv = x.asnumpy()
    # y = (x*x + 0)*x + 1 = x^3 + 1 -> dy/dx = 3x^2
    np.testing.assert_allclose(x.grad.asnumpy(), 2 * head.asnumpy() * 3 * xv ** 2)


def test_under_record_retain_graph_and_freed_graph():
    compiled = pb.compile(cube_sum)
    x = nd.array([1.0, 2.0], dtype="float64")
    x.attach_grad()
    with ag.record():
        y = compiled(x)
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.asnumpy(), 3 * x.asnumpy() ** 2)
    with pytest.raises(pb.GraphFreedError, match="retain_graph"):
        y.backward()


def test_compiled_node_mixes_with_eager_ops():
    compiled = pb.compile(loop_fn)
    x = nd.array([0.5, -0.3], dtype="float64")
    x.attach_grad()
    with ag.record():
        z = nd.exp(compiled(nd.sin(x), 2)).sum()
    z.backward()
    eager = nd.array([0.5, -0.3], dtype="float64")
    eager.attach_grad()
    with ag.record():
        w = nd.exp(loop_fn(nd.sin(eager), 2)).sum()
    w.backward()
    np.testing.assert_allclose(x.grad.asnumpy(), eager.grad.asnumpy(), rtol=1e-12)


def test_create_graph_through_compiled_function():
    compiled = pb.compile(cube_sum)
    x = nd.array([1.0, 2.0], dtype="float64")
    x.attach_grad()
    with ag.record():
        y = compiled(x)
        (dx,) = ag.grad([y], [x], create_graph=True)
        z = dx.sum()
    z.backward()
    np.testing.assert_allclose(dx.asnumpy(), 3 * x.asnumpy() ** 2)
    np.testing.assert_allclose(x.grad.asnumpy(), 6 * x.asnumpy())


def test_several_outputs_under_record():
    compiled = pb.compile(two_outputs)
    x = nd.array([0.1, 0.7], dtype="float64")
    x.attach_grad()
    with ag.record():
        a, b = compiled(x)
        total = (a * 3).sum() + (b * 5).sum()
    total.backward()
    np.testing.assert_allclose(x.grad.asnumpy(), 6 + 5 * np.cos(x.asnumpy()))


def test_grad_argnums_int_and_tuple():
    def f(x, y):
        return x * y * y

    x, y = nd.array([1.0, 2.0], dtype="float64"), nd.array([3.0, 4.0], dtype="float64")
    gx = pb.grad(f)(x, y)
    gx2, gy = pb.grad(f, argnums=(0, 1))(x, y)
    np.testing.assert_allclose(gx.asnumpy(), (y * y).asnumpy())
    np.testing.assert_allclose(gx2.asnumpy(), (y * y).asnumpy())
    np.testing.assert_allclose(gy.asnumpy(), (2 * x * y).asnumpy())
    with pytest.raises(ValueError, match="argnums"):
        pb.grad(f, argnums=2)(x, y)


def test_value_and_grad_and_python_floats():
    def f(x, y):
        return x * x * y

    value, (gx, gy) = pb.value_and_grad(f, argnums=(0, 1))(3.0, 2.0)
    assert isinstance(gx, float) and isinstance(gy, float)
    assert gx == pytest.approx(12.0) and gy == pytest.approx(9.0)
    assert float(np.asarray(value).reshape(-1)[0]) == pytest.approx(18.0)


def test_numpy_in_numpy_out():
    def f(x):
        return np.sum(np.sin(x) * x)

    x = np.array([0.1, 0.5, 0.9])
    g = pb.grad(f)(x)
    assert isinstance(g, np.ndarray) and g.shape == x.shape
    np.testing.assert_allclose(g, np.cos(x) * x + np.sin(x))


def test_numpy_function_without_rule_names_it():
    def f(x):
        return np.sum(np.nancumsum(x))

    with pytest.raises(pb.CompileError, match="nancumsum"):
        pb.grad(f)(np.array([1.0, 2.0]))


def test_vjp_with_head_gradient():
    def f(x):
        return nd.exp(x) * 2

    x = nd.array([0.0, 1.0], dtype="float64")
    out, pullback = pb.vjp(f, x)
    (gx,) = pullback(nd.array([1.0, 0.5], dtype="float64"))
    np.testing.assert_allclose(out.asnumpy(), 2 * np.exp([0.0, 1.0]))
    np.testing.assert_allclose(gx.asnumpy(), [2.0, np.e])
    (again,) = pullback(nd.array([1.0, 0.5], dtype="float64"))
    np.testing.assert_allclose(again.asnumpy(), gx.asnumpy())


def test_lambda_and_code_object_cache():
    square = lambda v: v * v  # noqa: E731
    g = pb.grad(square)(nd.array([3.0], dtype="float64"))
    assert g.asnumpy().tolist() == [6.0]
    assert as_compiled(cube_sum) is as_compiled(cube_sum)


def test_integer_counters_get_no_adjoint_code():
    source = pb.adjoint_source(loop_fn, argnums=0)
    assert "i_grad" not in source and "n_grad" not in source
    assert "reversed(_stack.pop('range@" in source


def test_debug_stack_detects_unpaired_pop():
    stack = Stack(debug=True)
    stack.push(1, "b@3")
    with pytest.raises(StackMismatchError, match="b@3"):
        stack.pop("c@4")
    with pytest.raises(StackMismatchError, match="empty"):
        Stack(debug=True).pop("x@1")


def test_tracebacks_point_into_generated_file():
    def fails(x):
        y = x * 2
        return nd.dot(y, nd.ones((5, 5)))

    with pytest.raises(ValueError) as info:
        pb.grad(fails)(nd.array([1.0, 2.0]))
    frames = [f.path for f in info.traceback]
    assert any("generated" in str(f) and str(f).endswith(".py") for f in frames)


def test_kernel_ir_shows_named_llvm_values():
    from pullback.runtime import native

    def fused_loss(x):
        return np.sum(np.tanh(x) * np.exp(-x * x))

    if not native.native_enabled():
        pytest.skip("native kernels are disabled (PULLBACK_NATIVE=0)")
    ir_text = pb.kernel_ir(fused_loss, dtype="float64")
    assert "(forward, float64)" in ir_text and "(adjoint, float64)" in ir_text
    assert '%"tanh1"' in ir_text and "define void" in ir_text
    assert "(forward, float32)" in pb.kernel_ir(cube_sum, dtype="float32")  # x*x*x + sum
    assert pb.kernel_ir(one_elementwise_op) == ""   # a lone elementwise op is no kernel


def repeat_scale(x, n=3, scale=2.0):
    for _ in range(n):
        x = x * scale
    return x


def test_keyword_arguments_and_defaults():
    compiled = pb.compile(repeat_scale)
    x = nd.array([1.0, 2.0], dtype="float64")
    assert compiled(x).asnumpy().tolist() == [8.0, 16.0]
    assert compiled(x, scale=3.0).asnumpy().tolist() == [27.0, 54.0]
    assert pb.grad(repeat_scale)(x, n=1).asnumpy().tolist() == [2.0, 2.0]
    x.attach_grad()
    with ag.record():
        y = compiled(x, 2, scale=0.5)
    y.backward()
    assert x.grad.asnumpy().tolist() == [0.25, 0.25]
    with pytest.raises(TypeError):
        compiled(x, bogus=1)


def test_threads_compile_and_differentiate_the_same_function():
    import threading

    def shared(x):
        y = x
        for _ in range(3):
            y = nd.sin(y) * x
        return y

    results, errors = [], []
    barrier = threading.Barrier(4)

    def work():
        try:
            barrier.wait()
            results.append(pb.grad(shared)(nd.array([0.3, 0.7], dtype="float64")).asnumpy())
        except Exception as exc:   # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 4
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


# ----- numpy parameters: read as numpy means them, or refused ------------------------------

def norm_1_positional(v):
    return np.linalg.norm(v, 1)


def norm_2_positional(v):
    return np.linalg.norm(v, 2) * 3.0


def norm_ord_keyword(v):
    return np.linalg.norm(v, ord=2)


def frobenius(m):
    return np.linalg.norm(m)


def row_norms(m):
    return np.sum(np.linalg.norm(m, 2, 1))


@pytest.mark.parametrize("fn, x", [
    (norm_1_positional, np.array([0.5, -1.5, 2.0])),
    (norm_2_positional, np.array([0.5, -1.5, 2.0])),
    (norm_ord_keyword, np.array([0.5, -1.5, 2.0])),
    (frobenius, np.array([[0.5, -1.5], [2.0, 0.25]])),
    (row_norms, np.array([[0.5, -1.5, 1.0], [2.0, 0.25, -0.75]])),
], ids=lambda v: getattr(v, "__name__", ""))
def test_numpy_norm_reads_ord_and_axis_as_numpy_does(fn, x):
    value, grad = pb.value_and_grad(fn)(x)
    np.testing.assert_allclose(np.sum(value), np.sum(fn(x)), rtol=1e-14)
    np.testing.assert_allclose(grad, central_gradient(fn, (x,)), rtol=1e-7, atol=1e-9)


def test_numpy_matrix_norm_with_an_order_is_refused_not_misread():
    with pytest.raises(ValueError, match="matrix norm"):
        pb.grad(norm_2_positional)(np.array([[0.5, -1.5], [2.0, 0.25]]))


def sum_with_dtype_positional(x):
    return np.sum(x, 0, None)


def sum_with_dtype_keyword(x):
    return np.sum(x, dtype=np.float64)


def method_sum_with_dtype(x):
    return x.sum(0, None)


def dot_with_out(x):
    return np.dot(x, x, None)


@pytest.mark.parametrize("fn, text", [
    (sum_with_dtype_positional, "np.sum(x, 0, None)"),
    (sum_with_dtype_keyword, "np.sum(x, dtype=np.float64)"),
    (method_sum_with_dtype, "x.sum(0, None)"),
    (dot_with_out, "np.dot(x, x, None)"),
], ids=lambda v: getattr(v, "__name__", "text"))
def test_numpy_parameters_pullback_would_misread_are_compile_errors(fn, text):
    with pytest.raises(pb.CompileError) as info:
        pb.grad(fn)(np.array([0.5, -1.5, 2.0]))
    message = str(info.value)
    assert "test_compiler_api.py" in message and text in message
    assert "by keyword" in message or "does not support" in message


# ----- the math module: differentiable where it has a primitive, refused elsewhere ---------

def math_functions(x, y):
    return (math.sin(x) * math.exp(-x) + math.sqrt(x * x + 1.0) * math.log(y)
            + x ** 3.0 + math.fabs(y) * math.tanh(x) + math.cos(y) / math.log1p(y))


def math_log_base(x):
    return math.log(x, 2.0)


def math_floor_of_gradient(x):
    return math.floor(x) * x


def math_floor_of_a_count(x, n):
    s = x
    for _ in range(math.floor(n)):
        s = s * x
    return s


def test_math_functions_are_differentiated():
    gx, gy = pb.grad(math_functions, argnums=(0, 1))(0.7, 1.3)
    eps = 1e-6
    fx = (math_functions(0.7 + eps, 1.3) - math_functions(0.7 - eps, 1.3)) / (2 * eps)
    fy = (math_functions(0.7, 1.3 + eps) - math_functions(0.7, 1.3 - eps)) / (2 * eps)
    assert gx == pytest.approx(fx, rel=1e-7) and gy == pytest.approx(fy, rel=1e-7)


def math_pow_of_gradient(x):
    return math.pow(x, 3.0)


def float_of_gradient(x):
    return float(x) * x


def max_of_gradient(x):
    return max(x, 0.1) * 3.0


def builtin_abs(x):
    return abs(x) * 2.0


def math_pow_of_counts(x, n):
    return x * math.pow(n, 20) + x * math.pow(n, -1)


@pytest.mark.parametrize("fn, name", [(math_log_base, "math.log"),
                                      (math_floor_of_gradient, "math.floor"),
                                      (math_pow_of_gradient, "math.pow"),
                                      (float_of_gradient, "float")])
def test_calls_that_would_cut_a_gradient_refuse_differentiated_values(fn, name):
    with pytest.raises(pb.CompileError, match=f"no gradient rule for {name}"):
        pb.grad(fn)(1.5)


def test_builtin_max_is_followed_as_python_computes_it():
    # was refused; now a comparison and a branch (normalize.fold, issue 11 item 4)
    assert pb.grad(max_of_gradient)(1.5) == 3.0
    assert pb.grad(max_of_gradient)(0.05) == 0.0


def test_builtin_abs_is_differentiated():
    assert pb.grad(builtin_abs)(-1.5) == -2.0
    np.testing.assert_array_equal(pb.grad(builtin_abs)(np.array([1.0, -2.0])), [2.0, -2.0])


def test_math_pow_of_plain_numbers_is_pythons():
    assert pb.grad(math_pow_of_counts)(1.0, 10) == pytest.approx(1e20 + 0.1)


def test_math_functions_of_plain_numbers_run_as_written():
    assert pb.grad(math_floor_of_a_count)(1.5, 2.7) == pytest.approx(3 * 1.5 ** 2)


def gather_scale(x, idx, w):
    return x[idx] * w


def test_vjp_argnums_differentiates_only_those_arguments():
    x, idx, w = np.array([1.0, 2.0, 3.0]), np.array([2, 0]), np.array([0.5, -1.0])
    out, back = pb.vjp(gather_scale, x, idx, w, argnums=(0, 2))
    np.testing.assert_array_equal(out, x[idx] * w)
    gx, gw = back(np.array([1.0, 10.0]))
    np.testing.assert_array_equal(gx, [-10.0, 0.0, 0.5])
    np.testing.assert_array_equal(gw, [3.0, 10.0])
    variant = as_compiled(gather_scale).variant((True, False, True))
    assert variant.source.count("_grad = support") >= 1 and "idx_grad" not in variant.source


# ----- np.concatenate / np.stack of lists and tuples ---------------------------------------

def concat_rows(a, b):
    return np.sum(np.tanh(np.concatenate([a, b * 2.0, a], axis=0)) ** 2)


def concat_columns(a, b):
    return np.sum(np.concatenate((a, np.sin(b)), axis=-1) * np.arange(5.0))


def stack_last(a, b):
    s = np.stack([a * b, a], axis=-1)
    return np.sum(s * s * np.array([1.0, 3.0]))


def stack_built_in_a_loop(a, b):
    rows = []
    h = a
    for k in range(3):
        h = np.tanh(h * b + k)
        rows.append(h)
    return np.sum(np.stack(rows) * np.arange(3.0)[:, None])


def stack_of_numbers(x, y):
    v = np.stack([x * y, np.sin(x), 2.0])
    return np.sum(v * v)


@pytest.mark.parametrize("fn, args", [
    (concat_rows, (np.array([[0.5, -1.0], [0.2, 0.1]]), np.array([[0.3, 0.7]]))),
    (concat_columns, (np.array([[0.5, -1.0], [0.2, 0.1]]), np.array([[0.3, 0.7, 1.1],
                                                                      [0.0, -0.4, 0.9]]))),
    (stack_last, (np.array([0.5, -1.0, 0.25]), np.array([0.3, 0.7, -2.0]))),
    (stack_built_in_a_loop, (np.array([0.5, -1.0]), np.array([0.3, 0.7]))),
    (stack_of_numbers, (0.4, -1.3)),
], ids=lambda v: getattr(v, "__name__", ""))
def test_concatenate_and_stack_are_differentiated(fn, args):
    grads = pb.grad(fn, argnums=(0, 1))(*args)
    value = pb.value_and_grad(fn)(*args)[0]
    value = value.asnumpy() if isinstance(value, nd.NDArray) else value
    assert float(np.sum(value)) == pytest.approx(fn(*args), rel=1e-14)
    for k, g in enumerate(grads):
        np.testing.assert_allclose(g, central_gradient(fn, args, k), rtol=1e-6, atol=1e-9)


def concat_with_dtype(a):
    return np.sum(np.concatenate([a, a], dtype=np.float32))


def test_concatenate_parameters_pullback_does_not_support_are_compile_errors():
    with pytest.raises(pb.CompileError, match=r"np.concatenate\(\): pullback supports"):
        pb.grad(concat_with_dtype)(np.ones(2))
