"""Step 5, reverse: a normalized function -> its forward-with-stack and its adjoint.

Given the analysis, emits two Python functions as source lines:

``<f>_forward(_stack, *params)`` runs the user's computation and pushes, in
this order of need: the old value of a needed variable right before it is
overwritten; ``True``/``False`` after each branch whose adjoint does anything;
the trip count after each ``while``; the range after each ``for``; finally one
tuple with the values the adjoint starts from.  It returns the result.

``<f>_adjoint(_stack, result_grad)`` pops that tuple, then walks the body in
reverse: one statement per VJP rule call (``x_grad = support.accumulate(x_grad,
vjp.multiply_0, y_grad, y, x, w)``), popping overwritten values right after the
statement that overwrote them is reversed, mirroring ``if`` with the popped
branch, ``while`` with a loop over the popped trip count and ``for`` over the
reversed range.  It returns one gradient per parameter (None means zero).

Guarantees: every push has exactly one pop, on every path; gradients of
inactive variables are never computed; a zero gradient is ``None`` and never
materialised.
"""

from __future__ import annotations

import ast
import dis
import functools

import gast

from pullback.runtime.support import SCALAR_REDUCTIONS

from .analysis import maybe_undefined
from .calls import _resolve
from .errors import error_at
from .fuse import doubled, formula_names, numpy_source, substitute
from .normalize import GENERATED_NAMES
from .fuse import reads as kernel_reads


SUPPORT_METHODS = {"asscalar", "asnumpy", "item", "detach", "wait_to_read", "keys"}
OPS_METHODS = {"argmax", "argmin", "zeros_like", "ones_like"}


def unparse(node) -> str:
    return ast.unparse(gast.gast_to_ast(node))


def key_source(node) -> str:
    """An index expression as a standalone Python expression (slices spelled out)."""
    if isinstance(node, gast.Slice):
        parts = ["None" if p is None else unparse(p) for p in (node.lower, node.upper, node.step)]
        return f"slice({', '.join(parts)})"
    if isinstance(node, gast.Tuple):
        return "(" + "".join(key_source(e) + ", " for e in node.elts) + ")"
    return unparse(node)


@functools.lru_cache(maxsize=None)
def _loads_parameter(rule, index: int) -> bool:
    """Whether the function ``rule`` may read its positional parameter ``index`` (its
    bytecode loads it, or cannot be inspected): a rule that never loads ``ans`` can be
    passed None for it."""
    code = getattr(rule, "__code__", None)
    if code is None or index >= code.co_argcount or code.co_flags & 0x0C \
            or "locals" in code.co_names or "vars" in code.co_names:
        return True
    name = code.co_varnames[index]
    if name in code.co_cellvars:
        return True
    for instruction in dis.get_instructions(code):
        if instruction.opname.startswith("LOAD") or instruction.opname.startswith("DELETE"):
            value = instruction.argval
            if value == name or (isinstance(value, tuple) and name in value):
                return True
    return False


class Lines:
    """Indented source lines."""

    def __init__(self):
        self.items = []

    def add(self, text: str, depth: int = 0) -> None:
        self.items.append((depth, text))

    def extend(self, other: "Lines", depth: int = 0) -> None:
        self.items.extend((d + depth, t) for d, t in other.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def render(self, base: int) -> list:
        return ["    " * (base + d) + t for d, t in self.items]


class ReverseTransform:
    """Builds the forward and adjoint sources of one normalized function."""

    def __init__(self, parsed, fn, analysis, callee_ref):
        self.parsed, self.fn, self.a = parsed, fn, analysis
        self.callee_ref = callee_ref   # (user function, active mask) -> name in generated code
        self.counter = 0
        self.known_none = set()   # gradients just reset to None by the statement in hand
        self.grad_names = {}
        self.given = set()   # names made here (grads, fresh temporaries)
        self.reverse_cache = {}
        self.loads = {}   # how often the function reads each name
        self.tested = {}   # ... as the test of an ``if`` or ``while``
        self.compared = {}   # name -> targets of the comparisons that read it
        self.kernel_results = {}   # fusedK -> its kernel (a tuple of that many outputs)
        self.copied_values = set()   # ids of the values of writes that copy the array first
        for n in gast.walk(fn):
            if isinstance(n, gast.Assign) and id(n) in analysis.copied_writes:
                self.copied_values.add(id(n.value))
            if isinstance(n, gast.Assign) and id(n) in analysis.ops \
                    and analysis.ops[id(n)].kind == "kernel":
                self.kernel_results[n.targets[0].id] = analysis.ops[id(n)].callee
            if isinstance(n, gast.Name) and isinstance(n.ctx, gast.Load):
                self.loads[n.id] = self.loads.get(n.id, 0) + 1
            elif isinstance(n, (gast.If, gast.While)) and isinstance(n.test, gast.Name):
                self.tested[n.test.id] = self.tested.get(n.test.id, 0) + 1
            elif isinstance(n, gast.Assign) and isinstance(n.value, gast.Compare):
                for operand in (n.value.left, *n.value.comparators):
                    if isinstance(operand, gast.Name):
                        self.compared.setdefault(operand.id, []).append(n.targets[0].id)

    # ----- naming -----------------------------------------------------------------------
    def grad(self, var: str) -> str:
        name = self.grad_names.get(var)
        if name is None:
            name = self.unused(f"{var}_grad")
            self.grad_names[var] = name
        return name

    def unused(self, name: str) -> str:
        """``name``, or it with trailing underscores: no user local, no generated name
        (``result_grad`` is the adjoint's head), no name given out before."""
        taken = self.a.locals | GENERATED_NAMES | self.given
        while name in taken:
            name += "_"
        self.given.add(name)
        return name

    def fresh(self, base: str) -> str:
        while True:
            self.counter += 1
            name = f"{base}{self.counter}"
            if name not in self.a.locals and name not in self.given:
                self.given.add(name)
                return name

    # ----- forward ----------------------------------------------------------------------
    def forward_block(self, stmts) -> Lines:
        out = Lines()
        skip = False
        for k, s in enumerate(stmts):
            if skip:
                skip = False
                continue
            following = stmts[k + 1] if k + 1 < len(stmts) else None
            scalar = self.scalar_reduction(s, following)
            if scalar is not None:
                out.extend(scalar)
                skip = True
                continue
            handler = getattr(self, f"forward_{type(s).__name__.lower()}")
            out.extend(handler(s))
        return out

    def scalar_reduction(self, s, following):
        """``r = ops.norm(b); v = support.asscalar(r)`` as ``v = support.scalar_norm(b)``
        when ``r`` is a whole-array reduction used only there and carries no gradient
        (conditions of loops and branches); else None."""
        if not (isinstance(s, gast.Assign) and isinstance(following, gast.Assign)):
            return None
        op, target = self.a.op(s), s.targets[0].id
        call = following.value
        if not (self.plain_reduction(s) and self.loads.get(target) == 1
                and isinstance(call, gast.Call) and not call.args and not call.keywords
                and isinstance(call.func, gast.Attribute) and call.func.attr == "asscalar"
                and isinstance(call.func.value, gast.Name) and call.func.value.id == target):
            return None
        out = Lines()
        value = following.targets[0].id
        if id(following) in self.a.pushes:
            out.add(self.push(value, following))
        out.add(f"{value} = support.scalar_{op.prim.name}({unparse(op.args[0])})")
        return out

    def only_compared(self, s) -> bool:
        """Whether ``s`` is a whole-array reduction, carrying no gradient, whose every use
        is a comparison that only decides an ``if`` or ``while`` (``np.linalg.norm(b) <
        1000`` in numpy code): it may then be a number rather than a one-element array."""
        target = s.targets[0].id
        uses = self.compared.get(target, [])
        return (self.plain_reduction(s) and uses and len(uses) == self.loads.get(target)
                and all(self.tested.get(t, 0) == self.loads.get(t) for t in uses))

    def plain_reduction(self, s) -> bool:
        """``r = <reduction>(x)`` over the whole array that carries no gradient and that
        the adjoint never reads: its value may be computed as a number."""
        op, target = self.a.op(s), s.targets[0].id
        return (op.kind == "prim" and op.prim.name in SCALAR_REDUCTIONS and not op.params
                and len(op.args) == 1 and target not in self.a.active
                and target not in self.a.needed and id(s) not in self.a.pushes)

    def forward_assign(self, s) -> Lines:
        out = Lines()
        target = s.targets[0].id
        op = self.a.op(s)
        if id(s) in self.a.pushes:
            out.add(self.push(target, s, op))
        if self.only_compared(s):
            out.add(f"{target} = support.scalar_{op.prim.name}({unparse(op.args[0])})")
            return out
        if id(s) in self.a.shared_updates:
            where = f"{self.parsed.filename}:{self.line(s)}"
            out.add(f"support.check_rebind({target}, {where!r})")
        for checked in self.a.leaf_checks.get(id(s), ()):
            where = f"{self.parsed.filename}:{self.line(s)}"
            out.add(f"support.leaf({checked}, {where!r})")
        if id(s) in self.a.key_iterations:   # for k in d: the dict's keys
            out.add(f"{target} = support.nth_key({unparse(s.value.value)}, "
                    f"{key_source(s.value.slice)})")
            return out
        out.add(f"{target} = {self.forward_value(s.value, op, target)}")
        return out

    def push(self, name: str, node, op=None) -> str:
        """Saving the old value of ``name`` before ``node`` overwrites it: the value, or,
        when the adjoint reads only its shape and dtype (``analysis.shape_only``), a
        stand-in without data (``support.like``); before an item assignment, what it
        overwrites (``support.overwritten``: an array's old items, a container itself)."""
        if name in self.a.shape_only:
            value = f"support.like({name})"
        elif op is not None and op.kind == "setitem":
            value = f"support.overwritten({name}, {key_source(op.params[0])})"
        else:
            value = name
        return f"_stack.push({value}, {self.tag(name, node)})"

    def pop(self, name: str, node, op) -> str:
        """Restoring the value ``push`` saved (an item assignment's old items are put back
        into a copy: ``support.restore``)."""
        popped = f"_stack.pop({self.tag(name, node)})"
        if op.kind == "setitem" and name not in self.a.shape_only:
            popped = f"support.restore({name}, {key_source(op.params[0])}, {popped})"
        return f"{name} = {popped}"

    def forward_value(self, value, op, target) -> str:
        """The right-hand side as the generated forward computes it (on raw arrays)."""
        if op.kind == "user":
            mask = self.a.argument_mask(op.args, target in self.a.active)
            args = ", ".join(unparse(a) for a in op.args)   # keywords and defaults placed
            return f"{self.callee_ref(op.callee, mask)}.forward(_stack, {args})"
        if op.kind == "kernel" and target in self.a.active and op.callee.one_pass:
            # its only result is a sum: compute the gradient in the same pass
            wanted = tuple(self.a.is_active_atom(a) for a in op.args)
            args = ", ".join(unparse(a) for a in op.args)
            return f"{op.callee.name}.with_gradient({wanted!r}, {args})"
        if op.kind == "prim":
            if isinstance(value, (gast.BinOp, gast.UnaryOp)) and op.prim.name != "matmul":
                # an active value is float: doubling it by adding is exact and cheaper
                return doubled(unparse(value)) if target in self.a.active \
                    else unparse(value)
            return self.ops_call(op)
        if op.kind == "join":
            return f"support.join({unparse(op.args[0])}, {', '.join(self.keywords(op))})"
        if op.kind == "get":
            return (f"support.get({unparse(op.args[0])}, {key_source(op.params[0])}, "
                    f"{unparse(op.args[1])})")
        if op.kind in ("values", "items"):
            return f"support.{op.kind}({unparse(op.args[0])})"
        if op.kind == "index" and getattr(value, "pb_numpy_scalar", False):
            return f"support.numpy_scalar({unparse(value)})"
        if op.kind in ("inert", "severs") and isinstance(value, gast.Call):
            return self.inert_call(value)
        if op.kind == "inert" and isinstance(value, gast.Attribute) \
                and value.attr in ("context", "ctx"):   # numpy arrays have no device
            return f"support.context({unparse(value.value)}, {value.attr!r})"
        if op.kind == "setitem":   # in place into an array, a new dict or list
            helper = "setitem_copied" if id(value) in self.copied_values else "setitem"
            items, item = op.args
            return (f"support.{helper}({unparse(items)}, {key_source(op.params[0])}, "
                    f"{unparse(item)})")
        if op.kind == "index" and isinstance(op.args[0], gast.Name) \
                and op.args[0].id in self.a.written:   # a copy, never a view of it
            return f"support.read({op.args[0].id}, {key_source(op.params[0])})"
        return unparse(value)

    def inert_call(self, call) -> str:
        """Calls that carry no gradient, spelled so they work on raw numpy arrays."""
        func = call.func
        args = [unparse(a) for a in call.args]
        args += [f"{k.arg}={unparse(k.value)}" for k in call.keywords]
        if isinstance(func, gast.Attribute) and isinstance(func.value, gast.Name) \
                and func.value.id in self.a.locals:
            receiver = [func.value.id] + args
            if func.attr in SUPPORT_METHODS:
                return f"support.{func.attr}({', '.join(receiver)})"
            if func.attr in OPS_METHODS:
                return f"ops.{func.attr}({', '.join(receiver)})"
            return unparse(call)
        target = _resolve(self.parsed, func)
        if (getattr(target, "__module__", None) or "").startswith("pullback"):
            return f"support.raw({unparse(call)})"
        return unparse(call)

    def ops_call(self, op) -> str:
        parts = [unparse(a) for a in op.args]
        parts += self.keywords(op)
        # numpy's spelling: numpy's 0-d results; math.*: in double precision
        namespace = "npops" if op.numpy else "mathops" if op.math else "ops"
        return f"{namespace}.{op.prim.name}({', '.join(parts)})"

    def keywords(self, op) -> list:
        """An operation's parameters as ``name=source`` arguments."""
        return [f"{k.arg}={self.param_source(k)}" for k in op.params]

    def param_source(self, keyword) -> str:
        return key_source(keyword.value)

    def forward_expr(self, s) -> Lines:
        out = Lines()
        out.add(unparse(s.value))
        return out

    def forward_if(self, s) -> Lines:
        out = Lines()
        record = bool(self.reverse_block(s.body) or self.reverse_block(s.orelse))
        out.add(f"if {unparse(s.test)}:")
        body = self.forward_block(s.body)
        if record:
            body.add(f"_stack.push(True, {self.tag('branch', s)})")
        out.extend(body or self._pass(), 1)
        orelse = self.forward_block(s.orelse)
        if record:
            orelse.add(f"_stack.push(False, {self.tag('branch', s)})")
        if orelse:
            out.add("else:")
            out.extend(orelse, 1)
        return out

    def forward_while(self, s) -> Lines:
        out = Lines()
        record = bool(self.reverse_block(s.body))
        trips = self.trips_name(s)
        if record:
            out.add(f"{trips} = 0")
        out.add(f"while {unparse(s.test)}:")
        body = self.forward_block(s.body)
        if record:
            body.add(f"{trips} += 1")
        out.extend(body or self._pass(), 1)
        if record:
            out.add(f"_stack.push({trips}, {self.tag('trips', s)})")
        return out

    def trips_name(self, s) -> str:
        key = ("trips", id(s))
        if key not in self.grad_names:
            self.grad_names[key] = self.fresh("trips")
        return self.grad_names[key]

    def forward_for(self, s) -> Lines:
        out = Lines()
        record = bool(self.reverse_for_body(s))
        target = s.target.id
        if id(s) in self.a.pushes:
            out.add(self.push(target, s))
        out.add(f"for {target} in {unparse(s.iter)}:")
        out.extend(self.forward_block(s.body) or self._pass(), 1)
        if record:
            out.add(f"_stack.push({unparse(s.iter)}, {self.tag('range', s)})")
        return out

    def forward_return(self, s) -> Lines:
        out = Lines()
        saved = self.saved_names()
        if saved:
            out.add(f"_stack.push(({''.join(n + ', ' for n in saved)}), 'saved')")
        out.add(f"return {unparse(s.value)}")
        return out

    def saved_names(self) -> list:
        return sorted(self.a.needed)

    @staticmethod
    def _pass() -> Lines:
        lines = Lines()
        lines.add("pass")
        return lines

    # ----- adjoint ----------------------------------------------------------------------
    def reverse_block(self, stmts) -> Lines:
        key = id(stmts)
        if key in self.reverse_cache:
            return self.reverse_cache[key][1]
        out = Lines()
        for s in reversed(stmts):
            handler = getattr(self, f"reverse_{type(s).__name__.lower()}")
            out.extend(handler(s))
        self.reverse_cache[key] = (stmts, out)
        return out

    def reverse_expr(self, s) -> Lines:
        return Lines()

    def reverse_return(self, s) -> Lines:
        return Lines()

    def reverse_if(self, s) -> Lines:
        out = Lines()
        body, orelse = self.reverse_block(s.body), self.reverse_block(s.orelse)
        if not (body or orelse):
            return out
        out.add(f"if _stack.pop({self.tag('branch', s)}):")
        out.extend(body or self._pass(), 1)
        if orelse:
            out.add("else:")
            out.extend(orelse, 1)
        return out

    def reverse_while(self, s) -> Lines:
        out = Lines()
        body = self.reverse_block(s.body)
        if body:
            out.add(f"for _ in range(_stack.pop({self.tag('trips', s)})):")
            out.extend(body, 1)
        return out

    def reverse_for_body(self, s) -> Lines:
        """One iteration's adjoint: the body's, then the target's assignment's: the loop
        binds its target to an int of the range, so a gradient that reached the target
        stops there (``for x in range(2)`` over a differentiated ``x``: the loop's ``x`` is
        not the parameter's, whose gradient survives only a loop that runs zero times)."""
        body = self.reverse_block(s.body)
        if s.target.id not in self.a.active:
            return body
        out = Lines()
        out.extend(body)
        out.add(f"{self.grad(s.target.id)} = None")
        return out

    def reverse_for(self, s) -> Lines:
        out = Lines()
        body = self.reverse_for_body(s)
        target = s.target.id
        if body:
            out.add(f"for {target} in reversed(_stack.pop({self.tag('range', s)})):")
            out.extend(body, 1)
        if id(s) in self.a.pushes:
            out.add(f"{target} = _stack.pop({self.tag(target, s)})")
        return out

    def tag(self, what: str, node) -> str:
        """The debug tag of a push/pop pair: what is saved and the user's line."""
        return repr(f"{what}@{self.line(node)}")

    def line(self, node) -> int:
        return getattr(node, "lineno", 0) + self.parsed.first_line - 1

    def reverse_assign(self, s) -> Lines:
        out = Lines()
        target = s.targets[0].id
        op = self.a.op(s)
        pushed = id(s) in self.a.pushes
        active = target in self.a.active
        if not active:
            if pushed:
                out.add(self.pop(target, s, op))
            return out
        g = self.grad(target)
        reads_itself = any(isinstance(n, gast.Name) and n.id == target
                           for a in op.args for n in gast.walk(a))
        self.known_none = set()
        if reads_itself or pushed or op.kind == "user":
            g_out = self.unused(f"{target}_out_grad")
            out.add(f"{g_out} = {g}")
            out.add(f"{g} = None")
            self.known_none.add(g)   # so the rule may assign it instead of adding to it
            g = g_out
            reset = False
        else:
            reset = target in self.a.redefined
        ans = target
        if op.kind == "user":
            # the callee pushed its own frame after the old value was pushed: its
            # adjoint pops that frame first, then the old value comes back
            out.extend(self.rule_user(s, op, g, ans))
            if pushed:
                out.add(f"{target} = _stack.pop({self.tag(target, s)})")
            return out
        if pushed:
            if op.kind == "kernel" or (op.kind == "prim" and self.reads_result(op)):
                ans = self.unused(f"{target}_out")
                out.add(f"{ans} = {target}")
            out.add(self.pop(target, s, op))
        out.extend(getattr(self, f"rule_{op.kind}")(s, op, g, ans))
        if reset:
            out.add(f"{g} = None")
        return out

    def rule_prim(self, s, op, g, ans) -> Lines:
        if op.elementwise:
            return self.rule_elementwise(op, g, ans)
        out = Lines()
        operands = [self.operand(a) for a in op.args]
        params = self.keywords(op)
        if not self.reads_result(op):
            ans = "None"   # no rule reads it (``_loads_parameter``): it need not be kept
        for i, a in enumerate(op.args):
            if not self.a.is_active_atom(a) or not op.prim.vjps or op.prim.vjps[i] is None:
                continue
            arguments = ", ".join([g, ans] + operands + params)
            acc = self.grad(a.id)
            out.add(f"{acc} = support.accumulate({acc}, vjp.{op.prim.name}_{i}, {arguments})")
        return out

    def operand(self, atom) -> str:
        """An operand as a rule reads it: a list or tuple of values (``np.sum([1, a, 2])``)
        as the array numpy made of it."""
        if isinstance(atom, gast.Name) and atom.id in self.a.containers:
            return f"support.as_array({atom.id})"
        return unparse(atom)

    def reads_result(self, op) -> bool:
        """Whether the adjoint of ``op`` reads its result (``ans``): an elementwise one if
        a scalar derivative names it, another if one of its active rules loads it (else
        the rules are passed None for it, and the result need not be kept)."""
        if op.kind != "prim":
            return True
        if not op.elementwise:
            return any(_loads_parameter(rule, 1) for a, rule in zip(op.args, op.prim.vjps or ())
                       if rule is not None and self.a.is_active_atom(a))
        return any(f is not None and "ans" in formula_names(f) and self.a.is_active_atom(a)
                   for f, a in zip(op.prim.scalar_vjps, op.args, strict=True))

    def rule_elementwise(self, op, g, ans) -> Lines:
        """An elementwise VJP inline, from the table's scalar derivative (a one-op kernel)."""
        out = Lines()
        operands = [self.operand(a) for a in op.args]
        bindings = {"g": g, "ans": ans, "x": operands[0],
                    "y": operands[1] if len(operands) > 1 else None}
        parts = []
        for i, a in enumerate(op.args):
            formula = op.prim.scalar_vjps[i]
            if not self.a.is_active_atom(a) or formula is None:
                continue
            part = doubled(numpy_source(substitute(formula, bindings)))
            if any(isinstance(b, gast.Name) for j, b in enumerate(op.args) if j != i):
                part = f"support.unbroadcast({part}, {a.id})"
            acc = self.grad(a.id)
            if acc in self.known_none:
                self.known_none.discard(acc)
                parts.append(f"{acc} = {part}")
            else:
                parts.append(f"{acc} = support.add_grads({acc}, {part})")
        if parts:
            out.add(f"if {g} is not None:")
            for line in parts:
                out.add(line, 1)
        return out

    def rule_copy(self, s, op, g, ans) -> Lines:
        out = Lines()
        a = op.args[0]
        if self.a.is_active_atom(a):
            out.add(f"{self.grad(a.id)} = support.add_grads({self.grad(a.id)}, {g})")
        return out

    def rule_index(self, s, op, g, ans) -> Lines:
        out = Lines()
        v = op.args[0]
        kernel = self.kernel_results.get(v.id) if isinstance(v, gast.Name) else None
        if kernel is not None and self.a.is_active_atom(v):   # its length is known
            acc = self.grad(v.id)
            out.add(f"{acc} = support.item_grad_into({acc}, {g}, {unparse(op.params[0])}, "
                    f"{len(kernel.outputs)})")
        elif self.a.is_active_atom(v):
            acc = self.grad(v.id)
            out.add(f"{acc} = support.index_grad({acc}, {g}, {v.id}, {key_source(op.params[0])})")
        return out

    def rule_pack(self, s, op, g, ans) -> Lines:
        out = Lines()
        for k, a in enumerate(op.args):
            if self.a.is_active_atom(a):
                acc = self.grad(a.id)
                out.add(f"{acc} = support.add_grads({acc}, support.item_grad({g}, {k}))")
        return out

    def rule_append(self, s, op, g, ans) -> Lines:
        out = Lines()
        items, value = op.args
        if self.a.is_active_atom(items):
            acc = self.grad(items.id)
            out.add(f"{acc} = support.add_grads({acc}, support.without_last({g}))")
        if self.a.is_active_atom(value):
            acc = self.grad(value.id)
            out.add(f"{acc} = support.add_grads({acc}, support.item_grad({g}, -1))")
        return out


    def rule_dict(self, s, op, g, ans) -> Lines:
        out = Lines()
        for key, a in zip(op.params, op.args, strict=True):
            if self.a.is_active_atom(a):
                acc = self.grad(a.id)
                out.add(f"{acc} = support.add_grads({acc}, support.item_grad({g}, "
                        f"{key_source(key)}))")
        return out

    def rule_setitem(self, s, op, g, ans) -> Lines:
        out = Lines()
        items, value = op.args
        key = key_source(op.params[0])
        if self.a.is_active_atom(value):
            acc = self.grad(value.id)
            # an array's dtype and the value's shape are read; a container's item is not
            array, shaped = ("None", "None") if self.a.kind(items).container \
                else (unparse(items), value.id)
            out.add(f"{acc} = support.add_grads({acc}, support.setitem_value_grad({g}, "
                    f"{array}, {key}, {shaped}))")
        if self.a.is_active_atom(items):
            acc = self.grad(items.id)
            out.add(f"{acc} = support.add_grads({acc}, support.setitem_grad({g}, {key}))")
        return out

    def rule_get(self, s, op, g, ans) -> Lines:
        out = Lines()
        items, default = op.args
        key = key_source(op.params[0])
        for a, rule in ((items, "get_grad"), (default, "default_grad")):
            if self.a.is_active_atom(a):
                acc = self.grad(a.id)
                out.add(f"{acc} = support.add_grads({acc}, support.{rule}({g}, "
                        f"{unparse(items)}, {key}))")
        return out

    def rule_values(self, s, op, g, ans) -> Lines:
        out = Lines()
        items = op.args[0]
        if self.a.is_active_atom(items):
            acc = self.grad(items.id)
            out.add(f"{acc} = support.add_grads({acc}, support.{op.kind}_grad({g}, "
                    f"{items.id}))")
        return out

    rule_items = rule_values

    def rule_extend(self, s, op, g, ans) -> Lines:
        out = Lines()
        items, more = op.args
        for a, part in ((items, "head"), (more, "tail")):
            if self.a.is_active_atom(a):
                acc = self.grad(a.id)
                out.add(f"{acc} = support.add_grads({acc}, support.{part}_grad({g}, "
                        f"{unparse(items)}))")
        return out

    def rule_without(self, s, op, g, ans) -> Lines:
        out = Lines()
        items = op.args[0]
        if self.a.is_active_atom(items):
            acc = self.grad(items.id)
            out.add(f"{acc} = support.add_grads({acc}, support.without_grad({g}, {items.id}, "
                    f"{key_source(op.params[0])}))")
        return out

    def rule_join(self, s, op, g, ans) -> Lines:
        out = Lines()
        items = op.args[0]
        if self.a.is_active_atom(items):
            acc = self.grad(items.id)
            out.add(f"{acc} = support.add_grads({acc}, support.join_grad({g}, {items.id}, "
                    f"{', '.join(self.keywords(op))}))")
        return out

    def rule_user(self, s, op, g, ans) -> Lines:
        out = Lines()
        mask = self.a.argument_mask(op.args)
        parts = self.fresh("parts")
        out.add(f"{parts} = {self.callee_ref(op.callee, mask)}.adjoint(_stack, {g})")
        for i, a in enumerate(op.args):
            if self.a.is_active_atom(a):
                acc = self.grad(a.id)
                out.add(f"{acc} = support.add_grads({acc}, {parts}[{i}])")
        return out

    def rule_derivative(self, s, op, g, ans) -> Lines:
        """A nested derivative's VJP (``forward_api.derivative_adjoint``): one
        forward-over-reverse run of the inner function, the cotangent as its tangent."""
        mask = tuple(m if isinstance(m, bool) or m.container else True
                     for m in self.a.argument_mask(op.args))
        if not all(isinstance(m, bool) for m in mask):
            raise error_at(self.parsed, s, f"reverse mode differentiates the nested "
                           f"derivative {op.label}() with respect to arrays and numbers "
                           "only", "What to do: pass the container's items as arguments.")
        out = Lines()
        parts = self.fresh("parts")
        args = "".join(f", {unparse(a)}" for a in op.args)
        out.add(f"{parts} = {self.callee_ref(op.callee, mask)}.vjp({g}{args})")
        for i, a in enumerate(op.args):
            if self.a.is_active_atom(a):
                acc = self.grad(a.id)
                out.add(f"{acc} = support.add_grads({acc}, {parts}[{i}])")
        return out

    def rule_kernel(self, s, op, g, ans) -> Lines:
        out = Lines()
        inputs = [unparse(a) for a in op.args]
        parts = self.fresh("parts")
        out.add(f"{parts} = {op.callee.name}.vjp({g}, {ans}, {', '.join(inputs)})")
        for i, a in enumerate(op.args):
            if self.a.is_active_atom(a):
                acc = self.grad(a.id)
                out.add(f"{acc} = support.add_grads({acc}, support.unbroadcast({parts}[{i}], "
                        f"{a.id}))")
        return out

    def rule_const(self, s, op, g, ans) -> Lines:
        return Lines()

    rule_inert = rule_const
    rule_severs = rule_const   # analysis refused the ones whose result carries a gradient

    # analysis rejected unknown calls that a differentiated value flows into, so what
    # is left only makes constants (np.zeros(n), ...): no gradient to propagate
    rule_unknown = rule_const

    # ----- whole functions --------------------------------------------------------------
    def sources(self, name: str) -> tuple:
        """(forward source, adjoint source) of the function, named after ``name``."""
        params = self.a.params
        adjoint_body = self.reverse_block(self.fn.body)   # fills the caches first
        forward = Lines()
        initial = maybe_undefined(self.fn.body, self.a)
        for v in initial:
            forward.add(f"{v} = None")
        forward.extend(self.forward_block(self.fn.body))
        head = f"def {name}_forward(_stack, {', '.join(params)}):"
        forward_src = "\n".join([head] + forward.render(1))

        adjoint = Lines()
        saved = self.saved_names()
        if saved:
            adjoint.add(f"{''.join(n + ', ' for n in saved)}= _stack.pop('saved')")
        grads = sorted({self.grad(v) for v in self.a.active})
        if grads:
            adjoint.add(" = ".join(grads) + " = None")
        adjoint.extend(self.result_gradient())
        adjoint.extend(adjoint_body)
        returns = [self.grad(p) if p in self.a.active else "None" for p in params]
        adjoint.add(f"return ({''.join(r + ', ' for r in returns)})")
        head = f"def {name}_adjoint(_stack, result_grad):"
        adjoint_src = "\n".join([head] + adjoint.render(1))
        return forward_src, adjoint_src

    def adjoint_reads(self) -> tuple:
        """``(values, shapes)``: the names whose values the adjoint body reads, and those
        it reads somewhere only for their shape and dtype -- the second argument of
        ``support.unbroadcast`` and ``support.index_grad``, and what a kernel's VJP is
        passed but does not read (``fuse.reads``).  ``t_out = t`` (the result kept while
        ``t`` is restored) reads ``t`` the way ``t_out`` is read."""
        body = self.reverse_block(self.fn.body)
        text = "\n".join(["def adjoint():", "    pass"] + body.render(1))
        tree = ast.parse(text)
        kernels = {k.name: k for k in self.kernel_results.values()}
        shape_nodes = set()
        for n in ast.walk(tree):
            if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)):
                continue
            owner = n.func.value.id if isinstance(n.func.value, ast.Name) else None
            if owner == "support" and n.func.attr in ("unbroadcast", "index_grad"):
                position = 1 if n.func.attr == "unbroadcast" else 2
                shape_nodes.add(id(n.args[position]))
            elif owner == "support" and n.func.attr == "setitem_value_grad":
                shape_nodes.update((id(n.args[1]), id(n.args[3])))   # dtype, shape
            elif owner in kernels and n.func.attr == "vjp":
                kernel = kernels[owner]
                read = kernel_reads(kernel)
                if not read & set(kernel.outputs):
                    shape_nodes.add(id(n.args[1]))
                for arg, name in zip(n.args[2:], kernel.inputs, strict=True):
                    if name not in read:
                        shape_nodes.add(id(arg))
        aliases, copies = {}, set()
        for n in ast.walk(tree):
            if (isinstance(n, ast.Assign) and len(n.targets) == 1
                    and isinstance(n.targets[0], ast.Name) and isinstance(n.value, ast.Name)
                    and n.targets[0].id.endswith("_out")):
                aliases[n.targets[0].id] = n.value.id
                copies.add(id(n.value))   # the copy is not a read: its uses are
            if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                    and isinstance(n.func.value, ast.Name) and n.func.value.id == "support"
                    and n.func.attr == "restore"):
                copies.add(id(n.args[0]))   # restoring serves the other reads only
        values, shapes = set(), set()
        for n in ast.walk(tree):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and id(n) not in copies:
                name = aliases.get(n.id, n.id)
                (shapes if id(n) in shape_nodes else values).add(name)
        return values, shapes

    def result_gradient(self) -> Lines:
        out = Lines()
        value = self.fn.body[-1].value
        if isinstance(value, gast.Name) and value.id in self.a.active:
            out.add(f"{self.grad(value.id)} = result_grad")
        elif isinstance(value, gast.Tuple):
            for k, e in enumerate(value.elts):
                if isinstance(e, gast.Name) and e.id in self.a.active:
                    acc = self.grad(e.id)
                    out.add(f"{acc} = support.add_grads({acc}, "
                            f"support.item_grad(result_grad, {k}))")
        return out
