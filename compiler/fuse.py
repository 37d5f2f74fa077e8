"""Step 3b, fuse: group runs of elementwise primitives into kernels.

Input: a normalized function.  Output: the same function where each maximal
run (at least two statements) of consecutive elementwise assignments --
``name = <elementwise primitive>(atoms)`` whose primitive has a ``scalar``
formula and a derivative for every operand -- is replaced by

    kernel3 = kernel_3(x, w)        # one call computing the whole run
    h = kernel3[0]                  # each value used after the run
    ...

A following whole-array ``sum``, ``mean``, ``max``, ``min`` or 2-``norm`` of a run
value is absorbed as the kernel's reduction (``REDUCTIONS``).  ``kernel_3`` is a
``Kernel``: the run's statements (for the forward) and, derived symbolically from
the table's ``scalar_vjps``, its adjoint (one pass that recomputes cheap
intermediates, reads saved expensive ones, and returns one gradient per input;
after a max or min, a first pass counts the elements equal to the result).  Both are emitted as plain numpy functions into the
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
import functools
from dataclasses import dataclass, field

import gast

from pullback.runtime import fused

from .analysis import shared_updates
from .calls import describe
from .normalize import assign, local_names, name

# Save-or-recompute: what recomputing one element of an op costs in a native kernel
# (ns, libmvec on this machine class: see NOTES-llvmlite.md and bench/native_kernel.py),
# against what saving it costs (an extra output array written by the forward, first
# touched there, and read back by the adjoint).  Arithmetic is ~0.1 ns: recomputed.
RECOMPUTE_NS = {"exp": 1.1, "log": 1.5, "sqrt": 0.5, "sin": 1.0, "cos": 1.0, "tan": 4.0,
                "tanh": 2.0, "sigmoid": 1.5, "log1p": 2.0, "expm1": 2.0, "power": 6.0}
SAVE_NS = 2.5
MIN_RUN = 2

#: Trailing whole-array reductions a kernel absorbs.  The adjoint's seed for the reduced
#: value ``t`` is written like the primitive's own VJP rule, so both roads give its bits:
#: sum and mean spread the gradient (a mean's is divided by the count at run time), norm
#: is ``t * (g / norm)`` (``_norm_vjp``), and max/min share ``g`` among the elements equal
#: to the result (``_extremum_vjp``; a NaN result equals nothing: 0 / 0 = NaN everywhere).
REDUCTIONS = ("sum", "mean", "max", "min", "norm")
#: The reductions whose gradient reads the reduced values (the adjoint recomputes or saves
#: them like any value a derivative reads).
READS_VALUES = ("max", "min", "norm")


@dataclass
class Kernel:
    """One fused run: SSA statements in the scalar language over its inputs."""

    name: str
    inputs: list                 # input variable names, in call order
    statements: list             # [(target, prim, [operand: name | number])]
    outputs: list                # targets returned by the forward (live-outs, then saved)
    live: int                    # the first ``live`` outputs are read after the run
    lines: list = field(default_factory=list)   # the user's lines of the run
    reduction: tuple | None = None   # (result, operand, kind in REDUCTIONS): trailing reduction

    @property
    def one_pass(self) -> bool:
        """Whether value and gradient can come from one pass: the run's only value
        used afterwards is its sum (or mean), so the adjoint is that sum's (scalar)
        gradient times the gradient for a seed of 1, which the forward can compute.
        (A norm's or max's seed depends on the result, known only after the pass.)"""
        return (self.reduction is not None and self.reduction[2] in ("sum", "mean")
                and self.outputs[:self.live] == [self.reduction[0]])

    def formula(self, prim, operands) -> str:
        """The scalar formula of one statement with its operands substituted."""
        return substitute(prim.scalar, {"x": operands[0],
                                        "y": operands[1] if len(operands) > 1 else None})


def substitute(formula: str, names: dict) -> str:
    """``formula`` (scalar language) with the names of ``names`` replaced by source,
    and arithmetic on literals folded (``pow(x, 2 - 1)`` -> ``pow(x, 1)`` -> ``x``)."""
    return _substituted(formula, tuple((k, None if v is None else str(v))
                                       for k, v in names.items()))


# The string -> string steps below are pure and asked the same questions many times per
# function (W6: 792 substitutions, 164 distinct), so they are memoised.
@functools.lru_cache(maxsize=4096)
def _substituted(formula: str, pairs: tuple) -> str:
    names = dict(pairs)
    tree = ast.parse(formula, mode="eval")

    class Replace(ast.NodeTransformer):
        def visit_Name(self, node):
            if node.id in names and names[node.id] is not None:
                return ast.parse(str(names[node.id]), mode="eval").body
            return node

    return ast.unparse(_Fold().visit(Replace().visit(tree)))


class _Fold(ast.NodeTransformer):
    """Fold literal arithmetic, and ``pow(x, 1)`` to ``x`` (exact in IEEE and numpy)."""

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if isinstance(node.left, ast.Constant) and isinstance(node.right, ast.Constant):
            try:
                value = eval(compile(ast.Expression(node), "<fold>", "eval"))  # literals only
            except ArithmeticError:
                return node
            return ast.copy_location(ast.Constant(value), node)
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        if (isinstance(node.func, ast.Name) and node.func.id == "pow" and len(node.args) == 2
                and isinstance(node.args[1], ast.Constant) and node.args[1].value == 1):
            return node.args[0]
        return node


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
    if not op.elementwise or op.math:   # math.*: in double, a kernel computes in its dtype
        return None
    prim = op.prim
    if not any(isinstance(a, gast.Name) for a in op.args):
        return None   # of literals only (``neg1 = -1``): a constant, not array work
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
        self.numpy_reductions = set()   # results of np.sum(...)-spelled absorbed reductions
        self.parsed, self.fn, self.namer = parsed, fn, namer
        self.locals = local_names(fn)
        self.uses = _uses(fn)
        self.kernels = []
        # ``x += v`` where x may be shared keeps its run-time check: never fused
        self.shared_updates = shared_updates(parsed, fn)

    def block(self, stmts):
        out, run = [], []
        for s in stmts:
            info = None if id(s) in self.shared_updates else _fusible(s, self.parsed,
                                                                        self.locals)
            if info is not None and not self.joins(run, info):
                out.extend(self.flush(run))
                run = []
            if info is not None:
                run.append((s, info))
                continue
            reduction = self.trailing_reduction(s, run)
            out.extend(self.flush(run, reduction))
            run = []
            if reduction is not None:
                continue
            self.nested(s)
            out.append(s)
        out.extend(self.flush(run))
        return out

    def trailing_reduction(self, s, run):
        """``(r, t, kind)`` if ``s`` is ``r = kind(t)`` over all elements (no axis, no
        keepdims; a norm of order 2) of a value the run computes, ``kind`` in REDUCTIONS."""
        if len(run) < MIN_RUN or not isinstance(s, gast.Assign):
            return None
        op = describe(self.parsed, s.value, self.locals)
        if op.kind != "prim" or op.prim.name not in REDUCTIONS or len(op.args) != 1 \
                or not all(_default_parameter(op.prim.name, p) for p in op.params):
            return None
        operand = op.args[0]
        targets = [t for _, (t, _, _) in run]
        result = s.targets[0].id
        if not isinstance(operand, gast.Name) or operand.id not in targets or result in targets \
                or any(result in operands for _, (_, _, operands) in run):
            return None
        if op.numpy:
            self.numpy_reductions.add(result)
        return result, operand.id, op.prim.name

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

    def flush(self, run, reduction=None):
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
        if reduction is not None:
            reads[reduction[1]] = reads.get(reduction[1], 0) + 1
            reduction = (reduction[0], renamed[reduction[1]], reduction[2])
            renamed[reduction[0]] = reduction[0]
        user_name = {new: old for old, new in renamed.items()}
        live = [t for t, _, _ in statements
                if self.uses.get(user_name[t], 0) > reads.get(user_name[t], 0)]
        if reduction is not None:
            live.append(reduction[0])
        referenced = _referenced_by_derivatives(statements, reduction)
        saved = [t for t, prim, _ in statements
                 if RECOMPUTE_NS.get(prim.name, 0.0) > SAVE_NS and t in referenced
                 and t not in live]
        kernel_name = self.namer.fresh("kernel_")
        kernel = Kernel(kernel_name, inputs, statements, live + saved, len(live),
                        lines=[self.line(s) for s, _ in run], reduction=reduction)
        self.kernels.append(kernel)
        call = gast.Call(func=name(kernel_name), args=[name(i) for i in inputs], keywords=[])
        call.pb_kernel = kernel
        result = self.namer.fresh("fused")
        first = run[0][0]
        out = [assign(result, call, first)]
        for k, t in enumerate(live):
            item = gast.Subscript(value=name(result), slice=gast.Constant(value=k, kind=None),
                                  ctx=gast.Load())
            if reduction is not None and t == reduction[0] and t in self.numpy_reductions:
                item.pb_numpy_scalar = True   # np.sum(...): numpy's scalar, not (1,)
            out.append(assign(user_name[t], item, first))
        return out

    def line(self, node) -> int:
        return getattr(node, "lineno", 0) + self.parsed.first_line - 1


def _default_parameter(kind: str, keyword) -> bool:
    """Whether a reduction's parameter leaves it whole-array: only a norm's ``ord=2``."""
    value = keyword.value
    return (kind == "norm" and keyword.arg == "ord" and isinstance(value, gast.Constant)
            and type(value.value) in (int, float) and value.value == 2)


def _lower(spec):
    """Scalar program -> LLVM IR (imports llvmlite only when a native kernel is built)."""
    from .lower import lower

    return lower(spec)


fused.set_lowering(_lower)


@functools.lru_cache(maxsize=4096)
def formula_names(formula: str) -> frozenset:
    return frozenset(n.id for n in ast.walk(ast.parse(formula, mode="eval"))
                     if isinstance(n, ast.Name))


def _referenced_by_derivatives(statements, reduction=None) -> set:
    """Values of the run that its adjoint reads (through any derivative formula, or the
    trailing reduction's gradient)."""
    referenced = set()
    if reduction is not None and reduction[2] in READS_VALUES:
        referenced.add(reduction[1])
    for target, prim, operands in statements:
        bindings = {"ans": target, "x": operands[0],
                    "y": operands[1] if len(operands) > 1 else None}
        for rule, operand in zip(prim.scalar_vjps, operands, strict=True):
            if rule is not None and not _is_number(operand):
                referenced |= {bindings[n] for n in formula_names(rule) if bindings.get(n)}
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
    "pow": "_kernels.power", "fabs": "_kernels.absolute", "sign": "_np.sign",
    "floor": "_np.floor",
    "ceil": "_np.ceil", "round": "_np.round", "max": "_np.maximum", "min": "_np.minimum",
    "sigmoid": "_kernels.sigmoid", "where": "_kernels.where", "spread": "_kernels.spread",
    "count_equal": "_kernels.count_equal",
    # numpy coverage (issue 11 item 5)
    "sinh": "_np.sinh", "cosh": "_np.cosh", "asin": "_np.arcsin", "acos": "_np.arccos",
    "atan": "_np.arctan", "asinh": "_np.arcsinh", "acosh": "_np.arccosh",
    "atanh": "_np.arctanh", "log2": "_np.log2", "log10": "_np.log10", "exp2": "_np.exp2",
    "cbrt": "_np.cbrt", "atan2": "_np.arctan2", "hypot": "_np.hypot",
    "logaddexp": "_np.logaddexp",
}
#: The numpy helper (in runtime/fused.py) computing each trailing reduction as its primitive.
_REDUCTION_HELPERS = {"sum": "total", "mean": "average", "max": "largest", "min": "smallest",
                      "norm": "norm"}


@functools.lru_cache(maxsize=4096)
def numpy_source(expression: str) -> str:
    """A scalar-language expression as numpy code."""
    tree = ast.parse(expression, mode="eval")

    class ToNumpy(ast.NodeTransformer):
        def visit_Call(self, node):
            self.generic_visit(node)
            if isinstance(node.func, ast.Name):   # not a call substituted in (a list's array)
                node.func = ast.parse(NUMPY_FUNCTIONS[node.func.id], mode="eval").body
            return node

    return ast.unparse(ToNumpy().visit(tree))


@functools.lru_cache(maxsize=4096)
def doubled(expression: str) -> str:
    """``x * 2`` and ``2 * x`` as ``support.double(x)``, which adds ``x + x`` where numpy
    does that faster (small arrays, numbers) and multiplies elsewhere: the same bits
    either way (both are exact).  Only for float values: a boolean array doubles to
    integers but adds to booleans."""
    tree = ast.parse(expression, mode="eval")

    class Double(ast.NodeTransformer):
        def visit_BinOp(self, node):
            self.generic_visit(node)
            if not isinstance(node.op, ast.Mult):
                return node
            for this, other in ((node.left, node.right), (node.right, node.left)):
                if isinstance(other, ast.Constant) and type(other.value) in (int, float) \
                        and other.value == 2:
                    double = ast.Attribute(ast.Name("support"), "double", ast.Load())
                    return ast.copy_location(ast.Call(double, [this], []), node)
            return node

    return ast.unparse(Double().visit(tree))


def forward_program(kernel: Kernel) -> tuple:
    """(inputs, statements, outputs, reduction) of the forward in the scalar language;
    ``reduction`` is ``(result, operand, kind)`` for a trailing whole-array reduction,
    ``kind`` in REDUCTIONS (``result`` is then one of the outputs, of shape (1,)), else
    None.  The native road reduces ``operand`` (a norm: its squares, by sum) and finishes
    the value at run time (``FusedKernel._finish``).  The adjoint program treats a mean as
    a sum: the runtime divides a mean's gradient by the count."""
    statements = tuple((t, kernel.formula(prim, operands))
                       for t, prim, operands in kernel.statements)
    return tuple(kernel.inputs), statements, tuple(kernel.outputs), kernel.reduction


def vjp_program(kernel: Kernel) -> tuple:
    """The kernel's VJP in the scalar language, in SSA form.

    Returns ``(grad_params, output_params, input_params, statements, results)``:
    the gradients of the live outputs, the forward's outputs and inputs come in;
    ``statements`` recompute the cheap intermediates the derivatives read and run
    reverse mode over the run with the table's ``scalar_vjps``; ``results`` names
    each input's gradient (None: no gradient flows into it).

    One statement may be outside the per-element language: a trailing max or min
    counts the elements equal to its result, ``ties = count_equal(t, r)``, which the
    native road computes in a first pass over the elements (``runtime.fused``).
    """
    taken = set(kernel.inputs) | set(kernel.outputs) | {t for t, _, _ in kernel.statements}

    def fresh(base):
        candidate, k = base, 1
        while candidate in taken:
            k += 1
            candidate = f"{base}{k}"
        taken.add(candidate)
        return candidate

    statements = []
    known = set(kernel.inputs) | set(kernel.outputs)
    wanted = _referenced_by_derivatives(kernel.statements, kernel.reduction)
    for target, prim, operands in reversed(kernel.statements):   # what recomputing needs
        if target in wanted and target not in known:
            wanted |= {o for o in operands if not _is_number(o)}
    for target, prim, operands in kernel.statements:
        if target in wanted and target not in known:
            statements.append((target, kernel.formula(prim, operands)))
            known.add(target)
    grad = {out: fresh(f"{out}_g") for out in kernel.outputs[:kernel.live]}
    grad_params = tuple(grad.values())
    if kernel.reduction is not None:
        result, operand, _ = kernel.reduction
        seed = _reduction_seed(kernel, grad[result], fresh, statements)
        if operand in grad:
            seed = f"{grad[operand]} + {seed}"
        grad[operand] = fresh(f"{operand}_g")
        statements.append((grad[operand], seed))
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
            new = fresh(f"{operand}_g")
            if operand in grad:
                part = f"{grad[operand]} + {part}"
            statements.append((new, part))
            grad[operand] = new
    results = tuple(grad.get(i) for i in kernel.inputs)
    return grad_params, tuple(kernel.outputs), tuple(kernel.inputs), tuple(statements), results


def reads(kernel: Kernel) -> frozenset:
    """The inputs and outputs whose values the kernel's VJP reads (``fused.program_reads``,
    the one definition); the others it is passed for their shapes only."""
    return fused.program_reads(vjp_program(kernel), kernel.one_pass)


def _reduction_seed(kernel: Kernel, g: str, fresh, statements: list) -> str:
    """The gradient of the reduced value ``t`` given the result's gradient ``g`` (appending
    the tie count a max or min needs to ``statements``): the primitive's VJP rule."""
    result, operand, kind = kernel.reduction
    if kind == "norm":       # _norm_vjp: x * (g / ans)
        return f"{operand} * ({g} / {result})"
    if kind in ("max", "min"):   # _extremum_vjp: g * (mask / count(mask))
        ties = fresh(f"{result}_ties")
        statements.append((ties, f"count_equal({operand}, {result})"))
        return f"{g} * (({operand} == {result}) / {ties})"
    # d sum(t) / dt = 1: spread(g, *inputs) is g over the shape those inputs broadcast
    # to (native: just g)
    return f"spread({g}, {', '.join(_depends_on(kernel, operand))})"


def _depends_on(kernel: Kernel, name: str) -> list:
    """The kernel inputs that ``name`` is computed from."""
    sources = {}
    for target, _, operands in kernel.statements:
        sources[target] = operands
    found, todo = [], [name]
    while todo:
        current = todo.pop()
        for o in sources.get(current, ()):
            if o in sources:
                todo.append(o)
            elif not _is_number(o) and o not in found:
                found.append(o)
    return sorted(found, key=kernel.inputs.index)


def _tuple_source(names) -> str:
    return "(" + "".join(f"{n}, " for n in names) + ")"


def forward_source(kernel: Kernel) -> str:
    inputs, statements, outputs, reduction = forward_program(kernel)
    lines = [f"def {kernel.name}({', '.join(inputs)}):",
             f'    """Fused forward of lines {_span(kernel.lines)}."""']
    lines += [f"    {t} = {numpy_source(e)}" for t, e in statements]
    if reduction is not None:
        helper = _REDUCTION_HELPERS[reduction[2]]
        lines.append(f"    {reduction[0]} = _kernels.{helper}({reduction[1]})")
    lines.append(f"    return {_tuple_source(outputs)}")
    return "\n".join(lines)


def adjoint_source(kernel: Kernel) -> str:
    """The kernel's VJP as numpy: ``(output gradients, forward outputs, *inputs)`` ->
    one gradient per input (None where none flows)."""
    grads, outputs, inputs, statements, results = vjp_program(kernel)
    lines = [f"def {kernel.name}_vjp(grads, outputs, {', '.join(inputs)}):",
             f'    """Fused adjoint of lines {_span(kernel.lines)}."""',
             f"    {_tuple_source(grads)} = grads",
             f"    {_tuple_source(outputs)} = outputs"]
    lines += [f"    {t} = {numpy_source(e)}" for t, e in statements]
    lines.append(f"    return {_tuple_source(r or 'None' for r in results)}")
    return "\n".join(lines)


def wrapper_source(kernel: Kernel) -> str:
    """The statement binding ``kernel_k`` to a FusedKernel (numpy functions + programs)."""
    return (f"{kernel.name} = _kernels.FusedKernel(\n"
            f"    {kernel.name!r}, {kernel.name}, {kernel.name}_vjp,\n"
            f"    forward_program={forward_program(kernel)!r},\n"
            f"    adjoint_program={vjp_program(kernel)!r},\n"
            f"    steps={steps(kernel)!r},\n"
            + (f"    with_gradient={kernel.name}_with_gradient,\n"
               f"    gradient_program={gradient_program(kernel)!r},\n" if kernel.one_pass else "")
            + ")")


def gradient_program(kernel: Kernel) -> tuple | None:
    """For a one-pass kernel: ``(inputs, statements, gradients, reduction)``: the
    forward and the adjoint for a seed of 1 as one SSA program; ``gradients`` names
    each input's gradient (None: none flows)."""
    if not kernel.one_pass:
        return None
    inputs, forward, _, reduction = forward_program(kernel)
    grads, _, _, adjoint, results = vjp_program(kernel)
    defined = {t for t, _ in forward}
    statements = list(forward) + [(grads[0], "1.0")]
    statements += [(t, e) for t, e in adjoint if t not in defined]
    return inputs, tuple(statements), results, reduction


def value_and_gradient_source(kernel: Kernel) -> str:
    """The numpy version of the one-pass kernel: the forward, then the adjoint for 1."""
    return "\n".join([
        f"def {kernel.name}_with_gradient({', '.join(kernel.inputs)}):",
        f'    """Fused value and gradient of lines {_span(kernel.lines)} (seed 1)."""',
        f"    outputs = {kernel.name}({', '.join(kernel.inputs)})",
        "    seed = _np.ones_like(outputs[0])",
        f"    return outputs + {kernel.name}_vjp((seed, ), outputs, {', '.join(kernel.inputs)})",
    ])


def steps(kernel: Kernel) -> tuple:
    """``(target, primitive name, operands)`` per statement: what the kernel does, in the
    primitive table's terms (the runtime falls back to these for irregular shapes)."""
    return tuple((t, prim.name, tuple(operands)) for t, prim, operands in kernel.statements)


def _span(lines) -> str:
    lines = [n for n in lines if n]
    if not lines:
        return "?"
    return f"{min(lines)}-{max(lines)}" if min(lines) != max(lines) else str(lines[0])
