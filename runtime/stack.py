"""The stack that generated forward code pushes to and generated adjoint code pops.

The forward pass of a compiled function pushes what its adjoint cannot recompute
(branches taken, trip counts, overwritten values); the adjoint pops them in
reverse.  Each compiled call under ``record()`` owns one stack, kept by its tape
node, so interleaved calls never share one.

In debug mode (``Stack(debug=True)`` or ``PULLBACK_DEBUG_STACK=1``) every push
carries a tag naming what was pushed and where; a pop that finds another tag
raises ``StackMismatchError``, pinpointing an unpaired push/pop.
"""

from __future__ import annotations

import os


class StackMismatchError(RuntimeError):
    """A pop found a value pushed by a different statement (debug mode only)."""


_DEBUG = os.environ.get("PULLBACK_DEBUG_STACK", "") not in ("", "0")


class Stack:
    """A LIFO of values with optional tag checking."""

    __slots__ = ("_items", "_tags", "debug")

    def __init__(self, debug: bool | None = None):
        self._items = []
        self.debug = _DEBUG if debug is None else debug
        self._tags = [] if self.debug else None

    def push(self, value, tag: str = "") -> None:
        self._items.append(value)
        if self._tags is not None:
            self._tags.append(tag)

    def pop(self, tag: str = ""):
        if not self._items:
            raise StackMismatchError(f"pop of {tag or 'a value'} from an empty stack")
        if self._tags is not None:
            pushed = self._tags.pop()
            if pushed != tag:
                raise StackMismatchError(f"pop expected {tag!r} but found {pushed!r}")
        return self._items.pop()

    def __len__(self) -> int:
        return len(self._items)

    def nbytes(self) -> int:
        """The bytes of array data the stack holds (what the forward saved for the adjoint),
        counting each buffer once: numpy arrays, numbers and the containers holding them.
        A measuring aid for tests and bench/, not used by generated code."""
        return held_bytes(self._items)


def held_bytes(values) -> int:
    """The bytes of array data reachable from ``values`` (through lists and tuples; ranges
    and bools are free), each underlying buffer and each number object counted once (8
    bytes).  The stack's own slots (8 bytes per push) are not included: ``len(stack)``."""
    import numpy as np

    seen, total, todo = set(), 0, list(values)
    while todo:
        v = todo.pop()
        if isinstance(v, (list, tuple)):
            todo.extend(v)
        elif isinstance(v, (np.ndarray, np.generic)):
            base = v
            while isinstance(base, np.ndarray) and isinstance(base.base, np.ndarray):
                base = base.base
            if id(base) not in seen:
                seen.add(id(base))
                total += base.nbytes
        elif isinstance(v, (int, float, complex)) and not isinstance(v, bool) \
                and id(v) not in seen:
            seen.add(id(v))
            total += 8
    return total
