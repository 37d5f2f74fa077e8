"""pullback as a GradBench tool: GradBench's JSON-lines protocol on stdin/stdout.

Run from the repository root:  python bench/gradbench/run.py

Each line in is one message (start, define, evaluate, analysis, end), each line out the
response with the same id.  Objectives are ordinary Python in ``objectives.py``,
differentiated by pullback; inputs are converted to numpy outside the timed region.
The first call of a differentiated function transforms it: that call is reported under
the timing name ``compile`` (transformation plus one run) before the ``evaluate`` runs.
Standard library, numpy and pullback only.

particle and saddle: their four functions (rr, ff, fr, rf: outer and inner derivative in
reverse or forward mode) each run their two modes with pullback's API: ``pb.grad`` or
``pb.jvp`` outside, ``pb.grad`` or ``pb.jacfwd`` inside (see ``objectives.particle`` and
``objectives.saddle``).
"""

from __future__ import annotations

import functools
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import objectives as obj
from ba import Ba
from ht import Ht

import pullback as pb


class Module:
    """One GradBench module: ``prepare(input)`` -> arguments, and its functions."""

    functions: dict

    def prepare(self, function, data):
        return data


def _scalar(value):
    return float(np.asarray(value).reshape(-1)[0])


def _jsonable(value):
    """A function's result as JSON values, converted after its timing (GradBench's C++
    tools time the computation only and write their output afterwards)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


def _floats(values):
    return np.asarray(values, dtype=np.float64)


def _compiled(fn, argnums=0):
    return pb.grad(pb.compile(fn), argnums=argnums)


class Hello(Module):
    def __init__(self):
        double = _compiled(obj.square)
        self.functions = {"square": obj.square, "double": lambda x: double(x)}

    def prepare(self, function, data):
        return (float(data),)


class Lse(Module):
    def __init__(self):
        gradient = _compiled(obj.lse)
        self.functions = {"primal": lambda x: float(obj.lse(x)),
                          "gradient": gradient}

    def prepare(self, function, data):
        return (_floats(data["x"]),)


class Llsq(Module):
    def __init__(self):
        gradient = _compiled(obj.llsq)
        self.functions = {"primal": lambda x, n: float(obj.llsq(x, n)),
                          "gradient": gradient}

    def prepare(self, function, data):
        return _floats(data["x"]), int(data["n"])


class Ode(Module):
    def __init__(self):
        gradient = _compiled(obj.ode_last)
        self.functions = {"primal": obj.ode,
                          "gradient": gradient}

    def prepare(self, function, data):
        return _floats(data["x"]), int(data["s"])


class Det(Module):
    def __init__(self):
        gradient = _compiled(obj.det)
        self.functions = {"primal": lambda A: float(obj.det(A)),
                          "gradient": lambda A: gradient(A).reshape(-1)}

    def prepare(self, function, data):
        ell = int(data["ell"])
        return (_floats(data["A"]).reshape(ell, ell),)


class Gmm(Module):
    def __init__(self):
        self.compiled = {}
        self.functions = {"objective": self.objective, "jacobian": self.jacobian}

    def prepare(self, function, data):
        sizes = (data["d"], data["k"], data["n"], data["m"], float(data["gamma"]))
        if sizes not in self.compiled:
            fn = obj.make_gmm(*sizes)
            self.compiled[sizes] = (fn, _compiled(fn, argnums=(0, 1, 2, 3)))
        arrays = [_floats(data[key]) for key in ("alpha", "mu", "q", "l", "x")]
        arrays[3] = arrays[3].reshape(data["k"], -1)
        return (sizes, *arrays)

    def objective(self, sizes, *arrays):
        return float(self.compiled[sizes][0](*arrays))

    def jacobian(self, sizes, *arrays):
        grads = self.compiled[sizes][1](*arrays)
        return {key: g for key, g in zip(("alpha", "mu", "q", "l"), grads,
                                                    strict=True)}


class Kmeans(Module):
    def __init__(self):
        self.functions = {"cost": lambda c, p: _scalar(obj.kmeans_cost(c, p)),
                          "dir": obj.kmeans_direction}

    def prepare(self, function, data):
        return _floats(data["centroids"]), _floats(data["points"])


class Lstm(Module):
    def __init__(self):
        gradient = _compiled(obj.lstm_objective, argnums=(0, 1))

        def jacobian(*args):
            main, extra = gradient(*args)
            return np.concatenate([main.reshape(-1), extra.reshape(-1)])

        self.functions = {"objective": lambda *args: float(obj.lstm_objective(*args)),
                          "jacobian": jacobian}

    def prepare(self, function, data):
        return tuple(_floats(data[key]) for key in
                     ("main_params", "extra_params", "state", "sequence"))


# The evals' four variants: outer (argmin) and inner derivative, f(orward) or r(everse).
NESTED_VARIANTS = ("rr", "ff", "fr", "rf")


def _variants(fn):
    """One function per variant: ``fn(variant, *input)``."""
    return {v: functools.partial(fn, v) for v in NESTED_VARIANTS}


class Particle(Module):
    """``objectives.particle`` in each variant's modes."""

    def __init__(self):
        self.functions = _variants(obj.particle)

    def prepare(self, function, data):
        return (float(data["w"]),)


class Saddle(Module):
    """``objectives.saddle`` in each variant's modes."""

    def __init__(self):
        self.functions = _variants(obj.saddle)

    def prepare(self, function, data):
        return (_floats(data["start"]),)


MODULES = {"hello": Hello, "lse": Lse, "llsq": Llsq, "ode": Ode, "det": Det, "gmm": Gmm,
           "kmeans": Kmeans, "lstm": Lstm, "particle": Particle, "saddle": Saddle, "ba": Ba,
           "ht": Ht}


def _ns(seconds):
    return int(seconds * 1e9)


class Tool:
    def __init__(self):
        self.modules = {}
        self.first_call = set()

    def start(self, message):
        return {"tool": "pullback", "config": {"pullback": pb.__version__}}

    def define(self, message):
        name = message["module"]
        if name not in MODULES:
            return {"success": False, "error": f"unknown module {name!r}"}
        start = time.perf_counter_ns()
        self.modules[name] = MODULES[name]()
        return {"success": True,
                "timings": [{"name": "define", "nanoseconds": time.perf_counter_ns() - start}]}

    def evaluate(self, message):
        module = self.modules[message["module"]]
        function = message["function"]
        data = message["input"]
        runs = data.get("min_runs", 1) if isinstance(data, dict) else 1
        seconds = data.get("min_seconds", 0) if isinstance(data, dict) else 0
        start = time.perf_counter_ns()
        args = module.prepare(function, data)
        timings = [{"name": "prepare", "nanoseconds": time.perf_counter_ns() - start}]
        fn = module.functions[function]
        # pullback transforms the source on a function's first call (one function may
        # serve several names: particle's and saddle's variants)
        if fn not in self.first_call:
            start = time.perf_counter_ns()
            fn(*args)
            timings.append({"name": "compile", "nanoseconds": time.perf_counter_ns() - start})
            self.first_call.add(fn)
        begin = time.perf_counter()
        count = 0
        while count < runs or time.perf_counter() - begin < seconds:
            start = time.perf_counter_ns()
            output = fn(*args)
            timings.append({"name": "evaluate", "nanoseconds": time.perf_counter_ns() - start})
            count += 1
        return {"success": True, "output": _jsonable(output), "timings": timings}


def main():
    tool = Tool()
    handlers = {"start": tool.start, "define": tool.define, "evaluate": tool.evaluate}
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        response = {"id": message["id"]}
        handler = handlers.get(message.get("kind"))
        if handler is not None:
            try:
                response.update(handler(message))
            except Exception:  # noqa: BLE001 -- the eval is told, and the tool goes on
                response.update({"success": False, "error": traceback.format_exc()})
        print(json.dumps(response), flush=True)
        if message.get("kind") == "end":
            break


if __name__ == "__main__":
    main()
