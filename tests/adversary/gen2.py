"""Fixed-seed generator of numpy elementwise runs (the fuser's food) with kinks and
reductions; every road vs central differences of the plain numpy function."""
import random

UN = ["np.sin({0})", "np.cos({0})", "np.tanh({0})", "np.exp(np.tanh({0}))", "({0} * 0.5)", "np.abs({0})",
      "np.sqrt(np.abs({0}) + 0.5)", "np.log(np.abs({0}) + 1.5)", "(-{0})", "(1.0 / (np.abs({0}) + 1.0))",
      "np.maximum({0}, 0.1)", "np.minimum({0}, -0.1)", "({0} ** 2)", "({0} ** 3)", "np.square({0})",
      "np.sign({0}) * {0}", "np.where({0} > 0.2, {0}, {0} * 0.3)", "np.exp(-{0} * {0})", "np.log1p({0} * {0})",
      "np.expm1({0} * 0.5)", "(np.abs({0}) + 0.5) ** 0.5", "(np.abs({0}) + 0.5) ** -1", "np.floor({0} * 3.0) * 0.1 + {0}",
      "np.tan({0} * 0.5)", "np.reciprocal({0} * {0} + 1.0)"]
BIN = ["({0} + {1})", "({0} - {1})", "({0} * {1})", "({0} / (1.5 + np.tanh({1})))", "np.maximum({0}, {1})",
       "np.minimum({0}, {1})", "np.where({0} > {1}, {0}, {1} * 2.0)", "((np.abs({0}) + 0.5) ** np.tanh({1}))",
       "np.sqrt({0} * {0} + {1} * {1} + 0.1)"]
RED = ["np.sum({0})", "np.mean({0})", "np.max({0})", "np.min({0})", "np.linalg.norm({0})", "np.sum({0}, axis=0)",
       "np.mean({0}, axis=-1, keepdims=True)"]


def expr(r, names, depth):
    if depth == 0 or r.random() < 0.25:
        return r.choice(names)
    if r.random() < 0.5:
        return r.choice(UN).format(expr(r, names, depth - 1))
    return r.choice(BIN).format(expr(r, names, depth - 1), expr(r, names, depth - 1))


def program(r):
    names = ["a", "b", "c"]
    lines = ["def f(a, b, c):"]
    for k in range(r.randint(2, 6)):
        t = f"t{k}"
        if r.random() < 0.2 and k:
            e = r.choice(RED).format(r.choice(names[3:] or names))
            lines.append(f"    {t} = {e}")
        else:
            lines.append(f"    {t} = {expr(r, names, r.randint(1, 3))}")
        names.append(t)
    last = names[-1]
    tail = r.choice(["{0}", "np.sum({0})", "np.mean({0})", "np.max({0})", "np.min({0})", "np.linalg.norm({0})",
                     "{0} + {1}", "np.sum({0} * {1})"])
    lines.append("    return " + tail.format(last, r.choice(names[3:])))
    return "\n".join(lines) + "\n"


LAYOUTS = [((600,), (600,), (600,)), ((600,), (1,), ()), ((3,), (3,), (1,)), ((513,), (513,), (513,)),
           ((20, 30), (30,), (20, 1)), ((1,), (1,), (1,)), ((), (), ()), ((4097,), (1,), (4097,)),
           ((2,), (2,), (2,)), ((511,), (), (511,)), ((600,), "num", (600,))]
