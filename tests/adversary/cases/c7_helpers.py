import numpy as np
rng = np.random.default_rng(7)
def R(*s): return rng.uniform(-1, 1, s)
CASES = []
def add(src, args, argnums=None, **kw): CASES.append((src, args, argnums, kw))
add('''
def ident(a):
    return a

def f(x):
    y = ident(x)
    y = y * 2.0
    return y * ident(x)
''', [R(3)])
add('''
def h(a, b=1.0, c=2.0):
    return a * b + c * nd.sin(a)

def f(x, y):
    return h(x, c=y) + h(y, b=x) + h(c=x, a=y)
''', [R(3), R(3)])
add('''
def h(*args):
    return args[0] * args[1]

def f(x, y):
    return h(x, y) + h(y, y)
''', [R(3), R(3)])
add('''
def first_big(a):
    for i in range(5):
        if nd.sum(a).asscalar() > 2.0:
            return a * i
        a = a * 1.5 + 0.2
    return a

def f(x):
    return first_big(x) + first_big(x * 0.5)
''', [R(3)])
add('''
def even(a, n):
    if n == 0:
        return a
    return odd(a * 1.1, n - 1)

def odd(a, n):
    if n == 0:
        return nd.sin(a)
    return even(nd.tanh(a), n - 1)

def f(x):
    return even(x, 5) + odd(x, 4)
''', [R(3)])
add('''
def deep(a):
    if nd.sum(nd.abs(a)).asscalar() > 8.0:
        return a
    return deep(a * 1.3 + 0.1) * 0.9

def f(x):
    return deep(x)
''', [R(3)])
add('''
def pushl(lst, v):
    lst.append(v)
    return lst

def f(x):
    l = []
    l = pushl(l, x)
    l = pushl(l, x * 2.0)
    return l[0] * l[-1]
''', [R(3)])
add('''
def f(x):
    l = [x, x * 2.0, x * 3.0]
    a = l.pop()
    return a * l[1] + l[0]
''', [R(3)])
add('''
def f(x):
    l = []
    for i in range(4):
        l.append(x * i)
        if i >= 2:
            l[0] = l[0] + l[-1]
    return l[0] * l[-2]
''', [R(3)])
add('''
def f(x):
    if nd.sum(x).asscalar() > -10.0:
        y = x * 2.0
    return y * x
''', [R(3)])
add('''
def f(x, y):
    t = (x, y)
    a, b = t
    return a * b + t[0]
''', [R(3), R(3)])
add('''
def sq(a):
    return a * a

def f(x):
    s = x
    for i in range(3):
        s = sq(s) * 0.5 + sq(x)
    return sq(s)
''', [R(3)])
add('''
def g(a, n):
    s = a
    k = 0
    while k < n:
        s = s * a
        k += 1
    return s

def f(x):
    return g(x, 0) + g(x, 1) + g(x, 3)
''', [R(3)])
add('''
def f(x):
    s = x * 1.0
    i = 0
    while i < 10:
        i += 1
        if i % 3 == 0:
            continue
        if i > 7:
            break
        s = s * nd.cos(s) + x
    return s
''', [R(3)])
add('''
def f(x):
    s = x
    for i in range(3):
        t = s
        s = s * x
        s = t + s
    return s + t
''', [R(3)])
add('''
def f(x):
    a = x
    for i in range(3):
        a = a * 2.0
        b = a
        a = nd.sin(a)
    return a * b
''', [R(3)])
add('''
def f(x):
    s = x
    for i in range(3):
        for j in range(3):
            if j == i:
                break
            s = s * 0.9 + x * j
        else:
            s = s + 1.0
    return s
''', [R(3)])
add('''
def f(x):
    s = x
    i = 0
    while i < 3:
        s = s * 1.1
        i += 1
    else:
        s = s + x
    return s
''', [R(3)])
add('''
def f(x):
    try:
        y = x * 2.0
    finally:
        y = y + 1.0
    return y
''', [R(3)])
add('''
def f(x):
    y = x
    with nd.autograd.pause() if False else open("/dev/null"):
        y = y * 2.0
    return y
''', [R(3)])
add('''
def f(x):
    s = x
    for i in range(3):
        s = nd.where(s > 0.0, s * 2.0, s * 0.5)
        if nd.max(s).asscalar() > 3.0:
            s = s / nd.max(s)
    return s
''', [R(5)])
add('''
def f(x):
    y = x
    for i in range(2):
        y = y[1:] + y[:-1]
    return y
''', [R(5)])
add('''
def f(x):
    y = x
    while y.shape[0] > 1:
        y = y[::2] * y[1::2] if False else y[1:] * 0.5 + y[:-1]
    return y
''', [R(5)])
