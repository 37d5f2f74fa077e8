"""The table's scalar formulas (used by fused kernels) agree with its forwards and VJP rules."""

import numpy as np
import pytest

from pullback.compiler.fuse import numpy_source, substitute
from pullback.runtime import fused
from pullback.runtime import primitives as P

ELEMENTWISE = [p for p in P.REGISTRY.values() if p.scalar and p.vjps is not None]


def _operands(prim, dtype, rng):
    positive = prim.name in ("log", "sqrt", "power", "log1p", "log2", "log10")
    low, high = (0.2 if positive else -2.0), 2.0
    if prim.name in ("arcsin", "arccos", "arctanh"):   # their domain: (-1, 1)
        low, high = -0.95, 0.95
    elif prim.name == "arccosh":
        low, high = 1.05, 3.0
    x = rng.uniform(low, high, 64).astype(dtype)
    if prim.name == "sinc":
        x[::8] = 0   # its branch at 0, and its series near 0
        x[1::8] = x[1::8] * 1e-3
    y = rng.uniform(0.5, 2.0, 64).astype(dtype)
    return [x, y][:len(prim.vjps)]


def _evaluate(formula, **values):
    names = {k: f"v_{k}" for k in values}
    source = numpy_source(substitute(formula, names))
    return eval(source, {"_np": np, "_kernels": fused}, {f"v_{k}": v for k, v in values.items()})


def test_every_elementwise_primitive_has_scalar_derivatives():
    missing = [p.name for p in ELEMENTWISE if len(p.scalar_vjps) != len(p.vjps)]
    assert missing == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("prim", ELEMENTWISE, ids=[p.name for p in ELEMENTWISE])
def test_scalar_formula_matches_forward_and_rules(prim, dtype):
    rng = np.random.default_rng(3)
    operands = _operands(prim, dtype, rng)
    ans = np.asarray(prim.forward(*operands))
    bindings = dict(zip("xy", operands, strict=False))
    np.testing.assert_array_equal(_evaluate(prim.scalar, **bindings), ans)
    g = rng.uniform(-1, 1, 64).astype(dtype)
    for i, (rule, formula) in enumerate(zip(prim.vjps, prim.scalar_vjps, strict=True)):
        expected = np.asarray(rule(g, ans, *operands))
        if formula is None:
            assert not np.any(expected)
            continue
        got = np.broadcast_to(_evaluate(formula, g=g, ans=ans, **bindings), expected.shape)
        np.testing.assert_allclose(got, expected, rtol=4 * np.finfo(dtype).eps, atol=0,
                                   err_msg=f"{prim.name} derivative {i}")


@pytest.mark.parametrize("prim", ELEMENTWISE, ids=[p.name for p in ELEMENTWISE])
def test_rules_read_only_what_their_scalar_formulas_read(prim):
    """A fused kernel's statement-by-statement VJP may get stand-ins (right shape and dtype,
    no values) for what no scalar derivative reads (``fused.program_reads``): each table
    rule must then give the same gradient when every value its formula does not name is
    garbage (NaN)."""
    from pullback.compiler.fuse import formula_names

    rng = np.random.default_rng(5)
    operands = _operands(prim, np.float64, rng)
    ans = np.asarray(prim.forward(*operands))
    g = rng.uniform(-1, 1, 64)
    for i, (rule, formula) in enumerate(zip(prim.vjps, prim.scalar_vjps, strict=True)):
        if rule is None:
            continue
        expected = np.asarray(rule(g, ans, *operands))
        named = formula_names(formula) if formula is not None else set()
        garbage = [v if name in named else np.full_like(v, np.nan)
                   for name, v in zip("xy", operands, strict=False)]
        with np.errstate(all="ignore"):
            got = np.asarray(rule(g, ans if "ans" in named else np.full_like(ans, np.nan),
                                  *garbage))
        np.testing.assert_array_equal(got, expected, err_msg=f"{prim.name} rule {i}")
