"""Compiled gradient vs the eager tape: the chapter's f (3 elements) and compile time,
then one training step (forward under ``record()`` + ``backward()``, MXNet style) of the
examples' small models -- the MLP at batch 8/16/32/64 and the character RNN -- with
``@pb.compile`` on the chapters' own ``net``/loss functions (bench/small_models.py).

Run from the repository root:  python bench/compiled_vs_tape.py [--repeat N]

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
            "compiled": lambda X=X, y=y: training_step(*compiled_mlp, X, y)}
    shape = (models.rnn_batch, models.num_steps)
    X = nd.array(rng.integers(0, models.vocab_size, shape))
    Y = nd.array(rng.integers(0, models.vocab_size, shape))
    H = nd.zeros((models.rnn_batch, models.rnn_hiddens))
    compiled_rnn = (pb.compile(models.rnn), pb.compile(models.rnn_loss))
    yield (f"char RNN step (T={models.num_steps}, batch {models.rnn_batch}, "
           f"{models.rnn_hiddens} hidden)"), {
        "tape": lambda: rnn_step(models.rnn, models.rnn_loss, X, Y, H),
        "compiled": lambda: rnn_step(*compiled_rnn, X, Y, H)}


def check_same_gradients(roads, params):
    """Both roads' step must give the same parameter gradients (float32: 1e-5)."""
    grads = {}
    for road, step in roads.items():
        step()
        grads[road] = [p.grad.asnumpy().copy() for p in params]
    for t, c in zip(grads["tape"], grads["compiled"], strict=True):
        assert np.allclose(t, c, rtol=1e-4, atol=1e-6), "compiled and tape gradients differ"


def time_steps(roads, repeat, number):
    """Median seconds per step of each road, the roads taking turns round by round."""
    samples = {road: [] for road in roads}
    for _ in range(repeat):
        for road, step in roads.items():
            start = time.perf_counter()
            for _ in range(number):
                step()
            samples[road].append((time.perf_counter() - start) / number)
    return {road: statistics.median(times) for road, times in samples.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--number", type=int, default=500)
    args = parser.parse_args()

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
    print(f"  {'':44}{'tape':>10}{'compiled':>10}{'tape/compiled':>15}")
    for label, roads in step_cases():
        params = models.RNN_PARAMS if "RNN" in label else models.MLP_PARAMS
        check_same_gradients(roads, params)
        number = max(5, args.number // (50 if "RNN" in label else 5))
        times = time_steps(roads, args.repeat, number)
        print(f"  {label:44}{times['tape'] * 1e6:8.1f}us{times['compiled'] * 1e6:8.1f}us"
              f"{times['tape'] / times['compiled']:14.2f}x")


if __name__ == "__main__":
    main()
