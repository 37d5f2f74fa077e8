"""Helpers imported by the compiler corpus (to test calls into another module)."""

import pullback.ndarray as nd


def imported_softplus(x):
    return nd.log1p(nd.exp(x))


def imported_pair(x, y):
    s = x + y
    d = x * y
    return s, d
