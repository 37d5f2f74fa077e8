import numpy as np
rng = np.random.default_rng(1)
def R(*s): return rng.uniform(-1, 1, s)
CASES = []
def add(src, args, argnums=None, **kw): CASES.append((src, args, argnums, kw))

add('''
def f(x):
    s = x
    n = 0
    while nd.sum(s * s).asscalar() < 50.0:
        s = s * 1.5 + nd.sin(s)
        n += 1
    return s * n
''', [R(4)])
add('''
def f(x):
    s = x
    for i in range(10):
        if nd.sum(s).asscalar() > 3.0:
            break
        s = s + nd.exp(s * 0.1)
        if i % 2 == 0:
            continue
        s = s * 0.9
    return s
''', [R(4)])
add('''
def f(x, y):
    a, b = x, y
    for i in range(3):
        a, b = b, a * b + 1.0
    return a + b * 2.0
''', [R(3), R(3)])
add('''
def g(x, k=2.0):
    return x * k + nd.sin(x)

def f(x, y):
    return g(x) + g(y, 3.0) * g(x, k=0.5)
''', [R(3), R(3)])
add('''
def g(x, n):
    if n == 0:
        return x
    return g(nd.sin(x) * x, n - 1) + x

def f(x):
    return g(x, 3)
''', [R(3)])
add('''
def f(x):
    out = x
    for i in range(3):
        out = out * x
        x = x + 1.0
    return out + x
''', [R(3)])
add('''
def f(x):
    t = x * 2.0
    t = nd.sin(t)
    t = t * t
    t = t + x
    return t
''', [R(3)])
add('''
def f(x):
    y = x[1:] * x[:-1]
    return nd.sum(y) + x[0] * 3.0
''', [R(5)])
add('''
def f(x):
    y = x[::2] * 2.0 + x[1::2]
    return y
''', [R(6)])
add('''
def f(x):
    y = x[:, 0] * x[:, 1]
    return y + x[0, :].sum()
''', [R(3, 2)])
add('''
def f(x):
    total = x * 0.0
    i = 0
    while i < 3:
        total = total + x * i
        i = i + 1
        if i == 2:
            continue
        total = total * 1.1
    return total
''', [R(3)])
add('''
def f(x):
    acc = []
    for i in range(4):
        acc.append(x * i)
    s = acc[0]
    for v in acc:
        s = s + v * v
    return s
''', [R(3)])
add('''
def f(x):
    if nd.sum(x).asscalar() > 100.0:
        return x * 2.0
    elif nd.sum(x).asscalar() > -100.0:
        y = x * 3.0
    else:
        y = x
    return y * x
''', [R(3)])
add('''
def f(x, y):
    z = x
    for i in range(3):
        z = nd.maximum(z, y * i)
    return z
''', [R(4), R(4)])
add('''
def h(x):
    return x * x

def g(x):
    return h(x) + h(x * 2.0)

def f(x):
    return g(g(x))
''', [R(3)])
add('''
def f(x):
    n = int(nd.sum(nd.abs(x)).asscalar() * 3)
    y = x
    for i in range(n):
        y = y * 0.9 + x
    return y
''', [R(3)])
add('''
def f(x):
    y = x
    for i in range(3):
        for j in range(i):
            y = y * x + j
    return y
''', [R(3)])
add('''
def f(x):
    y = x * 1.0
    k = 0
    while True:
        k += 1
        y = nd.tanh(y) + x
        if k >= 3:
            break
    return y
''', [R(3)])
