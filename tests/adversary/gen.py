"""Fixed-seed random program generator: nd programs on every road."""
import random
import numpy as np

UN = ["nd.sin({0})", "nd.cos({0})", "nd.tanh({0})", "nd.sigmoid({0})", "({0} * 0.5)",
      "nd.exp(nd.sin({0}))", "nd.square({0})", "nd.abs({0})", "nd.relu({0})",
      "nd.sqrt(nd.square({0}) + 1.0)", "nd.log(nd.abs({0}) + 1.5)", "(-{0})", "(1.0 / (nd.abs({0}) + 1.0))",
      "nd.maximum({0}, 0.1)", "nd.minimum({0}, -0.1)", "nd.clip({0}, -0.5, 0.5)", "({0} ** 2)",
      "nd.sign({0}) * {0}"]
BIN = ["({0} + {1})", "({0} - {1})", "({0} * {1})", "({0} / (1.5 + nd.tanh({1})))",
       "nd.maximum({0}, {1})", "nd.minimum({0}, {1})", "nd.where({0} > {1}, {0}, {1} * 2.0)"]
RED = ["nd.sum({0})", "nd.mean({0})", "nd.max({0})", "nd.min({0})", "nd.norm({0})",
       "nd.sum({0}, axis=0)", "nd.sum({0}, axis=-1, keepdims=True)", "nd.mean({0}, axis=0, keepdims=True)",
       "nd.max({0}, axis=-1, keepdims=True)", "{0}.sum()", "{0}.mean()", "nd.prod(nd.tanh({0}) + 1.5)"]

HELPERS = '''
def helper(a, b, k=0.5):
    return nd.tanh(a) * b + a * k


def looped(a, n=2):
    s = a
    for i in range(n):
        s = nd.sin(s) + a * 0.5
    return s


def pair(a, b):
    return a * b, nd.sin(a) + b


def rec(a, n):
    if n <= 0:
        return a
    return rec(nd.tanh(a) * 1.1, n - 1) + a * 0.1
'''


class Gen:
    def __init__(self, rng):
        self.r = rng
        self.k = 0

    def expr(self, names, depth=2):
        r = self.r
        if depth == 0 or r.random() < 0.3:
            return r.choice(names)
        c = r.random()
        if c < 0.45:
            return r.choice(UN).format(self.expr(names, depth - 1))
        if c < 0.9:
            return r.choice(BIN).format(self.expr(names, depth - 1), self.expr(names, depth - 1))
        return f"({r.choice(RED).format(self.expr(names, depth - 1))} * 0.1 + {self.expr(names, depth - 1)})"

    def new(self):
        self.k += 1
        return f"v{self.k}"

    def block(self, names, indent, depth, in_loop=False):
        r = self.r
        pad = "    " * indent
        lines = []
        for _ in range(r.randint(1, 4)):
            kinds = ["assign"] * 4 + ["overwrite"] * 2 + ["call", "pair", "list", "red"]
            if depth > 0:
                kinds += ["if", "for", "while", "whiledata"]
            if in_loop:
                kinds += ["jump"]
            kind = r.choice(kinds)
            if kind == "assign":
                t = self.new()
                lines.append(f"{pad}{t} = {self.expr(names)}")
                names.append(t)
            elif kind == "overwrite" and len(names) > 2:
                t = r.choice(names[2:])
                lines.append(f"{pad}{t} = {self.expr(names)}")
            elif kind == "red":
                t = self.new()
                lines.append(f"{pad}{t} = {r.choice(names)} + {r.choice(RED).format(self.expr(names, 1))} * 0.1")
                names.append(t)
            elif kind == "call":
                t = self.new()
                a, b = self.expr(names, 1), self.expr(names, 1)
                call = r.choice([f"helper({a}, {b})", f"helper({a}, {b}, 0.25)", f"helper({a}, {b}, k=2.0)",
                                 f"looped({a})", f"looped({a}, 3)", f"rec({a}, 2)"])
                lines.append(f"{pad}{t} = {call}")
                names.append(t)
            elif kind == "pair":
                t1, t2 = self.new(), self.new()
                lines.append(f"{pad}{t1}, {t2} = pair({self.expr(names, 1)}, {self.expr(names, 1)})")
                names += [t1, t2]
            elif kind == "list":
                items, t = f"items{indent}", self.new()
                lines.append(f"{pad}{items} = []")
                lines.append(f"{pad}for j{indent} in range(3):")
                lines.append(f"{pad}    {items}.append({self.expr(names, 1)} * j{indent})")
                lines.append(f"{pad}{t} = {items}[0] + {items}[2] * {items}[1]")
                names.append(t)
            elif kind == "jump":
                cond = self.expr(names, 1)
                jump = r.choice(["break", "continue", f"return {' + '.join(names[:4])}"])
                lines.append(f"{pad}if nd.sum({cond}).asscalar() > {r.choice(['0.5', '0.0', '-0.3'])}:")
                lines.append(f"{pad}    {jump}")
            elif kind == "if":
                cond = self.expr(names, 1)
                lines.append(f"{pad}if nd.mean({cond}).asscalar() > {r.choice(['0.0', '0.2', '-0.2'])}:")
                lines += self.block(list(names), indent + 1, depth - 1, in_loop)
                if r.random() < 0.6:
                    lines.append(f"{pad}else:")
                    lines += self.block(list(names), indent + 1, depth - 1, in_loop)
            elif kind == "for":
                var = f"i{indent}"
                lines.append(f"{pad}for {var} in range({r.randint(0, 3)}):")
                t = r.choice(names[2:] or names)
                if t in ("x", "y"):
                    t = names[-1]
                lines.append(f"{pad}    {t} = {t} * 0.9 + {var} * 0.01")
                lines += self.block(list(names), indent + 1, depth - 1, True)
            elif kind == "while":
                c = f"n{indent}"
                lines.append(f"{pad}{c} = 0")
                lines.append(f"{pad}while {c} < {r.randint(0, 3)}:")
                lines.append(f"{pad}    {c} += 1")
                lines += self.block(list(names), indent + 1, depth - 1, True)
            elif kind == "whiledata":
                c, t = f"m{indent}", self.new()
                lines.append(f"{pad}{t} = {self.expr(names, 1)}")
                names.append(t)
                lines.append(f"{pad}{c} = 0")
                lines.append(f"{pad}while nd.sum(nd.abs({t})).asscalar() < {r.choice(['5.0', '20.0'])} and {c} < 6:")
                lines.append(f"{pad}    {c} += 1")
                lines.append(f"{pad}    {t} = {t} * 1.7 + 0.3")
                lines += self.block(list(names), indent + 1, depth - 1, True)
        return lines

    def program(self):
        self.k = 2
        names = ["x", "y", "v2"]
        lines = ["def f(x, y):", f"    v2 = {self.expr(['x', 'y'])}"]
        lines += self.block(names, 1, 2)
        final = " + ".join(self.r.sample(names, min(len(names), 4)))
        if self.r.random() < 0.3:
            final = self.r.choice(RED).format(final)
        lines.append(f"    return {final}")
        return HELPERS + "\n\n" + "\n".join(lines) + "\n"


SHAPES = [((3,), (3,)), ((2, 1), (3,)), ((4,), (1,)), ((600,), (600,)), ((600,), (1,)),
          ((2, 300), (300,)), ((513,), ()), ((3, 1, 2), (1, 4, 1)), ((1, 520), (520, 1)), ((5, 1), (1, 4)),
          ((1,), (1,)), ((512,), (512,)), ((3, 1), (1,))]
