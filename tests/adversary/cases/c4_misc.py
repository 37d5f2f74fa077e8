import numpy as np
rng = np.random.default_rng(4)
def R(*s): return rng.uniform(-1, 1, s)
CASES = []
def add(src, args, argnums=None, **kw): CASES.append((src, args, argnums, kw))
add('''
def f(x):
    return x[[0, 0, 2]] * 2.0
''', [R(4)])
add('''
def f(x):
    idx = nd.array([0, 0, 1], dtype="int64")
    return x[idx] * x[idx]
''', [R(4)])
add('''
def f(x):
    return x[x > 0] * 3.0
''', [R(6)])
add('''
def f(x):
    return x[::-1] * x + x[-2:].sum()
''', [R(5)])
add('''
def f(x):
    return x[..., 1] * x[:, None, 0]
''', [R(3, 2)])
add('''
def f(x):
    s = 0.0
    for i in range(0):
        s = s + x
    return x * 2.0 + s
''', [R(3)])
add('''
def f(x):
    s = 0.0
    for row in x:
        s = s + row * row
    return s
''', [R(3, 2)])
add('''
def f(x):
    s = x * 0.0
    for i, row in enumerate(x):
        s = s + row * i
    return s
''', [R(3, 2)])
add('''
def f(x, y):
    s = x[0] * 0.0
    for a, b in zip(x, y):
        s = s + a * b
    return s
''', [R(3, 2), R(3, 2)])
add('''
def f(x):
    s = x * 1.0
    for i in range(5, 0, -2):
        s = s * i + x
    return s
''', [R(3)])
add('''
def f(x):
    s = x * 1.0
    for i in reversed(range(3)):
        s = s * i + x
    return s
''', [R(3)])
add('''
def f(x):
    ys = [x * i for i in range(3)]
    return ys[0] + ys[1] * ys[2]
''', [R(3)])
add('''
def f(x):
    y = x * 2.0 if nd.sum(x).asscalar() > 0 else x * 3.0
    return y
''', [R(3)])
add('''
def f(x):
    n = x.shape[0]
    s = x * 0.0
    for i in range(n):
        s = s + x[i] * x
    return s
''', [R(4)])
add('''
def f(x):
    def inner(a):
        return a * x
    return inner(x) + inner(2.0)
''', [R(3)])
add('''
def f(x):
    g = lambda a: a * a + x
    return g(x) * g(1.0)
''', [R(3)])
add('''
def f(x, y):
    a = x
    b = a
    a = a * 2.0
    return a + b * y
''', [R(3), R(3)])
add('''
def f(x):
    y = x * 1.0
    y += x
    y *= x
    y -= 1.0
    y /= 2.0
    return y
''', [R(3)])
add('''
def f(x):
    y = x.copy()
    y[0] = y[1] * 3.0
    return y * x
''', [R(3)])
add('''
def f(x):
    y = nd.zeros((3,))
    for i in range(3):
        y[i] = x[i] * x[i]
    return y
''', [R(3)])
add('''
def f(x):
    y = x * 1.0
    y[1:] += x[:-1]
    return y
''', [R(3)])
add('''
def f(x):
    y = x.reshape((2, 3))
    z = y.T
    return nd.dot(z, y)
''', [R(6)])
add('''
def f(x):
    y = x.reshape((-1, 2)).sum(axis=1)
    return y * y
''', [R(6)])
add('''
def f(x, y):
    return nd.dot(x, y) + nd.sum(x)
''', [R(4), R(4)])
add('''
def f(x, y):
    return nd.dot(x, y)
''', [R(2, 3), R(3)])
add('''
def f(x):
    return nd.concat(x, x * 2.0, dim=0)
''', [R(3)])
add('''
def f(x):
    return nd.stack(x, x * 2.0, axis=1)
''', [R(3)])
add('''
def f(x):
    return nd.softmax(x) * nd.log_softmax(x)
''', [R(2, 3)])
add('''
def f(x):
    return nd.tile(x, (2,)) * nd.repeat(x, 2)
''', [R(3)])
add('''
def f(x):
    m = nd.max(x, axis=0)
    return m * nd.min(x, axis=1, keepdims=True)
''', [R(3, 4)])
add('''
def f(x):
    return nd.norm(x, axis=1) + nd.prod(x, axis=0).sum()
''', [R(3, 4)])
add('''
def f(x):
    return x.sum(axis=(0, 1)) * x
''', [R(2, 3)])
add('''
def f(x):
    return nd.expand_dims(x, 0) * nd.squeeze(x.reshape((1, 3)))
''', [R(3)])
add('''
def f(x):
    return nd.broadcast_to(x.reshape((1, 3)), (2, 3)) * 2.0
''', [R(3)])
add('''
def f(x, y):
    return nd.power(nd.abs(x) + 0.5, y)
''', [R(3), R(3)])
add('''
def f(x):
    return nd.log1p(nd.abs(x)) + nd.expm1(x) + nd.reciprocal(x + 2.0)
''', [R(3)])
add('''
def f(x):
    return (x % 0.3) * x
''', [R(3)])
add('''
def f(x):
    return nd.floor(x * 3.0) * x + nd.round(x) + nd.ceil(x)
''', [R(3)])
