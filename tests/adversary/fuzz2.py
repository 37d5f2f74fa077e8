import sys, os, random, warnings, traceback
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.simplefilter("ignore")
import numpy as np
from harness import load, compare, np
from gen2 import program, LAYOUTS


def fd_dir(fn, args, heads, grads, eps=1e-6):
    rng = np.random.default_rng(7)
    dirs = [rng.standard_normal(np.shape(a)) for a in args]
    def val(shift):
        a = [np.asarray(np.asarray(x, np.float64) + shift * d) if isinstance(x, np.ndarray) else float(x + shift * d)
             for x, d in zip(args, dirs)]
        o = np.asarray(fn(*a), np.float64)
        return float(np.sum(o * heads(o)))
    num = (val(eps) - val(-eps)) / (2 * eps)
    ana = sum(float(np.sum(np.asarray(g) * d)) for g, d in zip(grads, dirs))
    return ana, num, val(0)


def main(seed0, count):
    bad = 0
    stats = {}
    for seed in range(seed0, seed0 + count):
        r = random.Random(seed)
        src = program(r)
        layout = r.choice(LAYOUTS)
        nrng = np.random.default_rng(seed)
        args = [float(nrng.uniform(-1, 1)) if s == "num" else nrng.uniform(-1, 1, s) for s in layout]
        try:
            fn = load(src)
            p, res = compare(fn, args, use_fd=False, use_tape=False, rtol=1e-9, atol=1e-11)
            kind = res["native"][0] if isinstance(res["native"][0], str) else "ok"
            stats[kind] = stats.get(kind, 0) + 1
            if not p and kind == "ok":
                heads = lambda out: np.random.default_rng(np.size(out)).uniform(0.5, 1.5, np.shape(out))
                ana, num, v = fd_dir(fn, args, heads, res["unfused"][1])
                if np.isfinite(v) and abs(v) < 1e8 and not abs(ana - num) <= 1e-5 + 1e-4 * max(abs(ana), abs(num)):
                    p.append(f"directional FD: analytic {ana} vs numeric {num}")
                want = np.asarray(fn(*args))
                got = res["native"][0]
                if np.shape(want) != np.shape(got) or not np.allclose(want, got, rtol=1e-9, equal_nan=True):
                    p.append(f"value vs plain numpy: shape {np.shape(got)} vs {np.shape(want)}")
        except Exception as e:
            p = [f"HARNESS {type(e).__name__}: {e}\n{traceback.format_exc()[-1200:]}"]
        if p:
            bad += 1
            print(f"##### seed {seed} layout {layout}\n{src}\n" + "\n".join(p)[:2000], flush=True)
    print("bad", bad, "of", count, stats)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
