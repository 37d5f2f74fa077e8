"""A character-level RNN from scratch, MXNet style, on the tape and compiled.

As in the MXNet "recurrent neural networks from scratch" chapters: global parameters
with ``attach_grad()``, one-hot inputs, a Python ``for`` loop over the time steps that
updates the hidden state with ``tanh``, the outputs joined with ``nd.concat``, gradient
clipping and SGD from scratch.  Minibatches are consecutive pieces of the text, and the
state is carried from one batch to the next with ``detach()`` (truncated
backpropagation through time).  The text is synthetic: words of a tiny vocabulary drawn
at random, so the model can learn the spelling of words but not which word comes next.
The compiled road puts ``pb.compile`` on ``rnn`` and on the loss.

    python examples/char_rnn.py [--steps N] [--quick] [--plot curves.png]
"""

import time

import numpy as np
from side_by_side import (Progress, check_agreement, parse_args, report, save_plot,
                          time_per_step)

import pullback as pb
from pullback import autograd, nd

args = parse_args(__doc__.splitlines()[0], steps=200, quick_steps=40)

# ----- synthetic text --------------------------------------------------------------------
rng = np.random.default_rng(args.seed)
words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "its", "bed"]
text = " ".join(rng.choice(words, 4000))
idx_to_char = sorted(set(text))
char_to_idx = {c: i for i, c in enumerate(idx_to_char)}
corpus = np.array([char_to_idx[c] for c in text])
vocab_size, num_hiddens, num_steps, batch_size = len(idx_to_char), 48, 12, 8
lr, clipping_theta = 2.0, 1.0


def consecutive_batches(corpus, batch_size, num_steps, count):
    """``count`` (X, Y) pairs: ``batch_size`` parallel streams through the text, each
    batch continuing where the previous one stopped (Y is X shifted by one)."""
    length = (len(corpus) - 1) // batch_size
    streams = corpus[:length * batch_size + 1]
    starts = np.arange(batch_size) * length
    pairs, offset = [], 0
    for _ in range(count):
        if offset + num_steps >= length:
            offset = 0
        cols = starts[:, None] + offset + np.arange(num_steps)
        pairs.append((nd.array(streams[cols]), nd.array(streams[cols + 1])))
        offset += num_steps
    return pairs


batches = consecutive_batches(corpus, batch_size, num_steps, args.steps)
eval_X, eval_Y = consecutive_batches(corpus[len(corpus) // 2:], 32, num_steps, 1)[0]

# ----- the model, as the chapter writes it -----------------------------------------------
nd.random.seed(args.seed)
W_xh = nd.random.normal(scale=0.1, shape=(vocab_size, num_hiddens))
W_hh = nd.random.normal(scale=0.1, shape=(num_hiddens, num_hiddens))
b_h = nd.zeros(num_hiddens)
W_hq = nd.random.normal(scale=0.1, shape=(num_hiddens, vocab_size))
b_q = nd.zeros(vocab_size)
params = [W_xh, W_hh, b_h, W_hq, b_q]
for param in params:
    param.attach_grad()
initial = [p.asnumpy().copy() for p in params]


def init_rnn_state(batch_size, num_hiddens):
    return nd.zeros(shape=(batch_size, num_hiddens))


def rnn(X, H):
    """X: (batch, time) character indices; H: the (batch, hidden) state.  Returns the
    outputs of every time step, time-major, and the last state."""
    outputs = []
    for t in range(X.shape[1]):
        x = nd.one_hot(X[:, t], vocab_size)
        H = nd.tanh(nd.dot(x, W_xh) + nd.dot(H, W_hh) + b_h)
        Y = nd.dot(H, W_hq) + b_q
        outputs.append(Y)
    return nd.concat(*outputs, dim=0), H


def loss(outputs, Y):
    """Mean softmax cross-entropy of the time-major outputs against Y (batch, time)."""
    y = Y.T.reshape((-1,))
    return -nd.pick(nd.log_softmax(outputs), y).mean()


def grad_clipping(params, theta):
    norm = nd.array([0])
    for param in params:
        norm += (param.grad ** 2).sum()
    norm = norm.sqrt().asscalar()
    if norm > theta:
        for param in params:
            param.grad[:] *= theta / norm


def sgd(params, lr, batch_size):
    for param in params:
        param[:] = param - lr * param.grad / batch_size


# ----- one training step, on either road ---------------------------------------------------
def step(rnn, loss, X, Y, state):
    state = state.detach()   # the previous batch's history is not differentiated again
    with autograd.record():
        outputs, state = rnn(X, state)
        l = loss(outputs, Y)
    l.backward()
    grad_clipping(params, clipping_theta)
    sgd(params, lr, 1)       # the loss is already a mean
    return state


def reset():
    for p, value in zip(params, initial, strict=True):
        p[:] = value


def evaluate(rnn, loss):
    outputs, _ = rnn(eval_X, init_rnn_state(eval_X.shape[0], num_hiddens))
    return loss(outputs, eval_Y).asscalar()


def train(rnn, loss, road):
    reset()
    state = init_rnn_state(batch_size, num_hiddens)
    progress, losses = Progress(road, args.steps), []
    for i, (X, Y) in enumerate(batches, 1):
        state = step(rnn, loss, X, Y, state)
        losses.append(evaluate(rnn, loss))   # a fixed held-out piece of text
        progress.update(i, losses[-1])
    return losses, [p.asnumpy().copy() for p in params]


def first_gradients(rnn, loss):
    """The gradients of the first two batches, the second one's through a carried
    state (so the comparison covers the detached history too)."""
    reset()
    grads, state = [], init_rnn_state(batch_size, num_hiddens)
    for X, Y in batches[:2]:
        state = state.detach()
        with autograd.record():
            outputs, state = rnn(X, state)
            l = loss(outputs, Y)
        l.backward()
        grads += [p.grad.asnumpy().copy() for p in params]
    return grads


def trained_gradients(rnn, loss, values):
    """The gradients of the last two batches at the parameters ``values``."""
    grads, state = [], init_rnn_state(batch_size, num_hiddens)
    for p, value in zip(params, values, strict=True):
        p[:] = value
    for X, Y in batches[-2:]:
        state = state.detach()
        with autograd.record():
            outputs, state = rnn(X, state)
            l = loss(outputs, Y)
        l.backward()
        grads += [p.grad.asnumpy().copy() for p in params]
    return grads


def predict(prefix, num_chars):
    """Greedy continuation of ``prefix`` by the trained model (the tape road's rnn)."""
    state, out = init_rnn_state(1, num_hiddens), [char_to_idx[c] for c in prefix]
    for i in range(len(prefix) + num_chars - 1):
        outputs, state = rnn(nd.array([[out[i]]]), state)
        if i >= len(prefix) - 1:
            out.append(int(outputs.argmax(axis=1).asscalar()))
    return "".join(idx_to_char[i] for i in out)


# Both roads compute the same float32 operations, but not always in the same order (a
# fused kernel, a gradient summed in another order): their gradients differ by a
# rounding or so (~1e-7).  Training an RNN with a large learning rate amplifies such
# differences step after step (run in float64 the two roads' curves agree to 1e-9 after
# 200 steps; in float32 they drift visibly apart), so the check compares gradients at the
# same points -- the first batches, and the tape's trained parameters -- and reports,
# without checking, how far the two independent training runs ended up apart.
GRADIENT_TOLERANCE = 1e-5
roads = {"tape": (rnn, loss), "compiled": (pb.compile(rnn), pb.compile(loss))}

print(f"character RNN: vocabulary {vocab_size}, {num_hiddens} hidden units, "
      f"{num_steps} time steps, batch {batch_size}, {args.steps} SGD steps per road")
gradients = {"tape": first_gradients(*roads["tape"])}
start = time.perf_counter()
gradients["compiled"] = first_gradients(*roads["compiled"])   # compiles rnn and the loss
first_call = time.perf_counter() - start
curves, finals = {}, {}
for road, fns in roads.items():
    curves[road], finals[road] = train(*fns, road)

print("compiled vs tape:")
difference = check_agreement("gradients of the first two batches", gradients["tape"],
                             gradients["compiled"], GRADIENT_TOLERANCE)
trained = {road: trained_gradients(*fns, finals["tape"]) for road, fns in roads.items()}
difference = max(difference, check_agreement("gradients at the tape's trained parameters",
                                             trained["tape"], trained["compiled"],
                                             GRADIENT_TOLERANCE))
check_agreement("held-out loss curves of the two training runs", curves["tape"],
                curves["compiled"], None)
print(f"  perplexity after {args.steps} steps: {np.exp(curves['compiled'][-1]):.2f} "
      f"(uniform guessing: {vocab_size}); 'the ' continues as {predict('the ', 20)!r}")

X, Y = batches[0]
carried = {"tape": init_rnn_state(batch_size, num_hiddens),
           "compiled": init_rnn_state(batch_size, num_hiddens)}


def timed_step(road):
    carried[road] = step(*roads[road], X, Y, carried[road])


rounds, per_round = (5, 5) if args.quick else (11, 10)
timings = time_per_step({road: (lambda road=road: timed_step(road)) for road in roads},
                        rounds, per_round)
if args.plot:
    save_plot(args.plot, curves, "character RNN: held-out loss", ylabel="cross-entropy")
report("char_rnn", curves, timings, first_call, difference, GRADIENT_TOLERANCE)
