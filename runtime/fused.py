"""Fused elementwise kernels at run time.

The compiler emits each fused run as two plain numpy functions (the kernel and
its VJP) into the generated module, and wraps them in a ``FusedKernel``.  The
numpy functions are the reference; when the native backend is enabled and
worth it (same-shape contiguous float arrays above a size threshold), the same
kernel runs as native code instead.  ``sigmoid`` and ``where`` are the scalar
language's functions that numpy does not have under the same name.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x):
    """1 / (1 + exp(-x)) without overflow (the primitive's own formula)."""
    x = np.asarray(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype)


def where(condition, a, b):
    return np.where(np.asarray(condition) != 0, a, b)


def add(a, b):
    return a + b


class FusedKernel:
    """A fused run: ``kernel(*inputs) -> outputs`` and ``kernel.vjp(grads, outputs, *inputs)``."""

    def __init__(self, name, forward, vjp, template=None):
        self.name = name
        self.forward = forward
        self._vjp = vjp
        self.template = template   # the compiler's description, for the native backend
        self.native = None

    def __call__(self, *inputs):
        return self.forward(*inputs)

    def vjp(self, grads, outputs, *inputs):
        """Gradients of the inputs given the list of output gradients (None = zero)."""
        if grads is None or all(g is None for g in grads):
            return (None,) * len(inputs)
        grads = [np.zeros_like(outputs[k]) if g is None else g for k, g in enumerate(grads)]
        return self._vjp(grads, outputs, *inputs)

    def __repr__(self) -> str:
        return f"<fused kernel {self.name}>"
