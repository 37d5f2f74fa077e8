"""The exceptions pullback raises at run time.

Every misuse of autograd raises an ``AutogradError``.  Where a builtin exception
fits the misuse (a wrong shape is a ``ValueError``, using a freed graph is a
``RuntimeError``), the raised class also subclasses that builtin, so code that
already catches the builtin keeps working.
"""


class AutogradError(Exception):
    """Base class of every autograd misuse pullback detects."""


class GraphFreedError(AutogradError, RuntimeError):
    """backward() reached a node whose graph an earlier backward() freed."""


class NotRecordedError(AutogradError, RuntimeError):
    """backward()/grad() was asked of an array that has no recorded history."""


class HeadGradientError(AutogradError, ValueError):
    """A head gradient's shape or dtype does not match its head."""


class InPlaceError(AutogradError, RuntimeError):
    """An array that a recorded node still needs was changed in place."""


class GradReqError(AutogradError, ValueError):
    """An invalid grad_req value."""


class IntegerGradError(AutogradError, TypeError):
    """attach_grad (or mark_variables) on an array, or into a gradient buffer, whose dtype
    is not floating: the gradient would be truncated to integers (MXNet's silent zeros)."""


class ComplexValueError(AutogradError, TypeError):
    """A complex value on a differentiated path: pullback's rules are for real values
    (a complex intermediate's gradient would silently lose its imaginary part)."""


class FunctionReuseError(AutogradError, RuntimeError):
    """An ``autograd.Function`` instance whose call was recorded was called again."""


class UnrecordedOpError(AutogradError, TypeError):
    """A numpy function was applied to a recorded NDArray: the tape cannot follow it."""


class MaskIndexError(AutogradError, IndexError):
    """An NDArray indexed with a comparison's 0/1 result: MXNet's indices or numpy's mask?"""
