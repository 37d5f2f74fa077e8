"""The public compiler API: ``compile``, ``grad``, ``value_and_grad``, ``vjp``,
``adjoint_source``.

A ``CompiledFunction`` wraps a user function.  Outside ``record()`` (or with no
differentiable input) calling it runs the generated forward with nothing
differentiated: fused kernels, no stack work at all.  Under
``record()`` with differentiable inputs, the call becomes ONE tape node: the
generated forward runs with a fresh stack, and the node's backward runs the
generated adjoint on a copy of that stack (so ``retain_graph`` works).  With
``create_graph=True`` the gradients it returns are recorded as one node whose VJP is
forward-over-reverse (``compiler/nested.py``): second derivatives run compiled code only;
a third derivative (or a function without second-order code) re-runs the function
eagerly on the tape, so higher derivatives stay exact.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect

import numpy as np

from pullback.runtime import rng, tape
from pullback.runtime.errors import AutogradError, ComplexValueError, HeadGradientError
from pullback.runtime.ndarray import NDArray, as_data
from pullback.runtime.primitives import Primitive
from pullback.runtime.stack import Stack

from . import native_road, nested
from .bindings import Bindings
from .errors import CompileError
from .implicit import hidden_tracked, implicit_inputs, outside_containers, rewrite
from .implicit import reader as implicit_reader
from .parse import parameter_count, parameter_names, parse_function, signature_function
from .pipeline import TangentVariant, Variant
from .pytree import Kind, leaves_of, map_leaves, refuse_leaf, structure

_BY_CODE = {}


class CompiledFunction:
    """A user function with lazily generated forward/adjoint variants."""

    def __init__(self, fn, native: bool = True, fallback: str | None = None):
        if fallback not in (None, "tape"):
            raise ValueError(f"fallback must be None or 'tape', got {fallback!r}")
        _refuse_bound_method(fn)
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.native = native
        self.fallback = fallback
        self._parsed = None
        self._implicit = None
        self._read_implicit = None   # implicit.reader of _implicit, made on the first call
        self._containers = None
        self._variants = {}
        self.last_variant = None
        self._bindings = None
        self.generation = 0   # counts rebuilds after a rebinding (check_bindings)

    def check_bindings(self) -> bool:
        """Rebuild from scratch if a name the function (or a callee) reads now refers to
        another object (``compiler/bindings.py``): True when that happened."""
        bindings = self._bindings
        if bindings is None:
            self._bindings = Bindings(self.fn)
            return False
        if not bindings.changed():
            return False
        self._parsed = self._implicit = self._containers = self.last_variant = None
        self._read_implicit = None
        self._variants = {}
        self.__dict__.pop("_tangent_variants", None)
        self.__dict__.pop("_second_order", None)   # forward-over-reverse (second.py)
        self.__dict__.pop("_forward_over_forward", None)
        self._bindings = Bindings(self.fn)
        self.generation += 1
        return True

    @property
    def pullback_function(self):
        """The user function the compiler transforms (how other modules recognise us)."""
        return self.fn

    @property
    def implicit(self) -> tuple:
        """The function's implicit inputs (``compiler/implicit.py``): globals, closure
        values and attributes of modules or objects it reads that hold arrays or numbers.
        They are its parameters after the user's, read at each call."""
        if self._implicit is None:
            self._implicit = implicit_inputs(self.fn)
        return self._implicit

    def _refuse_hidden_arrays(self, args) -> None:
        """A CompileError (so ``fallback='tape'`` applies) if an NDArray with a gradient
        sits where compiled code would read it as a constant: in a list, tuple, dict or
        object argument, or a container read from a global (``implicit.hidden_tracked``)."""
        if self._containers is None:
            self._containers = outside_containers(self.fn)
        where = hidden_tracked(self.fn, parameter_names(self.fn), args,
                               self._containers)
        if where is not None:
            raise CompileError(
                f"{self.fn.__qualname__}() reads {where}, an NDArray with a gradient, from "
                "inside a container or an object: compiled code reads such values as "
                "constants, so its gradient would be lost",
                hint="What to do: pass the array as an argument of its own, or read it as "
                     "a global, or use @pb.compile(fallback='tape').")

    def implicit_values(self) -> tuple:
        return tuple(found.read() for found in self.implicit)

    def parsed(self):
        if self._parsed is None:
            parsed = parse_function(self.fn)
            rewrite(parsed, self.implicit)
            self._parsed = parsed
        return self._parsed

    @staticmethod
    def variant_for(fn, mask) -> Variant:
        return as_compiled(fn).variant(mask)

    def variant(self, mask) -> Variant:
        mask = tuple(m if isinstance(m, Kind) else bool(m) for m in mask)
        found = self._variants.get(mask)
        if found is None:
            found = self._variants[mask] = Variant(self, mask)
        if any(mask):
            self.last_variant = found
        return found

    @staticmethod
    def tangent_variant_for(fn, mask, batched=False):
        return as_compiled(fn).tangent_variant(mask, batched)

    def tangent_variant(self, mask, batched=False):
        """The forward-mode variant for ``mask`` (which parameters carry tangents);
        ``batched``: tangents with a leading axis of directions."""
        mask = tuple(bool(m) for m in mask)
        tangents = self.__dict__.setdefault("_tangent_variants", {})
        found = tangents.get((mask, batched))
        if found is None:
            found = tangents[(mask, batched)] = TangentVariant(self, mask, batched)
        return found

    def __get__(self, obj, objtype=None):
        return self if obj is None else functools.partial(self, obj)

    def __call__(self, *args, **kwargs):
        self.check_bindings()   # a name it reads rebound: its variants are dropped
        fn = self.fn
        if kwargs or len(args) != fn.__code__.co_argcount or _takes_more(fn):
            args = complete_arguments(fn, args, kwargs)
        if self.implicit:
            read = self._read_implicit
            if read is None:
                read = self._read_implicit = implicit_reader(self._implicit)
            args = args + read()
        recording = tape._state.recording
        mask = _plain_mask(args, recording) if self._no_containers() else None
        if mask is not None:
            variant = self._variants.get(mask)
            if variant is not None and variant._forward is not None:
                if recording and True in mask:
                    return self._record(variant, mask, args)
                return self._plain(variant, args)
        return self._call_slowly(args, recording)

    def _no_containers(self) -> bool:
        """Whether the function reads no list, tuple or dict from outside (so a call with
        only arrays and numbers as arguments hides no array: nothing to check)."""
        if self._containers is None:
            self._containers = outside_containers(self.fn)
        return not self._containers

    def _call_slowly(self, args, recording):
        """A call whose variant is not built yet, or with containers or objects among the
        arguments (their structure is in the mask; hidden arrays are refused)."""
        user_args = args[:parameter_count(self.fn)]
        mask = tuple(recording and _tracked_mask(a) for a in args)
        try:
            if recording:   # a pytree argument's arrays are inputs of the node (below)
                self._refuse_hidden_arrays(tuple(None if isinstance(m, Kind) else a
                                                 for a, m in zip(user_args, mask)))
            variant = self.variant(mask)
            variant._build()
        except CompileError:
            if self.fallback == "tape":
                return self.fn(*user_args)
            raise
        if not any(mask):
            return self._plain(variant, args)
        if not any(isinstance(m, Kind) for m in mask):
            return self._record(variant, mask, args)
        raw_args = [_raw_tree(a) if isinstance(m, Kind) else
                    a._data if isinstance(a, NDArray) else a for a, m in zip(args, mask)]
        stack = Stack()
        seen = recording or tape._state.caller_recording   # autograd.is_recording() inside
        draws = rng._draws
        with tape.scope(recording=False, training=None):
            tape._state.caller_recording = seen
            out = variant._forward(stack, *raw_args)
        inputs, places = _node_inputs(args, mask)
        return self._record_outputs(variant, stack, args, raw_args, out, inputs, places, None,
                                    draws)

    def _plain(self, variant, args):
        """A call with nothing differentiated: the forward, nothing pushed, nothing
        recorded."""
        raw_args = [a._data if type(a) is NDArray else
                    _raw_tree(a) if isinstance(a, (dict, list, tuple)) else a for a in args]
        state = tape._state
        recording, state.recording = state.recording, False
        caller, state.caller_recording = state.caller_recording, recording or \
            state.caller_recording
        try:
            out = variant._forward(Stack(), *raw_args)
        finally:
            state.recording, state.caller_recording = recording, caller
        return _convert_value(out, args)

    def _record(self, variant, mask, args):
        """A recorded call whose arguments are arrays and numbers: one tape node, whose
        inputs are the arguments (the tracked ones are ``mask``'s)."""
        raw_args = [a._data if type(a) is NDArray else a for a in args]
        stack = Stack()
        state = tape._state
        recording, state.recording = state.recording, False
        caller, state.caller_recording = state.caller_recording, True
        draws = rng._draws
        try:
            out = variant._forward(stack, *raw_args)
        finally:
            state.recording, state.caller_recording = recording, caller
        places = _PLACES.get(len(args))
        if places is None:
            places = _PLACES[len(args)] = tuple((i, ()) for i in range(len(args)))
        tracked = variant.__dict__.get("tracked_positions")
        if tracked is None:
            tracked = variant.tracked_positions = tuple(i for i, m in enumerate(mask) if m)
        if type(out) is np.ndarray and out.ndim and out.dtype.kind in "fc" \
                and out.flags.c_contiguous:   # one array (almost always): _record_outputs
            for a in raw_args:                # without its general cases
                if out is a:
                    out = out.copy()
                    break
            output = NDArray(out) if out.base is None else _result_array(out, args)
            call = _CompiledCall(self, variant, stack, args, ((out.shape, out.dtype),), args,
                                 places)
            output._node = tape.Node(_COMPILED, args, {"call": call, "out_index": 0},
                                     tracked, 0)
            call.value, call.training = out, state.training
            if rng._draws != draws:
                call.replay = rng.state_before(draws + 1)
            return output
        return self._record_outputs(variant, stack, args, raw_args, out, args, places, tracked,
                                    draws)

    def _record_outputs(self, variant, stack, args, raw_args, out, inputs, places, tracked,
                        draws):
        single = type(out) is not tuple
        outs = (out,) if single else out
        for o in outs:
            if isinstance(o, (dict, list, tuple)):
                raise TypeError(f"{self.fn.__qualname__}() returned a dict, list or nested "
                                "tuple under autograd.record(): a recorded compiled call "
                                "returns arrays or a tuple of arrays (pb.grad/vjp take "
                                "containers)")
        outputs = [_fresh_output(o, raw_args, args) for o in outs]
        call = _CompiledCall(self, variant, stack, args,
                             tuple((o.shape, o._data.dtype) for o in outputs), inputs, places)
        call.value, call.training = out, tape._state.training
        if rng._draws != draws:
            call.replay = rng.state_before(draws + 1)
        tape.record_custom(_COMPILED, inputs, {"call": call}, outputs, tracked)
        return outputs[0] if single else tuple(outputs)


_PLACES = {}   # number of arguments -> each argument's place in a call without containers


#: the argument types a call checks no further: arrays and numbers (containers and other
#: objects take the slow road, which reads their structure and refuses hidden arrays)
_PLAIN_TYPES = frozenset({np.ndarray, int, float, bool, complex, str, type(None),
                          np.float64, np.float32, np.float16, np.int64, np.int32, np.bool_})


def _plain_mask(args, recording):
    """The mask of a call whose arguments are all NDArrays, arrays and numbers (an
    NDArray's entry: whether gradients flow into it while recording), else None."""
    mask = []
    for a in args:
        kind = type(a)
        if kind is NDArray:
            if recording:
                node = a._node
                mask.append((node is not None and not node.freed) or a._grad is not None)
            else:
                mask.append(False)
        elif kind in _PLAIN_TYPES:
            mask.append(False)
        else:
            return None
    return tuple(mask)


def _tracked_mask(value):
    """A recorded call's mask entry for an argument: True for an NDArray with a gradient,
    the structure of a dict, list or tuple of arrays and numbers holding one (its arrays
    become inputs of the node), else False."""
    if isinstance(value, NDArray):
        return tape.is_tracked(value)
    if isinstance(value, (dict, list, tuple)):
        if any(isinstance(leaf, NDArray) and tape.is_tracked(leaf) for leaf in leaves_of(value)):
            try:
                return structure(value)
            except TypeError:
                return False   # not a pytree of arrays: refused as a hidden array
    return False


def _raw_tree(value):
    return map_leaves(lambda leaf: leaf._data if isinstance(leaf, NDArray) else leaf, value)


def _node_inputs(args, mask):
    """The tape node's inputs (each argument; a pytree argument's NDArray leaves in its
    place) and where each comes from: ``(argument index, path within it)``."""
    inputs, places = [], []
    for i, (a, m) in enumerate(zip(args, mask, strict=True)):
        if not isinstance(m, Kind):
            inputs.append(a)
            places.append((i, ()))
            continue
        for path, leaf in _paths(a):
            if isinstance(leaf, NDArray):
                inputs.append(leaf)
                places.append((i, path))
    return inputs, places


def _paths(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, path + (k,))
    elif isinstance(value, (list, tuple)):
        for k, v in enumerate(value):
            yield from _paths(v, path + (k,))
    else:
        yield path, value


def _at(gradient, path):
    """The part of a container's gradient at ``path`` (None: zero)."""
    for key in path:
        if gradient is None:
            return None
        gradient = gradient.get(key) if isinstance(gradient, dict) else gradient[key]
    return gradient


def complete_arguments(fn, args, kwargs):
    """``args`` with keyword arguments placed and defaults filled in (compiled code takes
    every parameter positionally)."""
    if not kwargs and len(args) == fn.__code__.co_argcount and not _takes_more(fn):
        return args
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    if not _takes_more(fn):
        return bound.args
    return tuple(bound.arguments[name] for name in parameter_names(fn))


def _takes_more(fn) -> bool:
    """Whether ``fn`` has ``*args`` or keyword-only parameters (parse.parameter_names)."""
    code = signature_function(fn).__code__
    return bool(code.co_kwonlyargcount or code.co_flags & inspect.CO_VARARGS)


def _call_with(fn, args):
    """``fn`` called with ``args`` as compiled code takes them (parse.parameter_names)."""
    if not _takes_more(fn):
        return fn(*args)
    code = signature_function(fn).__code__
    count, keyword_only = code.co_argcount, code.co_kwonlyargcount
    varargs = tuple(args[count]) if code.co_flags & inspect.CO_VARARGS else ()
    names = parameter_names(fn)[len(args) - keyword_only:]
    return fn(*args[:count], *varargs, **dict(zip(names, args[len(args) - keyword_only:],
                                                   strict=True)))


def _fresh_output(value, raw_args, inputs):
    """A new NDArray for a raw result (copied if it is one of the inputs' buffers; linked to
    the input it views otherwise: ``_result_array``)."""
    ready = type(value) is np.ndarray and value.ndim and value.dtype.kind in "fc" \
        and value.flags.c_contiguous   # what generated code returns almost always
    if ready:
        data = value
    else:
        if isinstance(value, NDArray):
            value = value._data
        data = np.asarray(value)
        if not np.issubdtype(data.dtype, np.inexact):
            data = data.astype(np.float64)
    for a in raw_args:
        if data is a:
            data = data.copy()
            break
    return _result_array(data if ready else as_data(data), inputs)


def _result_array(data, args):
    """An NDArray over a compiled call's raw result ``data``.  A result viewing an NDArray
    argument's buffer (``x.reshape(...)``, ``x[0]``, a global's ``W[1:]``, ``x`` itself
    outside record()) shares that array's owner and so its version counter, as the tape's
    views do: a write through it is seen by every node that saved the argument (an
    InPlaceError in backward), never a silently different gradient."""
    out = NDArray(data)
    for leaf in args if all(type(a) is not dict and type(a) is not list
                            and type(a) is not tuple for a in args) else leaves_of(list(args)):
        if isinstance(leaf, NDArray) and (data is leaf._data or data.base is not None
                                          and np.may_share_memory(data, leaf._data)):
            out._base = leaf if leaf._base is None else leaf._base
            break
    return out


class _CompiledCall:
    """What one recorded call of a compiled function keeps for its backward.

    ``value``: the forward's raw result; ``replay``: the ``nd.random`` state before its
    first draw (None: it drew nothing); ``training``: the training mode it ran in.  A second derivative re-runs the forward
    (``nested``, ``_eager_gradients``): from that state, so it draws the same numbers, and
    checked against ``value`` (``check_rerun``), so a forward that gives another value
    (``np.random``, a Generator, state changed since) is an error, never another
    function's derivative."""

    value = None
    replay = None
    training = None   # autograd.is_training() when the call ran (its re-runs see it again)

    def __init__(self, function, variant, stack, args, out_shapes, inputs, places):
        self.function, self.variant, self.stack = function, variant, stack
        self.args, self.out_shapes = args, out_shapes
        self.inputs, self.places = inputs, places   # the node's inputs; (argument, path)

    def gradients(self, tracked, out_index, g):
        """The gradients of the inputs at the positions ``tracked`` from output
        ``out_index``'s gradient ``g``: one adjoint run on a copy of the stack (so
        ``retain_graph`` works), once per backward pass of this output's node."""
        if tape._state.recording:   # create_graph: a node whose VJP is compiled code
            try:
                grads = nested.recorded_gradients(self, out_index, g, self._slot_gradient)
            except CompileError:   # no second-order code: differentiate the eager road
                grads = self._eager_gradients(out_index, g)
            return [grads[i] for i in tracked]
        head = g._data if len(self.out_shapes) == 1 else tuple(
            g._data if k == out_index else None for k in range(len(self.out_shapes)))
        stack = self.stack
        clone = Stack(debug=stack.debug)   # _stack_copy, inline
        clone._items = list(stack._items)
        if stack._tags is not None:
            clone._tags = list(stack._tags)
        per_argument = self.variant._adjoint(clone, head)
        grads = []
        places, inputs = self.places, self.inputs
        for index in tracked:
            i, path = places[index]
            gr = per_argument[i]
            if type(gr) is np.ndarray and not path:   # _as_gradient's first case, inline
                a = inputs[index]
                if type(a) is NDArray and gr.dtype == a._data.dtype and gr.ndim \
                        and gr.flags.c_contiguous:
                    grads.append(NDArray(gr))
                    continue
            grads.append(self._as_gradient(index, per_argument))
        return grads

    def _as_gradient(self, index, per_argument):
        """Input ``index``'s gradient (an NDArray, or None for zero) from the adjoint's
        per-argument results."""
        i, path = self.places[index]
        gr = _at(per_argument[i], path) if path else per_argument[i]
        if gr is None:
            return None
        a = self.inputs[index]
        value = a._data if type(a) is NDArray else a
        if type(gr) is np.ndarray and type(value) is np.ndarray and gr.dtype == value.dtype \
                and gr.ndim and gr.flags.c_contiguous:
            return NDArray(gr)   # already what the tape takes
        return NDArray(as_data(_in_dtype_of(gr, value)))

    def _slot_gradient(self, per_argument, k):
        """Input slot ``k``'s gradient (an NDArray in its input's dtype, or None) from the
        adjoint's per-argument gradients."""
        a, (i, path) = self.inputs[k], self.places[k]
        gr = _at(per_argument[i], path)
        return None if gr is None else NDArray(as_data(np.asarray(
            _in_dtype_of(gr, a._data if isinstance(a, NDArray) else a))))

    def rerun(self):
        """A context for re-running the forward: the call's training mode and random
        draws again."""
        replay = rng.replaying(self.replay) if self.replay is not None else _NO_REPLAY
        if self.training is None:
            return replay
        stack = contextlib.ExitStack()
        stack.enter_context(tape.scope(recording=None, training=self.training))
        stack.enter_context(replay)
        return stack

    def check_rerun(self, out):
        """Refuse a re-run of the forward whose value is not the call's."""
        if self.value is None:
            return
        again = leaves_of(out if isinstance(out, tuple) else (out,))
        before = leaves_of(self.value if isinstance(self.value, tuple) else (self.value,))
        same = len(again) == len(before) and all(
            np.shape(a) == np.shape(b) and _close_rerun(np.asarray(a), np.asarray(b))
            for a, b in zip(again, before))
        if not same:
            raise AutogradError(
                f"{self.function.fn.__qualname__}(): its forward, run again for a second "
                "derivative (create_graph=True), gave another value than the recorded call: "
                "it draws random numbers other than nd.random's (np.random, a Generator) or "
                "reads state that changed since the call, so its derivatives would be another "
                "function's. Draw them with nd.random, or pass them in as arguments.")

    def _eager_gradients(self, out_index, g):
        tracked = list({id(a): a for a in self.inputs
                        if isinstance(a, NDArray) and tape.is_tracked(a)}.values())
        fn = self.function.fn
        with self.rerun():
            out = _call_with(fn, self.args[:parameter_count(fn)])
        self.check_rerun(tuple(o._data if isinstance(o, NDArray) else o for o in out)
                         if isinstance(out, tuple) else
                         out._data if isinstance(out, NDArray) else out)
        out = out if len(self.out_shapes) == 1 else out[out_index]
        grads = tape.grad([out], tracked, head_grads=[g], retain_graph=True, create_graph=True)
        by_id = {id(a): gr for a, gr in zip(tracked, grads, strict=True)}
        # an array in several input slots gets its total gradient once (the tape adds the
        # slots' gradients up): in its first slot, None in the others
        return [by_id.pop(id(a), None) if isinstance(a, NDArray) else None
                for a in self.inputs]


def _compiled_rule(g, ans, tracked, *args, call, out_index):
    return call.gradients(tracked, out_index, g)


_COMPILED = Primitive("compiled_call", None, None, vjp_all=_compiled_rule)


def _close_rerun(again, before) -> bool:
    """Equal up to rounding (fused and unfused code, sums in another order), scaled by the
    values' size: a re-run drawing other numbers differs by far more."""
    if again.size == 0:
        return True
    wide = np.result_type(again, before, np.float16)
    tol = 1e-7 if wide == np.float64 else 1e-3
    a, b = again.astype(np.float64), before.astype(np.float64)
    finite = np.isfinite(b)
    scale = float(np.max(np.abs(b[finite]))) if finite.any() else 0.0
    return bool(np.allclose(a, b, rtol=tol, atol=tol * (1.0 + scale), equal_nan=True))
_NO_REPLAY = contextlib.nullcontext()


def _stack_copy(stack):
    clone = Stack(debug=stack.debug)
    clone._items = list(stack._items)
    if stack._tags is not None:
        clone._tags = list(stack._tags)
    return clone


Stack.__copy__ = _stack_copy


def _refuse_bound_method(fn) -> None:
    if inspect.ismethod(fn):   # its __code__ is the function's, which also takes self
        raise TypeError(f"{fn.__qualname__} is a bound method: pass its function and the "
                        f"object, pb.grad({fn.__qualname__}, argnums=1)(obj, x), or a "
                        "function of your own that calls it")


def as_compiled(fn) -> CompiledFunction:
    """``fn`` as a CompiledFunction (plain functions are cached by code object)."""
    if isinstance(fn, CompiledFunction):
        fn.check_bindings()
        return fn
    _refuse_bound_method(fn)
    code = getattr(fn, "__code__", None)
    if code is None:
        raise CompileError(f"pullback can only differentiate Python functions, got {fn!r}")
    key = (code, id(getattr(fn, "__globals__", None)))
    found = _BY_CODE.get(key)
    if found is None or found.fn.__closure__ is not fn.__closure__:
        found = _BY_CODE[key] = CompiledFunction(fn)
    found.check_bindings()
    return found


def compile(fn=None, *, native: bool = True, fallback: str | None = None):
    """Decorator: differentiate ``fn`` by source transformation.

    Usable as ``@compile`` or ``@compile(native=..., fallback="tape")``.  The
    function is transformed lazily, once per pattern of differentiated inputs.
    """
    if fn is None:
        return functools.partial(compile, native=native, fallback=fallback)
    return CompiledFunction(fn, native=native, fallback=fallback)


# ----- functional API ------------------------------------------------------------------------

def _to_internal(value, active):
    """An argument as compiled code sees it: a numpy array (or an inactive Python value)."""
    if type(value) is np.ndarray and value.ndim and value.flags.c_contiguous and \
            value.dtype.kind in "fc":   # the common case, as nested derivatives meet it
        return value
    if isinstance(value, NDArray):
        return value._data
    if active and isinstance(value, (int, float)) and not isinstance(value, bool):
        # numbers stay numbers (numpy's per-call cost is per array), as numpy float64 so
        # that arithmetic keeps numpy's semantics (inf, nan, no exceptions)
        return np.float64(value)
    if isinstance(value, np.ndarray):
        # numpy's shapes: a 0-d array stays 0-d (only NDArrays are never 0-d)
        data = value if value.ndim == 0 else as_data(value)
        if active and data.dtype.kind not in "fc":
            data = data.astype(np.float64)   # integers are differentiated as float64
        return data
    if active and isinstance(value, (np.floating, np.integer)):
        # a numpy number stays a number of its own float dtype (integers: float64)
        return value if isinstance(value, np.inexact) else np.float64(value)
    if active and isinstance(value, (dict, list, tuple)):
        # a pytree (its structure was checked by the variant's key, ``structure``): new
        # containers (never the caller's) of the leaves as compiled code sees them; its
        # gradient comes back with the same structure (_external_gradient)
        return map_leaves(lambda leaf: _to_internal(leaf, True), value)
    if active:   # a bool, a complex number, a string...: refused at every call, as
        refuse_leaf(value)   # pytree.structure did when the variant was made
    return value


def _to_external(value, like):
    """Give a raw result the kind of the argument it belongs to (numpy in, numpy out)."""
    if value is None:
        return None
    data = np.asarray(value)
    if isinstance(like, NDArray):
        return NDArray(as_data(data))
    if isinstance(like, np.ndarray):
        if not (data.flags.c_contiguous and data.flags.writeable) or any(
                data is a for a in (like,)):
            data = np.array(data)   # the caller owns a fresh, writeable array
        return data.reshape(like.shape) if data.size == like.size else data
    if isinstance(like, (int, float)):
        return float(data.reshape(-1)[0])
    if isinstance(like, np.generic):   # a numpy number: a number of its float dtype
        kind = like.dtype.type if isinstance(like, np.inexact) else np.float64
        return kind(data.reshape(-1)[0])
    return NDArray(as_data(data))


def _ones(value):
    if isinstance(value, (tuple, list)):
        return type(value)(_ones(v) for v in value)
    if isinstance(value, dict):
        return {k: _ones(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        ones = np.empty_like(value)   # empty + fill: a third of ones_like's cost on small arrays
        ones.fill(1)
        return ones
    if isinstance(value, np.floating):
        return value.dtype.type(1)   # a numpy number: the adjoint keeps numpy's semantics
    if isinstance(value, float):
        return np.float64(1)
    raise AutogradError(f"the differentiated function must return arrays, got "
                        f"{type(value).__name__}")


def _differentiated(fn, argnums, nums, args) -> Variant:
    """The built variant of ``fn`` with the parameters ``nums`` differentiated (a
    container argument's mask entry is its structure, compiler/pytree.py)."""
    n_args = len(args)
    for n in nums:
        if not 0 <= n < n_args:
            raise ValueError(f"argnums {argnums} out of range for {n_args} arguments")
    compiled = as_compiled(fn)
    code = signature_function(compiled.fn).__code__
    if _takes_more(compiled.fn) and any(n >= code.co_argcount for n in nums):
        raise ValueError(
            f"argnums {argnums}: {compiled.fn.__qualname__}() has {code.co_argcount} "
            "positional parameters before its *args and keyword-only ones; as in JAX, argnums "
            "index those only (a keyword-only parameter or an item of *args is not "
            "differentiated): make the parameter positional to differentiate it")
    # implicit inputs (globals, ...) are data here: only the arguments are differentiated
    n_all = n_args + len(compiled.implicit)
    variant = compiled.variant(tuple(
        i in nums and (structure(args[i]) or True) for i in range(n_all)))
    variant._build()
    return variant


def _structures(args, nums) -> tuple:
    """The structure of each differentiated container argument (None for the others)."""
    return tuple(structure(args[n]) if isinstance(args[n], (dict, list, tuple)) else None
                 for n in nums if n < len(args))


def _internal_arguments(fn, args, nums) -> list:
    """The arguments and then the implicit inputs' current values, as compiled code
    sees them (only ``nums`` differentiated)."""
    internal = [_to_internal(a, i in nums) for i, a in enumerate(args)]
    internal.extend(_to_internal(v, False) for v in as_compiled(fn).implicit_values())
    return internal


def _convert_grads(grads, internal, args, nums):
    return [_external_gradient(grads[n], internal[n], args[n]) for n in nums]


def _external_gradient(g, internal, arg):
    """The gradient ``g`` the adjoint returned for an argument (``internal``: as compiled
    code saw it), given the argument's kind and structure: a container's gradient is a
    container of the same type (zeros where its items got none)."""
    if isinstance(arg, (dict, list, tuple)):
        if isinstance(arg, dict):
            if g is not None and not isinstance(g, dict):
                raise RuntimeError(f"pullback bug: a dict's gradient is a {type(g).__name__}")
            g = g or {}
            return {k: _external_gradient(g.get(k), internal[k], v) for k, v in arg.items()}
        parts = [None] * len(arg) if g is None else list(g)   # an array: by rows
        return type(arg)(_external_gradient(p, i, v)
                         for p, i, v in zip(parts, internal, arg, strict=True))
    shape = np.shape(internal)
    if g is None:
        g = np.zeros_like(internal)
    elif (g.shape if type(g) is np.ndarray else np.shape(g)) != shape:
        g = np.broadcast_to(g, shape).copy() if shape else np.sum(g)
    return _to_external(_in_dtype_of(g, internal), arg)


def _in_dtype_of(g, value):
    """A gradient in its input's float dtype (float32 in, float32 gradient, as on the
    tape), even where the adjoint met a float64 constant (``log(2.0)`` of ``2.0 ** x``)."""
    dtype = getattr(value, "dtype", None)
    if getattr(g, "dtype", None) is not None and g.dtype.kind == "c":
        raise ComplexValueError(
            "a gradient came out complex: a complex value (an argument or global of a "
            "complex dtype) met a differentiated one, and pullback differentiates real "
            "values only. What to do: carry real and imaginary parts as two real arrays.")
    if isinstance(g, (np.ndarray, np.generic)) and dtype is not None and dtype.kind == "f" \
            and g.dtype != dtype:
        return g.astype(dtype)
    return g


def _convert_value(out, args, differentiated=False):
    """NDArrays in (or only Python numbers): NDArrays out; numpy in: numpy out.

    ``differentiated``: the value of ``value_and_grad``/``vjp``, where differentiated
    Python numbers ran as numbers, so a number result is an NDArray too (as it is for
    arrays); a plain call's number result stays a number."""
    if isinstance(out, (tuple, list)):
        return type(out)(_convert_value(o, args, differentiated) for o in out)
    if isinstance(out, dict):
        return {k: _convert_value(o, args, differentiated) for k, o in out.items()}
    numpy_mode = _numpy_world(args)
    kinds = (np.ndarray, float, np.floating) if differentiated else np.ndarray
    if numpy_mode or not isinstance(out, kinds):
        return out
    return _result_array(as_data(out), args)


def _numpy_world(args) -> bool:
    """Numpy arrays in and no NDArray (inside containers too): numpy's conventions for
    the results."""
    leaves = leaves_of(list(args))
    return any(isinstance(a, np.ndarray) for a in leaves) and not any(
        isinstance(a, NDArray) for a in leaves)


def value_and_grad(fn, argnums=0):
    """A function returning ``(fn(*args), gradient of sum(fn(*args)))``.

    ``argnums``: an int (one gradient) or a tuple (a tuple of gradients).
    Arguments may be NDArrays, numpy arrays or Python floats; each gradient has
    the kind of its argument.
    """

    run = _gradient_runner(fn, argnums)

    @functools.wraps(fn)
    def value_and_grad_fn(*args, **kwargs):
        args, out, gradients = run(args, kwargs)
        return _convert_value(out, args, differentiated=True), gradients

    value_and_grad_fn.pullback_derivative = "pb.value_and_grad"
    return value_and_grad_fn


def grad(fn, argnums=0):
    """A function returning the gradient of ``sum(fn(*args))`` w.r.t. ``argnums``."""
    fast = [None]   # the native entry of the signature that last took the native road

    def careful(*args):   # the entry's fallback: everything checked, any road
        return run(args, {})[2]

    def install(road, args, internal):
        fast[0] = _gradient_entry(entries, road, args, internal, nums, single, careful)
        compiled = as_compiled(fn)
        built[0] = (compiled, compiled.generation)

    # whose bindings, and which rebuild of them, the entry was built for (bindings.py): the
    # generation is the entry's own, as another pb.grad object of fn may be the one whose
    # call found a rebinding and rebuilt (check_bindings is then False here)
    built = [None]

    single, nums, entries = _is_position(argnums), _positions(argnums), {}
    run = _gradient_runner(fn, argnums, install)

    @functools.wraps(fn)
    def grad_fn(*args, **kwargs):
        entry = fast[0]
        if entry is not None and not kwargs:
            compiled, generation = built[0]
            compiled.check_bindings()
            if compiled.generation == generation:
                return entry(*args)   # checks every argument; anything else runs careful()
            fast[0] = None   # a name it reads rebound: no entry
            entries.clear()
        return run(args, kwargs)[2]

    grad_fn.pullback_derivative = "pb.grad"   # functools.wraps made it look like fn
    grad_fn.pullback_gradient_of = (fn, argnums)   # pb.grad of it: forward-over-reverse
    return grad_fn


def _gradient_entry(entries, road, args, internal, nums, single, fallback):
    """The native entry (``NativeGradient.gradient_entry``) that computes ``pb.grad``'s
    result for arguments of the types of ``args`` in one call, or None: implicit inputs,
    unsorted ``argnums`` or arguments other than Python and numpy numbers."""
    if len(internal) != len(args) or list(nums) != sorted(set(nums)):
        return None
    key = (road, tuple(map(type, args)))
    if key not in entries:
        entries[key] = road.gradient_entry(key[1], nums, single, fallback)
    return entries[key]


def _gradient_runner(fn, argnums, on_native=None):
    """``run(args, kwargs) -> (all arguments, raw value, gradients)``: the forward and the
    adjoint of ``fn``'s variant for ``argnums``, prepared once per argument count.
    ``on_native(road, args, internal)`` is told of each call the native road computed."""
    inner = getattr(fn, "pullback_gradient_of", None)
    if inner is not None:   # pb.grad(pb.grad(f)): one forward-over-reverse run
        from .forward_api import gradient_of_gradient_runner

        return gradient_of_gradient_runner(*inner, argnums)
    single = _is_position(argnums)
    nums = _positions(argnums)
    user_fn = getattr(fn, "fn", fn)
    prepared = {}   # (number of arguments, structures) -> the variant's (forward, adjoint)

    built_for = [None]   # the CompiledFunction generation ``prepared`` holds

    def run(args, kwargs):
        compiled = as_compiled(fn)   # checks what its names refer to (bindings.py)
        if built_for[0] != (compiled, compiled.generation):   # first call, or rebound
            prepared.clear()
            built_for[0] = (compiled, compiled.generation)
        args = complete_arguments(user_fn, args, kwargs)
        key = (len(args), _structures(args, nums))
        entry = prepared.get(key)
        if entry is None:
            variant = _differentiated(fn, argnums, nums, args)
            entry = prepared[key] = (variant._forward, variant._adjoint, variant)
        forward, adjoint, variant = entry
        internal = _internal_arguments(fn, args, nums)
        road = native_road.gradient_function(variant, internal)   # None: the Python road
        done = road.call(internal, 1) if road is not None else None
        if done is not None:
            out, grads = done
            if on_native is not None and not kwargs:
                on_native(road, args, internal)
            results = _convert_grads(grads, internal, args, nums)
            return args, out, (results[0] if single else tuple(results))
        stack = Stack()
        if tape.is_recording():   # NDArrays the function reads (globals) must not record
            with tape.scope(recording=False, training=None):
                out = forward(stack, *internal)
                grads = adjoint(stack, _ones(out))
        else:
            out = forward(stack, *internal)
            grads = adjoint(stack, _ones(out))
        results = _convert_grads(grads, internal, args, nums)
        return args, out, (results[0] if single else tuple(results))

    return run


def vjp(fn, *args, argnums=None):
    """``(fn(*args), pullback)`` where ``pullback(g)`` returns one gradient per argument,
    or per entry of ``argnums`` (a tuple of argument positions, or one position for one
    gradient; the other arguments are data: no gradient is computed for them, and
    integer arrays stay integer)."""
    single = _is_position(argnums)
    nums = tuple(range(len(args))) if argnums is None else _positions(argnums)
    variant = _differentiated(fn, nums, nums, args)
    internal = _internal_arguments(fn, args, nums)
    road = native_road.gradient_function(variant, internal)   # None: the Python road
    done = road.call(internal, 1) if road is not None else None
    stack = None
    if done is None:
        stack = Stack()
        with tape.scope(recording=False, training=None):
            out = variant.forward(stack, *internal)
    else:
        out = done[0]
    shown = _convert_value(out, args, differentiated=True)

    def pullback(g):
        nonlocal stack
        head = _head_for(g, out, shown)
        grads = None
        if road is not None and not isinstance(out, tuple) and np.ndim(head) == 0:
            done = road.call(internal, float(head))   # a number's head: its seed
            grads = None if done is None else done[1]
        if grads is None:
            if stack is None:   # the native forward ran; the Python road needs its stack
                stack = Stack()
                with tape.scope(recording=False, training=None):
                    variant.forward(stack, *internal)
            with tape.scope(recording=False, training=None):
                grads = variant.adjoint(copy.copy(stack), head)   # each call pops a copy
        results = _convert_grads(grads, internal, args, nums)
        return results[0] if single else tuple(results)

    return shown, pullback


def _is_position(argnums) -> bool:
    return isinstance(argnums, (int, np.integer)) and not isinstance(argnums, (bool, np.bool_))


def _positions(argnums) -> tuple:
    """``argnums`` (one position or a tuple/list of them) as a tuple of ints."""
    if _is_position(argnums):
        return (int(argnums),)
    if isinstance(argnums, (tuple, list)) and all(_is_position(n) for n in argnums):
        return tuple(int(n) for n in argnums)
    raise TypeError(f"argnums must be an int or a tuple of ints (argument positions), got "
                    f"{argnums!r}")


def _head_for(g, out, shown=None):
    """The head gradient ``g`` of the raw output ``out`` as the adjoint takes it, checked
    by the tape's rules (``backward(head)``): one per output, each of its output's shape
    and dtype.  A Python number has no dtype of its own: it takes its output's (and, like
    the tape's, may stand for a one-element array).  ``shown``: the value the user got;
    a 0-d result shown as a (1,) NDArray takes a head of either shape."""
    if isinstance(out, (tuple, list)):
        grads = g if isinstance(g, (tuple, list)) else (g,)
        tape.check_head_count(len(grads), len(out))
        shown = shown if isinstance(shown, (tuple, list)) else (None,) * len(out)
        return type(out)(None if gi is None else _head_for(gi, oi, si)
                         for gi, oi, si in zip(grads, out, shown, strict=True))
    if isinstance(out, dict):   # a dict result: a dict of heads with its keys
        if not isinstance(g, dict) or set(g) != set(out):
            raise HeadGradientError(
                f"the function returned a dict with keys {sorted(map(repr, out))}: the head "
                f"gradient must be a dict with the same keys, got "
                f"{sorted(map(repr, g)) if isinstance(g, dict) else type(g).__name__}")
        shown = shown if isinstance(shown, dict) else {}
        return {k: None if g[k] is None else _head_for(g[k], o, shown.get(k))
                for k, o in out.items()}
    if isinstance(g, (tuple, list)):
        tape.check_head_count(len(g), 1)
        g = g[0]
    shape, dtype = np.shape(out), np.asarray(out).dtype
    if isinstance(g, (int, float)) and not isinstance(g, bool):
        if int(np.prod(shape)) != 1:
            tape.check_head_gradient((), dtype, shape, dtype)   # raises: shapes differ
        return np.asarray(g, dtype=dtype).reshape(shape)
    data = g._data if isinstance(g, NDArray) else np.asarray(g)
    if shape == () and data.shape == (1,) and np.shape(shown) == (1,):
        data = data.reshape(())
    tape.check_head_gradient(data.shape, data.dtype, shape, dtype)
    return data


def explain(fn, *args, argnums=None) -> str:
    """Which road each variant of ``fn`` takes: native code, or the Python road and the
    line (and reason) that keeps it there.

    With ``args``, first decides the road for those arguments (differentiating
    ``argnums``, default all) as ``grad`` would; without, reports the signatures the
    variants were called with so far.
    """
    compiled = as_compiled(fn)
    if args:
        n = len(args)   # the arguments given; defaults are filled in, not differentiated
        nums = tuple(range(n)) if argnums is None else _positions(argnums)
        args = complete_arguments(compiled.fn, args, {})
        variant = _differentiated(fn, nums, nums, args)
        native_road.gradient_function(variant, _internal_arguments(fn, args, nums))
    lines = []
    if not native_road.functions_enabled():
        lines.append("native functions are off (PULLBACK_NATIVE_FUNCTIONS=0, "
                     "PULLBACK_NATIVE=0 or no llvmlite): Python road")
    elif not compiled.native:
        lines.append("compiled with native=False: Python road")
    for mask, variant in compiled._variants.items():
        params = (parameter_names(compiled.fn)   # the arguments, then the implicit inputs
                  + tuple(found.spelled() for found in compiled.implicit))
        wrt = ", ".join(p for p, m in zip(params, mask, strict=True) if m) or "nothing"
        for line in native_road.explain(variant) or ["not called through grad/vjp yet"]:
            lines.append(f"{compiled.fn.__name__} differentiating {wrt}: {line}")
    names = parameter_names(compiled.fn) + tuple(f.spelled() for f in compiled.implicit)
    for (mask, batched), variant in compiled.__dict__.get("_tangent_variants", {}).items():
        wrt = ", ".join(p for p, m in zip(names, mask, strict=True) if m) or "nothing"
        found = ["Python road (batched tangents, pb.jacfwd, are not lowered)"] if batched \
            else native_road.explain(variant)
        for line in found:
            lines.append(f"{compiled.fn.__name__} tangents of {wrt}: {line}")
    return "\n".join(lines) or f"{compiled.fn.__name__}: no variant built yet"


def adjoint_source(fn, argnums=None) -> str:
    """The generated forward and adjoint Python of ``fn`` as a string.

    ``argnums`` chooses the differentiated parameters (default: the variant
    compiled last, or all parameters).
    """
    return _built_variant(fn, argnums).source


def _built_variant(fn, argnums):
    compiled = as_compiled(fn)
    n = parameter_count(compiled.fn) + len(compiled.implicit)
    if argnums is not None:
        nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
        variant = compiled.variant(tuple(i in nums for i in range(n)))
    else:
        variant = compiled.last_variant or compiled.variant((True,) * n)
    variant._build()
    return variant


def kernel_ir(fn, argnums=None, dtype: str = "float64") -> str:
    """The LLVM IR of every fused kernel of ``fn`` (forward and adjoint), for ``dtype``
    and all-array arguments, with named values.  Empty if ``fn`` has no fused run."""
    from pullback.runtime.fused import FusedKernel

    from .lower import lower

    variant = _built_variant(fn, argnums)
    texts = []
    for name, value in sorted(variant._forward.__globals__.items()):
        if not isinstance(value, FusedKernel):
            continue
        for which, program in (("forward", value.forward_program),
                               ("adjoint", value.adjoint_program)):
            params = program[0] if which == "forward" else program[0] + program[1] + program[2]
            spec = value._spec(which, dtype, ("a",) * len(params))
            texts.append(f"; ---- {name} ({which}, {dtype}) ----\n{lower(spec)}")
    return "\n".join(texts)
