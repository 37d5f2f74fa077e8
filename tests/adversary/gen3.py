"""adv3's random scalar programs in *Python* semantics: builtins (abs/min/max), math.*,
ints mixed with floats (//, %, ** with int exponents, negative operands), conditional
expressions, while/for with break/continue/return.  Each program runs as plain Python
(the reference value), with pb.value_and_grad on the native road and on the Python road,
and its gradient is compared with central differences where two step sizes agree."""

import importlib.util
import math
import os

import numpy as np

FLOAT_UNARY = ["math.sin({})", "math.cos({})", "math.tanh({})", "abs({})", "(-{})",
               "math.exp(math.sin({}))", "math.log(1.0 + {} * {})", "math.sqrt(1.0 + {} * {})",
               "({} ** 2)", "({} ** 3)", "(1.0 / (1.0 + {} * {}))"]
FLOAT_BINARY = ["({} + {})", "({} - {})", "({} * {})", "max({}, {})", "min({}, {})",
                "({} if {} > 0.0 else {})"]
INT_EXPR = ["n", "(n + 1)", "(n - 3)", "(n // 2)", "(n % 3)", "(-n // 2)", "(n % -3)",
            "abs(n - 2)", "max(n, 1)", "min(n, 2)", "(n * n)", "(n ** 2)", "(7 // (n + 1))"]


def expression(rng, names, depth=2):
    r = rng.random()
    if depth == 0 or r < 0.25:
        return str(rng.choice(names))
    if r < 0.35:
        return f"({rng.choice(names)} * {rng.choice(INT_EXPR)})"
    if r < 0.65:
        template = str(rng.choice(FLOAT_UNARY))
        inner = expression(rng, names, depth - 1)
        return template.format(*[inner] * template.count("{}"))
    template = str(rng.choice(FLOAT_BINARY))
    parts = [expression(rng, names, depth - 1) for _ in range(template.count("{}"))]
    return template.format(*parts)


def block(rng, names, indent, depth, in_loop=False):
    lines, pad = [], "    " * indent
    for _ in range(int(rng.integers(1, 4))):
        kinds = ["assign", "assign", "aug"] + (["if", "for", "while"] if depth else []) \
            + (["jump"] if in_loop else [])
        kind = str(rng.choice(kinds))
        if kind == "assign":
            target = str(rng.choice(names[2:] + [f"v{len(names)}"]))
            lines.append(f"{pad}{target} = {expression(rng, names)}")
            if target not in names:
                names.append(target)
        elif kind == "aug":
            target = str(rng.choice(names[2:]))
            op = str(rng.choice(["+=", "-=", "*="]))
            lines.append(f"{pad}{target} {op} {expression(rng, names, 1)} * 0.5")
        elif kind == "jump":
            jump = str(rng.choice(["break", "continue", f"return {' + '.join(names)}"]))
            lines += [f"{pad}if {expression(rng, names, 1)} > 0.5:", f"{pad}    {jump}"]
        elif kind == "if":
            lines.append(f"{pad}if {expression(rng, names, 1)} > {rng.choice([0.0, 0.3])}:")
            lines += block(rng, list(names), indent + 1, depth - 1, in_loop)
            lines.append(f"{pad}else:")
            lines += block(rng, list(names), indent + 1, depth - 1, in_loop)
        elif kind == "for":
            var = f"i{indent}"
            lines.append(f"{pad}for {var} in range({rng.choice(['n', 'n + 1', '3', 'n // 2 + 1'])}):")
            lines.append(f"{pad}    {names[-1]} = {names[-1]} * 0.9 + {var} * 0.01")
            lines += block(rng, list(names), indent + 1, depth - 1, True)
        else:
            counter = f"k{indent}"
            lines += [f"{pad}{counter} = 0", f"{pad}while {counter} < n:",
                      f"{pad}    {counter} += 1"]
            lines += block(rng, list(names), indent + 1, depth - 1, True)
    return lines


def program(rng):
    names = ["x", "y", "v2"]
    lines = ["def program(x, y, n):", "    v2 = x * y"] + block(rng, names, 1, 2)
    return "\n".join(lines + [f"    return {' + '.join(names)}"]) + "\n"


def load(path, source):
    path.write_text("import math\n\n\n" + source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.program


def central(fn, args, k, h):
    plus, minus = list(args), list(args)
    plus[k] += h
    minus[k] -= h
    return (fn(*plus) - fn(*minus)) / (2 * h)


def smooth(fn, args, k):
    try:
        a, b = central(fn, args, k, 1e-5), central(fn, args, k, 1e-6)
    except (ArithmeticError, ValueError):
        return None
    if not (math.isfinite(a) and math.isfinite(b)):
        return None
    return b if abs(a - b) <= 1e-4 * max(1.0, abs(b)) else None


def number(v):
    return float(np.asarray(v.asnumpy() if hasattr(v, "asnumpy") else v).reshape(-1)[0])


def roads(fn, args):
    """{'native': (value, gx, gy) or an exception text, 'python': ...}"""
    import pullback as pb
    out = {}
    for road in ("native", "python"):
        os.environ["PULLBACK_NATIVE_FUNCTIONS"] = "1" if road == "native" else "0"
        try:
            value, (gx, gy) = pb.value_and_grad(fn, (0, 1))(*args)
            out[road] = (number(value), float(gx), float(gy))
        except Exception as exc:   # noqa: BLE001 - reported, compared
            out[road] = f"{type(exc).__name__}: {exc}"
    os.environ["PULLBACK_NATIVE_FUNCTIONS"] = "1"
    return out


def close(a, b, rtol=1e-9):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= rtol * max(abs(a), abs(b), 1e-300)


def check(fn, source, args):
    """A list of problems (strings) for one program at one point."""
    problems = []
    try:
        plain = fn(*args)
    except (ArithmeticError, ValueError) as exc:
        plain = exc
    got = roads(fn, args)
    single = any(isinstance(a, np.float32) for a in args)
    rtol = 1e-5 if single else 1e-9
    for road, result in got.items():
        if isinstance(result, str):
            if "CompileError" in result or not isinstance(plain, float):
                continue
            problems.append(f"{road} raised {result} where plain Python gives {plain}")
            continue
        if isinstance(plain, Exception):
            continue
        if not abs(float(plain)) < 1e6:   # central differences lose x + huge
            continue
        if not close(result[0], float(plain), rtol):
            problems.append(f"{road} value {result[0]} != plain {plain}")
        for k in () if single else (0, 1):
            numeric = smooth(fn, args, k)
            if numeric is not None and not (abs(result[1 + k] - numeric)
                                            <= 1e-5 * max(1.0, abs(numeric))):
                problems.append(f"{road} gradient {k} {result[1 + k]} != central {numeric}")
    a, b = got["native"], got["python"]
    if isinstance(a, tuple) and isinstance(b, tuple) and not all(
            close(p, q, 1e-5 if single else 1e-12) for p, q in zip(a, b)):
        problems.append(f"native {a} != python {b}")
    return [f"{p} at {args} for\n{source}" for p in problems]


FLOAT_TYPES = (float, np.float64, np.float32)
INT_TYPES = (int, np.int64, np.int32)


def run(seed, count, directory, mixed=False):
    """Problems found in ``count`` programs; ``mixed``: numpy scalar argument types too."""
    rng = np.random.default_rng(seed)
    found = []
    for number_ in range(count):
        source = program(rng)
        fn = load(directory / f"gen3_{seed}_{number_}.py", source)
        for _ in range(2):
            args = [float(rng.uniform(-1.5, 1.5)), float(rng.uniform(-1.5, 1.5)),
                    int(rng.integers(-3, 5))]
            if mixed:
                args = [FLOAT_TYPES[rng.integers(3)](args[0]),
                        FLOAT_TYPES[rng.integers(3)](args[1]), INT_TYPES[rng.integers(3)](args[2])]
            found += check(fn, source, args)
    return found


if __name__ == "__main__":
    import pathlib
    import sys
    seed, count = int(sys.argv[1]), int(sys.argv[2])
    d = pathlib.Path(sys.argv[3] if len(sys.argv) > 3 else "/tmp/adv3/gen")
    d.mkdir(parents=True, exist_ok=True)
    for problem in run(seed, count, d, mixed=len(sys.argv) > 4):
        print("PROBLEM", problem)
        print("-" * 60)
