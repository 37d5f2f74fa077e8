"""Random arrays with one reproducible, process-wide generator (``nd.random``)."""

from __future__ import annotations

import numpy as np

from .ndarray import NDArray, as_data

_generator = np.random.default_rng()


def seed(seed_state: int, ctx=None) -> None:
    """Reseed the generator behind every ``nd.random`` function."""
    global _generator
    _generator = np.random.default_rng(seed_state)


def _shape(shape):
    if shape is None:
        return (1,)
    return (shape,) if isinstance(shape, int) else tuple(shape)


def normal(loc=0.0, scale=1.0, shape=None, dtype=None, ctx=None, out=None):
    """Samples of N(loc, scale**2), float32 unless ``dtype`` says otherwise."""
    data = _generator.normal(loc, scale, _shape(shape)).astype(dtype or np.float32)
    return _deliver(data, out)


def uniform(low=0.0, high=1.0, shape=None, dtype=None, ctx=None, out=None):
    """Samples of U[low, high), float32 unless ``dtype`` says otherwise."""
    data = _generator.uniform(low, high, _shape(shape)).astype(dtype or np.float32)
    return _deliver(data, out)


def randint(low, high, shape=None, dtype=None, ctx=None, out=None):
    data = _generator.integers(low, high, _shape(shape)).astype(dtype or np.int32)
    return _deliver(data, out)


def _deliver(data, out):
    if out is not None:
        out[:] = data
        return out
    return NDArray(as_data(data))
