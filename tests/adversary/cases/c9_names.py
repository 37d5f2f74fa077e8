import numpy as np
rng = np.random.default_rng(9)
def R(*s): return rng.uniform(-1, 1, s)
CASES = []
def add(src, args, argnums=None, **kw): CASES.append((src, args, argnums, kw))
add('''
def f(x, mul1):
    add1 = x * mul1
    sin1 = nd.sin(add1)
    fused1 = sin1 * x
    kernel_1 = fused1 + mul1
    _stack = kernel_1 * 2.0
    support = _stack + x
    ops = support * support
    return ops + add1
''', [R(600), R(600)])
add('''
def f(x, y):
    _index1 = 0
    len1 = 3
    _seq1 = 2.0
    s = x
    for i in range(3):
        s = s * y + _seq1
        if nd.sum(s).asscalar() > 1e9:
            break
    return s * len1 + _index1
''', [R(4), R(4)])
add('''
def f(x, result_grad):
    x_grad = x * result_grad
    cond1 = x_grad * 2.0
    return cond1 + x
''', [R(4), R(4)])
add('''
def f(np, x):
    return x * np
''', [R(4), R(4)])
add('''
def f(x, nd_):
    nd = nd_
    return x * nd
''', [R(4), R(4)])
add('''
def f(x, y):
    g = x * y
    ans = g * g
    grads = ans + x
    outputs = grads * y
    return outputs
''', [R(600), R(600)])
add('''
def f(x, y):
    sum1 = nd.sum(x * y)
    mean1 = nd.mean(x) + sum1
    max1 = nd.max(x * mean1)
    return x * max1 + sum1
''', [R(600), R(600)])
