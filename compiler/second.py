"""Step 5'', forward-over-reverse: the tangent of a generated forward-with-stack and adjoint.

``SecondOrder(compiled, mask)`` transforms ``compiled``'s function for ``mask`` (which
parameters are differentiated) with the reverse step, unfused, reads the emitted
``<f>_forward`` and ``<f>_adjoint`` back into flat statements (``compiler/ir.py``'s
reading, with slices, lists and dicts kept), and emits for each its tangent function:

``<f>_forward_tangent(_stack, *params, *param_dots) -> (result, result_dot)`` and
``<f>_adjoint_tangent(_stack, result_grad, result_grad_dot) -> (grads, grad_dots)``.

Run one after the other on one stack, with ``param_dots = v`` and ``result_grad_dot =
None``, they give the gradient and the Hessian-vector product ``H v`` (``pb.hvp``); with a
head gradient ``g``, the gradient of ``<g, f>`` and its derivative along ``v``.

Guarantees:
- the statements and control flow of the forward and the adjoint are kept as they are;
  after each assignment to a *varied* name (one that may depend on a tangent: a
  parameter with one, a stack pop, anything computed from them, found by a fixed point
  over the function) comes one assignment of its tangent ``<name>_dot``; a zero tangent
  is ``None``, as a zero gradient is in the adjoint, and every varied name's tangent is
  ``None`` until assigned;
- every push also pushes the pushed value's tangent (``None`` if it has none) and every
  pop pops it, so saved values keep their tangents from the forward to the adjoint;
- each statement's tangent is one call of a rule of ``runtime/dual.py``: operators,
  the table's primitives (their JVP rules), the support helpers (each linear in its
  gradient or container arguments), VJP rules through ``support.accumulate`` (evaluated
  on values with tangents); a user function's forward and adjoint call its own
  forward-over-reverse functions; a call with no rule that meets a tangent is a
  CompileError naming it, never a zero tangent.
"""

from __future__ import annotations

import os
import threading

import gast

from pullback.runtime import dual
from pullback.runtime import primitives as P

from . import codegen, ir
from .fuse import NUMPY_FUNCTIONS
from .errors import CompileError
from .reverse import Lines, unparse

_LOCK = threading.RLock()

#: calls whose results carry no tangent (structure, shapes, control)
_NO_TANGENT_CALLS = {"len", "range", "reversed", "slice", "float", "int", "bool", "isinstance",
                     "_np.zeros", "_np.ones", "np.zeros", "np.ones", "_np.zeros_like",
                     "np.zeros_like", "_np.ones_like", "np.ones_like", "_np.shape",
                     "np.shape", "_np.ndim", "np.ndim", "_np.size"}
#: numpy spellings in inline derivatives, as the table's primitives
_NUMPY = {"greater": "greater", "where": "where", "log": "log", "power": "power",
          "cos": "cos", "sin": "sin", "exp": "exp", "sqrt": "sqrt", "sign": "sign",
          "tanh": "tanh", "cosh": "cosh", "square": "square", "abs": "abs",
          "multiply": "multiply", "add": "add", "subtract": "subtract", "divide": "divide",
          "negative": "negative", "reciprocal": "reciprocal", "maximum": "maximum",
          "minimum": "minimum", "floor": "floor", "sum": "sum"}
# and every numpy function a fused kernel's source calls (fuse.NUMPY_FUNCTIONS: the scalar
# formulas of derivative rules, ``g * sinh(x)``, ``g / hypot(x, 1.0)``) that is a primitive
_NUMPY.update({target.split(".")[1]: target.split(".")[1]
               for target in NUMPY_FUNCTIONS.values() if target.split(".")[1] in P.REGISTRY})
_NUMPY["absolute"] = "abs"   # _kernels.absolute: fabs
_OPERATORS = {gast.Add: "add", gast.Sub: "sub", gast.Mult: "mul", gast.Div: "div",
              gast.Pow: "pow", gast.Mod: "mod"}


class _Flat(ir._Flatten):
    """ir.py's flattening, keeping slices, tuple keys, lists and dicts (their parts atoms)."""

    def operation(self, node, line):
        if isinstance(node, gast.Subscript) and isinstance(node.slice, (gast.Slice, gast.Tuple)):
            return gast.Subscript(value=self.atom(node.value, line),
                                  slice=self.key(node.slice, line), ctx=gast.Load())
        if isinstance(node, gast.List):
            return gast.List(elts=[self.atom(e, line) for e in node.elts], ctx=gast.Load())
        if isinstance(node, gast.Dict):
            return gast.Dict(keys=[self.atom(k, line) for k in node.keys],
                             values=[self.atom(v, line) for v in node.values])
        return super().operation(node, line)

    def key(self, node, line):
        if isinstance(node, gast.Slice):
            parts = [None if p is None else self.atom(p, line)
                     for p in (node.lower, node.upper, node.step)]
            return gast.Slice(lower=parts[0], upper=parts[1], step=parts[2])
        if isinstance(node, gast.Tuple):
            return gast.Tuple(elts=[self.key(e, line) for e in node.elts], ctx=gast.Load())
        return self.atom(node, line)


def _names(node) -> list:
    return [n.id for n in gast.walk(node) if isinstance(n, gast.Name)
            and isinstance(n.ctx, gast.Load)]


def _assignments(stmts):
    for s in stmts:
        if isinstance(s, gast.Assign):
            yield s
        for block in ("body", "orelse"):
            yield from _assignments(getattr(s, block, None) or [])


def _is_pop(value) -> bool:
    return isinstance(value, gast.Call) and ir.dotted(value.func) == "_stack.pop"


def _callee_part(value):
    """``(callee, 'forward' | 'adjoint')`` for a user function's call, else None."""
    if not isinstance(value, gast.Call):
        return None
    name = ir.dotted(value.func)
    if name and name.count(".") == 1:
        base, part = name.split(".")
        if part in ("forward", "adjoint") and base not in ("support", "ops", "npops", "mathops"):
            return base, part
    return None


class _Tangent:
    """The tangent function of one flattened generated function."""

    def __init__(self, fn, seeds, where):
        self.fn, self.where = fn, where
        self.varied = set(seeds)
        self.locals = {n.id for n in gast.walk(fn) if isinstance(n, gast.Name)}
        self.dots = {}
        changed = True
        while changed:   # the fixed point: a name is varied if any assignment makes it so
            changed = False
            for s in _assignments(fn.body):
                target = s.targets[0].id
                if target not in self.varied and self.carries(s.value):
                    self.varied.add(target)
                    changed = True

    def dot(self, name: str) -> str:
        found = self.dots.get(name)
        if found is None:
            found = f"{name}_dot"
            while found in self.locals:
                found += "_"
            self.dots[name] = found
        return found

    def d(self, atom) -> str:
        """The tangent of an atom as source: its dot name, or None."""
        if isinstance(atom, gast.Name) and atom.id in self.varied:
            return self.dot(atom.id)
        return "None"

    def carries(self, value) -> bool:
        """Whether ``value`` may have a nonzero tangent."""
        if _is_pop(value) or (_callee_part(value) or ("", ""))[1] == "adjoint":
            return True
        if isinstance(value, (gast.Compare, gast.BoolOp, gast.Attribute, gast.Constant)):
            return False
        if isinstance(value, gast.UnaryOp) and isinstance(value.op, gast.Not):
            return False
        if isinstance(value, gast.Call):
            name = ir.dotted(value.func)
            if name in _NO_TANGENT_CALLS or (name or "").split(".")[-1] in dual.NO_TANGENT \
                    and name.startswith("support."):
                return False
            operands = value.args + [k.value for k in value.keywords]
            return any(n in self.varied for a in operands for n in _names(a))
        return any(n in self.varied for n in _names(value))

    def error(self, s, what):
        return CompileError(f"forward-over-reverse (pb.hvp): no tangent rule for {what} in "
                            f"the generated adjoint of {self.where} (its line {s.lineno})",
                            hint="What to do: use pb.jvp/pb.jacfwd of pb.grad's pieces, or "
                                 "report the construct.")

    # ----- statements ----------------------------------------------------------------------
    def block(self, stmts) -> Lines:
        out = Lines()
        for s in stmts:
            out.extend(getattr(self, f"stmt_{type(s).__name__.lower()}")(s))
        return out or self._pass()

    @staticmethod
    def _pass() -> Lines:
        out = Lines()
        out.add("pass")
        return out

    def stmt_if(self, s) -> Lines:
        out = Lines()
        out.add(f"if {unparse(s.test)}:")
        out.extend(self.block(s.body), 1)
        if s.orelse:
            out.add("else:")
            out.extend(self.block(s.orelse), 1)
        return out

    def stmt_while(self, s) -> Lines:
        out = Lines()
        out.add(f"while {unparse(s.test)}:")
        out.extend(self.block(s.body), 1)
        return out

    def stmt_for(self, s) -> Lines:
        out = Lines()
        out.add(f"for {s.target.id} in {unparse(s.iter)}:")
        if s.target.id in self.varied:   # the target is an int of the range: no tangent
            out.add(f"{self.dot(s.target.id)} = None", 1)
        out.extend(self.block(s.body), 1)
        return out

    def stmt_expr(self, s) -> Lines:
        out = Lines()
        out.add(unparse(s.value))
        value = s.value
        if isinstance(value, gast.Call) and ir.dotted(value.func) == "_stack.push":
            out.add(f"_stack.push({self.d(value.args[0])}, {unparse(value.args[1])})")
        elif any(n in self.varied for n in _names(value)):
            name = ir.dotted(value.func) if isinstance(value, gast.Call) else None
            if name not in ("support.check_rebind", "support.assertion_failed", "support.leaf"):
                raise self.error(s, unparse(value))
        return out

    def stmt_return(self, s) -> Lines:
        out = Lines()
        value = s.value
        if isinstance(value, gast.Tuple):
            dots = "(" + "".join(f"{self.d(e)}, " for e in value.elts) + ")"
        else:
            dots = self.d(value)
        out.add(f"return ({unparse(value)}, {dots})")
        return out

    def stmt_assign(self, s) -> Lines:
        out = Lines()
        target, value = s.targets[0].id, s.value
        if _is_pop(value):
            if target in self.varied:
                out.add(f"{self.dot(target)} = {unparse(value)}")
            else:
                out.add(unparse(value))   # the tangent pushed beside the value
            out.add(f"{target} = {unparse(value)}")
            return out
        callee = _callee_part(value)
        if callee is not None:
            return self.callee(s, target, value, *callee)
        if target in self.varied and isinstance(value, gast.Call) \
                and ir.dotted(value.func) == "support.accumulate":
            # value and tangent from one evaluation of the rule
            total, rule, g, *rest = value.args
            rest_dots = "(" + "".join(f"{self.d(a)}, " for a in rest) + ")"
            parts = [unparse(total), self.d(total), unparse(rule), unparse(g), self.d(g),
                     rest_dots] + [unparse(a) for a in rest] + \
                [f"{k.arg}={unparse(k.value)}" for k in value.keywords]
            out.add(f"{target}, {self.dot(target)} = dual.accumulate_pair({', '.join(parts)})")
            return out
        if target not in self.varied:
            out.add(f"{target} = {unparse(value)}")
            return out
        ans = target
        if target in _names(value):   # the tangent reads the old operands
            ans = f"{target}_new"
            while ans in self.locals:
                ans += "_"
        out.add(f"{ans} = {unparse(value)}")
        out.add(f"{self.dot(target)} = {self.tangent(s, value, ans)}")
        if ans != target:
            out.add(f"{target} = {ans}")
        return out

    def callee(self, s, target, value, base, part) -> Lines:
        out = Lines()
        args = [unparse(a) for a in value.args]
        if part == "forward":   # (_stack, *params): then one tangent per parameter
            args += [self.d(a) for a in value.args[1:]]
        else:                   # (_stack, result_grad)
            args.append(self.d(value.args[1]))
        pair = f"{target}_pair"
        while pair in self.locals:
            pair += "_"
        out.add(f"{pair} = {base}.{part}_tangent({', '.join(args)})")
        out.add(f"{target} = {pair}[0]")
        if target in self.varied:
            out.add(f"{self.dot(target)} = {pair}[1]")
        return out

    # ----- one statement's tangent -----------------------------------------------------------
    def tangent(self, s, value, ans) -> str:
        if not self.carries(value):
            return "None"
        if isinstance(value, gast.Name):
            return self.d(value)
        if isinstance(value, gast.BinOp):
            rule = _OPERATORS.get(type(value.op))
            if rule is None:
                raise self.error(s, f"the operator {type(value.op).__name__}")
            a, b = unparse(value.left), unparse(value.right)
            da, db = self.d(value.left), self.d(value.right)
            if rule in ("add", "sub"):
                return f"dual.{rule}({da}, {db}, {ans})"
            return f"dual.{rule}({a}, {b}, {da}, {db}, {ans})"
        if isinstance(value, gast.UnaryOp):
            if isinstance(value.op, gast.USub):
                return f"dual.neg({self.d(value.operand)})"
            if isinstance(value.op, gast.UAdd):
                return self.d(value.operand)
        if isinstance(value, gast.Subscript):
            return f"dual.index({self.d(value.value)}, {self.key(value.slice)})"
        if isinstance(value, (gast.Tuple, gast.List)):
            kind = "tuple" if isinstance(value, gast.Tuple) else "list"
            return f"dual.pack({kind}, {', '.join(self.d(e) for e in value.elts)})"
        if isinstance(value, gast.Dict):
            keys = ", ".join(unparse(k) for k in value.keys)
            dots = ", ".join(self.d(v) for v in value.values)
            return f"dual.mapping(({keys},), ({dots},))"
        if isinstance(value, gast.Call):
            return self.call(s, value, ans)
        raise self.error(s, type(value).__name__)

    def key(self, node) -> str:
        if isinstance(node, gast.Slice):
            parts = ["None" if p is None else unparse(p) for p in (node.lower, node.upper,
                                                                    node.step)]
            return f"slice({', '.join(parts)})"
        if isinstance(node, gast.Tuple):
            return "(" + "".join(self.key(e) + ", " for e in node.elts) + ")"
        return unparse(node)

    def call(self, s, value, ans) -> str:
        name = ir.dotted(value.func)
        base, _, attr = name.rpartition(".")
        args = [unparse(a) for a in value.args]
        keywords = [f"{k.arg}={unparse(k.value)}" for k in value.keywords]
        dots = "(" + "".join(f"{self.d(a)}, " for a in value.args) + ")"
        if base in ("ops", "npops", "mathops") or (base in ("_np", "np", "_kernels")
                                                   and attr in _NUMPY):
            prim = attr if base in ("ops", "npops", "mathops") else _NUMPY[attr]
            if prim not in P.REGISTRY:
                raise self.error(s, name)
            if P.REGISTRY[prim].vjps is None:   # not differentiable: no tangent
                return "None"
            return f"dual.prim({', '.join([repr(prim), dots, ans] + args + keywords)})"
        if base == "support" and attr == "accumulate":
            total, rule, g, *rest = value.args
            rest_dots = "(" + "".join(f"{self.d(a)}, " for a in rest) + ")"
            parts = [self.d(total), unparse(rule), self.d(g), rest_dots, args[0]] + \
                args[2:] + keywords
            return f"dual.accumulate({', '.join(parts)})"
        if base == "jvp":   # a JVP rule in forward-mode code (forward over forward)
            return f"dual.jvp_rule({', '.join([name, dots] + args + keywords)})"
        if base == "support" and (attr in dual.LINEAR or attr in dual.SPECIAL):
            return f"dual.support({', '.join([repr(attr), dots] + args + keywords)})"
        raise self.error(s, f"{name}()")

    # ----- whole function ---------------------------------------------------------------------
    def source(self, name, params, dotted_params) -> str:
        body = self.block(self.fn.body)
        fresh = sorted(v for v in self.varied if v not in dotted_params)
        lines = [f"def {name}({', '.join(params + [self.dot(p) for p in dotted_params])}):"]
        if fresh:
            lines.append("    " + " = ".join(self.dot(v) for v in fresh) + " = None")
        return "\n".join(lines + body.render(1))


class SecondOrder:
    """The forward-over-reverse functions of one function and mask (built on first use)."""

    def __init__(self, compiled, mask):
        self.compiled, self.mask = compiled, tuple(mask)
        self.source = None
        self._forward = self._adjoint = None

    def _build(self):
        if self._forward is not None:
            return
        with _LOCK:
            if self._forward is None:
                self._transform()

    def _transform(self):
        from . import pipeline

        parsed = self.compiled.parsed()
        meta = {}
        source, namespace = pipeline.transform(parsed, self.mask, second_order_for,
                                               meta=meta, fusion=False)
        name = meta["name"]
        forward, adjoint = _flatten(source, name)
        where = f"{name}()"
        params = [a.id for a in forward.args.args]   # _stack first
        given = [p for p, m in zip(params[1:], self.mask, strict=True) if m]
        forward_src = _Tangent(forward, given, where).source(
            f"{name}_forward_tangent", params, params[1:])
        adjoint_params = [a.id for a in adjoint.args.args]   # _stack, result_grad
        adjoint_src = _Tangent(adjoint, [adjoint_params[1]], where).source(
            f"{name}_adjoint_tangent", adjoint_params, adjoint_params[1:])
        names = {k: v for k, v in namespace.items()
                 if not k.startswith("__") and k not in (f"{name}_forward", f"{name}_adjoint")}
        names["dual"] = dual
        header = (f"# Forward-over-reverse, generated by pullback from {name}() at "
                  f"{os.path.basename(parsed.filename)}:{parsed.first_line}\n"
                  f"# The tangent of its unfused forward and adjoint (pb.adjoint_source)\n")
        self.source = f"{header}\n\n{forward_src}\n\n\n{adjoint_src}\n"
        stem = f"{getattr(parsed.fn, '__module__', 'module')}.{name}.second_order"
        loaded = codegen.load(self.source, stem, names)
        self._adjoint = loaded[f"{name}_adjoint_tangent"]
        self._forward = loaded[f"{name}_forward_tangent"]   # last: it marks "built"

    def forward_tangent(self, stack, *args):
        """``(result, result tangent)``: the arguments, then one tangent per parameter."""
        self._build()
        return self._forward(stack, *args)

    def adjoint_tangent(self, stack, result_grad, result_grad_dot):
        """``(gradients, their tangents)`` (one per parameter; None: zero)."""
        self._build()
        return self._adjoint(stack, result_grad, result_grad_dot)


class ForwardOverForward:
    """Forward over forward: the tangent of ``compiled``'s own (unfused) tangent function
    for ``inner`` (the parameters with inner tangents), along the parameters of
    ``outer``: ``twice(*params, *inner_dots, *outer_dots) -> ((result, result_dot),
    (their tangents))``, with the same guarantees as the forward-over-reverse functions
    (``_Tangent``; an inner tangent given as data, a basis direction, has none)."""

    def __init__(self, compiled, inner, outer, batched=False):
        self.compiled, self.inner, self.outer = compiled, tuple(inner), tuple(outer)
        self.batched = batched   # of the batched tangent function: ``twice(_batch, ...)``
        self.source = None
        self._twice = None

    def build(self):
        """Generate and load the function (a CompileError for code it cannot follow)."""
        if self._twice is None:
            with _LOCK:
                if self._twice is None:
                    self._transform()

    def __call__(self, *args):
        if self._twice is None:
            self.build()
        return self._twice(*args)

    def _transform(self):
        from . import pipeline

        parsed = self.compiled.parsed()
        name = parsed.tree.name
        source, namespace = pipeline.transform_tangent(
            parsed, self.inner, self.compiled.tangent_variant_for, batched=self.batched,
            fusion=False)
        module = gast.parse(source)
        found = {n.name: n for n in module.body if isinstance(n, gast.FunctionDef)}
        fn = _Flat().function(found[f"{name}_tangent"])
        params = [a.id for a in fn.args.args]   # (_batch,) the primals, the inner tangents
        primals = params[1:] if self.batched else params
        seeds = [p for p, m in zip(primals, self.outer, strict=False) if m]
        body = _Tangent(fn, seeds, f"{name}() (forward over forward)").source(
            f"{name}_tangent_tangent", params, seeds)
        names = {k: v for k, v in namespace.items()
                 if not k.startswith("__") and k != f"{name}_tangent"}
        names["dual"] = dual
        which = "batched tangent function (every inner direction at once)" if \
            self.batched else "unfused tangent function"
        header = (f"# Forward over forward, generated by pullback from {name}() at "
                  f"{os.path.basename(parsed.filename)}:{parsed.first_line}\n"
                  f"# The tangent of its {which} (pb.tangent_source)\n")
        self.source = f"{header}\n\n{body}\n"
        part = "batched_tangent_tangent" if self.batched else "tangent_tangent"
        stem = f"{getattr(parsed.fn, '__module__', 'module')}.{name}.{part}"
        self._twice = codegen.load(self.source, stem, names)[f"{name}_tangent_tangent"]


def forward_over_forward(fn, inner, outer, batched=False) -> ForwardOverForward:
    """The forward-over-forward function of a user function: inner tangents on ``inner``,
    outer ones on ``outer`` (both masks over the parameters and implicit inputs);
    ``batched``: the inner tangents with a leading axis of directions (``pb.jacfwd``'s)."""
    from .api import as_compiled

    compiled = as_compiled(fn)
    key = (tuple(inner), tuple(outer), batched)
    found = compiled.__dict__.setdefault("_forward_over_forward", {})
    if key not in found:
        found[key] = ForwardOverForward(compiled, *key)
    return found[key]


def _flatten(source, name):
    module = gast.parse(source)
    found = {node.name: node for node in module.body if isinstance(node, gast.FunctionDef)}
    return tuple(_Flat().function(found[f"{name}_{part}"]) for part in ("forward", "adjoint"))


def second_order_for(fn, mask) -> SecondOrder:
    """The forward-over-reverse functions of a user function for ``mask`` (one per mask)."""
    from .api import as_compiled

    compiled = as_compiled(fn)
    mask = tuple(m if not isinstance(m, (bool, int)) else bool(m) for m in mask)
    found = compiled.__dict__.setdefault("_second_order", {})
    if mask not in found:
        found[mask] = SecondOrder(compiled, mask)
    return found[mask]
