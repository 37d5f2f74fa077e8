"""Compiled gradient vs the eager tape: the chapter's f (3 elements) and compile time,
then one training step (forward under ``record()`` + ``backward()``, MXNet style) of the
examples' small models -- the MLP at batch 8/16/32/64 and the character RNN -- and of
the MXNet chapter's 784-256-10 MLP (float32) at batch 8/16/64, without and with its SGD
update, with ``@pb.compile`` on the chapters' own ``net``/loss functions
(bench/small_models.py).  For the MLP steps, ``numpy`` is the same forward and backward
written by hand in numpy (the BLAS products and the writes into the gradient buffers, no
autograd): what a step costs with no overhead at all.

Run from the repository root:  python bench/compiled_vs_tape.py [--repeat N] [--cpu]

Both roads run in the same process, interleaved, so the ratio is meaningful on a
noisy machine; absolute times are reported only for reference.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pullback as pb  # noqa: E402
from pullback import autograd as ag  # noqa: E402
from pullback import nd  # noqa: E402
from pullback.compiler.api import CompiledFunction  # noqa: E402

import chapter_f  # noqa: E402
import numpy as np  # noqa: E402
import small_models as models  # noqa: E402


def tape_gradient(a):
    x = a.copy()
    x.attach_grad()
    with ag.record():
        c = chapter_f.f(x)
    c.backward()
    return x.grad


def time_per_call(fn, arg, number):
    start = time.perf_counter()
    for _ in range(number):
        fn(arg)
    return (time.perf_counter() - start) / number


def training_step(net, loss, X, y):
    with ag.record():
        l = loss(net(X), y)
    l.backward()


def rnn_step(rnn, loss, X, Y, H):
    with ag.record():
        outputs, _ = rnn(X, H)
        l = loss(outputs, Y)
    l.backward()


def chapter_step(net, loss, X, y, update):
    training_step(net, loss, X, y)
    if update:
        models.sgd(models.CHAPTER_PARAMS, 0.1, X.shape[0])


def numpy_chapter_step(X, y, update, params=models.CHAPTER_PARAMS):
    """The step by hand in numpy (784-256-10, or ``params``' MLP): the same products, the
    gradients written into the parameters' gradient buffers (the head gradient is ones, as
    backward())."""
    W1, b1, W2, b2 = (p._data for p in params)
    x, rows, labels = X._data, np.arange(X.shape[0]), y._data.astype(np.int64)
    a = np.dot(x, W1) + b1
    h = np.maximum(a, 0)
    o = np.dot(h, W2) + b2
    z = o - o.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    loss = np.log(s)[:, 0] - z[rows, labels]   # noqa: F841 (computed, as the roads do)
    go = e / s
    go[rows, labels] -= 1
    grads = [p.grad._data for p in params]
    grads[2][...] = np.dot(h.T, go)
    grads[3][...] = go.sum(axis=0)
    ga = np.dot(go, W2.T) * (a >= 0)
    grads[0][...] = np.dot(x.T, ga)
    grads[1][...] = ga.sum(axis=0)
    if update:
        for p, g in zip((W1, b1, W2, b2), grads, strict=True):
            p[...] = p - 0.1 * g / X.shape[0]


def step_cases():
    """``(label, {road: step()})`` for each model and size: the same data on both roads."""
    rng = np.random.default_rng(0)
    compiled_mlp = (pb.compile(models.net), pb.compile(models.softmax_cross_entropy))
    for batch in (8, 16, 32, 64):
        X = nd.array(rng.normal(size=(batch, models.num_inputs)), dtype="float32")
        y = nd.array(rng.integers(0, models.num_outputs, batch))
        yield f"MLP 2-64-3 step, batch {batch}", {
            "tape": lambda X=X, y=y: training_step(models.net, models.softmax_cross_entropy,
                                                   X, y),
            "compiled": lambda X=X, y=y: training_step(*compiled_mlp, X, y),
            "numpy": lambda X=X, y=y: numpy_chapter_step(X, y, False, models.MLP_PARAMS)}
    shape = (models.rnn_batch, models.num_steps)
    X = nd.array(rng.integers(0, models.vocab_size, shape))
    Y = nd.array(rng.integers(0, models.vocab_size, shape))
    H = nd.zeros((models.rnn_batch, models.rnn_hiddens))
    compiled_rnn = (pb.compile(models.rnn), pb.compile(models.rnn_loss))
    yield (f"char RNN step (T={models.num_steps}, batch {models.rnn_batch}, "
           f"{models.rnn_hiddens} hidden)"), {
        "tape": lambda: rnn_step(models.rnn, models.rnn_loss, X, Y, H),
        "compiled": lambda: rnn_step(*compiled_rnn, X, Y, H)}
    compiled_chapter = (pb.compile(models.chapter_net),
                        pb.compile(models.softmax_cross_entropy))
    for update in (False, True):
        for batch in (8, 16, 64):
            X = nd.array(rng.normal(size=(batch, models.chapter_inputs)), dtype="float32")
            y = nd.array(rng.integers(0, models.chapter_outputs, batch))
            name = "+ SGD" if update else "step"
            yield f"MLP 784-256-10 {name}, batch {batch}", {
                "tape": lambda X=X, y=y, u=update: chapter_step(
                    models.chapter_net, models.softmax_cross_entropy, X, y, u),
                "compiled": lambda X=X, y=y, u=update: chapter_step(
                    *compiled_chapter, X, y, u),
                "numpy": lambda X=X, y=y, u=update: numpy_chapter_step(X, y, u)}


def check_same_gradients(roads, params):
    """Every road's step must give the tape's parameter gradients (float32: 1e-4), from
    the same parameters (an SGD update with the learning rate set to 0 leaves them)."""
    grads = {}
    saved = [p._data.copy() for p in params]
    for road, step in roads.items():
        step()
        grads[road] = [p.grad.asnumpy().copy() for p in params]
        for p, value in zip(params, saved, strict=True):
            p._data[...] = value
    for road in roads:
        for t, c in zip(grads["tape"], grads[road], strict=True):
            assert np.allclose(t, c, rtol=1e-4, atol=1e-6), f"{road} and tape gradients differ"


def time_steps(roads, repeat, number, clock=time.perf_counter):
    """Median seconds per step of each road, the roads taking turns round by round."""
    samples = {road: [] for road in roads}
    for _ in range(repeat):
        for road, step in roads.items():
            start = clock()
            for _ in range(number):
                step()
            samples[road].append((clock() - start) / number)
    return {road: statistics.median(times) for road, times in samples.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--number", type=int, default=500)
    parser.add_argument("--cpu", action="store_true",
                        help="time the process's CPU seconds (a machine shared with other "
                             "jobs), not wall-clock seconds")
    args = parser.parse_args()
    clock = time.process_time if args.cpu else time.perf_counter

    nd.random.seed(0)
    a = nd.random_normal(shape=3)

    compile_times = []
    os.environ["PULLBACK_CACHE"] = "0"   # time the transformation, not an artifact's load
    for _ in range(args.repeat):
        fresh = CompiledFunction(chapter_f.f)     # no cached variant
        start = time.perf_counter()
        pb.grad(fresh)(a)
        compile_times.append(time.perf_counter() - start)
    del os.environ["PULLBACK_CACHE"]

    compiled = pb.grad(chapter_f.f)
    assert abs(compiled(a) - tape_gradient(a)).max().asscalar() < 1e-4
    compiled_times, tape_times = [], []
    for _ in range(args.repeat):
        compiled_times.append(time_per_call(compiled, a, args.number))
        tape_times.append(time_per_call(tape_gradient, a, args.number))
    c, t = statistics.median(compiled_times), statistics.median(tape_times)
    c_min, t_min = min(compiled_times), min(tape_times)
    print("chapter f, 3 elements, float32, gradient (forward + backward):")
    print(f"{'':26}{'median':>10}{'min':>10}")
    print(f"  compiled (pb.grad)      {c * 1e6:8.1f}us {c_min * 1e6:8.1f}us")
    print(f"  eager tape (record)     {t * 1e6:8.1f}us {t_min * 1e6:8.1f}us")
    print(f"  tape / compiled         {t / c:9.2f}x {t_min / c_min:9.2f}x")
    print(f"  first call incl. compile  {statistics.median(compile_times) * 1e3:8.2f} ms")

    print()
    print("training steps (record() forward + backward), median per step:")
    print(f"  {'':44}{'tape':>10}{'compiled':>10}{'tape/compiled':>15}{'numpy':>10}")
    for label, roads in step_cases():
        params = (models.RNN_PARAMS if "RNN" in label else
                  models.CHAPTER_PARAMS if "784" in label else models.MLP_PARAMS)
        check_same_gradients(roads, params)
        number = max(5, args.number // (50 if "RNN" in label or "784" in label else 5))
        times = time_steps(roads, args.repeat, number, clock)
        by_hand = f"{times['numpy'] * 1e6:8.1f}us" if "numpy" in times else ""
        print(f"  {label:44}{times['tape'] * 1e6:8.1f}us{times['compiled'] * 1e6:8.1f}us"
              f"{times['tape'] / times['compiled']:14.2f}x{by_hand:>10}")


if __name__ == "__main__":
    main()
