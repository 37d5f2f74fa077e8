"""Errors of the distributed layer; each is also the builtin that fits it."""


class ClusterError(RuntimeError):
    """A data-parallel gradient step failed.  ``problems``: the structured reports the
    workers sent back (dicts with ``kind``, ``message`` and, where known, ``function``,
    ``worker``, ``partition``)."""

    def __init__(self, message, problems=()):
        super().__init__(message)
        self.problems = list(problems)


class WorkerFunctionError(ClusterError, ImportError):
    """A worker could not import or compile the loss function."""


class PartitionError(ClusterError):
    """The loss raised on one or more partitions."""


class NonFiniteError(ClusterError, FloatingPointError):
    """A partition's value or gradient holds nan or inf (``partitions``: their indices)."""

    def __init__(self, message, problems=()):
        super().__init__(message, problems)
        self.partitions = sorted(p["partition"] for p in self.problems)


class ParamsError(ClusterError, ValueError):
    """The parameters do not fit the loss and the data (checked before work is sent)."""
