"""The families behind the third adversary's last findings (12, 13, 14, 9, 15 and the minor
notes): each test checks a whole kind of program, not only the reported one, against the
eager tape, central differences in float64, and both roads (native function / Python).

Why the earlier tests missed them: the corpus read nd constants from globals only (never
built arrays inside a compiled body), made every NDArray of a float dtype, reshaped with
plain shapes, called math.* on Python floats, and never built a complex number."""

import math

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd
from pullback.compiler.errors import CompileError

ROADS = pytest.mark.parametrize("road", ["native", "python"])


def _road(monkeypatch, road):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1" if road == "native" else "0")


def _central_nd(fn, X, h=1e-6):
    """Central differences of sum(fn(nd.array(X))) in float64, element by element."""
    g = np.zeros_like(X)
    for i in np.ndindex(X.shape):
        plus, minus = X.copy(), X.copy()
        plus[i] += h
        minus[i] -= h
        f = lambda v: float(np.sum(fn(nd.array(v, dtype="float64")).asnumpy()))  # noqa: E731
        g[i] = (f(plus) - f(minus)) / (2 * h)
    return g


def _tape(fn, X):
    x = nd.array(X, dtype="float64")
    x.attach_grad()
    with ag.record():
        y = fn(x)
    y.backward()
    return y.asnumpy(), x.grad.asnumpy()


# ----- 12: arrays made inside a compiled body are raw numpy there ------------------------------

def rnn_from_zero_state(x):
    h = nd.zeros((3,))
    for _ in range(3):
        h = nd.tanh(h * 0.5 + x)
    return nd.sum(h)


def rnn_state_of_the_input_shape(x):
    h = nd.zeros(x.shape, dtype="float64")
    h = nd.sigmoid(h + x) * nd.ones(x.shape)
    return nd.sum(h * h)


def times_arange(x):
    return nd.sum(x * nd.arange(3))


def times_arange_float64(x):
    return nd.sum(x * nd.arange(1, 4, dtype="float64"))


def times_array_of_a_list(x):
    return nd.sum(x * nd.array([1.0, 2.0, 3.0]))


def times_full(x):
    return nd.sum(nd.exp(x) * nd.full((3,), 2.5))


def plus_empty_filled(x):
    return nd.sum(x * (nd.ones((3,)) + nd.zeros((3,))))


def times_random_uniform(x):
    return nd.sum(x * nd.random.uniform(shape=(3,)) * 0.0 + x * x)


def times_random_normal_then_masked(x):
    noise = nd.random_normal(shape=(3,))
    return nd.sum(x * x + noise * 0.0)


MADE_INSIDE = [rnn_from_zero_state, rnn_state_of_the_input_shape, times_arange,
               times_arange_float64, times_array_of_a_list, times_full, plus_empty_filled,
               times_random_uniform, times_random_normal_then_masked]
X12 = np.array([0.3, 0.5, -0.2])


@ROADS
@pytest.mark.parametrize("fn", MADE_INSIDE)
def test_arrays_made_inside_compiled_code_match_the_tape(monkeypatch, road, fn):
    _road(monkeypatch, road)
    value, tape = _tape(fn, X12)
    compiled = pb.grad(fn)(nd.array(X12, dtype="float64")).asnumpy()
    assert np.allclose(compiled, tape)
    assert np.allclose(compiled, _central_nd(fn, X12), atol=1e-6)
    assert np.allclose(pb.compile(fn)(nd.array(X12, dtype="float64")).asnumpy(), value)
    # a compiled function called under record: one tape node
    c = pb.compile(fn)
    x = nd.array(X12, dtype="float64")
    x.attach_grad()
    with ag.record():
        y = c(x)
    y.backward()
    assert np.allclose(x.grad.asnumpy(), tape)


@pytest.mark.parametrize("fn", [rnn_from_zero_state, times_full, times_arange_float64])
def test_arrays_made_inside_compiled_code_in_forward_mode(fn):
    x = nd.array(X12, dtype="float64")
    J = pb.jacfwd(fn)(x)
    assert np.allclose(np.asarray(J.asnumpy() if hasattr(J, "asnumpy") else J).reshape(-1),
                       _tape(fn, X12)[1])


def made_inside_keeps_float32(x):
    return x * nd.zeros((3,)) + nd.arange(3) + nd.array([1.0, 2.0, 3.0])


def test_arrays_made_inside_compiled_code_have_mxnets_dtypes():
    x = nd.array([1.0, 2.0, 3.0])                  # float32
    eager = made_inside_keeps_float32(x)
    compiled = pb.compile(made_inside_keeps_float32)(x)
    assert compiled.dtype == eager.dtype == np.float32
    assert np.array_equal(compiled.asnumpy(), eager.asnumpy())


def array_of_a_differentiated_value(x):
    return nd.sum(nd.array(x) * x)


@pytest.mark.parametrize("fn", [array_of_a_differentiated_value])
def test_a_constructor_of_a_differentiated_value_is_refused(fn):
    """nd.array(x) copies x without a gradient (MXNet's semantics on the tape): in compiled
    code that would be a silent cut, so it is a CompileError at the line."""
    with pytest.raises(CompileError, match="nd.array"):
        pb.grad(fn)(nd.array(X12, dtype="float64"))


# ----- 13: a gradient buffer of an integer dtype is refused, never silently zero ------------

@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8", "bool"])
@pytest.mark.parametrize("grad_req", ["write", "add"])
def test_attach_grad_on_a_non_float_array_is_refused(dtype, grad_req):
    x = nd.array([1, 2, 3], dtype=dtype)
    with pytest.raises(pb.IntegerGradError, match=f"dtype {np.dtype(dtype).name}.*astype"):
        x.attach_grad(grad_req)


def test_integer_arrays_need_a_float_copy_for_a_gradient():
    x = nd.array([1, 2, 3], dtype="int32")
    x.attach_grad("null")                         # no buffer: nothing to truncate
    xf = x.astype("float64")
    xf.attach_grad()
    with ag.record():
        y = nd.sum(nd.sin(xf))
    y.backward()
    assert np.allclose(xf.grad.asnumpy(), np.cos([1.0, 2.0, 3.0]))
    # pb.grad gives the float gradient of an integer input (as JAX would refuse; pullback
    # computes in the float promotion of the forward)
    assert np.allclose(pb.grad(lambda_free_sum_of_sines)(xf).asnumpy(), np.cos([1.0, 2.0, 3.0]))


def lambda_free_sum_of_sines(x):
    return nd.sum(nd.sin(x))


@pytest.mark.parametrize("var_dtype, grad_dtype", [("int32", "float32"),
                                                   ("float32", "int32")])
def test_mark_variables_refuses_integer_variables_and_buffers(var_dtype, grad_dtype):
    x = nd.array([1, 2, 3], dtype=var_dtype)
    buffer = nd.zeros((3,), dtype=grad_dtype)
    with pytest.raises(pb.IntegerGradError):
        ag.mark_variables([x], [buffer])


# ----- 14: MXNet's reshape codes: one shape inference for the tape and compiled code ----------

# (input shape, codes, reverse, MXNet's result: the examples of MXNet's reshape docs)
RESHAPES = [((2, 3, 4), (4, 0, 2), False, (4, 3, 2)), ((2, 3, 4), (2, 0, 0), False, (2, 3, 4)),
            ((2, 3, 4), (6, 1, -1), False, (6, 1, 4)), ((2, 3, 4), (3, -1, 8), False, (3, 1, 8)),
            ((2, 3, 4), (-1,), False, (24,)), ((2, 3, 4), (-2,), False, (2, 3, 4)),
            ((2, 3, 4), (2, -2), False, (2, 3, 4)), ((2, 3, 4), (-2, 1, 1), False, (2, 3, 4, 1, 1)),
            ((2, 3, 4), (-3, 4), False, (6, 4)), ((2, 3, 4, 5), (-3, -3), False, (6, 20)),
            ((2, 3, 4), (0, -3), False, (2, 12)), ((2, 3, 4), (-3, -2), False, (6, 4)),
            ((2, 3, 4), (-4, 1, 2, -2), False, (1, 2, 3, 4)),
            ((2, 3, 4), (2, -4, -1, 3, -2), False, (2, 1, 3, 4)),
            ((10, 5, 4), (-1, 0), False, (40, 5)), ((10, 5, 4), (-1, 0), True, (50, 4))]


def reshape_method(x, shape, reverse):
    return x.reshape(shape, reverse=reverse) * 1.5


def reshape_function(x, shape, reverse):
    return nd.reshape(x, shape=shape, reverse=reverse) * 1.5


def reshape_then_weigh(x, shape, reverse):
    y = nd.reshape(x, shape=shape, reverse=reverse)
    w = nd.arange(y.size, dtype="float64").reshape(y.shape)
    return nd.sum(nd.sin(y) * w)


@pytest.mark.parametrize("in_shape, codes, reverse, expected", RESHAPES)
@pytest.mark.parametrize("fn", [reshape_method, reshape_function])
def test_reshape_codes_give_mxnets_shapes_on_the_tape_and_compiled(fn, in_shape, codes,
                                                                  reverse, expected):
    X = np.arange(float(np.prod(in_shape))).reshape(in_shape) * 0.01
    assert fn(nd.array(X, dtype="float64"), codes, reverse).shape == expected
    compiled = pb.compile(fn)(nd.array(X, dtype="float64"), codes, reverse)
    assert compiled.shape == expected
    assert np.array_equal(compiled.asnumpy(), X.reshape(expected) * 1.5)


@ROADS
@pytest.mark.parametrize("in_shape, codes, reverse, expected", RESHAPES[::3])
def test_reshape_codes_gradients(monkeypatch, road, in_shape, codes, reverse, expected):
    _road(monkeypatch, road)
    X = np.linspace(-1.0, 1.0, int(np.prod(in_shape))).reshape(in_shape)
    fn = lambda x: reshape_then_weigh(x, codes, reverse)  # noqa: E731
    _, tape = _tape(fn, X)
    g = pb.grad(reshape_then_weigh)(nd.array(X, dtype="float64"), codes, reverse).asnumpy()
    assert np.allclose(g, tape)
    assert np.allclose(g, _central_nd(fn, X), atol=1e-5)


@pytest.mark.parametrize("codes", [(0, 0, 0, 0), (-3, -3), (-4, -1, -1), (-4, 5, 2), (-5,)])
def test_impossible_reshape_codes_are_the_same_error_on_both_roads(codes):
    x = nd.array(np.zeros((2, 3, 4)), dtype="float64")
    with pytest.raises(ValueError, match="cannot reshape an array of shape"):
        x.reshape(codes)
    with pytest.raises(ValueError, match="cannot reshape an array of shape"):
        pb.compile(reshape_method)(x, codes, False)


def numpy_reshape(x):
    return np.sum(np.sin(np.reshape(x, (3, -1))) + x.reshape(2, 6).T.reshape(3, 4))


def numpy_reshape_in_fortran_order(x):
    return np.sum(np.reshape(x, (3, 4), order="F") * 2.0)


def test_numpy_reshape_keeps_numpys_meaning_and_refuses_order():
    X = np.linspace(-1.0, 1.0, 12)
    g = pb.grad(numpy_reshape)(X)
    h = 1e-6
    numeric = [(numpy_reshape(X + h * e) - numpy_reshape(X - h * e)) / (2 * h)
               for e in np.eye(12)]
    assert np.allclose(g, numeric, atol=1e-6)
    with pytest.raises(CompileError, match="order"):
        pb.grad(numpy_reshape_in_fortran_order)(X)


# ----- 15: complex values on a differentiated path are refused, never a silent zero -----------

def complex_literal_later(x):
    c = 2.0j
    y = x * 3.0
    z = y + c
    return abs(z)


def complex_builtin(x):
    return abs(x * complex(1.0, 1.0))


def complex_exponential(x):
    return np.sum(np.real(np.exp(1j * x)))


def complex_then_real_part(x):
    z = x * (1.0 + 2.0j)
    return (z * z).real


def complex_decides_a_branch(x):
    z = complex(2.0, 1.0)        # a complex value that never meets x: fine
    if abs(z) > 2.0:
        return x * 3.0
    return x * 5.0


def times_a_complex_argument(x, c):
    return np.sum(np.abs(x * c))


COMPLEX_GLOBAL = np.array([1.0 + 1.0j, 2.0 - 1.0j])


def times_a_complex_global(x):
    return np.sum(np.abs(x * COMPLEX_GLOBAL))


@ROADS
@pytest.mark.filterwarnings("error::numpy.exceptions.ComplexWarning")
@pytest.mark.parametrize("fn", [complex_literal_later, complex_builtin, complex_exponential,
                                complex_then_real_part])
@pytest.mark.parametrize("mode", ["grad", "jacfwd"])
def test_complex_literals_meeting_a_gradient_are_refused_at_the_line(monkeypatch, road, fn,
                                                                     mode):
    _road(monkeypatch, road)
    x = np.array([1.5, -0.5]) if fn is complex_exponential else 1.5
    with pytest.raises(CompileError) as info:
        (pb.grad if mode == "grad" else pb.jacfwd)(fn)(x)
    message = str(info.value)
    assert "complex" in message and fn.__code__.co_filename in message


def test_a_complex_value_that_never_meets_the_gradient_is_fine():
    assert pb.grad(complex_decides_a_branch)(1.5) == pytest.approx(3.0)


@pytest.mark.filterwarnings("error::numpy.exceptions.ComplexWarning")
def test_complex_arrays_passed_in_are_refused_at_run_time():
    x = np.array([1.5, -0.5])
    with pytest.raises(pb.ComplexValueError, match="complex"):
        pb.grad(times_a_complex_argument)(x, np.array([1.0 + 1.0j, 1.0j]))
    with pytest.raises(pb.ComplexValueError, match="complex"):
        pb.grad(times_a_complex_global)(x)
    # not differentiated through: the real function of x alone is fine
    assert np.allclose(pb.grad(times_a_complex_argument)(x, np.array([2.0, 3.0])),
                       [2.0, -3.0])


@pytest.mark.filterwarnings("error::numpy.exceptions.ComplexWarning")
def test_the_tape_refuses_complex_results_of_recorded_arrays():
    x = nd.array([1.5, -0.5], dtype="float64")
    x.attach_grad()
    with pytest.raises(pb.ComplexValueError, match="complex"):
        with ag.record():
            y = nd.abs(x * (1.0 + 1.0j))
    y = nd.abs(nd.array([1.5, -0.5], dtype="float64") * (1.0 + 1.0j))   # not recorded: fine
    assert np.allclose(y.asnumpy(), np.sqrt(2.0) * np.array([1.5, 0.5]))


# ----- minor notes: bit operators on the native road, predicates of differentiated values -----

def times_shifted(x, n):
    return x * (n << 2)


def times_masked_bits(x, n):
    return x * ((n & 3) | (n >> 1) ^ 1)


@ROADS
@pytest.mark.parametrize("fn", [times_shifted, times_masked_bits])
def test_bit_operators_of_ints_on_both_roads(monkeypatch, road, fn):
    _road(monkeypatch, road)
    value, g = pb.value_and_grad(fn)(1.5, 7)
    assert float(np.asarray(value.asnumpy() if hasattr(value, "asnumpy") else value)
                 .reshape(-1)[0]) == fn(1.5, 7)
    assert g == pytest.approx(fn(1.0, 7))
    text = pb.explain(fn, 1.5, 7)
    assert "please report" not in text and "not lowered natively" in text


def nan_guard(x):
    if math.isnan(x) or math.isinf(x):
        return x * 0.0
    return x * 2.0


def finite_guard(x):
    if np.isfinite(x) and not np.isnan(x):
        return x * x
    return x * 0.0


def masked_by_a_predicate(x):
    return np.sum(x * np.isfinite(np.log(x)) + np.where(np.isnan(x), 0.0, x))


def close_guard(x):
    if math.isclose(x, 1.0) or np.isclose(x, 2.0):
        return x * 3.0
    return x * 4.0


@ROADS
@pytest.mark.parametrize("fn, x, expected", [(nan_guard, 1.5, 2.0), (nan_guard, math.inf, 0.0),
                                             (finite_guard, 0.7, 1.4), (close_guard, 1.0, 3.0),
                                             (close_guard, 2.0, 3.0), (close_guard, 1.5, 4.0)])
def test_predicates_of_differentiated_values_decide_branches(monkeypatch, road, fn, x,
                                                             expected):
    """The taken branch's derivative (central differences would step off ``isclose``)."""
    _road(monkeypatch, road)
    with np.errstate(all="ignore"):
        assert pb.grad(fn)(x) == pytest.approx(expected)


def test_predicates_in_array_arithmetic_have_no_gradient():
    X = np.array([0.5, 2.0, 3.0])
    with np.errstate(all="ignore"):
        g = pb.grad(masked_by_a_predicate)(X)
    assert np.allclose(g, [2.0, 2.0, 2.0])


# ----- 9: math.* computes in double whatever its argument (Python's math converts to C double) --

def math_mix(x):
    a = math.sin(x) * math.cos(x) + math.tanh(x) - math.exp(-x)
    b = math.log(x) + math.sqrt(x) + math.log1p(x) - math.expm1(x * 0.1)
    c = math.atan(x) + math.asinh(x) + math.cbrt(x) + math.log2(x) + math.log10(x)
    return (a + b + c - 1.0) * 1e3


def math_cancellation(x):
    return (math.cos(x) - 1.0) * 1e6 + (math.exp(x) - 1.0 - x) * 1e6


def math_two_arguments(x, y):
    return math.atan2(x, y) + math.hypot(x, y)


@ROADS
@pytest.mark.parametrize("fn", [math_mix, math_cancellation])
@pytest.mark.parametrize("x", [1e-3, 0.7])
def test_math_of_float32_values_in_double(monkeypatch, road, fn, x):
    _road(monkeypatch, road)
    x32 = np.float32(x)
    plain = fn(x32)                                      # Python's math: doubles
    assert float(np.asarray(pb.compile(fn)(x32)).reshape(-1)[0]) == pytest.approx(plain,
                                                                                 rel=1e-9)
    value, g = pb.value_and_grad(fn)(x32)
    assert float(np.asarray(value.asnumpy()).reshape(-1)[0]) == pytest.approx(plain, rel=1e-9)
    h = 1e-6
    xd = float(x32)
    numeric = (fn(xd + h) - fn(xd - h)) / (2 * h)
    assert g.dtype == np.float32 and float(g) == pytest.approx(numeric, rel=1e-5, abs=1e-3)


@ROADS
def test_math_of_two_float32_arguments(monkeypatch, road):
    _road(monkeypatch, road)
    x, y = np.float32(0.3), np.float32(1.7)
    value, (gx, gy) = pb.value_and_grad(math_two_arguments, (0, 1))(x, y)
    assert float(np.asarray(value.asnumpy()).reshape(-1)[0]) == pytest.approx(
        math_two_arguments(x, y), rel=1e-12)
    h, xd, yd = 1e-6, float(x), float(y)
    assert float(gx) == pytest.approx((math_two_arguments(xd + h, yd)
                                       - math_two_arguments(xd - h, yd)) / (2 * h), rel=1e-5)
    assert float(gy) == pytest.approx((math_two_arguments(xd, yd + h)
                                       - math_two_arguments(xd, yd - h)) / (2 * h), rel=1e-5)


def test_math_of_python_floats_stays_on_the_native_road():
    pb.grad(math_mix)(0.7)
    lines = [line for line in pb.explain(math_mix, 0.7).splitlines() if "(float64)" in line]
    assert lines and all("native" in line and "Python road" not in line for line in lines)
    assert pb.grad(math_mix)(0.7) == pytest.approx(
        (math_mix(0.7 + 1e-6) - math_mix(0.7 - 1e-6)) / 2e-6, rel=1e-6)
    assert "math.sin of a float32" in pb.explain(math_mix, np.float32(0.7))


def test_math_of_float32_in_forward_mode_and_second_order():
    x = np.float32(0.7)
    _, tangent = pb.jvp(math_cancellation, (x,), (np.float32(1.0),))
    h, xd = 1e-6, float(x)
    numeric = (math_cancellation(xd + h) - math_cancellation(xd - h)) / (2 * h)
    assert float(tangent) == pytest.approx(numeric, rel=1e-5)
    assert float(pb.hessian(math_cancellation)(0.7)) == pytest.approx(
        (math_cancellation(0.7 + 1e-4) - 2 * math_cancellation(0.7)
         + math_cancellation(0.7 - 1e-4)) / 1e-8, rel=1e-4)
