"""adv3's generator of scalar programs in Python semantics (tests/adversary/gen3.py):
builtins abs/min/max, math.*, ints mixed with floats (//, %, ** and negative operands),
conditional expressions, for/while with break/continue/return.  Each program's value on
the native and the Python road must equal plain Python's, the roads must agree, and the
gradient must match central differences where two step sizes agree.  Fixed seed, bounded
(ADV3_GEN_N programs, default 30; ADV3_GEN_SEED); ADV3_GEN_MIXED=1 also draws np.float64,
np.float32, np.int64 and np.int32 arguments (it finds finding 9: math.* of float32)."""

import importlib.util
import os
from pathlib import Path

_GEN = Path(__file__).parent / "adversary" / "gen3.py"


def _generator():
    spec = importlib.util.spec_from_file_location("adv3_gen3", _GEN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_random_python_semantics_scalar_programs(tmp_path, monkeypatch):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    gen = _generator()
    count = int(os.environ.get("ADV3_GEN_N", "30"))
    seed = int(os.environ.get("ADV3_GEN_SEED", "4"))
    mixed = os.environ.get("ADV3_GEN_MIXED", "0") == "1"
    problems = gen.run(seed, count, tmp_path, mixed=mixed)
    assert not problems, "\n".join(problems[:3])
