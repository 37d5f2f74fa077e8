"""Parameter and batch structures: nested tuples and lists of arrays (or numbers).

A structure's *definition* is hashable (a worker's cache key): ``LEAF`` for an array or a
number, ``("tuple", (defs...))`` / ``("list", (defs...))`` for containers.  Compiled code
has no dicts yet (docs/ARCHITECTURE.md, known limits), so a dict is refused here, once.
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
        raise TypeError("dict parameters or batches are not supported yet (compiled code has "
                        "no dicts): pass a tuple or a list of arrays")
    leaves.append(tree)
    return LEAF


def unflatten(definition, leaves):
    """The structure ``definition`` filled with ``leaves`` (an iterable, consumed in order)."""
    leaves = iter(leaves)
    return _unflatten(definition, leaves)


def _unflatten(definition, leaves):
    if definition == LEAF:
        return next(leaves)
    kind, children = definition
    items = [_unflatten(c, leaves) for c in children]
    return tuple(items) if kind == "tuple" else items


def count(definition):
    """The number of leaves of a structure."""
    if definition == LEAF:
        return 1
    return sum(count(c) for c in definition[1])


def source(definition, names):
    """Python source building the structure from the leaf names (an iterator)."""
    if definition == LEAF:
        return next(names)
    kind, children = definition
    items = [source(c, names) for c in children]
    if kind == "tuple":
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    return "[" + ", ".join(items) + "]"
