"""Calling a whole function lowered to native code (``compiler/lower_function.py``).

A ``NativeGradient`` is one value-and-gradient function for one argument signature:
``call(args, seed)`` checks every argument's type against the signature it was
compiled for (nothing of another type ever enters native code), makes one native call
through its fastcall entry (``runtime/native_entry.py``, compiled at the second call;
ctypes before, where the entry is not available, and as the entry's careful fallback),
and returns ``(value, gradients)`` as
the Python road would (numpy float64 where it computes with numpy, Python floats where it
computes with Python numbers, None for a zero gradient), or None when the native code
asks for the Python road (a case where Python raises or leaves int64: the caller runs the
Python road, which then gives the exact result or exception).
"""

from __future__ import annotations

import ctypes

import numpy as np

from . import native, native_entry

OK, PYTHON_ROAD, NO_MEMORY, UNPAIRED = 0, 1, 2, 3
#: byte offsets of numpy's PyArrayObject fields native code reads (lower_arrays.py)
ARRAY_DATA_OFFSET, ARRAY_DIMS_OFFSET = 16, 32
_BOX = {"f64": np.float64, "float": np.float64, "pyfloat": float, "f32": np.float32}
_INT64 = (-(1 << 63), 1 << 63)
#: the entry's box of a number kind, and what each exact argument type is read as
_ENTRY_BOX = {"f64": "f64", "float": "f64", "pyfloat": "float", "f32": "f32"}
_ACCEPTED = {float: "float", np.float64: "f64", np.float32: "f32", int: "int", bool: "bool"}
#: the box of a differentiated argument's gradient, by the user's argument type (what
#: ``api._external_gradient`` makes of it)
_USER_GRADIENT_BOX = {float: "float", int: "float", np.float64: "float", np.float32: "f32"}
_FLOAT64 = np.dtype(np.float64).str


def _accepted(t) -> str:
    """What the entry accepts for a signature's type: an exact number type, or an array."""
    return native_entry.ARRAY if isinstance(t, tuple) else _ACCEPTED[t]


def _header_layout_holds() -> bool:
    """Whether this numpy's array header has its data pointer and dimensions where native
    code reads them (checked once on a sample array; if not, arrays stay on the Python
    road)."""
    sample = np.zeros((3, 5))
    data = ctypes.c_void_p.from_address(id(sample) + ARRAY_DATA_OFFSET).value
    dims = ctypes.c_void_p.from_address(id(sample) + ARRAY_DIMS_OFFSET).value
    return data == sample.ctypes.data and dims is not None and \
        (ctypes.c_int64 * 2).from_address(dims)[:] == [3, 5]


ARRAYS_SUPPORTED = _header_layout_holds()


def signature_key(value):
    """What a native function's signature fixes about an argument: its exact type, and for
    a numpy array also its dtype and number of axes."""
    kind = type(value)
    if kind is np.ndarray:
        return (np.ndarray, value.dtype.str, value.ndim)
    return kind


def key_name(key) -> str:
    if isinstance(key, tuple):
        return f"ndarray[{np.dtype(key[1]).name}, {key[2]}d]"
    return key.__name__


def _accepts(signature, arrays, args) -> bool:
    """Whether ``args`` have exactly the types of ``signature`` (arrays at the positions
    ``arrays`` C-contiguous and aligned, ints within int64): else the Python road."""
    if tuple(map(signature_key, args)) != signature:
        return False
    for k in arrays:   # native code reads them as C-contiguous aligned data
        flags = args[k].flags
        if not (flags.c_contiguous and flags.aligned):
            return False
    return all(_INT64[0] <= a < _INT64[1] for a in args if type(a) is int)


class NativeGradient:
    """``call(args, seed) -> (value, gradients) | None`` for one argument signature.

    Args:
        ir_text, symbol: the function's IR and name.
        signature: the exact Python type of each argument it accepts.
        directory: an extra object cache looked in first and written to (``pullback
            compile``'s, beside the user's source).
        value_kind: the number kind of the value; gradient_kinds: per parameter, the kind
            of its gradient, or None when it is always None.
    """

    def __init__(self, ir_text, symbol, signature, value_kind, gradient_kinds, directory=None,
                 loaded=None):
        # loaded: (address, how) of code already linked (from a manifest: no IR text)
        address, self.how = loaded or native._engine().load(ir_text, symbol, directory)
        argtypes = [ctypes.py_object if isinstance(t, tuple) else
                    ctypes.c_int64 if t in (int, bool) else ctypes.c_double for t in signature]
        self._arrays = [k for k, t in enumerate(signature) if isinstance(t, tuple)]
        self._fn = ctypes.CFUNCTYPE(ctypes.c_int32, *argtypes, ctypes.c_double,
                                    ctypes.c_void_p,
                                    *[ctypes.py_object] * len(self._arrays))(address)
        self.signature = tuple(signature)
        self.symbol, self.ir_text = symbol, ir_text
        self.value_kind, self.gradient_kinds = value_kind, tuple(gradient_kinds)
        self._value_box = _BOX[value_kind]
        self._boxes = [None if k is None else _BOX[k] for k in gradient_kinds]
        self._n = 1 + 2 * len(gradient_kinds)
        self.address = address
        # the raw fastcall entry (native_entry.py; numbers and float64 arrays), compiled
        # at the second call: pb.grad's first call installs its own gradient entry and
        # never needs this one again, value_and_grad and vjp use it from then on
        self._entry, self._entry_spec, self._calls = None, None, 0
        self._native = tuple(t[2] if isinstance(t, tuple) else "i64" if t in (int, bool)
                             else "double" for t in signature)
        if native_entry.available() and all(t[1] == _FLOAT64 for t in signature
                                            if isinstance(t, tuple)):
            self._entry_spec = native_entry.EntrySpec(
                tuple(zip(map(_accepted, signature), self._native, strict=True)),
                seed=True, value=_ENTRY_BOX[value_kind],
                gradients=tuple(native_entry.ARRAY if isinstance(t, tuple) else
                                "float" if k is None else _ENTRY_BOX[k]
                                for t, k in zip(signature, gradient_kinds, strict=True)),
                zero_is_none=True, single=False, check_environment=False)
            self._fallback = self._careful   # kept alive: the entry holds only its address
        self.how += ", fastcall" if self._entry_spec is not None else ", ctypes"

    def prepare_entry(self):
        """Compile (or load) the raw entry now (``pullback compile`` caches it)."""
        if self._entry is None and self._entry_spec is not None:
            self._entry = native_entry.entry(self._entry_spec, self.address, self._fallback)
            if self._entry is None:
                self._entry_spec = None
        return self._entry

    def accepts(self, args) -> bool:
        return _accepts(self.signature, self._arrays, args)

    def call(self, args, seed):
        """(value, gradients) or None (run the Python road); raises MemoryError."""
        entry = self._entry
        if entry is None:
            self._calls += 1
            if self._calls < 2 or self.prepare_entry() is None:
                return self._call_ctypes(args, seed)
            entry = self._entry
        done = entry(*args, float(seed))
        return None if done is None else (done[0], done[1:])

    def _careful(self, *args):
        """The entry's fallback: the same call through ctypes, results as a tuple."""
        args, seed = args[:-1], args[-1]
        if not self.accepts(args):
            return None
        done = self._call_ctypes(args, seed)
        return None if done is None else (done[0], *done[1])

    def gradient_entry(self, user_types, positions, single, fallback):
        """A builtin computing what ``pb.grad`` returns for arguments of exactly the types
        ``user_types`` (Python and numpy numbers, numpy arrays) differentiating
        ``positions`` (increasing), or None.  Other arguments (an array of another dtype
        or number of axes, not C-contiguous...), a status other than OK or the
        environment turning native functions off: ``fallback(*args)``."""
        if self._entry_spec is None:
            return None
        arguments, boxes = [], []
        for k, (user, native_type) in enumerate(zip(user_types, self._native, strict=True)):
            expected = self.signature[k]
            if isinstance(expected, tuple):   # a float64 array: passed as itself
                if user is not np.ndarray:
                    return None
                arguments.append((native_entry.ARRAY, native_type))
                boxes.append(native_entry.ARRAY if k in positions else None)
            elif k in positions:
                internal = np.float32 if user is np.float32 else np.float64
                if user not in _USER_GRADIENT_BOX or expected is not internal:
                    return None
                arguments.append((_ACCEPTED[user], "double"))
                boxes.append(_USER_GRADIENT_BOX[user])
            else:
                if user is not expected:
                    return None
                arguments.append((_ACCEPTED[user], native_type))
                boxes.append(None)
        spec = native_entry.EntrySpec(tuple(arguments), seed=False, value=None,
                                      gradients=tuple(boxes), zero_is_none=False,
                                      single=single, check_environment=True)
        return native_entry.entry(spec, self.address, fallback)

    def _call_ctypes(self, args, seed):
        results = (ctypes.c_double * self._n)()
        outs = [np.empty(args[k].shape) for k in self._arrays]
        status = self._fn(*args, float(seed), results, *outs)
        if status == PYTHON_ROAD:
            return None
        if status == NO_MEMORY:
            raise MemoryError("pullback: the native stack could not grow")
        if status != OK:
            raise RuntimeError(f"pullback bug: native function {self.symbol} returned "
                               f"status {status}")
        grads = [None if box is None or not results[1 + 2 * k] else box(
            results[2 + 2 * k]) for k, box in enumerate(self._boxes)]
        for k, out in zip(self._arrays, outs, strict=True):
            grads[k] = out if self._boxes[k] is not None and results[1 + 2 * k] else None
        grads = tuple(grads)
        return self._value_box(results[0]), grads


class NativeTangent:
    """``call(args) -> (value, value tangent) | None`` for one argument signature of a
    tangent function (``compiler/lower_function.lower_tangent``; ``args``: the primals,
    then their tangents): the same exact argument checks as ``NativeGradient``, one
    ctypes call, the two numbers boxed by their kinds as the Python road computes them;
    None when the native code asks for the Python road.

    Args:
        ir_text, symbol: the function's IR and name.
        signature: the exact Python type of each argument it accepts.
        value_kind, tangent_kind: the number kinds of the value and of its tangent.
    """

    def __init__(self, ir_text, symbol, signature, value_kind, tangent_kind):
        address, self.how = native._engine().load(ir_text, symbol)
        argtypes = [ctypes.py_object if isinstance(t, tuple) else
                    ctypes.c_int64 if t in (int, bool) else ctypes.c_double for t in signature]
        self._arrays = [k for k, t in enumerate(signature) if isinstance(t, tuple)]
        self._fn = ctypes.CFUNCTYPE(ctypes.c_int32, *argtypes, ctypes.c_void_p)(address)
        self.signature, self.symbol, self.ir_text = tuple(signature), symbol, ir_text
        self.value_kind, self.tangent_kind = value_kind, tangent_kind
        self._boxes = (_BOX[value_kind], _BOX[tangent_kind])
        self.address = address
        self.how += ", ctypes"

    def accepts(self, args) -> bool:
        return _accepts(self.signature, self._arrays, args)

    def call(self, args):
        """(value, tangent) or None (run the Python road); raises MemoryError."""
        results = (ctypes.c_double * 2)()
        status = self._fn(*args, results)
        if status == PYTHON_ROAD:
            return None
        if status == NO_MEMORY:
            raise MemoryError("pullback: native memory could not be allocated")
        if status != OK:
            raise RuntimeError(f"pullback bug: native tangent {self.symbol} returned "
                               f"status {status}")
        return self._boxes[0](results[0]), self._boxes[1](results[1])
