"""What runs on a worker: one partition's value and gradient, and the tree reduction.

Functions travel by reference (``FunctionRef``: module, qualified name and, for a
script's ``__main__``, its file) and are compiled once per worker process: the process
cache below keeps one ``pb.value_and_grad`` runner per (function, structure of the
parameters, structure of a batch).  Nothing here raises to the engine: every failure is
returned as a *problem* (a dict naming what failed, where), so the client can raise one
clear pullback error instead of a pickling trace.
"""

import importlib
import importlib.util
import linecache
import os
import socket
import sys
from dataclasses import dataclass

import numpy as np

from pullback.cluster import trees


@dataclass(frozen=True)
class FunctionRef:
    """How a worker finds a function: ``module``/``qualname``, or ``file`` for ``__main__``."""
    module: str
    qualname: str
    file: str | None = None

    def __str__(self):
        return f"{self.module}.{self.qualname}"

    def resolve(self):
        if self.file is not None:
            module = _module_from_file(self.file)
        else:
            module = importlib.import_module(self.module)
        obj = module
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        return obj


_FILE_MODULES = {}


def _module_from_file(path):
    """A script's module, imported under a name of its own (not "pullback...": the compiler
    takes those for library code; its ``if __name__ ==
    "__main__":`` block does not run)."""
    found = _FILE_MODULES.get(path)
    if found is None:
        name = "script_" + os.path.basename(path).replace(".", "_")
        spec = importlib.util.spec_from_file_location(name, path)
        found = importlib.util.module_from_spec(spec)
        sys.modules[name] = found   # pullback (inspect) finds functions through their module
        spec.loader.exec_module(found)
        _FILE_MODULES[path] = found
    return found


# (ref, params structure, batch structure) -> value_and_grad runner of the flat wrapper
_RUNNERS = {}
STATS = {"compiled": 0, "calls": 0}


def cache_stats():
    """This process's counts: runners compiled, partition calls made."""
    return dict(STATS, pid=os.getpid())


def _flat_wrapper(loss, params_def, batch_def):
    """``flat(p0, .., pk, b0, .., bm) = loss(params, batch)``: a function of arrays only
    (pb differentiates arrays, not containers), written as source so pullback can read it."""
    n_params, n_batch = trees.count(params_def), trees.count(batch_def)
    p_names = [f"p{i}" for i in range(n_params)]
    b_names = [f"b{i}" for i in range(n_batch)]
    call = (f"loss({trees.source(params_def, iter(p_names))}, "
            f"{trees.source(batch_def, iter(b_names))})")
    source = f"def flat({', '.join(p_names + b_names)}):\n    return {call}\n"
    filename = f"<pullback.dask flat wrapper {id(loss):x} {len(_RUNNERS)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"loss": loss}
    exec(compile(source, filename, "exec"), namespace)   # noqa: S102 (our own source)
    return namespace["flat"], n_params


def _runner(ref, params_def, batch_def):
    """``run(param_leaves, batch) -> (value, gradient leaves)`` for this structure, made
    once per process.  A ``@pb.compile`` loss is differentiated as itself, its params
    argument as one container: the variant ``pullback compile`` builds ahead of time for
    a signature such as ``(("float64", "float64"), None)``, so a worker sharing the disk
    cache loads it instead of transforming.  Any other loss goes through a flat wrapper of
    leaf arrays, compiled in this process."""
    key = (ref, params_def, batch_def)
    found = _RUNNERS.get(key)
    if found is None:
        import pullback as pb   # the facade: compiler and runtime (never imported below us)
        from pullback.compiler.api import CompiledFunction
        loss = ref.resolve()
        if isinstance(loss, CompiledFunction):
            found = _structured_runner(pb.value_and_grad(loss, argnums=0), params_def)
        else:
            flat, n_params = _flat_wrapper(loss, params_def, batch_def)
            found = _flat_runner(pb.value_and_grad(pb.compile(flat),
                                                   argnums=tuple(range(n_params))))
        _RUNNERS[key] = found
        STATS["compiled"] += 1
    return found


def _structured_runner(value_and_grad, params_def):
    def run(leaves, batch):
        value, grads = value_and_grad(trees.unflatten(params_def, leaves), batch)
        return value, trees.flatten(grads)[1]
    return run


def _flat_runner(value_and_grad):
    def run(leaves, batch):
        return value_and_grad(*leaves, *trees.flatten(batch)[1])
    return run


def where():
    """This worker's name: its Dask address if it is one, else host and process id."""
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()} pid {os.getpid()}"


def partition_value_and_grad(ref, params_def, leaves, index, weight, batch):
    """One partition's weighted ``(value, gradient leaves)`` as a result dict, or a
    problem.  ``weight`` None means the partition's number of rows."""
    batch_def, batch_leaves = trees.flatten(batch)
    try:
        run = _runner(ref, params_def, batch_def)   # the compile itself: at the first call
    except Exception as error:   # noqa: BLE001 (reported, named, to the client)
        return _problem("function", error, ref, index)
    rows = int(np.shape(batch_leaves[0])[0]) if batch_leaves and np.ndim(batch_leaves[0]) else 1
    w = float(rows if weight is None else weight)
    try:
        value, grads = run(leaves, batch)
    except Exception as error:   # noqa: BLE001
        kind = "function" if type(error).__name__ == "CompileError" else "partition"
        return _problem(kind, error, ref, index)
    STATS["calls"] += 1
    value = float(np.sum(np.asarray(value, dtype=np.float64)))
    grads = [np.asarray(g) if isinstance(g, np.ndarray) else g for g in grads]
    if not (np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads)):
        bad = "value" if not np.isfinite(value) else "gradient"
        return {"problems": [{"kind": "nonfinite", "partition": index, "worker": where(),
                              "function": str(ref),
                              "message": f"partition {index}: the {bad} is not finite "
                                         f"(value {value})"}]}
    return {"value": w * value, "grads": [w * g for g in grads], "weight": w, "rows": rows,
            "problems": []}


def _problem(kind, error, ref, index):
    return {"problems": [{"kind": kind, "function": str(ref), "worker": where(),
                          "partition": index, "error": type(error).__name__,
                          "message": str(error)}]}


def combine(*results):
    """The sum of partition results (one level of the tree reduction); problems add up."""
    problems = [p for r in results for p in r["problems"]]
    good = [r for r in results if "value" in r]
    if problems or not good:
        return {"problems": problems}
    total = dict(good[0], grads=list(good[0]["grads"]))
    for r in good[1:]:
        total["value"] += r["value"]
        total["weight"] += r["weight"]
        total["rows"] += r["rows"]
        total["grads"] = [a + b for a, b in zip(total["grads"], r["grads"], strict=True)]
    return total
