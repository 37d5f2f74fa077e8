"""Run hand-written cases: tests/adversary/cases/*.py each define CASES = [(src, args_fn, argnums, kw)]."""
import sys, glob, importlib.util, os, warnings
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.simplefilter("ignore")
from harness import *

def run(path):
    spec = importlib.util.spec_from_file_location("c", path)
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    for i, (src, args, argnums, kw) in enumerate(m.CASES):
        try:
            f = load(src)
            p, r = compare(f, args, argnums, **kw)
        except Exception as e:
            import traceback
            p = [f"HARNESS {type(e).__name__}: {e}\n{traceback.format_exc()[-800:]}"]
        if p:
            print(f"===== {os.path.basename(path)} case {i}", src, [np.shape(a) for a in args])
            print("\n".join(p)[:1500])

for path in sys.argv[1:]:
    run(path)
