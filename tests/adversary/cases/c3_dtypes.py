import numpy as np
rng = np.random.default_rng(3)
def R(*s, dtype=np.float64): return rng.uniform(-1, 1, s).astype(dtype)
CASES = []
def add(src, args, argnums=None, **kw): CASES.append((src, args, argnums, kw))
BODIES = [
 "z = np.sin(x * y) + y\n    return z",
 "z = np.sin(x * y) + y\n    return np.sum(z)",
 "z = np.sin(x * y) + y\n    return np.mean(z)",
 "z = np.tanh(x * y) - x\n    return np.max(z)",
 "z = np.tanh(x * y) - x\n    return np.linalg.norm(z)",
 "z = np.exp(x) * y\n    w = z + x\n    return np.sum(w) * z",
 "z = x * y\n    w = z * z\n    return np.sum(w) + np.sum(z)",
 "z = y * 3.0\n    w = np.sin(z)\n    return np.mean(w) * x",
 "z = np.sqrt(x * x + y * y)\n    w = z / (1.0 + z)\n    return w",
 "z = x ** 2.0\n    w = z * y ** 3\n    return w",
 "z = x ** y\n    w = z * 2.0\n    return w",
]
f32, f64 = np.float32, np.float64
ARGS = [
  lambda: [R(600, dtype=f32), R(600, dtype=f32)],
  lambda: [R(600, dtype=f32), R(600, dtype=f64)],
  lambda: [R(600, dtype=f32), np.float32(0.7)],
  lambda: [R(600, dtype=f32), np.float64(0.7)],
  lambda: [R(600, dtype=f32), 0.7],
  lambda: [R(600, dtype=f64), np.float32(0.7)],
  lambda: [R(600, dtype=f32), np.array(0.7, dtype=f32)],
  lambda: [R(600, dtype=f32), np.array([0.7], dtype=f64)],
  lambda: [R(5, dtype=f32), 0.7],
  lambda: [0.3, 0.7],
  lambda: [np.float32(0.3), 0.7],
  lambda: [np.abs(R(600)) + 0.1, np.arange(600) % 3],
]
for body in BODIES:
    src = f"def f(x, y):\n    {body}\n"
    for a in ARGS:
        args = a()
        add(src, args, rtol=2e-4, atol=1e-5, use_fd=False)
