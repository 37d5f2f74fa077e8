import numpy as np
rng = np.random.default_rng(2)
def R(*s, dtype=np.float64): return rng.uniform(-1, 1, s).astype(dtype)
CASES = []
def add(src, args, argnums=None, **kw): CASES.append((src, args, argnums, kw))
BODIES = [
 "z = np.sin(x * y) + y\n    return z",
 "z = np.sin(x * y) + y\n    return np.sum(z)",
 "z = np.sin(x * y) + y\n    return np.mean(z)",
 "z = np.tanh(x * y) - x\n    return np.max(z)",
 "z = np.tanh(x * y) - x\n    return np.min(z)",
 "z = np.tanh(x * y) - x\n    return np.linalg.norm(z)",
 "z = np.exp(x) * y\n    w = z + x\n    return np.sum(w) * z",
 "z = np.exp(x) * y\n    w = z * 2.0\n    return np.sum(w, axis=0)",
 "z = np.exp(x) * y\n    w = z * 2.0\n    return np.sum(w, axis=-1, keepdims=True)",
 "z = np.exp(x) * y\n    w = z * 2.0\n    return np.mean(w, axis=0) + np.max(z)",
 "z = x * y\n    w = z * z\n    return np.sum(w) + np.sum(z)",
 "z = y * 3.0\n    w = np.sin(z)\n    return np.sum(w) + x",
 "z = y * 3.0\n    w = np.sin(z)\n    return np.mean(w) * x",
 "z = np.maximum(x, y)\n    w = z * y\n    return np.sum(w)",
 "z = np.abs(x - y)\n    w = z * y\n    return np.max(w)",
 "z = np.sqrt(x * x + y * y)\n    w = z / (1.0 + z)\n    return w",
 "z = x ** 2.0\n    w = z * y ** 3\n    return w",
 "z = x * y\n    w = np.where(z > 0, z, z * 0.1)\n    return np.sum(w * x)",
]
SHAPES = [((600,), (1, 1)), ((600,), ()), ((1,), (600,)), ((600, 1), (1,)), ((1, 600), (600,)),
          ((3, 200), (200,)), ((513,), (513,)), ((512,), (1,)), ((4097,), (4097,)),
          ((1,), (1,)), ((), ()), ((2,), (1, 1)), ((511, 1), (1, 1)), ((1, 1), (1, 1, 600))]
for body in BODIES:
    src = f"def f(x, y):\n    {body}\n"
    for sx, sy in SHAPES:
        add(src, [R(*sx), R(*sy)], use_fd=max(np.prod(sx), np.prod(sy)) < 700)
