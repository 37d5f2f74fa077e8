"""Containers as values (pytrees): what the compiler knows about a value's structure.

A *kind* says what a value is, as far as compiled code can know before it runs:

- ``LEAF``: an array or a number (what every primitive returns);
- ``ANY``: possibly a container, of unknown structure (a value the compiler cannot see
  into);
- a container kind: ``Kind("dict" | "list" | "tuple", items, elem)``, with ``items`` the
  ``((key, kind), ...)`` pairs when its keys (or length) are known, else None, and
  ``elem`` the join of every item's kind.

A differentiated container argument's kind is part of its variant's mask (the mask entry
is the ``Kind`` instead of ``True``), so a variant is compiled per structure of its
container arguments.  The gradient of a container is a container of its items'
gradients (a list for a list or tuple, a dict for a dict, None for an item that gets
none), built and read by ``runtime/support.py`` (``index_grad``, ``item_grad``,
``add_grads``, ...); ``api._to_internal``/``api._external_gradient`` convert at the API
boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pullback.runtime.ndarray import NDArray


@dataclass(frozen=True)
class Kind:
    tag: str                      # "leaf", "any", "dict", "list", "tuple"
    items: tuple | None = None    # ((key, Kind), ...) when every key is known
    elem: "Kind | None" = None    # the join of the items' kinds

    @property
    def container(self) -> bool:
        return self.tag in ("dict", "list", "tuple")

    def item(self, key=None, known=False) -> "Kind":
        """The kind of ``self[key]`` (``known``: ``key`` is a constant)."""
        if self.tag == "leaf":
            return LEAF   # indexing an array gives an array
        if not self.container:
            return ANY
        if known and self.items is not None:
            for k, kind in self.items:
                if k == key and type(k) is type(key):
                    return kind
        return self.elem or LEAF   # an empty container's items: none exist

    def __repr__(self) -> str:   # stable across processes (cache keys, names)
        if not self.container:
            return self.tag
        if self.items is None:
            return f"{self.tag}[*: {self.elem!r}]"
        return f"{self.tag}[{', '.join(f'{k!r}: {v!r}' for k, v in self.items)}]"


LEAF = Kind("leaf")
ANY = Kind("any")


def container(tag, items) -> Kind:
    """The kind of a container with ``items`` (``(key, kind)`` pairs)."""
    items = tuple(items)
    elem = None
    for _, kind in items:
        elem = kind if elem is None else join(elem, kind)
    return Kind(tag, items, elem)


def join(a: Kind | None, b: Kind | None) -> Kind | None:
    """The kind of a value that is of kind ``a`` on one path and ``b`` on another."""
    if a is None or a == b:
        return b
    if b is None:
        return a
    if a.tag != b.tag or not a.container:
        return ANY
    elem = join(a.elem, b.elem)
    return Kind(a.tag, None, elem)


_KEY_TYPES = (str, int, bool, type(None))


def structure(value) -> Kind | None:
    """The kind of a differentiated argument: None for an array or a number, a container
    kind for a (nested) dict, list or tuple of them.  A TypeError for anything else."""
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, _KEY_TYPES):
                raise TypeError(f"cannot differentiate with respect to a dict with a key "
                                f"of type {type(k).__name__} (only str, int, bool or None)")
        return container("dict", ((k, structure(v) or LEAF) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        tag = "list" if isinstance(value, list) else "tuple"
        return container(tag, ((k, structure(v) or LEAF) for k, v in enumerate(value)))
    if _is_leaf(value):
        return None
    refuse_leaf(value)


def refuse_leaf(value):
    """The TypeError for differentiating ``value``, which is not a leaf (a bool, a string,
    None, a complex number...).  ``api._to_internal`` raises it at every call too, so a
    derivative object whose variant was prepared for a float refuses a bool as the first
    call did (not reading it as 1.0)."""
    raise TypeError(f"cannot differentiate with respect to a {type(value).__name__} "
                    "(only arrays, numbers, and dicts, lists and tuples of them)")


def _is_leaf(value) -> bool:
    return (isinstance(value, (NDArray, np.ndarray, np.floating, np.integer, float, int))
            and not isinstance(value, (bool, np.bool_)))


def map_leaves(fn, value):
    """``value`` with each leaf replaced by ``fn(leaf)`` (new containers)."""
    if isinstance(value, dict):
        return {k: map_leaves(fn, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(map_leaves(fn, v) for v in value)
    return fn(value)


def leaves_of(value) -> list:
    """The leaves of ``value`` in order (a value that is no dict, list or tuple is one)."""
    found = []
    map_leaves(found.append, value)
    return found
