"""Softmax regression from scratch, MXNet style, on the tape and compiled.

As in the MXNet "softmax regression from scratch" chapters: the weights are globals
with ``attach_grad()``, ``net(X)`` reads them, ``softmax`` and ``cross_entropy`` are
written out with ``exp``, ``sum(axis=1, keepdims=True)`` and ``nd.pick``, and SGD
updates the parameters in place.  The data are synthetic: four Gaussian classes in 16
dimensions (the chapters' flattened images, smaller).  The compiled road puts
``pb.compile`` on ``net`` and on the loss.

    python examples/softmax_regression.py [--steps N] [--quick] [--plot curves.png]
"""

import numpy as np
from side_by_side import SupervisedTraining, check_agreement, parse_args, report, save_plot

import pullback as pb
from pullback import nd

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


training = SupervisedTraining(params, batches, features, labels,
                              lambda: sgd(params, lr, batch_size), args.steps)

roads = {"tape": (net, cross_entropy), "compiled": (pb.compile(net), pb.compile(cross_entropy))}

print(f"softmax regression: {num_examples} examples, {num_inputs} features, "
      f"{num_outputs} classes, batch {batch_size}, {args.steps} SGD steps per road")
gradients, first_call, curves, finals = training.run(roads)   # compiles net, softmax, the loss

print("compiled vs tape:")
difference = max(check_agreement("first gradients (W, b)", gradients["tape"],
                                 gradients["compiled"], 1e-5),
                 check_agreement("loss curve", curves["tape"], curves["compiled"], 1e-4),
                 check_agreement("trained parameters", finals["tape"], finals["compiled"],
                                 1e-4))
print(f"  training accuracy after {args.steps} steps: {accuracy(net(features), labels):.3f}")

timings = training.time_steps(roads, args.quick)
if args.plot:
    save_plot(args.plot, curves, "softmax regression: training loss")
report("softmax_regression", curves, timings, first_call, difference, 1e-4)
