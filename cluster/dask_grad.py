"""``value_and_grad`` over data spread across a Dask cluster (the client's side).

A step: (1) the loss becomes a ``FunctionRef`` (it must be importable by the workers);
(2) the parameters are flattened to leaves and, once per shape of parameters and data,
checked locally on a few rows of the first partition (a wrong shape fails here, before
any work is sent); (3) one task per partition computes its weighted value and gradient on
a worker (``worker.partition_value_and_grad``), and ``worker.combine`` sums them in a tree
of fan-in ``split_every``; (4) problems reported by workers become one pullback error.
The parameters travel once per worker (one graph key), the data never moves to the client.
"""

import sys

import numpy as np

from pullback.cluster import trees, worker
from pullback.cluster.errors import (
    ClusterError, NonFiniteError, ParamsError, PartitionError, WorkerFunctionError,
)

_CHECKED = set()   # (ref, params structure and shapes, batch structure and shapes) checked


def function_ref(loss) -> worker.FunctionRef:
    """How workers find ``loss``; a TypeError for a function they could not import."""
    fn = getattr(loss, "fn", loss)   # a pb.compile'd function: its user function
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module is None or "<locals>" in qualname or "<lambda>" in qualname:
        raise TypeError(f"pullback.dask ships functions by reference: {qualname or loss!r} must "
                        "be defined at the top level of a module the workers can import")
    file = None
    if module == "__main__":
        file = getattr(sys.modules["__main__"], "__file__", None)
        if file is None:
            raise TypeError(f"{qualname} is defined in an interactive session: put it in a "
                            "module (a .py file) the workers can import")
    return worker.FunctionRef(module, qualname, file)


def partitions(data):
    """``(list of per-partition delayed batches, rows per partition or None)``."""
    import dask.array as da
    from dask.delayed import Delayed
    if isinstance(data, (list, tuple)) and data and all(isinstance(d, Delayed) for d in data):
        return list(data), None
    arrays = data if isinstance(data, tuple) else (data,)
    if not all(isinstance(a, da.Array) for a in arrays):
        raise TypeError("data must be a Dask array, a tuple of Dask arrays with the same "
                        "chunks along axis 0, or a list of dask.delayed batches")
    arrays = tuple(a.rechunk({i: -1 for i in range(1, a.ndim)}) if a.ndim > 1 else a
                   for a in arrays)
    chunks = arrays[0].chunks[0]
    for a in arrays[1:]:
        if a.chunks[0] != chunks:
            raise ValueError(f"the arrays of data must have the same chunks along axis 0: "
                             f"{chunks} vs {a.chunks[0]} (rechunk one like the other)")
    blocks = [a.to_delayed().reshape(-1) for a in arrays]
    if isinstance(data, tuple):
        parts = [tuple(b[i] for b in blocks) for i in range(len(chunks))]
    else:
        parts = list(blocks[0])
    return parts, list(chunks)


def _sample(data, rows, client):
    """The first ``rows`` rows of the first partition of a Dask-array ``data`` (None for
    delayed batches, whose contents only their computation knows)."""
    import dask
    import dask.array as da
    arrays = data if isinstance(data, tuple) else (data,)
    if not all(isinstance(a, da.Array) for a in arrays):
        return None
    n = min(rows, arrays[0].chunks[0][0])
    heads = [a[:n] for a in arrays]   # a few rows: data, no gradient work
    sample = client.compute(heads, sync=True) if client is not None else dask.compute(*heads)
    return tuple(sample) if isinstance(data, tuple) else sample[0]


def _layout(data):
    """What a partition's batch looks like, from metadata: per array, its shape after the
    first axis and its dtype (delayed batches: their keys)."""
    arrays = data if isinstance(data, tuple) else (data,)
    return tuple((getattr(a, "shape", (None,))[1:], str(getattr(a, "dtype", a))) for a in arrays)


def _shapes(leaves):
    return tuple((np.shape(x), str(getattr(x, "dtype", type(x).__name__))) for x in leaves)


def check_params(ref, params_def, leaves, batch):
    """Run the loss locally on a small batch; a ParamsError naming what does not fit."""
    import pullback as pb
    batch_def, batch_leaves = trees.flatten(batch)
    shapes = ", ".join(str(np.shape(x)) for x in leaves)
    try:
        value, grads = worker._runner(ref, params_def, batch_def)(leaves, batch)
    except pb.CompileError:
        raise
    except Exception as error:   # noqa: BLE001 (re-raised as a clear error)
        raise ParamsError(f"{ref} does not accept parameters of shapes {shapes} on a batch of "
                          f"shapes {[np.shape(b) for b in batch_leaves]}: "
                          f"{type(error).__name__}: {error}") from error
    for x, g in zip(leaves, grads, strict=True):
        if np.shape(g) != np.shape(x):
            raise ParamsError(f"{ref}: a gradient of shape {np.shape(g)} for a parameter of "
                              f"shape {np.shape(x)}")
    if np.size(value) != 1:
        raise ParamsError(f"{ref} must return a scalar loss per batch, got shape "
                          f"{np.shape(value)}")


def value_and_grad(loss, params, data, client=None, reduce="sum", weights=None,
                   check=True, check_rows=4, split_every=8):
    """``(value, gradient)`` of ``loss(params, batch)`` summed over the partitions of ``data``.

    Args:
      loss: a top-level function of an importable module (or a script's), differentiable by
        pullback, taking ``(params, batch)`` and returning a scalar.
      params: an array, a number, or a nested tuple/list of them; the gradient has its
        structure.
      data: a Dask array chunked along axis 0 (one partition per chunk; the batch is that
        chunk), a tuple of such arrays with equal chunks along axis 0 (the batch is a tuple),
        or a list of ``dask.delayed`` batches.
      client: a ``distributed.Client``; None uses Dask's default scheduler.
      reduce: ``"sum"``: ``sum_i w_i * loss_i`` (``w_i`` = 1 by default); ``"mean"``:
        ``sum_i w_i * loss_i / sum_i w_i`` with ``w_i`` the partition's rows by default, so a
        loss that is a mean over its batch gives the mean over all rows.
      weights: one number per partition, overriding the default ``w_i``.
      check: run the loss locally on ``check_rows`` rows of the first partition before the
        first step with these shapes (a wrong shape is a ParamsError before work is sent);
        False skips it; a batch (numpy, the structure of a partition) checks on that batch.
      split_every: the fan-in of the tree reduction.

    Returns:
      ``(value, gradient)``: a float and the gradient in the structure of ``params``.

    Raises:
      ParamsError, WorkerFunctionError, PartitionError, NonFiniteError (all ClusterErrors).
    """
    import dask
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    ref = function_ref(loss)
    params_def, leaves = trees.flatten(params)
    kinds = [type(x) for x in leaves]
    leaves = [x.asnumpy() if hasattr(x, "asnumpy") else x for x in leaves]
    parts, rows = partitions(data)
    if weights is not None:
        weights = [float(w) for w in weights]
        if len(weights) != len(parts):
            raise ValueError(f"{len(weights)} weights for {len(parts)} partitions")
    if check is not False:
        # once per (function, parameter shapes, data layout): the sample is a round trip
        layout = _layout(data) if check is True else id(check)
        key = (ref, params_def, _shapes(leaves), layout)
        if key not in _CHECKED:
            sample = _sample(data, check_rows, client) if check is True else check
            if sample is not None:
                check_params(ref, params_def, leaves, sample)
                _CHECKED.add(key)
    shared = dask.delayed(leaves, traverse=False)   # one key: sent once per worker
    task = dask.delayed(worker.partition_value_and_grad, pure=True)
    level = []
    for i, part in enumerate(parts):
        w = weights[i] if weights is not None else (1.0 if reduce == "sum" else None)
        level.append(task(ref, params_def, shared, i, w, part))
    combine = dask.delayed(worker.combine, pure=True)
    while len(level) > 1:
        level = [combine(*level[i:i + split_every]) for i in range(0, len(level), split_every)]
    if client is not None:
        (result,) = client.compute(level, sync=True)
    else:
        (result,) = dask.compute(*level)
    _raise_problems(result["problems"])
    scale = 1.0 / result["weight"] if reduce == "mean" else 1.0
    grads = [_like(g * scale, kind) for g, kind in zip(result["grads"], kinds, strict=True)]
    return result["value"] * scale, trees.unflatten(params_def, grads)


def _like(g, kind):
    if kind.__name__ == "NDArray":
        from pullback import nd
        return nd.array(np.asarray(g))
    return float(g) if kind in (int, float) else g


def _raise_problems(problems):
    if not problems:
        return
    by_kind = {}
    for p in problems:
        by_kind.setdefault(p["kind"], []).append(p)
    if "function" in by_kind:
        first = by_kind["function"][0]
        workers = sorted({p["worker"] for p in by_kind["function"]})
        raise WorkerFunctionError(
            f"worker {first['worker']} could not import or compile {first['function']}: "
            f"{first['error']}: {first['message']} (workers failing: {', '.join(workers)})",
            problems)
    if "partition" in by_kind:
        ps = sorted(by_kind["partition"], key=lambda p: p["partition"])
        raise PartitionError(
            f"{ps[0]['function']} raised on partition(s) {[p['partition'] for p in ps]}: "
            f"{ps[0]['error']}: {ps[0]['message']} (worker {ps[0]['worker']})", problems)
    if "nonfinite" in by_kind:
        ps = sorted(by_kind["nonfinite"], key=lambda p: p["partition"])
        raise NonFiniteError(
            f"{ps[0]['function']}: non-finite value or gradient on partition(s) "
            f"{[p['partition'] for p in ps]}; first: {ps[0]['message']}", ps)
    raise ClusterError(f"problems: {problems}", problems)
