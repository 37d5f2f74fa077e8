"""The families of the fourth adversary's findings (tests/test_adversary4_findings.py holds
the findings themselves), closed: why the tests missed each, and what now covers it.

- Rebinding (findings 3, 6, 7): tests/test_rebinding.py rebound globals, helpers, closure
  cells and attributes of a plain instance and a module, through pb.grad, value_and_grad,
  pb.compile and jvp only; a callee reached through any other attribute holder, and the
  second-order entries, were never rebound.  Here every holder kind a call can name
  (``SimpleNamespace``, ``argparse.Namespace``, instances with and without ``__slots__``, a
  dataclass, classes and their bases, a function's attributes, chains five deep, a bool
  flag) is rebound under every entry point, on both roads, against numpy and central
  differences; and old derivative objects are called after *another* one rebuilt.
- Second order of the table's rules (findings 1, 5): hvp was checked on programs, not rule
  by rule, and mostly with a linear outer function (so the head gradient reaching a rule
  had no tangent); here the second order of every reduction, linalg and contraction rule
  is hvp against central differences of pb.grad behind a nonlinear outer function,
  including singular matrices for det.  (It also caught np.inner and a full-contraction
  np.einsum, silently wrong like np.trace before the fix: a 0-d operand of an elementwise
  op inside a rule evaluated on Duals.)
- np.array of a list with constants (finding 2): grad and jvp were tested; here every
  entry point, nested lists, tuples and array rows.
- Bad input (finding 4): the prepared derivative objects (and the native gradient entry)
  were never called with a bad argument after a good one; here every bad kind, fresh and
  prepared, every entry point, both roads.
"""

import argparse
import dataclasses
import sys
import types

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd

X = 0.7


def central(f, x, h=1e-6):
    return (f(x + h) - f(x - h)) / (2 * h)


def act_old(t):
    return np.sin(t) * 3.0


def act_new(t):
    return t * t * t


def d_act(act, x):
    return {act_old: 3.0 * np.cos(x), act_new: 3.0 * x * x}[act]


def dd_act(act, x):
    return {act_old: -3.0 * np.sin(x), act_new: 6.0 * x}[act]


# ----- holders of a callee: each kind a call ``holder.act(x)`` can name ------------------

ns = types.SimpleNamespace(act=act_old)
ap = argparse.Namespace(act=act_old)


class Plain:
    pass


plain = Plain()
plain.act = act_old


class Slotted:
    __slots__ = ("act",)


slotted = Slotted()
slotted.act = act_old


@dataclasses.dataclass
class Config:
    act: object


config = Config(act_old)


class WithStatic:
    act = staticmethod(act_old)


class WithFunction:
    act = act_old


class Base:
    act = staticmethod(act_old)


class Derived(Base):
    pass


derived = Derived()
shadowed = Derived()   # its own attribute, set after the first compile, hides the class's


def holder_function():
    """Holds ``act`` as a function attribute."""


holder_function.act = act_old

deep = types.SimpleNamespace(a=types.SimpleNamespace(b=types.SimpleNamespace(
    c=types.SimpleNamespace(d=types.SimpleNamespace(act=act_old)))))
runtime_module = types.ModuleType("made_at_run_time")
runtime_module.act = act_old
flags = types.SimpleNamespace(cube=False)


def via_ns(x):
    return ns.act(x) + 1.0


def via_argparse(x):
    return ap.act(x) + 1.0


def via_plain(x):
    return plain.act(x) + 1.0


def via_slots(x):
    return slotted.act(x) + 1.0


def via_dataclass(x):
    return config.act(x) + 1.0


def via_class_static(x):
    return WithStatic.act(x) + 1.0


def via_class_function(x):
    return WithFunction.act(x) + 1.0


def via_instance_of_class(x):
    return derived.act(x) + 1.0


def via_shadowed(x):
    return shadowed.act(x) + 1.0


def via_function_attribute(x):
    return holder_function.act(x) + 1.0


def via_deep(x):
    return deep.a.b.c.d.act(x) + 1.0


def via_module(x):
    return runtime_module.act(x) + 1.0


def via_flag(x):
    if flags.cube:
        return act_new(x) + 1.0
    return act_old(x) + 1.0


def _static(cls):
    return lambda fn: setattr(cls, "act", staticmethod(fn))


HOLDERS = {
    "SimpleNamespace": (via_ns, lambda fn: setattr(ns, "act", fn)),
    "argparse.Namespace": (via_argparse, lambda fn: setattr(ap, "act", fn)),
    "instance": (via_plain, lambda fn: setattr(plain, "act", fn)),
    "__slots__ instance": (via_slots, lambda fn: setattr(slotted, "act", fn)),
    "dataclass": (via_dataclass, lambda fn: setattr(config, "act", fn)),
    "class staticmethod": (via_class_static, _static(WithStatic)),
    "class function": (via_class_function, lambda fn: setattr(WithFunction, "act", fn)),
    "base class of an instance": (via_instance_of_class, _static(Base)),
    "subclass overrides": (via_instance_of_class, _static(Derived)),
    "instance attribute hides the class's": (via_shadowed,
                                             lambda fn: setattr(shadowed, "act", fn)),
    "function attribute": (via_function_attribute,
                           lambda fn: setattr(holder_function, "act", fn)),
    "chain five deep": (via_deep, lambda fn: setattr(deep.a.b.c.d, "act", fn)),
    "module made at run time": (via_module, lambda fn: setattr(runtime_module, "act", fn)),
    "bool flag": (via_flag, lambda fn: setattr(flags, "cube", fn is act_new)),
}


def _restore():
    for name in ("act",):
        for holder in (ns, ap, plain, slotted, config, holder_function, deep.a.b.c.d,
                       runtime_module):
            setattr(holder, name, act_old)
    WithStatic.act = Base.act = staticmethod(act_old)
    WithFunction.act = act_old
    Derived.__dict__.get("act") and delattr(Derived, "act")
    shadowed.__dict__.pop("act", None)
    flags.cube = False


@pytest.fixture
def holders():
    _restore()
    yield
    _restore()


def _scalar(value):
    value = value.asnumpy() if isinstance(value, nd.NDArray) else value
    return float(np.asarray(value).reshape(-1)[0])


def _entry_points(fn):
    """Derivative objects made (and called) before the rebinding, each returning
    ``(value or None, first derivative, second derivative or None)`` at X."""
    compiled = pb.compile(fn)
    grad, value_and_grad = pb.grad(fn), pb.value_and_grad(fn)
    jacfwd, jacrev, hessian = pb.jacfwd(fn), pb.jacrev(fn), pb.hessian(fn)
    grad_grad = pb.grad(pb.grad(fn))

    def recorded(x):
        xs = nd.array(np.array([x]))
        xs.attach_grad()
        with ag.record():
            y = compiled(xs)
        y.backward()
        return _scalar(y), _scalar(xs.grad), None

    return {
        "grad": lambda x: (None, grad(x), None),
        "value_and_grad": lambda x: (_scalar(value_and_grad(x)[0]), value_and_grad(x)[1],
                                     None),
        "vjp": lambda x: (_scalar(pb.vjp(fn, x)[0]), _scalar(pb.vjp(fn, x)[1](1.0)[0]), None),
        "jvp": lambda x: tuple(map(_scalar, pb.jvp(fn, (x,), (1.0,)))) + (None,),
        "jacfwd": lambda x: (None, _scalar(jacfwd(x)), None),
        "jacrev": lambda x: (None, _scalar(jacrev(x)), None),
        "hvp": lambda x: (None,) + tuple(map(_scalar, pb.hvp(fn, (x,), (1.0,)))),
        "jvp(grad)": lambda x: (None,) + tuple(map(_scalar, pb.jvp(grad, (x,), (1.0,)))),
        "grad(grad)": lambda x: (None, None, _scalar(grad_grad(x))),
        "hessian": lambda x: (None, None, _scalar(hessian(x))),
        "compile": lambda x: (_scalar(compiled(x)), None, None),
        "compile under record()": recorded,
    }


def _check(results, act, fn):
    value, first, second = results
    if value is not None:
        np.testing.assert_allclose(value, act(X) + 1.0, rtol=1e-12)
        np.testing.assert_allclose(value, fn(X), rtol=1e-12)
    if first is not None:
        np.testing.assert_allclose(_scalar(first), d_act(act, X), rtol=1e-12)
        np.testing.assert_allclose(_scalar(first), central(fn, X), rtol=1e-7)
    if second is not None:
        np.testing.assert_allclose(second, dd_act(act, X), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(second, central(pb.grad(fn), X), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("road", ["native", "python"])
@pytest.mark.parametrize("kind", list(HOLDERS))
def test_a_callee_rebound_in_any_holder_is_seen_by_every_entry_point(
        holders, monkeypatch, kind, road):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1" if road == "native" else "0")
    fn, rebind = HOLDERS[kind]
    entries = _entry_points(fn)
    for name, entry in entries.items():
        _check(entry(X), act_old, fn)
    rebind(act_new)
    for name, entry in entries.items():
        try:
            _check(entry(X), act_new, fn)
        except AssertionError as error:
            raise AssertionError(f"{name} after rebinding {kind}: {error}") from None
    rebind(act_old)   # and back again
    for name, entry in entries.items():
        _check(entry(X), act_old, fn)


# ----- old derivative objects called after another one rebuilt the variants --------------

callee = act_old


def calls_global(x):
    return callee(x) + 1.0


@pytest.mark.parametrize("road", ["native", "python"])
@pytest.mark.parametrize("rebuilder", ["grad", "value_and_grad", "hvp", "jvp", "compile"])
def test_old_objects_see_a_rebinding_another_object_rebuilt_for(monkeypatch, road, rebuilder):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1" if road == "native" else "0")
    module = sys.modules[__name__]
    monkeypatch.setattr(module, "callee", act_old)
    entries = _entry_points(calls_global)
    for _ in range(2):   # the second call takes the installed fast entries
        for entry in entries.values():
            _check(entry(X), act_old, calls_global)
    monkeypatch.setattr(module, "callee", act_new)
    fresh = {"grad": lambda: pb.grad(calls_global)(X),
             "value_and_grad": lambda: pb.value_and_grad(calls_global)(X)[1],
             "hvp": lambda: pb.hvp(calls_global, (X,), (1.0,))[0],
             "jvp": lambda: pb.jvp(calls_global, (X,), (1.0,))[1],
             "compile": lambda: pb.grad(pb.compile(calls_global))(X)}[rebuilder]
    np.testing.assert_allclose(_scalar(fresh()), d_act(act_new, X), rtol=1e-12)
    for name, entry in entries.items():
        try:
            _check(entry(X), act_new, calls_global)
        except AssertionError as error:
            raise AssertionError(f"old {name} after a fresh {rebuilder}: {error}") from None


# ----- second order of every linalg, reduction and contraction rule -----------------------
# Each program puts a nonlinear function after the op (so the head gradient reaching the
# op's VJP rule has a tangent of its own) and before it where the rule reads its operand.

_R = np.random.default_rng(20261207)
_C3 = _R.standard_normal((3, 3))
_C4 = _R.standard_normal((4,))
_C23 = _R.standard_normal((2, 3))


def _matrix(n, batch=()):
    q1 = np.linalg.qr(_R.standard_normal(batch + (n, n)))[0]
    q2 = np.linalg.qr(_R.standard_normal(batch + (n, n)))[0]
    return (q1 * _R.uniform(1.0, 2.0, batch + (1, n))) @ q2 + 0.2 * np.eye(n)


def _spd(n):
    q = np.linalg.qr(_R.standard_normal((n, n)))[0]
    return (q * _R.uniform(1.0, 2.0, (1, n))) @ q.T + n * np.eye(n)


def sum_all(x):
    return np.sin(np.sum(x * x))


def sum_axis(x):
    return np.sum(np.sin(np.sum(x * x, axis=0)) * _C3[0])


def sum_keepdims(x):
    return np.sum(np.sin(np.sum(np.tanh(x), axis=1, keepdims=True)) * _C3)


def mean_all(x):
    return np.mean(np.tanh(x)) ** 2


def mean_axis(x):
    return np.sum(np.mean(np.sin(x), axis=1) ** 3)


def prod_all(x):
    return np.sin(np.prod(x))


def prod_axis(x):
    return np.sum(np.sin(np.prod(x, axis=0)) * _C3[1])


def max_all(x):
    return np.max(x * x) ** 2


def max_axis(x):
    return np.sum(np.sin(np.max(x * _C3, axis=1)))


def min_axis(x):
    return np.sum(np.min(np.tanh(x), axis=0) ** 2)


def norm_vector(x):
    return np.sin(np.linalg.norm(x * _C3))


def norm_nd(x):
    return nd.norm(nd.array(np.ones((3, 3))) * x) ** 3


def nansum_all(x):
    return nd.sin(nd.nansum(x * x))


def nanprod_all(x):
    return nd.sin(nd.nanprod(x))


def cumsum_axis(x):
    return np.sum(np.sin(np.cumsum(x, axis=1)) * _C3)


def cumprod_axis(x):
    return np.sum(np.sin(np.cumprod(x, axis=0)) * _C3)


def trace_sin(x):
    return np.sin(np.trace(x * x))


def trace_offset(x):
    return np.trace(np.tanh(x), offset=-1) ** 2 + np.trace(x, offset=1) ** 3


def trace_of_3d(x):
    return np.sum(np.sin(np.trace(x.reshape((1, 3, 3)) * x, axis1=1, axis2=2)))


def softmax_nd(x):
    return nd.sum(nd.softmax(x * 2.0) * _C3)


def log_softmax_nd(x):
    return nd.sum(nd.sin(nd.log_softmax(x)) * _C3)


def topk_nd(x):
    return nd.sum(nd.topk(x * x, k=2, ret_typ="value") ** 2)


def det_of(x):
    return np.sin(np.linalg.det(x))


def det_squared(x):
    return np.linalg.det(x * 1.5) ** 2


def slogdet_of(x):
    sign, logdet = np.linalg.slogdet(x)
    return np.sin(logdet) * sign


def inverse_of(x):
    return np.sum(np.sin(np.linalg.inv(x)) * _C3)


def solve_both(a, b):
    return np.sum(np.sin(np.linalg.solve(a, b)) * _C3[0])


def cholesky_of(x):
    return np.sum(np.sin(np.linalg.cholesky(x @ x.T + 3.0 * np.eye(3))) * _C3)


def potri_of(x):
    return np.sum(np.sin(nd.linalg.potri(nd.linalg.potrf(x @ x.T + 3.0 * np.eye(3)))) * _C3)


def trsm_both(a, b):
    return np.sum(np.sin(nd.linalg.trsm(a, b)) * _C3)


def trmm_both(a, b):
    return np.sum(np.sin(nd.linalg.trmm(a, b, transpose=True)) * _C3)


def gemm_three(a, b):
    return np.sum(np.sin(nd.linalg.gemm(a, b, a * b, alpha=0.5, beta=2.0)) * _C3)


def gemm2_both(a, b):
    return np.sum(np.sin(nd.linalg.gemm2(a, b, transpose_b=True)) * _C3)


def syrk_of(x):
    return np.sum(np.sin(nd.linalg.syrk(x, alpha=0.7)) * _C3)


def sumlogdiag_of(x):
    return np.sin(nd.linalg.sumlogdiag(x * x + 1.0))


def extractdiag_of(x):
    return np.sum(np.sin(nd.linalg.extractdiag(x * x, offset=1)))


def makediag_of(x):
    return np.sum(np.sin(nd.linalg.makediag(np.tanh(x[0]))) * _C3 + x * x)


def dot_both(a, b):
    return np.sin(np.sum(np.dot(np.tanh(a), b) * _C3))


def matmul_both(a, b):
    return np.sum(np.sin(np.tanh(a) @ b) * _C3)


def inner_vectors(x):
    return np.sin(np.inner(x[0], np.tanh(x[1])))


def outer_vectors(x):
    return np.sum(np.sin(np.outer(x[0], np.tanh(x[1]))) * _C3)


def tensordot_both(a, b):
    return np.sum(np.sin(np.tensordot(a, np.tanh(b), axes=1)) * _C3)


def einsum_both(a, b):
    return np.sin(np.einsum("ij,jk->", a, np.tanh(b)))


def batch_dot_both(a, b):
    return nd.sum(nd.sin(nd.batch_dot(nd.tanh(a), b)))


SQUARE = lambda: _R.standard_normal((3, 3)) * 0.8   # noqa: E731
SECOND_ORDER = {   # rule -> (program, inputs)
    "sum": [(sum_all, lambda: [SQUARE()]), (sum_axis, lambda: [SQUARE()]),
            (sum_keepdims, lambda: [SQUARE()])],
    "mean": [(mean_all, lambda: [SQUARE()]), (mean_axis, lambda: [SQUARE()])],
    "prod": [(prod_all, lambda: [SQUARE()]), (prod_axis, lambda: [SQUARE()])],
    "max": [(max_all, lambda: [SQUARE()]), (max_axis, lambda: [SQUARE()])],
    "min": [(min_axis, lambda: [SQUARE()])],
    "norm": [(norm_vector, lambda: [SQUARE()]), (norm_nd, lambda: [SQUARE()])],
    "nansum": [(nansum_all, lambda: [SQUARE()])],
    "nanprod": [(nanprod_all, lambda: [SQUARE()])],
    "cumsum": [(cumsum_axis, lambda: [SQUARE()])],
    "cumprod": [(cumprod_axis, lambda: [SQUARE()])],
    "trace": [(trace_sin, lambda: [SQUARE()]), (trace_offset, lambda: [SQUARE()]),
              (trace_of_3d, lambda: [SQUARE()])],
    "softmax": [(softmax_nd, lambda: [SQUARE()])],
    "log_softmax": [(log_softmax_nd, lambda: [SQUARE()])],
    "topk": [(topk_nd, lambda: [SQUARE()])],
    "det": [(det_of, lambda: [_matrix(3)]), (det_squared, lambda: [_matrix(3)]),
            (det_of, lambda: [np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])]),
            (det_squared, lambda: [np.array([[1.0, 2.0], [2.0, 4.0]])]),
            (det_squared, lambda: [np.zeros((3, 3))]),
            (det_of, lambda: [np.outer([1.0, 2.0, 3.0], [1.0, -1.0, 2.0])]),
            (det_squared, lambda: [_matrix(3, (2,))])],
    "adjugate": [(det_of, lambda: [np.diag([2.0, 0.0, 0.5])])],
    "slogdet": [(slogdet_of, lambda: [_matrix(3)])],
    "inverse": [(inverse_of, lambda: [_matrix(3)])],
    "solve": [(solve_both, lambda: [_matrix(3), _R.standard_normal(3)])],
    "cholesky": [(cholesky_of, lambda: [SQUARE()])],
    "potri": [(potri_of, lambda: [SQUARE()])],
    "trsm": [(trsm_both, lambda: [_matrix(3), SQUARE()])],
    "trmm": [(trmm_both, lambda: [SQUARE(), SQUARE()])],
    "gemm": [(gemm_three, lambda: [SQUARE(), SQUARE()])],
    "gemm2": [(gemm2_both, lambda: [SQUARE(), SQUARE()])],
    "syrk": [(syrk_of, lambda: [SQUARE()])],
    "sumlogdiag": [(sumlogdiag_of, lambda: [SQUARE()])],
    "extractdiag": [(extractdiag_of, lambda: [SQUARE()])],
    "makediag": [(makediag_of, lambda: [SQUARE()])],
    "dot": [(dot_both, lambda: [SQUARE(), SQUARE()])],
    "matmul": [(matmul_both, lambda: [SQUARE(), SQUARE()])],
    "inner": [(inner_vectors, lambda: [SQUARE()[:2]])],
    "outer": [(outer_vectors, lambda: [SQUARE()[:2]])],
    "tensordot": [(tensordot_both, lambda: [SQUARE(), SQUARE()])],
    "einsum": [(einsum_both, lambda: [SQUARE(), SQUARE()])],
    "batch_dot": [(batch_dot_both, lambda: [_R.standard_normal((2, 3, 3)),
                                            _R.standard_normal((2, 3, 3))])],
}
SECOND_ORDER_CASES = [(rule, k) for rule, cases in SECOND_ORDER.items()
                      for k in range(len(cases))]


def _fd_hvp_args(fn, args, vs, h=1e-5):
    grad = pb.grad(fn, argnums=tuple(range(len(args))))
    plus = grad(*[a + h * v for a, v in zip(args, vs, strict=True)])
    minus = grad(*[a - h * v for a, v in zip(args, vs, strict=True)])
    return [(p - m) / (2 * h) for p, m in zip(plus, minus, strict=True)]


def _numpy(value):
    return value.asnumpy() if isinstance(value, nd.NDArray) else np.asarray(value)


@pytest.mark.parametrize("rule,k", SECOND_ORDER_CASES,
                         ids=[f"{rule}-{k}" for rule, k in SECOND_ORDER_CASES])
def test_second_order_of_each_rule_is_central_differences_of_its_gradient(rule, k):
    fn, make = SECOND_ORDER[rule][k]
    args = make()
    vs = [_R.standard_normal(np.shape(a)) for a in args]
    grads, products = pb.hvp(fn, tuple(args), tuple(vs))
    if len(args) == 1:
        grads, products = (grads,), (products,)
    central_products = _fd_hvp_args(fn, args, vs)
    first = pb.grad(fn, argnums=tuple(range(len(args))))(*args)
    for g, f, p, c in zip(grads, first, products, central_products, strict=True):
        np.testing.assert_allclose(_numpy(g), _numpy(f), rtol=1e-10, atol=1e-12)
        scale = max(1.0, float(np.abs(_numpy(c)).max()))
        np.testing.assert_allclose(_numpy(p), _numpy(c), rtol=1e-6, atol=1e-6 * scale)


_GROUP = {"sum", "mean", "prod", "max", "min", "norm", "nansum", "nanprod", "cumsum",
          "cumprod", "trace", "softmax", "log_softmax", "topk", "det", "adjugate", "slogdet",
          "inverse", "solve", "cholesky", "potri", "trsm", "trmm", "gemm", "gemm2", "syrk",
          "sumlogdiag", "extractdiag", "makediag", "dot", "matmul", "inner", "outer",
          "tensordot", "einsum", "batch_dot"}


def test_the_second_order_table_covers_every_reduction_linalg_and_contraction_rule():
    from pullback.runtime import primitives as P

    registered = {name for name in _GROUP if P.REGISTRY.get(name) is not None
                  and P.REGISTRY[name].vjps is not None}
    assert registered == _GROUP          # the group names rules that exist
    assert set(SECOND_ORDER) == _GROUP   # and each has a second-order case above


# ----- np.array of lists mixing differentiated values and constants, every entry point ----

def list_with_constant(x):
    return np.sum(np.array([x[0] * x[1], x[1], 2.0]) ** 2)


def nested_list_with_constants(x):
    return np.sum(np.sin(np.array([[x[0], 1.0], [2.0, x[1] * x[0]]]) * _C3[:2, :2]))


def tuple_with_constant(x):
    return np.sum(np.tanh(np.asarray((x[0], 3.0, x[1] * x[1]))) * _C3[0])


def rows_and_a_constant_row(x):
    return np.sum(np.sin(np.array([x * x, np.ones(2), x]) * x))


def constant_first(x):
    return np.sum(np.array([0.5, np.sin(x[0]), 0.0, x[1]]) ** 3)


ARRAY_OF_LIST = [list_with_constant, nested_list_with_constants, tuple_with_constant,
                 rows_and_a_constant_row, constant_first]


def _central_gradient(fn, x, h=1e-6):
    return np.array([(fn(x + h * e) - fn(x - h * e)) / (2 * h) for e in np.eye(x.size)])


@pytest.mark.parametrize("fn", ARRAY_OF_LIST, ids=[f.__name__ for f in ARRAY_OF_LIST])
def test_array_of_a_list_with_constants_under_every_entry_point(fn):
    x = np.array([0.6, -1.3])
    v = np.array([0.4, 0.9])
    central = _central_gradient(fn, x)
    hessian_central = np.array([(pb.grad(fn)(x + 1e-5 * e) - pb.grad(fn)(x - 1e-5 * e)) / 2e-5
                                for e in np.eye(2)])
    np.testing.assert_allclose(pb.grad(fn)(x), central, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(pb.vjp(fn, x)[1](1.0)[0], central, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(pb.jvp(fn, (x,), (v,))[1], central @ v, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(pb.jacfwd(fn)(x), central, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(pb.jacrev(fn)(x), central, rtol=1e-7, atol=1e-9)
    gradient, product = pb.hvp(fn, (x,), (v,))
    np.testing.assert_allclose(gradient, central, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(product, hessian_central @ v, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(pb.hessian(fn)(x), hessian_central, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(pb.jvp(pb.grad(fn), (x,), (v,))[1], hessian_central @ v,
                               rtol=1e-6, atol=1e-7)


# ----- bad input: both roads, fresh and prepared derivative objects agree ------------------

def poly(x, y=2.0):
    return x * x * y + x


BAD_INPUTS = [True, False, np.True_, np.bool_(False), "1.5", None, 1.5 + 0.0j,
              np.complex128(1.5), b"x", object()]


@pytest.mark.parametrize("road", ["native", "python"])
@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[repr(b) for b in BAD_INPUTS])
def test_a_bad_argument_is_refused_by_fresh_and_prepared_objects_on_both_roads(
        monkeypatch, road, bad):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1" if road == "native" else "0")
    grad, value_and_grad = pb.grad(poly), pb.value_and_grad(poly)
    for _ in range(2):   # the second call takes an installed native entry, if any
        assert grad(1.5) == 7.0
        assert value_and_grad(1.5)[1] == 7.0
    makers = {"fresh grad": lambda: pb.grad(poly)(bad), "grad": lambda: grad(bad),
              "value_and_grad": lambda: value_and_grad(bad),
              "vjp": lambda: pb.vjp(poly, bad), "jvp": lambda: pb.jvp(poly, (bad,), (1.0,)),
              "hvp": lambda: pb.hvp(poly, (bad,), (1.0,)),
              "jacfwd": lambda: pb.jacfwd(poly)(bad), "jacrev": lambda: pb.jacrev(poly)(bad),
              "grad(grad)": lambda: pb.grad(pb.grad(poly))(bad)}
    for name, call in makers.items():
        with pytest.raises(TypeError):
            call()
            raise AssertionError(f"{name}({bad!r}) was not refused")
    assert grad(1.5) == 7.0   # and the objects still work
    # a bool or a string as data (not differentiated) is the user's business: as Python
    assert pb.grad(poly)(1.5, True) == 2 * 1.5 * True + 1


# ----- a property is not run by the bindings check; its object is what is checked ---------

class WithProperty:
    calls = 0

    @property
    def size(self):   # a fresh tuple each time: comparing results would rebuild always
        WithProperty.calls += 1
        return (2.0,)

    act = staticmethod(act_old)


with_property = WithProperty()


def reads_a_property_holder(x):
    ones = np.ones(2)   # reads an attribute "size" (of a local): the check looks the name
    return with_property.act(x) * 2.0 + 0.0 * ones.size   # up on with_property too


def test_a_property_of_a_followed_object_is_not_run_at_each_check():
    compiled = pb.compile(reads_a_property_holder)
    grad = pb.grad(compiled)
    before = compiled.generation
    for _ in range(3):
        np.testing.assert_allclose(grad(X), 2.0 * d_act(act_old, X), rtol=1e-12)
    assert compiled.generation == before   # nothing rebuilt
    assert WithProperty.calls == 0
    WithProperty.act = staticmethod(act_new)
    try:
        np.testing.assert_allclose(grad(X), 2.0 * d_act(act_new, X), rtol=1e-12)
    finally:
        WithProperty.act = staticmethod(act_old)
