"""MXNet-style arrays and operators (``import pullback.ndarray as nd``)."""

from types import SimpleNamespace

from pullback.runtime import rng as _rng
from pullback.runtime.ndarray import NDArray, Context, cpu  # noqa: F401
from pullback.runtime.primitives import *  # noqa: F401,F403
from pullback.runtime.primitives import (  # noqa: F401
    abs, array, max, min, round, slice, sum, zeros, ones, full, arange, empty,
)

random = SimpleNamespace(seed=_rng.seed, normal=_rng.normal, uniform=_rng.uniform,
                         randint=_rng.randint)
random_normal = _rng.normal
random_uniform = _rng.uniform
