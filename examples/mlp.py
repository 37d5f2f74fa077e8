"""A multilayer perceptron from scratch, MXNet style, on the tape and compiled.

As in the MXNet "multilayer perceptrons from scratch" chapters: four global parameter
arrays with ``attach_grad()``, ``relu`` written with ``nd.maximum``, ``net(X)`` reading
the globals, a softmax cross-entropy loss and SGD from scratch.  The data are three
interleaved spirals in the plane, which no linear model separates.  The compiled road
puts ``pb.compile`` on ``net`` and on the loss (``net`` calls ``relu``: compiled code
composes).

    python examples/mlp.py [--steps N] [--quick] [--plot curves.png]
"""

import numpy as np
from side_by_side import SupervisedTraining, check_agreement, parse_args, report, save_plot

import pullback as pb
from pullback import nd

args = parse_args(__doc__.splitlines()[0], steps=400, quick_steps=80)

# ----- synthetic data: three spirals ---------------------------------------------------
num_inputs, num_hiddens, num_outputs = 2, 64, 3
num_examples, batch_size, lr = 600, 32, 1.0
rng = np.random.default_rng(args.seed)
classes = rng.integers(0, num_outputs, num_examples)
radius = rng.uniform(0.1, 1.0, num_examples)
angle = 4.0 * radius + classes * 2 * np.pi / num_outputs + rng.normal(0, 0.15, num_examples)
features = nd.array(np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1),
                    dtype="float32")
labels = nd.array(classes)   # float32 class numbers, as MXNet's data loaders give them
order = rng.integers(0, num_examples, (args.steps, batch_size))
batches = [(features.take(nd.array(j)), labels.take(nd.array(j))) for j in order]

# ----- the model, as the chapter writes it ---------------------------------------------
nd.random.seed(args.seed)
W1 = nd.random.normal(scale=0.5, shape=(num_inputs, num_hiddens))
b1 = nd.zeros(num_hiddens)
W2 = nd.random.normal(scale=0.1, shape=(num_hiddens, num_outputs))
b2 = nd.zeros(num_outputs)
params = [W1, b1, W2, b2]
for param in params:
    param.attach_grad()


def relu(X):
    return nd.maximum(X, 0)


def net(X):
    X = X.reshape((-1, num_inputs))
    H = relu(nd.dot(X, W1) + b1)
    return nd.dot(H, W2) + b2


def softmax_cross_entropy(y_hat, y):
    return -nd.pick(nd.log_softmax(y_hat), y)


def accuracy(y_hat, y):
    return (y_hat.argmax(axis=1) == y.astype('float32')).mean().asscalar()


def sgd(params, lr, batch_size):
    for param in params:
        param[:] = param - lr * param.grad / batch_size


training = SupervisedTraining(params, batches, features, labels,
                              lambda: sgd(params, lr, batch_size), args.steps)

roads = {"tape": (net, softmax_cross_entropy),
         "compiled": (pb.compile(net), pb.compile(softmax_cross_entropy))}

print(f"MLP {num_inputs}-{num_hiddens}-{num_outputs} on {num_examples} spiral points, "
      f"batch {batch_size}, {args.steps} SGD steps per road")
gradients, first_call, curves, finals = training.run(roads)   # compiles net, relu, the loss

print("compiled vs tape:")
difference = max(check_agreement("first gradients (W1, b1, W2, b2)", gradients["tape"],
                                 gradients["compiled"], 1e-5),
                 check_agreement("loss curve", curves["tape"], curves["compiled"], 1e-3),
                 check_agreement("trained parameters", finals["tape"], finals["compiled"],
                                 1e-3))
print(f"  training accuracy after {args.steps} steps: {accuracy(net(features), labels):.3f}")

timings = training.time_steps(roads, args.quick)
if args.plot:
    save_plot(args.plot, curves, "MLP on three spirals: training loss")
report("mlp", curves, timings, first_call, difference, 1e-3)
