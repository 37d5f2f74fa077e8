"""Cross-check of the native road (whole functions in LLVM, compiler/lower_function.py)
against the Python road and central differences, in float64, on a corpus of scalar-loop
programs: loops, branches, ``while`` with a data-dependent trip count, ``break``,
``continue``, early ``return``, helper calls (which keep the Python road, visibly), and
pow/exp/log/sin/tanh/abs/max/min at and away from their kinks.

A silent wrong gradient on the native road is the failure this file exists to catch:
every program marked ``native`` must really take the native road (``pb.explain`` says so),
and its value and gradients must equal the Python road's (``PULLBACK_NATIVE_FUNCTIONS=0``:
the same generated code run by Python) within libm's ulp, and central differences away
from kinks.  Fixed seeds; the whole file runs in a few seconds.
"""

import math

import numpy as np
import pytest

import pullback as pb
from tape_helpers import central_gradient

#: libm's transcendental functions against numpy's, accumulated over a loop
LIBM_RTOL = 1e-12


def sin_loop(x, y, n):
    s = 0.0
    for i in range(n):
        s = s + np.sin(x * i) * y
    return s


def branch(x, y):
    if x > y:
        z = x * x - y
    else:
        z = np.exp(x) * y
    return z * 2.0


def while_data_dependent(x, y):
    s = x * x + 0.1
    k = 0
    while s < 8.0:
        s = s * 1.7 + np.abs(y)
        k = k + 1
    return s * (k + 1)


def for_break(x, y, n):
    s = 0.0
    for i in range(n):
        s = s + np.sin(x * i + y)
        if s > 1.5:
            break
    return s * y


def for_continue(x, y, n):
    s = x
    for i in range(n):
        if i % 3 == 1:
            continue
        s = s * 0.9 + y * np.cos(s)
    return s


def early_return(x, y, n):
    s = y
    for i in range(n):
        s = s + x * s * 0.1 + i * 0.01
        if s > 3.0:
            return s * x
    return s - x


def nested_loops(x, y, n):
    s = 0.0
    for i in range(n):
        for j in range(i):
            s = s + np.tanh(x * j - y * i) * 0.1
    return s


def while_counter_break(x, y):
    s = x
    k = 0
    while k < 50:
        k += 1
        s = np.sin(s) * y + x
        if s > 1.2:
            break
    return s * k


def reversed_and_stepped(x, y, n):
    s = 1.0
    for i in range(n, 0, -2):
        s = s * 0.95 + x ** 2 * i - y
    for j in range(1, n, 3):
        s = s + np.log(1.0 + y * y * j)
    return s


def smooth_math(x, y):
    return (x ** 3 + x ** 2.5 + np.power(y, 1.5) + np.exp(-x * y) + np.log(x + y)
            + np.sin(x) * np.cos(y) + np.tanh(x - y) + np.sqrt(x * y) + math.exp(x) * 0.1
            + np.log1p(x) + np.expm1(y * 0.5) + 1.0 / (x + 2.0) + x ** -1.5)


def kinks(x, y):
    return (np.abs(x) + abs(y - x) + np.maximum(x, y) * 2.0 + np.minimum(x, 0.0)
            - np.maximum(-y, x * 0.5) + np.sqrt(x * x) + np.power(x, 2) + x ** 3)


def int_and_float(x, y, n):
    s = x
    total = 0
    for i in range(n):
        total = total + i * i
        s = s * 0.5 + y * ((i * i) % 7) + i / (n + 1) - total * 1e-3
    return s * (n // 2 + 1)


def float_modulo(x, y, n):
    s = x
    for i in range(n):
        s = s * 0.5 + (y * 3.0 + i) % 7.0
    return s


def int_modulo_of_a_sum(x, y, n):
    total = 0
    for i in range(n):
        total = total + i
    return x * (total % 7) + y


def helper(a, b):
    return a * np.sin(b) + b


def helper_call(x, y):
    s = 0.0
    for i in range(3):
        s = s + helper(x, y * i)
    return s


#: (function, argument sampler(rng), differentiated positions, native expected)
PROGRAMS = [
    (sin_loop, lambda r: (r.uniform(-1, 1), r.uniform(-1, 1), int(r.integers(0, 40))),
     (0, 1), True),
    (branch, lambda r: (r.uniform(-1, 1), r.uniform(-1, 1)), (0, 1), True),
    (while_data_dependent, lambda r: (r.uniform(-2, 2), r.uniform(0.2, 2)), (0, 1), True),
    (for_break, lambda r: (r.uniform(-1, 1), r.uniform(-1, 1), int(r.integers(0, 30))),
     (0, 1), True),
    (for_continue, lambda r: (r.uniform(-1, 1), r.uniform(-1, 1), int(r.integers(0, 20))),
     (0, 1), True),
    (early_return, lambda r: (r.uniform(0, 1), r.uniform(0.5, 2), int(r.integers(0, 30))),
     (0, 1), True),
    (nested_loops, lambda r: (r.uniform(-1, 1), r.uniform(-1, 1), int(r.integers(0, 8))),
     (0, 1), True),
    (while_counter_break, lambda r: (r.uniform(-1, 1), r.uniform(0, 1.5)), (0, 1), True),
    (reversed_and_stepped, lambda r: (r.uniform(-1, 1), r.uniform(-1, 1),
                                      int(r.integers(0, 12))), (0, 1), True),
    (smooth_math, lambda r: (r.uniform(0.2, 2), r.uniform(0.2, 2)), (0, 1), True),
    (kinks, lambda r: (r.uniform(-1, 1), r.uniform(-1, 1)), (0, 1), True),
    (int_and_float, lambda r: (r.uniform(-1, 1), r.uniform(-1, 1), int(r.integers(0, 15))),
     (0, 1), True),   # the int (i * i) % 7 fused beside floats carries no gradient (adv9)
    (float_modulo, lambda r: (r.uniform(-1, 1), r.uniform(-1, 1), int(r.integers(0, 15))),
     (0, 1), False),   # the gradient rule of % (vjp.mod_0) is not lowered
    (int_modulo_of_a_sum, lambda r: (r.uniform(-1, 1), r.uniform(-1, 1),
                                     int(r.integers(0, 15))), (0, 1), True),
    (helper_call, lambda r: (r.uniform(-1, 1), r.uniform(-1, 1)), (0, 1), True),
]

#: points on the kinks of ``kinks`` and ``branch`` (x == y, x == 0, y == 0, y == -x/2
#: ...): the roads must agree there exactly (same subgradient convention), no
#: differences
KINKS = [(kinks, (0.0, 0.0)), (kinks, (0.0, 0.5)), (kinks, (0.3, 0.3)),
         (kinks, (-0.4, 0.2)), (kinks, (0.5, -0.25)), (branch, (0.25, 0.25)),
         (branch, (0.0, 0.0)), (while_data_dependent, (0.0, 0.0))]


def _road(monkeypatch, fn, args, argnums, flag):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", flag)
    value, grads = pb.value_and_grad(fn, argnums)(*args)
    value = float(np.asarray(value.asnumpy() if hasattr(value, "asnumpy") else value)
                  .reshape(-1)[0])
    return [value] + [float(g) for g in grads]


def _same(a, b, rtol):
    return (math.isnan(a) and math.isnan(b)) or a == b or (
        math.isfinite(a) and a == pytest.approx(b, rel=rtol, abs=1e-13))


@pytest.mark.parametrize("fn, sample, argnums, native", PROGRAMS,
                         ids=[p[0].__name__ for p in PROGRAMS])
def test_native_road_equals_python_road_and_central_differences(monkeypatch, fn, sample,
                                                                  argnums, native):
    rng = np.random.default_rng(1234)
    for _ in range(6):
        args = sample(rng)
        on = _road(monkeypatch, fn, args, argnums, "1")
        road = pb.explain(fn)
        off = _road(monkeypatch, fn, args, argnums, "0")
        if native:
            assert "native (" in road and "Python road" not in road, road
        else:   # the reason is named, not a silent slowdown
            assert "Python road" in road and "not lowered" in road, road
        assert all(_same(a, b, LIBM_RTOL) for a, b in zip(on, off, strict=True)), \
            f"{fn.__name__}{args}: native {on} != Python road {off}"
        numeric = [central_gradient(fn, args, k) for k in argnums]
        assert on[1:] == pytest.approx(numeric, rel=1e-5, abs=1e-6), \
            f"{fn.__name__}{args}: native {on[1:]} != central differences {numeric}"


@pytest.mark.parametrize("fn, args", KINKS, ids=[f"{f.__name__}{a}" for f, a in KINKS])
def test_roads_agree_exactly_at_kinks(monkeypatch, fn, args):
    with np.errstate(all="ignore"):   # sqrt(x * x) at 0: inf * 0 on both roads
        on = _road(monkeypatch, fn, args, (0, 1), "1")
        assert "native (" in pb.explain(fn)
        off = _road(monkeypatch, fn, args, (0, 1), "0")
    assert all(_same(a, b, 0.0) for a, b in zip(on, off, strict=True)), (on, off)


def test_non_finite_values_match(monkeypatch):
    """pow, log and sqrt at 0 and below: inf and nan, as numpy gives them."""
    def edges(x, y):
        return np.log(x) + np.sqrt(y) + x ** 0.5 + np.power(y, -1.0)

    with np.errstate(all="ignore"):
        for args in ((0.0, 0.0), (-1.0, 4.0), (2.0, -0.0), (float("inf"), 1.0)):
            on = _road(monkeypatch, edges, args, (0, 1), "1")
            assert "native (" in pb.explain(edges)
            off = _road(monkeypatch, edges, args, (0, 1), "0")
            assert all(_same(a, b, 0.0) for a, b in zip(on, off, strict=True)), (args, on, off)


def test_vjp_heads_on_the_native_road(monkeypatch):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    args = (0.3, -0.7, 17)
    _, pullback = pb.vjp(for_continue, *args, argnums=(0, 1))
    assert "native (" in pb.explain(for_continue)
    head = 2.5
    scaled = pullback(head)
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "0")
    _, python_pullback = pb.vjp(for_continue, *args, argnums=(0, 1))
    assert [float(g) for g in scaled] == pytest.approx(
        [float(g) for g in python_pullback(head)], rel=LIBM_RTOL)
    numeric = [head * central_gradient(for_continue, args, k) for k in (0, 1)]
    assert [float(g) for g in scaled] == pytest.approx(numeric, rel=1e-5, abs=1e-6)


# ----- random scalar programs (a fixed seed) -------------------------------------------

UNARY = ["np.sin({})", "np.cos({})", "np.tanh({})", "({} * 0.5)", "np.exp(np.sin({}))",
         "np.abs({})", "np.log(1.0 + {} * {})", "np.sqrt(1.0 + {} * {})", "({} ** 2)",
         "np.power({} * {} + 1.0, 1.5)"]
BINARY = ["({} + {})", "({} - {})", "({} * {})", "({} / (1.0 + {} * {}))",
          "np.maximum({}, {} + 0.3)", "np.minimum({}, {})"]


def _expression(rng, names, depth=2):
    if depth == 0 or rng.random() < 0.3:
        return str(rng.choice(names))
    if rng.random() < 0.5:
        template = str(rng.choice(UNARY))
        inner = _expression(rng, names, depth - 1)
        return template.format(*[inner] * template.count("{}"))
    template = str(rng.choice(BINARY))
    a, b = _expression(rng, names, depth - 1), _expression(rng, names, depth - 1)
    return template.format(a, b, b) if template.count("{}") == 3 else template.format(a, b)


def _block(rng, names, indent, depth, in_loop=False):
    lines, pad = [], "    " * indent
    for _ in range(int(rng.integers(1, 4))):
        kinds = ["assign", "assign"] + (["if", "for", "while"] if depth else []) \
            + (["jump"] if in_loop else [])
        kind = str(rng.choice(kinds))
        if kind == "assign":
            target = str(rng.choice(names[2:] + [f"v{len(names)}"]))
            lines.append(f"{pad}{target} = {_expression(rng, names)}")
            names.append(target) if target not in names else None
        elif kind == "jump":
            jump = str(rng.choice(["break", "continue", f"return {' + '.join(names)}"]))
            lines += [f"{pad}if {_expression(rng, names, 1)} > 0.5:", f"{pad}    {jump}"]
        elif kind == "if":
            lines.append(f"{pad}if {_expression(rng, names, 1)} > {rng.choice([0.0, 0.3])}:")
            lines += _block(rng, list(names), indent + 1, depth - 1, in_loop)
            lines.append(f"{pad}else:")
            lines += _block(rng, list(names), indent + 1, depth - 1, in_loop)
        elif kind == "for":
            var = f"i{indent}"
            lines.append(f"{pad}for {var} in range(n + {int(rng.integers(0, 3))}):")
            lines.append(f"{pad}    {names[-1]} = {names[-1]} * 0.9 + {var} * 0.01")
            lines += _block(rng, list(names), indent + 1, depth - 1, True)
        else:
            counter = f"k{indent}"
            lines += [f"{pad}{counter} = 0", f"{pad}while {counter} < n:",
                      f"{pad}    {counter} += 1"]
            lines += _block(rng, list(names), indent + 1, depth - 1, True)
    return lines


def _program(rng):
    names = ["x", "y", "v2"]
    lines = ["def program(x, y, n):", "    v2 = x * y"] + _block(rng, names, 1, 2)
    return "\n".join(lines + [f"    return {' + '.join(names)}"]) + "\n"


def _smooth_gradient(fn, args, k):
    """Central differences, or None where two step sizes disagree (a branch flips)."""
    coarse, fine = central_gradient(fn, args, k, 1e-5), central_gradient(fn, args, k, 1e-6)
    return fine if fine == pytest.approx(coarse, rel=1e-4, abs=1e-6) else None


def test_random_scalar_programs_on_both_roads(monkeypatch, tmp_path):
    import importlib.util

    rng = np.random.default_rng(20261207)
    native_count, checked = 0, 0
    for number in range(30):
        source = _program(rng)
        path = tmp_path / f"random_scalar_{number}.py"
        path.write_text("import numpy as np\n\n\n" + source)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for _ in range(2):
            args = (float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1)),
                    int(rng.integers(0, 4)))
            on = _road(monkeypatch, module.program, args, (0, 1), "1")
            road = pb.explain(module.program)
            assert "internal error" not in road, f"{road}\n{source}"
            native_count += "native (" in road
            off = _road(monkeypatch, module.program, args, (0, 1), "0")
            assert all(_same(a, b, LIBM_RTOL) for a, b in zip(on, off, strict=True)), \
                f"native {on} != Python road {off} at {args} for\n{source}"
            for k in (0, 1):
                numeric = _smooth_gradient(module.program, args, k)
                if numeric is not None:
                    checked += 1
                    assert on[1 + k] == pytest.approx(numeric, rel=1e-5, abs=1e-6), \
                        f"native {on} != central differences at {args} for\n{source}"
    assert native_count >= 45 and checked >= 90   # most run natively; most points smooth


def test_explain_with_arguments_decides_the_road_first(monkeypatch):
    """``pb.explain(fn, *args)`` builds the variant for those arguments (after the merge
    of pytrees it passed the argument count where the API takes the arguments)."""
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    text = pb.explain(for_continue, 0.3, -0.7, 17, argnums=(0, 1))
    assert "native (" in text, text
