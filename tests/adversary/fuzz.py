import sys, os, random, warnings, time, traceback
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.simplefilter("ignore")
from harness import *
from gen import Gen, SHAPES

def fd_dir(fn, args, argnums, heads, grads, eps=1e-6):
    rng = np.random.default_rng(7)
    dirs = [rng.standard_normal(np.shape(args[i])) for i in argnums]
    def val(shift):
        a = list(args)
        for i, d in zip(argnums, dirs):
            a[i] = np.asarray(np.asarray(args[i], np.float64) + shift * d)
        with ag.pause():
            o = fn(*[nd.array(v, dtype="float64") if isinstance(v, np.ndarray) else v for v in a]).asnumpy()
        return float(np.sum(o * heads(o)))
    num = (val(eps) - val(-eps)) / (2 * eps)
    ana = sum(float(np.sum(g * d)) for g, d in zip(grads, dirs))
    return ana, num

STATS = {}


def main(seed0, count, verbose=False):
    bad = 0
    for seed in range(seed0, seed0 + count):
        r = random.Random(seed)
        src = Gen(r).program()
        sx, sy = r.choice(SHAPES)
        nrng = np.random.default_rng(seed)
        args = [nrng.uniform(-1, 1, sx), nrng.uniform(-1, 1, sy)]
        try:
            fn = load(src)
            p, res = compare(fn, args, use_fd=False, rtol=1e-7, atol=1e-9)
            kind = res["native"][0] if isinstance(res["native"][0], str) else "ok"
            STATS[kind] = STATS.get(kind, 0) + 1
            if kind != "ok" and verbose:
                print("refused:", res["native"][1][:200])
            if not p and "tape" in res and not isinstance(res["tape"][0], str):
                heads = lambda out: np.random.default_rng(np.size(out)).uniform(0.5, 1.5, np.shape(out))
                ana, num = fd_dir(fn, args, (0, 1), heads, res["tape"][1])
                if not abs(ana - num) <= 1e-5 + 1e-4 * max(abs(ana), abs(num)):
                    p.append(f"directional FD: analytic {ana} vs numeric {num}")
        except Exception as e:
            p = [f"HARNESS {type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}"]
        if p:
            bad += 1
            print(f"##### seed {seed} shapes {sx} {sy}\n{src}\n" + "\n".join(p)[:2500], flush=True)
    print("bad", bad, "of", count, STATS)

if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), len(sys.argv) > 3)
