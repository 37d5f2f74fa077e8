"""Data-parallel gradients on Dask (``pip install 'pullback[dask]'``); see
``pullback.cluster.dask_grad`` and docs/ARCHITECTURE.md (the cluster layer)."""

from pullback.cluster.dask_grad import function_ref, value_and_grad  # noqa: F401
from pullback.cluster.errors import (  # noqa: F401
    ClusterError, NonFiniteError, ParamsError, PartitionError, WorkerFunctionError,
)
from pullback.cluster.worker import cache_stats  # noqa: F401
