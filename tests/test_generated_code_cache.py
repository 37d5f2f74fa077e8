"""The code objects of generated modules kept beside them (compiler/codegen.py): a later
load unmarshals the ``.code`` file instead of compiling the source (most of loading a
cached variant, e.g. after ``pullback compile``), and a ``.code`` file that is not this
source's -- stale, of another file name, damaged, not a regular file -- is compiled again
and replaced, never trusted."""

import os
import traceback

import pytest

from pullback.compiler import codegen

SOURCE = '''
def twice(x):
    return 2 * x


def fails(x):
    return x / 0
'''


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("PULLBACK_CACHE_DIR", str(tmp_path))
    return tmp_path


def _code_files(root):
    return sorted((root / "generated").glob("*.code"))


def test_second_load_uses_the_stored_code_object(cache_root, monkeypatch):
    first = codegen.load(SOURCE, "demo.module", {})
    assert first["twice"](3) == 6
    (stored,) = _code_files(cache_root)
    compiled = []
    monkeypatch.setattr(codegen, "compile", lambda *a: compiled.append(a) or compile(*a),
                        raising=False)
    second = codegen.load(SOURCE, "demo.module", {})
    assert not compiled, "the stored code object was not used"
    assert second["twice"](21) == 42
    # tracebacks still show the generated file and its lines
    with pytest.raises(ZeroDivisionError) as raised:
        second["fails"](1.0)
    frame = traceback.extract_tb(raised.value.__traceback__)[-1]
    assert frame.filename.endswith(".py") and os.path.isfile(frame.filename)
    assert frame.line == "return x / 0"
    assert _code_files(cache_root) == [stored]


@pytest.mark.parametrize("damage", ["other source", "truncated", "garbage body",
                                    "not our magic", "a folder"])
def test_a_code_file_that_is_not_this_sources_is_compiled_again(cache_root, monkeypatch,
                                                                  damage):
    codegen.load(SOURCE, "demo.module", {})
    (stored,) = _code_files(cache_root)
    good = stored.read_bytes()
    header = len(codegen._CODE_MAGIC) + 4 + 32
    if damage == "other source":   # a valid file for different source text
        other = SOURCE.replace("2 * x", "3 * x")
        codegen.load(other, "demo.module", {})
        (newer,) = [p for p in _code_files(cache_root) if p != stored]
        stored.write_bytes(newer.read_bytes())
    elif damage == "truncated":
        stored.write_bytes(good[:header + 10])
    elif damage == "garbage body":
        stored.write_bytes(good[:header] + b"\xff" * 40)
    elif damage == "not our magic":
        stored.write_bytes(b"X" + good[1:])
    else:
        stored.unlink()
        stored.mkdir()
    compiled = []
    monkeypatch.setattr(codegen, "compile", lambda *a: compiled.append(a) or compile(*a),
                        raising=False)
    namespace = codegen.load(SOURCE, "demo.module", {})
    assert namespace["twice"](5) == 10   # this source's code, whatever the file held
    assert compiled, "a code file that is not this source's was used"
    if damage != "a folder":   # replaced by this source's: the next load compiles nothing
        assert stored.read_bytes()[:header] == good[:header]
        compiled.clear()
        assert codegen.load(SOURCE, "demo.module", {})["twice"](1) == 2
        assert not compiled


@pytest.mark.filterwarnings("ignore::pullback.runtime.safefile.CacheWarning")
def test_no_cache_folder_still_compiles(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("PULLBACK_CACHE_DIR", str(blocker))
    namespace = codegen.load(SOURCE, "demo.module", {})
    assert namespace["twice"](2) == 4
