"""Linear regression from scratch, MXNet style, on the tape and compiled.

The model and the training loop are written as in the MXNet "linear regression from
scratch" chapters: parameters are globals with ``attach_grad()``, ``linreg(X)`` reads
them, the loss is a plain function and SGD updates the parameters in place.  The
compiled road puts ``pb.compile`` on those same two functions; nothing else changes.

    python examples/linear_regression.py [--steps N] [--quick] [--plot curves.png]
"""

import time

import numpy as np
from side_by_side import (Progress, check_agreement, parse_args, report, save_plot,
                          time_per_step)

import pullback as pb
from pullback import autograd, nd

args = parse_args(__doc__.splitlines()[0], steps=300, quick_steps=60)

# ----- synthetic data: y = X w + b + noise ---------------------------------------------
num_inputs, num_examples, batch_size, lr = 2, 1000, 10, 0.03
nd.random.seed(args.seed)
true_w, true_b = nd.array([2, -3.4]), 4.2
features = nd.random.normal(scale=1, shape=(num_examples, num_inputs))
labels = nd.dot(features, true_w) + true_b
labels += nd.random.normal(scale=0.01, shape=labels.shape)

# the minibatches, drawn once: both roads see the same ones in the same order
order = np.random.default_rng(args.seed).integers(0, num_examples, (args.steps, batch_size))
batches = [(features.take(nd.array(j)), labels.take(nd.array(j))) for j in order]

# ----- the model, as the chapter writes it ---------------------------------------------
w = nd.random.normal(scale=0.01, shape=(num_inputs, 1))
b = nd.zeros(shape=(1,))
w.attach_grad()
b.attach_grad()
params = [w, b]
initial = [p.asnumpy().copy() for p in params]


def linreg(X):
    return nd.dot(X, w) + b


def squared_loss(y_hat, y):
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def sgd(params, lr, batch_size):
    for param in params:
        param[:] = param - lr * param.grad / batch_size


# ----- one training step, on either road ------------------------------------------------
def step(net, loss, X, y):
    with autograd.record():
        l = loss(net(X), y)
    l.backward()
    sgd(params, lr, batch_size)


def train(net, loss, road):
    for p, value in zip(params, initial, strict=True):
        p[:] = value
    progress, losses = Progress(road, args.steps), []
    for i, (X, y) in enumerate(batches, 1):
        step(net, loss, X, y)
        losses.append(loss(net(features), labels).mean().asscalar())   # whole training set
        progress.update(i, losses[-1])
    return losses, [p.asnumpy().copy() for p in params]


def first_gradients(net, loss):
    for p, value in zip(params, initial, strict=True):
        p[:] = value
    X, y = batches[0]
    with autograd.record():
        l = loss(net(X), y)
    l.backward()
    return [p.grad.asnumpy().copy() for p in params]


compiled_linreg, compiled_loss = pb.compile(linreg), pb.compile(squared_loss)
roads = {"tape": (linreg, squared_loss), "compiled": (compiled_linreg, compiled_loss)}

print(f"linear regression: {num_examples} examples, {num_inputs} features, "
      f"batch {batch_size}, {args.steps} SGD steps per road")
gradients = {"tape": first_gradients(*roads["tape"])}
start = time.perf_counter()
gradients["compiled"] = first_gradients(*roads["compiled"])   # compiles linreg and the loss
first_call = time.perf_counter() - start
curves, finals = {}, {}
for road, fns in roads.items():
    curves[road], finals[road] = train(*fns, road)

print("compiled vs tape:")
difference = max(check_agreement("first gradients (w, b)", gradients["tape"],
                                 gradients["compiled"], 1e-5),
                 check_agreement("loss curve", curves["tape"], curves["compiled"], 1e-4),
                 check_agreement("trained parameters", finals["tape"], finals["compiled"],
                                 1e-4))
print(f"  learned w = {finals['compiled'][0].ravel()}, b = {finals['compiled'][1]} "
      f"(true: {true_w.asnumpy()}, {true_b})")

X, y = batches[0]
rounds, per_round = (5, 20) if args.quick else (15, 50)
timings = time_per_step({road: (lambda fns=fns: step(*fns, X, y)) for road, fns in roads.items()},
                        rounds, per_round)
if args.plot:
    save_plot(args.plot, curves, "linear regression: training loss")
report("linear_regression", curves, timings, first_call, difference, 1e-4)
