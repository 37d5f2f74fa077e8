"""Gradients on the eager tape, shared by the compiler tests."""

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
