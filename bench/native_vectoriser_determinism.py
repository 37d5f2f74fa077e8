"""Why compiler/lower.py vectorises explicitly instead of leaving it to LLVM's vectoriser.

Run from the repository root:  python bench/native_vectoriser_determinism.py

The recipe of NOTES-llvmlite.md: a scalar loop calling ``exp`` with the call-site
attribute ``vector-function-abi-variant`` naming libmvec's ``_ZGVeN8v_exp``, vectorised
by LLVM at O3.  It does vectorise, but keeps a scalar loop (libm's scalar ``exp``) for
the remainder and for when its run-time alias check fails.  This script counts, over
4096 values, how many results differ from the vectorised body's when the value sits in
an array of length 1 (the remainder loop) and when the output is the input (in place:
the alias check fails, everything runs scalar).  ``lower.py``'s explicit vectors with a
masked last vector give 0 and 0 (tests/test_native.py::test_position_and_length).
Needs an AVX-512 host (the recipe names the AVX-512 variant).
"""

import ctypes

import llvmlite.binding as llvm
import numpy as np
from pullback.runtime import native

RECIPE = r"""
declare double @exp(double) #1
declare <8 x double> @_ZGVeN8v_exp(<8 x double>) #1
@llvm.compiler.used = appending global [1 x ptr] [ptr @_ZGVeN8v_exp], section "llvm.metadata"
define void @recipe_exp(i64 %n, ptr %x, ptr %out) #0 {
entry:
  %empty = icmp sle i64 %n, 0
  br i1 %empty, label %exit, label %loop
loop:
  %i = phi i64 [0, %entry], [%i.next, %loop]
  %px = getelementptr double, ptr %x, i64 %i
  %v = load double, ptr %px, align 8
  %e = call double @exp(double %v) #2
  %po = getelementptr double, ptr %out, i64 %i
  store double %e, ptr %po, align 8
  %i.next = add i64 %i, 1
  %done = icmp eq i64 %i.next, %n
  br i1 %done, label %exit, label %loop
exit:
  ret void
}
attributes #0 = { nounwind "min-legal-vector-width"="512" "prefer-vector-width"="512" }
attributes #1 = { nounwind memory(none) }
attributes #2 = { "vector-function-abi-variant"="_ZGV_LLVM_N8v_exp(_ZGVeN8v_exp)" }
"""


def main():
    if "exp" not in native.host().vector_math or native.host().lanes != 8:
        print("needs AVX-512 and libmvec")
        return
    engine = native._engine()
    module = llvm.parse_assembly(RECIPE)
    module.triple = engine.codegen.triple
    module.data_layout = str(engine.codegen.target_data)
    passes = llvm.create_pass_builder(engine.codegen,
                                      llvm.create_pipeline_tuning_options(speed_level=3))
    passes.getModulePassManager().run(module, passes)
    text = str(module)
    print(f"optimised IR: {text.count('_ZGVeN8v_exp(')} vector calls, "
          f"{text.count('@exp(')} scalar exp calls")
    address = engine.link(engine.codegen.emit_object(module), "recipe_exp")
    kernel = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p)(address)

    def run(values, in_place=False):
        values = values.copy()
        out = values if in_place else np.empty_like(values)
        kernel(len(values), values.ctypes.data, out.ctypes.data)
        return out

    values = np.random.default_rng(0).uniform(-700, 700, 4096)
    body = run(values)
    alone = np.array([run(values[i:i + 1])[0] for i in range(len(values))])
    in_place = run(values, in_place=True)
    print(f"of {len(values)} values, differing from the vector body: "
          f"{np.count_nonzero(alone != body)} in arrays of length 1, "
          f"{np.count_nonzero(in_place != body)} computed in place")


if __name__ == "__main__":
    main()
