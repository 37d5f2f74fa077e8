"""Containers as values (issue 11, item 2): dicts, lists and tuples (nested) as
differentiated arguments, locals and results.  Every form: compiled gradient = the eager
tape's (where the tape runs it) = central differences in float64, and the gradient has
the argument's structure.  Whatever the compiler cannot follow is a CompileError."""

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd


# ----- the functions (operators and nd: the tape runs them too) ------------------------------

def dict_product(v):
    return v['a'] * v['b']


def pair_product(t):
    return t[0] * t[1] + t[1]


def nested_structure(v):
    w = v['w']
    return w[0] * w[1] + v['b'] * v['b'] * 0.5 + v['c'][1]['z'] * w[0]


def dict_by_keywords(a):
    d = dict(x=a, y=a * a)
    return d['x'] * 2.0 + d['y']


def dict_literal_and_items(a, b):
    d = {'x': a, 'y': a * b}
    s = 0.0
    for k, v in d.items():
        s = s + v * v
    return s


def dict_values_and_keys(a, b):
    d = {'x': a, 'y': b, 'z': a * b}
    s = 0.0
    for v in d.values():
        s = s + v * v
    for k in d.keys():
        s = s + d[k]
    return s


def iterate_over_a_dict(v):
    s = 0.0
    for k in v:
        s = s + v[k] * v[k]
    return s + len(v)


def item_assignment(a, b):
    d = {}
    d['x'] = a
    d['y'] = a * b
    d['x'] = d['x'] * b   # overwritten: the old item's gradient goes only through here
    return d['x'] + d['y']


def item_update_in_a_loop(a):
    d = {'total': 0.0}
    for i in range(3):
        d['total'] += a * (i + 1)
    return d['total'] * a


def computed_keys(a, b):
    keys = ['p', 'q']
    d = {}
    for i in range(2):
        d[keys[i]] = a * (i + 1.0)
    e = {keys[0]: b, keys[1]: a}   # a display with computed keys
    return d['p'] * d['q'] + e['p'] * e['q']


def repeated_key_keeps_the_last(a, b):
    k = 'x'
    d = {k: a, 'x': b}
    return d['x'] * 3.0


def dict_get(v, b):
    return v.get('a') * v.get('missing', b) + v.get('a', b)


def list_item_assignment(a, b):
    s = [a, b, a * b]
    s[1] = s[0] * s[2]
    s[-1] = b
    return s[0] + s[1] * s[2]


def list_append_and_len(a):
    s = []
    for i in range(4):
        s.append(a * (i + 1.0))
    total = 0.0
    for x in s:
        total = total + x * x
    return total / len(s)


def tuple_targets(a, b):
    pairs = [(a, b), (b, a * b)]
    s = 0.0
    for x, y in pairs:
        s = s + x * y
    return s


def params_dict_model(params, x):
    h = nd.tanh(nd.dot(x, params['W']) + params['b'])
    return nd.sum(h * h)


def list_of_layers(layers, x):
    h = x
    for layer in layers:
        h = nd.tanh(h * layer[0] + layer[1])
    return nd.sum(h)


def dict_helper(d, x):
    return d['w'] * x + d['c']


def passes_a_dict_to_a_helper(a, b):
    d = {'w': a, 'c': b * b}
    return dict_helper(d, b) + dict_helper({'w': b, 'c': a}, a)


def dict_argument_to_a_helper(v):
    return dict_helper(v, 2.0) * v['w']


def returns_a_dict(a):
    return {'p': a * a, 'q': a * 3.0}


def returns_a_tuple_of_dicts(a):
    d = {'p': a * a}
    return d['p'], a * 2.0


# ----- numpy functions (compiled vs central differences) --------------------------------------

def numpy_sum_of_a_list(a):
    return np.sum([1.0, a * a, 2.0])


def numpy_dict_of_arrays(v):
    return np.sum(np.sin(v['x']) * v['y']) + np.dot(v['x'], v['x'])


def numpy_list_argument_as_array(v):
    return np.sum(v) * v[0] + np.prod(v)


def pop_and_extend(a, b):
    s = [a, b, a * b, b * b]
    last = s.pop()
    first = s.pop(0)
    s.extend([a * 3.0, b])
    s.extend((first,))
    d = {'x': a, 'y': b, 'z': 2.0}
    y = d.pop('y')
    w = d.pop('missing', a * a)
    d.pop('z')
    return last * first + s[0] * s[-1] + len(s) * s[2] + y * w + d['x'] + len(d)


# loop-carried containers: saved and restored by the stack (never changed in place)
def numpy_rnn_dict(x, w):
    d = {'h': x}
    for i in range(3):
        d = {'h': np.tanh(d['h'] * w) + x}
    return np.sum(d['h'])
def numpy_rnn_setitem(x, w):
    d = {'h': x, 'n': 0}
    for i in range(3):
        d['h'] = np.tanh(d['h'] * w) + d['h']
        d['n'] = d['n'] + 1
    return np.sum(d['h']) * d['n']
def numpy_copy_items(v):
    e = {}
    for k, x in v.items():
        e[k] = x * x
    t = 0.0
    for k in e:
        t = t + e[k] * v[k]
    return t
def numpy_unpack_tuple(t):
    a, (b, c) = t
    return a * b * c
def numpy_list_param_loop(xs):
    s = 0.0
    for i in range(len(xs)):
        s = s + xs[i] * (i + 1.0)
    return s * xs[-1]
def numpy_slice_of_list(xs):
    ys = xs[1:]
    return ys[0] * ys[1] + xs[0]


# ----- references ------------------------------------------------------------------------------

def _leaves(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(value, (list, tuple)):
        for k, v in enumerate(value):
            yield from _leaves(v, path + (k,))
    else:
        yield path, value


def _replace(value, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        out = dict(value)
        out[head] = _replace(value[head], rest, new)
        return out
    out = list(value)
    out[head] = _replace(value[head], rest, new)
    return type(value)(out)


def _get(value, path):
    for p in path:
        value = value[p]
    return value


def _central(fn, args, k, eps=1e-6):
    """Central differences of sum(fn(*args)) for every leaf of ``args[k]``: {path: grad}."""
    def total(moved):
        out = fn(*moved)
        return sum(np.sum(v) for _, v in _leaves(out))

    found = {}
    for path, leaf in _leaves(args[k]):
        x = np.asarray(leaf, dtype=np.float64)
        g = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            up, down = x.copy(), x.copy()
            up[idx] += eps
            down[idx] -= eps
            moved_up, moved_down = list(args), list(args)
            moved_up[k] = _replace(args[k], path, up if x.ndim else float(up))
            moved_down[k] = _replace(args[k], path, down if x.ndim else float(down))
            g[idx] = (total(moved_up) - total(moved_down)) / (2 * eps)
        found[path] = g
    return found


def _tape(fn, args):
    """The eager tape's gradients: every leaf an attached NDArray (numbers too)."""
    nd_args = [_map(lambda leaf: nd.array(np.atleast_1d(leaf)), a) for a in args]
    for a in nd_args:
        for _, leaf in _leaves(a):
            leaf.attach_grad()
    with ag.record():
        out = fn(*nd_args)
        heads = [v for _, v in _leaves(out)]
        total = heads[0] if len(heads) == 1 else nd.add_n(*heads) if hasattr(nd, "add_n") \
            else sum(heads[1:], heads[0])
    total.backward()
    return [{path: leaf.grad.asnumpy() for path, leaf in _leaves(a)} for a in nd_args]


def _map(fn, value):
    if isinstance(value, dict):
        return {k: _map(fn, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map(fn, v) for v in value)
    return fn(value)


def _same_structure(got, like):
    assert type(got) is type(like) or (not isinstance(like, (dict, list, tuple))), (got, like)
    if isinstance(like, dict):
        assert list(got) == list(like)
        for k in like:
            _same_structure(got[k], like[k])
    elif isinstance(like, (list, tuple)):
        assert len(got) == len(like)
        for g, v in zip(got, like, strict=True):
            _same_structure(g, v)
    elif isinstance(like, float):
        assert isinstance(got, float), got
    else:
        assert isinstance(got, np.ndarray) and got.shape == np.shape(like), got


rng = np.random.default_rng(11)
W, B, X = rng.normal(size=(3, 2)), rng.normal(size=2), rng.normal(size=(4, 3))

CASES = [   # (function, arguments, the tape runs it)
    (dict_product, ({'a': 2.0, 'b': 3.0},), True),
    (pair_product, ((2.0, 3.0),), True),
    (pair_product, ([2.0, np.array([0.5, -1.0])],), True),
    (nested_structure, ({'w': [1.5, np.array([2.0, 0.5])], 'b': np.array([1.0, -2.0]),
                         'c': (0.3, {'z': -0.7})},), True),
    (dict_by_keywords, (0.5,), True),
    (dict_literal_and_items, (0.5, -1.5), True),
    (dict_values_and_keys, (0.5, -1.5), True),
    (iterate_over_a_dict, ({'p': 0.5, 'q': np.array([1.0, -2.0])},), True),
    (item_assignment, (0.7, -1.3), True),
    (item_update_in_a_loop, (0.7,), True),
    (computed_keys, (0.7, -1.3), True),
    (repeated_key_keeps_the_last, (0.7, -1.3), True),
    (dict_get, ({'a': 1.5}, -0.5), True),
    (list_item_assignment, (0.7, -1.3), True),
    (list_append_and_len, (0.7,), True),
    (tuple_targets, (0.7, -1.3), True),
    (params_dict_model, ({'W': W, 'b': B}, X), True),
    (list_of_layers, ([(0.5, 0.1), (np.array([1.0, -1.0, 2.0]), -0.2)],
                      np.array([0.3, -0.4, 0.8])), True),
    (passes_a_dict_to_a_helper, (0.7, -1.3), True),
    (dict_argument_to_a_helper, ({'w': 0.7, 'c': -1.3},), True),
    (returns_a_dict, (0.7,), True),
    (returns_a_tuple_of_dicts, (0.7,), True),
    (pop_and_extend, (0.5, -1.3), True),
    (numpy_sum_of_a_list, (3.0,), False),
    (numpy_dict_of_arrays, ({'x': np.array([0.3, -0.2, 1.1]),
                             'y': np.array([1.0, 2.0, -0.5])},), False),
    (numpy_list_argument_as_array, ([0.5, -1.0, 2.0],), False),
    (numpy_rnn_dict, (np.array([0.3, -0.5]), np.array([1.2, 0.7])), False),
    (numpy_rnn_setitem, (np.array([0.3, -0.5]), np.array([1.2, 0.7])), False),
    (numpy_copy_items, ({'a': 0.5, 'b': np.array([1.0, 2.0])},), False),
    (numpy_unpack_tuple, ((0.5, (1.5, -2.0)),), False),
    (numpy_list_param_loop, ([0.5, 1.5, -2.0],), False),
    (numpy_slice_of_list, ([0.5, 1.5, -2.0],), False),
]
IDS = [f"{c[0].__name__}-{k}" for k, c in enumerate(CASES)]


@pytest.mark.parametrize("fn, args, on_tape", CASES, ids=IDS)
def test_compiled_equals_tape_equals_central_differences(fn, args, on_tape):
    nums = tuple(range(len(args)))
    grads = pb.grad(fn, argnums=nums)(*args)
    tape = _tape(fn, args) if on_tape else None
    for k, (g, a) in enumerate(zip(grads, args, strict=True)):
        _same_structure(g, a)
        numeric = _central(fn, args, k)
        for path, expected in numeric.items():
            got = np.asarray(_get(g, path))
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7, err_msg=str(path))
            if tape is not None:
                np.testing.assert_allclose(np.atleast_1d(got), tape[k][path], rtol=1e-10,
                                           atol=1e-12, err_msg=str(path))


def test_issue_snippets():
    assert pb.grad(dict_product)({'a': 2.0, 'b': 3.0}) == {'a': 3.0, 'b': 2.0}
    assert pb.grad(dict_by_keywords)(0.5) == pytest.approx(3.0)
    assert pb.grad(numpy_sum_of_a_list)(3.0) == pytest.approx(6.0)
    assert pb.grad(pair_product)((2.0, 3.0)) == (3.0, 3.0)
    assert pb.grad(pair_product)([2.0, 3.0]) == [3.0, 3.0]


def test_gradients_have_the_leaves_kinds():
    g = pb.grad(params_dict_model)({'W': nd.array(W), 'b': nd.array(B)}, nd.array(X))
    assert isinstance(g['W'], pb.NDArray) and isinstance(g['b'], pb.NDArray)
    g = pb.grad(params_dict_model)({'W': W, 'b': B}, nd.array(X))
    assert type(g['W']) is np.ndarray and g['W'].shape == W.shape
    g = pb.grad(dict_product)({'a': 2, 'b': np.float32(3.0)})   # an int leaf: a float
    assert g == {'a': 3.0, 'b': 2.0} and isinstance(g['a'], float)


def test_an_unused_leaf_gets_zeros_of_its_shape():
    g = pb.grad(dict_product)({'a': 2.0, 'b': 3.0, 'unused': np.ones(2)})
    assert g['a'] == 3.0 and np.array_equal(g['unused'], np.zeros(2))


def test_value_and_grad_and_vjp():
    value, g = pb.value_and_grad(dict_product)({'a': 2.0, 'b': 3.0})
    assert float(np.asarray(value.asnumpy() if isinstance(value, pb.NDArray) else value)
                 .reshape(-1)[0]) == 6.0
    assert g == {'a': 3.0, 'b': 2.0}
    out, back = pb.vjp(params_dict_model, {'W': W, 'b': B}, X, argnums=0)
    expected = pb.grad(params_dict_model)({'W': W, 'b': B}, X)
    got = back(np.ones_like(np.asarray(out)))
    np.testing.assert_allclose(got['W'], expected['W'])
    np.testing.assert_allclose(got['b'], expected['b'])


def test_the_callers_containers_are_not_changed():
    v = {'a': 2.0, 'b': [3.0, np.array([1.0])]}
    pb.grad(lambda_like_sum)(v)
    assert v == {'a': 2.0, 'b': v['b']} and v['b'][0] == 3.0 and type(v['b']) is list


def lambda_like_sum(v):
    return v['a'] * v['b'][0] + np.sum(v['b'][1])


def test_one_variant_per_structure():
    compiled = pb.compile(dict_product)
    assert pb.grad(compiled)({'a': 2.0, 'b': 3.0}) == {'a': 3.0, 'b': 2.0}
    assert pb.grad(compiled)({'a': 5.0, 'b': 3.0, 'c': 1.0}) == {'a': 3.0, 'b': 5.0, 'c': 0.0}
    assert pb.grad(compiled)({'b': 7.0, 'a': 3.0}) == {'b': 3.0, 'a': 7.0}


def test_returned_containers():
    value, _ = pb.value_and_grad(returns_a_dict)(0.5)
    assert set(value) == {'p', 'q'}
    out, back = pb.vjp(returns_a_tuple_of_dicts, 0.5)
    assert back((1.0, 0.0)) == (pytest.approx(1.0),)
    assert back((0.0, 1.0)) == (pytest.approx(2.0),)


def test_a_dict_on_the_eager_tape():
    a, b = nd.array([2.0]), nd.array([3.0])
    a.attach_grad()
    b.attach_grad()
    with ag.record():
        d = {'a': a, 'b': b}
        d['c'] = d['a'] * d['b']
        out = d['c'] + dict(x=a)['x']
    out.backward()
    assert a.grad.asscalar() == 4.0 and b.grad.asscalar() == 2.0


# ----- refused: a CompileError at the user's line (or a TypeError before running) -------------

def write_into_a_parameter_dict(v):
    v['a'] = v['a'] * 2.0
    return v['a']


def write_through_an_alias(a):
    d = {'x': a}
    e = d
    d['x'] = a * 2.0
    return e['x'] * a


def operator_on_a_list_parameter(v):
    return v * 2


def numpy_of_a_dict(v):
    return np.sum(v)


def a_dict_filled_by_a_helper(a):
    d = {}
    fill(d, a)
    return d['x'] * a


def fill(d, x):
    d['x'] = x


def updated(a):
    d = {'x': a, 'y': a * 2.0}
    d.update(y=1.0)
    return d['x'] * a


def pop_from_a_parameter(xs):
    last = xs.pop()
    return last * xs[0]


REFUSED = [
    (write_into_a_parameter_dict, {'a': 1.0}, "the caller"),
    (write_through_an_alias, 0.5, "also refers to"),
    (operator_on_a_list_parameter, [1.0, 2.0], "is a list or tuple"),
    (numpy_of_a_dict, {'a': 1.0}, "is a dict"),
    (a_dict_filled_by_a_helper, 0.5, "result of fill"),
    (updated, 0.5, "update"),
    (pop_from_a_parameter, [1.0, 2.0], "the caller"),
]


@pytest.mark.parametrize("fn, arg, words", REFUSED, ids=[r[0].__name__ for r in REFUSED])
def test_what_the_compiler_cannot_follow_is_refused(fn, arg, words):
    with pytest.raises(pb.CompileError, match=words) as info:
        pb.grad(fn)(arg)
    assert __file__ in str(info.value)


def named_leaf(v):
    return v['x'] * 2.0


def test_a_leaf_that_is_not_a_number_is_a_type_error():
    with pytest.raises(TypeError, match="cannot differentiate with respect to a str"):
        pb.grad(named_leaf)({'x': 1.0, 'name': 'w'})
    with pytest.raises(TypeError, match="key of type"):
        pb.grad(named_leaf)({'x': 1.0, (1, 2): 2.0})


# ----- under record(): a pytree argument's NDArrays are inputs of the one tape node ---------

@pytest.mark.parametrize("fn, args", [(params_dict_model, ({'W': W, 'b': B}, X)),
                                      (list_of_layers, ([(0.5, 0.1),
                                                         (np.array([1.0, -1.0, 2.0]), -0.2)],
                                                        np.array([0.3, -0.4, 0.8]))),
                                      (nested_structure, ({'w': [1.5, np.array([2.0, 0.5])],
                                                           'b': np.array([1.0, -2.0]),
                                                           'c': (0.3, {'z': -0.7})},))],
                         ids=["dict", "list of tuples", "nested"])
def test_compiled_under_record_fills_the_leaves_gradients(fn, args):
    compiled = pb.compile(fn)
    expected = _tape(fn, args)
    nd_args = [_map(lambda leaf: nd.array(np.atleast_1d(leaf)), a) for a in args]
    for a in nd_args:
        for _, leaf in _leaves(a):
            leaf.attach_grad()
    with ag.record():
        out = compiled(*nd_args)
    assert out._node is not None and out._node.prim.name == "compiled_call"   # one node
    out.backward()
    for k, a in enumerate(nd_args):
        for path, leaf in _leaves(a):
            np.testing.assert_allclose(leaf.grad.asnumpy(), expected[k][path], rtol=1e-10,
                                       atol=1e-12, err_msg=str(path))


def test_compiled_under_record_with_only_some_leaves_attached():
    compiled = pb.compile(params_dict_model)
    w, b = nd.array(W), nd.array(B)
    w.attach_grad()
    with ag.record():
        out = compiled({'W': w, 'b': b}, nd.array(X))
    out.backward()
    expected = _tape(params_dict_model, ({'W': W, 'b': B}, X))[0][('W',)]
    np.testing.assert_allclose(w.grad.asnumpy(), expected, rtol=1e-10)


def test_compiled_under_record_with_create_graph():
    compiled = pb.compile(dict_product)
    a, b = nd.array([2.0]), nd.array([3.0])
    a.attach_grad()
    b.attach_grad()
    with ag.record():
        out = compiled({'a': a * a, 'b': b})
        ga = ag.grad([out], [a], create_graph=True)[0]   # d/da a^2 b = 2ab
        total = ga * b
    total.backward()   # d/db 2ab^2 = 4ab
    assert ga.asscalar() == pytest.approx(12.0) and b.grad.asscalar() == pytest.approx(24.0)


def test_a_recorded_compiled_call_returning_a_dict_is_refused():
    a = nd.array([0.5])
    a.attach_grad()
    with ag.record(), pytest.raises(TypeError, match="returned a dict"):
        pb.compile(returns_a_dict)(a)
