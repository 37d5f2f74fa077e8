"""Step 3b, fuse: group runs of elementwise primitives into kernels.

Input: a normalized function.  Output: the same function where each maximal
run (at least two statements) of consecutive elementwise assignments --
``name = <elementwise primitive>(atoms)`` whose primitive has a ``scalar``
formula and a derivative for every operand -- is replaced by

    kernel3 = kernel_3(x, w)        # one call computing the whole run
    h = kernel3[0]                  # each value used after the run
    ...

``kernel_3`` is a ``Kernel``: the run's statements (for the forward) and,
derived symbolically from the table's ``scalar_vjps``, its adjoint (one pass
that recomputes cheap intermediates, reads saved expensive ones, and returns
one gradient per input).  Both are emitted as plain numpy functions into the
generated module, so ``adjoint_source`` shows them; ``runtime.fused`` runs a
native version of the same kernel when one is available and worth it.

Guarantees: a run never contains control flow, assigns each name at most once,
and reads only names and numeric constants; values computed by a run that are
read anywhere else in the function are outputs of the kernel; transcendental
intermediates are saved for the adjoint (recomputing a tanh costs more than
storing it), arithmetic ones are recomputed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

import gast

from .calls import describe
from .normalize import assign, local_names, name

EXPENSIVE = {"exp", "log", "sqrt", "sin", "cos", "tan", "tanh", "sigmoid", "log1p", "expm1",
             "power"}
MIN_RUN = 2


@dataclass
class Kernel:
    """One fused run: SSA statements in the scalar language over its inputs."""

    name: str
    inputs: list                 # input variable names, in call order
    statements: list             # [(target, prim, [operand: name | number])]
    outputs: list                # targets returned by the forward (live-outs, then saved)
    live: int                    # the first ``live`` outputs are read after the run
    lines: list = field(default_factory=list)   # the user's lines of the run

    def formula(self, prim, operands) -> str:
        """The scalar formula of one statement with its operands substituted."""
        return substitute(prim.scalar, {"x": operands[0],
                                        "y": operands[1] if len(operands) > 1 else None})


def substitute(formula: str, names: dict) -> str:
    """``formula`` (scalar language) with the names of ``names`` replaced by source."""
    tree = ast.parse(formula, mode="eval")

    class Replace(ast.NodeTransformer):
        def visit_Name(self, node):
            if node.id in names and names[node.id] is not None:
                return ast.parse(str(names[node.id]), mode="eval").body
            return node

    return ast.unparse(Replace().visit(tree))


def _operand(atom):
    if isinstance(atom, gast.Name):
        return atom.id
    value = atom.value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return repr(value)


def _fusible(stmt, parsed, locals_):
    """(target, prim, operands) if ``stmt`` is an elementwise assignment, else None."""
    if not isinstance(stmt, gast.Assign) or not isinstance(stmt.targets[0], gast.Name):
        return None
    op = describe(parsed, stmt.value, locals_)
    prim = op.prim
    if op.kind != "prim" or prim.scalar is None or prim.vjps is None or op.params:
        return None
    if len(prim.scalar_vjps) != len(op.args):
        return None
    operands = [_operand(a) for a in op.args]
    if any(o is None for o in operands):
        return None
    return stmt.targets[0].id, prim, operands


def _uses(fn) -> dict:
    """How many times each name is read in the whole function."""
    counts = {}
    for node in gast.walk(fn):
        if isinstance(node, gast.Name) and isinstance(node.ctx, gast.Load):
            counts[node.id] = counts.get(node.id, 0) + 1
    return counts


class _Fuser:
    def __init__(self, parsed, fn, namer):
        self.parsed, self.fn, self.namer = parsed, fn, namer
        self.locals = local_names(fn)
        self.uses = _uses(fn)
        self.kernels = []

    def block(self, stmts):
        out, run = [], []
        for s in stmts:
            info = _fusible(s, self.parsed, self.locals)
            if info is not None and not self.joins(run, info):
                out.extend(self.flush(run))
                run = []
            if info is not None:
                run.append((s, info))
                continue
            out.extend(self.flush(run))
            run = []
            self.nested(s)
            out.append(s)
        out.extend(self.flush(run))
        return out

    @staticmethod
    def joins(run, info) -> bool:
        """A statement joins a run unless its target was already assigned or read there."""
        target = info[0]
        return not any(target == t or target in operands for _, (t, _, operands) in run)

    def nested(self, s):
        if isinstance(s, gast.If):
            s.body, s.orelse = self.block(s.body), self.block(s.orelse)
        elif isinstance(s, (gast.While, gast.For)):
            s.body = self.block(s.body)

    def flush(self, run):
        if len(run) < MIN_RUN:
            return [s for s, _ in run]
        inputs, reads, renamed, statements = [], {}, {}, []
        for _, (target, prim, operands) in run:
            for o in operands:
                reads[o] = reads.get(o, 0) + 1
                if not _is_number(o) and o not in renamed and o not in inputs:
                    inputs.append(o)
            operands = [renamed.get(o, o) for o in operands]
            # inside the kernel a value keeps its user's name unless that name is
            # also an input (``total = total + x``): then the new value is renamed
            renamed[target] = f"{target}_new" if target in inputs else target
            statements.append((renamed[target], prim, operands))
        user_name = {new: old for old, new in renamed.items()}
        live = [t for t, _, _ in statements
                if self.uses.get(user_name[t], 0) > reads.get(user_name[t], 0)]
        referenced = _referenced_by_derivatives(statements)
        saved = [t for t, prim, _ in statements
                 if prim.name in EXPENSIVE and t in referenced and t not in live]
        kernel_name = self.namer.fresh("kernel_")
        kernel = Kernel(kernel_name, inputs, statements, live + saved, len(live),
                        lines=[self.line(s) for s, _ in run])
        self.kernels.append(kernel)
        call = gast.Call(func=name(kernel_name), args=[name(i) for i in inputs], keywords=[])
        call.pb_kernel = kernel
        result = self.namer.fresh("fused")
        first = run[0][0]
        out = [assign(result, call, first)]
        for k, t in enumerate(live):
            item = gast.Subscript(value=name(result), slice=gast.Constant(value=k, kind=None),
                                  ctx=gast.Load())
            out.append(assign(user_name[t], item, first))
        return out

    def line(self, node) -> int:
        return getattr(node, "lineno", 0) + self.parsed.first_line - 1


def _formula_names(formula: str) -> set:
    return {n.id for n in ast.walk(ast.parse(formula, mode="eval")) if isinstance(n, ast.Name)}


def _referenced_by_derivatives(statements) -> set:
    """Values of the run that its adjoint reads (through any derivative formula)."""
    referenced = set()
    for target, prim, operands in statements:
        bindings = {"ans": target, "x": operands[0],
                    "y": operands[1] if len(operands) > 1 else None}
        for rule, operand in zip(prim.scalar_vjps, operands, strict=True):
            if rule is not None and not _is_number(operand):
                referenced |= {bindings[n] for n in _formula_names(rule) if bindings.get(n)}
    return referenced


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def fuse(parsed, fn, namer) -> list:
    """Fuse elementwise runs of ``fn`` in place; returns the kernels made."""
    fuser = _Fuser(parsed, fn, namer)
    fn.body = fuser.block(fn.body)
    return fuser.kernels


# ----- kernel sources (numpy) ---------------------------------------------------------------

NUMPY_FUNCTIONS = {
    "exp": "_np.exp", "log": "_np.log", "sqrt": "_np.sqrt", "sin": "_np.sin", "cos": "_np.cos",
    "tan": "_np.tan", "tanh": "_np.tanh", "log1p": "_np.log1p", "expm1": "_np.expm1",
    "pow": "_np.power", "fabs": "_np.abs", "sign": "_np.sign", "floor": "_np.floor",
    "ceil": "_np.ceil", "round": "_np.round", "max": "_np.maximum", "min": "_np.minimum",
    "sigmoid": "_kernels.sigmoid", "where": "_kernels.where",
}


def numpy_source(expression: str) -> str:
    """A scalar-language expression as numpy code."""
    tree = ast.parse(expression, mode="eval")

    class ToNumpy(ast.NodeTransformer):
        def visit_Call(self, node):
            self.generic_visit(node)
            node.func = ast.parse(NUMPY_FUNCTIONS[node.func.id], mode="eval").body
            return node

    return ast.unparse(ToNumpy().visit(tree))


def _zero_grads(statements):
    return {t: None for t, _, _ in statements}


def forward_source(kernel: Kernel) -> str:
    lines = [f"def {kernel.name}({', '.join(kernel.inputs)}):",
             f'    """Fused forward of lines {_span(kernel.lines)}."""']
    for target, prim, operands in kernel.statements:
        lines.append(f"    {target} = {numpy_source(kernel.formula(prim, operands))}")
    lines.append(f"    return ({''.join(o + ', ' for o in kernel.outputs)})")
    return "\n".join(lines)


def adjoint_source(kernel: Kernel) -> str:
    """The kernel's VJP: ``(output gradients, forward outputs, *inputs) -> input gradients``.

    Reverse-mode over the run's statements with the table's scalar derivatives;
    gradients of outputs arrive as a list (None entries are zero).
    """
    name_ = f"{kernel.name}_vjp"
    lines = [f"def {name_}(grads, outputs, {', '.join(kernel.inputs)}):",
             f'    """Fused adjoint of lines {_span(kernel.lines)}."""']
    lines.append(f"    ({''.join(o + ', ' for o in kernel.outputs)}) = outputs")
    known = set(kernel.inputs) | set(kernel.outputs)
    wanted = _referenced_by_derivatives(kernel.statements)
    for target, prim, operands in reversed(kernel.statements):   # what recomputing needs
        if target in wanted and target not in known:
            wanted |= {o for o in operands if not _is_number(o)}
    for target, prim, operands in kernel.statements:
        if target in wanted and target not in known:
            lines.append(f"    {target} = {numpy_source(kernel.formula(prim, operands))}")
            known.add(target)
    grad = {}
    for k, out in enumerate(kernel.outputs[:kernel.live]):
        lines.append(f"    {out}_g = grads[{k}]")
        grad[out] = f"{out}_g"
    for target, prim, operands in reversed(kernel.statements):
        g = grad.get(target)
        if g is None:
            continue
        for i, operand in enumerate(operands):
            rule = prim.scalar_vjps[i]
            if rule is None or _is_number(operand):
                continue
            part = substitute(rule, {"g": g, "ans": target, "x": operands[0],
                                     "y": operands[1] if len(operands) > 1 else None})
            part = numpy_source(part)
            if operand in grad:
                lines.append(f"    {operand}_g = _kernels.add({operand}_g, {part})")
            else:
                lines.append(f"    {operand}_g = {part}")
                grad[operand] = f"{operand}_g"
    results = [grad.get(i, "None") for i in kernel.inputs]
    lines.append(f"    return ({''.join(r + ', ' for r in results)})")
    return "\n".join(lines)


def _span(lines) -> str:
    lines = [n for n in lines if n]
    if not lines:
        return "?"
    return f"{min(lines)}-{max(lines)}" if min(lines) != max(lines) else str(lines[0])
