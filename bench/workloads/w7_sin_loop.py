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


def warp_impl(wp, args):
    """One CPU thread runs the loop; Warp's generated adjoint of the kernel gives the
    gradient (the sum is linear in ``s``, so no loop state needs storing)."""
    x0, y0, n = args

    @wp.kernel
    def sin_loop(x: wp.array(dtype=wp.float64), y: wp.array(dtype=wp.float64), n: int,
                 out: wp.array(dtype=wp.float64)):
        s = wp.float64(0.0)
        for i in range(n):
            s = s + wp.sin(x[0] * wp.float64(i)) * y[0]
        out[0] = s

    x = wp.array([x0], dtype=wp.float64, requires_grad=True, device="cpu")
    y = wp.array([y0], dtype=wp.float64, requires_grad=True, device="cpu")
    out = wp.zeros(1, dtype=wp.float64, requires_grad=True, device="cpu")
    seed = wp.array([1.0], dtype=wp.float64, device="cpu")

    def primal():
        wp.launch(sin_loop, dim=1, inputs=[x, y, n], outputs=[out], device="cpu")
        return out.numpy()[0]

    def gradient():
        tape = wp.Tape()
        with tape:
            wp.launch(sin_loop, dim=1, inputs=[x, y, n], outputs=[out], device="cpu")
        tape.backward(grads={out: seed})
        g = (x.grad.numpy()[0], y.grad.numpy()[0])
        tape.zero()
        return g

    return primal, gradient


def drjit_impl(dr, args):
    from drjit.llvm.ad import Float64, UInt32

    x0, y0, n = args

    def run(grad):
        x, y = Float64(x0), Float64(y0)
        if grad:
            dr.enable_grad(x, y)
        _, s = dr.while_loop((UInt32(0), Float64(0.0)), lambda i, s: i < n,
                             lambda i, s: (i + 1, s + dr.sin(x * Float64(i)) * y),
                             max_iterations=n)
        if not grad:
            return s[0]
        dr.backward(s)
        return x.grad[0], y.grad[0]

    return (lambda: run(False)), (lambda: run(True))
