import numpy as np
CASES = []
def add(src, args, argnums=None, **kw): CASES.append((src, args, argnums, kw))
BODIES = ['''
def f(x, y):
    z = math.sin(x * y) + y
    w = z * z
    return w
''', '''
def f(x, y):
    s = x
    i = 0
    while s < 10.0:
        s = s * 1.5 + y * y
        i += 1
    return s * i
''', '''
def f(x, y):
    t = x
    for k in range(20):
        t = t - (t * t - y) / (2.0 * t)
    return t
''', '''
def f(x, y):
    a = abs(x - y)
    b = max(x, 0.2)
    return a * x
''', '''
def f(x, y):
    z = np.tanh(x) * y
    w = np.exp(z) + 1.0
    return np.log(w) * x
''', '''
def f(x, y):
    z = x ** y
    w = z * 2.0 + math.exp(y)
    return w
''', '''
def f(x, y):
    r = np.maximum(x, y) * np.minimum(x, y)
    return r + np.abs(x) * np.sign(y)
''', '''
def f(x, y):
    s = 0.0
    for k in range(3):
        s = s + x ** k * y
    return s
''', '''
def f(x, y):
    z = np.sqrt(x * x + y * y)
    return np.sum(z * 2.0)
''', '''
def f(x, y):
    z = np.sin(x) * y
    return np.mean(z + 1.0)
''', '''
def f(x, y):
    z = np.sin(x) * y
    return np.max(z + 1.0) + np.min(z * y)
''', '''
def f(x, y):
    z = np.sin(x) * y
    return np.linalg.norm(z - 1.0)
''']
VALS = [(0.3, 2.0), (np.float64(0.3), np.float64(2.0)), (np.array(0.3), np.array(2.0)),
        (np.array([0.3]), 2.0), (0.3, np.array([[2.0]])), (np.float32(0.3), np.float32(2.0)),
        (np.array(0.3, dtype=np.float32), 2.0), (np.array([0.3, 0.5]), np.array(2.0))]
for b in BODIES:
    for a in VALS:
        add(b, list(a), rtol=1e-5, atol=1e-6)
