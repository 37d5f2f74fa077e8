"""W1: the autograd chapter's ``f`` (a data-dependent ``while`` and ``if``), loss sum(c).

    b = a * 2
    while norm(b) < 1000: b = b * 2
    c = b if sum(b) > 0 else 100 * b

The gradient is the constant 2**k (times 100 on the else branch) in every element.
The MXNet version is in ``w1_chapter_mxnet.py``: it runs in its own venv (MXNet 1.9.1
needs numpy < 1.24, pullback numpy >= 1.24), so it cannot import this module.
"""

import numpy as np

from pullback import nd

NAME = "W1 chapter f"
WRT = (0,)
MXNET_MODULE = "w1_chapter_mxnet"
CASES = {
    "full": [{"n": 3}, {"n": 1_000_000}],
    "quick": [{"n": 3}, {"n": 100_000}],
    "test": [{"n": 3}, {"n": 1000}],
}


def label(size):
    return f"W1 chapter f, n={size['n']:g}"


def make_inputs(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=n) * 1e-3,)


# ----- numpy (the primal of the reference and of pullback's compiled road) ------------------

def loss(a):
    b = a * 2
    while np.linalg.norm(b) < 1000:
        b = b * 2
    if np.sum(b) > 0:
        c = b
    else:
        c = 100 * b
    return np.sum(c)


def grad_manual(a):
    scale = 2.0
    norm = np.linalg.norm(a) * 2
    while norm < 1000:
        norm = norm * 2
        scale = scale * 2
    if np.sum(a * scale) <= 0:
        scale = 100 * scale
    return (np.full_like(a, scale),)


# ----- pullback eager (tape) ----------------------------------------------------------------

def loss_nd(a):
    b = a * 2
    while nd.norm(b).asscalar() < 1000:
        b = b * 2
    if nd.sum(b).asscalar() > 0:
        c = b
    else:
        c = 100 * b
    return nd.sum(c)


# ----- peers ---------------------------------------------------------------------------------

def jax_loss():
    import jax.numpy as jnp

    def loss_jax(a):
        b = a * 2
        while jnp.linalg.norm(b) < 1000:
            b = b * 2
        if jnp.sum(b) > 0:
            c = b
        else:
            c = 100 * b
        return jnp.sum(c)

    return loss_jax


def jax_jit_loss():
    """What ``jit`` needs: structured control flow (reverse mode then refuses the while)."""
    import jax.numpy as jnp
    from jax import lax

    def loss_lax(a):
        b = lax.while_loop(lambda b: jnp.linalg.norm(b) < 1000, lambda b: b * 2, a * 2)
        c = lax.cond(jnp.sum(b) > 0, lambda b: b, lambda b: 100 * b, b)
        return jnp.sum(c)

    return loss_lax


def torch_loss():
    import torch

    def loss_torch(a):
        b = a * 2
        while torch.linalg.norm(b) < 1000:
            b = b * 2
        if torch.sum(b) > 0:
            c = b
        else:
            c = 100 * b
        return torch.sum(c)

    return loss_torch


def autograd_loss():
    import autograd.numpy as anp

    def loss_autograd(a):
        b = a * 2
        while anp.linalg.norm(b) < 1000:
            b = b * 2
        if anp.sum(b) > 0:
            c = b
        else:
            c = 100 * b
        return anp.sum(c)

    return loss_autograd


def numba_impl():
    from numba import njit

    @njit(cache=False)
    def primal(a):
        scale = 2.0
        sq = 0.0
        for i in range(a.size):
            sq += a[i] * a[i]
        norm = np.sqrt(sq) * 2
        while norm < 1000:
            norm *= 2
            scale *= 2
        total = 0.0
        for i in range(a.size):
            total += a[i] * scale
        return total if total > 0 else 100 * total

    @njit(cache=False)
    def gradient(a):
        scale = 2.0
        sq = 0.0
        total = 0.0
        for i in range(a.size):
            sq += a[i] * a[i]
            total += a[i]
        norm = np.sqrt(sq) * 2
        while norm < 1000:
            norm *= 2
            scale *= 2
        if total * scale <= 0:
            scale *= 100
        return (np.full(a.size, scale),)

    return primal, gradient
