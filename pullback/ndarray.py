"""MXNet-style arrays and operators (``import pullback.ndarray as nd``)."""

from types import SimpleNamespace

from pullback.runtime import rng as _rng
from pullback.runtime.ndarray import NDArray, Context, cpu  # noqa: F401
from pullback.runtime.primitives import *  # noqa: F401,F403
from pullback.runtime.primitives import (  # noqa: F401
    abs, array, max, min, round, slice, sum, zeros, ones, full, arange, empty,
    linalg_det, linalg_slogdet, linalg_inverse, linalg_potrf, linalg_potri, linalg_trsm,
    linalg_gemm, linalg_gemm2, linalg_syrk, linalg_trmm, linalg_extractdiag, linalg_makediag,
    linalg_sumlogdiag,
)

random = SimpleNamespace(seed=_rng.seed, normal=_rng.normal, uniform=_rng.uniform,
                         randint=_rng.randint)
random_normal = _rng.normal
random_uniform = _rng.uniform
# MXNet's nd.linalg (also spelled nd.linalg_det, ...): the routines pullback has rules for
linalg = SimpleNamespace(det=linalg_det, slogdet=linalg_slogdet, inverse=linalg_inverse,
                         potrf=linalg_potrf, potri=linalg_potri, trsm=linalg_trsm,
                         gemm=linalg_gemm, gemm2=linalg_gemm2, syrk=linalg_syrk,
                         trmm=linalg_trmm, extractdiag=linalg_extractdiag,
                         makediag=linalg_makediag, sumlogdiag=linalg_sumlogdiag)
