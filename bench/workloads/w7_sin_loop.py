"""W7: a scalar loop, s = 0; for i in range(n): s = s + sin(x * i) * y; gradient w.r.t. x, y."""

import numpy as np

from pullback import nd

NAME = "W7 scalar sin loop"
WRT = (0, 1)
CASES = {
    "full": [{"n": 10_000}],
    "quick": [{"n": 3000}],
    "test": [{"n": 200}],
}


def label(size):
    return f"W7 scalar sin loop, n={size['n']}"


def make_inputs(n, seed=0):
    return 0.5, 1.3, n


def loss(x, y, n):
    s = 0.0
    for i in range(n):
        s = s + np.sin(x * i) * y
    return s


def primal_manual(x, y, n):
    return float(np.sum(np.sin(x * np.arange(n, dtype=np.float64))) * y)


def grad_manual(x, y, n):
    i = np.arange(n, dtype=np.float64)
    return float(np.sum(np.cos(x * i) * i) * y), float(np.sum(np.sin(x * i)))


def loss_nd(x, y, n):
    s = 0.0
    for i in range(n):
        s = s + nd.sin(x * i) * y
    return s


def jax_loss():
    import jax.numpy as jnp

    def loss_jax(x, y, n):
        s = 0.0
        for i in range(n):
            s = s + jnp.sin(x * i) * y
        return s

    return loss_jax


def jax_jit_loss():
    """The loop as ``lax.fori_loop`` (jitting the Python loop unrolls it n times)."""
    import jax.numpy as jnp
    from jax import lax

    def loss_fori(x, y, n):
        return lax.fori_loop(0, n, lambda i, s: s + jnp.sin(x * i) * y, 0.0 * x)

    return loss_fori


def torch_loss():
    import torch

    def loss_torch(x, y, n):
        s = 0.0
        for i in range(n):
            s = s + torch.sin(x * i) * y
        return s

    return loss_torch


def autograd_loss():
    import autograd.numpy as anp

    def loss_autograd(x, y, n):
        s = 0.0
        for i in range(n):
            s = s + anp.sin(x * i) * y
        return s

    return loss_autograd


def numba_impl():
    from numba import njit

    @njit(cache=False)
    def primal(x, y, n):
        s = 0.0
        for i in range(n):
            s += np.sin(x * i) * y
        return s

    @njit(cache=False)
    def gradient(x, y, n):
        gx = 0.0
        gy = 0.0
        for i in range(n):
            gx += np.cos(x * i) * i * y
            gy += np.sin(x * i)
        return gx, gy

    return primal, gradient
