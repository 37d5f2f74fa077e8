import numpy as np
rng = np.random.default_rng(6)
def R(*s): return rng.uniform(-1, 1, s)
CASES = []
def add(src, args, argnums=None, **kw): CASES.append((src, args, argnums, kw))
BODIES = [
 "z = np.sin(x * y) + y * w\n    return np.sum(z)",
 "z = np.sin(x * y) + y * w\n    return np.mean(z)",
 "z = np.sin(x * y) + y * w\n    return np.mean(z) * 3.0",
 "z = np.sin(x * y) + y * w\n    return np.sum(z) * np.sum(z)",
 "z = np.tanh(x * y) - w\n    return np.max(z) * 2.0",
 "z = np.tanh(x * y) - w\n    return np.linalg.norm(z) * 2.0",
 "z = np.exp(x) * y + w\n    return np.sum(z) + np.mean(z * x)",
 "z = x * 2.0\n    q = w * 3.0\n    return np.sum(z * y) + np.sum(q)",
]
SH = [((600,), (600,), (600,)), ((600,), (1,), ()), ((600,), (), (600,)), ((3,), (1,), (3,)), ((1,), (600,), (1,)), ((2, 300), (300,), (2, 1))]
for body in BODIES:
    src = f"def f(x, y, w):\n    {body}\n"
    for shapes in SH:
        for argnums in [(0,), (1,), (2,), (0, 2), (1, 2), (2, 0)]:
            add(src, [R(*s) for s in shapes], argnums, use_fd=False)
