"""Step 5', tangent: a normalized function -> its forward-mode (JVP) function.

Given the analysis (``active`` = varied by a differentiated input and useful for the
result, the same activity as the reverse mode's), emits one Python function

``<f>_tangent(*params, *param_dots) -> (result, result_dot)``

whose body is the normalized body with, right after each assignment to an active
variable, one assignment of its tangent ``<name>_dot`` (derived from the user's name,
like ``_grad`` in the adjoint).  The tangents of the differentiated parameters
(``param_dots``, one per parameter of the mask, in order) are its extra arguments.

Guarantees:
- no stack: ``if``, ``while`` and ``for`` are the user's own, run once; the tangent of
  a value is computed where the value is, from values live at that point;
- every active variable has a tangent whenever it has a value, of the value's shape (a
  float dtype): an active variable given an inactive value (``s = 0.0`` before a loop,
  an undifferentiated parameter that a loop updates) gets ``support.zero_tangent``,
  the only zeros ever materialised; inactive values have no tangent at all;
- a statement whose target is among its operands (``x = x * y``) computes its value
  into ``<x>_new`` first, so its tangent reads the old operands;
- elementwise primitives' tangents are their scalar derivatives inline (the table's
  ``scalar_vjps`` with ``g`` read as the operand's tangent); other primitives call the
  table's JVP rules (``jvp.dot_0(x_dot, ans, x, y)``); a primitive with none is a
  CompileError at the user's line, never a zero tangent;
- a call of another user function calls that function's tangent variant (the same
  transform, recursively, for the mask of its active arguments); a call of a derivative
  (``pb.grad(g)``, ``pb.jacfwd(g)``: nested differentiation) calls its tangent rule
  (``compiler/forward_api.py``: forward over reverse, forward over forward), never the
  derivative's value as if it were constant;
- every statement is an ordinary Python assignment, ``if``, ``while`` or ``for`` of the
  kinds the adjoint uses, so the whole-function lowering can read it too.
"""

from __future__ import annotations

import gast

from .errors import error_at
from .fuse import doubled, formula_names, numpy_source, substitute
from .reverse import Lines, ReverseTransform, key_source, unparse


# container operations whose tangent is the same operation on the tangents
_STRUCTURAL = {"dict", "setitem", "get", "values", "items", "extend", "without"}
# every operation kind a gradient follows (analysis._DIFFERENTIABLE): one forward mode does
# not handle is a CompileError, never a zero tangent
_FOLLOWED = {"prim", "copy", "user", "index", "pack", "append", "kernel", "join",
             "derivative"} | _STRUCTURAL
_PLACEHOLDER = "pb_tangent_placeholder"   # the tangent, put in after numpy_source


def _sum_source(parts) -> str:
    """``a + b + ...`` of expression sources, compound ones parenthesised; a negated name
    is subtracted (``x_dot - y_dot``, not ``x_dot + -y_dot``)."""
    if len(parts) == 1:
        return parts[0]
    total = f"({parts[0]})" if " " in parts[0] else parts[0]
    for p in parts[1:]:
        if " " in p:
            total += f" + ({p})"
        elif p.startswith("-"):
            total += f" - {p[1:]}"
        else:
            total += f" + {p}"
    return total


def _linear_rules(prim) -> bool:
    """Whether every JVP rule of ``prim`` is the op applied with one operand replaced by
    its tangent (``primitives._linear_jvp``, ``_bilinear_jvps``): tangent code then calls
    the op directly, as the forward does."""
    names = [getattr(r, "__qualname__", "") for r in prim.jvps or () if r is not None]
    return bool(names) and all(n.startswith(("_linear_jvp.", "_bilinear_jvps."))
                               for n in names)


class TangentTransform(ReverseTransform):
    """Builds the tangent source of one normalized function."""

    def __init__(self, parsed, fn, analysis, callee_ref, mask, batched=False):
        super().__init__(parsed, fn, analysis, callee_ref)
        self.mask = mask
        self.batched = batched   # every tangent has a leading axis of _batch directions
        self.dot_names = {}
        self.tangent_kernels = []   # TangentKernel, one per fused run with a tangent

    # ----- the helpers tangent code calls (batched: the leading axis is the batch) -------
    def zero(self, value: str) -> str:
        return f"support.zero_tangent({value}, _batch)" if self.batched \
            else f"support.zero_tangent({value})"

    def like(self, expr: str, ans: str) -> str:
        return f"support.batched_like({expr}, {ans}, _batch)" if self.batched \
            else f"support.tangent_like({expr}, {ans})"

    # ----- naming -----------------------------------------------------------------------
    def dot(self, var: str) -> str:
        name = self.dot_names.get(var)
        if name is None:
            name = f"{var}_dot"
            while name in self.a.locals:
                name += "_"
            self.dot_names[var] = name
        return name

    def operand_dot(self, atom):
        """The tangent of an operand, or None when it has none (inactive: zero)."""
        return self.dot(atom.id) if self.a.is_active_atom(atom) else None

    # ----- statements -------------------------------------------------------------------
    def forward_assign(self, s) -> Lines:
        out = Lines()
        target = s.targets[0].id
        op = self.a.op(s)
        if self.only_compared(s):
            out.add(f"{target} = support.scalar_{op.prim.name}({unparse(op.args[0])})")
            return out
        if id(s) in self.a.shared_updates:
            where = f"{self.parsed.filename}:{self.line(s)}"
            out.add(f"support.check_rebind({target}, {where!r})")
        if op.kind == "user":
            return self.tangent_user(s, op, target)
        if op.kind == "derivative" and target in self.a.active:
            return self.tangent_user(s, op, target)
        if op.kind == "kernel" and target in self.a.active:
            return self.tangent_kernel(op, target)
        if target not in self.a.active:
            out.add(f"{target} = {self.forward_value(s.value, op, target)}")
            return out
        reads_itself = any(isinstance(n, gast.Name) and n.id == target
                           for part in op.args + [k.value if isinstance(k, gast.keyword) else k
                                                  for k in op.params]
                           for n in gast.walk(part))
        ans = target
        if reads_itself:
            ans = f"{target}_new"
            while ans in self.a.locals:
                ans += "_"
        out.add(f"{ans} = {self.forward_value(s.value, op, target)}")
        out.add(f"{self.dot(target)} = {self.tangent_value(s, op, ans)}")
        if reads_itself:
            out.add(f"{target} = {ans}")
        return out

    def tangent_value(self, s, op, ans) -> str:
        """The tangent of ``ans = <op>`` as one expression."""
        dots = [self.operand_dot(a) for a in op.args]
        if op.kind == "prim":
            return self.tangent_prim(s, op, ans, dots)
        if op.kind == "copy":
            return dots[0] or self.zero(ans)
        if op.kind == "index" and dots[0] is not None:
            if self.batched:
                return self.like(f"support.batched_index({dots[0]}, "
                                 f"{key_source(op.params[0])})", ans)
            value = f"{dots[0]}[{key_source(op.params[0])}]"
            if getattr(s.value, "pb_numpy_scalar", False):
                return f"support.numpy_scalar({value})"
            return value
        if op.kind == "pack" and any(dots):
            items = [d or self.zero(unparse(a))
                     for d, a in zip(dots, op.args, strict=True)]
            opening, closing = ("[", "]") if isinstance(s.value, gast.List) else ("(", ")")
            return opening + "".join(i + ", " for i in items) + closing
        if op.kind == "append" and any(dots):
            items, value = [d or self.zero(unparse(a))
                            for d, a in zip(dots, op.args, strict=True)]
            return f"support.append({items}, {value})"
        if op.kind == "join" and dots[0] is not None:
            join = "batched_join" if self.batched else "join"
            return f"support.{join}({dots[0]}, {', '.join(self.keywords(op))})"
        if op.kind in _STRUCTURAL and any(dots):
            return self.tangent_structural(op, dots)
        if op.kind in _FOLLOWED and any(dots):   # a kind added to the reverse mode only
            raise error_at(self.parsed, s, f"forward mode does not differentiate "
                           f"{op.label or op.kind} yet", "What to do: use reverse mode "
                           "(pb.grad, pb.vjp, pb.jacrev) for this function.")
        return self.zero(ans)   # an inactive value given to an active name

    def tangent_structural(self, op, dots) -> str:
        """Containers: the tangent is the same container operation applied to the
        operands' tangents (a zero tangent for an operand without one)."""
        t = [d or self.zero(unparse(a)) for d, a in zip(dots, op.args, strict=True)]
        keys = [key_source(k) for k in op.params]
        if op.kind == "dict":
            return "{" + ", ".join(f"{k}: {v}" for k, v in zip(keys, t, strict=True)) + "}"
        if op.kind == "setitem":   # an array's tangent is copied: tangents may be shared
            helper = "batched_setitem_tangent" if self.batched else "setitem_tangent"
            return f"support.{helper}({t[0]}, {keys[0]}, {t[1]})"
        if op.kind == "get":
            return f"support.get({t[0]}, {keys[0]}, {t[1]})"
        if op.kind == "without":
            return f"support.without({t[0]}, {keys[0]})"
        if op.kind == "extend":
            return f"support.extend({t[0]}, {t[1]})"
        return f"support.{op.kind}({t[0]})"   # values, items

    def tangent_prim(self, s, op, ans, dots) -> str:
        prim = op.prim
        if not any(dots) or prim.vjps is None:
            return self.zero(ans)
        operands = [self.operand(a) for a in op.args]
        params = self.keywords(op)
        if prim.jvp_from_scalar:
            return self.tangent_elementwise(op, ans, dots, operands)
        if prim.jvp is not None:
            tangents = "(" + "".join(f"{d}, " for d in dots) + ")"
            arguments = ", ".join([tangents, ans] + operands + params)
            if self.batched:   # the rule once per direction
                return f"support.batched_joint(jvp.{prim.name}, {arguments})"
            return self.like(f"jvp.{prim.name}({arguments})", ans)
        if prim.jvps is None:
            raise error_at(self.parsed, s, f"{op.label or prim.name}: the primitive "
                           f"{prim.name!r} has no JVP rule, so forward mode cannot "
                           "differentiate it", "What to do: use reverse mode (pb.grad, "
                           "pb.vjp, pb.jacrev), or add its jvps= to runtime/primitives.py.")
        parts = []
        structured = not self.batched and _linear_rules(prim)
        for i, d in enumerate(dots):
            if d is None or i >= len(prim.jvps) or prim.jvps[i] is None:
                continue
            if structured:   # linear in this operand: the op itself, on its tangent
                namespace = "npops" if op.numpy else "ops"
                swapped = [d if k == i else o for k, o in enumerate(operands)]
                parts.append(f"{namespace}.{prim.name}({', '.join(swapped + params)})")
                continue
            arguments = ", ".join([d, ans] + operands + params)
            if self.batched:   # the rule once per direction
                parts.append(f"support.batched_rule(jvp.{prim.name}_{i}, {arguments})")
            else:
                parts.append(f"jvp.{prim.name}_{i}({arguments})")
        if not parts:
            return self.zero(ans)
        return self.like(" + ".join(parts), ans)

    def tangent_elementwise(self, op, ans, dots, operands) -> str:
        """The scalar derivatives of the table, each operand's tangent in place of ``g``."""
        parts = []
        for i, d in enumerate(dots):
            formula = op.prim.scalar_vjps[i]
            if d is None or formula is None:
                continue
            bindings = {"g": _PLACEHOLDER, "ans": ans, "x": operands[0],
                        "y": operands[1] if len(operands) > 1 else None}
            if self.batched:   # ones after the batch axis: it broadcasts against ans
                d = f"support.lift({d}, {ans})"
            source = doubled(numpy_source(substitute(formula, bindings)))
            parts.append(source.replace(_PLACEHOLDER, d))
        if not parts:
            return self.zero(ans)
        total = _sum_source(parts)
        if self.batched or sum(isinstance(a, gast.Name) for a in op.args) > 1:   # broadcast
            return self.like(total, ans)
        return total

    def tangent_kernel(self, op, target) -> Lines:
        """``fusedK = kernel_K_tangent(*inputs, *input_dots)``: one fused pass computing the
        run's live values and their tangents (``fusedK[i]`` as before), then ``fusedK_dot``,
        the tuple of the live values' tangents; a trailing reduction's tangent is its JVP
        rule applied to the reduced value's tangent (also a kernel output)."""
        out = Lines()
        kernel = op.callee
        active = [a.id for a in op.args if self.a.is_active_atom(a)]
        made = tangent_kernel(kernel, active)
        self.tangent_kernels.append(made)
        args = [unparse(a) for a in op.args] + [self.dot(a) for a in active]
        out.add(f"{target} = {made.name}({', '.join(args)})")
        items = []
        for k, position in enumerate(made.dot_positions):
            if position is None:   # the reduction: its rule over the reduced value's tangent
                result, _, kind = kernel.reduction
                ans = f"{target}[{k}]"
                operand = f"{target}[{made.operand_position}]" \
                    if made.operand_position is not None else "None"
                items.append(self.like(f"jvp.{kind}_0({target}[{made.reduced_dot}], {ans}, "
                                       f"{operand})", ans))
            else:
                items.append(f"{target}[{position}]")
        out.add(f"{self.dot(target)} = ({''.join(i + ', ' for i in items)})")
        return out

    def tangent_user(self, s, op, target) -> Lines:
        """``pair = g_10.tangent(x, w, x_dot)``, then the value and its tangent (an
        inactive call runs the callee's variant with no tangent and keeps the value)."""
        out = Lines()
        active = target in self.a.active
        mask = tuple(active and self.a.is_active_atom(a) for a in op.args)
        args = (["_batch"] if self.batched else []) + [unparse(a) for a in op.args]
        args += [self.dot(a.id) for a, m in zip(op.args, mask, strict=True) if m]
        # a nested derivative's rule takes a batch of tangents by its own method
        method = "batched_tangent" if op.kind == "derivative" and self.batched else "tangent"
        call = f"{self.callee_ref(op.callee, mask)}.{method}({', '.join(args)})"
        if not active:
            out.add(f"{target} = {call}[0]")
            return out
        pair = self.fresh("pair")
        while pair in self.a.locals:
            pair = self.fresh("pair")
        out.add(f"{pair} = {call}")
        out.add(f"{target} = {pair}[0]")
        dot = f"{pair}[1]" if any(mask) else self.zero(target)
        out.add(f"{self.dot(target)} = {dot}")
        return out

    def forward_if(self, s) -> Lines:
        out = Lines()
        out.add(f"if {unparse(s.test)}:")
        out.extend(self.forward_block(s.body) or self._pass(), 1)
        orelse = self.forward_block(s.orelse)
        if orelse:
            out.add("else:")
            out.extend(orelse, 1)
        return out

    def forward_while(self, s) -> Lines:
        out = Lines()
        out.add(f"while {unparse(s.test)}:")
        out.extend(self.forward_block(s.body) or self._pass(), 1)
        return out

    def forward_for(self, s) -> Lines:
        out = Lines()
        target = s.target.id
        out.add(f"for {target} in {unparse(s.iter)}:")
        if target in self.a.active:   # the target is an int of the range: no tangent
            out.add(f"{self.dot(target)} = {self.zero(target)}", 1)
        out.extend(self.forward_block(s.body) or self._pass(), 1)
        return out

    def forward_return(self, s) -> Lines:
        out = Lines()
        value = s.value
        items = value.elts if isinstance(value, gast.Tuple) else [value]
        dots = []
        for item in items:
            if self.a.is_active_atom(item):
                dots.append(self.dot(item.id))
            else:
                dots.append(self.zero(unparse(item)))
        result_dot = ("(" + "".join(d + ", " for d in dots) + ")"
                      if isinstance(value, gast.Tuple) else dots[0])
        out.add(f"return ({unparse(value)}, {result_dot})")
        return out

    # ----- whole function ---------------------------------------------------------------
    def source(self, name: str) -> str:
        params = self.a.params
        given = [p for p, m in zip(params, self.mask, strict=True) if m]
        body = Lines()
        for p in params:   # an undifferentiated parameter that becomes active in the body
            if p in self.a.active and p not in given:
                body.add(f"{self.dot(p)} = {self.zero(p)}")
        body.extend(self.forward_block(self.fn.body))
        first = ["_batch"] if self.batched else []
        head = f"def {name}_tangent({', '.join(first + params + [self.dot(p) for p in given])}):"
        return "\n".join([head] + body.render(1))


class TangentKernel:
    """A fused run's forward-mode kernel: its live values, then their tangents, computed in
    one pass (a native kernel when the run's kernel could be one; numpy otherwise)."""

    def __init__(self, kernel, active):
        self.kernel, self.name = kernel, f"{kernel.name}_tangent"
        taken = set(kernel.inputs) | set(kernel.outputs) | {t for t, _, _ in kernel.statements}

        def fresh(base):
            name = f"{base}_d"
            while name in taken:
                name += "_"
            taken.add(name)
            return name

        dots = {i: fresh(i) for i in active}
        self.inputs = list(kernel.inputs) + [dots[i] for i in active]
        self.statements, self.steps = [], []
        for target, prim, operands in kernel.statements:
            self.statements.append((target, kernel.formula(prim, operands)))
            self.steps.append((target, prim.name, tuple(operands)))
            parts = []
            for i, o in enumerate(operands):
                rule = prim.scalar_vjps[i] if i < len(prim.scalar_vjps) else None
                if o in dots and rule is not None:
                    parts.append(substitute(rule, {
                        "g": dots[o], "ans": target, "x": operands[0],
                        "y": operands[1] if len(operands) > 1 else None}))
            if parts:
                dots[target] = fresh(target)
                expression = " + ".join(f"({p})" for p in parts) if len(parts) > 1 \
                    else parts[0]
                self.statements.append((dots[target], expression))
                read = tuple(n for n in formula_names(expression) if n in taken)
                self.steps.append((dots[target], "add", read))
        live = list(kernel.outputs[:kernel.live])
        reduction = kernel.reduction
        self.outputs = list(live)   # the live values keep their positions
        self.dot_positions = []     # per live value: where its tangent is (None: reduction)
        self.zero = {}              # output -> the value it is a zero tangent of
        self.operand_position = self.reduced_dot = None
        for value in live:
            if reduction is not None and value == reduction[0]:
                self.dot_positions.append(None)
                continue
            self.dot_positions.append(len(self.outputs))
            self.outputs.append(dots.get(value) or self._zero(value, fresh))
        if reduction is not None:
            operand = reduction[1]
            self.reduced_dot = len(self.outputs)
            self.outputs.append(dots.get(operand) or self._zero(operand, fresh))
            if reduction[2] in ("norm", "max", "min"):   # their rules read the values
                self.operand_position = len(self.outputs)
                self.outputs.append(operand)
        self.reduction = reduction
        self.value_of = {d: v for v, d in dots.items()}   # a tangent -> its value (shape)

    def _zero(self, value, fresh):
        name = fresh(f"{value}_zero")
        self.zero[name] = value
        return name

    def source(self) -> str:
        """The numpy function and the FusedKernel binding it, for the generated module."""
        from .fuse import _REDUCTION_HELPERS, _span

        kernel = self.kernel
        lines = [f"def {self.name}({', '.join(self.inputs)}):",
                 f'    """Fused forward and tangent of lines {_span(kernel.lines)}."""']
        lines += [f"    {t} = {numpy_source(e)}" for t, e in self.statements]
        if self.reduction is not None:
            helper = _REDUCTION_HELPERS[self.reduction[2]]
            lines.append(f"    {self.reduction[0]} = _kernels.{helper}({self.reduction[1]})")
        results = []
        for k, o in enumerate(self.outputs):
            if o in self.zero:
                results.append(f"support.zero_tangent({self.zero[o]})")
            elif k >= kernel.live and o in self.value_of:   # numpy: of its value's shape
                results.append(f"support.tangent_like({o}, {self.value_of[o]})")
            else:
                results.append(o)
        lines.append(f"    return ({''.join(r + ', ' for r in results)})")
        statements = tuple(self.statements) + tuple(
            (z, "0.0") for z in self.zero)   # the native road computes zeros itself
        program = (tuple(self.inputs), statements, tuple(self.outputs), self.reduction)
        adjoint = ((), tuple(self.outputs), tuple(self.inputs), (),
                   (None,) * len(self.inputs))
        binding = (f"{self.name} = _kernels.FusedKernel(\n"
                   f"    {self.name!r}, {self.name}, None,\n"
                   f"    forward_program={program!r},\n"
                   f"    adjoint_program={adjoint!r},\n"
                   f"    steps={tuple(self.steps)!r},\n)")
        return "\n".join(lines) + "\n\n\n" + binding


def tangent_kernel(kernel, active) -> TangentKernel:
    return TangentKernel(kernel, active)
