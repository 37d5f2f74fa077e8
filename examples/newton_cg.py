"""Newton's method with Hessian-vector products: logistic regression by Newton-CG.

Each Newton step solves ``H p = -g`` for the step ``p`` by conjugate gradients, which
needs only products ``H v`` of the Hessian with vectors, never ``H`` itself: the inner
step of Newton-CG, truncated-Newton and trust-region methods.  The loss is the
L2-regularised logistic loss, written once with ``nd`` operations.  Two roads compute
the gradient and the Hessian-vector products:

- the tape: MXNet's way, ``autograd.grad(..., create_graph=True)`` under ``record()``,
  then the backward pass of ``<g, v>`` (reverse-over-reverse);
- the compiled road: ``pb.hvp(loss, (w, X, y), (v, None, None))``, forward-over-reverse
  by source transformation (one forward and one adjoint pass, each with tangents).

    python examples/newton_cg.py [--steps N] [--quick] [--plot curves.png]
"""

import time

import numpy as np
from side_by_side import (Progress, check_agreement, parse_args, report, save_plot,
                          time_per_step)

import pullback as pb
from pullback import autograd, nd

args = parse_args(__doc__.splitlines()[0], steps=8, quick_steps=4)

n, d, lam, cg_iterations = 400, 20, 1e-2, 12


def loss(w, X, y):
    margins = y * nd.dot(X, w)
    return nd.mean(nd.log(1.0 + nd.exp(-margins))) + 0.5 * lam * nd.sum(w * w)


# ----- synthetic, not separable data -------------------------------------------------------
rng = np.random.default_rng(args.seed)
true_w = rng.normal(size=d)
features = rng.normal(size=(n, d))
labels = np.where(features @ true_w + rng.normal(scale=2.0, size=n) > 0, 1.0, -1.0)
X, y = nd.array(features, dtype="float64"), nd.array(labels, dtype="float64")


# ----- the two roads: (loss, gradient) and Hessian-vector products --------------------------
def tape_gradient(w):
    w = nd.array(w, dtype="float64")
    w.attach_grad()
    with autograd.record():
        value = loss(w, X, y)
    value.backward()
    return value.asscalar(), w.grad.asnumpy()


def tape_hvp(w, v):
    w = nd.array(w, dtype="float64")
    w.attach_grad()
    with autograd.record():
        g = autograd.grad(loss(w, X, y), [w], create_graph=True)[0]
        directional = nd.sum(g * nd.array(v, dtype="float64"))
    directional.backward()
    return w.grad.asnumpy()


compiled_loss = pb.compile(loss)
compiled_value_and_grad = pb.value_and_grad(compiled_loss)


def compiled_gradient(w):
    value, g = compiled_value_and_grad(nd.array(w, dtype="float64"), X, y)
    return float(value.asscalar()), g.asnumpy()


def compiled_hvp(w, v):
    _, product = pb.hvp(compiled_loss, (nd.array(w, dtype="float64"), X, y),
                        (nd.array(v, dtype="float64"), None, None))
    return product.asnumpy()


roads = {"tape": (tape_gradient, tape_hvp), "compiled": (compiled_gradient, compiled_hvp)}


def newton_step(w, gradient, hvp):
    """One Newton step: ``p`` from conjugate gradients on ``H p = -g``; (loss, new w)."""
    value, g = gradient(w)
    p, r = np.zeros_like(w), -g
    direction, rr = r.copy(), float(r @ r)
    for _ in range(cg_iterations):
        h_direction = hvp(w, direction)
        step = rr / float(direction @ h_direction)
        p += step * direction
        r -= step * h_direction
        rr_next = float(r @ r)
        if rr_next < 1e-20:
            break
        direction = r + (rr_next / rr) * direction
        rr = rr_next
    return value, w + p


def train(road):
    gradient, hvp = roads[road]
    w, progress, losses = np.zeros(d), Progress(road, args.steps), []
    for i in range(1, args.steps + 1):
        value, w = newton_step(w, gradient, hvp)
        losses.append(value)   # the loss before this step
        progress.update(i, value)
    return losses, w


print(f"Newton-CG: L2-regularised logistic regression, {n} rows, {d} features, up to "
      f"{cg_iterations} Hessian-vector products per step, {args.steps} steps per road")
w0, v0 = rng.normal(size=d) * 0.1, rng.normal(size=d)
products = {"tape": tape_hvp(w0, v0)}
start = time.perf_counter()
products["compiled"] = compiled_hvp(w0, v0)   # transforms the loss, then its adjoint
first_call = time.perf_counter() - start
curves, finals = {}, {}
for road in roads:
    curves[road], finals[road] = train(road)

print("compiled vs tape:")
difference = max(check_agreement("a Hessian-vector product", [products["tape"]],
                                 [products["compiled"]], 1e-9),
                 check_agreement("loss curve", curves["tape"], curves["compiled"], 1e-9),
                 check_agreement("fitted weights", [finals["tape"]], [finals["compiled"]],
                                 1e-7))
_, final_gradient = compiled_gradient(finals["compiled"])
print(f"  gradient norm after {args.steps} Newton steps: {np.linalg.norm(final_gradient):.2e}")

rounds, per_round = (3, 1) if args.quick else (7, 2)
timings = time_per_step({road: (lambda road=road: newton_step(w0, *roads[road]))
                         for road in roads}, rounds, per_round)
if args.plot:
    save_plot(args.plot, curves, "Newton-CG on logistic regression: loss")
report("newton_cg", curves, timings, first_call, difference, 1e-7)
