"""One LeNet gradient step (forward and backward of the loss): pullback's tape, pullback
compiled, and JAX's jit(grad) when it is installed, in the same process, interleaved.

Run from the repository root:  python bench/cnn_step.py [--batch N] [--rounds R]

The network is examples/lenet.py's (conv 6@5x5, max pool, conv 16@5x5, max pool, dense
64, dense 10; float32, 28x28 one-channel images, softmax cross-entropy).  Every thread pool
is set to one thread before numpy loads (a shared machine makes BLAS threads spin).  The
three tools' gradients are checked against each other before anything is timed; the
table gives the median seconds per step over rounds, and each tool's time relative to
pullback's tape.
"""

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import pullback as pb  # noqa: E402
from pullback import autograd as ag  # noqa: E402
from pullback import nd  # noqa: E402

SHAPES = [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (256, 64), (64,), (64, 10), (10,)]


def net(X, W1, b1, W2, b2, W3, b3, W4, b4):
    h = nd.relu(nd.Convolution(data=X, weight=W1, bias=b1, kernel=(5, 5), num_filter=6))
    h = nd.Pooling(data=h, pool_type="max", kernel=(2, 2), stride=(2, 2))
    h = nd.relu(nd.Convolution(data=h, weight=W2, bias=b2, kernel=(5, 5), num_filter=16))
    h = nd.Pooling(data=h, pool_type="max", kernel=(2, 2), stride=(2, 2))
    h = nd.relu(nd.dot(nd.flatten(h), W3) + b3)
    return nd.dot(h, W4) + b4


def loss(X, y, W1, b1, W2, b2, W3, b3, W4, b4):
    logits = net(X, W1, b1, W2, b2, W3, b3, W4, b4)
    return nd.sum(-nd.pick(nd.log_softmax(logits), y))


def tape_step(X, y, params):
    for p in params:
        p.attach_grad()
    with ag.record():
        value = loss(X, y, *params)   # the plain function, on the tape
    value.backward()
    return [p.grad for p in params]


def compiled_step_function():
    gradient = pb.grad(loss, argnums=tuple(range(2, 2 + len(SHAPES))))

    def step(X, y, params):
        return list(gradient(X, y, *params))
    return step


def jax_step_function():
    import jax
    import jax.numpy as jnp

    def conv(x, w, b):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return y + b[None, :, None, None]

    def pool(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2),
                                     "VALID")

    def jax_loss(params, X, y):
        W1, b1, W2, b2, W3, b3, W4, b4 = params
        h = pool(jax.nn.relu(conv(X, W1, b1)))
        h = pool(jax.nn.relu(conv(h, W2, b2)))
        h = jax.nn.relu(h.reshape(h.shape[0], -1) @ W3 + b3)
        logits = h @ W4 + b4
        picked = jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1)
        return -jnp.sum(picked)

    gradient = jax.jit(jax.grad(jax_loss))

    def step(X, y, params):
        return [np.asarray(g) for g in jax.block_until_ready(gradient(params, X, y))]
    return step, lambda arrays: [jnp.asarray(a) for a in arrays]


def median_seconds(tools, rounds, number):
    samples = {name: [] for name in tools}
    for _ in range(rounds):
        for name, run in tools.items():
            start = time.perf_counter()
            for _ in range(number):
                run()
            samples[name].append((time.perf_counter() - start) / number)
    return {name: statistics.median(times) for name, times in samples.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.normal(size=(args.batch, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, args.batch)
    arrays = [(rng.normal(size=s) * 0.1).astype(np.float32) for s in SHAPES]

    X, y, params = nd.array(images), nd.array(labels), [nd.array(a) for a in arrays]
    compiled = compiled_step_function()
    tools = {"pullback tape": lambda: tape_step(X, y, params),
             "pullback compiled": lambda: compiled(X, y, params)}
    results = {"pullback tape": [g.asnumpy() for g in tape_step(X, y, params)],
               "pullback compiled": [g.asnumpy() for g in compiled(X, y, params)]}
    if importlib.util.find_spec("jax") is not None:
        jax_step, to_jax = jax_step_function()
        jax_params, jax_images = to_jax(arrays), to_jax([images])[0]
        jax_labels = to_jax([labels])[0]
        tools["jax jit(grad)"] = lambda: jax_step(jax_images, jax_labels, jax_params)
        results["jax jit(grad)"] = tools["jax jit(grad)"]()
    reference = results["pullback tape"]
    for name, grads in results.items():
        worst = max(float(np.max(np.abs(g - r)) / (np.max(np.abs(r)) + 1e-30))
                    for g, r in zip(grads, reference, strict=True))
        if worst > 1e-4:
            raise SystemExit(f"{name}'s gradient differs from the tape's by {worst:.2e}")
    times = median_seconds(tools, args.rounds, args.number)
    base = times["pullback tape"]
    print(f"LeNet gradient step, batch {args.batch}, float32, one thread; gradients agree "
          f"within 1e-4; median of {args.rounds} rounds of {args.number} steps")
    print(f"  {'tool':<20}{'ms / step':>10}{'vs tape':>9}")
    for name, seconds in times.items():
        print(f"  {name:<20}{seconds * 1e3:>10.2f}{base / seconds:>8.2f}x")


if __name__ == "__main__":
    main()
