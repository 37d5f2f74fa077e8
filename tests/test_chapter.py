"""The d2l autograd chapter runs and prints exactly what MXNet 1.x prints.

The expected text is MXNet's output for the chapter: ``print`` of an NDArray is a
newline, numpy's rendering of the values, a newline and ``<NDArray 2x2 @cpu(0)>``;
``print('x.grad: ', x.grad)`` therefore puts two spaces and a newline after the
label.  ``a.grad == c / a`` compares float32 values exactly; it holds for the
seeded input because ``f`` scales ``a`` by a power of two (times 100 in one branch).
"""

import subprocess
import sys
from pathlib import Path

CHAPTER = Path(__file__).resolve().parents[1] / "examples" / "autograd_chapter.py"

EXPECTED_BEFORE = (
    "x.grad:  \n"
    "[[ 4.  8.]\n"
    " [12. 16.]]\n"
    "<NDArray 2x2 @cpu(0)>\n"
    "False\n"
    "True\n"
    "\n"
    "[1. 1. 1.]\n"
    "<NDArray 3 @cpu(0)>\n"
)
EXPECTED_AFTER = (
    "\n"
    "[[40.    8.  ]\n"
    " [ 1.2   0.16]]\n"
    "<NDArray 2x2 @cpu(0)>\n"
)
# Between the two, the example shows pb.adjoint_source(f): a golden file.
ADJOINT = Path(__file__).resolve().parent / "golden" / "chapter_example_adjoint.py.txt"
EXPECTED = EXPECTED_BEFORE + ADJOINT.read_text() + "\n" + EXPECTED_AFTER


def test_chapter_output_matches_mxnet_exactly():
    run = subprocess.run([sys.executable, str(CHAPTER)], capture_output=True, text=True,
                         check=True)
    assert run.stdout == EXPECTED
    assert run.stderr == ""
