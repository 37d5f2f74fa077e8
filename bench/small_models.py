"""The examples' small models as their chapters write them (global parameters with
``attach_grad()``, ``net`` reading them), shared by bench/compiled_vs_tape.py: the MLP of
examples/mlp.py and the character RNN of examples/char_rnn.py, at the examples' sizes, and
the MXNet "MLP from scratch" chapter's 784-256-10 network with its SGD update."""

from pullback import nd

# ----- examples/mlp.py: 2-64-3, relu, softmax cross-entropy -------------------------------
num_inputs, num_hiddens, num_outputs = 2, 64, 3
nd.random.seed(0)
W1 = nd.random.normal(scale=0.5, shape=(num_inputs, num_hiddens))
b1 = nd.zeros(num_hiddens)
W2 = nd.random.normal(scale=0.1, shape=(num_hiddens, num_outputs))
b2 = nd.zeros(num_outputs)
MLP_PARAMS = [W1, b1, W2, b2]


def relu(X):
    return nd.maximum(X, 0)


def net(X):
    X = X.reshape((-1, num_inputs))
    H = relu(nd.dot(X, W1) + b1)
    return nd.dot(H, W2) + b2


def softmax_cross_entropy(y_hat, y):
    return -nd.pick(nd.log_softmax(y_hat), y)


# ----- examples/char_rnn.py: one-hot inputs, tanh RNN, 48 hidden, 12 steps --------------
WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "its", "bed"]
vocab_size, rnn_hiddens, num_steps, rnn_batch = len(set(" ".join(WORDS))), 48, 12, 8
W_xh = nd.random.normal(scale=0.1, shape=(vocab_size, rnn_hiddens))
W_hh = nd.random.normal(scale=0.1, shape=(rnn_hiddens, rnn_hiddens))
b_h = nd.zeros(rnn_hiddens)
W_hq = nd.random.normal(scale=0.1, shape=(rnn_hiddens, vocab_size))
b_q = nd.zeros(vocab_size)
RNN_PARAMS = [W_xh, W_hh, b_h, W_hq, b_q]

# ----- the MXNet chapter's MLP: 784-256-10, relu, softmax cross-entropy, SGD --------------
chapter_inputs, chapter_hiddens, chapter_outputs = 784, 256, 10
C_W1 = nd.random.normal(scale=0.01, shape=(chapter_inputs, chapter_hiddens))
C_b1 = nd.zeros(chapter_hiddens)
C_W2 = nd.random.normal(scale=0.01, shape=(chapter_hiddens, chapter_outputs))
C_b2 = nd.zeros(chapter_outputs)
CHAPTER_PARAMS = [C_W1, C_b1, C_W2, C_b2]


def chapter_net(X):
    X = X.reshape((-1, chapter_inputs))
    H = relu(nd.dot(X, C_W1) + C_b1)
    return nd.dot(H, C_W2) + C_b2


def sgd(params, lr, batch_size):
    for param in params:
        param[:] = param - lr * param.grad / batch_size


for _param in MLP_PARAMS + RNN_PARAMS + CHAPTER_PARAMS:
    _param.attach_grad()


def rnn(X, H):
    outputs = []
    for t in range(X.shape[1]):
        x = nd.one_hot(X[:, t], vocab_size)
        H = nd.tanh(nd.dot(x, W_xh) + nd.dot(H, W_hh) + b_h)
        Y = nd.dot(H, W_hq) + b_q
        outputs.append(Y)
    return nd.concat(*outputs, dim=0), H


def rnn_loss(outputs, Y):
    y = Y.T.reshape((-1,))
    return -nd.pick(nd.log_softmax(outputs), y).mean()
