"""Runs one MXNet workload for ``tools.RemoteImpl``; JSON lines on stdin/stdout.

Lives in bench/.venv-mxnet (MXNet 1.9.1 needs numpy < 1.24, pullback numpy >= 1.24),
so it imports only numpy, mxnet and the workload's MXNet file.

    {"cmd": "setup", "module": m, "args": [npy paths], "wrt": [...], "out": dir}
        -> {"ok": true, "version": ...}
    {"cmd": "run", "what": "primal" | "gradient"}  -> {"value": ..., "grads": [npy paths]}
    {"cmd": "time", "what": ..., "number": k}      -> {"seconds": per call}
    {"cmd": "quit"}                                -> {}
"""

import importlib.util
import json
import os
import sys
import time
import traceback

import numpy as np


def load(name):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workloads", name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Workload:
    def __init__(self, module, args, wrt, out):
        import mxnet as mx
        from mxnet import autograd, nd

        self.autograd = autograd
        self.loss = load(module).mxnet_loss()
        self.args = [nd.array(np.load(p), dtype="float64") for p in args]
        self.wrt = [self.args[i] for i in wrt]
        for a in self.wrt:
            a.attach_grad()
        self.out = out
        self.version = mx.__version__

    def primal(self):
        value = self.loss(*self.args)
        value.wait_to_read()
        return value

    def gradient(self):
        with self.autograd.record():
            value = self.loss(*self.args)
        value.backward()
        for a in self.wrt:
            a.grad.wait_to_read()
        return value

    def run(self, what):
        value = getattr(self, what)()
        grads = []
        if what == "gradient":
            for i, a in enumerate(self.wrt):
                path = os.path.join(self.out, f"grad{i}.npy")
                np.save(path, a.grad.asnumpy())
                grads.append(path)
        return {"value": float(value.asscalar()), "grads": grads}

    def time(self, what, number):
        fn = getattr(self, what)
        start = time.perf_counter()
        for _ in range(number):
            fn()
        return {"seconds": (time.perf_counter() - start) / number}


def main():
    workload = None
    for line in sys.stdin:
        message = json.loads(line)
        try:
            if message["cmd"] == "setup":
                workload = Workload(message["module"], message["args"], message["wrt"],
                                    message["out"])
                reply = {"ok": True, "version": workload.version}
            elif message["cmd"] == "run":
                reply = workload.run(message["what"])
            elif message["cmd"] == "time":
                reply = workload.time(message["what"], message["number"])
            else:
                print("{}", flush=True)
                return
        except Exception:  # noqa: BLE001 -- sent back to the benchmark as the reason
            reply = {"ok": False, "error": traceback.format_exc()}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
