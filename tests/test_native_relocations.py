"""Object code carries only 64-bit relocations (runtime/native.py ``_target_machine``).

With the small code model, LLVM's in-process linker aborts the interpreter (an assertion
in RuntimeDyldELF, ``isInt<32>(RealOffset)``) when the engine's code and data sections
land more than 2 GiB apart -- it happened in bench/run.py's process after Warp, JAX and
PyTorch had mapped their memory.  The large code model makes every address a 64-bit
relocation, valid at any distance; a cached object file with any other relocation (an
older format, a forged file) is refused before it is linked.
"""

import numpy as np
import pytest

import pullback as pb
from pullback.runtime import native

pytestmark = pytest.mark.skipif(not native.native_enabled(), reason="no llvmlite")

ALLOWED = {0, 1, 24}   # R_X86_64_NONE, R_X86_64_64, R_X86_64_PC64


def sin_loop(x, y, n):
    s = 0.0
    for i in range(n):
        s = s + np.sin(x * i) * y
    return s


def array_function(w, x):
    h = np.tanh(w * x + 0.5)
    return np.sum(h * h) + np.max(w)


def elementwise(x):
    return np.sum(np.exp(np.tanh(x) * 2.0) + np.log1p(x * x))


@pytest.fixture
def objects(monkeypatch):
    """Every object file the engine emits while the test runs: (first IR line, bytes)."""
    engine = native._engine()
    emitted = []
    original = engine.object_code

    def spy(ir_text, speed_level=3):
        blob = original(ir_text, speed_level)
        emitted.append((ir_text.splitlines()[0], blob))
        return blob

    monkeypatch.setattr(engine, "object_code", spy)
    return emitted


def test_every_object_has_only_64_bit_relocations(objects, tmp_path, monkeypatch):
    monkeypatch.setenv("PULLBACK_CACHE_DIR", str(tmp_path))   # nothing from the disk cache
    monkeypatch.setattr(native, "_KERNELS", {})
    pb.grad(sin_loop, (0, 1))(0.5, 1.3, 300)
    pb.grad(sin_loop, (0, 1))(0.25, 1.5, 301)   # the raw and gradient entries too
    pb.grad(array_function, (0, 1))(np.linspace(0.1, 1.0, 40), np.ones(40))
    pb.grad(array_function, (0, 1))(np.linspace(0.2, 1.0, 41), np.ones(41))
    pb.grad(elementwise)(np.linspace(0.0, 1.0, 100_000))   # a fused native kernel
    kinds = {line.split('"')[1].split()[1] if '"' in line else line for line, _ in objects}
    assert len(objects) >= 3, kinds
    for line, blob in objects:
        assert native.relocation_types(blob) <= ALLOWED, line


def test_an_object_with_32_bit_relocations_is_refused():
    engine = native._engine()
    ir_text = """
@table = internal constant [4 x double] [double 1.0, double 2.0, double 3.0, double 4.0]
define double @pick(i64 %k) {
  %p = getelementptr [4 x double], ptr @table, i64 0, i64 %k
  %v = load double, ptr %p
  ret double %v
}
"""
    llvm = engine.llvm
    small = llvm.Target.from_default_triple().create_target_machine(
        cpu=engine.host.cpu, features=engine.host.features, opt=2, reloc="pic",
        codemodel="default")
    module = llvm.parse_assembly(ir_text)
    blob = small.emit_object(module)
    assert native.relocation_types(blob) - ALLOWED        # PC32 to the constant
    assert "relocations" in native._elf_problem(blob, "pick")
    large = engine.codegen.emit_object(llvm.parse_assembly(ir_text))
    assert native._elf_problem(large, "pick") is None
