"""LeNet from scratch, MXNet style, on the tape and compiled.

As in the MXNet "convolutional neural networks from scratch" chapters: global weight
arrays with ``attach_grad()``, ``nd.Convolution``/``nd.Pooling`` called with their MXNet
keywords (``kernel=W1.shape[2:]``, ``num_filter=W1.shape[0]``), two dense layers, a
softmax cross-entropy loss and SGD from scratch.  The data are synthetic 28x28 one-channel
images: each of ten classes is a random stroke pattern, shifted by up to two pixels and
blurred with noise.  The compiled road puts ``pb.compile`` on ``net`` and the loss.

    python examples/lenet.py [--steps N] [--quick] [--plot curves.png]
"""

import numpy as np
from side_by_side import SupervisedTraining, check_agreement, parse_args, report, save_plot

import pullback as pb
from pullback import nd

args = parse_args(__doc__.splitlines()[0], steps=150, quick_steps=25)

# ----- synthetic data: ten shifted stroke patterns --------------------------------------
num_classes, num_examples, batch_size, lr = 10, 200, 32, 0.1
rng = np.random.default_rng(args.seed)
templates = (rng.uniform(size=(num_classes, 24, 24)) < 0.15).astype(np.float32)
classes = rng.integers(0, num_classes, num_examples)
images = np.zeros((num_examples, 1, 28, 28), dtype=np.float32)
for i, label in enumerate(classes):
    top, left = rng.integers(0, 3, 2)
    images[i, 0, top:top + 24, left:left + 24] = templates[label]
images += rng.normal(0, 0.3, images.shape).astype(np.float32)
features, labels = nd.array(images), nd.array(classes)
order = rng.integers(0, num_examples, (args.steps, batch_size))
batches = [(features.take(nd.array(j)), labels.take(nd.array(j))) for j in order]

# ----- the model, as the chapter writes it ---------------------------------------------
nd.random.seed(args.seed)
W1 = nd.random.normal(scale=0.2, shape=(6, 1, 5, 5))
b1 = nd.zeros(6)
W2 = nd.random.normal(scale=0.1, shape=(16, 6, 5, 5))
b2 = nd.zeros(16)
W3 = nd.random.normal(scale=0.1, shape=(256, 64))
b3 = nd.zeros(64)
W4 = nd.random.normal(scale=0.2, shape=(64, num_classes))
b4 = nd.zeros(num_classes)
params = [W1, b1, W2, b2, W3, b3, W4, b4]
for param in params:
    param.attach_grad()


def net(X):
    h1_conv = nd.Convolution(data=X, weight=W1, bias=b1, kernel=W1.shape[2:],
                             num_filter=W1.shape[0])
    h1_activation = nd.relu(h1_conv)
    h1 = nd.Pooling(data=h1_activation, pool_type="max", kernel=(2, 2), stride=(2, 2))
    h2_conv = nd.Convolution(data=h1, weight=W2, bias=b2, kernel=(5, 5), num_filter=16)
    h2_activation = nd.relu(h2_conv)
    h2 = nd.Pooling(data=h2_activation, pool_type="max", kernel=(2, 2), stride=(2, 2))
    h2 = nd.flatten(h2)
    h3 = nd.relu(nd.dot(h2, W3) + b3)
    return nd.dot(h3, W4) + b4


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

print(f"LeNet (conv 6@5x5, pool, conv 16@5x5, pool, dense 64, dense {num_classes}) on "
      f"{num_examples} synthetic 28x28 images, batch {batch_size}, {args.steps} SGD steps "
      f"per road")
gradients, first_call, curves, finals = training.run(roads)

print("compiled vs tape:")
difference = max(check_agreement("first gradients (W1, b1, ..., W4, b4)", gradients["tape"],
                                 gradients["compiled"], 1e-5),
                 check_agreement("loss curve", curves["tape"], curves["compiled"], 1e-3),
                 check_agreement("trained parameters", finals["tape"], finals["compiled"],
                                 1e-3))
print(f"  training accuracy after {args.steps} steps: {accuracy(net(features), labels):.3f}")

timings = training.time_steps(roads, args.quick)
if args.plot:
    save_plot(args.plot, curves, "LeNet on synthetic images: training loss")
report("lenet", curves, timings, first_call, difference, 1e-3)
