"""Differential tester for the fuser and the kernels.

A seeded generator writes random programs: runs of elementwise statements over four
arguments, each run ending (mostly) in an absorbed whole-array ``sum``, ``mean``, ``max``,
``min`` or ``norm`` whose result feeds later runs; sometimes a dead update of an argument
that only decides an ``if``.  Each program is called on several argument layouts: every
argument is a long array (lengths around the native threshold ``NATIVE_MIN_SIZE`` = 512
and the thread chunk: 1, 2, 511, 512, 513, 4096, 4097), a one-element array, a 0-d array,
a Python number or a numpy scalar, or the arguments are (n, 1) and (1, m) grids; float64
or float32.  Every layout runs on five roads:

- ``numpy``: the function itself, run by numpy (the value's reference);
- ``unfused``: compiled with ``PULLBACK_FUSE=0`` (the gradient's reference);
- ``fused-numpy``: fused, the kernels' numpy functions (``PULLBACK_NATIVE=0``);
- ``fused``: fused, native kernels at the real threshold;
- ``fused-native``: fused, native kernels for every call (threshold 1);

and the values and gradients must agree; in float64 the gradients must also match
central differences of the plain function.  A pullback with a cotangent other than 1
checks that a one-pass kernel's gradient scales.

CI runs ``PROGRAMS`` programs (fixed seed); ``PULLBACK_DIFFERENTIAL_SOAK=10`` runs ten
times as many with other seeds.  A failure prints the program's source and the layout.
"""

from __future__ import annotations

import importlib.util
import os
import random

import numpy as np
import pytest
from pullback.compiler.api import CompiledFunction
from pullback.runtime import fused, native
from tape_helpers import central_gradient

import pullback as pb

SOAK = int(os.environ.get("PULLBACK_DIFFERENTIAL_SOAK", "1"))
PROGRAMS = 40                   # per CI run, times SOAK
LAYOUTS = 6                     # argument layouts per program
LENGTHS = (1, 2, 511, 512, 513, 4096, 4097)
GRIDS = ((1, 1), (2, 1), (16, 32), (1, 513), (33, 16), (64, 64))
PARAMS = ("a", "b", "c", "d")

UNARY = ("np.sin({})", "np.cos({})", "np.tanh({})", "np.exp(np.tanh({}))", "({} * 0.5)",
         "({} * {})", "(1.5 - {})")   # not 1 - max(cos): a norm of 0
BINARY = ("({} + {})", "({} - {})", "({} * {})", "({} / (1.0 + {} * {}))")
REDUCTIONS = ("np.sum({})", "np.mean({})", "np.max({})", "np.min({})",
              "np.linalg.norm({})")


# ----- programs -----------------------------------------------------------------------------

def _expression(rng: random.Random, names: list) -> str:
    if rng.random() < 0.5:
        template = rng.choice(UNARY)
        return template.format(*[rng.choice(names)] * template.count("{}"))
    template = rng.choice(BINARY)
    a = rng.choice(names)
    others = [n for n in names if n != a]
    if not others:   # not x - x: a norm of zeros has a nan gradient (0 / 0) on every road
        template = rng.choice([t for t in BINARY if "-" not in t])
    b = rng.choice(others or names)
    return template.format(a, b, b) if template.count("{}") == 3 else template.format(a, b)


def program_source(seed: int) -> str:
    """A random program ``program(a, b, c, d)`` returning a number."""
    rng = random.Random(seed)
    lines, names, results = [], list(PARAMS), []
    for run in range(rng.randint(1, 3)):
        run_names = []
        for _ in range(rng.randint(2, 4)):
            target = f"v{len(lines)}"
            # lean on one argument now and then: a chain over a one-element value
            pool = [rng.choice(PARAMS)] + run_names if rng.random() < 0.4 else names + run_names
            lines.append(f"{target} = {_expression(rng, pool)}")
            run_names.append(target)
        names += run_names
        if rng.random() < 0.85:
            result = f"r{run}"
            lines.append(f"{result} = {rng.choice(REDUCTIONS).format(rng.choice(run_names))}")
            names.append(result)
            results.append(result)
    if rng.random() < 0.3:   # a dead update of an argument, fused, deciding an if
        param = rng.choice(PARAMS)
        lines.append(f"{param} = {param} - {rng.choice(names[4:])}")
        lines.append(f"w = {param} * 2.0")
        lines.append(f"if {rng.choice(REDUCTIONS).format('w')} > 0.0:")
        lines.append(f"    {results[-1] if results else 'v0'} = "
                     f"{results[-1] if results else 'v0'} * 3.0")
    last = f"v{max(k for k, line in enumerate(lines) if line.startswith('v'))}"
    terms = results + [f"np.{rng.choice(['sum', 'mean'])}({last})"]
    lines.append(f"return {' + '.join(f'{rng.choice([1.0, 0.5, -2.0])} * {t}' for t in terms)}")
    body = "\n".join(f"    {line}" for line in lines)
    return f"import numpy as np\n\n\ndef program(a, b, c, d):\n{body}\n"


def load_program(source: str, directory, seed: int):
    path = directory / f"differential_{seed}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"differential_{seed}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.program


# ----- argument layouts ---------------------------------------------------------------------

def layout(rng: np.random.Generator):
    """``(description, arguments)``: four arguments of random kinds, one dtype."""
    dtype = np.dtype(rng.choice(["float64", "float32"]))
    grid = rng.random() < 0.25
    rows, cols = GRIDS[rng.integers(len(GRIDS))]
    n = int(rng.choice(LENGTHS))
    args, kinds = [], []
    for k in range(len(PARAMS)):
        kind = rng.choice(["long", "long", "(1,)", "(1, 1)", "0-d", "number", "numpy scalar"])
        if grid and kind == "long":
            kind = "column" if k % 2 == 0 else "row"
        value = rng.uniform(-1.0, 1.0, {"long": (n,), "(1,)": (1,), "(1, 1)": (1, 1), "0-d": (),
                                        "column": (rows, 1), "row": (1, cols)}.get(kind, ()))
        if kind == "number":
            value = float(value)
        elif kind == "numpy scalar":
            value = dtype.type(value)
        else:
            value = np.asarray(value, dtype)
        args.append(value)
        kinds.append(kind)
    label = f"{dtype.name} n={n} grid={rows}x{cols} " + ", ".join(
        f"{p}: {k}" for p, k in zip(PARAMS, kinds, strict=True))
    return label, dtype, args


# ----- roads --------------------------------------------------------------------------------

def _copies(args):
    return [a.copy() if isinstance(a, np.ndarray) else a for a in args]


def run_roads(program, compiled, args, monkeypatch) -> dict:
    """{road: (value, gradients, gradients for a cotangent of 0.5)} for the compiled roads."""
    found = {}
    roads = [("unfused", "unfused", "0", None), ("fused-numpy", "fused", "0", None),
             ("fused", "fused", "1", None), ("fused-native", "fused", "1", 1)]
    everything = tuple(range(len(args)))
    for road, which, native_on, threshold in roads:
        if native_on == "1" and not native.native_enabled():
            continue
        with monkeypatch.context() as patch:
            patch.setenv("PULLBACK_NATIVE", native_on)
            if threshold is not None:
                patch.setattr(fused, "NATIVE_MIN_SIZE", threshold)
            with np.errstate(all="ignore"):
                value, grads = pb.value_and_grad(compiled[which], everything)(*_copies(args))
                _, pullback = pb.vjp(compiled[which], *_copies(args))
                half = pullback(np.asarray(0.5, np.result_type(_value(value, args))))
        found[road] = (_value(value, args), grads, half)
    return found


def _value(value, args):
    """A compiled function's value as numpy.  Of numbers only it comes back from the API as
    a (1,) NDArray (compiler/api.py, not the fuser: ``test_a_value_of_numbers_is_0_d``
    records it): taken as 0-d here."""
    if isinstance(value, pb.nd.NDArray) and not any(isinstance(a, np.ndarray) for a in args):
        return value.asnumpy().reshape(())
    return value


def _scale(*values) -> float:
    return 1.0 + max(float(np.max(np.abs(np.asarray(v, np.float64)), initial=0.0))
                     for v in values)


def _close(a, b, rtol, what):
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.shape(a) == np.shape(b), f"{what}: shape {np.shape(a)} != {np.shape(b)}"
    assert np.array_equal(np.isnan(a64), np.isnan(b64)), f"{what}: NaN in one only"
    np.testing.assert_allclose(a64, b64, rtol=rtol, atol=rtol * _scale(a64, b64),
                               equal_nan=True, err_msg=what)


def _gradient(g, arg):
    """A gradient as numpy (None: zeros of the argument's shape)."""
    return np.zeros(np.shape(arg)) if g is None else g


def directional_differences(fn, args, k, direction, eps=1e-6) -> tuple:
    """Central, forward and backward differences of ``fn`` along ``direction`` in argument
    ``k`` (float64).  Where a max or min changes its element within ``eps`` (a kink), the
    gradient is one side's derivative, not the central difference."""
    def at(step):
        moved = list(args)
        moved[k] = np.asarray(args[k], np.float64) + step * direction
        return float(np.sum(fn(*moved)))

    up, here, down = at(eps), at(0.0), at(-eps)
    return (up - down) / (2 * eps), (up - here) / eps, (here - down) / eps


def check_program(program, compiled, label, dtype, args, monkeypatch, rng):
    with np.errstate(all="ignore"):
        expected = program(*_copies(args))
    if not np.all(np.isfinite(expected)):
        return False   # a value outside the functions' domains: nothing to compare
    found = run_roads(program, compiled, args, monkeypatch)
    rtol = 1e-9 if dtype == np.float64 else 2e-3
    _, reference, _ = found["unfused"]
    for road, (value, grads, half) in found.items():
        what = f"{road} | {label}"
        _close(np.asarray(value), np.asarray(expected), rtol, f"value on {what}")
        for k, (g, arg, ref, h) in enumerate(zip(grads, args, reference, half, strict=True)):
            g, ref, h = (_gradient(v, arg) for v in (g, ref, h))
            assert np.shape(g) == np.shape(arg), f"gradient {PARAMS[k]} shape on {what}"
            _close(g, ref, rtol, f"gradient {PARAMS[k]} on {what} vs unfused")
            _close(h, np.asarray(g, np.float64) * 0.5, rtol,
                   f"gradient {PARAMS[k]} for a cotangent of 0.5 on {what}")
    if dtype != np.float64:
        return True
    for k, arg in enumerate(args):   # the unfused gradient is right: central differences
        g = np.asarray(_gradient(reference[k], arg), np.float64)
        if np.size(arg) <= 4:
            numeric = central_gradient(program, _copies(args), k)
            _close(g, numeric, 2e-5, f"gradient {PARAMS[k]} vs central differences | {label}")
        else:
            direction = rng.standard_normal(np.shape(arg))
            central, forward, backward = directional_differences(
                program, _copies(args), k, direction)
            analytic = float(np.sum(g * direction))
            size = 1 + np.sum(np.abs(g * direction))
            assert abs(analytic - central) <= 2e-5 * size or min(
                abs(analytic - forward), abs(analytic - backward)) <= 1e-4 * size, (
                f"gradient {PARAMS[k]} along a direction: {analytic} vs {central} (one-sided "
                f"{forward}, {backward}) | {label}")
    return True


def compile_roads(program, monkeypatch) -> dict:
    """The program compiled fused and unfused (``PULLBACK_FUSE`` is read when it is built)."""
    compiled = {}
    for which, flag in (("fused", "1"), ("unfused", "0")):
        function = CompiledFunction(program)
        with monkeypatch.context() as patch:
            patch.setenv("PULLBACK_FUSE", flag)
            patch.setenv("PULLBACK_NATIVE", "0")
            function.variant((True,) * len(PARAMS))._build()
        compiled[which] = function
    return compiled


SEEDS = [1000 * SOAK + k for k in range(PROGRAMS * SOAK)] if SOAK > 1 else list(range(PROGRAMS))


@pytest.mark.parametrize("seed", SEEDS)
def test_fused_roads_agree(seed, tmp_path, monkeypatch):
    source = program_source(seed)
    program = load_program(source, tmp_path, seed)
    compiled = compile_roads(program, monkeypatch)
    rng = np.random.default_rng(seed)
    checked = 0
    for _ in range(LAYOUTS):
        label, dtype, args = layout(rng)
        try:
            checked += check_program(program, compiled, label, dtype, args, monkeypatch, rng)
        except Exception as error:
            raise AssertionError(f"program {seed}:\n{source}\nlayout: {label}\n{error}") from error
    assert checked, f"no layout of program {seed} had a finite value:\n{source}"


def test_generator_covers_every_reduction_and_the_dead_update():
    sources = "".join(program_source(seed) for seed in SEEDS)
    for reduction in REDUCTIONS:
        assert reduction.format("")[:-1] in sources, reduction
    assert "if " in sources


def test_a_float32_numpy_scalars_gradient_is_a_float32_number():
    def f(a, c):
        return np.sum(np.sin(a) * c)

    _, (_, gc) = pb.value_and_grad(f, (0, 1))(np.ones(3, np.float32), np.float32(0.5))
    assert isinstance(gc, np.float32) and np.shape(gc) == ()
    np.testing.assert_allclose(gc, 3 * np.sin(np.float32(1)), rtol=1e-6)


def test_a_value_of_numbers_only_is_a_one_element_ndarray():
    """The documented rule (compiler/api.py _convert_value): NDArrays in, or only
    Python numbers, give NDArrays out, as an MXNet reduction gives a (1,) array."""
    def f(a, b):
        return np.sin(a) * b

    value, grads = pb.value_and_grad(f, (0, 1))(0.3, 0.5)
    assert isinstance(value, pb.nd.NDArray) and value.shape == (1,)
    np.testing.assert_allclose(value.asscalar(), np.sin(0.3) * 0.5, rtol=1e-12)
    assert all(type(g) is float for g in grads)
