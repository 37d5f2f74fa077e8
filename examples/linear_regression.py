"""Linear regression from scratch, MXNet style, on the tape and compiled.

The model and the training loop are written as in the MXNet "linear regression from
scratch" chapters: parameters are globals with ``attach_grad()``, ``linreg(X)`` reads
them, the loss is a plain function and SGD updates the parameters in place.  The
compiled road puts ``pb.compile`` on those same two functions; nothing else changes.

    python examples/linear_regression.py [--steps N] [--quick] [--plot curves.png]
"""

import numpy as np
from side_by_side import SupervisedTraining, check_agreement, parse_args, report, save_plot

import pullback as pb
from pullback import nd

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


def linreg(X):
    return nd.dot(X, w) + b


def squared_loss(y_hat, y):
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def sgd(params, lr, batch_size):
    for param in params:
        param[:] = param - lr * param.grad / batch_size


training = SupervisedTraining(params, batches, features, labels,
                              lambda: sgd(params, lr, batch_size), args.steps)

compiled_linreg, compiled_loss = pb.compile(linreg), pb.compile(squared_loss)
roads = {"tape": (linreg, squared_loss), "compiled": (compiled_linreg, compiled_loss)}

print(f"linear regression: {num_examples} examples, {num_inputs} features, "
      f"batch {batch_size}, {args.steps} SGD steps per road")
gradients, first_call, curves, finals = training.run(roads)   # compiles linreg and the loss

print("compiled vs tape:")
difference = max(check_agreement("first gradients (w, b)", gradients["tape"],
                                 gradients["compiled"], 1e-5),
                 check_agreement("loss curve", curves["tape"], curves["compiled"], 1e-4),
                 check_agreement("trained parameters", finals["tape"], finals["compiled"],
                                 1e-4))
print(f"  learned w = {finals['compiled'][0].ravel()}, b = {finals['compiled'][1]} "
      f"(true: {true_w.asnumpy()}, {true_b})")

timings = training.time_steps(roads, args.quick)
if args.plot:
    save_plot(args.plot, curves, "linear regression: training loss")
report("linear_regression", curves, timings, first_call, difference, 1e-4)
