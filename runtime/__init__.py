"""pullback's runtime: arrays, the primitive table, the tape and the stack.

Everything here runs while the user's program runs.  Nothing here imports the
compiler; code the compiler generates imports only this package.
"""

from . import ndarray as _ndarray
from . import primitives, rng, tape  # noqa: F401
from .errors import AutogradError  # noqa: F401

_ndarray._install_methods()
