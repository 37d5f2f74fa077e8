"""Adversary harness: run one function on every road and compare."""
import importlib.util, os, sys, tempfile, itertools, traceback
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("PULLBACK_CACHE_DIR", "/tmp/pbcache-adv")
import pullback as pb
from pullback import nd, autograd as ag
from pullback.runtime import fused
from pullback.compiler import api

_TMP = tempfile.mkdtemp(prefix="adv-mod-")
_count = itertools.count()


def load(source, name="f"):
    """Write ``source`` to a fresh module file, import it, return attribute ``name``."""
    k = next(_count)
    path = os.path.join(_TMP, f"advmod{k}.py")
    with open(path, "w") as fh:
        fh.write("import numpy as np\nimport math\nfrom pullback import nd\nimport pullback as pb\n" + source)
    spec = importlib.util.spec_from_file_location(f"advmod{k}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"advmod{k}"] = mod
    spec.loader.exec_module(mod)
    return getattr(mod, name) if name else mod


def _env(native=True, fuse=True, min_size=512):
    os.environ["PULLBACK_NATIVE"] = "1" if native else "0"
    os.environ["PULLBACK_FUSE"] = "1" if fuse else "0"
    fused.NATIVE_MIN_SIZE = min_size
    api._BY_CODE.clear()


def compiled(fn, args, heads, argnums, **env):
    _env(**env)
    try:
        out, pull = pb.vjp(fn, *args, argnums=argnums)
        h = heads(out)
        g = pull(float(np.reshape(h, -1)[0]) if np.size(h) == 1 else h)
        DTYPES.setdefault("cur", {})[tuple(sorted(env.items()))] = (np.asarray(out).dtype if not isinstance(out, pb.NDArray) else out.dtype, [None if x is None else (x.dtype if hasattr(x, 'dtype') else type(x).__name__) for x in g])
        return np.asarray(out if not isinstance(out, pb.NDArray) else out.asnumpy()), [
            None if x is None else np.asarray(x.asnumpy() if isinstance(x, pb.NDArray) else x, dtype=np.float64) for x in g]
    finally:
        _env()


DTYPES = {}


def tape(fn, args, heads, argnums):
    xs = [nd.array(np.asarray(a)) if isinstance(a, np.ndarray) else a for a in args]
    for i in argnums:
        xs[i].attach_grad()
    with ag.record():
        out = fn(*xs)
    h = heads(out.asnumpy())
    out.backward(nd.array(h))
    return out.asnumpy(), [xs[i].grad.asnumpy().astype(np.float64) for i in argnums]


def fd(fn, args, heads, argnums, eps=1e-6, plain=False):
    args64 = [np.asarray(a, dtype=np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == 'f' else a for a in args]
    def val(a):
        with ag.pause():
            xs = [nd.array(v) if isinstance(v, np.ndarray) and not plain else v for v in a]
            o = fn(*xs)
            o = o.asnumpy() if isinstance(o, pb.NDArray) else np.asarray(o)
        return float(np.sum(o.astype(np.float64) * heads(o)))
    grads = []
    for i in argnums:
        x = np.asarray(args64[i], dtype=np.float64)
        g = np.zeros(x.shape)
        for idx in np.ndindex(x.shape):
            up = x.copy(); up[idx] += eps
            dn = x.copy(); dn[idx] -= eps
            a1 = list(args64); a1[i] = up if x.ndim else float(up)
            a2 = list(args64); a2[i] = dn if x.ndim else float(dn)
            g[idx] = (val(a1) - val(a2)) / (2 * eps)
        grads.append(g)
    return grads


ROADS = {
    "native": dict(native=True, fuse=True, min_size=512),
    "native_all": dict(native=True, fuse=True, min_size=1),
    "numpy": dict(native=False, fuse=True),
    "unfused": dict(native=False, fuse=False),
}


def close(a, b, rtol, atol):
    if a is None or b is None:
        return a is None and b is None
    a = np.asarray(a, dtype=np.float64); b = np.asarray(b, dtype=np.float64)
    if a.size != b.size:
        return False
    a = a.reshape(-1); b = b.reshape(-1)
    return np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)


def compare(fn, args, argnums=None, heads=None, use_fd=True, use_tape=True, rtol=1e-6,
            atol=1e-8, roads=ROADS, check_shapes=True):
    """Return list of disagreement descriptions (empty = all agree)."""
    argnums = tuple(range(len(args))) if argnums is None else argnums
    if heads is None:
        def heads(out):
            out = np.asarray(out)
            rng = np.random.default_rng(out.size)
            return rng.uniform(0.5, 1.5, out.shape).astype(out.dtype)
    results = {}
    problems = []
    DTYPES.clear()
    for name, env in roads.items():
        try:
            results[name] = compiled(fn, args, heads, argnums, **env)
        except pb.CompileError as e:
            results[name] = ("CompileError", str(e).splitlines()[0])
        except Exception as e:
            results[name] = ("EXC", f"{type(e).__name__}: {e}")
    if use_tape:
        try:
            results["tape"] = tape(fn, args, heads, argnums)
        except Exception as e:
            results["tape"] = ("EXC", f"{type(e).__name__}: {e}")
        if isinstance(results["tape"][0], str):
            del results["tape"]
            use_tape = False
    ref = results["unfused"]
    if use_fd:
        try:
            plain = not use_tape
            fdg = fd(fn, args, heads, argnums, plain=plain)
            results["fd"] = (ref[1 - 1] if not isinstance(ref[0], str) else None, fdg)
        except Exception as e:
            results["fd"] = ("EXC", f"{type(e).__name__}: {e}")
    kinds = {k: v[0] for k, v in results.items() if isinstance(v[0], str)}
    if kinds:
        if len(set(kinds.values())) > 1 or len(kinds) != len(results):
            problems.append(f"exceptions differ: { {k: results[k] for k in kinds} }")
        return problems, results
    base = "unfused"
    bv, bg = results[base]
    for name, (v, g) in results.items():
        if name == base:
            continue
        loose = name == "fd"
        if name != "fd":
            if check_shapes and np.shape(v) != np.shape(bv) and not (
                    name == "tape" and np.size(v) == 1 and np.size(bv) == 1):
                problems.append(f"value shape {name} {np.shape(v)} vs {base} {np.shape(bv)}")
            if not close(v, bv, rtol, atol):
                problems.append(f"value {name} vs {base}: {v} vs {bv}")
        for k, (a, b) in enumerate(zip(g, bg)):
            if not close(a, b, 1e-4 if loose else rtol, 1e-5 if loose else atol):
                problems.append(f"grad[{k}] {name} vs {base}:\n {a}\n vs\n {b}")
            elif check_shapes and not loose and a is not None and np.shape(a) != np.shape(b) \
                    and not (name == "tape" and np.size(a) == 1):
                problems.append(f"grad[{k}] shape {name} {np.shape(a)} vs {np.shape(b)}")
    d = DTYPES.get("cur", {})
    if len(set(map(str, d.values()))) > 1:
        problems.append(f"dtypes differ across compiled roads: {list(d.values())}")
    return problems, results
