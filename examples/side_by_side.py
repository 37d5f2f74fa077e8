"""What the training examples share: their command line, progress output, running the
tape road and the compiled road side by side, and the summary they end with.

Each example trains one model twice from the same starting point, once with the
chapter's functions run eagerly under ``autograd.record()`` (the tape) and once with the
same functions under ``@pb.compile`` (the compiled road), checks that both roads reach
the same losses and parameters, then times one training step of each road, alternating
between them so that a busy machine slows both alike.  The last line an example prints
is machine-readable (``RESULT key=value ...``); ``tests/test_examples.py`` reads it.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import sys
import time

import numpy as np

_BAR_WIDTH = 30


def parse_args(description: str, steps: int, quick_steps: int) -> argparse.Namespace:
    """The examples' common options: ``--steps N``, ``--quick`` (``quick_steps`` training
    steps and a shorter timing), ``--plot PATH`` (a loss-curve PNG, needs matplotlib) and
    ``--seed``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=None,
                        help=f"training steps per road (default {steps}, --quick {quick_steps})")
    parser.add_argument("--quick", action="store_true",
                        help="a short run (what the test suite uses)")
    parser.add_argument("--plot", metavar="PATH", default=None,
                        help="save the loss curves of both roads to this PNG file "
                             "(needs matplotlib: pip install 'pullback[examples]')")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.steps is None:
        args.steps = quick_steps if args.quick else steps
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the loss must be seen to decrease)")
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install 'pullback[examples]'")
    return args


class Progress:
    """Training progress: a bar redrawn in place on a terminal, a plain line every tenth
    of the run otherwise (a log file or a pipe gets no carriage returns)."""

    def __init__(self, label: str, total: int, stream=None):
        self.label, self.total = label, total
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.every = max(1, total // 10)
        self.start = time.perf_counter()

    def update(self, step: int, loss: float) -> None:
        """Report that ``step`` (1-based) of ``total`` finished with this loss."""
        if self.tty:
            filled = round(_BAR_WIDTH * step / self.total)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            self.stream.write(f"\r  {self.label:<9} [{bar}] {step}/{self.total} "
                              f"loss {loss:<11.5g}")   # padded: no leftovers
            if step == self.total:
                self.stream.write(f"  ({time.perf_counter() - self.start:.1f} s)\n")
            self.stream.flush()
        elif step % self.every == 0 or step == self.total:
            print(f"  {self.label:<9} step {step:>5}/{self.total}  loss {loss:.5g}",
                  file=self.stream, flush=True)


def max_relative_difference(reference, other) -> float:
    """``max |a - b| / max(|a|)`` over matching arrays (NDArrays, numpy arrays or lists of
    them), 0 for equal values: how far ``other`` is from ``reference`` relative to its
    scale."""
    if isinstance(reference, (list, tuple)):
        return max((max_relative_difference(a, b)
                    for a, b in zip(reference, other, strict=True)), default=0.0)
    a, b = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    return diff / scale if scale > 0 else diff


def check_agreement(what: str, reference, other, tolerance: float | None) -> float:
    """Print how far the compiled road's ``other`` is from the tape's ``reference`` and
    stop the example (AssertionError) if that is more than ``tolerance`` (``None``: only
    report it)."""
    difference = max_relative_difference(reference, other)
    if tolerance is None:
        print(f"  {what}: max relative difference {difference:.2e} (reported, not checked)")
        return difference
    verdict = "ok" if difference <= tolerance else "DISAGREE"
    print(f"  {what}: max relative difference {difference:.2e} (tolerance {tolerance:.0e}) "
          f"{verdict}")
    assert difference <= tolerance, (
        f"{what}: the compiled road differs from the tape by {difference:.3e} "
        f"(tolerance {tolerance:.0e})")
    return difference


class SupervisedTraining:
    """The loop the supervised examples share: from the same starting parameters, train
    with ``update()`` (the chapter's SGD) after each batch's backward, on either road.

    ``params``: the attached global parameter arrays; ``batches``: ``(X, y)`` pairs;
    ``features``/``labels``: the whole training set the loss curve is measured on."""

    def __init__(self, params, batches, features, labels, update, steps: int):
        self.params, self.batches, self.update, self.steps = params, batches, update, steps
        self.features, self.labels = features, labels
        self.initial = [p.asnumpy().copy() for p in params]

    def reset(self) -> None:
        for p, value in zip(self.params, self.initial, strict=True):
            p[:] = value

    def step(self, net, loss, X, y) -> None:
        from pullback import autograd

        with autograd.record():
            l = loss(net(X), y)
        l.backward()
        self.update()

    def train(self, net, loss, road: str):
        """The loss over the training set after each step, and the trained parameters."""
        self.reset()
        progress, losses = Progress(road, self.steps), []
        for i, (X, y) in enumerate(self.batches, 1):
            self.step(net, loss, X, y)
            losses.append(loss(net(self.features), self.labels).mean().asscalar())
            progress.update(i, losses[-1])
        return losses, [p.asnumpy().copy() for p in self.params]

    def first_gradients(self, net, loss) -> list:
        from pullback import autograd

        self.reset()
        X, y = self.batches[0]
        with autograd.record():
            l = loss(net(X), y)
        l.backward()
        return [p.grad.asnumpy().copy() for p in self.params]

    def run(self, roads: dict):
        """``(first gradients, seconds of the compiled road's first call, loss curves,
        trained parameters)``, each a dict by road; ``roads``: road -> (net, loss)."""
        gradients = {"tape": self.first_gradients(*roads["tape"])}
        start = time.perf_counter()
        gradients["compiled"] = self.first_gradients(*roads["compiled"])   # compiles them
        first_call = time.perf_counter() - start
        curves, finals = {}, {}
        for road, fns in roads.items():
            curves[road], finals[road] = self.train(*fns, road)
        return gradients, first_call, curves, finals

    def time_steps(self, roads: dict, quick: bool) -> dict:
        """Seconds per training step of each road on the first batch (``time_per_step``)."""
        X, y = self.batches[0]
        rounds, per_round = (5, 20) if quick else (15, 50)
        return time_per_step({road: (lambda fns=fns: self.step(*fns, X, y))
                              for road, fns in roads.items()}, rounds, per_round)


def time_per_step(roads: dict, rounds: int, steps: int) -> dict:
    """Seconds per call of each road's step function (no arguments), the median over
    ``rounds`` rounds of ``steps`` calls, the roads taking turns round by round."""
    samples = {name: [] for name in roads}
    for _ in range(rounds):
        for name, step in roads.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            samples[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(times) for name, times in samples.items()}


def report(example: str, curves: dict, timings: dict, first_call: float,
           difference: float, tolerance: float) -> None:
    """Print the side-by-side summary and the final ``RESULT`` line.

    ``curves`` maps a road ("tape", "compiled") to its losses, one per step;
    ``timings`` maps it to seconds per step; ``first_call`` is the compiled road's first
    step (the transformation, or loading it from the cache); ``difference`` and
    ``tolerance`` are the roads' worst disagreement and what was allowed.
    """
    tape, compiled = timings["tape"], timings["compiled"]
    speedup = tape / compiled
    print()
    print(f"  {'road':<10}{'first loss':>12}{'final loss':>12}{'ms / step':>11}")
    for road in ("tape", "compiled"):
        losses = curves[road]
        print(f"  {road:<10}{losses[0]:>12.5g}{losses[-1]:>12.5g}{timings[road] * 1e3:>11.3f}")
    print(f"  compiled speed-up (tape time / compiled time): {speedup:.2f}x; "
          f"first compiled step {first_call * 1e3:.0f} ms")
    fields = {
        "example": example,
        "steps": len(curves["tape"]),
        "first_loss": f"{curves['tape'][0]:.6g}",
        "final_loss_tape": f"{curves['tape'][-1]:.6g}",
        "final_loss_compiled": f"{curves['compiled'][-1]:.6g}",
        "max_difference": f"{difference:.3e}",
        "tolerance": f"{tolerance:.0e}",
        "tape_ms": f"{tape * 1e3:.4f}",
        "compiled_ms": f"{compiled * 1e3:.4f}",
        "speedup": f"{speedup:.3f}",
    }
    print("RESULT " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


def save_plot(path: str, curves: dict, title: str, ylabel: str = "loss",
              log_scale: bool = True) -> None:
    """Save the loss curves (one line per road) to the PNG file ``path``."""
    import matplotlib

    matplotlib.use("Agg")   # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    styles = {"tape": dict(linewidth=3, alpha=0.5), "compiled": dict(linestyle="--")}
    for road, losses in curves.items():
        ax.plot(range(1, len(losses) + 1), losses, label=road, **styles.get(road, {}))
    values = [v for c in curves.values() for v in c]
    if log_scale and all(v > 0 and math.isfinite(v) for v in values) \
            and max(values) > 10 * min(values):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"  loss curves saved to {path}")
