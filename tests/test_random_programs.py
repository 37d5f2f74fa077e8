"""Hypothesis writes random programs; compiled = tape = finite differences on every one.

Programs are expression DAGs over elementwise primitives (on equal and on
broadcasting input shapes), calls of helper functions (several return values
too), lists built with ``append`` and read by index, ``break``/``continue``/
early ``return`` under data-dependent conditions, ``if``s on
data-dependent conditions, and ``for``/``while`` loops that overwrite
variables.  Each is written to a real module file and imported, so the
compiler parses it like user code.  A failing program is printed as source.
"""

import importlib.util
import itertools

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pullback as pb
from pullback import nd
from pullback.testing import check_grads
from tape_helpers import central_gradient, tape_gradients

UNARY = ["nd.sin({})", "nd.cos({})", "nd.tanh({})", "nd.sigmoid({})", "({} * 0.5)",
         "nd.exp(nd.sin({}))", "nd.square(nd.tanh({}))"]
BINARY = ["({} + {})", "({} - {})", "({} * {})", "({} / (1.0 + {} * {}))",
          "nd.maximum({}, {} + 3.0)"]


@st.composite
def expressions(draw, names, depth=2):
    if depth == 0 or draw(st.booleans()):
        return draw(st.sampled_from(names))
    if draw(st.booleans()):
        return draw(st.sampled_from(UNARY)).format(draw(expressions(names, depth - 1)))
    template = draw(st.sampled_from(BINARY))
    a = draw(expressions(names, depth - 1))
    b = draw(expressions(names, depth - 1))
    return template.format(a, b, b) if template.count("{}") == 3 else template.format(a, b)


HELPERS = """
def helper(a, b):
    return nd.tanh(a) * b + a * 0.5


def looped(a):
    s = a
    for k in range(2):
        s = nd.sin(s) + a * 0.5
    return s


def pair(a, b):
    return a * b, nd.sin(a) + b
"""


@st.composite
def blocks(draw, names, indent, depth, in_loop=False):
    """Lines of statements; may create new variables (appended to ``names``)."""
    lines = []
    for _ in range(draw(st.integers(1, 3))):
        kinds = ["assign", "assign", "call", "pair", "list"]
        kinds += ["if", "for", "while"] if depth > 0 else []
        kinds += ["jump"] if in_loop else []
        kind = draw(st.sampled_from(kinds))
        pad = "    " * indent
        if kind == "call":
            target = f"v{len(names)}"
            a, b = draw(expressions(names, 1)), draw(expressions(names, 1))
            call = draw(st.sampled_from([f"helper({a}, {b})", f"looped({a})"]))
            lines.append(f"{pad}{target} = {call}")
            names.append(target)
        elif kind == "pair":
            first, second = f"v{len(names)}", f"v{len(names) + 1}"
            a, b = draw(expressions(names, 1)), draw(expressions(names, 1))
            lines.append(f"{pad}{first}, {second} = pair({a}, {b})")
            names += [first, second]
        elif kind == "list":
            items, target = f"items{indent}", f"v{len(names)}"
            lines.append(f"{pad}{items} = []")
            lines.append(f"{pad}for j{indent} in range(3):")
            lines.append(f"{pad}    {items}.append({draw(expressions(names, 1))} * j{indent})")
            lines.append(f"{pad}{target} = {items}[0] + {items}[2] * {items}[1]")
            names.append(target)
        elif kind == "jump":
            cond = draw(expressions(names, 1))
            jump = draw(st.sampled_from(["break", "continue", f"return {' + '.join(names)}"]))
            lines.append(f"{pad}if nd.sum({cond}).asscalar() > 0.5:")
            lines.append(f"{pad}    {jump}")
        elif kind == "assign":
            target = draw(st.sampled_from(names[1:] + [f"v{len(names)}"])) \
                if len(names) > 1 else f"v{len(names)}"
            expr = draw(expressions(names))
            lines.append(f"{pad}{target} = {expr}")
            if target not in names:
                names.append(target)
        elif kind == "if":
            cond = draw(expressions(names, 1))
            threshold = draw(st.sampled_from(["0.0", "0.3", "-0.4"]))
            lines.append(f"{pad}if nd.sum({cond}).asscalar() > {threshold}:")
            lines += draw(blocks(list(names), indent + 1, depth - 1, in_loop))
            lines.append(f"{pad}else:")
            lines += draw(blocks(list(names), indent + 1, depth - 1, in_loop))
        elif kind == "for":
            var = f"i{indent}"
            lines.append(f"{pad}for {var} in range({draw(st.integers(1, 3))}):")
            lines.append(f"{pad}    {names[-1]} = {names[-1]} * 0.9 + {var} * 0.01")
            lines += draw(blocks(list(names), indent + 1, depth - 1, True))
        else:
            counter = f"n{indent}"
            lines.append(f"{pad}{counter} = 0")
            lines.append(f"{pad}while {counter} < {draw(st.integers(1, 3))}:")
            lines.append(f"{pad}    {counter} += 1")   # first: a continue must not skip it
            lines += draw(blocks(list(names), indent + 1, depth - 1, True))
    return lines


@st.composite
def programs(draw):
    names = ["x", "y", "v2"]
    lines = ["def program(x, y):", "    v2 = x * y"]
    lines += draw(blocks(names, 1, 2))
    total = " + ".join(names)
    lines.append(f"    return {total}")
    return "\n".join(lines) + "\n"


_counter = itertools.count()


def _load(source, tmp_dir):
    path = tmp_dir / f"random_program_{next(_counter)}.py"
    path.write_text("import pullback.ndarray as nd\n\n" + HELPERS + "\n\n" + source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.program


SHAPES = st.sampled_from([((3,), (3,)), ((2, 1), (3,)), ((4,), (1,))])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=programs(), seed=st.integers(0, 2**16), shapes=SHAPES)
def test_random_programs_agree_three_ways(tmp_path_factory, source, seed, shapes):
    fn = _load(source, tmp_path_factory.getbasetemp())
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-1, 1, shapes[0]), rng.uniform(-1, 1, shapes[1])]
    try:
        compiled = pb.grad(fn, argnums=(0, 1))(*[nd.array(a) for a in arrays])
        tape = tape_gradients(fn, arrays)
        for c, t in zip(compiled, tape, strict=True):
            np.testing.assert_allclose(c.asnumpy(), t, rtol=1e-9, atol=1e-11)
        # a program that overflows (y = y * (x + y) nine times) has inf/nan gradients on
        # both roads, equal above; central differences of inf are meaningless there
        if all(np.all(np.isfinite(c.asnumpy())) for c in compiled):
            check_grads(fn, [nd.array(a) for a in arrays], rtol=1e-4, atol=1e-6)
    except Exception:
        print("failing program:\n" + source)
        raise


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=programs(), seed=st.integers(0, 2**16), shapes=SHAPES)
def test_random_programs_native_kernels_agree(tmp_path_factory, source, seed, shapes):
    """The same, with every fused kernel forced onto the native road."""
    from pullback.runtime import fused, native

    if not native.native_enabled():
        return
    fn = _load(source, tmp_path_factory.getbasetemp())
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-1, 1, shapes[0]), rng.uniform(-1, 1, shapes[1])]
    saved, fused.NATIVE_MIN_SIZE = fused.NATIVE_MIN_SIZE, 1
    try:
        compiled = pb.grad(fn, argnums=(0, 1))(*[nd.array(a) for a in arrays])
    finally:
        fused.NATIVE_MIN_SIZE = saved
    tape = tape_gradients(fn, arrays)
    for c, t in zip(compiled, tape, strict=True):
        np.testing.assert_allclose(c.asnumpy(), t, rtol=1e-9, atol=1e-11,
                                   err_msg="failing program:\n" + source)


# ----- plain numpy programs: compiled gradient = central differences ------------------------

NP_UNARY = ["np.sin({})", "np.tanh({})", "np.exp(np.cos({}))", "({} * 0.5)", "(np.abs({}) + 1.0)",
            "np.log1p({} * {})"]
NP_BINARY = ["({} + {})", "({} * {})", "np.maximum({}, {} - 0.5)", "({} / (2.0 + {} * {}))"]


@st.composite
def numpy_expressions(draw, names, depth=2):
    if depth == 0 or draw(st.booleans()):
        return draw(st.sampled_from(names))
    if draw(st.booleans()):
        template = draw(st.sampled_from(NP_UNARY))
        inner = draw(numpy_expressions(names, depth - 1))
        return template.format(*[inner] * template.count("{}"))
    template = draw(st.sampled_from(NP_BINARY))
    a, b = draw(numpy_expressions(names, depth - 1)), draw(numpy_expressions(names, depth - 1))
    return template.format(a, *[b] * (template.count("{}") - 1))


@st.composite
def numpy_programs(draw):
    names = ["x", "w"]
    lines = ["def program(x, w):"]
    for k in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["assign", "assign", "reduce", "matmul", "loop", "branch",
                                     "while"]))
        target = f"t{k}"
        if kind == "assign":
            lines.append(f"    {target} = {draw(numpy_expressions(names))}")
        elif kind == "reduce":
            axis = draw(st.sampled_from(["", ", axis=0", ", axis=1, keepdims=True"]))
            reduce = draw(st.sampled_from(["np.sum", "np.mean", "np.max"]))
            lines.append(f"    {target} = x * {reduce}({draw(numpy_expressions(names))}{axis})")
        elif kind == "matmul":
            lines.append(f"    {target} = np.tanh((({draw(numpy_expressions(names, 1))}) @ w.T) "
                         "@ x * 0.3)")
        elif kind in ("branch", "while"):
            # numpy conditions: a reduction compared (compiled as a number, not an array)
            test = draw(st.sampled_from(["np.sum({}) > 0.3", "np.linalg.norm({}) < 2.5",
                                         "np.max({}) > 0.2", "np.mean({}) < -0.1"]))
            test = test.format(draw(numpy_expressions(names, 1)))
            if kind == "branch":
                lines.append(f"    if {test}:")
                lines.append(f"        {target} = {draw(numpy_expressions(names))}")
                lines.append("    else:")
                lines.append(f"        {target} = {draw(numpy_expressions(names))} * 0.5")
            else:
                lines.append(f"    {target} = x * 0.5")
                lines.append(f"    n{k} = 0")
                lines.append(f"    while np.linalg.norm({target}) < 4.0 and n{k} < 3:")
                lines.append(f"        {target} = {target} * 1.5 + "
                             f"{draw(numpy_expressions(names, 1))} * 0.1")
                lines.append(f"        n{k} += 1")
        else:
            lines.append(f"    {target} = x")
            lines.append(f"    for i in range({draw(st.integers(1, 3))}):")
            lines.append(f"        {target} = {target} * 0.8 + "
                         f"{draw(numpy_expressions(names + [target], 1))} * 0.1")
        names.append(target)
    lines.append(f"    return np.sum({' + '.join(names[2:])})")
    return "\n".join(lines) + "\n"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=numpy_programs(), seed=st.integers(0, 2**16))
def test_random_numpy_programs_match_finite_differences(tmp_path_factory, source, seed):
    path = tmp_path_factory.getbasetemp() / f"numpy_program_{next(_counter)}.py"
    path.write_text("import numpy as np\n\n\n" + source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-1, 1, (3, 4)), rng.uniform(-1, 1, (3, 4))]
    grads = pb.grad(module.program, argnums=(0, 1))(*arrays)
    for k, g in enumerate(grads):
        np.testing.assert_allclose(g, central_gradient(module.program, arrays, k),
                                   rtol=1e-5, atol=1e-6, err_msg="failing program:\n" + source)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=programs(), seed=st.integers(0, 2**16))
def test_random_programs_on_python_numbers_agree_with_one_element_arrays(
        tmp_path_factory, source, seed):
    """Python numbers stay numbers in compiled code (numpy scalars, not arrays): the
    gradients must equal those of the same program on one-element arrays."""
    fn = _load(source, tmp_path_factory.getbasetemp())
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-1, 1, 2)
    numbers = pb.grad(fn, argnums=(0, 1))(float(x), float(y))
    arrays = pb.grad(fn, argnums=(0, 1))(nd.array([x], dtype="float64"),
                                         nd.array([y], dtype="float64"))
    for n, a in zip(numbers, arrays, strict=True):
        assert type(n) is float, "failing program:\n" + source
        np.testing.assert_allclose(n, a.asscalar(), rtol=1e-12, atol=1e-14,
                                   err_msg="failing program:\n" + source)
