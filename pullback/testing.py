"""``check_grads``: the one gradient checker (central differences in float64)."""

from __future__ import annotations

import numpy as np

from pullback.runtime import autograd as ag
from pullback.runtime import primitives as P
from pullback.runtime.ndarray import NDArray


def _float64_copy(a) -> NDArray:
    data = a._data if isinstance(a, NDArray) else np.asarray(a)
    return NDArray(np.array(data, dtype=np.float64).reshape(data.shape or (1,)))


def _objective(fn, weights):
    """``sum(fn(*xs) * weights)`` as an NDArray (weights fixed on first call)."""

    def objective(*xs):
        out = fn(*xs)
        out = out if isinstance(out, NDArray) else NDArray(np.asarray(out, dtype=np.float64))
        if not weights:
            weights.append(np.random.default_rng(len(out.shape) + 7).uniform(
                0.5, 1.5, out.shape))
        return P.sum(P.multiply(out, NDArray(weights[0].astype(out._data.dtype))))

    return objective


def _gradients(objective, xs, create_graph):
    with ag.record():
        value = objective(*xs)
    return ag.grad([value], xs, create_graph=create_graph, retain_graph=create_graph)


def _first_order(objective, xs, eps, rtol, atol, rng, label):
    grads = _gradients(objective, xs, create_graph=False)
    for trial in range(2):
        direction = [rng.standard_normal(x.shape) for x in xs]
        analytic = float(sum(np.sum(g._data * d) for g, d in zip(grads, direction, strict=True)))
        plus = [NDArray(x._data + eps * d) for x, d in zip(xs, direction, strict=True)]
        minus = [NDArray(x._data - eps * d) for x, d in zip(xs, direction, strict=True)]
        for shifted in plus + minus:   # the second-order objective differentiates them
            shifted.attach_grad()
        with ag.pause():
            numeric = (float(objective(*plus).asscalar())
                       - float(objective(*minus).asscalar())) / (2 * eps)
        if not abs(analytic - numeric) <= atol + rtol * max(abs(analytic), abs(numeric)):
            raise AssertionError(
                f"{label} gradient mismatch along random direction {trial}: analytic "
                f"{analytic!r} vs numeric {numeric!r} (difference {analytic - numeric:.3e}, "
                f"eps {eps})"
            )


def check_grads(fn, args, order: int = 1, eps: float = 1e-6, rtol: float = 1e-5,
                atol: float = 1e-7, seed: int = 0) -> None:
    """Check ``fn``'s gradients against central differences in float64.

    Args:
        fn: takes NDArrays (one per entry of ``args``) and returns an NDArray;
            non-scalar outputs are reduced with fixed random weights.
        args: the point to check at (NDArrays, numpy arrays or numbers);
            copied to float64.
        order: 1 checks first derivatives; 2 also checks the derivative of the
            gradient (via ``create_graph=True``) along a random direction.
    Raises:
        AssertionError: naming the order, the analytic and the numeric value.
    """
    if order not in (1, 2):
        raise ValueError("check_grads supports order 1 and 2")
    rng = np.random.default_rng(seed)
    xs = [_float64_copy(a) for a in args]
    for x in xs:
        x.attach_grad()
    objective = _objective(fn, [])
    _first_order(objective, xs, eps, rtol, atol, rng, "first-order")
    if order >= 2:
        cotangents = [NDArray(rng.standard_normal(x.shape)) for x in xs]

        def gradient_dot(*ys):
            grads = _gradients(objective, ys, create_graph=True)
            total = None
            for g, u in zip(grads, cotangents, strict=True):
                term = P.sum(P.multiply(g, u))
                total = term if total is None else P.add(total, term)
            return total

        _first_order(gradient_dot, xs, eps * 10, rtol * 10, atol * 10, rng, "second-order")


def saved_by_forward(fn, *args, argnums=0):
    """The stack the compiled forward of ``fn`` leaves for its adjoint (``pb.grad``'s
    variant for ``argnums``): what the adjoint will pop, in the order pushed.  Tests and
    bench/ measure what is saved with it (``len(stack)``, ``stack.nbytes()``)."""
    from pullback.compiler import api
    from pullback.runtime.stack import Stack

    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    variant = api._differentiated(fn, nums, nums, list(args))
    stack = Stack()
    variant.forward(stack, *api._internal_arguments(fn, list(args), nums))
    return stack
