"""W5: a 784-256-10 tanh MLP on a batch, softmax cross-entropy, gradient w.r.t. all weights.

    h = tanh(X @ W1 + b1);  z = h @ W2 + b2
    loss = mean over the batch of logsumexp(z) - sum(Y * z)      (Y one-hot)

logsumexp subtracts the row maximum, as every careful implementation does.
"""

import numpy as np

from pullback import nd

NAME = "W5 MLP"
WRT = (0, 1, 2, 3)
CASES = {
    "full": [{"batch": 128, "inputs": 784, "hidden": 256, "classes": 10}],
    "quick": [{"batch": 128, "inputs": 784, "hidden": 256, "classes": 10}],
    "test": [{"batch": 16, "inputs": 20, "hidden": 12, "classes": 5}],
}


def label(size):
    return (f"W5 MLP {size['inputs']}-{size['hidden']}-{size['classes']}, "
            f"batch {size['batch']}")


def make_inputs(batch, inputs, hidden, classes, seed=0):
    rng = np.random.default_rng(seed)
    W1 = rng.normal(size=(inputs, hidden)) / np.sqrt(inputs)
    b1 = rng.normal(size=hidden) * 0.1
    W2 = rng.normal(size=(hidden, classes)) / np.sqrt(hidden)
    b2 = rng.normal(size=classes) * 0.1
    X = rng.normal(size=(batch, inputs))
    Y = np.eye(classes)[rng.integers(0, classes, size=batch)]
    return W1, b1, W2, b2, X, Y


def loss(W1, b1, W2, b2, X, Y):
    h = np.tanh(np.dot(X, W1) + b1)
    z = np.dot(h, W2) + b2
    m = np.max(z, axis=1, keepdims=True)
    lse = m + np.log(np.sum(np.exp(z - m), axis=1, keepdims=True))
    return np.mean(lse - np.sum(Y * z, axis=1, keepdims=True))


def grad_manual(W1, b1, W2, b2, X, Y):
    h = np.tanh(X @ W1 + b1)
    z = h @ W2 + b2
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    gz = (p - Y) / X.shape[0]
    ga = (gz @ W2.T) * (1 - h * h)
    return X.T @ ga, ga.sum(axis=0), h.T @ gz, gz.sum(axis=0)


def loss_nd(W1, b1, W2, b2, X, Y):
    h = nd.tanh(nd.dot(X, W1) + b1)
    z = nd.dot(h, W2) + b2
    m = nd.max(z, axis=1, keepdims=True)
    lse = m + nd.log(nd.sum(nd.exp(z - m), axis=1, keepdims=True))
    return nd.mean(lse - nd.sum(Y * z, axis=1, keepdims=True))


def jax_loss():
    import jax.numpy as jnp

    def loss_jax(W1, b1, W2, b2, X, Y):
        h = jnp.tanh(jnp.dot(X, W1) + b1)
        z = jnp.dot(h, W2) + b2
        m = jnp.max(z, axis=1, keepdims=True)
        lse = m + jnp.log(jnp.sum(jnp.exp(z - m), axis=1, keepdims=True))
        return jnp.mean(lse - jnp.sum(Y * z, axis=1, keepdims=True))

    return loss_jax


def torch_loss():
    import torch

    def loss_torch(W1, b1, W2, b2, X, Y):
        h = torch.tanh(X @ W1 + b1)
        z = h @ W2 + b2
        m = torch.amax(z, dim=1, keepdim=True)
        lse = m + torch.log(torch.sum(torch.exp(z - m), dim=1, keepdim=True))
        return torch.mean(lse - torch.sum(Y * z, dim=1, keepdim=True))

    return loss_torch


def autograd_loss():
    import autograd.numpy as anp

    def loss_autograd(W1, b1, W2, b2, X, Y):
        h = anp.tanh(anp.dot(X, W1) + b1)
        z = anp.dot(h, W2) + b2
        m = anp.max(z, axis=1, keepdims=True)
        lse = m + anp.log(anp.sum(anp.exp(z - m), axis=1, keepdims=True))
        return anp.mean(lse - anp.sum(Y * z, axis=1, keepdims=True))

    return loss_autograd


def numba_impl():
    from numba import njit

    @njit(cache=False)
    def forward(W1, b1, W2, b2, X):
        h = np.tanh(X @ W1 + b1)
        z = h @ W2 + b2
        return h, z

    @njit(cache=False)
    def primal(W1, b1, W2, b2, X, Y):
        _, z = forward(W1, b1, W2, b2, X)
        total = 0.0
        for i in range(z.shape[0]):
            m = z[i].max()
            lse = m + np.log(np.sum(np.exp(z[i] - m)))
            total += lse - np.sum(Y[i] * z[i])
        return total / z.shape[0]

    @njit(cache=False)
    def gradient(W1, b1, W2, b2, X, Y):
        h, z = forward(W1, b1, W2, b2, X)
        gz = np.empty_like(z)
        for i in range(z.shape[0]):
            p = np.exp(z[i] - z[i].max())
            gz[i] = (p / p.sum() - Y[i]) / z.shape[0]
        ga = (gz @ W2.T) * (1 - h * h)
        return X.T @ ga, ga.sum(axis=0), h.T @ gz, gz.sum(axis=0)

    return primal, gradient
