"""W3: an Elman RNN, h = tanh(W @ h + U @ x_t + b) for T steps, loss sum(h**2) of the last h.

Gradient with respect to W, U and b (the inputs xs and h0 are data).
"""

import numpy as np

from pullback import nd

NAME = "W3 RNN"
WRT = (0, 1, 2)
CASES = {
    "full": [{"steps": 200, "hidden": 32, "inputs": 8}],
    "quick": [{"steps": 200, "hidden": 32, "inputs": 8}],
    "test": [{"steps": 20, "hidden": 8, "inputs": 3}],
}


def label(size):
    return f"W3 RNN, T={size['steps']} h={size['hidden']} in={size['inputs']}"


def make_inputs(steps, hidden, inputs, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(hidden, hidden)) / np.sqrt(hidden)
    U = rng.normal(size=(hidden, inputs)) / np.sqrt(inputs)
    b = rng.normal(size=hidden) * 0.1
    xs = rng.normal(size=(steps, inputs))
    h0 = np.zeros(hidden)
    return W, U, b, xs, h0


def loss(W, U, b, xs, h):
    for t in range(xs.shape[0]):
        h = np.tanh(np.dot(W, h) + np.dot(U, xs[t]) + b)
    return np.sum(h * h)


def grad_manual(W, U, b, xs, h0):
    hs = [h0]
    for t in range(xs.shape[0]):
        hs.append(np.tanh(W @ hs[-1] + U @ xs[t] + b))
    gW, gU, gb = np.zeros_like(W), np.zeros_like(U), np.zeros_like(b)
    gh = 2 * hs[-1]
    for t in range(xs.shape[0] - 1, -1, -1):
        ga = gh * (1 - hs[t + 1] ** 2)
        gW += np.outer(ga, hs[t])
        gU += np.outer(ga, xs[t])
        gb += ga
        gh = W.T @ ga
    return gW, gU, gb


def loss_nd(W, U, b, xs, h):
    for t in range(xs.shape[0]):
        h = nd.tanh(nd.dot(W, h) + nd.dot(U, xs[t]) + b)
    return nd.sum(h * h)


def jax_loss():
    import jax.numpy as jnp

    def loss_jax(W, U, b, xs, h):
        for t in range(xs.shape[0]):
            h = jnp.tanh(jnp.dot(W, h) + jnp.dot(U, xs[t]) + b)
        return jnp.sum(h * h)

    return loss_jax


def jax_jit_loss():
    """The same recurrence as a ``lax.scan`` (jitting a Python loop unrolls it T times)."""
    import jax.numpy as jnp
    from jax import lax

    def loss_scan(W, U, b, xs, h):
        def step(h, x):
            return jnp.tanh(jnp.dot(W, h) + jnp.dot(U, x) + b), None

        h, _ = lax.scan(step, h, xs)
        return jnp.sum(h * h)

    return loss_scan


def torch_loss():
    import torch

    def loss_torch(W, U, b, xs, h):
        for t in range(xs.shape[0]):
            h = torch.tanh(torch.mv(W, h) + torch.mv(U, xs[t]) + b)
        return torch.sum(h * h)

    return loss_torch


def autograd_loss():
    import autograd.numpy as anp

    def loss_autograd(W, U, b, xs, h):
        for t in range(xs.shape[0]):
            h = anp.tanh(anp.dot(W, h) + anp.dot(U, xs[t]) + b)
        return anp.sum(h * h)

    return loss_autograd


def numba_impl():
    from numba import njit

    @njit(cache=False)
    def primal(W, U, b, xs, h0):
        h = h0.copy()
        for t in range(xs.shape[0]):
            h = np.tanh(W @ h + U @ xs[t] + b)
        return np.sum(h * h)

    @njit(cache=False)
    def gradient(W, U, b, xs, h0):
        steps, hidden = xs.shape[0], h0.size
        hs = np.empty((steps + 1, hidden))
        hs[0] = h0
        for t in range(steps):
            hs[t + 1] = np.tanh(W @ hs[t] + U @ xs[t] + b)
        gW, gU, gb = np.zeros_like(W), np.zeros_like(U), np.zeros_like(b)
        gh = 2 * hs[steps]
        for t in range(steps - 1, -1, -1):
            ga = gh * (1 - hs[t + 1] ** 2)
            for i in range(hidden):
                for j in range(hidden):
                    gW[i, j] += ga[i] * hs[t, j]
                for j in range(U.shape[1]):
                    gU[i, j] += ga[i] * xs[t, j]
                gb[i] += ga[i]
            gh = W.T @ ga
        return gW, gU, gb

    return primal, gradient
