"""pullback: source-transformation automatic differentiation for Python.

``pullback.ndarray`` (nd) and ``pullback.autograd`` (ag) keep MXNet's API; the
compiler entry points (``compile``, ``grad``, ...) live here.
"""

import os as _os

# Installed, ``pullback.runtime`` and ``pullback.compiler`` are subpackages (see
# pyproject.toml).  In a source checkout that is not installed they are the folders
# beside this one: let the package find them there too.
_SOURCE_ROOT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(__path__[0], "runtime")) and _os.path.isfile(
        _os.path.join(_SOURCE_ROOT, "runtime", "__init__.py")):
    __path__.append(_SOURCE_ROOT)

from pullback.runtime.errors import (  # noqa: F401
    AutogradError, GraphFreedError, GradReqError, HeadGradientError, InPlaceError,
    IntegerGradError, ComplexValueError,
    MaskIndexError, NotRecordedError, UnrecordedOpError,
)
from pullback.runtime.ndarray import NDArray, cpu  # noqa: F401

from pullback.compiler.api import (  # noqa: F401
    CompiledFunction, adjoint_source, explain, grad, kernel_ir, value_and_grad, vjp,
)
from pullback.compiler.forward_api import (  # noqa: F401
    hessian, hvp, jacfwd, jacrev, jvp, tangent_source,
)
from pullback.compiler.cache import compile, stats  # noqa: F401  (compile: api's + signatures=)
from pullback.compiler.errors import CompileError  # noqa: F401

from . import autograd, ndarray  # noqa: F401
from .ndarray import random  # noqa: F401

nd = ndarray
__version__ = "0.1.0"
