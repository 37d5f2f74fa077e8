"""The readable output stays readable: adjoint_source of the chapter's f is golden."""

from pathlib import Path

import pullback as pb
from chapter_f import f

GOLDEN = Path(__file__).parent / "golden" / "chapter_f_adjoint.py.txt"


def test_chapter_f_matches_golden_file():
    source = pb.adjoint_source(f, argnums=0)
    assert source == GOLDEN.read_text(), (
        "adjoint_source(f) changed; if the change is intended, regenerate with\n"
        "  python -c \"import pullback as pb, chapter_f; "
        "print(pb.adjoint_source(chapter_f.f, argnums=0), end='')\" > golden/...")


def test_adjoint_source_is_deterministic():
    assert pb.adjoint_source(f, argnums=0) == pb.adjoint_source(f, argnums=0)


def test_generated_code_lives_in_a_real_file():
    import inspect

    variant = pb.compile(f).variant((True,))
    variant._build()
    path = Path(inspect.getsourcefile(variant._forward))
    assert path.exists()
    assert path.read_text() == variant.source
