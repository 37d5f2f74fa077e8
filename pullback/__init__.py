"""pullback: source-transformation automatic differentiation for Python.

``pullback.ndarray`` (nd) and ``pullback.autograd`` (ag) keep MXNet's API; the
compiler entry points (``compile``, ``grad``, ...) live here.
"""

from pullback.runtime.errors import (  # noqa: F401
    AutogradError, GraphFreedError, GradReqError, HeadGradientError, InPlaceError,
    NotRecordedError,
)
from pullback.runtime.ndarray import NDArray, cpu  # noqa: F401

from pullback.compiler.api import (  # noqa: F401
    CompiledFunction, adjoint_source, grad, kernel_ir, value_and_grad, vjp,
)
from pullback.compiler.cache import compile, stats  # noqa: F401  (compile: api's + signatures=)
from pullback.compiler.errors import CompileError  # noqa: F401

from . import autograd, ndarray  # noqa: F401
from .ndarray import random  # noqa: F401

nd = ndarray
__version__ = "0.1.0"
