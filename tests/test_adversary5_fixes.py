"""Fixes of the fifth adversary's findings 1, 2, 3 and 5 (tests/test_adversary5_findings.py),
by family:

- every numpy spelling compiled code maps to a primitive (calls.NUMPY, the array methods
  of calls.METHODS, ``.T``) is checked against what numpy returns: where numpy's result
  shares memory with the operand (``np.shares_memory``), the aliasing rule must know it
  (``analysis._VIEWS`` or ``Operation.view``); likewise every primitive forward the
  samples reach.  A new view cannot be forgotten: the table must cover calls.NUMPY.
- a write after each view (and after np.asarray, .astype(copy=False), a user helper
  returning a view) is refused or gives Python's value, central differences' gradient and
  the directional difference as jvp; a write when the view is no longer read is followed
  (never refused) and right; a write into a view of an argument is refused.
- a differentiated int used as a count or an index is a CompileError at the user's line
  in every entry (grad argnums, vjp, jacfwd, jacrev, hessian, jvp and hvp tangents).
"""

import numpy as np
import pytest

import pullback as pb
from pullback.compiler import analysis, calls
from pullback.compiler.errors import CompileError
from pullback.runtime import primitives as P
from tape_helpers import central_gradient

V = np.array([0.5, -1.2, 2.0, 0.3])
M = np.array([[0.5, 1.5, -0.7], [2.5, 3.5, 0.2], [-1.0, 0.4, 1.1]])


# ----- the coverage table: numpy's views are the rule's views -----------------------------

def _samples():
    """numpy name -> (numpy call, primitive name, primitive forward call) on fresh arrays."""
    a, m, v = np.arange(12.0).reshape(3, 4), M.copy(), V.copy()
    one = lambda f: (lambda: (f(v), v))                         # noqa: E731
    two = lambda f: (lambda: (f(v, v[::-1].copy()), v))          # noqa: E731
    table = {}
    for name, prim in calls.NUMPY.items():
        fn = getattr(np, name)
        if P.REGISTRY[prim].scalar is not None or name in ("sum", "mean", "max", "amax", "min",
                                                          "amin", "prod", "cumsum", "cumprod",
                                                          "zeros_like", "ones_like",
                                                          "atleast_1d", "atleast_2d",
                                                          "atleast_3d", "flip", "asarray",
                                                          "array", "squeeze", "transpose",
                                                          "sign", "round", "rint"):
            arity = 2 if isinstance(fn, np.ufunc) and fn.nin == 2 else 1
            table[name] = (one(fn) if arity == 1 else two(fn))
    table.update({
        "trace": lambda: (np.trace(m), m), "dot": lambda: (np.dot(m, m), m),
        "matmul": lambda: (np.matmul(m, m), m),
        "where": lambda: (np.where(v > 0, v, -v), v),
        "reshape": lambda: (np.reshape(a, (4, 3)), a),
        "clip": lambda: (np.clip(v, -1.0, 1.0), v),
        "broadcast_to": lambda: (np.broadcast_to(v, (3, 4)), v),
        "tile": lambda: (np.tile(v, 1), v), "repeat": lambda: (np.repeat(v, 1), v),
        "expand_dims": lambda: (np.expand_dims(v, 0), v),
        "diag": lambda: (np.diag(m), m), "roll": lambda: (np.roll(v, 1), v),
        "triu": lambda: (np.triu(m), m), "tril": lambda: (np.tril(m), m),
        "pad": lambda: (np.pad(v, 0), v),
        "take_along_axis": lambda: (np.take_along_axis(v, np.array([1, 0]), 0), v),
        "outer": lambda: (np.outer(v, v), v), "inner": lambda: (np.inner(v, v), v),
        "vdot": lambda: (np.vdot(m, m), m),
        "tensordot": lambda: (np.tensordot(m, m, 1), m),
        "maximum": lambda: (np.maximum(v, 0.0), v), "minimum": lambda: (np.minimum(v, 0.0), v),
        "mod": lambda: (np.mod(v, 0.7), v), "remainder": lambda: (np.remainder(v, 0.7), v),
        "power": lambda: (np.power(v, 2.0), v), "arctan2": lambda: (np.arctan2(v, 1.0), v),
        "hypot": lambda: (np.hypot(v, 1.0), v), "logaddexp": lambda: (np.logaddexp(v, 1.0), v),
    })
    return table


# numpy spellings whose result is the operand itself, where the primitive copies: marked
# Operation.view by calls.py (np.array copies, as its primitive does)
_MARKED_VIEWS = {"asarray"}


def test_the_table_covers_every_numpy_spelling():
    assert set(_samples()) == set(calls.NUMPY)


@pytest.mark.parametrize("name", sorted(calls.NUMPY))
def test_numpy_views_are_known_to_the_aliasing_rule(name):
    with np.errstate(all="ignore"):   # log of a negative sample is nan: no matter here
        result, operand = _samples()[name]()
    prim = calls.NUMPY[name]
    shares = isinstance(result, np.ndarray) and np.shares_memory(result, operand)
    known = prim in analysis._VIEWS or name in _MARKED_VIEWS
    assert not shares or known, f"np.{name} returns a view; the aliasing rule must know it"


# numpy (and nd) views reached through other spellings: einsum's 'ij->ji' and 'ii->i',
# .T, basic indexing, nd.slice_axis / slice / flatten in compiled code
@pytest.mark.parametrize("prim, args, params", [
    ("einsum", (M,), {"subscripts": "ij->ji"}), ("einsum", (M,), {"subscripts": "ii->i"}),
    ("transpose", (M,), {}), ("getitem", (M,), {"key": (0,)}),
    ("slice_axis", (M,), {"axis": 0, "begin": 0, "end": 2}),
    ("slice", (M,), {"begin": (0, 0), "end": (2, 2)}), ("flatten", (M,), {}),
    ("sum_to", (M,), {"shape": (3, 3)}), ("squeeze", (M[None],), {}),
    ("atleast_1d", (V,), {}), ("atleast_2d", (V,), {}), ("atleast_3d", (V,), {}),
    ("flip", (V,), {}), ("diag", (M,), {}), ("reshape", (M,), {"shape": (9,)})])
def test_primitive_forwards_that_return_views_are_views(prim, args, params):
    result = P.REGISTRY[prim].forward(*args, **params)
    assert np.shares_memory(result, args[0])
    assert prim in analysis._VIEWS


def test_primitive_forwards_of_one_operand_are_known():
    # the primitive forward (what compiled code runs) of each numpy spelling that takes one
    # operand and no parameter, on a vector and a matrix: a view there is a view for the
    # rule (the primitives with parameters: the parametrized test above)
    checked = 0
    for name, prim in sorted(calls.NUMPY.items()):
        forward = P.REGISTRY[prim].forward
        for operand in (V.copy(), M.copy()):
            try:
                with np.errstate(all="ignore"):
                    result = forward(operand)
            except (TypeError, ValueError):
                continue   # needs parameters or another operand
            checked += 1
            if isinstance(result, np.ndarray) and np.shares_memory(result, operand):
                assert prim in analysis._VIEWS or name in _MARKED_VIEWS, name
    assert checked > 40


# ----- writes after a view: refused, or Python's value and gradient ----------------------

def _check_refused_or_right(fn, x, must_compile=False):
    """Refused (CompileError), or value = plain Python, gradient = central differences and
    jvp = the central directional difference."""
    try:
        value, grad = pb.value_and_grad(fn)(x.copy())
    except CompileError:
        assert not must_compile, "refused, but no other name reads the array after the write"
        return "refused"
    np.testing.assert_allclose(value, fn(x.copy()), rtol=1e-12)
    np.testing.assert_allclose(grad, central_gradient(fn, (x,)), rtol=1e-6, atol=1e-8)
    t = np.linspace(0.3, -0.9, x.size).reshape(x.shape)
    h = 1e-6
    fd = (fn(x + h * t) - fn(x - h * t)) / (2 * h)
    _, tangent = pb.jvp(fn, (x.copy(),), (t,))
    np.testing.assert_allclose(tangent, fd, rtol=1e-6, atol=1e-8)
    return "right"


def _helper_view(y):
    return np.squeeze(y)


def _helper_transposed(m):
    t = m.T
    return t


def _helper_fresh(y):
    z = y * 2.0 + 1.0
    return z


def _helper_fresh_call(y):
    return np.exp(y), np.sum(y)


# the view expressions of y (a vector; r[0:1] holds y[0] for each) and of a matrix m
VECTOR_VIEWS = {
    "atleast_1d": "np.atleast_1d(y)", "atleast_2d": "np.atleast_2d(y)",
    "atleast_3d": "np.atleast_3d(y)", "flip": "np.flip(y)[::-1]", "asarray": "np.asarray(y)",
    "reshape": "np.reshape(y, (2, 2))", "expand_dims": "np.expand_dims(y, 0)",
    "squeeze": "np.squeeze(y)", "transpose": "np.transpose(y)", "slice": "y[0:3]",
    "astype_no_copy": "y.astype(np.float64, copy=False)", "helper_view": "_helper_view(y)",
    "einsum": "np.einsum('i->i', y)", "broadcast_to": "np.broadcast_to(y, (2, 4))",
    "method_reshape": "y.reshape((4, 1))", "T": "y.T"}
MATRIX_VIEWS = {"diag": "np.diag(m)", "T": "m.T", "row": "m[0]",
                "helper_transposed": "_helper_transposed(m)",
                "einsum_diagonal": "np.einsum('ii->i', m)", "flip": "np.flip(m, 0)[::-1]"}
READ_ONLY = {"broadcast_to", "diag", "einsum_diagonal"}   # numpy gives a read-only view

_TEMPLATE = """
def read_after_{name}(v):
    y = v.copy()
    r = {view}
    y[0] = 10.0
    return np.sum(r * np.sum(v * v)) + np.sum(y * v)


def read_before_{name}(v):
    y = v.copy()
    r = {view}
    s = np.sum(r * np.sum(v * v))
    y[0] = 10.0
    return s + np.sum(y * v)


def write_through_{name}(v):
    y = v.copy()
    r = {view}
    r[0:1] = r[0:1] * 3.0
    return np.sum(y * v)


def argument_{name}(v):
    y = v
    r = {view}
    r[0:1] = 0.0
    return np.sum(v * v)


def matrix_read_after_{name}(m0):
    m = m0.copy()
    r = {mview}
    m[0, 0] = 10.0
    return np.sum(r * np.sum(m0)) + np.sum(m * m0)


def matrix_read_before_{name}(m0):
    m = m0.copy()
    s = np.sum({mview} * np.sum(m0))
    m[0, 0] = 10.0
    return s + np.sum(m * m0)
"""


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """The programs as a module of their own (pullback reads their source)."""
    import importlib.util
    import inspect
    lines = ["import numpy as np", "", inspect.getsource(_helper_view),
             inspect.getsource(_helper_transposed)]
    for name in sorted(set(VECTOR_VIEWS) | set(MATRIX_VIEWS)):
        lines.append(_TEMPLATE.format(name=name, view=VECTOR_VIEWS.get(name, "y"),
                                      mview=MATRIX_VIEWS.get(name, "m")))
    path = tmp_path_factory.mktemp("adv5views") / "adv5_view_programs.py"
    path.write_text("\n".join(lines))
    spec = importlib.util.spec_from_file_location("adv5_view_programs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(VECTOR_VIEWS))
def test_write_with_a_view_read_after_it(programs, name):
    # the rule: another name reads the array after the write -> refused
    assert _check_refused_or_right(getattr(programs, f"read_after_{name}"), V) == "refused"


@pytest.mark.parametrize("name", sorted(VECTOR_VIEWS))
def test_write_with_a_view_read_only_before_it_is_followed(programs, name):
    _check_refused_or_right(getattr(programs, f"read_before_{name}"), V, must_compile=True)


@pytest.mark.parametrize("name", sorted(set(VECTOR_VIEWS) - READ_ONLY))
def test_write_through_the_view_read_after_it(programs, name):
    assert _check_refused_or_right(getattr(programs, f"write_through_{name}"), V) == "refused"


@pytest.mark.parametrize("name", sorted(set(VECTOR_VIEWS) - READ_ONLY))
def test_write_into_a_view_of_an_argument_is_refused(programs, name):
    x = V.copy()
    with pytest.raises(CompileError):
        pb.grad(getattr(programs, f"argument_{name}"))(x)
    np.testing.assert_array_equal(x, V)   # the caller's array is untouched


@pytest.mark.parametrize("name", sorted(MATRIX_VIEWS))
def test_write_with_a_matrix_view_read_after_it(programs, name):
    assert _check_refused_or_right(getattr(programs, f"matrix_read_after_{name}"), M) == "refused"


@pytest.mark.parametrize("name", sorted(MATRIX_VIEWS))
def test_write_with_a_matrix_view_read_only_before_it_is_followed(programs, name):
    _check_refused_or_right(getattr(programs, f"matrix_read_before_{name}"), M,
                            must_compile=True)


@pytest.mark.parametrize("helper", [_helper_fresh, _helper_fresh_call])
def test_a_helper_returning_new_values_is_no_alias(helper):
    # the source shows a new value: a later write into the argument is followed
    def fn(v):
        y = v.copy()
        r = helper(y)
        y[0] = 10.0
        return np.sum(r[0] * v) + np.sum(y * v)
    assert _check_refused_or_right(fn, V, must_compile=True) == "right"


def test_a_helper_returning_a_view_is_an_alias():
    for helper in (_helper_view, _helper_transposed):
        assert analysis._may_share_argument(helper)
    for helper in (_helper_fresh, _helper_fresh_call):
        assert not analysis._may_share_argument(helper)


# ----- a differentiated int as a count or an index ----------------------------------------

def _count(x, n):
    s = 0.0
    for i in range(n):
        s = s + x * i
    return s


def _count_derived(x, n):
    s = 0.0
    m = n + 1
    for i in range(m):
        s = s + x * i
    return s


def _index(x, n):
    return np.sum(x[n] * x)


def _slice(x, n):
    return np.sum(x[1:n] * 2.0)


def _write_key(x, n):
    y = x * 1.0
    y[n] = 0.0
    return np.sum(y * x)


INT_USES = [(_count, 0.7), (_count_derived, 0.7), (_index, V), (_slice, V), (_write_key, V)]


@pytest.mark.parametrize("fn, x", INT_USES)
def test_differentiated_int_in_argnums_is_refused_at_the_users_line(fn, x):
    with pytest.raises(CompileError, match="carries a gradient into") as info:
        pb.grad(fn, argnums=(0, 1))(x, 2)
    assert "test_adversary5_fixes.py" in str(info.value)
    # as data it runs, and equals central differences
    np.testing.assert_allclose(pb.grad(fn)(x, 2), central_gradient(fn, (x, 2)), rtol=1e-6,
                               atol=1e-8)


@pytest.mark.parametrize("fn, x", INT_USES)
@pytest.mark.parametrize("entry", ["vjp", "jacfwd", "jacrev", "hessian", "jvp", "hvp"])
def test_differentiated_int_is_refused_in_every_entry(fn, x, entry):
    with pytest.raises(CompileError, match="carries a gradient into"):
        if entry == "vjp":
            pb.vjp(fn, x, 2)
        elif entry in ("jacfwd", "jacrev", "hessian"):
            getattr(pb, entry)(fn, argnums=1)(x, 2)
        else:
            getattr(pb, entry)(fn, (x, 2), (np.ones_like(x) if np.ndim(x) else 1.0, 0.0))


def test_an_int_computed_beside_a_differentiated_value_is_no_gradient():
    # k + 1 fused with x's arithmetic is not taken for a differentiated int
    def fn(x):
        y = np.zeros(6)
        k = 0
        while k < 4:
            y[k + 1] = y[k] * 0.5 + x[k % 3]
            k = k + 2
        return np.sum(np.sin(y))
    x = np.array([0.3, -0.4, 0.8])
    np.testing.assert_allclose(pb.grad(fn)(x), central_gradient(fn, (x,)), rtol=1e-6,
                               atol=1e-8)
