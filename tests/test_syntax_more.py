"""More everyday Python (issue 11, item 4): ``with`` blocks of context managers that only
change state (``np.errstate``, ``ag.pause()``, ``ag.train_mode()``, ``ag.predict_mode()``),
nested functions and lambdas called inside the function, keyword-only parameters.  Each
is checked compiled = eager tape = central differences (float64), forward mode too; each
refused variant is a CompileError naming its line."""

import inspect

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd
from tape_helpers import central_gradient


def _tape(fn, args):
    xs = [nd.array(np.array([a], dtype=np.float64)) for a in args]
    for x in xs:
        x.attach_grad()
    with ag.record():
        out = fn(*xs)
    out.backward()
    return [x.grad.asscalar() for x in xs]


def _line_of(fn, text):
    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(lines) if text in line)


# ----- with blocks -----------------------------------------------------------------------

def errstate_block(a, b):
    s = a * b
    with np.errstate(divide="ignore", invalid="ignore"):
        t = s / (b * b + 1.0)
        for _ in range(2):
            if a > b:
                t = t * a
            else:
                t = t + b * b * b
    return t * s


def errstate_raises(a, b):
    with np.errstate(divide="raise"):
        c = np.log(a * 0.0 * b)
    return c


def train_and_predict_modes(a, b):
    s = a + b
    with ag.predict_mode():
        if ag.is_training():
            s = s * 100.0
        s = s * a
    with ag.train_mode():
        if ag.is_training():
            s = s * b
    return s


def paused(a, b):
    with ag.pause():
        c = a * a            # a constant: no gradient through c
        d = [a, c * 2.0]     # the list itself is not an operation: d[0] is a
        e = d[0]
        k = 0.0
        for i in range(2):
            k = k + b * b * i
    return c * b + e * b + k * a


def paused_copy_keeps_gradient(a, b):
    with ag.pause():
        c = a                # not an operation: still a
    return c * b


PLAIN = [(errstate_block, (0.7, -0.3)), (errstate_block, (-0.4, 0.9)),
         (train_and_predict_modes, (0.5, 1.5))]


@pytest.mark.parametrize("fn, args", PLAIN, ids=[f"{f.__name__}-{a}" for f, a in PLAIN])
def test_state_only_with_blocks(fn, args):
    grads = pb.grad(fn, argnums=(0, 1))(*args)
    tape = _tape(fn, args)
    for k, g in enumerate(grads):
        assert g == pytest.approx(central_gradient(fn, list(args), k), rel=1e-6, abs=1e-7)
        assert g == pytest.approx(tape[k], rel=1e-10, abs=1e-12)
    value, tangent = pb.jvp(fn, args, (1.0, 0.0))
    assert np.asarray(tangent).item() == pytest.approx(grads[0], rel=1e-10, abs=1e-12)
    assert np.asarray(value).item() == pytest.approx(fn(*args), rel=1e-12)


def test_errstate_is_in_force_in_compiled_code_and_restored():
    before = np.geterr()
    with pytest.raises(FloatingPointError):
        pb.grad(errstate_raises)(0.5, 2.0)
    assert np.geterr() == before
    with pytest.raises(FloatingPointError):
        errstate_raises(0.5, 2.0)


@pytest.mark.parametrize("fn", [paused, paused_copy_keeps_gradient])
def test_pause_makes_computed_values_constants_as_on_the_tape(fn):
    a, b = 0.6, -1.3
    grads = pb.grad(fn, argnums=(0, 1))(a, b)
    assert grads == pytest.approx(_tape(fn, (a, b)), rel=1e-10, abs=1e-12)
    if fn is paused:   # by hand: c = a*a, e = a, k = exp(b) are constants in the block
        assert grads == pytest.approx((b + b * b, a * a + a), rel=1e-12)
        assert grads[0] != pytest.approx(central_gradient(fn, [a, b], 0))  # pause matters
    else:
        assert grads == pytest.approx((b, a), rel=1e-12)


def recorded_inside(a):
    with ag.record():
        b = a * 2.0
    return b


def bound_with(a):
    with np.errstate(all="ignore") as state:
        b = a * 2.0
    return b + len(str(state))


def returned_from_with(a):
    with np.errstate(all="ignore"):
        return a * 2.0


@pytest.mark.parametrize("fn, text, words", [
    (recorded_inside, "ag.record()", "supported context managers are np.errstate"),
    (bound_with, "as state", "without 'as'"),
    (returned_from_with, "return a", "return out of a with block")])
def test_other_with_blocks_are_refused_at_their_line(fn, text, words):
    with pytest.raises(pb.CompileError, match=words) as info:
        pb.grad(fn)(0.5)
    assert f'"{__file__}", line {_line_of(fn, text)}:' in str(info.value)


# ----- nested functions and lambdas ------------------------------------------------------

def lambda_closure(a, b):
    f = lambda t: t * a + b  # noqa: E731
    s = f(2.0)
    for i in range(3):
        a = a * 0.5          # late binding: f reads a at each call
        s = s + f(b * i)
    return s if b > 0.0 else f(f(s))


def nested_def(a, b):
    def g(t, u):
        """A helper."""
        v = t * u + a
        w = v * v
        return w - b

    def h(t):
        return t * t * b

    s = g(a, b) + h(a)
    if s > 0.0:
        s = s * g(h(b), a)
    else:
        s = s - h(s)
    return s


NESTED = [(lambda_closure, (0.7, 0.4)), (lambda_closure, (0.3, -0.8)),
          (nested_def, (0.5, 1.5)), (nested_def, (-0.9, 0.3))]


@pytest.mark.parametrize("fn, args", NESTED, ids=[f"{f.__name__}-{a}" for f, a in NESTED])
def test_nested_functions_are_inlined(fn, args):
    grads = pb.grad(fn, argnums=(0, 1))(*args)
    tape = _tape(fn, args)
    for k, g in enumerate(grads):
        assert g == pytest.approx(central_gradient(fn, list(args), k), rel=1e-6, abs=1e-7)
        assert g == pytest.approx(tape[k], rel=1e-10, abs=1e-12)
    value, tangent = pb.jvp(fn, args, (0.0, 1.0))
    assert np.asarray(tangent).item() == pytest.approx(grads[1], rel=1e-10, abs=1e-12)
    assert np.asarray(value).item() == pytest.approx(fn(*args), rel=1e-12)


def lambda_returned(a):
    f = lambda t: t * a  # noqa: E731
    return f


def lambda_as_key(a, b):
    return sorted([a, b], key=lambda t: -t)[0]


def def_passed_to_map(a):
    def sq(t):
        return t * t
    return sum(map(sq, [a, a]))


def recursive_def(a):
    def r(t):
        return r(t * 0.5)
    return r(a)


def def_with_a_loop(a):
    def loops(t):
        for _ in range(2):
            t = t * 2.0
        return t
    return loops(a)


def called_by_keyword(a):
    f = lambda t: t * 2.0  # noqa: E731
    return f(t=a)


def rebound_def(a):
    f = lambda t: t * 2.0  # noqa: E731
    f = 3.0
    return a * f


def hoisted_in_while_test(a):
    def g(t):
        u = t * 2.0
        return u
    s = a
    while g(s) < 10.0:
        s = s * 1.5
    return s


@pytest.mark.parametrize("fn, text, words", [
    (lambda_returned, "return f", "used other than by calling it"),
    (lambda_as_key, "key=lambda", "lambda that is not bound to a name"),
    (def_passed_to_map, "map(sq", "used other than by calling it"),
    (recursive_def, "def r(t)", "recursive"),
    (def_with_a_loop, "for _ in", "assignments to plain names and one return"),
    (called_by_keyword, "f(t=a)", "other arguments than its 1 positional"),
    (rebound_def, "f = 3.0", "bound again"),
    (hoisted_in_while_test, "while g(s)", "cannot be placed before the statement")])
def test_nested_functions_refused_at_their_line(fn, text, words):
    with pytest.raises(pb.CompileError, match=words) as info:
        pb.grad(fn)(0.5) if fn is not lambda_as_key else pb.grad(fn)(0.5, 1.0)
    assert f'"{__file__}", line {_line_of(fn, text)}:' in str(info.value)


W = np.array([0.5, -1.5, 2.0])   # read by a lambda: an implicit input
a = np.array([100.0, 100.0, 100.0])   # a global of the name of a closed-over local


def lambda_reads_a_global_and_a_local(a, x):
    f = lambda t: np.sum(t * W * a)  # noqa: E731  (a: the parameter, not the global)
    return f(x) + f(x * x)


def test_nested_functions_read_globals_and_locals_as_python_does():
    x, b = np.array([0.3, 0.2, -0.4]), np.array([1.0, 2.0, 0.5])
    ga, gx = pb.grad(lambda_reads_a_global_and_a_local, argnums=(0, 1))(b, x)
    for k, g in enumerate((ga, gx)):
        np.testing.assert_allclose(
            g, central_gradient(lambda_reads_a_global_and_a_local, [b, x], k), rtol=1e-6)
    assert pb.compile(lambda_reads_a_global_and_a_local)(b, x) == pytest.approx(
        lambda_reads_a_global_and_a_local(b, x), rel=1e-12)


# ----- keyword-only parameters and *args -------------------------------------------------

def keyword_only(a, b, *, scale=2.0, shift):
    s = a * b * scale
    for _ in range(2):
        if s > shift:
            s = s - shift * a
        else:
            s = s * scale + b
    return s


def star_args(a, *rest, power=2):
    s = a
    for r in rest:
        s = s + r ** power * a
    return s


def calls_keyword_only(a, b):
    return keyword_only(a, b, shift=0.25) + keyword_only(b, a, scale=0.5, shift=-1.0)


def test_keyword_only_parameters_are_parameters_after_the_positional_ones():
    for shift in (0.1, 5.0):
        def plain(a, b):
            return keyword_only(a, b, scale=1.5, shift=shift)
        args = (0.7, -0.4)
        grads = pb.grad(keyword_only, argnums=(0, 1))(*args, scale=1.5, shift=shift)
        tape = _tape(plain, args)
        for k, g in enumerate(grads):
            assert g == pytest.approx(central_gradient(plain, list(args), k), rel=1e-6,
                                      abs=1e-7)
            assert g == pytest.approx(tape[k], rel=1e-10, abs=1e-12)
        value, tangent = pb.jvp(plain, args, (1.0, 0.0))
        assert np.asarray(tangent).item() == pytest.approx(grads[0], rel=1e-10)
    assert pb.compile(keyword_only)(0.7, -0.4, shift=0.1) == pytest.approx(
        keyword_only(0.7, -0.4, shift=0.1), rel=1e-12)
    grads = pb.grad(calls_keyword_only, argnums=(0, 1))(0.3, 0.8)
    for k, g in enumerate(grads):
        assert g == pytest.approx(central_gradient(calls_keyword_only, [0.3, 0.8], k),
                                  rel=1e-6)
    with pytest.raises(ValueError, match="keyword-only parameter"):
        pb.grad(keyword_only, argnums=2)(0.7, -0.4, scale=1.5, shift=0.1)


def test_star_args_is_one_tuple_parameter():
    a, rest = 0.6, (0.5, -1.5, 2.0)
    g = pb.grad(star_args)(a, *rest, power=3)
    assert g == pytest.approx(central_gradient(lambda v: star_args(v, *rest, power=3), [a]),
                              rel=1e-6)
    with pytest.raises(ValueError, match="item of \\*args"):
        pb.grad(star_args, argnums=1)(a, *rest)
    f = pb.compile(star_args)   # under record(): the items of *args are inputs of the node
    xs = [nd.array(np.array([v])) for v in (a, *rest)]
    for x in xs:
        x.attach_grad()
    with ag.record():
        out = f(*xs)
    out.backward()
    expected = _tape(star_args, (a, *rest))
    assert [x.grad.asscalar() for x in xs] == pytest.approx(expected, rel=1e-10)
    assert expected[1] == pytest.approx(2.0 * a * rest[0], rel=1e-10)


def takes_kwargs(a, **options):
    return a * 2.0


def calls_star_args(a):
    return star_args(a, a)


@pytest.mark.parametrize("fn, text, words", [
    (takes_kwargs, "def takes_kwargs", "\\*\\*kwargs parameters are not supported"),
    (calls_star_args, "star_args(a, a)", "takes \\*args or \\*\\*kwargs")])
def test_kwargs_parameters_are_refused_at_their_line(fn, text, words):
    with pytest.raises(pb.CompileError, match=words) as info:
        pb.grad(fn)(0.5)
    assert f'"{__file__}", line {_line_of(fn, text)}:' in str(info.value)


# ----- functools.wraps wrappers taking *args, **kwargs -----------------------------------

import functools  # noqa: E402


def scaled(factor):
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return factor * fn(*args, **kwargs)
        return wrapper
    return decorate


@scaled(3.0)
def wrapped(a, b, *, shift=0.5):
    return a * b + shift * a * a


def calls_wrapped(a, b):
    return wrapped(a, b, shift=2.0) + wrapped(b, a)


def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        print(args)
        return fn(*args, **kwargs)
    return wrapper


@logged
def wrapped_and_logged(a):
    return a * a


def test_functools_wraps_wrapper_forwarding_star_args_compiles():
    args = (0.7, -0.4)
    grads = pb.grad(wrapped, argnums=(0, 1))(*args)
    tape = _tape(wrapped, args)
    for k, g in enumerate(grads):
        assert g == pytest.approx(central_gradient(wrapped, list(args), k), rel=1e-6)
        assert g == pytest.approx(tape[k], rel=1e-10, abs=1e-12)
    assert grads[0] == pytest.approx(3.0 * (args[1] + 2 * 0.5 * args[0]), rel=1e-12)
    assert pb.grad(wrapped)(0.7, -0.4, shift=1.0) == pytest.approx(3.0 * (-0.4 + 1.4))
    grads = pb.grad(calls_wrapped, argnums=(0, 1))(*args)
    tape = _tape(calls_wrapped, args)
    for k, g in enumerate(grads):
        assert g == pytest.approx(central_gradient(calls_wrapped, list(args), k), rel=1e-6)
        assert g == pytest.approx(tape[k], rel=1e-10, abs=1e-12)
    assert pb.compile(wrapped)(0.7, -0.4) == pytest.approx(wrapped(0.7, -0.4), rel=1e-12)


def test_a_wrapper_using_args_otherwise_is_refused_at_its_line():
    with pytest.raises(pb.CompileError, match="uses args other than by passing it on") as info:
        pb.grad(wrapped_and_logged)(0.5)
    assert f'"{__file__}", line {_line_of(logged, "print(args)")}:' in str(info.value)
