"""Regressions for the adversary's findings on main (2026-12-07 report): each was a
silent wrong value or gradient, or a refusal of ordinary code with a wrong message.
Gradients are checked against central differences in float64 (and the tape where it
takes the function)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tape_helpers import central_gradient

import pullback as pb
from pullback import autograd as ag
from pullback import nd


# ----- np.dot with an operand of 3+ axes is numpy's dot, not MXNet's ----------------------

def dot_squared(x, y):
    return np.sum(np.dot(x, y) ** 2)


def plain_dot(x, y):
    return np.dot(x, y)


@pytest.mark.parametrize("x_shape, y_shape", [
    ((2, 3), (3, 3, 3)), ((4, 2, 3), (4, 3, 5)), ((3,), (2, 3, 4)), ((2, 3), (3, 4)),
    ((3,), (3,)), ((2, 2, 3), (3,)),
])
def test_np_dot_follows_numpy_for_every_number_of_axes(x_shape, y_shape):
    rng = np.random.default_rng(len(x_shape) * 10 + len(y_shape))
    x, y = rng.random(x_shape), rng.random(y_shape)
    np.testing.assert_allclose(pb.compile(plain_dot)(x, y), np.dot(x, y), rtol=1e-12)
    value, grads = pb.value_and_grad(dot_squared, (0, 1))(x, y)
    np.testing.assert_allclose(value, dot_squared(x, y), rtol=1e-12)
    for k, g in enumerate(grads):
        np.testing.assert_allclose(g, central_gradient(dot_squared, (x, y), k), rtol=1e-6)


def test_nd_dot_keeps_mxnets_semantics():
    x, y = np.random.default_rng(0).random((2, 3)), np.random.default_rng(1).random((3, 3, 3))
    got = nd.dot(nd.array(x, dtype="float64"), nd.array(y, dtype="float64")).asnumpy()
    np.testing.assert_allclose(got, np.tensordot(x, y, ([1], [0])), rtol=1e-12)


# ----- the gradient of a product at a zero factor is the product of the others -------------

def product(x):
    return np.prod(x)


def weighted_row_products(x):
    return np.sum(np.prod(x, axis=1) * np.array([1.0, 2.0, 3.0]))


@pytest.mark.parametrize("x", [np.array([2.0, 0.0, 3.0]), np.array([0.0, 0.0, 3.0]),
                               np.array([1.5, -2.0, 0.5])])
def test_prod_gradient_at_a_zero_is_finite(x):
    g = pb.grad(product)(x)
    np.testing.assert_allclose(g, central_gradient(product, (x,), 0), rtol=1e-6, atol=1e-9)


def test_prod_along_an_axis_with_zeros_on_both_roads():
    x = np.array([[2.0, 0.0], [0.0, 0.0], [1.5, -2.0]])
    expected = central_gradient(weighted_row_products, (x,), 0)
    np.testing.assert_allclose(pb.grad(weighted_row_products)(x), expected, atol=1e-9)
    v = nd.array(x, dtype="float64")
    v.attach_grad()
    with ag.record():
        y = (nd.prod(v, axis=1) * nd.array([1.0, 2.0, 3.0], dtype="float64")).sum()
    y.backward()
    np.testing.assert_allclose(v.grad.asnumpy(), expected, atol=1e-9)


def test_nanprod_reads_a_nan_as_one_and_a_zero_as_a_factor():
    x = np.array([[2.0, np.nan, 0.0], [0.0, 1.0, 0.0], [3.0, 2.0, 4.0]])
    v = nd.array(x, dtype="float64")
    v.attach_grad()
    with ag.record():
        y = nd.nanprod(v, axis=0).sum()
    y.backward()
    np.testing.assert_array_equal(v.grad.asnumpy(), [[0, 0, 0], [6, 2, 0], [0, 1, 0]])


# ----- pb.vjp of numbers takes a head of the shape of the value it returned -----------------

def of_numbers(x, y):
    return math.sin(x * y) + y


def test_vjp_of_numbers_takes_a_head_of_the_returned_values_shape():
    out, pull = pb.vjp(of_numbers, 0.3, 2.0)
    assert out.shape == (1,)
    expected = pull(1.0)
    np.testing.assert_allclose(expected, (2.0 * math.cos(0.6), 0.3 * math.cos(0.6) + 1.0))
    for head in (np.ones(out.shape), nd.ones(out.shape, dtype="float64")):
        np.testing.assert_array_equal(pull(head), expected)
    with pytest.raises(pb.HeadGradientError):
        pull(np.ones(2))


# ----- x += v on a shared array keeps its run-time check when fusion is on -----------------

def shared_then_updated(x):
    a = x * 1.0
    b = a
    a += 1.0          # plain numpy: b sees the update
    return b * x


def updated_alone(x):
    a = x * 1.0
    a += 1.0
    return a * x


@pytest.mark.parametrize("fuse", ["0", "1"])
def test_a_shared_augmented_assignment_is_refused_on_every_road(fuse, monkeypatch):
    monkeypatch.setenv("PULLBACK_FUSE", fuse)
    x = np.array([1.0, 2.0])
    with pytest.raises(TypeError, match="another name also refers"):
        pb.compile(shared_then_updated)(x.copy())
    with pytest.raises(TypeError, match="another name also refers"):
        pb.grad(pb.compile(shared_then_updated))(x.copy())
    np.testing.assert_allclose(pb.grad(pb.compile(updated_alone))(x.copy()),
                               central_gradient(updated_alone, (x,), 0), rtol=1e-8)


# ----- a user name equal to a generated one is renamed, wherever it is bound ---------------

from pullback.compiler.normalize import GENERATED_NAMES  # noqa: E402

_NAME_TEMPLATE = '''
import numpy as np

{name} = 1.5


def as_parameter(x, {name}):
    return np.sin(x * {name}) * 2.0 + x


def as_local(x, y):
    {name} = np.sin(x * y)
    t = {name} * 2.0 + x
    if np.sum(t) > 1e9:
        t = t * 0.5
    return t * {name}


def as_global(x, y):
    return np.sin(x * y * {name}) * 2.0 + x


def helper({name}):
    return np.sin({name}) * {name}


def as_helper_parameter(x, y):
    return helper(x * y) * x


def beside_grad_names(x, y):
    x_grad = x * y                       # the adjoint's name for x's gradient, and more
    x_out = np.cos(x_grad)
    parts1 = x_out * y
    x = x * x_out
    return parts1 * x + x_grad
'''

_NAMES = sorted(GENERATED_NAMES | {"result", "f_forward", "as_local_adjoint", "kernel_1",
                                    "fused1", "x_g", "cond1"})


def _sum_of(fn):
    return lambda *args: np.sum(fn(*args))


@pytest.mark.parametrize("fuse", ["0", "1"])
@pytest.mark.parametrize("name", _NAMES)
def test_a_user_name_like_a_generated_one(name, fuse, tmp_path, monkeypatch):
    import importlib.util
    monkeypatch.setenv("PULLBACK_FUSE", fuse)
    path = tmp_path / f"names_{name.strip('_')}_{fuse}.py"
    path.write_text(_NAME_TEMPLATE.format(name=name))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x, y = np.array([0.5, -1.0, 0.25]), np.array([2.0, 3.0, -1.5])
    for fn in (module.as_parameter, module.as_local, module.as_global,
               module.as_helper_parameter, module.beside_grad_names):
        np.testing.assert_allclose(pb.compile(fn)(x, y), fn(x, y), rtol=1e-12,
                                   err_msg=f"{name} {fn.__name__}")
        grads = pb.grad(fn, argnums=(0, 1))(x, y)
        for k, g in enumerate(grads):
            np.testing.assert_allclose(g, central_gradient(_sum_of(fn), (x, y), k), rtol=1e-6,
                                       atol=1e-9, err_msg=f"{name} {fn.__name__} arg {k}")


# ----- x.flatten() is refused: numpy's (size,) or MXNet's (n, rest)? ------------------------

def weighted_flatten(x):
    return np.sum(x.flatten() * np.arange(1.0, 1.0 + x.size))


def reshaped_flat(x):
    return np.sum(x.reshape(-1) * np.arange(1.0, 1.0 + x.size))


def nd_flattened(x):
    return nd.flatten(x) * 2.0


def test_flatten_method_is_refused_and_its_spellings_work():
    x = np.random.default_rng(0).random((2, 3))
    for args in ((x,), (nd.array(x),)):
        with pytest.raises(pb.CompileError, match="cannot tell"):
            pb.compile(weighted_flatten)(*args)
    np.testing.assert_allclose(pb.grad(reshaped_flat)(x),
                               central_gradient(reshaped_flat, (x,), 0), rtol=1e-7)
    v = nd.array(np.ones((3, 1, 2)))
    assert pb.compile(nd_flattened)(v).shape == (3, 2)


# ----- bound methods and private (mangled) names: clear errors, not misleading ones --------

class _Model:
    def __init__(self):
        self.w = 2.0
        self.__v = 3.0

    def loss(self, x):
        return x * self.w

    def private_loss(self, x):
        return x * self.__v


def test_a_bound_method_is_refused_with_the_spelling_that_works():
    model = _Model()
    with pytest.raises(TypeError, match="bound method"):
        pb.grad(model.loss)(1.0)
    assert pb.grad(_Model.loss, argnums=1)(model, 1.0) == 2.0


def test_a_name_mangled_attribute_is_refused_not_called_an_edited_file():
    with pytest.raises(pb.CompileError, match="name mangling"):
        pb.grad(_Model.private_loss, argnums=1)(_Model(), 1.0)


# ----- pb.vjp of a dict or list result takes heads of the same structure -------------------

def returns_a_dict(a):
    y = a * a
    return {'p': y, 'q': y * 3.0}


def returns_a_list(a):
    return [a * 2.0, np.sin(a)]


def test_vjp_of_a_dict_or_list_result():
    a = np.array([1.0, 2.0])
    out, pull = pb.vjp(returns_a_dict, a)
    assert set(out) == {'p', 'q'}
    (g,) = pull({'p': np.ones(2), 'q': 10 * np.ones(2)})
    np.testing.assert_allclose(g, 2 * a * 31.0)
    (g,) = pull({'p': np.ones(2), 'q': None})
    np.testing.assert_allclose(g, 2 * a)
    with pytest.raises(pb.HeadGradientError, match="same keys"):
        pull({'p': np.ones(2)})
    out, pull = pb.vjp(returns_a_list, a)
    (g,) = pull([np.ones(2), np.ones(2)])
    np.testing.assert_allclose(g, 2.0 + np.cos(a))
