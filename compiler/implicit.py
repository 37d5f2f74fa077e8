"""Step 1b, implicit inputs: the arrays and numbers a function reads from outside itself.

``def net(X): return nd.dot(X, W) + b`` reads ``W`` and ``b`` as globals.  Under
``record()`` they are inputs of the call's tape node just as ``X`` is, so the
compiler must differentiate with respect to them.  ``implicit_inputs(fn)`` lists
every such *implicit input*: a free name (global or closure variable), or an
attribute chain through modules and plain objects the function reads
(``cfg.W``, ``params.layer1.W``), whose value is data -- an NDArray, a numpy array
or a number.  Those of the user functions it calls (transitively) are included,
since the callee reads them while the caller runs.  ``rewrite`` then turns each
one into an extra parameter of the function, after the user's own: the
differentiated parameters of a variant are the user's arguments plus these, and
nothing downstream knows the difference.  The caller (``api``) reads each value
at call time (``ImplicitInput.read``): a rebound global is never stale.

Guarantees:
- the list depends only on the code object and on what its names refer to when
  it is first computed, never on parsing (a cached artifact loads without a
  parse): candidates are the names the bytecode reads;
- a name that referred to a function, module, class or other non-data object
  then stays bound to that object (it is code, as numba binds it);
- the list may hold inputs the body never reads (a bytecode name that is only an
  attribute of a local): they are unused parameters, whose gradient is zero;
- the callee's implicit inputs are a subset of the caller's, each bound to one
  hidden parameter per function (``ParsedFunction.implicit``: input key -> name).
"""

from __future__ import annotations

import builtins
import functools
import keyword
import operator
import types
from dataclasses import dataclass

import gast
import numpy as np

from pullback.runtime import tape
from pullback.runtime.ndarray import NDArray

from .normalize import reserved_for

_DATA_TYPES = (NDArray, np.ndarray, np.generic, int, float, complex)
_MAX_DEPTH = 4   # attribute chains followed through modules and objects


@dataclass(frozen=True, eq=False)
class ImplicitInput:
    """One value a function reads from outside: ``path[0]`` looked up in ``root`` (a
    closure cell or a globals dict, held so that ``key``'s id stays valid), then each
    further entry of ``path`` as an attribute."""

    root: object
    path: tuple
    name: str   # the preferred hidden parameter name (``W``, ``cfg_W``)

    @property
    def key(self) -> tuple:
        return (id(self.root), self.path)

    def read(self):
        """The value now (as Python would read it at this point of the call)."""
        root = self.root
        value = root.cell_contents if isinstance(root, types.CellType) else root[self.path[0]]
        for attribute in self.path[1:]:
            value = getattr(value, attribute)
        return value

    def spelled(self) -> str:
        return ".".join(self.path)


def reader(inputs) -> object:
    """A function of no arguments returning the values of ``inputs`` now, as a tuple
    (``ImplicitInput.read`` of each).  Plain globals of one module, the usual case, are
    read by one ``operator.itemgetter`` call: a call's implicit inputs cost ~0.2 us, not
    ~0.3 us each."""
    inputs = tuple(inputs)
    roots = {id(found.root) for found in inputs}
    if len(roots) == 1 and isinstance(inputs[0].root, dict) \
            and all(len(found.path) == 1 for found in inputs):
        root, getter = inputs[0].root, operator.itemgetter(*(f.path[0] for f in inputs))
        if len(inputs) > 1:
            return functools.partial(getter, root)   # itemgetter of several: a tuple

        def read_global():
            return (getter(root),)
        return read_global

    def read_each():
        return tuple([found.read() for found in inputs])
    return read_each


def is_data(value) -> bool:
    """Values read at call time: arrays and numbers (not bools: flags select code)."""
    return isinstance(value, _DATA_TYPES) and not isinstance(value, bool)


def _user_function(value):
    """The plain user function behind ``value`` (a CompiledFunction's too), else None."""
    if getattr(type(value), "pullback_function", None) is not None:   # a CompiledFunction
        value = value.pullback_function
    if isinstance(value, types.FunctionType):
        module = getattr(value, "__module__", "") or ""
        if not module.startswith(("pullback", "numpy")):
            return value
    return None


def _descends(value) -> bool:
    """Whether attributes of ``value`` may hold implicit inputs: modules and plain,
    non-callable objects with a ``__dict__`` (SimpleNamespace, a parameter holder)."""
    if isinstance(value, types.ModuleType):
        return True
    return not callable(value) and not isinstance(value, type) and hasattr(value, "__dict__")


def _names_read(code) -> tuple:
    names = list(code.co_names) + list(code.co_freevars)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):   # a nested function's free variables that
            names.extend(n for n in _names_read(const)   # are this code's locals are not
                         if n not in code.co_cellvars)   # free here
    return tuple(dict.fromkeys(names))


def _roots(fn):
    """``(name, root, value)`` for each free name ``fn``'s bytecode reads that resolves."""
    code = fn.__code__
    cells = dict(zip(code.co_freevars, fn.__closure__ or (), strict=True))
    for name in _names_read(code):
        if name in cells:
            try:
                yield name, cells[name], cells[name].cell_contents
            except ValueError:   # an empty cell
                continue
        elif name in fn.__globals__:
            yield name, fn.__globals__, fn.__globals__[name]


def _own_inputs(fn, callees: list, containers: list) -> list:
    """The implicit inputs ``fn`` reads itself; appends the user functions it may call and
    the lists, tuples and dicts it reads from outside (see ``hidden_tracked``)."""
    attributes = set(_names_read(fn.__code__))
    found, seen = [], set()

    def visit(root, path, value, depth):
        if id(value) in seen:
            return
        if is_data(value):
            found.append(ImplicitInput(root, path, "_".join(path)))
            return
        if isinstance(value, (list, tuple, dict)):
            containers.append(ImplicitInput(root, path, "_".join(path)))
            return
        callee = _user_function(value)
        if callee is not None:
            callees.append(callee)
            return
        if depth >= _MAX_DEPTH or not _descends(value):
            return
        seen.add(id(value))
        members = vars(value)   # not getattr: no properties run, no lazy imports
        for attribute in sorted(attributes & set(members)):
            visit(root, (*path, attribute), members[attribute], depth + 1)
        seen.discard(id(value))

    for name, root, value in _roots(fn):
        if value is getattr(builtins, name, object()):
            continue
        visit(root, (name,), value, 1)
    return found


def implicit_inputs(fn) -> tuple:
    """Every implicit input of ``fn`` and of the user functions it calls, own ones
    first, each input once (by ``key``)."""
    return _transitive(fn)[0]


def outside_containers(fn) -> tuple:
    """The lists, tuples and dicts ``fn`` and its callees read from outside (bound at
    compile time, not inputs: ``hidden_tracked`` checks them)."""
    return _transitive(fn)[1]


def _transitive(fn) -> tuple:
    inputs, containers, keys, visited, pending = [], [], set(), set(), [fn]
    while pending:
        current = pending.pop(0)
        if current.__code__ in visited:
            continue
        visited.add(current.__code__)
        callees, found_containers = [], []
        for found in _own_inputs(current, callees, found_containers):
            if found.key not in keys:
                keys.add(found.key)
                inputs.append(found)
        containers.extend(found_containers)
        pending.extend(callees)
    return tuple(inputs), tuple(containers)


def _tracked_inside(value, attributes, depth=0) -> str | None:
    """Where an NDArray that gradients can flow into sits inside ``value`` (``[0]``,
    ``.W``, ``['w'][1]``), or None."""
    if isinstance(value, NDArray):
        return "" if tape.is_tracked(value) else None
    if depth >= _MAX_DEPTH or is_data(value) or isinstance(value, (str, bytes)):
        return None
    if isinstance(value, (list, tuple)):
        items = enumerate(value)
    elif isinstance(value, dict):
        items = value.items()
    elif _descends(value) and not isinstance(value, types.ModuleType):
        members = vars(value)
        for attribute in sorted(attributes & set(members)):
            where = _tracked_inside(members[attribute], attributes, depth + 1)
            if where is not None:
                return f".{attribute}{where}"
        return None
    else:
        return None
    for key, item in items:
        where = _tracked_inside(item, attributes, depth + 1)
        if where is not None:
            return f"[{key!r}]{where}"
    return None


def hidden_tracked(fn, parameters, args, containers) -> str | None:
    """A description of the first NDArray with a gradient (attached or recorded) that
    compiled code would read as a constant: inside a list, tuple, dict or object
    argument, or inside a container ``fn`` reads from outside (``containers``).  Its
    gradient would be lost silently, so the caller refuses the call instead."""
    attributes = set(_names_read(fn.__code__))
    for name, value in zip(parameters, args, strict=False):
        if isinstance(value, NDArray) or is_data(value):
            continue
        where = _tracked_inside(value, attributes)
        if where is not None:
            return f"the argument {name}{where}"
    for found in containers:
        try:
            value = found.read()
        except (AttributeError, KeyError, ValueError):
            continue
        where = _tracked_inside(value, attributes)
        if where is not None:
            return f"{found.spelled()}{where}"
    return None


def hidden_names(fn, inputs) -> list:
    """One parameter name per input: a free name of ``fn``'s own keeps its name (every
    load of it is replaced); any other input is named after its path, clashing with no
    name ``fn`` uses (its locals, the names it reads, the generated code's helpers) nor
    with another input."""
    code = fn.__code__
    own = [_own(fn, found) for found in inputs]
    reserved = reserved_for(fn.__name__)
    taken = (set(code.co_varnames) | set(code.co_cellvars) | set(_names_read(code))
             | reserved)
    names = []
    for found, mine in zip(inputs, own, strict=True):
        if mine and len(found.path) == 1 and found.path[0] not in reserved:
            names.append(found.path[0])
            continue
        base = found.name if found.name.isidentifier() and not keyword.iskeyword(found.name) \
            else "implicit"
        candidate, n = base, 0
        while candidate in taken:
            n += 1
            candidate = f"{base}_{n}"
        taken.add(candidate)
        names.append(candidate)
    return names


def _own(fn, found) -> bool:
    """Whether ``found`` starts at a free name of ``fn`` itself (not only of a callee)."""
    code = fn.__code__
    name = found.path[0]
    if name in code.co_freevars:
        return fn.__closure__[code.co_freevars.index(name)] is found.root
    return found.root is fn.__globals__ and name in _names_read(code)


class _Replace(gast.NodeTransformer):
    """Loads of an own implicit input (a free name or an attribute chain) -> its parameter."""

    def __init__(self, by_path, locals_):
        self.by_path = by_path
        self.locals = locals_

    def _chain(self, node):
        path = []
        while isinstance(node, gast.Attribute):
            path.append(node.attr)
            node = node.value
        if not isinstance(node, gast.Name) or node.id in self.locals:
            return None
        return (node.id, *reversed(path))

    def _replaced(self, node):
        path = self._chain(node)
        if path is None:
            return None
        for end in range(1, len(path) + 1):
            name = self.by_path.get(path[:end])
            if name is not None:
                return name, len(path) - end   # attributes left above the replaced prefix
        return None

    def visit_Name(self, node):
        found = self._replaced(node)
        if found is None or not isinstance(node.ctx, gast.Load):
            return node
        return gast.copy_location(gast.Name(id=found[0], ctx=gast.Load(), annotation=None,
                                            type_comment=None), node)

    def visit_Attribute(self, node):
        found = self._replaced(node)
        if found is None:
            return self.generic_visit(node)
        name, above = found
        inner = node
        for _ in range(above):
            inner = inner.value
        replacement = gast.copy_location(gast.Name(id=name, ctx=gast.Load(), annotation=None,
                                                   type_comment=None), inner)
        if inner is node:
            return replacement
        parent = node
        for _ in range(above - 1):
            parent = parent.value
        parent.value = replacement
        return node


def rewrite(parsed, inputs) -> None:
    """Give ``parsed.tree`` one parameter per implicit input (after the user's) and make
    its body read them; record the names in ``parsed.implicit`` (key -> name)."""
    fn = parsed.fn
    names = hidden_names(fn, inputs)
    parsed.implicit = {found.key: name for found, name in zip(inputs, names, strict=True)}
    if not inputs:
        return
    tree = parsed.tree
    locals_ = {a.id for a in tree.args.args} | {
        n.id for n in gast.walk(tree) if isinstance(n, gast.Name) and isinstance(n.ctx, gast.Store)}
    own = {found.path: name for found, name in zip(inputs, names, strict=True)
           if _own(fn, found)}
    tree.body = [_Replace(own, locals_).visit(s) for s in tree.body]
    for name in names:
        tree.args.args.append(gast.Name(id=name, ctx=gast.Param(), annotation=None,
                                        type_comment=None))


def call_arguments(parsed, callee) -> list:
    """The caller's names for ``callee``'s implicit inputs, to append to a call's
    arguments (the callee's extra parameters, in its order)."""
    return [gast.Name(id=parsed.implicit[found.key], ctx=gast.Load(), annotation=None,
                      type_comment=None)
            for found in implicit_inputs(_user_function(callee) or callee)]
