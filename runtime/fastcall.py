"""The fastcall trampoline: call a native kernel from Python in ~0.1 us instead of ~3 us.

One generic function, compiled from IR once per process (and cached on disk
like a kernel), exposed to Python as a METH_FASTCALL builtin by
``PyCFunction_NewEx``.  Its ``self`` is a per-kernel *descriptor*, an int64 numpy
array holding everything kernel- or process-specific (the kernel's address, its
argument counts and reduction ops, the dtype, the addresses of ``ndarray``,
``float``, numpy's ``PyArray_New``, ``PyTuple_New``...), so the code itself holds
no process address and can be cached.

Called as ``fn(*inputs, *scalars)`` or ``fn(*inputs, *scalars, *outputs)`` it reads
the numpy array headers (data, nd, dims, strides, descr, flags) and calls the
kernel only when every argument is exactly what the kernel needs: exact
``ndarray``\\ s of the kernel's dtype, 1-d, one length ``n >= 1``, contiguous,
aligned; outputs writeable and not partially overlapping an input (the very
same buffer is fine: in place); scalars exact ``float`` or ``np.float64``; and
the call is for one thread (``n < parallel_min`` or the thread count is 1).  It
allocates missing outputs with ``PyArray_New``, releases the GIL around the
kernel when ``n >= release_gil_min``, folds the per-chunk reduction partials in
chunk order (as ``Kernel`` does for threaded calls) and returns the tuple
``(*outputs, *reductions)``.  For anything else it returns
``descriptor.fallback(*args)``: the careful Python path, which copies, casts,
and splits large calls over threads.

``available()`` checks, at run time, the object layouts this relies on; where
they differ (another CPython ABI), kernels are called through ctypes only.
"""

from __future__ import annotations

import ctypes
import functools
import sys

import numpy as np
from llvmlite import ir

from .irhelpers import I32, I64, PTR, conditional, counted_loop, require

SYMBOL = "pb_fastcall"
#: The descriptor's fields, in order (one int64 each), then one op code per reduction.
FIELDS = ("kernel", "n_inputs", "n_scalars", "n_outputs", "n_reductions", "parallel_min",
          "release_gil_min", "threads", "chunk", "dtype", "itemsize", "type_num",
          "ndarray_type", "float_type", "float64_type", "fallback", "array_new", "tuple_new",
          "tuple_set_item", "float_from_double", "incref", "decref", "vectorcall",
          "save_thread", "restore_thread")
_FIELD = {name: k for k, name in enumerate(FIELDS)}
REDUCTION_CODES = {"sum": 0, "max": 1, "min": 2}
#: Byte offsets in CPython objects and numpy's PyArrayObject (checked by ``available``).
_OB_TYPE, _ARRAY_DATA, _ARRAY_ND, _ARRAY_DIMS, _ARRAY_STRIDES, _ARRAY_DESCR, _ARRAY_FLAGS = (
    8, 16, 24, 32, 40, 56, 64)
_FLOAT_VALUE = 16
_NPY_ALIGNED, _NPY_WRITEABLE = 0x0100, 0x0400
_METH_FASTCALL = 0x0080
_ARRAY_NEW_SLOT = 93             # PyArray_New in numpy's C-API table (stable across 1.x/2.x)
MAX_ARGS = 64                    # arrays (inputs + outputs), and scalars, per kernel
MAX_PARTIALS = 4096              # chunks x reductions the trampoline's stack buffer holds

_F64 = ir.DoubleType()
_KERNEL_TYPE = ir.FunctionType(ir.VoidType(), [I64, I64, PTR, PTR, PTR])
_C_FUNCTIONS = {
    "array_new": ir.FunctionType(PTR, [PTR, I32, PTR, I32, PTR, PTR, I32, I32, PTR]),
    "tuple_new": ir.FunctionType(PTR, [I64]),
    "tuple_set_item": ir.FunctionType(I32, [PTR, I64, PTR]),
    "float_from_double": ir.FunctionType(PTR, [_F64]),
    "incref": ir.FunctionType(ir.VoidType(), [PTR]),
    "decref": ir.FunctionType(ir.VoidType(), [PTR]),
    "vectorcall": ir.FunctionType(PTR, [PTR, PTR, I64, PTR]),
    "save_thread": ir.FunctionType(PTR, []),
    "restore_thread": ir.FunctionType(ir.VoidType(), [PTR]),
}


def trampoline_ir(triple: str) -> str:
    """IR text of ``pb_fastcall(self, args, nargs)`` (see the module docstring)."""
    module = ir.Module(name="pullback fastcall trampoline")
    module.triple = triple
    fn = ir.Function(module, ir.FunctionType(PTR, [PTR, PTR, I64]), name=SYMBOL)
    for arg, name in zip(fn.args, ("self", "args", "nargs"), strict=True):
        arg.name = name
    _Trampoline(fn).emit()
    return str(module)


class _Callee:
    """An indirect call target for IRBuilder.call: with opaque pointers llvmlite needs the
    function type from somewhere other than the pointer."""

    def __init__(self, pointer, function_type: ir.FunctionType):
        self.pointer, self.function_type, self.type = pointer, function_type, PTR

    def get_reference(self):
        return self.pointer.get_reference()


def _constant(value: int):
    return ir.Constant(I64, value)


class _Trampoline:
    """Emits the trampoline; each method is one step of it, in order."""

    def __init__(self, fn: ir.Function):
        self.fn = fn
        self.self_, self.args, self.nargs = fn.args
        self.b = ir.IRBuilder(fn.append_basic_block("entry"))
        self.fallback = fn.append_basic_block("fallback")

    # --- reading memory and calling C -------------------------------------------------

    def at(self, obj, offset: int, typ, name: str):
        address = self.b.gep(obj, [_constant(offset)], source_etype=ir.IntType(8),
                             name=f"{name}.address")
        return self.b.load(address, typ=typ, name=name)

    def slot(self, base, index, etype, name: str):
        return self.b.gep(base, [index], source_etype=etype, name=name)

    def item(self, base, index, etype, name: str):
        return self.b.load(self.slot(base, index, etype, f"{name}.slot"), typ=etype, name=name)

    def c_call(self, function: str, args, name: str = ""):
        pointer = self.b.inttoptr(self.f[function], PTR, name=f"{function}.function")
        return self.b.call(_Callee(pointer, _C_FUNCTIONS[function]), args, name=name)

    def loop(self, name: str, count):
        def more(b, i):
            return b.icmp_signed("<", i, count, name=f"{name}.more")

        return counted_loop(self.b, name, _constant(0), _constant(1), more)

    # --- the steps ----------------------------------------------------------------------

    def emit(self) -> None:
        b = self.b
        descriptor = self.at(self.self_, _ARRAY_DATA, PTR, "descriptor")
        self.f = {name: self.item(descriptor, _constant(k), I64, name)
                  for k, name in enumerate(FIELDS)}
        self.ops = self.slot(descriptor, _constant(len(FIELDS)), I64, "reduction_ops")
        with b.goto_entry_block():
            self.pointers = b.alloca(PTR, size=_constant(MAX_ARGS), name="pointers")
            self.scalars = b.alloca(_F64, size=_constant(MAX_ARGS), name="scalars")
            self.outputs = b.alloca(PTR, size=_constant(MAX_ARGS), name="outputs")
            self.partials = b.alloca(_F64, size=_constant(MAX_PARTIALS), name="partials")
            self.n_cell = b.alloca(I64, name="n.cell")
        self.check_counts()
        self.collect_inputs()
        self.collect_scalars()
        with conditional(b, self.outputs_given, "given") as _:
            self.collect_given_outputs()
        with conditional(b, b.not_(self.outputs_given), "allocate") as _:
            self.allocate_outputs()
        self.call_kernel()
        self.return_results()
        b.position_at_end(self.fallback)
        # The careful Python path, with the very same arguments.
        b.ret(self.c_call("vectorcall", [b.inttoptr(self.f["fallback"], PTR), self.args,
                                         self.nargs, ir.Constant(PTR, None)], "careful"))

    def call_kernel(self) -> None:
        """kernel(0, n, ...), with the GIL released when n >= release_gil_min."""
        b, f = self.b, self.f
        release = b.icmp_signed(">=", self.n, f["release_gil_min"], name="release_gil")
        state = ir.Constant(PTR, None)
        with conditional(b, release, "unlock", [state], ["thread_state"]) as unlock:
            unlock.values = [self.c_call("save_thread", [], "saved_thread_state")]
        b.call(_Callee(b.inttoptr(f["kernel"], PTR, name="kernel"), _KERNEL_TYPE),
               [_constant(0), self.n, self.pointers, self.scalars, self.partials])
        with conditional(b, release, "relock"):
            self.c_call("restore_thread", [unlock.values[0]])

    def check_counts(self) -> None:
        """nargs is inputs + scalars (+ outputs); n >= 1 and not for several threads
        (n < parallel_min or one thread); the partials fit."""
        b, f = self.b, self.f
        self.n_leading = b.add(f["n_inputs"], f["n_scalars"], name="n_leading")
        given = b.sub(self.nargs, self.n_leading, name="n_given_outputs")
        self.outputs_given = b.icmp_signed("!=", given, _constant(0), name="outputs_given")
        counts_ok = b.and_(b.icmp_signed(">", f["n_inputs"], _constant(0)),
                           b.or_(b.icmp_signed("==", given, _constant(0)),
                                 b.icmp_signed("==", given, f["n_outputs"])), name="nargs_ok")
        require(b, counts_ok, self.fallback, "nargs_checked")
        first = self.item(self.args, _constant(0), PTR, "first")
        self.require_array(first, None, False, "first")
        self.n = b.load(self.at(first, _ARRAY_DIMS, PTR, "first.dims"), typ=I64, name="n")
        b.store(self.n, self.n_cell)
        chunks = b.sdiv(b.add(self.n, b.sub(f["chunk"], _constant(1))), f["chunk"],
                        name="n_chunks")
        self.n_chunks = chunks
        threads = b.load(b.inttoptr(f["threads"], PTR), typ=I64, name="threads")
        one_thread = b.or_(b.icmp_signed("<=", threads, _constant(1)),
                           b.icmp_signed("<", self.n, f["parallel_min"]), name="one_thread")
        size_ok = b.and_(b.and_(b.icmp_signed(">=", self.n, _constant(1)), one_thread),
                         b.icmp_signed("<=", b.mul(chunks, f["n_reductions"]),
                                       _constant(MAX_PARTIALS)), name="n_ok")
        require(b, size_ok, self.fallback, "n_checked")

    def require_array(self, obj, n, writeable: bool, name: str) -> None:
        """The checks of the module docstring for one array (``n`` None: any length)."""
        b, f = self.b, self.f
        kind = b.ptrtoint(self.at(obj, _OB_TYPE, PTR, f"{name}.type"), I64)
        require(b, b.icmp_unsigned("==", kind, f["ndarray_type"]), self.fallback,
                f"{name}.is_ndarray")
        one_dim = b.icmp_signed("==", self.at(obj, _ARRAY_ND, I32, f"{name}.nd"),
                                ir.Constant(I32, 1))
        descr = b.ptrtoint(self.at(obj, _ARRAY_DESCR, PTR, f"{name}.descr"), I64)
        flags = self.at(obj, _ARRAY_FLAGS, I32, f"{name}.flags")
        needed = ir.Constant(I32, _NPY_ALIGNED | (_NPY_WRITEABLE if writeable else 0))
        flags_ok = b.icmp_unsigned("==", b.and_(flags, needed), needed)
        header_ok = b.and_(b.and_(one_dim, b.icmp_unsigned("==", descr, f["dtype"])), flags_ok,
                           name=f"{name}.header_ok")
        require(b, header_ok, self.fallback, f"{name}.header_checked")
        strides = self.at(obj, _ARRAY_STRIDES, PTR, f"{name}.strides")
        layout_ok = b.icmp_signed("==", b.load(strides, typ=I64), f["itemsize"])
        if n is not None:
            dims = self.at(obj, _ARRAY_DIMS, PTR, f"{name}.dims")
            layout_ok = b.and_(layout_ok, b.icmp_signed("==", b.load(dims, typ=I64), n),
                               name=f"{name}.layout_ok")
        require(b, layout_ok, self.fallback, f"{name}.layout_checked")

    def collect_inputs(self) -> None:
        b = self.b
        with self.loop("inputs", self.f["n_inputs"]) as loop:
            obj = self.item(self.args, loop.index, PTR, "input")
            self.require_array(obj, self.n, False, "input")
            b.store(self.at(obj, _ARRAY_DATA, PTR, "input.data"),
                    self.slot(self.pointers, loop.index, PTR, "input.pointer"))

    def collect_scalars(self) -> None:
        b, f = self.b, self.f
        with self.loop("scalars", f["n_scalars"]) as loop:
            obj = self.item(self.args, b.add(f["n_inputs"], loop.index), PTR, "scalar")
            kind = b.ptrtoint(self.at(obj, _OB_TYPE, PTR, "scalar.type"), I64)
            is_float = b.or_(b.icmp_unsigned("==", kind, f["float_type"]),
                             b.icmp_unsigned("==", kind, f["float64_type"]),
                             name="scalar.is_float")
            require(b, is_float, self.fallback, "scalar.checked")
            b.store(self.at(obj, _FLOAT_VALUE, _F64, "scalar.value"),
                    self.slot(self.scalars, loop.index, _F64, "scalar.slot"))

    def collect_given_outputs(self) -> None:
        """Outputs passed in: checked, and none may partially overlap an input."""
        b, f = self.b, self.f
        n_bytes = b.mul(self.n, f["itemsize"], name="n_bytes")
        with self.loop("given", f["n_outputs"]) as outputs:
            obj = self.item(self.args, b.add(self.n_leading, outputs.index), PTR, "given")
            self.require_array(obj, self.n, True, "given")
            data = self.at(obj, _ARRAY_DATA, PTR, "given.data")
            with self.loop("overlap", f["n_inputs"]) as inputs:
                input_data = self.item(self.pointers, inputs.index, PTR, "overlap.input")
                distance = b.sub(b.ptrtoint(data, I64), b.ptrtoint(input_data, I64),
                                 name="overlap.distance")
                magnitude = b.select(b.icmp_signed("<", distance, _constant(0)),
                                     b.sub(_constant(0), distance), distance,
                                     name="overlap.magnitude")
                apart = b.or_(b.icmp_signed("==", distance, _constant(0)),
                              b.icmp_signed(">=", magnitude, n_bytes), name="same_or_apart")
                require(b, apart, self.fallback, "overlap.checked")
            b.store(obj, self.slot(self.outputs, outputs.index, PTR, "given.object"))
            b.store(data, self.slot(self.pointers, b.add(f["n_inputs"], outputs.index), PTR,
                                    "given.pointer"))

    def allocate_outputs(self) -> None:
        b, f = self.b, self.f
        failed = self.fn.append_basic_block("allocation_failed")
        with self.loop("allocate", f["n_outputs"]) as loop:
            obj = self.c_call("array_new", [
                b.inttoptr(f["ndarray_type"], PTR), ir.Constant(I32, 1), self.n_cell,
                b.trunc(f["type_num"], I32), ir.Constant(PTR, None), ir.Constant(PTR, None),
                ir.Constant(I32, 0), ir.Constant(I32, 0), ir.Constant(PTR, None)], "output")
            b.store(obj, self.slot(self.outputs, loop.index, PTR, "output.object"))
            require(b, b.icmp_unsigned("!=", b.ptrtoint(obj, I64), _constant(0)), failed,
                    "output.allocated")
            b.store(self.at(obj, _ARRAY_DATA, PTR, "output.data"),
                    self.slot(self.pointers, b.add(f["n_inputs"], loop.index), PTR,
                              "output.pointer"))
        after = b.block
        b.position_at_end(failed)
        self.release_outputs(failed_at=loop.index)
        b.position_at_end(after)

    def release_outputs(self, failed_at) -> None:
        """MemoryError: drop the outputs allocated so far and return NULL (the exception)."""
        b = self.b
        with self.loop("release", failed_at) as loop:
            self.c_call("decref", [self.item(self.outputs, loop.index, PTR, "release.object")])
        b.ret(ir.Constant(PTR, None))

    def return_results(self) -> None:
        """The tuple (*outputs, *reductions); reductions folded over chunks in order."""
        b, f = self.b, self.f
        # Given outputs are borrowed; the tuple needs its own references.
        with conditional(b, self.outputs_given, "own_given"), \
                self.loop("own", f["n_outputs"]) as loop:
            self.c_call("incref", [self.item(self.outputs, loop.index, PTR, "own.object")])
        size = b.add(f["n_outputs"], f["n_reductions"], name="n_results")
        results = self.c_call("tuple_new", [size], "results")
        with conditional(b, b.icmp_unsigned("==", b.ptrtoint(results, I64), _constant(0)),
                         "no_tuple") as _:
            self.release_outputs(failed_at=f["n_outputs"])
            b.position_at_end(b.append_basic_block("unreachable_after_release"))
        with self.loop("result", f["n_outputs"]) as loop:
            obj = self.item(self.outputs, loop.index, PTR, "result.object")
            self.c_call("tuple_set_item", [results, loop.index, obj])
        with self.loop("reduction", f["n_reductions"]) as loop:
            value = self.fold_partials(loop.index)
            number = self.c_call("float_from_double", [value], "reduction.float")
            with conditional(b, b.icmp_unsigned("==", b.ptrtoint(number, I64), _constant(0)),
                             "no_float") as _:
                self.c_call("decref", [results])
                b.ret(ir.Constant(PTR, None))
                b.position_at_end(b.append_basic_block("unreachable_after_float"))
            self.c_call("tuple_set_item", [results, b.add(f["n_outputs"], loop.index), number])
        b.ret(results)

    def fold_partials(self, r):
        """partials[0*R + r] op partials[1*R + r] op ... (op: sum, or NaN-propagating max/min)."""
        b, f = self.b, self.f
        code = self.item(self.ops, r, I64, "reduction.op")
        first = self.item(self.partials, r, _F64, "reduction.first")

        def more(b, k):
            return b.icmp_signed("<", k, self.n_chunks, name="fold.more")

        with counted_loop(b, "fold", _constant(1), _constant(1), more, [first],
                          ["reduction.value"]) as fold:
            at = b.add(b.mul(fold.index, f["n_reductions"]), r, name="fold.at")
            a, x = fold.carried[0], self.item(self.partials, at, _F64, "fold.partial")
            a_is_nan = b.fcmp_unordered("uno", a, a, name="fold.acc_nan")
            keep_max = b.or_(b.fcmp_ordered(">", a, x), a_is_nan, name="fold.keep_max")
            keep_min = b.or_(b.fcmp_ordered("<", a, x), a_is_nan, name="fold.keep_min")
            is_max = b.icmp_signed("==", code, _constant(REDUCTION_CODES["max"]))
            is_min = b.icmp_signed("==", code, _constant(REDUCTION_CODES["min"]))
            extreme = b.select(b.select(is_max, keep_max, keep_min), a, x, name="fold.extreme")
            total = b.fadd(a, x, name="fold.sum")
            fold.next = [b.select(b.or_(is_max, is_min), extreme, total, name="fold.next")]
        return fold.carried[0]


# ----- installing it ----------------------------------------------------------------------

class _MethodDef(ctypes.Structure):
    _fields_ = [("ml_name", ctypes.c_char_p), ("ml_meth", ctypes.c_void_p),
                ("ml_flags", ctypes.c_int), ("ml_doc", ctypes.c_char_p)]


@functools.cache
def available() -> bool:
    """Whether this interpreter's object layouts are the ones the trampoline reads."""
    if sys.implementation.name != "cpython" or ctypes.sizeof(ctypes.c_void_p) != 8:
        return False
    import sysconfig

    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return False
    try:
        api = _numpy_api()
    except (AttributeError, ValueError):
        return False
    probe = np.arange(3.0)

    def word(obj, offset, ctype=ctypes.c_int64):
        return ctype.from_address(id(obj) + offset).value

    checks = [
        api[2] == id(np.ndarray),
        word(probe, _OB_TYPE) == id(np.ndarray),
        word(probe, _ARRAY_DATA) == probe.ctypes.data,
        word(probe, _ARRAY_ND, ctypes.c_int32) == 1,
        ctypes.c_int64.from_address(word(probe, _ARRAY_DIMS)).value == 3,
        ctypes.c_int64.from_address(word(probe, _ARRAY_STRIDES)).value == 8,
        word(probe, _ARRAY_DESCR) == id(probe.dtype),
        word(probe, _ARRAY_FLAGS, ctypes.c_int32) & _NPY_WRITEABLE != 0,
        ctypes.c_double.from_address(id(2.5) + _FLOAT_VALUE).value == 2.5,
        ctypes.c_double.from_address(id(np.float64(2.5)) + _FLOAT_VALUE).value == 2.5,
    ]
    return all(checks)


def _numpy_api():
    """numpy's C-API function table (what ``import_array()`` reads)."""
    from numpy._core import _multiarray_umath

    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    table = get_pointer(_multiarray_umath._ARRAY_API, None)
    return (ctypes.c_void_p * (_ARRAY_NEW_SLOT + 1)).from_address(table)


class Installed:
    """The trampoline at ``address`` made callable: ``function(descriptor)``."""

    def __init__(self, address: int):
        self.method = _MethodDef(b"pullback_kernel", address, _METH_FASTCALL,
                                 b"A pullback native kernel: (*arrays, *scalars[, *outputs]).")
        new = ctypes.pythonapi.PyCFunction_NewEx
        new.restype = ctypes.py_object
        new.argtypes = [ctypes.c_void_p, ctypes.py_object, ctypes.py_object]
        self._new = new

    def function(self, descriptor: np.ndarray):
        """A builtin calling the trampoline with ``descriptor`` as ``self`` (it keeps the
        descriptor alive; the caller keeps the fallback alive)."""
        return self._new(ctypes.addressof(self.method), descriptor, None)


def _address(name: str) -> int:
    return ctypes.cast(getattr(ctypes.pythonapi, name), ctypes.c_void_p).value


def descriptor(kernel_address: int, n_inputs: int, n_scalars: int, n_outputs: int,
               reductions: tuple, dtype: np.dtype, parallel_min: int, release_gil_min: int,
               threads: np.ndarray, chunk: int, fallback) -> np.ndarray:
    """The int64 array the trampoline reads as ``self``; ``threads`` is a one-element
    int64 array holding the current thread count (read on every call)."""
    values = {
        "kernel": kernel_address, "n_inputs": n_inputs, "n_scalars": n_scalars,
        "n_outputs": n_outputs, "n_reductions": len(reductions),
        "parallel_min": parallel_min, "release_gil_min": release_gil_min,
        "threads": threads.ctypes.data, "chunk": chunk, "dtype": id(dtype), "itemsize": dtype.itemsize, "type_num": dtype.num,
        "ndarray_type": id(np.ndarray), "float_type": id(float),
        "float64_type": id(np.float64), "fallback": id(fallback),
        "array_new": _numpy_api()[_ARRAY_NEW_SLOT], "tuple_new": _address("PyTuple_New"),
        "tuple_set_item": _address("PyTuple_SetItem"),
        "float_from_double": _address("PyFloat_FromDouble"), "incref": _address("Py_IncRef"),
        "decref": _address("Py_DecRef"), "vectorcall": _address("PyObject_Vectorcall"),
        "save_thread": _address("PyEval_SaveThread"),
        "restore_thread": _address("PyEval_RestoreThread"),
    }
    codes = [REDUCTION_CODES[op] for _, op in reductions]
    return np.array([values[name] for name in FIELDS] + codes, dtype=np.int64)
