"""W6: RK4 of the Lotka-Volterra system in a Python ``for`` loop of scalar operations.

    x' = alpha x - beta x y,   y' = delta x y - gamma y,   dt = 0.01

loss x_T + y_T after ``steps`` steps; gradient with respect to the four parameters and
the two initial values, all Python floats.  The right-hand side is written out at each
RK4 stage (no helper function), the same in every tool.
"""

import types

import numpy as np

NAME = "W6 Lotka-Volterra RK4"
WRT = (0, 1, 2, 3, 4, 5)
CASES = {
    "full": [{"steps": 1000}],
    "quick": [{"steps": 300}],
    "test": [{"steps": 50}],
}
DT = 0.01


def label(size):
    return f"W6 Lotka-Volterra RK4, {size['steps']} steps"


def make_inputs(steps, seed=0):
    # seed unused: the parameters are the classic textbook ones; steps is read by loss
    return 1.1, 0.4, 0.1, 0.4, 10.0, 10.0, steps


def loss(alpha, beta, delta, gamma, x, y, steps):
    dt = 0.01
    for _ in range(steps):
        k1x = alpha * x - beta * x * y
        k1y = delta * x * y - gamma * y
        x2 = x + 0.5 * dt * k1x
        y2 = y + 0.5 * dt * k1y
        k2x = alpha * x2 - beta * x2 * y2
        k2y = delta * x2 * y2 - gamma * y2
        x3 = x + 0.5 * dt * k2x
        y3 = y + 0.5 * dt * k2y
        k3x = alpha * x3 - beta * x3 * y3
        k3y = delta * x3 * y3 - gamma * y3
        x4 = x + dt * k3x
        y4 = y + dt * k3y
        k4x = alpha * x4 - beta * x4 * y4
        k4y = delta * x4 * y4 - gamma * y4
        x = x + dt / 6 * (k1x + 2 * k2x + 2 * k3x + k4x)
        y = y + dt / 6 * (k1y + 2 * k2y + 2 * k3y + k4y)
    return x + y


# Pure arithmetic works on pullback's NDArrays as written.
loss_nd = loss


def _rhs(p, x, y):
    alpha, beta, delta, gamma = p
    return alpha * x - beta * x * y, delta * x * y - gamma * y


def _rhs_vjp(p, x, y, vx, vy, gp):
    """Gradient of (vx, vy) . rhs(x, y) with respect to x, y; accumulates the parameters'."""
    alpha, beta, delta, gamma = p
    gp[0] += x * vx
    gp[1] -= x * y * vx
    gp[2] += x * y * vy
    gp[3] -= y * vy
    return (alpha - beta * y) * vx + delta * y * vy, -beta * x * vx + (delta * x - gamma) * vy


def _step(p, x, y, dt):
    k1x, k1y = _rhs(p, x, y)
    k2x, k2y = _rhs(p, x + 0.5 * dt * k1x, y + 0.5 * dt * k1y)
    k3x, k3y = _rhs(p, x + 0.5 * dt * k2x, y + 0.5 * dt * k2y)
    k4x, k4y = _rhs(p, x + dt * k3x, y + dt * k3y)
    return (k1x, k1y, k2x, k2y, k3x, k3y,
            x + dt / 6 * (k1x + 2 * k2x + 2 * k3x + k4x),
            y + dt / 6 * (k1y + 2 * k2y + 2 * k3y + k4y))


def _step_vjp(p, x, y, dt, gx, gy, gp):
    """Adjoint of one RK4 step: (gx, gy) of the new state -> of the old state."""
    k1x, k1y, k2x, k2y, k3x, k3y, _, _ = _step(p, x, y, dt)
    g1x, g1y = dt / 6 * gx, dt / 6 * gy
    g2x, g2y = dt / 3 * gx, dt / 3 * gy
    g3x, g3y = dt / 3 * gx, dt / 3 * gy
    q4x, q4y = _rhs_vjp(p, x + dt * k3x, y + dt * k3y, dt / 6 * gx, dt / 6 * gy, gp)
    gx, gy = gx + q4x, gy + q4y
    g3x, g3y = g3x + dt * q4x, g3y + dt * q4y
    q3x, q3y = _rhs_vjp(p, x + 0.5 * dt * k2x, y + 0.5 * dt * k2y, g3x, g3y, gp)
    gx, gy = gx + q3x, gy + q3y
    g2x, g2y = g2x + 0.5 * dt * q3x, g2y + 0.5 * dt * q3y
    q2x, q2y = _rhs_vjp(p, x + 0.5 * dt * k1x, y + 0.5 * dt * k1y, g2x, g2y, gp)
    gx, gy = gx + q2x, gy + q2y
    g1x, g1y = g1x + 0.5 * dt * q2x, g1y + 0.5 * dt * q2y
    q1x, q1y = _rhs_vjp(p, x, y, g1x, g1y, gp)
    return gx + q1x, gy + q1y


def _gradient(alpha, beta, delta, gamma, x, y, steps):
    p = (alpha, beta, delta, gamma)
    xs, ys = np.empty(steps), np.empty(steps)
    for i in range(steps):
        xs[i], ys[i] = x, y
        state = _step(p, x, y, DT)
        x, y = state[6], state[7]
    gp = np.zeros(4)
    gx, gy = 1.0, 1.0
    for i in range(steps - 1, -1, -1):
        gx, gy = _step_vjp(p, xs[i], ys[i], DT, gx, gy, gp)
    return gp[0], gp[1], gp[2], gp[3], gx, gy


def grad_manual(alpha, beta, delta, gamma, x, y, steps):
    return tuple(float(g) for g in _gradient(alpha, beta, delta, gamma, x, y, steps))


def jax_loss():
    def loss_jax(alpha, beta, delta, gamma, x, y, steps):
        for _ in range(steps):
            x, y = _jax_step(alpha, beta, delta, gamma, x, y)
        return x + y

    return loss_jax


def _jax_step(alpha, beta, delta, gamma, x, y):
    dt = DT
    k1x = alpha * x - beta * x * y
    k1y = delta * x * y - gamma * y
    x2 = x + 0.5 * dt * k1x
    y2 = y + 0.5 * dt * k1y
    k2x = alpha * x2 - beta * x2 * y2
    k2y = delta * x2 * y2 - gamma * y2
    x3 = x + 0.5 * dt * k2x
    y3 = y + 0.5 * dt * k2y
    k3x = alpha * x3 - beta * x3 * y3
    k3y = delta * x3 * y3 - gamma * y3
    x4 = x + dt * k3x
    y4 = y + dt * k3y
    k4x = alpha * x4 - beta * x4 * y4
    k4y = delta * x4 * y4 - gamma * y4
    return (x + dt / 6 * (k1x + 2 * k2x + 2 * k3x + k4x),
            y + dt / 6 * (k1y + 2 * k2y + 2 * k3y + k4y))


def jax_jit_loss():
    """The loop as ``lax.fori_loop`` (a static trip count, so reverse mode accepts it)."""
    from jax import lax

    def loss_fori(alpha, beta, delta, gamma, x, y, steps):
        def body(_, state):
            return _jax_step(alpha, beta, delta, gamma, *state)

        x, y = lax.fori_loop(0, steps, body, (x, y))
        return x + y

    return loss_fori


def torch_loss():
    return loss            # pure arithmetic on 0-d tensors


def autograd_loss():
    return loss            # pure arithmetic on autograd's boxes


def numba_impl():
    """The hand-written adjoint above, each helper compiled by njit and calling the others."""
    from numba import njit

    scope = {"np": np, "DT": DT}
    for fn in (_rhs, _rhs_vjp, _step, _step_vjp, _gradient, loss):
        scope[fn.__name__] = njit(types.FunctionType(fn.__code__, scope, fn.__name__))
    return scope["loss"], scope["_gradient"]


def warp_impl(wp, args):
    """The Warp way to a loop whose adjoint needs its states: one kernel launch per RK4
    step, the states in arrays of steps + 1 entries, the launches recorded on a Tape."""
    *p, x0, y0, steps = args

    @wp.kernel
    def rk4_step(p: wp.array(dtype=wp.float64), xs: wp.array(dtype=wp.float64),
                 ys: wp.array(dtype=wp.float64), t: int, dt: wp.float64, sixth: wp.float64):
        alpha, beta, delta, gamma = p[0], p[1], p[2], p[3]
        half, two = wp.float64(0.5), wp.float64(2.0)   # exact; 0.01 as a literal is not
        x, y = xs[t], ys[t]
        k1x = alpha * x - beta * x * y
        k1y = delta * x * y - gamma * y
        x2 = x + half * dt * k1x
        y2 = y + half * dt * k1y
        k2x = alpha * x2 - beta * x2 * y2
        k2y = delta * x2 * y2 - gamma * y2
        x3 = x + half * dt * k2x
        y3 = y + half * dt * k2y
        k3x = alpha * x3 - beta * x3 * y3
        k3y = delta * x3 * y3 - gamma * y3
        x4 = x + dt * k3x
        y4 = y + dt * k3y
        k4x = alpha * x4 - beta * x4 * y4
        k4y = delta * x4 * y4 - gamma * y4
        xs[t + 1] = x + dt * sixth * (k1x + two * k2x + two * k3x + k4x)
        ys[t + 1] = y + dt * sixth * (k1y + two * k2y + two * k3y + k4y)

    @wp.kernel
    def total(xs: wp.array(dtype=wp.float64), ys: wp.array(dtype=wp.float64), t: int,
              out: wp.array(dtype=wp.float64)):
        out[0] = xs[t] + ys[t]

    params = wp.array(p, dtype=wp.float64, requires_grad=True, device="cpu")
    start = np.zeros(steps + 1)
    xs = wp.array(start, dtype=wp.float64, requires_grad=True, device="cpu")
    ys = wp.array(start, dtype=wp.float64, requires_grad=True, device="cpu")
    out = wp.zeros(1, dtype=wp.float64, requires_grad=True, device="cpu")
    seed = wp.array([1.0], dtype=wp.float64, device="cpu")
    init = np.zeros(steps + 1)

    def forward():
        init[0] = x0
        xs.assign(init)
        init[0] = y0
        ys.assign(init)
        for t in range(steps):
            wp.launch(rk4_step, dim=1, inputs=[params, xs, ys, t, DT, 1.0 / 6.0],
                      device="cpu")
        wp.launch(total, dim=1, inputs=[xs, ys, steps], outputs=[out], device="cpu")

    def primal():
        forward()
        return out.numpy()[0]

    def gradient():
        tape = wp.Tape()
        with tape:
            forward()
        tape.backward(grads={out: seed})
        gp, gx, gy = params.grad.numpy(), xs.grad.numpy(), ys.grad.numpy()
        g = (*(float(v) for v in gp), float(gx[0]), float(gy[0]))
        tape.zero()
        return g

    return primal, gradient


def drjit_impl(dr, args):
    from drjit.llvm.ad import Float64, UInt32

    *p0, x0, y0, steps = args

    def run(grad):
        p = [Float64(v) for v in p0]
        x, y = Float64(x0), Float64(y0)
        if grad:
            dr.enable_grad(*p, x, y)
        alpha, beta, delta, gamma = p

        def body(i, x, y):   # the same RK4 step as JAX's, on Dr.Jit's arrays
            return (i + 1, *_jax_step(alpha, beta, delta, gamma, x, y))

        _, xT, yT = dr.while_loop((UInt32(0), x, y), lambda i, x, y: i < steps, body,
                                  max_iterations=steps)
        loss = xT + yT
        if not grad:
            return loss[0]
        dr.backward(loss)
        return tuple(v.grad[0] for v in (*p, x, y))

    return (lambda: run(False)), (lambda: run(True))
