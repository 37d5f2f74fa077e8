"""W2: an elementwise expression, sum(tanh(x) * exp(-x*x) + sin(x)**2)."""

import numpy as np

from pullback import nd

NAME = "W2 elementwise"
WRT = (0,)
CASES = {
    "full": [{"n": 1_000_000}],
    "quick": [{"n": 1_000_000}],
    "test": [{"n": 1000}],
}


def label(size):
    return f"W2 elementwise, n={size['n']:g}"


def make_inputs(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=n),)


def loss(x):
    return np.sum(np.tanh(x) * np.exp(-x * x) + np.sin(x) ** 2)


def grad_manual(x):
    t = np.tanh(x)
    e = np.exp(-x * x)
    return ((1 - t * t) * e - 2 * x * t * e + 2 * np.sin(x) * np.cos(x),)


def loss_nd(x):
    return nd.sum(nd.tanh(x) * nd.exp(-x * x) + nd.sin(x) ** 2)


def jax_loss():
    import jax.numpy as jnp

    def loss_jax(x):
        return jnp.sum(jnp.tanh(x) * jnp.exp(-x * x) + jnp.sin(x) ** 2)

    return loss_jax


def torch_loss():
    import torch

    def loss_torch(x):
        return torch.sum(torch.tanh(x) * torch.exp(-x * x) + torch.sin(x) ** 2)

    return loss_torch


def autograd_loss():
    import autograd.numpy as anp

    def loss_autograd(x):
        return anp.sum(anp.tanh(x) * anp.exp(-x * x) + anp.sin(x) ** 2)

    return loss_autograd


def numba_impl():
    from numba import njit

    @njit(cache=False)
    def primal(x):
        total = 0.0
        for i in range(x.size):
            v = x[i]
            s = np.sin(v)
            total += np.tanh(v) * np.exp(-v * v) + s * s
        return total

    @njit(cache=False)
    def gradient(x):
        g = np.empty_like(x)
        for i in range(x.size):
            v = x[i]
            t = np.tanh(v)
            e = np.exp(-v * v)
            g[i] = (1 - t * t) * e - 2 * v * t * e + 2 * np.sin(v) * np.cos(v)
        return (g,)

    return primal, gradient
