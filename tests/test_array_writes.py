"""Array writes in compiled code (issue 11, item 3): ``x[i] = v``, ``x[i:j] = v``,
``x[i, j] = v``, ``x[mask] = v``, ``x[idx] = v``, ``x[k] += v`` (and ``-=``, ``*=``) into
arrays the function made, in loops and branches.

Every program: the compiled value = the plain Python function's, the compiled gradient =
central differences of the plain function in float64 (the eager tape refuses a
differentiated value written into an array, as MXNet's ``record()`` does, so the plain
function is the reference), forward mode (``pb.jvp``, ``pb.jacfwd``) = central differences,
fused = unfused.  What the aliasing rule refuses is a CompileError naming the line."""

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd
from pullback.testing import saved_by_forward

RNG = np.random.default_rng(11)


# ----- the programs ----------------------------------------------------------------------------

def write_item(x):
    y = np.zeros(4)
    y[1] = x[0] * 2.0
    y[-1] = np.sin(x[1])
    return np.sum(y * y) + y[1]


def write_slice(x):
    y = np.zeros(7)
    y[1:4] = x * 2.0
    y[::3] = np.exp(x)
    return np.sum(np.tanh(y) * np.arange(7.0))


def write_broadcast(x, s):
    y = np.ones((3, 4))
    y[1] = s * 3.0            # a number into a row
    y[:, 2] = x               # a vector into a column
    y[0, 1:3] = x[:2] * s     # a tuple key with a slice
    return np.sum(y * y * np.arange(12.0).reshape(3, 4))


def write_mask(x):
    y = x * 1.0
    y[x > 0.1] = 0.5 * x[0]
    z = x * 2.0
    z[x < 0.0] = x[x < 0.0] ** 2
    return np.sum(y * z) + np.sum(np.cos(y))


def write_indices(x):
    y = np.zeros(5)
    y[[4, 0, 2]] = x * x
    return np.sum(y * np.arange(1.0, 6.0))


def augmented_writes(x):
    y = x * 1.0
    y[0] += x[1] * 3.0
    y[1:] -= np.sin(x[:-1])
    y[2] *= x[0]
    return np.sum(y * y)


def overwrite_needed(x):
    # the adjoint reads y's values from before each write: the overwritten items are saved
    y = np.exp(x)
    s = np.sum(np.sin(y))
    y[1] = x[0] * x[2]
    t = np.sum(y * y)
    y[0:2] = np.cos(x[1:3])
    return s + t + np.sum(np.log(y * y + 1.0))


def recurrence(x0, w):
    y = np.zeros(6)
    y[0] = x0
    for i in range(1, 6):
        y[i] = np.sin(y[i - 1]) * w + 0.1
    return np.sum(y * y)


def rows_recurrence(h0, W):
    H = np.zeros((5, 3))
    H[0] = h0
    for t in range(1, 5):
        H[t] = np.tanh(np.dot(W, H[t - 1]))
    return np.sum(H * H)


def write_in_branches(x, n):
    y = np.zeros(4)
    for i in range(4):
        if x[i % 3] > 0.0:
            y[i] = x[i % 3] * 2.0
        else:
            y[i] = np.exp(x[i % 3])
        if i == n:
            y[i] += y[i - 1] * y[i]
    return np.sum(y * y * x[0])


def write_then_grow(x):
    # writes in a while loop, the key an int the loop computes
    y = np.zeros(8)
    k = 0
    while k < 6:
        y[k + 1] = y[k] * 0.5 + x[k % 3]
        k = k + 2
    return np.sum(np.sin(y))


def copied_alias(a):
    # z shares y's memory but is dead after the write: allowed; the adjoint reads z's
    # values from before the write, so the write copies y first
    y = np.zeros(3)
    y[0] = a
    z = y
    s = np.sum(np.sin(z))
    y[1] = a * a
    return s + np.sum(y * 3.0)


def scale(v):
    return np.sin(v) * 2.0


def write_after_call(x):
    y = x * 1.0
    s = np.sum(scale(y))
    y[0] = x[1] ** 2
    return s + np.sum(y * y)


def read_copy_then_use(x):
    # a number read out of a 1-d array stays a number: using it after a write is fine
    y = x * 2.0
    first = y[0] * 1.0
    y[0] = x[2]
    return np.sum(y) * first


def copy_then_write(x):
    # the way to change an argument: write into a copy
    y = x.copy()
    y[1:] = y[:-1] * 0.5 + x[1:]   # the value reads the array it is written into
    z = np.zeros_like(x)
    z[:] = np.cos(y)
    return np.sum(z * y)


def prefix_sums(v):
    out = np.zeros_like(v)
    out[0] = v[0]
    for i in range(1, v.shape[0]):
        out[i] = out[i - 1] + v[i] * v[i]
    return out


def uses_a_helper_that_writes(x):
    s = prefix_sums(x * 2.0)
    return np.sum(np.sin(s))


def write_a_list(a):
    y = np.zeros(3)
    y[0:2] = [a, a * a]
    return np.sum(np.sin(y) * np.array([1.0, 2.0, 3.0]))


def write_a_constant(x):
    # an array result: the written item gets no gradient (pb.grad sums the result)
    y = x * 2.0
    y[0] = 1.0
    return y


PROGRAMS = [
    (copy_then_write, (np.array([0.3, -0.7, 0.2, 1.1]),)),
    (uses_a_helper_that_writes, (np.array([0.3, -0.7, 0.2, 1.1]),)),
    (write_a_constant, (np.array([0.3, -0.7, 0.2]),)),
    (write_a_list, (0.5,)),
    (write_item, (np.array([0.3, -0.7]),)),
    (write_slice, (np.array([0.2, -0.4, 0.9]),)),
    (write_broadcast, (np.array([0.5, -1.2, 0.8]), 0.7)),
    (write_mask, (np.array([0.4, -0.3, 0.05, 0.9, -1.1]),)),
    (write_indices, (np.array([0.6, -0.2, 1.3]),)),
    (augmented_writes, (np.array([0.6, -0.2, 1.3, 0.4]),)),
    (overwrite_needed, (np.array([0.5, 0.3, -0.8]),)),
    (recurrence, (0.4, 1.3)),
    (rows_recurrence, (np.array([0.5, -0.3, 0.8]), RNG.standard_normal((3, 3)) * 0.8)),
    (write_in_branches, (np.array([0.5, -0.3, 0.8]), 2)),
    (write_then_grow, (np.array([0.5, -0.3, 0.8]),)),
    (copied_alias, (0.7,)),
    (write_after_call, (np.array([0.5, -0.3, 0.8]),)),
    (read_copy_then_use, (np.array([0.5, -0.3, 0.8]),)),
]
IDS = [fn.__name__ for fn, _ in PROGRAMS]


def _differentiated(args):
    """The positions of the float arguments (ints such as a loop bound are data)."""
    return tuple(i for i, a in enumerate(args) if not isinstance(a, int))


def central_differences(fn, args, argnum, eps=1e-6):
    args = [np.array(a, dtype=np.float64) if not isinstance(a, int) else a for a in args]
    x = args[argnum]
    flat = x.reshape(-1)
    grad = np.zeros(flat.size)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + eps
        up = float(np.sum(fn(*args)))
        flat[k] = old - eps
        down = float(np.sum(fn(*args)))
        flat[k] = old
        grad[k] = (up - down) / (2 * eps)
    return grad.reshape(x.shape)


def fresh(args):
    return [np.array(a) if isinstance(a, np.ndarray) else a for a in args]


@pytest.mark.parametrize("fn, args", PROGRAMS, ids=IDS)
def test_gradient_equals_central_differences(fn, args):
    argnums = _differentiated(args)
    inputs = fresh(args)
    value, grads = pb.value_and_grad(fn, argnums=argnums)(*inputs)
    for a, b in zip(inputs, args, strict=True):   # the caller's arrays are never written
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.sum(value), np.sum(fn(*fresh(args))), rtol=1e-12)
    for g, k in zip(grads, argnums, strict=True):
        expected = central_differences(fn, args, k)
        assert np.shape(g) == np.shape(expected)
        np.testing.assert_allclose(g, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("fn, args", PROGRAMS, ids=IDS)
def test_fused_equals_unfused(fn, args, monkeypatch):
    argnums = _differentiated(args)
    fused = pb.value_and_grad(fn, argnums=argnums)(*fresh(args))
    monkeypatch.setenv("PULLBACK_FUSE", "0")
    copy = type(fn)(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__)
    unfused = pb.value_and_grad(copy, argnums=argnums)(*fresh(args))
    np.testing.assert_allclose(fused[0], unfused[0], rtol=1e-13)
    for a, b in zip(fused[1], unfused[1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("fn, args", PROGRAMS, ids=IDS)
def test_jvp_equals_central_differences(fn, args):
    argnums = _differentiated(args)
    k = argnums[0]
    direction = RNG.standard_normal(np.shape(args[k]))
    tangents = tuple(np.zeros_like(np.asarray(args[i], dtype=float)) if i != k
                     else (direction if np.ndim(args[i]) else float(direction))
                     for i in argnums)
    primals = tuple(fresh(args))
    full = [None] * len(args)
    for i, t in zip(argnums, tangents, strict=True):
        full[i] = t
    value, tangent = pb.jvp(fn, primals, tuple(full))
    expected = np.sum(central_differences(fn, args, k) * direction)
    np.testing.assert_allclose(value, fn(*fresh(args)), rtol=1e-12)
    np.testing.assert_allclose(np.sum(tangent), expected, rtol=1e-6, atol=1e-8)


def vector_writes(x):
    y = np.zeros((2, 3))
    y[0] = np.sin(x)
    y[1, 1:] = x[:2] * x[2]
    y[y > 0.3] *= 2.0
    return y.reshape(-1) * 1.0


def test_jacfwd_and_jacrev_of_writes():
    x = np.array([0.5, -0.3, 0.8])
    jf = pb.jacfwd(vector_writes)(x)   # batched tangents: the key shifts past the batch axis
    jr = pb.jacrev(vector_writes)(x)
    numeric = np.stack([central_differences(lambda v, j=j: vector_writes(v)[j], (x,), 0)
                        for j in range(6)])
    np.testing.assert_allclose(jf, numeric, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(jr, numeric, rtol=1e-6, atol=1e-8)


def test_pullback_called_twice_gives_the_same_gradient():
    # the adjoint never changes the forward's arrays: restoring old items makes copies
    x = np.array([0.5, 0.3, -0.8])
    out, pullback = pb.vjp(overwrite_needed, x)
    first = pullback(1.0)
    second = pullback(1.0)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_allclose(first[0], central_differences(overwrite_needed, (x,), 0),
                               rtol=1e-6)


@pb.compile
def compiled_recurrence(x0, w):
    y = nd.zeros(6, dtype='float64')
    y[0] = x0[0]
    for i in range(1, 6):
        y[i] = nd.sin(y[i - 1]) * w[0] + 0.1
    return nd.sum(y * y)


def test_record_and_backward_through_a_compiled_call():
    x0 = nd.array(np.array([0.4]))
    w = nd.array(np.array([1.3]))
    x0.attach_grad()
    w.attach_grad()
    with ag.record():
        out = compiled_recurrence(x0, w)
    out.backward()
    np.testing.assert_allclose(out.asnumpy(), recurrence(0.4, 1.3), rtol=1e-12)
    np.testing.assert_allclose(x0.grad.asnumpy(), central_differences(recurrence, (0.4, 1.3), 0)
                               .reshape(1), rtol=1e-6)
    np.testing.assert_allclose(w.grad.asnumpy(), central_differences(recurrence, (0.4, 1.3), 1)
                               .reshape(1), rtol=1e-6)


def test_the_tape_refuses_a_recorded_value_written_into_an_array():
    # the reference for the eager road: MXNet-style record() refuses the write (the
    # compiled road above follows it)
    x = nd.array([1.0, 2.0])
    x.attach_grad()
    y = nd.zeros(3)
    with ag.record():
        v = x * 2
        with pytest.raises(pb.AutogradError, match="not recorded"):
            y[0:2] = v


# ----- what is saved ---------------------------------------------------------------------------

def long_recurrence(x0, w):
    y = np.zeros(200)
    y[0] = x0
    for i in range(1, 200):
        y[i] = y[i - 1] * w + 0.5
    return y[199] + y[100] * 2.0


def long_recurrence_needing_values(x0, w):
    y = np.zeros(200)
    y[0] = x0
    for i in range(1, 200):
        y[i] = y[i - 1] * w + 0.5
        w = w * 0.999 + np.sum(y * y) * 1e-6   # reads all of y after each write
    return np.sum(y)


def _overwritten(stack):
    from pullback.runtime.support import Overwritten
    return [v for v in stack._items if isinstance(v, Overwritten)]


def test_a_recurrence_saves_no_overwritten_items():
    # the adjoint reads y only for its shape (index_grad): no overwritten items saved
    stack = saved_by_forward(long_recurrence, 0.3, 0.9, argnums=(0, 1))
    assert _overwritten(stack) == []
    g = pb.grad(long_recurrence, argnums=(0, 1))(0.3, 0.9)
    for k in (0, 1):
        np.testing.assert_allclose(g[k], central_differences(long_recurrence, (0.3, 0.9), k),
                                   rtol=1e-6, atol=1e-8)


def test_values_the_adjoint_reads_save_only_the_overwritten_items():
    # y * y reads y's values after every write: each write saves its one old item
    stack = saved_by_forward(long_recurrence_needing_values, 0.3, 0.9, argnums=(0, 1))
    saved = _overwritten(stack)
    assert len(saved) == 200 and all(v.values.size == 1 for v in saved)
    g = pb.grad(long_recurrence_needing_values, argnums=(0, 1))(0.3, 0.9)
    for k in (0, 1):
        np.testing.assert_allclose(
            g[k], central_differences(long_recurrence_needing_values, (0.3, 0.9), k),
            rtol=1e-5)


# ----- refused ---------------------------------------------------------------------------------

def into_an_argument(x):
    x[0] = 1.0
    return np.sum(x)


def into_an_alias_of_an_argument(x):
    y = x
    y[0] = 1.0
    return np.sum(y)


def into_a_view_of_an_argument(x):
    v = x[1:]
    v[0] = 3.0
    return np.sum(v * x[0])


def alias_used_after(a):
    y = np.zeros(3)
    b = y
    b[0] = a
    return np.sum(y * a)


def view_used_after(a):
    y = np.zeros((2, 3))
    row = y[0]
    y[0, 1] = a
    return np.sum(row * a)


def write_into_a_view_used_after(a):
    y = np.zeros(4)
    v = y[1:]
    v[0] = a
    return np.sum(y * a)


def reshaped_used_after(a):
    y = np.zeros(4)
    m = y.reshape(2, 2)
    y[0] = a
    return np.sum(m * a)


def held_by_a_list(a):
    y = np.zeros(2)
    ys = [y]
    y[0] = a
    return np.sum(ys[0] * a)


@pytest.mark.parametrize("fn, line, what", [
    (into_an_argument, "x[0] = 1.0", "writes into an argument"),
    (into_an_alias_of_an_argument, "y[0] = 1.0", "caller also refers to"),
    (into_a_view_of_an_argument, "v[0] = 3.0", "caller also refers to"),
    (alias_used_after, "b[0] = a", "y may share"),
    (view_used_after, "y[0, 1] = a", "row may share"),
    (write_into_a_view_used_after, "v[0] = a", "y may share"),
    (reshaped_used_after, "y[0] = a", "m may share"),
    (held_by_a_list, "y[0] = a", "ys may share"),
], ids=lambda v: getattr(v, "__name__", None))
def test_writes_another_name_would_see_are_refused(fn, line, what):
    x = np.array([0.5, 0.2, 0.1])
    args = (x,) if fn.__name__.startswith("into") else (0.5,)
    with pytest.raises(pb.CompileError, match=what) as info:
        pb.grad(fn)(*args)
    assert line in str(info.value)
    assert f"line {fn.__code__.co_firstlineno + 1 + _offset(fn, line)}" in str(info.value)


def _offset(fn, line):
    import inspect
    body = inspect.getsource(fn).splitlines()[1:]
    return next(k for k, text in enumerate(body) if line in text)


GLOBAL_ARRAY = np.zeros(3)


def into_a_global(a):
    GLOBAL_ARRAY[0] = a
    return np.sum(GLOBAL_ARRAY)


def test_a_write_into_a_global_is_refused():
    with pytest.raises(pb.CompileError, match="or a global"):
        pb.grad(into_a_global)(0.5)


def into_an_int_array(a):
    y = np.zeros(3, dtype=np.int64)
    y[0] = a
    return np.sum(y * a)


def repeated_indices(x):
    y = np.zeros(3)
    y[[0, 1, 0]] = x
    return np.sum(y * y)


def test_a_differentiated_value_cast_into_an_int_array_is_refused():
    with pytest.raises(TypeError, match="cast"):
        pb.grad(into_an_int_array)(0.5)


def test_repeated_indices_are_refused():
    with pytest.raises(ValueError, match="repeats an element"):
        pb.grad(repeated_indices)(np.array([0.1, 0.2, 0.3]))


def test_a_function_with_writes_stays_on_the_python_road_and_says_why():
    def scalar_writes(a):
        y = np.zeros(3)
        y[0] = a
        y[1] += a * a
        return y[0] * a + y[1]

    np.testing.assert_allclose(pb.grad(scalar_writes)(0.5), 2.0)
    assert "Python road" in pb.explain(scalar_writes, 0.5)


def list_slice_write(a):
    xs = [a, a * 2.0, 3.0]
    xs[0:2] = [a]
    return xs[0] * xs[1]


def test_a_slice_write_into_a_list_is_refused():
    with pytest.raises(pb.CompileError, match=r"xs\[i:j\] = \.\.\. on a list") as info:
        pb.grad(list_slice_write)(0.5)
    assert "xs[0:2] = [a]" in str(info.value)


# ----- random write programs (hypothesis, fixed seed, bounded) ---------------------------------

import importlib.util  # noqa: E402
import itertools  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def _scalars(draw, loop, depth=2):
    """A number-valued expression over x, buf and the loop's i."""
    atoms = [f"x[{draw(st.integers(0, 3))}]", f"buf[{draw(st.integers(0, 5))}]", "0.7"]
    if loop:
        atoms.append(f"buf[i + {draw(st.integers(0, 2))}]")
    if depth == 0 or draw(st.booleans()):
        return draw(st.sampled_from(atoms))
    a, b = draw(_scalars(loop, depth - 1)), draw(_scalars(loop, depth - 1))
    return draw(st.sampled_from([f"np.sin({a})", f"({a} * 0.5)", f"({a} + {b})",
                                 f"({a} * {b})", f"np.tanh({a} - {b})"]))


@st.composite
def _writes(draw, pad, loop, depth, aliases):
    """Statements writing into ``buf`` (and, adversarially, through ``aliases``: names
    bound at the top level to ``buf`` itself or to a view of it, read or written later)."""
    lines = []
    for _ in range(draw(st.integers(1, 3))):
        kinds = ["item", "item", "slice", "update", "mask", "read"]
        kinds += ["if", "for"] if depth > 0 else []
        kinds += ["alias"] if pad == "    " else []
        kinds += ["through"] * 2 if aliases else []
        kind = draw(st.sampled_from(kinds))
        value = draw(_scalars(loop))
        k = f"i + {draw(st.integers(0, 3))}" if loop and draw(st.booleans()) \
            else str(draw(st.integers(0, 5)))
        a = draw(st.integers(0, 4))
        b = draw(st.integers(a + 1, 6))
        if kind == "item":
            lines.append(f"{pad}buf[{k}] = {value}")
        elif kind == "slice":
            rhs = draw(st.sampled_from([value, f"np.sin(buf[{a}:{b}]) * {value}",
                                        f"x[:{min(b - a, 4)}].sum() * buf[{a}:{b}]"]))
            lines.append(f"{pad}buf[{a}:{b}] = {rhs}")
        elif kind == "update":
            op = draw(st.sampled_from(["+=", "-=", "*="]))
            target = draw(st.sampled_from([f"buf[{k}]", f"buf[{a}:{b}]"]))
            lines.append(f"{pad}{target} {op} {value}")
        elif kind == "mask":
            lines.append(f"{pad}buf[buf > 0.3] = {value}")
        elif kind == "read":
            lines.append(f"{pad}acc = acc + np.sum(buf[{a}:{b}] * {value})")
        elif kind == "alias":
            name = f"al{len(aliases)}"
            lines.append(f"{pad}{name} = " + draw(st.sampled_from(
                ["buf", f"buf[{a}:{b}]", "buf.reshape(2, 3)", f"buf[{a}:{b}].copy()"])))
            aliases.append(name)
        elif kind == "through":
            name = draw(st.sampled_from(aliases))
            lines.append(draw(st.sampled_from([f"{pad}acc = acc + np.sum({name} * {value})",
                                               f"{pad}{name}[0] = {value}"])))
        elif kind == "if":
            lines.append(f"{pad}if {value} > 0.2:")
            lines += draw(_writes(pad + "    ", loop, depth - 1, aliases))
            lines.append(f"{pad}else:")
            lines += draw(_writes(pad + "    ", loop, depth - 1, aliases))
        elif kind == "for" and not loop:
            lines.append(f"{pad}for i in range(3):")
            lines += draw(_writes(pad + "    ", True, depth - 1, aliases))
        else:
            lines.append(f"{pad}buf[{a}] = {value}")
    return lines


@st.composite
def write_programs(draw, adversarial=False):
    body = ["def program(x):", "    buf = np.zeros(6)", "    buf[0:4] = x * 1.5",
            "    acc = 0.0"]
    aliases = [] if adversarial else None
    if adversarial:
        body.append("    al = " + draw(st.sampled_from(["buf", "buf[1:4]", "buf.reshape(3, 2)"])))
        aliases.append("al")
    body += draw(_writes("    ", False, 2, aliases if adversarial else []))
    body.append("    return np.sum(np.sin(buf) * np.arange(1.0, 7.0)) + acc")
    return "import numpy as np\n\n\n" + "\n".join(body) + "\n"


_programs = itertools.count()


def _load_program(tmp_path_factory, source):
    path = tmp_path_factory.getbasetemp() / f"write_program_{next(_programs)}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.program


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(write_programs())
def test_random_write_programs(tmp_path_factory, source):
    fn = _load_program(tmp_path_factory, source)
    x = np.array([0.45, -0.35, 0.8, 0.15])
    try:
        value, grad = pb.value_and_grad(fn)(x.copy())
        np.testing.assert_allclose(value, fn(x.copy()), rtol=1e-12)
        np.testing.assert_allclose(grad, central_differences(fn, (x,), 0), rtol=1e-5,
                                   atol=1e-7)
        direction = np.array([0.3, -1.0, 0.5, 0.8])
        _, tangent = pb.jvp(fn, (x.copy(),), (direction,))
        np.testing.assert_allclose(tangent, np.sum(grad * direction), rtol=1e-9, atol=1e-12)
    except Exception:
        print(source)
        raise


_REFUSED = []


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(write_programs(adversarial=True))
def test_writes_through_aliases_and_views_are_followed_exactly_or_refused(tmp_path_factory,
                                                                          source):
    # the aliasing rule, adversarially: a program whose writes another name sees is either
    # refused (a CompileError at one of its lines) or gives Python's value and the central
    # differences' gradient -- never a silently different result
    fn = _load_program(tmp_path_factory, source)
    x = np.array([0.45, -0.35, 0.8, 0.15])
    try:
        value, grad = pb.value_and_grad(fn)(x.copy())
    except pb.CompileError as error:
        assert "write_program_" in str(error) and "line" in str(error)
        _REFUSED.append(source)
        return
    try:
        np.testing.assert_allclose(value, fn(x.copy()), rtol=1e-12)
        np.testing.assert_allclose(grad, central_differences(fn, (x,), 0), rtol=1e-5,
                                   atol=1e-7)
    except AssertionError:
        print(source)
        raise


def recurrence_then_square(x, w):
    y = np.zeros(4)
    y[0] = x[0]
    for i in range(1, 4):
        y[i] = np.tanh(y[i - 1] * w + x[i])
    y[1:3] += x[0] * x[1]
    return np.sum(y * y)


def test_hvp_through_array_writes_matches_differences_of_gradients():
    """Forward-over-reverse through writes: the saved items' tangents are put back
    (dual._restore_tangent) and tangent arrays are written into copies, never in place."""
    x, w = np.array([0.3, -0.2, 0.5, 0.1]), 0.7
    v = np.array([0.4, -1.0, 0.25, 0.5])
    gradient, got = pb.hvp(recurrence_then_square, (x, w), (v, None))
    grad = pb.grad(recurrence_then_square)
    h = 1e-5
    want = (grad(x + h * v, w) - grad(x - h * v, w)) / (2 * h)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gradient, grad(x, w), rtol=1e-12)
    np.testing.assert_array_equal(x, [0.3, -0.2, 0.5, 0.1])   # arguments untouched
