"""The array part of the whole-function lowering (``lower_function.py``): float64 arrays of
run-time shapes as loop nests.

An array value (``infer.Arr``) is ``{ptr data, i64 dim0, ..., i64 dim(n-1)}``: C-contiguous
data and its shape.  Arrays are values: native code writes only into an array it has just
allocated (or, one exception, into a *private accumulator*: a gradient no other name holds,
``lower_function.private_accumulators``, which receives outer products in place), so a
name, a stack slot or a tuple can hold the same pointer, and ``x[i]`` is a view into ``x``.
Every array native code creates is bumped from the call's *arena* (chunks of at least 64
KiB, each next one at least twice the previous, 64-byte aligned arrays) and released on
every exit: the call's largest chunk (up to ARENA_KEEP_MAX, 64 MiB) is *kept* for the
function's next call in one global slot per function, taken and put back with atomic
exchanges (a call running in another thread meanwhile mallocs its own), the others freed.
So a function called again with arrays of the same sizes needs no malloc and touches pages
that are already mapped (freed blocks of megabytes went back to the kernel, and every call
page-faulted them in again), and growing sizes converge on one block in a few calls.
Arguments are the caller's numpy arrays, read through their ``PyArrayObject`` header (data at byte 16,
dimensions at 32: checked once by ``runtime/native_function.py``), and array gradients are
copied into numpy arrays the caller allocated, after a check that each has its argument's
shape.

What the code guarantees: numpy's broadcasting (a shape mismatch leaves for the Python road,
which raises numpy's error), float64 arithmetic statement by statement as the Python road
computes it (kernels through their scalar programs, as for numbers); a whole-array sum
is numpy's pairwise sum (``pairwise_sum``: equal to ``np.sum`` bit for bit), a whole-array
max/min eight running extrema (``extremum_all``: numpy's value; only the sign of a zero
can differ); sums over an axis and ``np.dot`` run in index order, where numpy uses
pairwise sums and BLAS (so those agree to rounding, not bit for bit); an index out of range or the max of an empty array leaves for
the Python road.  Element loops are scalar IR that LLVM's loop and SLP vectorisers (asked
for by the module's ``native.VECTORISE_METADATA``) vectorise without changing a result: no
fast-math, so sums carried across iterations stay sequential; exp, log, sin, cos, tan,
tanh, log1p and expm1 inside an element loop call libmvec's 4-lane AVX2 variant, and
the scalar call (remainder, broadcasting nests, loops left scalar) computes lane 0 of the
same variant (``element_libm``), so an element's value never depends on its position.
Where a new array operation goes: a typing rule in ``infer.ARRAY_CALLS``
and a ``call_<name>`` method here (a VJP rule: ``infer.rule_type`` and ``rule_<name>``).
"""

from __future__ import annotations

import ast

from llvmlite import ir

from pullback.runtime.irhelpers import I1, I64, PTR, add_string_attribute, counted_loop
from pullback.runtime.native import host as native_host

from . import infer
from .infer import NONE, Arr, Num, Opt, Parts, Tup, can_be_none, inner

F64T = ir.DoubleType()
_ONE, _ZERO = ir.Constant(I64, 1), ir.Constant(I64, 0)
#: byte offsets in numpy's PyArrayObject (checked at import by runtime/native_function.py)
ARRAY_DATA_OFFSET, ARRAY_DIMS_OFFSET = 16, 32
#: arrays are bumped from chunks (the first at least ARENA_FIRST_CHUNK bytes, each next one
#: at least twice the previous); the largest chunk of a call, if at most ARENA_KEEP_MAX
#: bytes, is kept for the function's next call (``free_arena``)
ARENA_FIRST_CHUNK, ARENA_ALIGN, ARENA_KEEP_MAX = 1 << 16, 64, 64 << 20
#: libm functions an array loop computes with libmvec's AVX2 variant (``element_libm``)
VECTOR_LIBM = frozenset({"exp", "log", "sin", "cos", "tan", "tanh", "log1p", "expm1"})


#: np.linspace's num from which the native road leaves for the Python road (with negative
#: ones): 2**56 float64s are far beyond any memory, and 8 * num stays far from wrapping
LINSPACE_MAX = 1 << 56


def _slice(statements, name) -> list:
    """The statements of a kernel program that ``name`` depends on, in order."""
    needed, kept = {name}, []
    for target, text in reversed(statements):
        if target in needed:
            kept.append((target, text))
            needed |= {n.id for n in ast.walk(ast.parse(text.strip(), mode="eval"))
                       if isinstance(n, ast.Name)}
    return kept[::-1]


def has_vector_libm(function) -> bool:
    """Whether libmvec's 4-lane AVX2 variant ``_ZGVdN4v_<function>`` is used here: one of
    ``VECTOR_LIBM``, present in this host's libmvec, and the CPU has AVX2."""
    h = native_host()
    return (function in VECTOR_LIBM and function in h.vector_math
            and "+avx2" in h.features.split(","))


def array_ltype(t: Arr):
    return ir.LiteralStructType([PTR] + [I64] * t.ndim)


class ArrayLowering:
    """Mixed into ``lower_function._Lowering``: the array statements."""

    # ----- array values ------------------------------------------------------------------
    def parts(self, value):
        """``(data, [dims])`` of an array value."""
        b = self.b
        data = b.extract_value(value.v, 0, name="data")
        return data, [b.extract_value(value.v, 1 + k, name=f"dim{k}") for k in range(value.t.ndim)]

    def make_array(self, data, dims, t):
        v = self.b.insert_value(ir.Constant(array_ltype(t), None), data, 0)
        for k, d in enumerate(dims):
            v = self.b.insert_value(v, d, 1 + k)
        return self._value(v, t)

    def size_of(self, dims):
        size = _ONE
        for d in dims:
            size = self.b.mul(size, d, name="size")
        return size

    def new_array(self, dims, t=None):
        """A fresh array of ``dims`` from the arena (leaves with NO_MEMORY if malloc fails):
        bumped from the arena's current chunk, 64-byte aligned."""
        t = t or Arr("f64", len(dims))
        b = self.b
        if self.arena is None:
            self.arena = tuple(self.alloca(typ, f"arena.{name}_slot") for typ, name in
                               ((PTR, "base"), (I64, "top"), (I64, "capacity"), (PTR, "cur"),
                                (PTR, "end")))
            self.arena_chunk = self.emit_arena_chunk()
        cur_slot, end_slot = self.arena[3], self.arena[4]
        nbytes = b.mul(self.size_of(dims), ir.Constant(I64, 8), name="nbytes")
        nbytes = b.and_(b.add(nbytes, ir.Constant(I64, ARENA_ALIGN - 1)),
                        ir.Constant(I64, -ARENA_ALIGN), name="nbytes.aligned")
        nbytes = b.select(b.icmp_unsigned(">", nbytes, _ZERO), nbytes,
                          ir.Constant(I64, ARENA_ALIGN))
        cur = b.load(cur_slot, typ=PTR, name="arena.cur")
        room = b.sub(b.ptrtoint(b.load(end_slot, typ=PTR), I64), b.ptrtoint(cur, I64))
        with b.if_then(b.icmp_unsigned(">", nbytes, room), likely=False):
            self.bail(b.call(self.arena_chunk, [*self.arena, nbytes]), self.NO_MEMORY,
                      "arena_grow")
        data = b.load(cur_slot, typ=PTR, name="array")
        b.store(b.gep(data, [nbytes], source_etype=ir.IntType(8)), cur_slot)
        return self.make_array(data, dims, t)

    def emit_arena_chunk(self):
        """``i1 chunk(base, top, capacity, cur, end, i64 need)``: a chunk of at least
        ``need`` bytes becomes the current one.  The call's first chunk is the function's
        kept block (``kept_block``) when it is large enough; otherwise a new chunk of
        ``max(need + 2 * ARENA_ALIGN, 2 * the previous chunk's size)`` bytes (at least
        ARENA_FIRST_CHUNK) is malloc'd.  A chunk's first 8 bytes hold its size; its
        arrays start at the next 64-byte boundary."""
        fn = ir.Function(self.module, ir.FunctionType(I1, [PTR] * 5 + [I64]),
                         name=f"{self.fn.name}.arena_chunk")
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        base, top, capacity, cur, end, need = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        kept_slot = self.kept_block()
        wanted = b.add(need, ir.Constant(I64, 2 * ARENA_ALIGN), name="wanted")
        count = b.load(top, typ=I64, name="chunks")
        first = b.icmp_unsigned("==", count, _ZERO, name="first")
        entry = b.block
        with b.if_then(first):   # the block the last call kept, taken so no one shares it
            kept = b.atomic_rmw("xchg", kept_slot, ir.Constant(PTR, None), "acquire",
                                name="kept")
            has_kept = b.icmp_unsigned("!=", kept, ir.Constant(PTR, None))
            # its size from its header (when none is kept, 0.0's bits, read from pb.zero)
            kept_size = b.load(b.select(has_kept, kept, self.zero_global()), typ=I64,
                               name="kept.size")
            take_block = b.block
        taken = b.phi(PTR, name="taken")
        taken.add_incoming(ir.Constant(PTR, None), entry)
        taken.add_incoming(kept, take_block)
        taken_size = b.phi(I64, name="taken.size")
        taken_size.add_incoming(_ZERO, entry)
        taken_size.add_incoming(kept_size, take_block)
        end_count = b.add(count, _ONE)
        with b.if_then(b.icmp_unsigned(">", end_count, b.load(capacity, typ=I64)),
                       likely=False):
            with b.if_then(b.not_(b.call(self.reserve, [base, capacity, end_count]))):
                self.free(b, taken)
                b.ret(ir.Constant(I1, 0))
        chunks = b.load(base, typ=PTR, name="list")
        fits = b.icmp_unsigned(">=", taken_size, wanted, name="fits")
        before = b.block
        with b.if_then(b.not_(fits)):
            self.free(b, taken)   # too small for this array (or none): a bigger one
            after_free = b.block
            with b.if_then(b.not_(first)):
                last = b.load(b.gep(chunks, [b.sub(count, _ONE)], source_etype=PTR), typ=PTR)
                last_size = b.load(last, typ=I64, name="last.size")
                after_last = b.block
            previous = b.phi(I64, name="previous.size")   # the kept block's, or the last's
            previous.add_incoming(taken_size, after_free)
            previous.add_incoming(last_size, after_last)
            doubling = b.shl(previous, _ONE)
            doubling = b.select(b.icmp_unsigned(">", doubling, ir.Constant(I64,
                                                                           ARENA_FIRST_CHUNK)),
                                doubling, ir.Constant(I64, ARENA_FIRST_CHUNK))
            size = b.select(b.icmp_unsigned(">", wanted, doubling), wanted, doubling,
                            name="size")
            malloc = self.function("malloc", ir.FunctionType(PTR, [I64]), ("nounwind",))
            fresh = b.call(malloc, [size], name="fresh")
            with b.if_then(b.icmp_unsigned("==", fresh, ir.Constant(PTR, None))):
                b.ret(ir.Constant(I1, 0))
            b.store(size, fresh)
            grown = b.block
        chunk = b.phi(PTR, name="chunk")
        chunk.add_incoming(taken, before)
        chunk.add_incoming(fresh, grown)
        chunk_size = b.phi(I64, name="chunk.size")
        chunk_size.add_incoming(taken_size, before)
        chunk_size.add_incoming(size, grown)
        b.store(chunk, b.gep(chunks, [count], source_etype=PTR))
        b.store(end_count, top)
        address = b.add(b.ptrtoint(chunk, I64), ir.Constant(I64, 8))
        skip = b.and_(b.sub(_ZERO, address), ir.Constant(I64, ARENA_ALIGN - 1))
        b.store(b.gep(chunk, [b.add(skip, ir.Constant(I64, 8))], source_etype=ir.IntType(8)),
                cur)
        b.store(b.gep(chunk, [chunk_size], source_etype=ir.IntType(8)), end)
        b.ret(ir.Constant(I1, 1))
        return fn

    def kept_block(self):
        """The global slot holding the block this function keeps between calls (null: none
        kept): taken at a call's first chunk and put back at its exit with atomic
        exchanges, so two threads in the same function never share a block."""
        name = f"{self.fn.name}.arena_kept"
        found = self.module.globals.get(name)
        if found is None:
            found = ir.GlobalVariable(self.module, PTR, name)
            found.initializer = ir.Constant(PTR, None)
            found.linkage = "internal"
        return found

    def free(self, b, pointer):
        b.call(self.function("free", ir.FunctionType(ir.VoidType(), [PTR]), ("nounwind",)),
               [pointer])

    def free_arena(self):
        """At every exit: keep the call's largest chunk for the next call (if at most
        ARENA_KEEP_MAX bytes: swapped into ``kept_block``, freeing what another thread put
        there meanwhile), free the other chunks and the list."""
        if self.arena is None:
            return
        b = self.b
        base, top = self.arena[0], self.arena[1]
        list_base, count = b.load(base, typ=PTR), b.load(top, typ=I64)
        null = ir.Constant(PTR, None)
        with counted_loop(b, "arena_free", _ZERO, _ONE,
                          lambda b, i: b.icmp_signed("<", i, count),
                          carried=[null, _ZERO], carried_names=["largest", "largest.size"]) \
                as loop:
            chunk = b.load(b.gep(list_base, [loop.index], source_etype=PTR), typ=PTR)
            size = b.load(chunk, typ=I64, name="chunk.size")
            larger = b.icmp_unsigned(">", size, loop.carried[1])
            self.free(b, b.select(larger, loop.carried[0], chunk))
            loop.next = [b.select(larger, chunk, loop.carried[0]),
                         b.select(larger, size, loop.carried[1])]
        largest, largest_size = loop.carried
        self.free(b, list_base)
        small = b.icmp_unsigned("<=", largest_size, ir.Constant(I64, ARENA_KEEP_MAX))
        kept = b.select(small, largest, null)
        self.free(b, b.select(small, null, largest))
        with b.if_then(b.icmp_unsigned("!=", kept, null)):
            self.free(b, b.atomic_rmw("xchg", self.kept_block(), kept, "acq_rel",
                                      name="displaced"))

    def element_at(self, data, offset):
        return self.b.load(self.b.gep(data, [offset], source_etype=F64T), typ=F64T)

    def store_at(self, data, offset, value):
        self.b.store(value, self.b.gep(data, [offset], source_etype=F64T))

    def loop(self, count, name):
        return counted_loop(self.b, name, _ZERO, _ONE, lambda b, i: b.icmp_signed("<", i, count))

    def argument_array(self, arg, t):
        """An array argument (a PyArrayObject*) as an array value."""
        b = self.b
        data = b.load(b.gep(arg, [ir.Constant(I64, ARRAY_DATA_OFFSET)], source_etype=ir.IntType(8)),
                      typ=PTR, name=f"{arg.name}.data")
        dims_ptr = b.load(b.gep(arg, [ir.Constant(I64, ARRAY_DIMS_OFFSET)],
                                source_etype=ir.IntType(8)), typ=PTR)
        dims = [b.load(b.gep(dims_ptr, [ir.Constant(I64, k)], source_etype=I64), typ=I64,
                       name=f"{arg.name}.dim{k}") for k in range(t.ndim)]
        return self.make_array(data, dims, t)

    def copy_gradient(self, out_object, gradient, argument):
        """Copy an array gradient into the caller's array ``out_object`` (of the argument's
        shape); a gradient of another shape leaves for the Python road."""
        b = self.b
        g_data, g_dims = self.parts(gradient)
        _, a_dims = self.parts(argument)
        same = ir.Constant(I1, 1)
        for x, y in zip(g_dims, a_dims, strict=True):
            same = b.and_(same, b.icmp_signed("==", x, y))
        self.bail(same, name="gradient_shape")
        out = b.load(b.gep(out_object, [ir.Constant(I64, ARRAY_DATA_OFFSET)],
                           source_etype=ir.IntType(8)), typ=PTR)
        with self.loop(self.size_of(g_dims), "copy") as loop:
            self.store_at(out, loop.index, self.element_at(g_data, loop.index))

    # ----- elementwise with broadcasting -------------------------------------------------
    def as_operand(self, value):
        """An operand of an elementwise loop: an array, or a number (``Opt``: present, or
        the Python road)."""
        return self.unwrap(value)

    def broadcast_dims(self, arrays, ndim):
        """numpy's broadcast shape of ``arrays`` (each (data, dims)); leaves for the Python
        road where numpy raises."""
        b = self.b
        out = []
        for axis in range(ndim):
            d = _ONE
            for _, dims in arrays:
                k = axis - (ndim - len(dims))
                if k >= 0:
                    d = b.select(b.icmp_signed("==", d, _ONE), dims[k], d)
            for _, dims in arrays:
                k = axis - (ndim - len(dims))
                if k >= 0:
                    fits = b.or_(b.icmp_signed("==", dims[k], d),
                                 b.icmp_signed("==", dims[k], _ONE))
                    self.bail(fits, name="broadcast")
            out.append(d)
        return out

    def elementwise(self, operands, compute, n_out, name="map"):
        """Arrays of the broadcast shape of ``operands`` (arrays and numbers) holding
        ``compute(elements)`` (a list of ``n_out`` f64 values) at every index."""
        operands = [self.as_operand(o) for o in operands]
        arrays = [(k, self.parts(o)) for k, o in enumerate(operands) if isinstance(o.t, Arr)]
        ndim = max(len(dims) for _, (_, dims) in arrays)
        dims = self.broadcast_dims([p for _, p in arrays], ndim)
        outs = [self.new_array(dims) for _ in range(n_out)]
        out_data = [self.parts(o)[0] for o in outs]
        b = self.b
        same = ir.Constant(I1, 1)
        for _, (_, op_dims) in arrays:
            for k, d in enumerate(op_dims):
                same = b.and_(same, b.icmp_signed("==", d, dims[ndim - len(op_dims) + k]))
                if len(op_dims) < ndim:
                    same = ir.Constant(I1, 0)

        def body(offsets, out_offset):
            self.in_elements = True
            try:
                values = compute_at(offsets)
            finally:
                self.in_elements = False
            for data, value in zip(out_data, values, strict=True):
                self.store_at(data, out_offset, self.as_kind(value, "f64"))

        def compute_at(offsets):
            elements = list(operands)
            for (k, (data, _)), offset in zip(arrays, offsets, strict=True):
                elements[k] = self._value(self.element_at(data, offset), Num("f64"))
            return compute(elements)

        with b.if_else(same) as (flat, general):
            with flat:   # every array has the result's shape: one loop over the elements
                with self.loop(self.size_of(dims), f"{name}.flat") as loop:
                    body([loop.index] * len(arrays), loop.index)
            with general:
                def nest(axis, offsets, out_offset):
                    if axis == ndim:
                        body(offsets, out_offset)
                        return
                    with self.loop(dims[axis], f"{name}.axis{axis}") as loop:
                        i = loop.index
                        following = []
                        for _, (_, op_dims) in arrays:
                            k = axis - (ndim - len(op_dims))
                            off = offsets[len(following)]
                            if k >= 0:
                                d = op_dims[k]
                                step = b.select(b.icmp_signed("==", d, _ONE), _ZERO, i)
                                off = b.add(b.mul(off, d), step)
                            following.append(off)
                        nest(axis + 1, following, b.add(b.mul(out_offset, dims[axis]), i))
                nest(0, [_ZERO] * len(arrays), _ZERO)
        return outs

    def element_libm(self, function, args, name):
        """``function`` of one element inside an array loop, as a call LLVM's loop
        vectoriser turns into libmvec's 4-lane AVX2 variant (``VECTOR_LIBM``): the scalar
        call is a small function computing lane 0 of that same variant, so an element's
        result does not depend on whether its iteration was vectorised (the vector body,
        the remainder, a broadcasting loop nest).  None: scalar libm (no AVX2 or no
        libmvec variant)."""
        if len(args) != 1 or not has_vector_libm(function):
            return None
        vector = f"_ZGVdN4v_{function}"
        # external (a local function's constant argument would be propagated into it and
        # the argument removed, breaking the mapping), named after this module's function
        scalar = f"{self.fn.name}_lane0_{function}"
        fn = self.module.globals.get(scalar)
        if fn is None:
            v4 = ir.VectorType(F64T, 4)
            variant = self.function(vector, ir.FunctionType(v4, [v4]), ("nounwind", "readnone"))
            fn = ir.Function(self.module, ir.FunctionType(F64T, [F64T]), name=scalar)
            for attribute in ("noinline", "nounwind", "readnone"):
                fn.attributes.add(attribute)
            b = ir.IRBuilder(fn.append_basic_block("entry"))
            lanes = b.insert_element(ir.Constant(v4, None), fn.args[0], ir.Constant(I64, 0))
            lanes = b.shuffle_vector(lanes, lanes, ir.Constant(ir.VectorType(ir.IntType(32), 4),
                                                                [0, 0, 0, 0]))
            b.ret(b.extract_element(b.call(variant, [lanes]), ir.Constant(I64, 0)))
        call = self.b.call(fn, list(args), name=name)
        add_string_attribute(call.attributes, "vector-function-abi-variant",
                             f"_ZGV_LLVM_N4v_{scalar}({vector})")
        return call

    def array_binary(self, op, a, c):
        if op == "pow" or op not in ("add", "sub", "mul", "div"):
            raise infer.NotTyped(f"the array operation {op} (not lowered natively)")
        return self.elementwise([a, c], lambda e: [self.binary(op, e[0], e[1])], 1, op)[0]

    def array_negate(self, a):
        return self.elementwise([a], lambda e: [self.negate(e[0])], 1, "neg")[0]

    # ----- kernels -----------------------------------------------------------------------
    def array_kernel(self, kernel, args):
        params, statements, outputs, _ = kernel.forward_program
        reduction = infer.kernel_reduction(kernel)
        # a trailing reduction: its source as one more array, reduced after the loop
        names = [reduction[1] if reduction is not None and o == reduction[0] else o
                 for o in outputs]
        typed = infer.array_kernel_outputs(kernel, [a.t for a in args]).items
        # numbers of another kind than float64 beside the arrays (an int `m - 1` fused
        # with `0 * t`): computed once from the number inputs, outside the element loop
        side = {k for k, t in enumerate(typed) if isinstance(t, Num) and t.kind != "f64"}
        looped = [n for k, n in enumerate(names) if k not in side]

        def compute(elements):
            env = self.program(statements, dict(zip(params, elements, strict=True)))
            return [env[o] for o in looped]

        computed = iter(self.elementwise(args, compute, len(looped), kernel.name))
        numbers_env = {p: self.unwrap(a) for p, a in zip(params, args, strict=True)
                       if not infer.is_array(a.t)}
        arrays = [self.program(_slice(statements, o), numbers_env)[o] if k in side
                  else next(computed) for k, o in enumerate(outputs)]
        full = self.parts(next(a for k, a in enumerate(arrays) if k not in side))[1]
        numbers = infer.number_outputs(kernel, [a.t for a in args])
        for k, deps in enumerate(infer.output_sources(kernel)):   # else numpy's is smaller
            sources = [self.parts(self.unwrap(args[j])) for j in deps
                       if infer.is_array(args[j].t)]
            if k in side:
                continue
            if k in numbers:   # a number computed beside arrays: at any (the first) index
                self.bail(self.b.icmp_signed(">", self.size_of(full), _ZERO), name="empty")
                arrays[k] = self._value(self.element_at(self.parts(arrays[k])[0], _ZERO),
                                        Num("f64"))
                continue
            for x, y in zip(self.broadcast_dims(sources, len(full)), full, strict=True):
                self.bail(self.b.icmp_signed("==", x, y), name="output_shape")
        if reduction is not None:
            k = outputs.index(reduction[0])
            value = self.reduce_all(reduction[2], arrays[k])
            cell = self.new_array([_ONE])
            self.store_at(self.parts(cell)[0], _ZERO, value.v)
            arrays[k] = cell
        t = Tup(tuple(a.t for a in arrays))
        v = ir.Constant(self.ltype(t), None)
        for k, a in enumerate(arrays):
            v = self.b.insert_value(v, a.v, k)
        return self._value(v, t)

    def array_with_gradient(self, kernel, args):
        inputs = args[1:]
        outputs = self.array_kernel(kernel, inputs)
        seeds_t = infer.with_gradient_seeds(kernel)
        seeds = ir.Constant(self.ltype(seeds_t), None)
        k = seeds_t.items.index(infer.F64)
        seeds = self.b.insert_value(seeds, ir.Constant(F64T, 1.0), k)
        parts = self.array_kernel_vjp(kernel, [self._value(seeds, seeds_t), outputs, *inputs])
        t = infer.array_with_gradient(kernel, [a.t for a in inputs])
        b, v = self.b, ir.Constant(self.ltype(t), None)
        reduced = kernel.forward_program[3][0]
        for k, o in enumerate(kernel.forward_program[2]):
            if o == reduced:
                v = b.insert_value(v, b.extract_value(outputs.v, k), k)
        n = len(kernel.forward_program[2])
        for k, item in enumerate(parts.t.items):   # present: the seed of 1 is
            if item is not NONE:
                v = b.insert_value(v, b.extract_value(parts.v, k + 1), n + k)
        return self._value(v, t)

    def unit_gradients(self, kernel, args):
        grads, outputs = args[0], args[1]
        t = infer.unit_gradients(kernel, grads.t, outputs.t)
        if grads.t is NONE:
            return self._value(ir.Constant(self.ltype(t), None), t)
        b = self.b
        seed = self._value(b.extract_value(self.content(grads).v, 0),
                           inner(grads.t).items[0])
        slot = self.alloca(self.ltype(t), f"{kernel.name}.units")
        b.store(ir.Constant(self.ltype(t), None), slot)
        with b.if_then(b.and_(self.present(grads), self.present(seed))):
            seed = self.content(seed)
            out = self.unwrap(outputs)
            n = len(kernel.forward_program[2])
            v = b.insert_value(ir.Constant(self.ltype(t), None), ir.Constant(I1, 1), 0)
            for k, item_t in enumerate(t.items):
                if item_t is not NONE:
                    unit = self._value(b.extract_value(out.v, n + k), item_t)
                    v = b.insert_value(v, self.array_binary("mul", unit, seed).v, k + 1)
            b.store(v, slot)
        return self._value(b.load(slot), t)

    def absent_as_zeros(self, item, ndim):
        """A gradient item that may be None as an operand: an array, or 0.0 (broadcast)."""
        if item.t is NONE:
            return self._value(ir.Constant(F64T, 0.0), Num("pyfloat"))
        if not isinstance(item.t, Opt):
            return item
        b = self.b
        present = b.extract_value(item.v, 0)
        content = self.content(item)
        if isinstance(content.t, Num):
            return self._value(b.select(present, content.v, ir.Constant(F64T, 0.0)), Num("f64"))
        data, dims = self.parts(content)
        zero = self.zero_global()
        return self.make_array(b.select(present, data, zero),
                               [b.select(present, d, _ONE) for d in dims], content.t)

    def zero_global(self):
        found = self.module.globals.get("pb.zero")
        if found is None:
            found = ir.GlobalVariable(self.module, F64T, "pb.zero")
            found.initializer = ir.Constant(F64T, 0.0)
            found.global_constant = True
            found.linkage = "internal"
        return found

    def array_kernel_vjp(self, kernel, args):
        grads, outputs, inputs = args[0], args[1], args[2:]
        result_t = infer.array_kernel_vjp(kernel, grads.t, outputs.t, [a.t for a in inputs])
        if grads.t is NONE:
            return self._value(ir.Constant(self.ltype(result_t), None), result_t)
        b = self.b
        gnames, onames, inames, statements, results = kernel.adjoint_program
        slot = self.alloca(self.ltype(result_t), f"{kernel.name}.parts")
        b.store(ir.Constant(self.ltype(result_t), None), slot)
        glist = self.content(grads)
        items = [self._value(b.extract_value(glist.v, k), glist.t.items[k])
                 for k in range(len(gnames))]
        any_present = ir.Constant(I1, 0)
        for item in items:
            any_present = b.or_(any_present, self.present(item))
        with b.if_then(b.and_(self.present(grads), any_present)):
            ndim = infer.array_ndim(grads.t, outputs.t, *[a.t for a in inputs])
            out = self.unwrap(outputs)
            operands = [self.absent_as_zeros(item, ndim) for item in items]
            reduction = infer.kernel_reduction(kernel)
            arrays_in = [self.parts(self.unwrap(a)) for a in inputs if infer.is_array(a.t)]
            count = self.size_of(self.broadcast_dims(arrays_in, max(len(d) for _, d in
                                                                   arrays_in)))
            n = self._value(b.sitofp(count, F64T), Num("f64"))
            # seeds summed over the grid: a mean's (the sum's seed g / n, as the Python
            # road computes it) and a number output's (counted once per element: g / n)
            divided = infer.number_outputs(kernel, [a.t for a in inputs])
            if divided:
                self.bail(b.icmp_signed(">", count, _ZERO), name="empty")
            if reduction is not None and reduction[2] == "mean":
                divided = divided | {list(onames).index(reduction[0])}
            for k in sorted(divided):
                seed = operands[k]
                operands[k] = self.array_binary("div", seed, n) if infer.is_array(seed.t) \
                    else self.binary("div", seed, n)
            operands += [self._value(b.extract_value(out.v, k), out.t.items[k])
                         for k in range(len(onames))]
            operands += list(inputs)
            names = [*gnames, *onames, *inames]
            wanted = [r for r in results if r is not None]

            def compute(elements):
                env = {}
                for n, e in zip(names, elements, strict=True):
                    if n in gnames and isinstance(e.t, Num) and e.t.kind == "pyfloat":
                        e = self._value(e.v, Num("f64"))
                    env[n] = e
                env = self.program(infer.seed_statements(statements), env)
                return [env[r] for r in wanted]

            arrays = self.elementwise(operands, compute, len(wanted), f"{kernel.name}.vjp")
            # an absent output gradient computed as 0 is exact where the partials are
            # finite; elsewhere (0 * inf) the Python road recomputes statement by statement
            all_present = ir.Constant(I1, 1)
            for item in items:
                all_present = b.and_(all_present, self.present(item))
            with b.if_then(b.not_(all_present)):
                for array in arrays:
                    self.bail(self.all_finite(array), name="absent_gradient")
            arrays = iter(arrays)
            v = b.insert_value(ir.Constant(self.ltype(result_t), None), ir.Constant(I1, 1), 0)
            for k, r in enumerate(results):
                if r is not None:
                    v = b.insert_value(v, next(arrays).v, k + 1)
            b.store(v, slot)
        return self._value(b.load(slot), result_t)

    def all_finite(self, array):
        """i1: no element of ``array`` is inf or nan."""
        b = self.b
        data, dims = self.parts(array)
        size = self.size_of(dims)
        with counted_loop(b, "finite", _ZERO, _ONE, lambda b, i: b.icmp_signed("<", i, size),
                          carried=[ir.Constant(I1, 1)]) as loop:
            e = self.element_at(data, loop.index)
            loop.next = [b.and_(loop.carried[0], b.fcmp_ordered("==", b.fsub(e, e),
                                                                ir.Constant(F64T, 0.0)))]
        return loop.carried[0]

    # ----- reads -------------------------------------------------------------------------
    def array_item(self, value, index):
        """``x[i]``: negative ``i`` counts from the end; outside, the Python road."""
        b = self.b
        x, i = self.unwrap(value), self.unwrap(index).v
        data, dims = self.parts(x)
        i = b.select(b.icmp_signed("<", i, _ZERO), b.add(i, dims[0]), i, name="index")
        self.bail(b.and_(b.icmp_signed(">=", i, _ZERO), b.icmp_signed("<", i, dims[0])),
                  name="index_range")
        row = self.size_of(dims[1:])
        if x.t.ndim == 1:
            return self._value(self.element_at(data, i), Num(x.t.kind))
        view = b.gep(data, [b.mul(i, row)], source_etype=F64T, name="row")
        return self.make_array(view, dims[1:], Arr(x.t.kind, x.t.ndim - 1))

    def array_attribute(self, value, attr):
        x = self.unwrap(value)
        _, dims = self.parts(x)
        if attr == "ndim":
            return self._value(ir.Constant(I64, x.t.ndim), infer.INT)
        if attr == "size":
            return self._value(self.size_of(dims), infer.INT)
        t = Tup((infer.INT,) * x.t.ndim)
        v = ir.Constant(self.ltype(t), None)
        for k, d in enumerate(dims):
            v = self.b.insert_value(v, d, k)
        return self._value(v, t)

    # ----- reductions --------------------------------------------------------------------
    def reduce_all(self, how, x):
        b = self.b
        x = self.unwrap(x)
        data, dims = self.parts(x)
        size = self.size_of(dims)
        if how in ("max", "min"):
            self.bail(b.icmp_signed(">", size, _ZERO), name="empty_reduction")   # ValueError
            return self._value(self.extremum_all(how, data, size), Num("f64"))
        total = b.fadd(ir.Constant(F64T, 0.0),   # numpy's: the identity, then the sum
                       self.sum_all(data, size, how == "norm"), name=how)
        if how == "mean":
            total = b.fdiv(total, b.sitofp(size, F64T))
        elif how == "norm":
            total = self.math_call("sqrt", [total], "f64")
        return self._value(total, Num("f64"))

    def pairwise_sum(self, square):
        """``double sum(ptr data, i64 n)``: numpy's pairwise sum of ``n`` elements (of their
        squares), so a whole-array sum equals ``np.sum``'s bit for bit: up to 128 elements
        ``block_sum``; above, the two halves (the first a multiple of 8) summed so and
        added."""
        name = f"{self.fn.name}.pairwise_sum{'_squares' if square else ''}"
        fn = self.module.globals.get(name)
        if fn is not None:
            return fn
        fn = ir.Function(self.module, ir.FunctionType(F64T, [PTR, I64]), name=name)
        fn.linkage = "internal"
        for attribute in ("nounwind", "readonly", "noinline"):
            fn.attributes.add(attribute)
        data, n = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        block, large = fn.append_basic_block("block"), fn.append_basic_block("large")
        b.cbranch(b.icmp_signed("<=", n, ir.Constant(I64, 128)), block, large)
        b.position_at_end(block)
        b.ret(self.block_sum(b, data, n, square))
        b.position_at_end(large)
        half = b.sdiv(n, ir.Constant(I64, 2))
        half = b.sub(half, b.srem(half, ir.Constant(I64, 8)), name="half")
        first = b.call(fn, [data, half])
        second = b.call(fn, [b.gep(data, [half], source_etype=F64T), b.sub(n, half)])
        b.ret(b.fadd(first, second))
        return fn

    @staticmethod
    def block_sum(b, data, n, square):
        """numpy's sum of ``n`` <= 128 elements (squares): under 8 in order from 0.0; else
        eight running sums (element ``i`` into ``i % 8``: two vectors of four) added as
        ((0+1)+(2+3))+((4+5)+(6+7)), then the last ``n % 8`` in order."""
        v4 = ir.VectorType(F64T, 4)

        def four(at):
            v = b.load(b.gep(data, [at], source_etype=F64T), typ=v4)
            v.align = 8
            return b.fmul(v, v) if square else v

        before = b.block
        with b.if_then(b.icmp_signed(">=", n, ir.Constant(I64, 8))):
            whole = b.sub(n, b.srem(n, ir.Constant(I64, 8)), name="whole")
            with counted_loop(b, "eights", ir.Constant(I64, 8), ir.Constant(I64, 8),
                              lambda b, i: b.icmp_signed("<", i, whole),
                              carried=[four(_ZERO), four(ir.Constant(I64, 4))]) as loop:
                loop.next = [b.fadd(acc, four(b.add(loop.index, ir.Constant(I64, 4 * k))))
                             for k, acc in enumerate(loop.carried)]
            r = [b.extract_element(acc, ir.Constant(I64, j)) for acc in loop.carried
                 for j in range(4)]
            eights = b.fadd(b.fadd(b.fadd(r[0], r[1]), b.fadd(r[2], r[3])),
                            b.fadd(b.fadd(r[4], r[5]), b.fadd(r[6], r[7])), name="eights")
            after = b.block
        start, total = b.phi(I64, name="tail.start"), b.phi(F64T, name="tail.total")
        start.add_incoming(_ZERO, before)
        start.add_incoming(whole, after)
        total.add_incoming(ir.Constant(F64T, 0.0), before)
        total.add_incoming(eights, after)
        with counted_loop(b, "tail", start, _ONE, lambda b, i: b.icmp_signed("<", i, n),
                          carried=[total]) as loop:
            e = b.load(b.gep(data, [loop.index], source_etype=F64T), typ=F64T)
            loop.next = [b.fadd(loop.carried[0], b.fmul(e, e) if square else e)]
        return loop.carried[0]

    def sum_all(self, data, size, square):
        """numpy's pairwise sum of a whole array: up to 128 elements inline, more through
        ``pairwise_sum`` (a call only on that branch, so the function's other loops keep
        their registers)."""
        b = self.b
        slot = self.alloca(F64T, "sum.total")
        with b.if_else(b.icmp_signed("<=", size, ir.Constant(I64, 128))) as (block, large):
            with block:
                b.store(self.block_sum(b, data, size, square), slot)
            with large:
                b.store(b.call(self.pairwise_sum(square), [data, size]), slot)
        return b.load(slot, typ=F64T)

    def extremum_all(self, how, data, size):
        """The max/min of ``size`` (> 0) elements: NaN if any is NaN, else the largest
        (smallest) value, as numpy's.  Eight running extrema (two vectors of four, element
        ``i`` into lane ``i % 8``), then those lanes and the last ``size % 8`` elements in
        order: a value does not depend on the order (only which of equal zeros, -0.0 or
        0.0, is returned can), and the loop runs at vector speed where one running
        extremum is a chain of dependent compares."""
        b = self.b
        v4 = ir.VectorType(F64T, 4)
        first = self.element_at(data, _ZERO)
        splat = b.shuffle_vector(b.insert_element(ir.Constant(v4, None), first, _ZERO),
                                 ir.Constant(v4, None), ir.Constant(ir.VectorType(
                                     ir.IntType(32), 4), [0, 0, 0, 0]), name=f"{how}.first")
        whole = b.and_(size, ir.Constant(I64, -8), name=f"{how}.whole")
        with counted_loop(b, f"{how}.lanes", _ZERO, ir.Constant(I64, 8),
                          lambda b, i: b.icmp_signed("<", i, whole),
                          carried=[splat, splat]) as loop:
            lanes = []
            for k, acc in enumerate(loop.carried):
                at = b.gep(data, [b.add(loop.index, ir.Constant(I64, 4 * k))],
                           source_etype=F64T)
                four = b.load(at, typ=v4, name=f"{how}.four")
                four.align = 8
                lanes.append(self.extremum(how, acc, four))
            loop.next = lanes
        total = first
        for acc in loop.carried:
            for lane in range(4):
                total = self.extremum(how, total, b.extract_element(acc, ir.Constant(I64, lane)))
        with counted_loop(b, how, whole, _ONE, lambda b, i: b.icmp_signed("<", i, size),
                          carried=[total]) as loop:
            loop.next = [self.extremum(how, loop.carried[0], self.element_at(data, loop.index))]
        return loop.carried[0]

    def extremum(self, how, a, c):
        from .lower_function import _ScalarMath
        math = _ScalarMath(self.module, self.b, F64T)
        return (math.maximum if how == "max" else math.minimum)(a, c, name=how)

    def reduce_axis(self, how, x, axis):
        """A reduction over one axis (index order; max/min of an empty axis: Python road)."""
        b = self.b
        x = self.unwrap(x)
        data, dims = self.parts(x)
        axis = axis % x.t.ndim
        outer, length, inner_size = (self.size_of(dims[:axis]), dims[axis],
                                     self.size_of(dims[axis + 1:]))
        out = self.new_array(dims[:axis] + dims[axis + 1:])
        out_data = self.parts(out)[0]
        extremum = how in ("max", "min")
        if extremum:
            self.bail(b.icmp_signed(">", length, _ZERO), name="empty_reduction")
        with self.loop(outer, "outer") as o:
            base = b.mul(o.index, b.mul(length, inner_size))
            row = b.mul(o.index, inner_size)
            with self.loop(inner_size, "init") as j:
                first = self.element_at(data, b.add(base, j.index)) if extremum else \
                    ir.Constant(F64T, 0.0)
                self.store_at(out_data, b.add(row, j.index), first)
            start = _ONE if extremum else _ZERO
            with counted_loop(b, "axis", start, _ONE,
                              lambda b, i: b.icmp_signed("<", i, length)) as k:
                with self.loop(inner_size, "inner") as j:
                    at = b.add(row, j.index)
                    e = self.element_at(data, b.add(base, b.add(b.mul(k.index, inner_size),
                                                                j.index)))
                    acc = self.element_at(out_data, at)
                    self.store_at(out_data, at, self.extremum(how, acc, e) if extremum
                                  else b.fadd(acc, e))
            if how == "mean":
                with self.loop(inner_size, "mean") as j:
                    at = b.add(row, j.index)
                    self.store_at(out_data, at, b.fdiv(self.element_at(out_data, at),
                                                       b.sitofp(length, F64T)))
        return out

    def call_reduction(self, node, args, keywords):
        name = infer.dotted(node.func)
        how = infer.SCALAR_REDUCTIONS.get(name) or infer.NUMPY_REDUCTIONS[name]
        axis = None
        if name in infer.NUMPY_REDUCTIONS:
            axis = infer._reduction_axis(node, args, dict(keywords), name)
        if axis is None or inner(args[0].t).ndim == 1:
            return self.reduce_all(how, args[0])
        return self.reduce_axis(how, args[0], axis)

    # ----- dot ---------------------------------------------------------------------------
    def matrix(self, value):
        """``(data, rows, cols, row_stride, col_stride)`` of a vector or matrix; a vector
        is a row ``(1, n)`` (``as_column``: a column ``(n, 1)``)."""
        data, dims = self.parts(value)
        if len(dims) == 2:
            return data, dims[0], dims[1], dims[1], _ONE
        return data, _ONE, dims[0], dims[0], _ONE

    def column(self, value):
        data, dims = self.parts(value)
        if len(dims) == 2:
            return data, dims[0], dims[1], dims[1], _ONE
        return data, dims[0], _ONE, _ONE, _ONE

    @staticmethod
    def transposed(m):
        data, rows, cols, rs, cs = m
        return data, cols, rows, cs, rs

    def matmul(self, a, c, out_data):
        """``out = a @ c`` (row-major, ``rows(a) x cols(c)``): every element summed from 0.0
        in index order of the inner axis (the same sums in each loop order below, chosen
        for the unit-stride operand: a matrix times a column runs four rows at a time, a
        transposed matrix times a column along ``out``, matrix products along its rows)."""
        b = self.b
        a_data, m, p, a_rs, a_cs = a
        c_data, p2, n, c_rs, c_cs = c
        self.bail(b.icmp_signed("==", p, p2), name="dot_shape")   # numpy's ValueError
        zero = ir.Constant(F64T, 0.0)

        def at_a(i, k):
            return self.element_at(a_data, b.add(b.mul(i, a_rs), b.mul(k, a_cs)))

        def at_c(k, j):
            return self.element_at(c_data, b.add(b.mul(k, c_rs), b.mul(j, c_cs)))

        def along_rows():   # out[i, :] += a[i, k] * c[k, :], k ascending
            with self.loop(b.mul(m, n), "dot.zero") as z:
                self.store_at(out_data, z.index, zero)
            outer, inner_count = (m, n)
            with self.loop(p, "dot.k") as k:
                with self.loop(outer, "dot.i") as i:
                    x = at_a(i.index, k.index)
                    with self.loop(inner_count, "dot.j") as j:
                        at = b.add(b.mul(i.index, n), j.index)
                        self.store_at(out_data, at, b.fadd(self.element_at(out_data, at),
                                                           b.fmul(x, at_c(k.index, j.index))))

        def rows_of_four():   # n == 1: out[i] = sum_k a[i, k] c[k], four rows at once
            four = ir.Constant(I64, 4)
            blocks = b.sdiv(m, four)
            with self.loop(blocks, "dot.block") as blk:
                rows = [b.add(b.mul(blk.index, four), ir.Constant(I64, r)) for r in range(4)]
                with counted_loop(b, "dot.k4", _ZERO, _ONE,
                                  lambda b, k: b.icmp_signed("<", k, p),
                                  carried=[zero] * 4) as k:
                    y = at_c(k.index, _ZERO)
                    k.next = [b.fadd(acc, b.fmul(at_a(r, k.index), y))
                              for acc, r in zip(k.carried, rows, strict=True)]
                for acc, r in zip(k.carried, rows, strict=True):
                    self.store_at(out_data, r, acc)
            with counted_loop(b, "dot.rest", b.mul(blocks, four), _ONE,
                              lambda b, i: b.icmp_signed("<", i, m)) as i:
                with counted_loop(b, "dot.k1", _ZERO, _ONE,
                                  lambda b, k: b.icmp_signed("<", k, p),
                                  carried=[zero]) as k:
                    k.next = [b.fadd(k.carried[0], b.fmul(at_a(i.index, k.index),
                                                          at_c(k.index, _ZERO)))]
                self.store_at(out_data, i.index, k.carried[0])

        def along_columns():   # n == 1: out[:] += a[:, k] * c[k], k ascending
            with self.loop(m, "dot.zero") as z:
                self.store_at(out_data, z.index, zero)
            with self.loop(p, "dot.k") as k:
                y = at_c(k.index, _ZERO)
                with self.loop(m, "dot.i") as i:
                    self.store_at(out_data, i.index, b.fadd(self.element_at(out_data, i.index),
                                                            b.fmul(at_a(i.index, k.index), y)))

        column = b.icmp_signed("==", n, _ONE)
        rows_contiguous = b.icmp_signed("==", a_cs, _ONE)
        with b.if_else(column) as (matvec, other):
            with matvec:
                with b.if_else(rows_contiguous) as (by_rows, by_columns):
                    with by_rows:
                        rows_of_four()
                    with by_columns:
                        along_columns()
            with other:
                along_rows()

    def call_npops_dot(self, node, args, keywords):
        x, y = self.unwrap(args[0]), self.unwrap(args[1])
        t = infer.dot_type(x.t, y.t)
        xd, yd = self.parts(x)[1], self.parts(y)[1]
        dims = xd[:-1] + (yd[:-2] + yd[-1:] if len(yd) == 2 else [])
        if isinstance(t, Num):
            cell = self.alloca(F64T, "dot.value")
            self.matmul(self.matrix(x), self.column(y), cell)
            return self._value(self.b.load(cell), t)
        out = self.new_array(dims)
        self.matmul(self.matrix(x), self.column(y), self.parts(out)[0])
        return out

    def call_ops_matmul(self, node, args, keywords):
        return self.call_npops_dot(node, args, keywords)

    call_npops_matmul = call_ops_matmul

    def gradient_matrix(self, g, rows, cols):
        """A dot's output gradient as a ``rows x cols`` matrix (a number: a 1x1 cell)."""
        if isinstance(g.t, Num):
            cell = self.alloca(F64T, "dot.seed")
            self.b.store(self.as_kind(g, "f64"), cell)
            return cell, _ONE, _ONE, _ONE, _ONE
        data, dims = self.parts(g)
        size = self.size_of(dims)
        self.bail(self.b.icmp_signed("==", size, self.b.mul(rows, cols)), name="dot_gradient")
        return data, rows, cols, cols, _ONE

    def rule_dot_0(self, g, x, y):
        """``g @ y.T`` in ``x``'s shape."""
        xm, yc = self.matrix(x), self.column(y)
        gm = self.gradient_matrix(g, xm[1], yc[2])
        out = self.new_array(self.parts(x)[1])
        self.matmul(gm, self.transposed(yc), self.parts(out)[0])
        return out

    def rule_matmul_0(self, g, x, y):
        return self.rule_dot_0(g, x, y)

    def rule_matmul_1(self, g, x, y):
        return self.rule_dot_1(g, x, y)

    def rule_dot_1(self, g, x, y):
        """``x.T @ g`` in ``y``'s shape."""
        xm, yc = self.matrix(x), self.column(y)
        gm = self.gradient_matrix(g, xm[1], yc[2])
        out = self.new_array(self.parts(y)[1])
        self.matmul(self.transposed(xm), gm, self.parts(out)[0])
        return out

    def reduction_rule(self, how, g, ans, x, axis):
        """The gradient of ``x`` through ``sum``/``mean``/``max``/``min`` over ``axis``
        (None: all) as the primitives' rules compute it: ``g`` spread over the reduced
        axis (mean: ``g / n``; max/min: ``g * (mask / count)``, the ties sharing)."""
        b = self.b
        data, dims = self.parts(x)
        if axis is None or len(dims) == 1:
            outer, length, inner_size = _ONE, self.size_of(dims), _ONE
        else:
            axis %= len(dims)
            outer, length, inner_size = (self.size_of(dims[:axis]), dims[axis],
                                         self.size_of(dims[axis + 1:]))
        out = self.new_array(dims)
        out_data = self.parts(out)[0]

        def reduced(value, at):   # g or ans at a reduced position
            if isinstance(value.t, Num):
                return self.as_kind(value, "f64")
            return self.element_at(self.parts(value)[0], at)

        with self.loop(outer, "rule.outer") as o:
            with self.loop(inner_size, "rule.inner") as j:
                at = b.add(b.mul(o.index, inner_size), j.index)
                seed = reduced(g, at)
                offset = b.add(b.mul(o.index, b.mul(length, inner_size)), j.index)

                def element_offset(k):
                    return b.add(offset, b.mul(k, inner_size))

                if how == "mean":
                    seed = b.fdiv(seed, b.sitofp(length, F64T))
                if how in ("max", "min"):
                    top = reduced(ans, at)
                    with counted_loop(b, "rule.count", _ZERO, _ONE,
                                      lambda b, k: b.icmp_signed("<", k, length),
                                      carried=[_ZERO]) as k:   # exact: an integer count
                        hit = b.fcmp_ordered("==", self.element_at(data, element_offset(
                            k.index)), top)
                        k.next = [b.add(k.carried[0], b.zext(hit, I64))]
                    count = b.sitofp(k.carried[0], F64T, name="count")
                    # mask / count is 1 / count or 0 / count (0, or NaN for no hit): both
                    # divided once, the same values as one division per element
                    shares = [b.fmul(seed, b.fdiv(ir.Constant(F64T, m), count),
                                     name=f"share{m:.0f}") for m in (0.0, 1.0)]
                with self.loop(length, "rule.spread") as k:
                    value = seed
                    if how in ("max", "min"):
                        hit = b.fcmp_ordered("==", self.element_at(data, element_offset(
                            k.index)), top)
                        value = b.select(hit, shares[1], shares[0])
                    self.store_at(out_data, element_offset(k.index), value)
        return out

    # ----- the adjoint's helpers ---------------------------------------------------------
    def if_present(self, value, rt, compute, otherwise):
        """``compute(content)`` where ``value`` is present, else ``otherwise()``, as ``rt``."""
        if not can_be_none(value.t):
            return self._value(self.coerce(compute(value), rt), rt)
        b = self.b
        slot = self.alloca(self.ltype(rt), "present")
        with b.if_else(self.present(value)) as (then, orelse):
            with then:
                b.store(self.coerce(compute(self.content(value)), rt), slot)
            with orelse:
                b.store(self.coerce(otherwise(), rt), slot)
        return self._value(b.load(slot), rt)

    def call_support_accumulate(self, node, args, keywords):
        total, rule, g, rest = args[0], args[1], args[2], [self.unwrap(a) for a in args[4:]]
        rt = infer._accumulate(node, [a.t for a in args], dict(keywords))
        if g.t is NONE:
            return total
        base = rule.t.name.rpartition("_")[0]
        if base in ("sum", "mean", "max", "min"):
            ans = self.unwrap(args[3]) if rule.t.name in infer.READS_RESULT else None

            def method(g, x):
                return self.reduction_rule(base, g, ans, x, keywords.get("axis"))
        else:
            method = getattr(self, f"rule_{rule.t.name}")
        if (rule.t.name in ("dot_0", "matmul_0") and self.target in self.private
                and isinstance(inner(total.t), Arr) and inner(total.t).ndim == 2
                and isinstance(inner(g.t), Arr) and inner(g.t).ndim == 1
                and [a.t.ndim if isinstance(a.t, Arr) else 0 for a in rest] == [2, 1]):
            return self.if_present(
                g, rt, lambda g: self.outer_in_place(total, g, *rest, method, rt), lambda: total)
        return self.if_present(g, rt, lambda g: self.add_to_fresh(total, method(g, *rest)),
                               lambda: total)

    def outer_in_place(self, total, g, x, y, method, rt):
        """``total + dot_0(g, x, y)`` for a matrix ``x``, a vector ``y`` and a ``total``
        no other name holds (``lower_function.private_accumulators``): the outer product
        is added into ``total``'s own storage, each element ``total + (0.0 + g[i] * y[j])``
        exactly as the rule's product and ``add_grads`` compute it.  Any other case (None
        or another shape): the rule's fresh array, as ``add_to_fresh``."""
        b = self.b
        t_data, t_dims = self.parts(self.content(total))
        x_dims, (g_data, g_dims), (y_data, y_dims) = (self.parts(x)[1], self.parts(g),
                                                      self.parts(y))
        self.bail(b.icmp_signed("==", self.size_of(g_dims), x_dims[0]), name="dot_gradient")
        fits = self.present(total)
        for p, q in ((t_dims[0], x_dims[0]), (t_dims[1], x_dims[1]), (y_dims[0], x_dims[1])):
            fits = b.and_(fits, b.icmp_signed("==", p, q))
        slot = self.alloca(self.ltype(rt), "accumulated")
        zero = ir.Constant(F64T, 0.0)
        with b.if_else(fits) as (in_place, other):
            with in_place:
                with self.loop(x_dims[0], "outer.i") as i:
                    gi = self.element_at(g_data, i.index)
                    row = b.mul(i.index, x_dims[1])
                    with self.loop(x_dims[1], "outer.j") as j:
                        at = b.add(row, j.index)
                        part = b.fadd(zero, b.fmul(gi, self.element_at(y_data, j.index)))
                        self.store_at(t_data, at, b.fadd(self.element_at(t_data, at), part))
                b.store(self.coerce(self.content(total), rt), slot)
            with other:
                b.store(self.coerce(self.add_to_fresh(total, method(g, x, y)), rt), slot)
        return self._value(b.load(slot), rt)

    def add_to_fresh(self, total, part):
        """``add_grads(total, part)`` for a ``part`` just allocated (a rule's result): where
        ``total`` is an array of its shape, ``part`` receives the sum in place (no new
        array; each element ``total + part`` as add_grads computes it)."""
        if not (isinstance(part.t, Arr) and isinstance(inner(total.t), Arr)
                and inner(total.t) == part.t):
            return self.add_grads(total, part)
        b = self.b
        rt = infer.add_grads(total.t, part.t)
        present = self.present(total)
        content = self.content(total)
        t_data, t_dims = self.parts(content)
        p_data, p_dims = self.parts(part)
        same = present
        for x, y in zip(t_dims, p_dims, strict=True):
            same = b.and_(same, b.icmp_signed("==", x, y))
        slot = self.alloca(self.ltype(rt), "accumulated")
        with b.if_else(same) as (in_place, other):
            with in_place:
                with self.loop(self.size_of(p_dims), "accumulate") as loop:
                    self.store_at(p_data, loop.index, b.fadd(self.element_at(t_data, loop.index),
                                                             self.element_at(p_data, loop.index)))
                b.store(self.coerce(part, rt), slot)
            with other:
                b.store(self.coerce(self.add_grads(total, part), rt), slot)
        return self._value(b.load(slot), rt)

    def call_support_unbroadcast(self, node, args, keywords):
        g, value = args
        if not (infer.is_array(g.t) or infer.is_array(value.t)):
            return args[0]   # numbers: the scalar road's rule
        rt = infer._array_unbroadcast(node, [g.t, value.t], {})
        if g.t is NONE:
            return g
        target = inner(value.t)
        return self.if_present(g, rt, lambda g: self.sum_to(g, value, target),
                               lambda: self._value(ir.Constant(self.ltype(NONE), None), NONE))

    def sum_to(self, g, value, target):
        """``g`` summed down to ``value``'s shape (a number: all of it)."""
        if isinstance(target, Num):
            return self.reduce_all("sum", g)
        b = self.b
        value = self.unwrap(value)
        g_data, g_dims = self.parts(g)
        _, v_dims = self.parts(value)
        ndim = len(g_dims)
        same = ir.Constant(I1, 1 if len(v_dims) == ndim else 0)
        if len(v_dims) == ndim:
            for x, y in zip(g_dims, v_dims, strict=True):
                same = b.and_(same, b.icmp_signed("==", x, y))
        slot = self.alloca(array_ltype(target), "sum_to")
        with b.if_else(same) as (equal, reduce):
            with equal:
                if len(v_dims) == ndim:
                    b.store(g.v, slot)
            with reduce:
                for k, d in enumerate(v_dims):
                    g_d = g_dims[ndim - len(v_dims) + k]
                    self.bail(b.or_(b.icmp_signed("==", d, g_d), b.icmp_signed("==", d, _ONE)),
                              name="sum_to")
                out = self.new_array(v_dims)
                out_data = self.parts(out)[0]
                with self.loop(self.size_of(v_dims), "zero") as loop:
                    self.store_at(out_data, loop.index, ir.Constant(F64T, 0.0))

                def nest(axis, offset, g_offset):
                    if axis == ndim:
                        self.store_at(out_data, offset, b.fadd(self.element_at(out_data, offset),
                                                               self.element_at(g_data, g_offset)))
                        return
                    with self.loop(g_dims[axis], f"sum_to.axis{axis}") as loop:
                        k = axis - (ndim - len(v_dims))
                        following = offset
                        if k >= 0:
                            d = v_dims[k]
                            step = b.select(b.icmp_signed("==", d, _ONE), _ZERO, loop.index)
                            following = b.add(b.mul(offset, d), step)
                        nest(axis + 1, following, b.add(b.mul(g_offset, g_dims[axis]), loop.index))
                nest(0, _ZERO, _ZERO)
                b.store(out.v, slot)
        return self._value(b.load(slot), target)

    def call_support_index_grad(self, node, args, keywords):
        total, g, value, key = args
        if not infer.is_array(value.t):
            return self.call_support_index_grad_tuple(node, args)
        rt = infer._array_index_grad(node, [a.t for a in args], {})
        if g.t is NONE:
            return total
        if isinstance(key.t, infer.Slice):
            return self.if_present(g, rt, lambda g: self.slice_added(total, g, value, key),
                                   lambda: total)
        return self.if_present(g, rt, lambda g: self.row_added(total, g, value, key),
                               lambda: total)

    def row_added(self, total, g, value, key):
        """``total`` (None: zeros) plus ``g`` at ``value[key]``, as a new array."""
        b = self.b
        value = self.unwrap(value)
        _, dims = self.parts(value)
        out = self.new_array(dims)
        out_data, size = self.parts(out)[0], self.size_of(dims)
        if total.t is NONE:
            present, total_data = ir.Constant(I1, 0), ir.Constant(PTR, None)
        else:
            present = self.present(total)
            total_data = b.select(present, self.parts(self.content(total))[0],
                                  ir.Constant(PTR, None)) if can_be_none(total.t) \
                else self.parts(total)[0]
        with b.if_else(present) as (have, zeros):
            with have:
                with self.loop(size, "copy") as loop:
                    self.store_at(out_data, loop.index, self.element_at(total_data, loop.index))
            with zeros:
                with self.loop(size, "zeros") as loop:
                    self.store_at(out_data, loop.index, ir.Constant(F64T, 0.0))
        i = self.unwrap(key).v
        i = b.select(b.icmp_signed("<", i, _ZERO), b.add(i, dims[0]), i)
        self.bail(b.and_(b.icmp_signed(">=", i, _ZERO), b.icmp_signed("<", i, dims[0])),
                  name="index_range")
        row = self.size_of(dims[1:])
        start = b.mul(i, row)
        with self.loop(row, "row") as loop:
            at = b.add(start, loop.index)
            part = self.as_kind(g, "f64") if isinstance(g.t, Num) else \
                self.element_at(self.parts(g)[0], loop.index)
            self.store_at(out_data, at, b.fadd(self.element_at(out_data, at), part))
        return out

    def call_np_linspace(self, node, args):
        """``np.linspace(start, stop, num)`` as numpy computes it: ``delta = stop - start``,
        ``step = delta / (num - 1)``, element ``i`` is ``i * step + start`` (``(i / div) *
        delta + start`` when the step underflows to 0; ``i * delta + start`` for num <= 1),
        the last element ``stop``.  A negative num leaves for the Python road (numpy's
        ValueError), and so does a num of LINSPACE_MAX or more (numpy's MemoryError or
        ValueError; its byte count would wrap around in ``new_array``)."""
        b = self.b
        start, stop = (self.as_kind(self.unwrap(a), "f64") for a in args[:2])
        num = self.unwrap(args[2]).v
        self.bail(b.icmp_unsigned("<", num, ir.Constant(I64, LINSPACE_MAX)),
                  name="linspace_num")
        out = self.new_array([num])
        data = self.parts(out)[0]
        delta = b.fsub(stop, start, name="linspace.delta")
        div = b.sub(num, _ONE)
        div_f = b.sitofp(div, F64T)
        several = b.icmp_signed(">", div, _ZERO)
        step = b.fdiv(delta, div_f, name="linspace.step")
        underflow = b.and_(several, b.fcmp_ordered("==", step, ir.Constant(F64T, 0.0)))
        factor = b.select(several, step, delta)
        with b.if_else(underflow, likely=False) as (tiny, normal):
            with tiny:
                with self.loop(num, "linspace.tiny") as loop:
                    i = b.sitofp(loop.index, F64T)
                    self.store_at(data, loop.index, b.fadd(b.fmul(b.fdiv(i, div_f), delta),
                                                           start))
            with normal:
                with self.loop(num, "linspace") as loop:
                    i = b.sitofp(loop.index, F64T)
                    self.store_at(data, loop.index, b.fadd(b.fmul(i, factor), start))
        with b.if_then(b.icmp_signed(">", num, _ONE)):
            self.store_at(data, div, stop)
        return out

    def call_support_numpy_scalar(self, node, args, keywords):
        x = self.unwrap(args[0])
        data, dims = self.parts(x)
        self.bail(self.b.icmp_signed("==", dims[0], _ONE), name="numpy_scalar")
        return self._value(self.element_at(data, _ZERO), Num(x.t.kind))

    # ----- slices, concatenate, np.ones/np.zeros -------------------------------------------
    def slice_bounds(self, key, length):
        """``(start, step, count)`` of the slice ``key`` (an ``infer.Slice`` value) over
        ``length`` rows, as Python's ``PySlice_AdjustIndices`` clamps them (numpy's basic
        slicing; a bound None at run time is absent); a step of 0 (Python's ValueError) or
        of -2**63 leaves for the Python road."""
        b = self.b

        def item(k):   # (value, present) of a bound; None: absent
            t = key.t.items[k]
            if t is NONE:
                return None
            v = self._value(b.extract_value(key.v, k), t)
            return self.content(v).v, self.present(v)

        start, stop, step = item(0), item(1), item(2)
        if step is None:
            step, negative = _ONE, ir.Constant(I1, 0)
        else:
            step, given = step
            step = b.select(given, step, _ONE)
            self.bail(b.and_(b.icmp_signed("!=", step, _ZERO),
                             b.icmp_signed("!=", step, ir.Constant(I64, -(1 << 63)))),
                      name="slice_step")
            negative = b.icmp_signed("<", step, _ZERO)
        minus_one = ir.Constant(I64, -1)
        last = b.sub(length, _ONE)
        low, high = b.select(negative, minus_one, _ZERO), b.select(negative, last, length)

        def adjust(bound, absent):
            if bound is None:
                return absent
            bound, given = bound
            # a negative bound counts from the end (bound + length < length: no overflow)
            v = b.select(b.icmp_signed("<", bound, _ZERO), b.add(bound, length), bound)
            v = b.select(b.icmp_signed("<", v, _ZERO), low, v)
            v = b.select(b.icmp_signed(">=", v, length), high, v)
            return b.select(given, v, absent, name="slice.bound")

        start = adjust(start, b.select(negative, last, _ZERO))
        stop = adjust(stop, b.select(negative, minus_one, length))
        span = b.select(negative, b.sub(start, stop), b.sub(stop, start))
        magnitude = b.select(negative, b.neg(step), step)
        count = b.select(b.icmp_signed(">", span, _ZERO),
                         b.add(b.sdiv(b.sub(span, _ONE), magnitude), _ONE), _ZERO,
                         name="slice.count")
        return start, step, count

    def array_slice(self, value, key):
        """``x[a:b:c]`` along the first axis: without a step a view (arrays are values),
        with one a copy of the rows taken."""
        b = self.b
        x = self.unwrap(value)
        data, dims = self.parts(x)
        start, step, count = self.slice_bounds(key, dims[0])
        row = self.size_of(dims[1:])
        if key.t.items[2] is NONE:   # step 1: start is within [0, length]
            view = b.gep(data, [b.mul(start, row)], source_etype=F64T, name="slice")
            return self.make_array(view, [count, *dims[1:]], x.t)
        out = self.new_array([count, *dims[1:]], x.t)
        out_data = self.parts(out)[0]
        with self.loop(count, "slice.row") as k:
            source = b.mul(b.add(start, b.mul(k.index, step)), row)
            target = b.mul(k.index, row)
            with self.loop(row, "slice.copy") as j:
                self.store_at(out_data, b.add(target, j.index),
                              self.element_at(data, b.add(source, j.index)))
        return out

    def slice_added(self, total, g, value, key):
        """``support.index_grad(total, g, value, key)`` for a slice ``key``, as the Python
        road computes it: ``total + part`` (``part`` alone when ``total`` is None) where
        ``part`` is zeros of ``value``'s shape and ``0.0 + g`` at the rows taken.  A ``g``
        or ``total`` of another shape leaves for the Python road (numpy reshapes and
        broadcasts)."""
        b = self.b
        value = self.unwrap(value)
        _, dims = self.parts(value)
        start, step, count = self.slice_bounds(key, dims[0])
        g_data, g_dims = self.parts(g)
        fits = b.icmp_signed("==", g_dims[0], count)
        for x, y in zip(g_dims[1:], dims[1:], strict=True):
            fits = b.and_(fits, b.icmp_signed("==", x, y))
        present = self.present(total)
        if total.t is not NONE:
            _, t_dims = self.parts(self.content(total))
            same = ir.Constant(I1, 1)
            for x, y in zip(t_dims, dims, strict=True):
                same = b.and_(same, b.icmp_signed("==", x, y))
            fits = b.and_(fits, b.or_(b.not_(present), same))
        self.bail(fits, name="slice_gradient")
        out = self.new_array(dims)
        out_data, size, row = self.parts(out)[0], self.size_of(dims), self.size_of(dims[1:])
        zero = ir.Constant(F64T, 0.0)
        with b.if_else(present) as (have, zeros):
            with have:
                if total.t is not NONE:
                    t_data = self.parts(self.content(total))[0]
                    with self.loop(size, "slice_grad.total") as loop:
                        self.store_at(out_data, loop.index,
                                      b.fadd(self.element_at(t_data, loop.index), zero))
            with zeros:
                with self.loop(size, "slice_grad.zeros") as loop:
                    self.store_at(out_data, loop.index, zero)
        # (total + 0.0) + (0.0 + g) is total + (0.0 + g) bit for bit: 0.0 + g is never -0.0
        with self.loop(count, "slice_grad.row") as k:
            target = b.mul(b.add(start, b.mul(k.index, step)), row)
            source = b.mul(k.index, row)
            with self.loop(row, "slice_grad.add") as j:
                at = b.add(target, j.index)
                part = b.fadd(zero, self.element_at(g_data, b.add(source, j.index)))
                self.store_at(out_data, at, b.fadd(self.element_at(out_data, at), part))
        return out

    def items_of(self, value):
        """``(data, dims)`` of each array of a tuple value (None: the Python road)."""
        value = self.unwrap(value)
        return [self.parts(self._value(self.b.extract_value(value.v, k), t))
                for k, t in enumerate(value.t.items)]

    def call_support_join(self, node, args, keywords):
        """``np.concatenate(items)`` along the first axis: the other axes must agree (else
        the Python road raises numpy's error)."""
        b = self.b
        items = self.items_of(args[0])
        first_dims = items[0][1]
        rows = _ZERO
        for _, dims in items:
            for x, y in zip(dims[1:], first_dims[1:], strict=True):
                self.bail(b.icmp_signed("==", x, y), name="concatenate_shape")
            rows = b.add(rows, dims[0], name="concatenate.rows")
        out = self.new_array([rows, *first_dims[1:]])
        out_data = self.parts(out)[0]
        at = _ZERO
        for data, dims in items:
            size = self.size_of(dims)
            with self.loop(size, "concatenate.copy") as loop:
                self.store_at(out_data, b.add(at, loop.index), self.element_at(data, loop.index))
            at = b.add(at, size)
        return out

    def call_support_join_grad(self, node, args, keywords):
        """The gradient of each item of ``np.concatenate(items)``: views of its rows of
        ``g`` (a ``g`` of another shape leaves for the Python road)."""
        g, items = args
        rt = infer._join_grad(node, [g.t, items.t], dict(keywords))
        if g.t is NONE:
            return g
        parts_t = inner(rt)

        def views(g):
            b = self.b
            g_data, g_dims = self.parts(g)
            v = ir.Constant(self.ltype(parts_t), None)
            start = _ZERO
            for k, (_, dims) in enumerate(self.items_of(items)):
                for x, y in zip(g_dims[1:], dims[1:], strict=True):
                    self.bail(b.icmp_signed("==", x, y), name="concatenate_gradient")
                view = b.gep(g_data, [start], source_etype=F64T, name="rows")
                v = b.insert_value(v, self.make_array(view, dims, parts_t.items[k]).v, k)
                start = b.add(start, self.size_of(dims))
            self.bail(b.icmp_signed("==", start, self.size_of(g_dims)),
                      name="concatenate_gradient")
            return self._value(v, parts_t)

        return self.if_present(g, rt, views,
                               lambda: self._value(ir.Constant(self.ltype(NONE), None), NONE))

    def filled(self, args, value):
        """A float64 array of the shape ``args[0]`` (an int or a tuple of ints) holding
        ``value``; a negative size, or one of LINSPACE_MAX elements or more, leaves for the
        Python road (numpy's ValueError or MemoryError)."""
        b = self.b
        shape = self.unwrap(args[0])
        if isinstance(shape.t, Tup):
            dims = [b.extract_value(shape.v, k) for k in range(len(shape.t.items))]
        else:
            dims = [shape.v]
        size, ok = _ONE, ir.Constant(I1, 1)
        for d in dims:
            ok = b.and_(ok, b.icmp_unsigned("<", d, ir.Constant(I64, LINSPACE_MAX)))
            product = b.smul_with_overflow(size, d)
            ok = b.and_(ok, b.not_(b.extract_value(product, 1)))
            size = b.extract_value(product, 0)
        self.bail(b.and_(ok, b.icmp_unsigned("<", size, ir.Constant(I64, LINSPACE_MAX))),
                  name="filled_size")
        out = self.new_array(dims)
        data = self.parts(out)[0]
        with self.loop(size, "filled") as loop:
            self.store_at(data, loop.index, ir.Constant(F64T, value))
        return out

    def call_np_ones(self, node, args):
        return self.filled(args, 1.0)

    def call_np_zeros(self, node, args):
        return self.filled(args, 0.0)
