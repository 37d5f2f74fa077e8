"""W4: logistic regression, mean(log(1 + exp(-s * (X @ w)))), gradient with respect to w."""

import numpy as np

from pullback import nd

NAME = "W4 logistic regression"
WRT = (0,)
CASES = {
    "full": [{"rows": 10_000, "features": 100}],
    "quick": [{"rows": 10_000, "features": 100}],
    "test": [{"rows": 200, "features": 10}],
}


def label(size):
    return f"W4 logreg, X {size['rows']}x{size['features']}"


def make_inputs(rows, features, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    s = np.where(rng.normal(size=rows) > 0, 1.0, -1.0)
    w = rng.normal(size=features) * 0.1
    return w, X, s


def loss(w, X, s):
    return np.mean(np.log(1 + np.exp(-s * np.dot(X, w))))


def grad_manual(w, X, s):
    m = -s * (X @ w)
    e = np.exp(m)
    return (X.T @ (-s * e / (1 + e)) / X.shape[0],)


def loss_nd(w, X, s):
    return nd.mean(nd.log(1 + nd.exp(-s * nd.dot(X, w))))


def jax_loss():
    import jax.numpy as jnp

    def loss_jax(w, X, s):
        return jnp.mean(jnp.log(1 + jnp.exp(-s * jnp.dot(X, w))))

    return loss_jax


def torch_loss():
    import torch

    def loss_torch(w, X, s):
        return torch.mean(torch.log(1 + torch.exp(-s * torch.mv(X, w))))

    return loss_torch


def autograd_loss():
    import autograd.numpy as anp

    def loss_autograd(w, X, s):
        return anp.mean(anp.log(1 + anp.exp(-s * anp.dot(X, w))))

    return loss_autograd


def numba_impl():
    from numba import njit

    @njit(cache=False)
    def primal(w, X, s):
        z = X @ w
        total = 0.0
        for i in range(z.size):
            total += np.log(1 + np.exp(-s[i] * z[i]))
        return total / z.size

    @njit(cache=False)
    def gradient(w, X, s):
        z = X @ w
        gz = np.empty_like(z)
        for i in range(z.size):
            e = np.exp(-s[i] * z[i])
            gz[i] = -s[i] * e / (1 + e) / z.size
        return (X.T @ gz,)

    return primal, gradient
