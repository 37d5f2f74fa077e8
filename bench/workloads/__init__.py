"""The benchmark's workloads, W1..W7, each written once per tool with the same math.

Every workload module defines:

- ``NAME``; ``WRT``, the indices of the differentiated arguments; ``CASES``, the
  sizes to run under each mode (``"full"``, ``"quick"``, ``"test"``), each a dict of
  keyword arguments for ``make_inputs``; ``label(size)``, the row label;
- ``make_inputs(**size)``: the arguments, float64 numpy arrays or Python floats;
- ``loss(*args)``: the primal in plain numpy.  It is what the numpy reference and
  pullback's compiled road run as the primal, and what ``pb.grad`` differentiates;
- ``grad_manual(*args)``: the hand-written numpy gradient, a tuple with one array
  per differentiated argument.  It is the reference every tool is checked against;
- ``loss_nd(*args)``: the same math on pullback's NDArrays, for the eager tape;
- ``jax_loss()``, ``torch_loss()``, ``autograd_loss()``: builders returning the
  tool's loss function (they import the tool, so this package imports without
  peers); ``jax_jit_loss()`` where jitting needs ``lax`` control flow;
- ``numba_impl()``: ``(primal, gradient)`` njit functions, a hand-written adjoint;
- optionally ``mxnet_loss()`` (W1 only).
"""

from . import w1_chapter, w2_elementwise, w3_rnn, w4_logreg, w5_mlp, w6_lotka_volterra, w7_sin_loop

ALL = [w1_chapter, w2_elementwise, w3_rnn, w4_logreg, w5_mlp, w6_lotka_volterra, w7_sin_loop]


def cases(mode: str):
    """``(module, size)`` pairs to run in ``mode`` ("full", "quick" or "test")."""
    return [(module, size) for module in ALL for size in module.CASES[mode]]
