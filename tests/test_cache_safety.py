"""Issue 17, item 1: generated code is never written through a planted symlink."""

import os

from pullback.compiler import codegen


def test_generated_write_does_not_follow_planted_symlinks(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "generated"
    folder.mkdir()
    target = folder / "mod.py"
    for pid in range(os.getpid() - 5, os.getpid() + 50):   # the old, predictable names
        (folder / f".mod.py.{pid}.tmp").symlink_to(victim)
    codegen.write_atomically(target, b"x = 1\n")
    assert target.read_text() == "x = 1\n"
    assert victim.read_text() == "precious"
    assert not target.is_symlink()
