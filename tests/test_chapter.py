"""The d2l autograd chapter runs and prints what MXNet 1.9.1 prints."""

import subprocess
import sys
from pathlib import Path

CHAPTER = Path(__file__).resolve().parents[1] / "examples" / "autograd_chapter.py"


def test_chapter_output_matches_mxnet():
    out = subprocess.run([sys.executable, str(CHAPTER)], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("x.grad:  \n[[ 4.  8.]\n [12. 16.]]\n<NDArray 2x2 @cpu(0)>\n")
    assert out.endswith("\n[[40.    8.  ]\n [ 1.2   0.16]]\n<NDArray 2x2 @cpu(0)>\n")
    assert "\n[1. 1. 1.]\n<NDArray 3 @cpu(0)>\n" in out
