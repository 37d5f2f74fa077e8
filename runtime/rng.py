"""Random arrays with one reproducible, process-wide generator (``nd.random``).

Every draw first notes the generator's state (``_note_draw``): a recorded compiled call
that drew numbers keeps the state before its first draw (``draws``/``state_before``), so
the re-run of its forward for a second derivative (``create_graph``) draws the same
numbers again (``replaying``) instead of differentiating another function."""

from __future__ import annotations

import contextlib

import numpy as np

from .ndarray import NDArray, as_data

_generator = np.random.default_rng()
_draws = 0     # draws so far (process-wide, as the generator)
_states = {}   # draw number -> the generator's state before it, for the last _KEPT draws
_KEPT = 4096


def draws() -> int:
    """How many draws were made so far (compare two readings: did anything draw?)."""
    return _draws


def state_before(number: int):
    """The generator's state before draw ``number`` (None if no longer kept)."""
    return _states.get(number)


def _note_draw() -> None:
    global _draws
    _draws += 1
    _states[_draws] = _generator.bit_generator.state
    _states.pop(_draws - _KEPT, None)


@contextlib.contextmanager
def replaying(state):
    """Draws inside come from ``state`` (one noted by ``_note_draw``); the generator in use
    before, and its state, are back afterwards, as if nothing inside drew."""
    global _generator
    current = _generator
    replay = np.random.default_rng()
    replay.bit_generator.state = state
    _generator = replay
    try:
        yield
    finally:
        _generator = current


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
    _note_draw()
    data = _generator.normal(loc, scale, _shape(shape)).astype(dtype or np.float32)
    return _deliver(data, out)


def uniform(low=0.0, high=1.0, shape=None, dtype=None, ctx=None, out=None):
    """Samples of U[low, high), float32 unless ``dtype`` says otherwise."""
    _note_draw()
    data = _generator.uniform(low, high, _shape(shape)).astype(dtype or np.float32)
    return _deliver(data, out)


def randint(low, high, shape=None, dtype=None, ctx=None, out=None):
    _note_draw()
    data = _generator.integers(low, high, _shape(shape)).astype(dtype or np.int32)
    return _deliver(data, out)


def _deliver(data, out):
    if out is not None:
        out[:] = data
        return out
    return NDArray(as_data(data))
