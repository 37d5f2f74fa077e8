"""A corpus of ordinary Python functions that pullback must differentiate.

Each entry is registered with ``@case(...)`` giving the shapes of its array
arguments (and any extra non-differentiated arguments).  The compiler tests
check every entry three ways: compiled gradient = eager-tape gradient =
central finite differences.  ``numpy=True`` entries are plain numpy code (the
tape cannot run them, so they are checked compiled vs finite differences).
"""

from __future__ import annotations

import numpy as np

import chapter_f as chapter_f_module
import pullback.ndarray as nd
from corpus_helpers import imported_pair, imported_softplus

CASES = []


def case(*shapes, extra=(), numpy=False, positive=False, low=-1.0, high=1.0):
    def register(fn):
        CASES.append({"fn": fn, "shapes": shapes, "extra": extra, "numpy": numpy,
                      "positive": positive, "low": low, "high": high})
        return fn

    return register


SCALE = 0.5


def module_helper(x, w):
    return nd.tanh(x * w) + w


def multi_return_helper(x):
    a = x * 2
    b = nd.sin(x)
    return a, b


def recursive_power(x, n):
    if n == 0:
        return nd.ones_like(x)
    return x * recursive_power(x, n - 1)


def recursive_sum(x, n):
    if n <= 0:
        return x * 0
    return nd.sin(x) + recursive_sum(x * 0.9, n - 1)


def make_closure_function(k):
    def inner_helper(x):
        return x * k + nd.exp(-x * x)

    def uses_closure(x):
        return inner_helper(x) * k

    return uses_closure


# ----- straight-line code ----------------------------------------------------------------

chapter_f = case((3,))(chapter_f_module.f)   # the book's f, from its own file


@case((4,))
def arithmetic_mix(x):
    return (x * 3 - 2) / (x * x + 1) + x ** 2 - (-x)


@case((4,), (4,))
def two_inputs(x, y):
    return x * y + nd.sin(x) * nd.cos(y)


@case((2, 3), (3,))
def broadcasting(x, b):
    return nd.tanh(x + b) * b


@case((3,))
def scalars_both_sides(x):
    return 2.0 - x / 3.0 + 1.5 * x - 4 / (x + 3)


@case((3,), positive=True)
def logs_and_roots(x):
    return nd.log(x) + nd.sqrt(x) + nd.log1p(x) + x ** 0.5


@case((3,))
def unary_zoo(x):
    return nd.sigmoid(x) + nd.tanh(x) + nd.expm1(x) + nd.square(x) + nd.exp(x) + nd.cos(x)


@case((3,), (3,))
def tuple_unpacking(x, y):
    a, b = x * 2, y * 3
    return a * b


@case((3,), (3,))
def swap(x, y):
    x, y = y, x
    return x * 2 + y * 3


@case((3,))
def augmented(x):
    y = x * 1
    y += x
    y *= x
    y -= 1.0
    y /= 2.0
    y **= 2
    return y


@case((3,))
def overwrite_chain(x):
    y = x
    y = y * 2
    y = nd.sin(y)
    y = y * y
    return y


@case((3,))
def reuse_variable(x):
    t = x * 2
    u = t * t
    t = nd.exp(x)
    return u + t


@case((2, 3))
def reductions(x):
    return nd.sum(x, axis=1) * nd.mean(x) + nd.max(x, axis=0).sum()


@case((2, 3))
def methods(x):
    return x.sum(axis=0) * x.mean() + x.T.sum(axis=1) + x.reshape(3, 2).sum(axis=1)


@case((3, 4), (4, 2))
def matrix_product(a, b):
    return nd.tanh(nd.dot(a, b))


@case((3, 4))
def softmax_rows(x):
    return nd.softmax(x) * nd.log_softmax(x)


LABELS = nd.array([2, 0, 3])   # class labels read from a global, as the MXNet chapters do


@case((3, 4), positive=True)
def pick_cross_entropy(x):
    return -nd.pick(nd.softmax(x), LABELS).log()


@case((4, 3))
def pick_method_axis0_keepdims(x):
    return x.pick(LABELS, axis=0, keepdims=True) * x


ROWS = nd.array([3, 0, 0, 1])   # an embedding lookup's indices (a repeated row too)


@case((4, 3))
def take_rows(x):
    return nd.tanh(nd.take(x, ROWS)) * x.take(ROWS, axis=0, mode="wrap")


@case((4, 3))
def slices_mxnet_style(x):
    head = nd.slice(x, begin=(0, 1), end=(2, 3))
    tail = nd.slice_axis(x, axis=0, begin=2, end=4)
    return head * x.slice_axis(axis=1, begin=0, end=2)[1:3] + nd.sin(tail[:, 1:])


def rnn_like_steps(x, n):
    """Per-step outputs collected in a list, as MXNet's RNN chapters do."""
    outputs = []
    h = x
    for i in range(n):
        h = nd.tanh(h * 0.5 + x)
        outputs.append(h * (i + 1))
    return outputs


@case((3, 2))
def starred_concat_rows(x):
    return nd.concat(*rnn_like_steps(x, 3), dim=0) * 2


@case((3, 2))
def starred_concat_default_dim(x):
    pieces = rnn_like_steps(x, 2)
    return nd.sin(nd.concat(*pieces))


@case((3, 2))
def starred_stack(x):
    return nd.stack(*rnn_like_steps(x, 3), axis=1).sum(axis=1) + nd.stack(*[x, x * x])


@case((3, 2))
def nd_concatenate_list(x):
    return nd.concatenate(rnn_like_steps(x, 2), axis=1) ** 2


@case((3,))
def lists_from_tuple_assignment(x):
    xs, ys = [x], [x * 2]   # each list has one name: the appends below change only it
    for i in range(2):
        xs.append(xs[-1] * x)
        ys.append(nd.sin(ys[-1]))
    return nd.stack(*xs) + nd.stack(*ys)


@case((3,), (3,))
def parallel_update(x, y):
    a, b = x, y
    for i in range(3):
        a, b = b * 0.5 + a, a * b   # both read the old a and b
    a, c = a * 2, a + 1           # c reads the old a
    return a + b * c


@case((5,))
def indexing(x):
    return x[1:4] * x[0] + x[-1]


@case((3, 4))
def two_d_indexing(x):
    return x[1] * x[:, 2].sum() + x[0, 1:3].sum()


@case((4,))
def norm_based(x):
    return x / nd.norm(x)


@case((3,))
def maximum_minimum(x):
    return nd.maximum(x, 0.1) + nd.minimum(x * 2, 0.3)


@case((3,), (3,))
def where_select(x, y):
    return nd.where(x > 0, x * y, y * y)


@case((3,))
def global_constant(x):
    return x * SCALE


@case((3,))
def module_helper_call(x):
    return module_helper(x, x * 2)


@case((3,))
def helper_several_returns(x):
    a, b = multi_return_helper(x)
    return a * b


@case((3,))
def imported_helper(x):
    return imported_softplus(x) * 2


@case((3,), (3,))
def imported_helper_pair(x, y):
    s, d = imported_pair(x, y)
    return s * d


@case((3,))
def helper_twice(x):
    return module_helper(module_helper(x, 0.5), 0.25)


@case((3,))
def recursion_power(x):
    return recursive_power(x, 4)


@case((3,))
def recursion_sum(x):
    return recursive_sum(x, 3)


closure_function = case((3,))(make_closure_function(1.5))


@case((3,))
def lambda_helper(x):
    return square_lambda(x) + x


square_lambda = lambda v: v * v  # noqa: E731


# ----- branches ------------------------------------------------------------------------

@case((3,))
def if_else(x):
    if nd.sum(x).asscalar() > 0:
        y = x * 2
    else:
        y = x * 3
    return y


@case((3,))
def if_no_else(x):
    y = x * 1
    if nd.sum(x).asscalar() > -10:
        y = y * x
    return y


@case((3,))
def elif_chain(x):
    s = nd.sum(x).asscalar()
    if s > 10:
        y = x
    elif s > -10:
        y = nd.sin(x)
    else:
        y = x * x
    return y


@case((3,))
def and_or_conditions(x):
    s = nd.sum(x).asscalar()
    y = x
    if s > -10 and s < 10:
        y = y * 2
    if s > 100 or s < 100:
        y = y + x
    if not s > 100:
        y = y * x
    return y


@case((3,))
def python_comparison_in_if(x):
    if float(nd.max(x).asscalar()) < 5:
        return x * 3
    return x


@case((3,))
def nested_if(x):
    s = nd.sum(x).asscalar()
    y = x
    if s > -5:
        if s < 5:
            y = nd.exp(y)
        else:
            y = y * 2
    return y


@case((3,))
def early_return(x):
    y = x * 2
    if nd.sum(y).asscalar() > -100:
        return y * x
    y = y + 1
    return y


@case((3,))
def branch_on_index(x):
    total = x * 0
    for i in range(4):
        if i % 2 == 0:
            total = total + x * i
        else:
            total = total - nd.sin(x)
    return total


# ----- while loops ---------------------------------------------------------------------

@case((3,))
def while_scalar_condition(x):
    y = x
    while nd.norm(y).asscalar() < 50:
        y = y * 1.5 + 0.1
    return y


@case((3,))
def while_counter(x):
    i = 0
    y = x
    while i < 5:
        y = nd.sin(y) + x
        i += 1
    return y


@case((3,))
def while_with_break(x):
    y = x
    i = 0
    while True:
        y = y * 1.1
        i = i + 1
        if i >= 4:
            break
    return y


@case((3,))
def while_with_continue(x):
    y = x
    i = 0
    while i < 6:
        i = i + 1
        if i % 3 == 0:
            continue
        y = y + x * i
    return y


@case((3,))
def while_early_return(x):
    y = x
    k = 0
    while k < 10:
        y = y * 1.2
        k = k + 1
        if k == 3:
            return y * x
    return y


@case((3,))
def nested_while(x):
    y = x
    i = 0
    while i < 3:
        j = 0
        while j < 2:
            y = nd.tanh(y) + x
            j += 1
        i += 1
    return y


# ----- for loops -----------------------------------------------------------------------

@case((3,))
def for_range(x):
    y = x
    for _ in range(4):
        y = y * x + 0.5
    return y


@case((3,))
def for_range_uses_index(x):
    s = x * 0
    for i in range(1, 6):
        s = s + nd.sin(x * i)
    return s


@case((3,))
def for_range_step(x):
    s = x * 0
    for i in range(10, 0, -3):
        s = s + x * i
    return s


@case((3,))
def for_with_break(x):
    y = x
    for i in range(10):
        y = y * 1.1
        if i == 3:
            break
    return y


@case((3,))
def for_with_continue(x):
    y = x
    for i in range(6):
        if i % 2 == 1:
            continue
        y = y * x + i
    return y


@case((3,))
def for_early_return(x):
    y = x
    for i in range(8):
        y = nd.sin(y) + x
        if i == 2:
            return y
    return y * 0


@case((3,))
def nested_for(x):
    y = x
    for i in range(3):
        for j in range(2):
            y = y + x * (i + j)
    return y


@case((3,))
def nested_for_early_return(x):
    y = x
    for i in range(4):
        for j in range(4):
            y = y * 1.05 + x
            if i == 1 and j == 2:
                return y
    return y


@case((3,))
def nested_for_break_inner(x):
    y = x
    for i in range(3):
        for j in range(5):
            if j > i:
                break
            y = y + nd.cos(x) * j
    return y


@case((3,), (3,))
def for_over_tuple(x, y):
    total = x * 0
    for v in (x, y, x * y):
        total = total + v * v
    return total


@case((3,))
def for_over_list(x):
    items = [x, x * 2, nd.sin(x)]
    total = x * 0
    for v in items:
        total = total + v
    return total


@case((3,))
def list_append_and_index(x):
    hs = []
    h = x
    for _ in range(4):
        h = nd.tanh(h) + x
        hs.append(h)
    return hs[0] + hs[2] * hs[3]


@case((3,))
def loop_inside_branch(x):
    y = x
    if nd.sum(x).asscalar() > -100:
        for _ in range(3):
            y = y * x
    else:
        y = y * 2
    return y


@case((3,))
def branch_inside_while(x):
    y = x
    i = 0
    while i < 5:
        if i < 2:
            y = y + x
        else:
            y = y * 0.9
        i = i + 1
    return y


@case((3,))
def overwrite_inside_loop(x):
    a = x
    b = x * 2
    for _ in range(3):
        a, b = b, a * b
    return a + b


@case((3,))
def accumulate_in_loop(x):
    s = 0.0
    for i in range(5):
        s = s + nd.sin(x * i) * x
    return s


@case((8,), (8, 8), (8,))
def rnn(x, w, b):
    h = x * 0
    for _ in range(3):
        h = nd.tanh(nd.dot(w, h) + x + b)
    return (h * h).sum()


# ----- plain numpy code ----------------------------------------------------------------

@case((4,), numpy=True)
def numpy_elementwise(x):
    return np.sum(np.tanh(x) * np.exp(-x * x) + np.sin(x) ** 2)


@case((3, 4), (4,), numpy=True)
def numpy_linear(a, w):
    return np.sum(np.dot(a, w) ** 2)


@case((3, 4), numpy=True)
def numpy_axis_sum(x):
    return np.sum(np.maximum(x, 0.0) * x.sum(axis=0), axis=1)


@case((4,), numpy=True)
def numpy_where_and_shape(x):
    n = x.shape[0]
    return np.where(x > 0, x * n, -x) + np.mean(x)


@case((3,), numpy=True)
def numpy_loop(x):
    y = x
    while np.linalg.norm(y) < 10:
        y = y * 2
    return y


@case((2, 3), numpy=True)
def numpy_transpose(x):
    return np.sum(x.T * np.cos(x.T)) + np.sum(np.transpose(x) ** 2)


@case((2, 3), (2, 3), numpy=True)
def numpy_concatenate_and_stack(a, b):
    parts = [a]
    for k in range(2):
        parts.append(np.tanh(parts[-1] * b + k))
    joined = np.concatenate(parts, axis=-1)
    return np.sum(np.stack((joined, joined * 0.5), axis=1) ** 2)


@case((4,), numpy=True)
def numpy_power_with_an_array_exponent(x):
    # one pass (value and gradient) of a run that saves an intermediate (2.0 ** x)
    return np.sum(2.0 ** x - x)


@case((3,), (3,), positive=True)
def power_of_arrays_summed(x, y):
    return nd.sum(x ** y * x - y)


# ----- fusion edge cases: several shapes in one run, trailing sums ---------------------

@case((3, 4), (3, 1), (4,))
def mixed_shapes_in_one_run(x, m, b):
    lse = m + nd.log(nd.exp(m) + 1.0)
    prod = x * b
    return nd.sum(lse) + nd.sum(prod * 2.0)


@case((3, 4), (4,))
def trailing_sum_with_broadcast(x, b):
    return nd.sum(nd.tanh(x + b) * b)


@case((5,))
def trailing_sum_value_reused(x):
    t = nd.sin(x) * x
    s = nd.sum(t * 3.0)
    return s * t


@case((6,), (1,))
def one_pass_with_broadcast_scalar(x, s):
    return nd.sum(nd.tanh(x * s) + s * x * x)


# ----- helper calls inside loops (the callee's frame sits between pushes) --------------

def scaled_step(x, a):
    return a * x


@case((3,), (3,))
def helper_inside_for(a, x):
    for _ in range(3):
        x = x + 0.1 * scaled_step(x, a)
    return x


@case((3,))
def helper_several_returns_inside_while(x):
    y = x
    k = 0
    while k < 3:
        p, q = multi_return_helper(y)
        y = p * 0.3 + q
        k += 1
    return y


@case((3,))
def recursion_inside_loop(x):
    total = x * 0
    for n in range(3):
        total = total + recursive_power(x, n)
    return total


@case((2, 3), (2, 3))
def concat_and_stack(x, y):
    both = nd.concat(x, y * 2, dim=1)
    layers = nd.stack(x, nd.sin(y), axis=0)
    return nd.sum(both * both) + nd.sum(layers * 3.0)


@case((3,), numpy=True)
def numpy_zeros_then_accumulate(x):
    s = np.zeros(3)
    for i in range(3):
        s = s + np.sin(x * i)
    return s


@case((4,), numpy=True)
def numpy_last_element(x):
    y = np.tanh(x) * x
    return y[-1]


@case((4, 2, 3), (3, 2), numpy=True)
def numpy_matmul_stacks(a, b):
    return np.sum(np.tanh(np.matmul(a, b)))


@case((2, 3), (4, 3, 2))
def matmul_operator_broadcasts(a, b):
    return nd.sum(nd.sin(a @ b))


def helper_with_defaults(x, scale=0.5, shift=1.0):
    return nd.tanh(x * scale) + shift


@case((3,))
def helper_keywords_and_defaults(x):
    return helper_with_defaults(x) * helper_with_defaults(x, shift=0.2, scale=2.0)


@case((3, 4))
def trailing_mean(x):
    return nd.mean(nd.tanh(x) * x + 1.0)


@case((6,), (6, 3), (6,), numpy=True)
def numpy_logistic_loss(w, X, s):
    return np.mean(np.log(1 + np.exp(-s * np.dot(X, w[:3]))))


# ----- trailing norm / max / min absorbed into the kernel ------------------------------

@case((3, 4))
def trailing_norm(x):
    return nd.norm(nd.tanh(x) * x + 0.5)


@case((5,))
def trailing_max_value_reused(x):
    t = nd.sin(x) * x
    m = nd.max(t * 2.0 + x)
    return m * t


@case((3, 4), (4,))
def trailing_max_method_with_broadcast(x, b):
    return (nd.tanh(x + b) * b).max()


@case((6,), numpy=True)
def numpy_trailing_min_and_norm(x):
    return np.min(np.exp(x) * x - x) + np.linalg.norm(np.cos(x) * x, ord=2)


# ----- containers as values and everyday syntax (issue 11, items 2 and 4) --------------------

@case((3,), (3,))
def dict_built_inside_and_items(x, y):
    d = {'x': x, 'y': nd.tanh(y)}
    d['z'] = d['x'] * d['y']
    d['x'] += y
    s = x * 0.0
    for k, v in d.items():
        s = s + v * v
    return nd.sum(s)


@case((3,))
def dict_comprehension_and_get(x):
    d = {k: x * w for k, w in zip(['a', 'b'], [1.0, 2.0])}
    return nd.sum(d.get('a') * d.get('c', x) + nd.exp(d['b'] * 0.5))


@case((4,), (4,))
def list_comprehension_summed(x, y):
    parts = [x * i + y for i, _ in enumerate(range(3))]
    return nd.sum(sum(parts) * nd.sin(x))


@case((3,), (3,))
def conditional_expression_on_a_norm(x, y):
    z = x * y if nd.norm(x).asscalar() > 0.5 else x - y
    return nd.sum(z * z)


@case((3,), (3,))
def dict_through_a_helper(x, y):
    return nd.sum(dict_layer({'w': y, 'b': x * 0.5}, x))


def dict_layer(params, x):
    return nd.tanh(x * params['w'] + params['b'])


# ----- linear algebra, convolution, pooling (issue 11 item 5; tests/test_linalg_conv.py) -----

SHIFT3 = nd.array(np.eye(3) * 3.0)   # keeps a random matrix well conditioned


@case((3, 3), (3, 2))
def linalg_det_inverse_solve(a, b):
    m = a + SHIFT3
    x = nd.linalg_solve(m, b)
    return nd.sum(nd.linalg.inverse(m) * m) * nd.linalg.det(m) + nd.sum(x * x)


@case((2, 3, 3))
def linalg_slogdet_and_potrf(a):
    m = nd.linalg.gemm2(a, a, transpose_b=True) + SHIFT3
    sign, logdet = nd.linalg.slogdet(m)
    return nd.sum(sign * logdet) + nd.sum(nd.linalg.potrf(m))


@case((3, 3), (3,), numpy=True)
def numpy_linalg_functions(a, b):
    m = a + 3.0 * np.eye(3)
    sign, logdet = np.linalg.slogdet(m)
    x = np.linalg.solve(m, b)
    return (np.linalg.det(m) * logdet + np.sum(np.linalg.inv(m)) + np.sum(x * x)
            + np.sum(np.linalg.cholesky(m @ m.T)))


@case((2, 2, 5, 5), (3, 2, 2, 2), (3,))
def convolution_and_pooling(x, w, b):
    h = nd.Convolution(data=x, weight=w, bias=b, kernel=(2, 2), num_filter=3, pad=(1, 1))
    h = nd.tanh(h)
    m = nd.Pooling(data=h, pool_type="max", kernel=(2, 2), stride=(2, 2))
    v = nd.Pooling(data=h, pool_type="avg", kernel=(3, 3), stride=(2, 2), pad=(1, 1))
    return nd.sum(m * m) + nd.sum(v)
