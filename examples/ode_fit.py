"""Fitting the parameters of an ODE through its solver, on the tape and compiled.

The Lotka-Volterra equations (prey x, predators y)

    dx/dt = alpha x - beta x y,        dy/dt = delta x y - gamma y

are solved with the classical Runge-Kutta method (RK4), written as a plain Python
``for`` loop over the time steps, for a batch of initial populations at once.  The four
rates are global parameters with ``attach_grad()``, MXNet style; Adam (written from
scratch, as in the MXNet optimisation chapters) fits them to noisy observations of
trajectories made with the true rates, differentiating the squared error through every
step of the solver.  The compiled road puts
``pb.compile`` on the loss; the solver functions it calls are transformed with it.

    python examples/ode_fit.py [--steps N] [--quick] [--plot curves.png]
"""

import time

import numpy as np
from side_by_side import (Progress, check_agreement, parse_args, report, save_plot,
                          time_per_step)

import pullback as pb
from pullback import autograd, nd

args = parse_args(__doc__.splitlines()[0], steps=150, quick_steps=25)

# ----- the model: four rates, as globals -------------------------------------------------
true_rates = {"alpha": 1.0, "beta": 0.6, "delta": 0.4, "gamma": 0.8}
start_rates = {"alpha": 0.7, "beta": 0.4, "delta": 0.6, "gamma": 1.1}
alpha, beta, delta, gamma = (nd.array([v]) for v in start_rates.values())
params = [alpha, beta, delta, gamma]
for param in params:
    param.attach_grad()
initial = [p.asnumpy().copy() for p in params]
num_steps, h, batch, lr = 40, 0.1, 16, 0.02


def lotka_volterra(x, y):
    return alpha * x - beta * x * y, delta * x * y - gamma * y


def rk4_step(x, y, h):
    k1x, k1y = lotka_volterra(x, y)
    k2x, k2y = lotka_volterra(x + h / 2 * k1x, y + h / 2 * k1y)
    k3x, k3y = lotka_volterra(x + h / 2 * k2x, y + h / 2 * k2y)
    k4x, k4y = lotka_volterra(x + h * k3x, y + h * k3y)
    return (x + h / 6 * (k1x + 2 * k2x + 2 * k3x + k4x),
            y + h / 6 * (k1y + 2 * k2y + 2 * k3y + k4y))


def solve(x, y, h, num_steps):
    """The trajectories of every initial condition: arrays (num_steps + 1, batch)."""
    xs, ys = [x], [y]
    for i in range(num_steps):
        x, y = rk4_step(x, y, h)
        xs.append(x)
        ys.append(y)
    return nd.stack(*xs), nd.stack(*ys)


def loss(x0, y0, observed_x, observed_y):
    xs, ys = solve(x0, y0, h, num_steps)
    return nd.mean((xs - observed_x) ** 2 + (ys - observed_y) ** 2)


# ----- synthetic observations: the true rates, plus noise ---------------------------------
rng = np.random.default_rng(args.seed)
x0 = nd.array(rng.uniform(0.5, 2.0, batch), dtype="float32")
y0 = nd.array(rng.uniform(0.5, 2.0, batch), dtype="float32")
for p, value in zip(params, true_rates.values(), strict=True):
    p[:] = value
clean_x, clean_y = solve(x0, y0, h, num_steps)
observed_x = clean_x + nd.array(rng.normal(0, 0.02, clean_x.shape), dtype="float32")
observed_y = clean_y + nd.array(rng.normal(0, 0.02, clean_y.shape), dtype="float32")
data = (x0, y0, observed_x, observed_y)


adam_states = [(nd.zeros_like(p), nd.zeros_like(p)) for p in params]
adam_step = [0]


def adam(params, states, lr, beta1=0.9, beta2=0.999, eps=1e-6):
    adam_step[0] += 1
    t = adam_step[0]
    for p, (v, s) in zip(params, states, strict=True):
        v[:] = beta1 * v + (1 - beta1) * p.grad
        s[:] = beta2 * s + (1 - beta2) * p.grad.square()
        v_bias_corr = v / (1 - beta1 ** t)
        s_bias_corr = s / (1 - beta2 ** t)
        p[:] = p - lr * v_bias_corr / (s_bias_corr.sqrt() + eps)


# ----- one fitting step, on either road ------------------------------------------------------
def step(loss):
    with autograd.record():
        l = loss(*data)
    l.backward()
    adam(params, adam_states, lr)
    return l.asscalar()


def reset():
    for p, value in zip(params, initial, strict=True):
        p[:] = value
    for v, s in adam_states:
        v[:] = 0
        s[:] = 0
    adam_step[0] = 0


def train(loss, road):
    reset()
    progress, losses = Progress(road, args.steps), []
    for i in range(1, args.steps + 1):
        losses.append(step(loss))   # the loss before this step's update
        progress.update(i, losses[-1])
    return losses, [p.asnumpy().copy() for p in params]


def first_gradients(loss):
    reset()
    with autograd.record():
        l = loss(*data)
    l.backward()
    return [p.grad.asnumpy().copy() for p in params]


roads = {"tape": loss, "compiled": pb.compile(loss)}

print(f"ODE fit: Lotka-Volterra, RK4 with {num_steps} steps of {h}, {batch} initial "
      f"conditions, {args.steps} Adam steps per road")
gradients = {"tape": first_gradients(roads["tape"])}
start = time.perf_counter()
gradients["compiled"] = first_gradients(roads["compiled"])   # compiles loss, solve, rk4_step
first_call = time.perf_counter() - start
curves, finals = {}, {}
for road, fn in roads.items():
    curves[road], finals[road] = train(fn, road)

print("compiled vs tape:")
difference = max(check_agreement("first gradients (alpha, beta, delta, gamma)",
                                 gradients["tape"], gradients["compiled"], 1e-4),
                 check_agreement("loss curve", curves["tape"], curves["compiled"], 1e-3),
                 check_agreement("fitted rates", finals["tape"], finals["compiled"], 1e-3))
fitted = ", ".join(f"{name} {value[0]:.3f}" for name, value in
                   zip(true_rates, finals["compiled"], strict=True))
print(f"  fitted: {fitted}; true: "
      + ", ".join(f"{name} {value}" for name, value in true_rates.items()))

rounds, per_round = (5, 2) if args.quick else (11, 5)
timings = time_per_step({road: (lambda fn=fn: step(fn)) for road, fn in roads.items()},
                        rounds, per_round)
if args.plot:
    save_plot(args.plot, curves, "Lotka-Volterra fit through RK4: loss")
report("ode_fit", curves, timings, first_call, difference, 1e-3)
