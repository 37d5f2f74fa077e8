"""Parameter and batch structures: nested tuples, lists and dicts of arrays (or numbers).

A structure's *definition* is hashable (a worker's cache key): ``LEAF`` for an array or a
number, ``("tuple", (defs...))`` / ``("list", (defs...))`` for sequences, ``("dict",
(keys...), (defs...))`` for a dict (its keys in order; str, int, bool or None, as compiled
code takes them).
"""

LEAF = "*"


def flatten(tree):
    """``(definition, leaves)`` of ``tree``, leaves in depth-first order."""
    leaves = []
    return _flatten(tree, leaves), leaves


def _flatten(tree, leaves):
    if isinstance(tree, (tuple, list)):
        kind = "tuple" if isinstance(tree, tuple) else "list"
        return (kind, tuple(_flatten(t, leaves) for t in tree))
    if isinstance(tree, dict):
        bad = [k for k in tree if not isinstance(k, (str, int, bool, type(None)))]
        if bad:
            raise TypeError(f"dict keys of parameters or batches must be str, int, bool or "
                            f"None, got {bad[0]!r}")
        return ("dict", tuple(tree), tuple(_flatten(t, leaves) for t in tree.values()))
    leaves.append(tree)
    return LEAF


def unflatten(definition, leaves):
    """The structure ``definition`` filled with ``leaves`` (an iterable, consumed in order)."""
    leaves = iter(leaves)
    return _unflatten(definition, leaves)


def _unflatten(definition, leaves):
    if definition == LEAF:
        return next(leaves)
    if definition[0] == "dict":
        _, keys, children = definition
        return {k: _unflatten(c, leaves) for k, c in zip(keys, children, strict=True)}
    kind, children = definition
    items = [_unflatten(c, leaves) for c in children]
    return tuple(items) if kind == "tuple" else items


def count(definition):
    """The number of leaves of a structure."""
    if definition == LEAF:
        return 1
    return sum(count(c) for c in definition[-1])


def source(definition, names):
    """Python source building the structure from the leaf names (an iterator)."""
    if definition == LEAF:
        return next(names)
    if definition[0] == "dict":
        _, keys, children = definition
        return "{" + ", ".join(f"{k!r}: {source(c, names)}"
                               for k, c in zip(keys, children, strict=True)) + "}"
    kind, children = definition
    items = [source(c, names) for c in children]
    if kind == "tuple":
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    return "[" + ", ".join(items) + "]"
