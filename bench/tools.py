"""The tools the benchmark compares, each as a builder: workload + inputs -> Impl.

An ``Impl`` holds two zero-argument callables: ``primal()`` runs the loss and
``gradient()`` runs the loss and its gradient, both finished when they return (JAX
results are blocked on, MXNet's are waited for), and ``to_numpy`` converts the
gradient to a tuple of numpy arrays for the check, outside the timed region.

A builder raises ``Refused`` when the tool cannot express the workload as asked (the
reason is printed in the table); any other exception is reported as a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent

# Peers are the AD tools pullback is compared with; the references are not AD tools.
REFERENCES = ("numpy (hand-written)", "numba (hand adjoint)")
PULLBACK = ("pullback", "pullback eager", "pullback native road", "pullback python road")
PEERS = ("jax", "jax eager", "torch", "autograd", "tangent", "warp", "drjit", "mxnet")

class Refused(Exception):
    """The tool cannot run this workload as specified (e.g. JAX refusing reverse mode)."""


@dataclass
class Impl:
    primal: Callable[[], object]
    gradient: Callable[[], object]
    to_numpy: Callable[[object], tuple] = field(default=lambda g: tuple(np.asarray(x) for x in g))
    close: Callable[[], None] = field(default=lambda: None)
    first_call: float | None = None     # set by a builder that had to make the first call


def _as_tuple(g):
    return g if isinstance(g, tuple) else (g,)


# ----- the reference and pullback ----------------------------------------------------------

def numpy_manual(module, args):
    primal = getattr(module, "primal_manual", module.loss)
    return Impl(lambda: primal(*args), lambda: module.grad_manual(*args))


def pullback_compiled(module, args):
    import pullback as pb

    import os

    gradient = pb.grad(pb.compile(module.loss), argnums=tuple(module.WRT))

    def run():   # pullback's defaults: the road tools below set PULLBACK_NATIVE_FUNCTIONS
        if "PULLBACK_NATIVE_FUNCTIONS" in os.environ:   # and rounds interleave the tools
            del os.environ["PULLBACK_NATIVE_FUNCTIONS"]
        return gradient(*args)

    return Impl(lambda: module.loss(*args), run)


def _pullback_road(flag):
    """``pb.grad`` with whole-function native code on (``"1"``) or off (``"0"``): the
    road is read from PULLBACK_NATIVE_FUNCTIONS at each call, so each call sets it (once
    per batch in effect: the harness times one tool's batch at a time)."""
    import os

    def build(module, args):
        import pullback as pb

        gradient = pb.grad(pb.compile(module.loss), argnums=tuple(module.WRT))

        def run():
            if os.environ.get("PULLBACK_NATIVE_FUNCTIONS") != flag:
                os.environ["PULLBACK_NATIVE_FUNCTIONS"] = flag
            return gradient(*args)

        return Impl(lambda: module.loss(*args), run)

    return build


def pullback_eager(module, args):
    from pullback import autograd as ag
    from pullback import nd

    def to_nd(value):
        if isinstance(value, np.ndarray):
            return nd.array(value)
        if isinstance(value, float):
            return nd.array(np.array([value]))
        return value

    nd_args = [to_nd(a) for a in args]
    wrt = [nd_args[i] for i in module.WRT]
    for a in wrt:
        a.attach_grad()

    def gradient():
        with ag.record():
            out = module.loss_nd(*nd_args)
        out.backward()
        return tuple(a.grad for a in wrt)

    return Impl(lambda: module.loss_nd(*nd_args), gradient,
                to_numpy=lambda g: tuple(x.asnumpy() for x in g))


# ----- peers ---------------------------------------------------------------------------------

def _jax_args(args):
    import jax.numpy as jnp

    return [jnp.asarray(a) if isinstance(a, np.ndarray) else a for a in args]


def jax_jit(module, args):
    """``jit`` of the loss and of its ``grad`` (``jax_jit_loss`` where one is given)."""
    import jax

    loss = module.jax_jit_loss() if hasattr(module, "jax_jit_loss") else module.jax_loss()
    static = tuple(i for i, a in enumerate(args) if isinstance(a, int))
    primal = jax.jit(loss, static_argnums=static)
    gradient = jax.jit(jax.grad(loss, argnums=tuple(module.WRT)), static_argnums=static)
    jargs = _jax_args(args)
    start = time.perf_counter()
    try:
        jax.block_until_ready(gradient(*jargs))      # tracing is where JAX refuses
    except Exception as error:
        raise Refused(f"jit(grad): {_first_line(error)}") from error
    return Impl(lambda: jax.block_until_ready(primal(*jargs)),
                lambda: jax.block_until_ready(gradient(*jargs)),
                first_call=time.perf_counter() - start)


def jax_eager(module, args):
    """``jax.grad`` without ``jit``: Python control flow on concrete values works."""
    import jax

    loss = module.jax_loss()
    gradient = jax.grad(loss, argnums=tuple(module.WRT))
    jargs = _jax_args(args)
    return Impl(lambda: jax.block_until_ready(loss(*jargs)),
                lambda: jax.block_until_ready(gradient(*jargs)))


def torch_eager(module, args):
    import torch

    def to_tensor(i, value):
        if isinstance(value, np.ndarray):
            t = torch.from_numpy(value)
        elif isinstance(value, float):
            t = torch.tensor(value, dtype=torch.float64)
        else:
            return value
        return t.requires_grad_(i in module.WRT)

    loss = module.torch_loss()
    targs = [to_tensor(i, a) for i, a in enumerate(args)]
    wrt = [targs[i] for i in module.WRT]

    def primal():
        with torch.no_grad():
            return loss(*targs)

    return Impl(primal, lambda: torch.autograd.grad(loss(*targs), wrt),
                to_numpy=lambda g: tuple(x.detach().numpy() for x in g))


def hips_autograd(module, args):
    import autograd

    loss = module.autograd_loss()
    gradient = autograd.grad(loss, argnum=tuple(module.WRT))
    return Impl(lambda: loss(*args), lambda: gradient(*args))


def tangent(module, args):
    """tangent-ad (the maintained fork of Google's Tangent) on the workload's own numpy
    ``loss``, as a user would try it first; its own error is the refusal's reason."""
    import tangent as _tangent

    loss = getattr(module, "tangent_loss", lambda: module.loss)()
    try:
        gradient = _tangent.grad(loss, wrt=tuple(module.WRT), verbose=0)
    except Exception as error:   # noqa: BLE001 -- the tool's own reason, in the table
        raise Refused(f"tangent.grad: {_first_line(error)}") from error
    return Impl(lambda: loss(*args), lambda: _as_tuple(gradient(*args)))


def warp(module, args):
    """NVIDIA Warp on the CPU device: the workload's kernels (``warp_impl``), recorded on a
    ``wp.Tape`` and run backward, synchronised before returning."""
    if not hasattr(module, "warp_impl"):
        raise Refused("not written for Warp (array-shaped kernels per workload; only the "
                      "scalar loops W6 and W7 are)")
    import warp as _wp

    _wp.config.quiet = True
    _wp.init()
    primal, gradient = module.warp_impl(_wp, args)
    return Impl(primal, gradient)


def drjit(module, args):
    """Dr.Jit's LLVM backend with AD (``drjit.llvm.ad``): the workload as ``drjit_impl``
    (loops as ``dr.while_loop`` with the trip count as ``max_iterations``, the form its
    reverse mode accepts), results read back (evaluated) before returning."""
    if not hasattr(module, "drjit_impl"):
        raise Refused("not written for Dr.Jit (only the scalar loops W6 and W7 are)")
    import drjit as _dr

    primal, gradient = module.drjit_impl(_dr, args)
    return Impl(primal, gradient)


def numba_adjoint(module, args):
    primal, gradient = module.numba_impl()
    return Impl(lambda: primal(*args), lambda: gradient(*args))


def mxnet(module, args):
    """MXNet 1.9.1 in its own venv (numpy < 1.24), driven through ``mxnet_worker.py``."""
    if not hasattr(module, "MXNET_MODULE"):
        raise Refused("not written for MXNet (the issue asks for W1 only)")
    python = BENCH / ".venv-mxnet" / "bin" / "python"
    if not python.exists():
        raise Refused("bench/.venv-mxnet is missing (see the setup messages above)")
    return RemoteImpl(python, module.MXNET_MODULE, module.WRT, args)


class RemoteImpl(Impl):
    """A tool in another interpreter; every call is a JSON line to ``mxnet_worker.py``."""

    def __init__(self, python, module_name, wrt, args):
        self.dir = tempfile.TemporaryDirectory(prefix="pullback-bench-")
        paths = []
        for i, a in enumerate(args):
            path = os.path.join(self.dir.name, f"arg{i}.npy")
            np.save(path, np.asarray(a))
            paths.append(path)
        self.proc = subprocess.Popen([str(python), str(BENCH / "mxnet_worker.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=os.environ.copy())
        reply = self._ask(cmd="setup", module=module_name, args=paths, wrt=list(wrt),
                          out=self.dir.name)
        if not reply.get("ok"):
            self.close()
            raise RuntimeError(reply.get("error", "worker failed"))
        self.version = reply.get("version")
        super().__init__(self._primal, self._gradient, to_numpy=self._load, close=self.close)

    def _ask(self, **message):
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the MXNet worker exited")
        return json.loads(line)

    def _primal(self):
        return self._ask(cmd="run", what="primal")

    def _gradient(self):
        return self._ask(cmd="run", what="gradient")

    def time(self, what, number):
        """Seconds per call measured inside the worker (no pipe round trip)."""
        return self._ask(cmd="time", what=what, number=number)["seconds"]

    def _load(self, reply):
        return tuple(np.load(p) for p in reply["grads"])

    def close(self):
        if self.proc.poll() is None:
            try:
                self._ask(cmd="quit")
            except (RuntimeError, BrokenPipeError, ValueError):
                pass
            self.proc.wait(timeout=10)
        self.dir.cleanup()


def _first_line(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


# name -> builder; the order is the order of the rows
BUILDERS = {
    "numpy (hand-written)": numpy_manual,
    "numba (hand adjoint)": numba_adjoint,
    "pullback": pullback_compiled,
    "pullback eager": pullback_eager,
    "pullback native road": _pullback_road("1"),
    "pullback python road": _pullback_road("0"),
    "jax": jax_jit,
    "torch": torch_eager,
    "autograd": hips_autograd,
    "tangent": tangent,
    "warp": warp,
    "drjit": drjit,
    "mxnet": mxnet,
}
NEEDS = {"numba (hand adjoint)": "numba", "jax": "jax", "torch": "torch",
         "autograd": "autograd", "mxnet": None, "tangent": "tangent", "warp": "warp",
         "drjit": "drjit"}


def available(name) -> bool:
    """Whether a tool's package imports here (the peers live in bench/.venv-peers)."""
    package = NEEDS.get(name, "")
    if not package:
        return True
    try:
        __import__(package)
    except ImportError:
        return False
    return True


def setup_process():
    """Configure the peers for this process: float64 JAX, one thread everywhere."""
    if available("jax"):
        import jax

        jax.config.update("jax_enable_x64", True)
        jax.config.update("jax_platforms", "cpu")
    if available("torch"):
        import torch

        torch.set_num_threads(1)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0], "numpy": np.__version__}
    for package in ("jax", "jaxlib", "torch", "autograd", "numba", "scipy", "tangent-ad",
                    "warp-lang", "drjit"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out
