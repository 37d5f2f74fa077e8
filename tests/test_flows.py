"""Every flow of a differentiated value is followed by a gradient rule or refused with a
CompileError at the user's line (analysis.check_flows, analysis._check_mutations): never a
silent zero.  Issue 11's snippets, issue 14's in-place writes, and an adversarial
generator that tries to smuggle a differentiated value past the analysis through each
channel (keyword, container, attribute, method, helper mutation, alias, conversion)."""

import importlib.util
import random

import numpy as np
import pytest

import pullback as pb
from tape_helpers import central_gradient


# ----- issue 11's snippets ---------------------------------------------------------------

def dict_by_keywords(a):
    d = dict(x=a)
    return d["x"] * 2.0


def sinc_by_keyword(a):
    return np.sinc(x=a)


def put(s, x):
    s.append(x)


def list_filled_by_a_helper(a):
    s = []
    put(s, a)
    return s[0] * a


def sum_of_a_list(a):
    return np.sum([1.0, a * a, 2.0])


def sort_in_place(x):
    x.sort()
    return x * np.arange(3.0)


def fill_in_place(x):
    y = x * 2.0
    x.fill(1.0)
    return y * x


def fill_a_needed_constant(x, c):
    y = x * c
    c.fill(0.0)
    return y


def copyto_a_needed_constant(x, c):
    y = x * c
    np.copyto(c, 2.0)
    return y


def out_keyword(x):
    y = np.zeros(3)
    np.sin(x, out=y)
    return y


def float_into_the_result(x):
    return float(x) * x


def item_into_the_result(x):
    return x.item() * x


def float_only_decides(x):
    if float(x) > 0.0:
        return x * 3.0
    return x


def append_to_a_parameter(xs, a):
    xs.append(a)
    return xs[-1] * a


def append_through_an_alias(a):
    s = [a]
    t = s
    s.append(a * 2.0)
    return t[-1] * a


def clip_bound_differentiated(x):
    return np.sum(np.clip(x, -1.0, x[0]))


def attribute_of_a_gradient(x):
    return x.real * 2.0


def updated_through_an_alias(x):
    y = x * 1.0
    z = y
    y += x
    return z * y


def list_operator(a):
    s = [a, 1.0]
    t = s * 2
    return t[0] * a


REFUSED = [
    (list_filled_by_a_helper, 3.0, "result of put"),
    (sort_in_place, np.array([3.0, 1.0, 2.0]), ".sort"),
    (fill_in_place, np.array([3.0, 1.0, 2.0]), ".fill"),
    (out_keyword, np.array([3.0, 1.0, 2.0]), "out="),
    (float_into_the_result, 1.5, "float"),
    (item_into_the_result, 1.5, ".item"),
    (append_through_an_alias, 1.5, "also refers to"),
    (clip_bound_differentiated, np.array([0.3, 1.0, -2.0]), "clip"),
    (attribute_of_a_gradient, np.array([0.3, 1.0]), ".real"),
    (list_operator, 1.5, "operator on a list"),
]


@pytest.mark.parametrize("fn, arg, words", REFUSED, ids=[r[0].__name__ for r in REFUSED])
def test_untracked_flows_are_compile_errors(fn, arg, words):
    with pytest.raises(pb.CompileError, match=words.replace(".", r"\.")) as info:
        pb.grad(fn)(arg)
    assert __file__ in str(info.value)


@pytest.mark.parametrize("fn, words", [(fill_a_needed_constant, ".fill"),
                                       (copyto_a_needed_constant, "np.copyto")])
def test_in_place_writes_to_values_the_adjoint_reads_are_refused(fn, words):
    c = np.array([1.0, 2.0, 3.0])
    with pytest.raises(pb.CompileError, match=f"{words.replace('.', '[.]')}.*needs c"):
        pb.grad(fn)(np.ones(3), c)
    assert np.array_equal(c, [1.0, 2.0, 3.0])   # refused before running


def test_appending_to_a_parameter_is_refused():
    xs = [1.0]
    with pytest.raises(pb.CompileError, match="the caller"):
        pb.grad(append_to_a_parameter, argnums=1)(xs, 2.0)
    assert xs == [1.0]


def test_a_conversion_that_only_decides_control_flow_is_fine():
    assert pb.grad(float_only_decides)(0.5) == pytest.approx(3.0)
    assert pb.grad(float_only_decides)(-0.5) == pytest.approx(1.0)


def test_an_operand_passed_by_numpys_keyword_is_followed():
    # np.sinc has a rule now (issue 11 item 5) and its operand may be named, as in numpy
    assert pb.grad(sinc_by_keyword)(0.3) == pytest.approx(-0.9020281301388888, rel=1e-12)


def test_a_list_holding_a_differentiated_value_as_a_numpy_operand():
    assert pb.grad(sum_of_a_list)(3.0) == pytest.approx(6.0)


# ----- the adversarial generator -----------------------------------------------------------
#
# Each channel is source text over a differentiated ``v`` (a number or an array of three)
# that ends in ``r``, a value depending on ``v``.  Programs chain one to three channels
# between plain differentiable steps; each must be refused (CompileError, or the run-time
# TypeError of an update through a shared array) or give central differences' gradient.

CHANNELS = [
    "r = np.sinc(x=v)",
    "r = np.arctan(v)",
    "r = np.sinc([v, 1.0])[0]",
    "d = dict(x=v)\nr = d['x'] * 2.0",
    "s = []\nput(s, v)\nr = s[0] * v",
    "s = []\ns.append(v)\nr = s[0] * v",
    "s = [v]\nt = s\ns.append(v * 2.0)\nr = t[-1] * v",
    "s = (v, 2.0)\nr = s[0] * s[1]",
    "r = helper(y=v, x=2.0)",
    "r = helper(2.0, v)",
    "w = v * 1.0\nw.sort()\nr = w * v",
    "w = v * 1.0\nw.fill(2.0)\nr = w",
    "c = np.ones(3)\nw = v * c\nc.fill(0.0)\nr = w",
    "r = float(np.sum(v)) * v",
    "r = np.sum(v).item() * v",
    "r = v * 3.0 if False else v * 3.0",
    "w = v * 1.0\nw += v\nr = w * v",
    "r = np.where(v > 0.0, v, v * 0.5)",
    "r = np.sum([1.0, v * v, 2.0]) * v",
    "r = np.clip(v, -0.5, np.max(v))",
    "r = v.real",
    "r = np.asarray(v) * 2.0",
    "r = np.sqrt(v * v + 1.0, dtype=float)",
    "r = math.exp(np.sum(v))",
    "r = np.tanh(v) * np.exp(-v)",
    "k = int(np.sum(v))\nr = v * k",
    "s = [v]\nr = np.stack(s)[0] * v",
    # containers as values: followed (compiler/pytree.py) or refused, never a silent zero
    "d = {'x': v}\nr = d['x'] * 2.0",
    "d = {}\nd['x'] = v\nr = d['x'] * v",
    "d = {'x': 1.0}\nd['x'] = v\nr = d.get('x') * d.get('y', v)",
    "d = dict(a=v, b=2.0)\nr = v * 0.0\nfor k, w in d.items():\n    r = r + w * v",
    "d = {'a': v, 'b': v * v}\nr = v * 0.0\nfor k in d:\n    r = r + d[k]",
    "d = {'a': v}\nr = v * 0.0\nfor w in d.values():\n    r = r + w * w",
    "d = {'x': v}\ne = d\nd['x'] = v * 2.0\nr = e['x'] * v",
    "d = {'x': v}\nput_item(d, v)\nr = d['x'] * v",
    "d = {'x': v}\nd = put_item_back(d, v * 3.0)\nr = d['x'] * v",
    "s = [v, 1.0]\ns[1] = v * v\nr = s[0] * s[1]",
    "s = [v]\nr = (s + s)[1] * v",
    "d = {'x': v}\nr = d * 2.0",
    "d = {'x': v}\nr = np.sum(d)",
    "d = {'x': v}\nd['x'] += v\nr = d['x']",
    "t = (v, v * 2.0)\nr = np.sum(list(t))",
    "d = {'x': v}\nd.update(x=2.0)\nr = d['x'] * v",
    "d = {'x': v, 'y': 2.0}\nd.pop('x')\nr = d['y'] * v",
    "k = 'x'\nd = {k: v, 'x': 2.0}\nr = d['x'] * v",
    "d = {'x': v}\nr = helper(**d)",
    "d = {'x': 2.0, 'y': v}\nr = helper(d['x'], d['y'])",
    "d = {'w': (v, v * 2.0)}\nw = d['w']\nr = w[0] * w[1]",
    "s = [v, v * 2.0]\nt = s.pop()\nr = t * s[0]",
    "s = [v]\ns.extend([v * v, 2.0])\nr = s[0] * s[1] + s[2]",
    "s = [v]\nt = s\ns.extend([v])\nr = t[0] * v",
    # item 4's forms (normalize desugars them)
    "r = sum([v, v * v])",
    "r = max(v, 0.5) * min(v, -0.5)",
    "s = [w * v for w in (v, 2.0)]\nr = s[1] * s[0]",
    "r = v * 2.0 if np.sum(v) > 0.0 else v",
    "r = v\nfor i, w in enumerate([v, v * v]):\n    r = r + i * w",
    "d = {k: w for k, w in zip(['a', 'b'], [v, 2.0])}\nr = d['a'] * d['b']",
]

STEPS = ["v = np.sin(v) + 0.5", "v = v * 1.5", "v = np.exp(v * 0.3)", "v = v * v + 0.1"]

HEADER = """import math
import numpy as np


def put(s, x):
    s.append(x)


def helper(x, y):
    return x * np.sin(y)


def put_item(d, x):
    d['x'] = x


def put_item_back(d, x):
    d['x'] = x
    return d


"""


def _programs(seed, count):
    rng = random.Random(seed)
    for k in range(count):
        lines = []
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.5:
                lines.append(rng.choice(STEPS))
            lines += rng.choice(CHANNELS).splitlines()
            lines.append("v = r")
        body = "".join(f"    {line}\n" for line in lines)
        yield k, f"def program_{k}(v):\n{body}    return np.sum(v)\n", rng.random() < 0.5


def _load(tmp_path, sources):
    path = tmp_path / "smuggled.py"
    path.write_text(HEADER + "\n\n".join(sources))
    spec = importlib.util.spec_from_file_location("smuggled", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_differentiated_value_is_smuggled_past_the_analysis(tmp_path):
    programs = list(_programs(seed=11, count=200))
    module = _load(tmp_path, [source.replace("if False else", "if np.sum(v) > 100.0 else")
                              for _, source, _ in programs])
    outcomes = {"refused": 0, "right": 0, "fails in Python": 0}
    for k, source, as_array in programs:
        fn = getattr(module, f"program_{k}")
        x = np.array([0.3, -0.4, 0.7]) if as_array else 0.35
        try:
            expected = central_gradient(fn, [x.copy() if as_array else x])
        except Exception:   # the Python itself fails (e.g. float() of an array)
            outcomes["fails in Python"] += 1
            continue
        try:
            got = pb.grad(fn)(x.copy() if as_array else x)
        except pb.CompileError:
            outcomes["refused"] += 1
            continue
        except TypeError as exc:   # run-time checks: shared updates, unknown kinds
            assert "augmented assignment" in str(exc) or "operand of an operation" in str(
                exc), source
            outcomes["refused"] += 1
            continue
        assert np.allclose(got, expected, rtol=1e-5, atol=1e-7), (source, got, expected)
        outcomes["right"] += 1
    assert outcomes["refused"] > 20 and outcomes["right"] > 20, outcomes


def test_a_dict_built_by_keywords_is_followed():
    # was 0.0 (issue 11); now a dict value (tests/test_pytrees.py covers the forms)
    assert pb.grad(dict_by_keywords)(0.5) == pytest.approx(2.0)
