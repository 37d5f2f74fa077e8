"""What a compiled function's code was specialised to, checked again at each call.

Compiled code binds the objects a function's free names refer to when it is built: a
global ``ACT = np.tanh`` becomes the tanh primitive, a helper ``def layer`` becomes a
call of that helper's variant, a global dict ``params`` is read through the object it
was.  Arrays and numbers are different: they are implicit inputs (``implicit.py``), read
at every call.  Python itself looks every name up again at each call, so rebinding one
(``m.ACT = np.sin``, ``params = {...}`` in a training loop, a helper redefined in a
notebook) must change what the compiled function computes too.

``Bindings(fn)`` records, for every name ``fn``'s bytecode reads (and, transitively,
those of the user functions it calls): which object it refers to now, or only that it
is data (an implicit input, whose value is read per call anyway).  Attribute chains are
followed through the user's own modules (``cfg.act``, ``pkg.sub.helper``) and through
any other object but data and numpy's or pullback's own (a ``SimpleNamespace``, an
instance with or without ``__slots__``, a class and its bases, a function's attributes),
to any depth, each object once, checked where Python looks the attribute up
(``attribute_lookup``); library modules (numpy, the standard library, installed
packages, pullback) and library classes are taken as not rebound.  ``changed()`` is a
loop of dictionary lookups and identity tests: the caller (``api``) rebuilds every variant when it is true, so a
variant never runs with bindings other than those it was built for.
"""

from __future__ import annotations

import builtins
import dis
import os
import sys
import sysconfig
import types

from .implicit import is_data

_MISSING = object()
_DATA = object()          # "any array or number": an implicit input, read at each call
_LIBRARY = tuple({os.path.realpath(p) + os.sep for p in
                  (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
                   sysconfig.get_paths()["platlib"])})


def _names_read(code) -> tuple:
    """``(global names, attribute names)`` the bytecode loads (nested code included):
    names looked up in the globals (then the builtins), and names read as attributes."""
    global_names, attributes = set(), set()
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            global_names.add(instruction.argval)
        elif instruction.opname in ("LOAD_ATTR", "LOAD_METHOD"):
            attributes.add(instruction.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            inner = _names_read(const)
            global_names |= inner[0]
            attributes |= inner[1]
    return global_names, attributes


def _is_library(module) -> bool:
    name = module.__name__.partition(".")[0]
    if name in sys.builtin_module_names or name in ("numpy", "pullback", "builtins"):
        return True
    path = getattr(module, "__file__", None)   # None: made at run time (the user's)
    return path is not None and os.path.realpath(path).startswith(_LIBRARY)


def followed(value) -> bool:
    """Whether the attributes a function reads of ``value`` are looked up again (here,
    and in the cache key): a user module, a user function's attributes, a class of the
    user's (``Cfg.act``, a ``staticmethod``), and any other object but data and the
    library's own (a ``types.SimpleNamespace``, an ``argparse.Namespace``, an instance of
    a class of the user's, with or without ``__slots__``)."""
    if isinstance(value, types.ModuleType):
        return not _is_library(value)
    if is_data(value):
        return False
    if isinstance(value, type):
        return _user_class(value)
    if isinstance(value, types.FunctionType):
        return bool(value.__dict__)
    module = getattr(type(value), "__module__", None) or ""
    return module.partition(".")[0] not in ("numpy", "pullback")


def _user_class(cls) -> bool:
    module = sys.modules.get(getattr(cls, "__module__", None) or "")
    return module is not None and not _is_library(module)


class _Attribute:
    """``get(name)`` as ``getattr``: the lookup of an attribute a slot of a user class
    holds, which no namespace dict shows."""

    def __init__(self, obj):
        self._obj = obj

    def get(self, name, default=None):
        try:
            return getattr(self._obj, name)
        except Exception:   # noqa: BLE001 -- whatever the descriptor raises: "missing"
            return default


def _unwrapped(entry):
    """What reading a class attribute gives for a callable's sake (a staticmethod's or
    classmethod's function)."""
    return entry.__func__ if isinstance(entry, (staticmethod, classmethod)) else entry


def attribute_lookup(value, name):
    """``(checks, found)``: how Python finds attribute ``name`` of a followed ``value``
    -- ``(namespace, name, expected)`` for each place it looks, in order, ``expected``
    ``_MISSING`` where it is not (an instance attribute that would shadow a class's), and
    what it finds (``_MISSING``: nowhere we follow).  Library classes in the MRO are
    taken as not rebound."""
    if isinstance(value, types.ModuleType) or isinstance(value, types.FunctionType):
        namespace = vars(value)
        if name in namespace:
            return [(namespace, name, namespace[name])], namespace[name]
        return [], _MISSING
    if isinstance(value, type):
        classes, instance = value.__mro__, None
    else:
        classes = type(value).__mro__
        instance = getattr(value, "__dict__", None)
        instance = instance if isinstance(instance, dict) else None
    checks, entry = [], _MISSING
    for cls in classes:
        if not _user_class(cls):
            break
        namespace = cls.__dict__
        entry = namespace.get(name, _MISSING)
        if entry is _MISSING:
            checks.append((namespace, name, _MISSING))
            continue
        checks.append((namespace, name, entry))
        if not isinstance(value, type) and isinstance(entry, types.MemberDescriptorType):
            found = _Attribute(value).get(name, _MISSING)   # a slot: read, no code runs
            return checks + [(_Attribute(value), name, found)], found
        if isinstance(entry, property):   # its code is not run at each check (nor here):
            return checks, _MISSING       # the property object itself is checked
        break
    if instance is not None and name in instance:
        return [(instance, name, instance[name])] + checks, instance[name]
    if entry is _MISSING:
        return [], _MISSING
    if instance is not None:
        checks.insert(0, (instance, name, _MISSING))
    return checks, _unwrapped(entry)


def _user_function(value):
    """The plain Python function behind ``value`` (a CompiledFunction's), else None."""
    inner = getattr(type(value), "pullback_function", None)
    if inner is not None:
        value = value.pullback_function
    return value if isinstance(value, types.FunctionType) else None


def _expected(value):
    return _DATA if is_data(value) else value


class Bindings:
    """The objects ``fn`` (and the user functions it calls) read by name, as of now."""

    def __init__(self, fn):
        self._checks = []      # (namespace dict, name, expected), in lookup order
        self._cells = []       # (closure cell, expected)
        self._seen = set()
        self._followed = {}
        self._add_function(fn)
        self._freeze()

    def _add_function(self, fn) -> None:
        if id(fn.__code__) in self._seen:
            return
        self._seen.add(id(fn.__code__))
        global_names, attributes = _names_read(fn.__code__)
        code = fn.__code__
        glob = fn.__globals__
        for cell_name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=True):
            try:
                value = cell.cell_contents
            except ValueError:   # an empty cell (assigned later in the outer scope)
                value = _MISSING
            self._cells.append((cell, _expected(value)))
            self._follow(value, attributes)
        for name in sorted(global_names):
            value = glob.get(name, _MISSING)
            self._checks.append((glob, name, _expected(value)))
            if value is _MISSING:   # a builtin, unless a global of that name appears
                value = vars(builtins).get(name, _MISSING)
                self._checks.append((vars(builtins), name, _expected(value)))
            self._follow(value, attributes)

    def _follow(self, value, names) -> None:
        inner = _user_function(value)
        if inner is not None:
            self._add_function(inner)
        if not followed(value) or id(value) in self._followed:
            return
        self._followed[id(value)] = value   # held: its id stays valid (cycles end here)
        for name in sorted(names):
            checks, found = attribute_lookup(value, name)
            self._checks.extend((namespace, key, _expected(expected))
                                for namespace, key, expected in checks)
            if found is not _MISSING:
                self._follow(found, names)

    def _freeze(self) -> None:
        """Identity checks apart from data checks, for ``changed``'s loop."""
        self._same = [(ns, name, expected) for ns, name, expected in self._checks
                      if expected is not _DATA]
        self._data = [(ns, name) for ns, name, expected in self._checks if expected is _DATA]

    def changed(self) -> bool:
        """Whether a name now refers to another object (or data became code, or back)."""
        for namespace, name, expected in self._same:
            if namespace.get(name, _MISSING) is not expected:
                return True
        for namespace, name in self._data:
            if not is_data(namespace.get(name)):
                return True
        for cell, expected in self._cells:
            try:
                value = cell.cell_contents
            except ValueError:
                value = _MISSING
            if value is not expected and (expected is not _DATA or not is_data(value)):
                return True
        return False
