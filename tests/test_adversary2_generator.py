"""adv2: a bounded fixed-seed generator of container programs (dicts, lists, tuples of
numbers and small numpy arrays; item reads, dict/list building, loops over items,
comprehensions, conditional expressions, sum/max/min): compiled gradient = central
differences in float64, gradient with the argument's structure."""

import copy
import importlib.util
import random
import sys

import numpy as np
import pytest

import pullback as pb

import os
N_PROGRAMS = int(os.environ.get("ADV2_GEN_N", "40"))


def _structure(rng, depth=0):
    kind = rng.choice(["dict", "list", "tuple"] if depth < 2 else ["leaf"])
    if rng.random() < 0.35 and depth > 0:
        kind = "leaf"
    if kind == "leaf":
        return rng.choice([1.25, -0.75, 0.5, 2.0]) if rng.random() < 0.6 else \
            np.array([0.3, -1.1, 0.7])[: rng.choice([1, 3])].copy()
    n = rng.randint(1, 3)
    items = [_structure(rng, depth + 1) for _ in range(n)]
    if kind == "dict":
        return {f"k{i}": v for i, v in enumerate(items)}
    return items if kind == "list" else tuple(items)


def _leaf_paths(v, path=""):
    if isinstance(v, dict):
        for k, x in v.items():
            yield from _leaf_paths(x, f"{path}[{k!r}]")
    elif isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            yield from _leaf_paths(x, f"{path}[{i}]")
    else:
        yield path


def _program(rng, arg, k):
    paths = list(_leaf_paths(arg))
    leaf = lambda: "np.sum(v" + rng.choice(paths) + ")"   # noqa: E731
    lines = [f"def prog{k}(v):", f"    a = {leaf()}", f"    b = {leaf()} * 0.5"]
    for _ in range(rng.randint(2, 4)):
        form = rng.randrange(7)
        if form == 0:
            lines.append(f"    d = {{'p': a, 'q': b * {leaf()}}}")
            lines.append("    a = d['p'] * d['q'] + d.get('r', b)")
        elif form == 1:
            lines.append(f"    s = [a, b, {leaf()}]")
            lines.append("    t = 0.0")
            lines.append("    for i, x in enumerate(s):")
            lines.append("        t = t + x * (i + 1.0)")
            lines.append("    a = t")
        elif form == 2:
            lines.append(f"    b = sum([x * x for x in [a, b, {leaf()}] if x > 0.0]) + b")
        elif form == 3:
            lines.append(f"    a = a * b if a > b else b * {leaf()}")
        elif form == 4:
            lines.append(f"    a = max(a, b * 1.5) + min([b, {leaf()}])")
        elif form == 5:
            lines.append("    e = {}")
            lines.append("    for j in range(2):")
            lines.append(f"        e[j] = a * (j + 1.0) + {leaf()}")
            lines.append("    for j, w in e.items():")
            lines.append("        b = b + w * 0.25")
        else:
            lines.append(f"    for x, y in zip([a, b], [{leaf()}, a]):")
            lines.append("        b = b + np.tanh(x * y)")
    lines.append("    return a * b + np.sin(a)")
    return "\n".join(lines) + "\n"


def _programs(tmp_path):
    rng = random.Random(int(os.environ.get("ADV2_GEN_SEED", "20261207")))
    cases, sources = [], ["import numpy as np\n"]
    for k in range(N_PROGRAMS):
        arg = _structure(rng)
        if not isinstance(arg, (dict, list, tuple)):
            arg = [arg]
        sources.append(_program(rng, arg, k))
        cases.append((f"prog{k}", arg))
    path = tmp_path / "adv2_generated_pytrees.py"
    path.write_text("\n".join(sources))
    spec = importlib.util.spec_from_file_location("adv2_generated_pytrees", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["adv2_generated_pytrees"] = mod
    spec.loader.exec_module(mod)
    return mod, cases


def _leaves(v, path=()):
    if isinstance(v, dict):
        for k, x in v.items():
            yield from _leaves(x, path + (k,))
    elif isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            yield from _leaves(x, path + (i,))
    else:
        yield path, v


def _at(v, path):
    for k in path:
        v = v[k]
    return v


def _replaced(v, path, new):
    if not path:
        return new
    if isinstance(v, dict):
        out = dict(v)
    else:
        out = list(v)
    out[path[0]] = _replaced(v[path[0]], path[1:], new)
    return out if isinstance(v, (dict, list)) else tuple(out)


def _central(fn, arg, eps=1e-6):
    grads = {}
    for path, leaf in _leaves(arg):
        x = np.asarray(leaf, dtype=np.float64)
        g = np.zeros(x.shape)
        for idx in np.ndindex(x.shape):
            up, dn = x.copy(), x.copy()
            up[idx] += eps
            dn[idx] -= eps
            wrap = (lambda a: a) if isinstance(leaf, np.ndarray) else float
            f_up = float(fn(_replaced(arg, path, wrap(up))))
            f_dn = float(fn(_replaced(arg, path, wrap(dn))))
            g[idx] = (f_up - f_dn) / (2 * eps)
        grads[path] = g
    return grads


def test_generated_container_programs(tmp_path):
    mod, cases = _programs(tmp_path)
    for name, arg in cases:
        fn = getattr(mod, name)
        expected = _central(fn, arg)
        value, g = pb.value_and_grad(fn)(copy.deepcopy(arg))
        assert float(np.sum(np.asarray(value.asnumpy() if isinstance(value, pb.NDArray)
                                       else value))) == pytest.approx(float(fn(arg)), rel=1e-9)
        for path, want in expected.items():
            got = np.asarray(_at(g, path), dtype=np.float64)
            assert got.shape == want.shape, (name, path)
            assert np.allclose(got, want, rtol=1e-4, atol=1e-5), (name, path, got, want)
