"""Softmax regression from scratch, MXNet style, on the tape and compiled.

As in the MXNet "softmax regression from scratch" chapters: the weights are globals
with ``attach_grad()``, ``net(X)`` reads them, ``softmax`` and ``cross_entropy`` are
written out with ``exp``, ``sum(axis=1, keepdims=True)`` and ``nd.pick``, and SGD
updates the parameters in place.  The data are synthetic: four Gaussian classes in 16
dimensions (the chapters' flattened images, smaller).  The compiled road puts
``pb.compile`` on ``net`` and on the loss.

    python examples/softmax_regression.py [--steps N] [--quick] [--plot curves.png]
"""

import time

import numpy as np
from side_by_side import (Progress, check_agreement, parse_args, report, save_plot,
                          time_per_step)

import pullback as pb
from pullback import autograd, nd

args = parse_args(__doc__.splitlines()[0], steps=300, quick_steps=60)

# ----- synthetic data: four classes around random centres ------------------------------
num_inputs, num_outputs, num_examples, batch_size, lr = 16, 4, 800, 32, 0.1
rng = np.random.default_rng(args.seed)
centres = rng.normal(0, 1.0, (num_outputs, num_inputs))
classes = rng.integers(0, num_outputs, num_examples)
features = nd.array(centres[classes] + rng.normal(0, 1.0, (num_examples, num_inputs)),
                    dtype="float32")
labels = nd.array(classes)   # float32 class numbers, as MXNet's data loaders give them
order = rng.integers(0, num_examples, (args.steps, batch_size))
batches = [(features.take(nd.array(j)), labels.take(nd.array(j))) for j in order]

# ----- the model, as the chapter writes it ---------------------------------------------
nd.random.seed(args.seed)
W = nd.random.normal(scale=0.01, shape=(num_inputs, num_outputs))
b = nd.zeros(num_outputs)
W.attach_grad()
b.attach_grad()
params = [W, b]
initial = [p.asnumpy().copy() for p in params]


def softmax(X):
    X_exp = X.exp()
    partition = X_exp.sum(axis=1, keepdims=True)
    return X_exp / partition


def net(X):
    return softmax(nd.dot(X.reshape((-1, num_inputs)), W) + b)


def cross_entropy(y_hat, y):
    return -nd.pick(y_hat, y).log()


def accuracy(y_hat, y):
    return (y_hat.argmax(axis=1) == y.astype('float32')).mean().asscalar()


def sgd(params, lr, batch_size):
    for param in params:
        param[:] = param - lr * param.grad / batch_size


# ----- one training step, on either road ------------------------------------------------
def step(net, loss, X, y):
    with autograd.record():
        l = loss(net(X), y)
    l.backward()
    sgd(params, lr, batch_size)


def reset():
    for p, value in zip(params, initial, strict=True):
        p[:] = value


def train(net, loss, road):
    reset()
    progress, losses = Progress(road, args.steps), []
    for i, (X, y) in enumerate(batches, 1):
        step(net, loss, X, y)
        losses.append(loss(net(features), labels).mean().asscalar())   # whole training set
        progress.update(i, losses[-1])
    return losses, [p.asnumpy().copy() for p in params]


def first_gradients(net, loss):
    reset()
    X, y = batches[0]
    with autograd.record():
        l = loss(net(X), y)
    l.backward()
    return [p.grad.asnumpy().copy() for p in params]


roads = {"tape": (net, cross_entropy), "compiled": (pb.compile(net), pb.compile(cross_entropy))}

print(f"softmax regression: {num_examples} examples, {num_inputs} features, "
      f"{num_outputs} classes, batch {batch_size}, {args.steps} SGD steps per road")
gradients = {"tape": first_gradients(*roads["tape"])}
start = time.perf_counter()
gradients["compiled"] = first_gradients(*roads["compiled"])   # compiles net, softmax, the loss
first_call = time.perf_counter() - start
curves, finals = {}, {}
for road, fns in roads.items():
    curves[road], finals[road] = train(*fns, road)

print("compiled vs tape:")
difference = max(check_agreement("first gradients (W, b)", gradients["tape"],
                                 gradients["compiled"], 1e-5),
                 check_agreement("loss curve", curves["tape"], curves["compiled"], 1e-4),
                 check_agreement("trained parameters", finals["tape"], finals["compiled"],
                                 1e-4))
print(f"  training accuracy after {args.steps} steps: {accuracy(net(features), labels):.3f}")

X, y = batches[0]
rounds, per_round = (5, 20) if args.quick else (15, 50)
timings = time_per_step({road: (lambda fns=fns: step(*fns, X, y)) for road, fns in roads.items()},
                        rounds, per_round)
if args.plot:
    save_plot(args.plot, curves, "softmax regression: training loss")
report("softmax_regression", curves, timings, first_call, difference, 1e-4)
