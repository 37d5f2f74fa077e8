"""Unsupported constructs: one CompileError each, at the right line, with a caret."""

import inspect

import pytest

import pullback as pb
from pullback import nd


def uses_try(x):
    try:
        y = x * 2
    except ValueError:
        y = x
    return y


def uses_with(x):
    with open("f") as handle:
        y = x * len(handle.name)
    return y


def uses_yield(x):
    yield x * 2


def uses_global(x):
    global COUNTER
    COUNTER = 1
    return x


def uses_nonlocal_helper():
    total = 0

    def inner(x):
        nonlocal total
        total = 1
        return x

    return inner


def uses_del(x):
    y = x * 2
    del y
    return x


def uses_class(x):
    class Local:
        pass

    return x


def writes_nested_item(x):
    y = x * 1
    y.T[0] = 5.0
    return y


def unknown_call(x):
    return sorted(x)


async def uses_async(x):
    return x


def uses_lambda_inside(x):
    return sorted([x, x * 2], key=lambda v: -v)[0]   # called and bound lambdas are inlined


def starred_elsewhere(x):
    return nd.maximum(*[x, x * 2])   # only nd.concat(*seq) and nd.stack(*seq) take *seq


def starred_after_positional(x):
    return nd.concat(x, *[x * 2], dim=0)


CASES = [
    (uses_try, "try", "try"),
    (uses_with, "with", "with"),
    (uses_yield, "yield", "yield"),
    (uses_global, "global", "global"),
    (uses_nonlocal_helper(), "nonlocal", "nonlocal"),
    (uses_del, "del", "del"),
    (uses_class, "class", "class"),
    (writes_nested_item, "y.T[0] = 5.0", "attributes' items"),
    (unknown_call, "sorted(x)", "no gradient rule"),
    (uses_lambda_inside, "lambda", "lambda"),
    (starred_elsewhere, "*[x, x * 2]", "*args"),
    (starred_after_positional, "*[x * 2]", "*args"),
]


@pytest.mark.parametrize("fn,construct,words", CASES, ids=[c[0].__name__ for c in CASES])
def test_unsupported_construct_reports_line(fn, construct, words):
    with pytest.raises(pb.CompileError) as info:
        pb.grad(fn)(nd.array([1.0, 2.0]))
    message = str(info.value)
    lines, first = inspect.getsourcelines(fn)
    expected_line = next(first + i for i, text in enumerate(lines)
                         if construct in text and i > 0)
    assert f"{inspect.getsourcefile(fn)}\", line {expected_line}" in message
    assert words in message
    source_line, caret_line = message.splitlines()[1:3]
    assert construct.split()[0] in source_line
    assert caret_line.strip() == "^"
    column = caret_line.index("^")
    assert source_line[column:].startswith(construct.split()[0][:1])


def test_async_function_rejected():
    with pytest.raises(pb.CompileError, match="async|coroutine|plain function"):
        pb.grad(uses_async)(nd.array([1.0]))


def test_fallback_tape_runs_unsupported_function_eagerly():
    from pullback import autograd as ag

    compiled = pb.compile(uses_try, fallback="tape")
    x = nd.array([1.0, 2.0])
    x.attach_grad()
    with ag.record():
        y = compiled(x)
    y.backward()
    assert x.grad.asnumpy().tolist() == [2.0, 2.0]


def test_without_fallback_compiled_call_raises_under_record():
    from pullback import autograd as ag

    compiled = pb.compile(uses_try)
    x = nd.array([1.0, 2.0])
    x.attach_grad()
    with ag.record(), pytest.raises(pb.CompileError, match="try"):
        compiled(x)


def test_invalid_fallback_value():
    with pytest.raises(ValueError, match="fallback"):
        pb.compile(uses_try, fallback="eager")
