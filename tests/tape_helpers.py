"""Reference gradients shared by the compiler tests: the eager tape and central
differences."""

import numpy as np

from pullback import autograd as ag
from pullback import nd


def tape_gradients(fn, arrays):
    """d sum(fn(*arrays)) / d each array, on the tape (numpy in, numpy out)."""
    xs = [nd.array(a) for a in arrays]
    for x in xs:
        x.attach_grad()
    with ag.record():
        out = fn(*xs)
    out.backward()
    return [x.grad.asnumpy() for x in xs]


def central_gradient(fn, args, k=0, eps=1e-6):
    """Central differences in float64 of sum(fn(*args)) with respect to ``args[k]``: an
    array of its shape, or a float when ``args[k]`` is a number.  Plain numpy/Python
    functions only (the other arguments are passed as they are)."""
    x = np.asarray(args[k], dtype=np.float64)

    def total(value):
        moved = list(args)
        moved[k] = value if x.ndim else float(value)
        return np.sum(fn(*moved))

    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += eps
        down[idx] -= eps
        g[idx] = (total(up) - total(down)) / (2 * eps)
    return g if x.ndim else float(g)
