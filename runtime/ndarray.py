"""NDArray: a contiguous numpy buffer plus the bookkeeping autograd needs.

An NDArray holds ``_data`` (a C-contiguous numpy array, never 0-d: scalars are
shape ``(1,)`` as in MXNet) and this autograd state:

- ``_node``: the tape node that produced it (None for leaves and for arrays
  computed while nothing was recorded);
- ``_grad`` / ``_grad_req``: the gradient buffer ``attach_grad`` made, and how
  backward writes into it ('write' or 'add');
- ``_base``: None when the array owns its buffer; otherwise the array that owns
  the buffer this one views (``reshape``, basic indexing and ``detach`` return
  views, as in MXNet).  The two counters below live on the owner only, so a
  write through any view is seen by every node that saved any of them;
- ``_version``: bumped by every in-place change, so backward can tell that a
  value a node saved has since been overwritten;
- ``_users``: how many live, unfreed tape nodes hold this buffer as an input;
- ``_why``: why the array has no node, for the error if it is differentiated.

Every operator goes through the primitive table (``runtime/primitives.py``);
this file knows no op.
"""

from __future__ import annotations

import numpy as np

from .errors import (GradReqError, InPlaceError, IntegerGradError, MaskIndexError,
                     UnrecordedOpError)

_GRAD_REQS = ("write", "add", "null")


class Context:
    """The device an array lives on. pullback runs on the CPU only."""

    def __init__(self, device_type: str = "cpu", device_id: int = 0):
        self.device_type = device_type
        self.device_id = device_id

    def __repr__(self) -> str:
        return f"{self.device_type}({self.device_id})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Context) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


def cpu(device_id: int = 0) -> Context:
    """The CPU context (the only one)."""
    return Context("cpu", device_id)


def as_data(value) -> np.ndarray:
    """A C-contiguous, at least 1-d numpy array holding ``value``."""
    data = np.asarray(value)
    if data.ndim == 0:
        data = data.reshape(1)
    if not data.flags.c_contiguous:
        data = np.ascontiguousarray(data)
    return data



def check_float_gradient(dtype, what: str) -> None:
    """An IntegerGradError unless ``dtype`` is floating: an integer or bool gradient
    buffer would truncate the gradient (cos(1) -> 0) without a word."""
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise IntegerGradError(
            f"{what} an array of dtype {np.dtype(dtype).name}: its gradient would be "
            "truncated to that dtype (silently zero where it is below 1). What to do: "
            "convert it first, x = x.astype('float32') (or 'float64'), then attach_grad.")

class NDArray:
    """An n-dimensional array with MXNet's autograd API."""

    __slots__ = (
        "__weakref__",
        "_base",
        "_data",
        "_grad",
        "_grad_req",
        "_node",
        "_users",
        "_version",
        "_why",
    )
    __array_priority__ = 1000.0
    __array_ufunc__ = None  # numpy defers to our reflected operators

    def __init__(self, data: np.ndarray):
        self._data = data
        self._node = None
        self._grad = None
        self._grad_req = None
        self._base = None
        self._version = 0
        self._users = 0
        self._why = None

    # ----- basic properties -------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype.type

    @property
    def size(self) -> int:
        return self._data.size

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def context(self) -> Context:
        return cpu()

    ctx = context

    @property
    def grad(self):
        return self._grad

    @property
    def T(self) -> NDArray:
        return _ops().transpose(self)

    def asnumpy(self) -> np.ndarray:
        """A copy of the values as a numpy array."""
        return self._data.copy()

    def asscalar(self):
        """The value of a one-element array as a numpy scalar; ValueError otherwise."""
        if self._data.size != 1:
            raise ValueError(
                f"asscalar() needs an array of exactly one element, got shape {self.shape}; "
                "reduce it first (e.g. .sum()) or index one element"
            )
        return self._data.reshape(-1)[0]

    def item(self):
        return self.asscalar().item()

    def wait_to_read(self) -> None:
        """Arrays are computed eagerly; nothing to wait for."""

    def __array__(self, dtype=None, copy=None):
        """numpy's view of the values: a copy when numpy asks for one, else read-only.

        A writable view would let ``np.asarray(x)[i] = v`` change a recorded
        array without bumping its version, so backward would silently use the
        new values; writes must go through the NDArray (``x[i] = v``).
        """
        if copy or (dtype is not None and np.dtype(dtype) != self._data.dtype):
            if copy is False:
                raise ValueError(f"converting an NDArray of {self._data.dtype} to {np.dtype(dtype)} needs a copy")
            return self._data.astype(dtype if dtype is not None else self._data.dtype, copy=True)
        view = self._data.view()
        view.flags.writeable = False
        return view

    def __array_function__(self, func, types, args, kwargs):
        """numpy functions (``np.where``, ``np.dot``, ...) on NDArrays compute on their
        values, as numpy arrays; under ``record()`` one that reads an array gradients
        flow into is refused: its result would be a constant, the gradient silently cut.
        """
        found = []
        args, kwargs = _unwrapped(args, found), _unwrapped(kwargs, found)
        if tape.is_recording() and any(tape.is_tracked(a) for a in found):
            name = getattr(func, "__name__", "function")
            raise UnrecordedOpError(
                f"np.{name} of a recorded NDArray is not recorded, so no gradient would "
                f"flow through it; use the nd function (nd.{name}, if it exists), or put "
                "the numpy code in a function compiled with pb.compile")
        return func(*args, **kwargs)

    def __len__(self) -> int:
        return self._data.shape[0]

    def __bool__(self) -> bool:
        if self._data.size != 1:
            raise ValueError(
                f"the truth value of an NDArray with {self._data.size} elements is ambiguous"
            )
        return bool(self._data.reshape(-1)[0])

    def __float__(self) -> float:
        return float(self.asscalar())

    def __int__(self) -> int:
        return int(self.asscalar())

    def __index__(self) -> int:
        return int(self.asscalar())

    def __iter__(self):
        for i in range(self._data.shape[0]):
            yield self[i]

    def __repr__(self) -> str:
        dims = "x".join(str(d) for d in self._data.shape)
        return f"\n{self._data}\n<NDArray {dims} @cpu(0)>"

    __str__ = __repr__

    # ----- autograd ---------------------------------------------------------
    def attach_grad(self, grad_req: str = "write", stype=None) -> None:
        """Allocate ``self.grad`` (zeros) and mark this array as a variable.

        On an intermediate result inside ``record()`` the graph is kept: backward
        still flows through this array to the variables it was computed from.
        """
        if grad_req not in _GRAD_REQS:
            raise GradReqError(
                f"invalid grad_req {grad_req!r}; valid values are 'write', 'add' and 'null'"
            )
        if grad_req != "null":
            check_float_gradient(self.dtype, "attach_grad() on")
        self._grad_req = grad_req
        self._grad = None if grad_req == "null" else NDArray(np.zeros_like(self._data))

    def detach(self) -> NDArray:
        """A new array over the same buffer (as in MXNet), with no history.

        Writing to it in place changes this array too, and backward notices if a
        recorded node needed the old values.
        """
        out = self._alias()
        out._why = tape.DETACHED
        return out

    def _alias(self) -> NDArray:
        """A new array over the same buffer, sharing its version counter; no autograd state."""
        out = NDArray(self._data)
        out._base = self if self._base is None else self._base
        return out

    def backward(self, out_grad=None, retain_graph: bool = False, train_mode: bool = True):
        """Back-propagate from this array into the ``.grad`` of its variables."""
        tape.backward([self], None if out_grad is None else [out_grad],
                      retain_graph=retain_graph, train_mode=train_mode)

    # ----- in-place changes -------------------------------------------------
    def _check_inplace(self, what: str) -> None:
        """Refuse, inside record(), to change an array the recorded graph relies on.

        Outside record() the change is allowed; the version bump makes a later
        backward through the old value fail instead.
        """
        if not tape.is_recording():
            return
        owner = self if self._base is None else self._base
        if tape.has_history(self) or tape.has_history(owner):
            raise InPlaceError(
                f"{what} on an array that was computed inside record(): its recorded history "
                "would no longer describe its value, so gradients would be wrong. The array was "
                "left unchanged. Compute a new array instead (y = y + z), or detach() it first."
            )
        if owner._users:
            raise InPlaceError(
                f"{what} on an array that a recorded operation still needs for its backward "
                "pass. The array was left unchanged. Write the new value to a new array, or "
                "run backward() first."
            )

    def _assign(self, key, value) -> None:
        self._check_inplace("in-place assignment")
        if isinstance(value, NDArray):
            if tape.is_recording() and tape.is_tracked(value):
                raise InPlaceError(
                    "assigning an array that has recorded history into another array inside "
                    "record() is not recorded, so the gradient through it would be lost. The "
                    "target was left unchanged. Build the new array out of place (nd.concat, "
                    "nd.where, ...), or assign value.detach() if no gradient should flow."
                )
            value = value._data
        self._data[key] = value
        (self if self._base is None else self._base)._version += 1

    def __setitem__(self, key, value) -> None:
        self._assign(index_key(key, self.shape), value)

    def __getitem__(self, key) -> NDArray:
        return _ops().getitem(self, index_key(key, self.shape))

    # ----- conversion and methods ------------------------------------------
    def astype(self, dtype, copy: bool = True) -> NDArray:
        return _ops().astype(self, dtype=np.dtype(dtype))

    def copy(self) -> NDArray:
        return _ops().copy(self)

    def copyto(self, other):
        if isinstance(other, NDArray):
            other._assign(slice(None), self)
            return other
        return self.copy()

    def as_in_context(self, ctx) -> NDArray:
        return self

    def reshape(self, *shape, **kwargs) -> NDArray:
        if "shape" in kwargs:
            shape = kwargs.pop("shape")
        elif len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return _ops().reshape(self, tuple(shape), **kwargs)

    def zeros_like(self):
        return _ops().zeros_like(self)

    def ones_like(self):
        return _ops().ones_like(self)

    def __neg__(self):
        return _ops().negative(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _ops().abs(self)


def index_key(key, shape=None):
    """Turn NDArrays inside an index into integer numpy arrays.

    ``shape``: the indexed array's.  A float index of 0s and 1s shaped like it (or its
    leading axes) is refused: MXNet 1.x reads it as the indices 0 and 1, numpy -- and
    compiled code, where a comparison is boolean -- as a mask (``x[x > 0]``)."""
    if isinstance(key, NDArray):
        data = key._data
        if (shape is not None and data.dtype.kind == "f" and data.ndim
                and data.shape == tuple(shape[:data.ndim])
                and bool(((data == 0) | (data == 1)).all())):
            raise MaskIndexError(
                "indexing with an array of 0s and 1s shaped like the array (x[x > 0]) is "
                "ambiguous: MXNet 1.x reads it as the indices 0 and 1, numpy (and "
                "pullback's compiled code) as a boolean mask; say which: nd.where(mask, x, "
                "0) or a mask in numpy, or mask.astype('int64') for MXNet's indices")
        return key._data.astype(np.int64)
    if isinstance(key, tuple):
        return tuple(index_key(k) for k in key)   # a mask is one key: only alone
    return key


def _ops():
    from . import primitives

    return primitives


def _install_methods() -> None:
    """Bind operators and array methods to the primitive table's ops."""
    from . import primitives as P

    binary = {
        "add": P.add, "sub": P.subtract, "mul": P.multiply, "truediv": P.divide,
        "pow": P.power, "mod": P.mod,
    }
    for name, op in binary.items():
        setattr(NDArray, f"__{name}__", op)  # op(self, other): no wrapper frame
        setattr(NDArray, f"__r{name}__", _reflected_binary(op))
        setattr(NDArray, f"__i{name}__", _inplace_binary(op, name))
    NDArray.__div__ = NDArray.__truediv__
    NDArray.__rdiv__ = NDArray.__rtruediv__
    compare = {"eq": P.equal, "ne": P.not_equal, "lt": P.lesser, "le": P.lesser_equal,
               "gt": P.greater, "ge": P.greater_equal}
    for name, op in compare.items():
        setattr(NDArray, f"__{name}__", op)
    NDArray.__hash__ = object.__hash__
    NDArray.__matmul__ = P.matmul   # numpy's @ (nd.dot keeps MXNet's dot)
    NDArray.__rmatmul__ = _reflected_binary(P.matmul)
    for name in ("sum", "mean", "max", "min", "prod", "norm", "argmax", "argmin", "exp", "log",
                 "sqrt", "square", "abs", "sign", "sin", "cos", "tan", "tanh", "sigmoid", "relu",
                 "log1p", "expm1", "reciprocal", "floor", "ceil", "round", "transpose",
                 "flatten", "expand_dims", "squeeze", "tile", "repeat", "broadcast_to", "clip",
                 "softmax", "log_softmax", "slice_axis", "take", "pick", "split", "swapaxes",
                 "clip", "nansum", "nanprod", "one_hot"):
        setattr(NDArray, name, getattr(P, name))
    for name in P.COVERAGE_METHODS:   # numpy coverage (issue 11 item 5)
        setattr(NDArray, name, getattr(P, name))


def _reflected_binary(op):
    def method(self, other):
        return op(other, self)

    method.__name__ = "r" + op.__name__
    return method


def _in_graph(array) -> bool:
    """Whether ``array``'s buffer belongs to the recorded graph (history, gradient or users)."""
    owner = array if array._base is None else array._base
    return (tape.has_history(array) or array._grad is not None or tape.has_history(owner)
            or owner._users > 0)


def _inplace_binary(op, name):
    """``y += z``.  Inside record(), if ``y`` or ``z`` is part of the graph, the op is
    recorded out of place and ``y`` is rebound, leaving the old array intact for the
    graph.  Otherwise ``y`` is updated in place (same object, as in MXNet); outside
    record() that bumps its version, so a backward that still needs the old value fails.
    """

    def method(self, other):
        if tape.is_recording() and (_in_graph(self) or tape.is_tracked(other)):
            return op(self, other)
        result = op(self, other)
        if result._data.shape != self._data.shape or result._data.dtype != self._data.dtype:
            return result
        self._assign(Ellipsis, result._data)
        return self

    method.__name__ = f"i{name}"
    return method


def _unwrapped(value, found: list):
    """``value`` with each NDArray in it (nested in lists, tuples, dicts) replaced by its
    numpy buffer; the NDArrays are appended to ``found``."""
    if isinstance(value, NDArray):
        found.append(value)
        return value._data
    if isinstance(value, (list, tuple)):
        items = [_unwrapped(v, found) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        return {k: _unwrapped(v, found) for k, v in value.items()}
    return value


# tape.py imports this module, so it is bound last (either import order works).
from . import tape
