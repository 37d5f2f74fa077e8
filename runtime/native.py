"""Native kernels: the kernel contract, the JIT engine, the on-disk cache, and calling.

The fuser (``compiler/fuse.py``) describes a fused elementwise run as a
``KernelSpec``; the lowering (``compiler/lower.py``) turns it into LLVM IR text;
``compile_kernel(spec, ir_text)`` here turns that text into a ``Kernel``, a
callable the generated code calls as one statement.  This module never imports
the compiler: it only compiles, caches, loads and calls IR that it is given.

**Kernel ABI.**  The lowered IR defines one external function ``pb_kernel_<digest>``::

    void kernel(i64 start, i64 stop, ptr arrays, ptr scalars, ptr partials)

``arrays`` points to the data pointers of the input arrays then the output
arrays (element 0 of each), ``scalars`` to the scalar arguments as doubles,
``partials`` to ``ceil(n / CHUNK) * len(reductions)`` doubles: reduction ``r`` of
the elements of chunk ``k`` (``[k*CHUNK, (k+1)*CHUNK)``) goes to
``partials[k * R + r]``.  ``start`` is a multiple of ``CHUNK``.  Because chunks
are fixed, the partials, and so every reduction (combined here, in chunk order),
do not depend on how many threads ran the chunks.

**Calling convention** (measured with ``bench/native_call_overhead.py``, numbers
in its docstring).  A ctypes call costs ~0.7 us even with cached integer
addresses, and getting the addresses costs ~1.3 us per array
(``arr.ctypes.data``; ``arr.__array_interface__`` is no faster): ~4.6 us for a
two-input kernel, against ~0.4 us for ``np.add`` on 3 elements.  So kernels are
called through one generic METH_FASTCALL trampoline compiled from IR
(``runtime/fastcall.py``): ``kernel.call(x, y)`` costs ~0.14 us including
allocating the output (``kernel(x, y)``, the Python method, ~0.3 us).  It reads
the numpy array headers itself and runs the kernel only for exactly the
arguments it expects; anything else (non-contiguous or other-dtype inputs,
overlapping outputs, a call large enough for several threads) goes to the
careful Python path below, which copies, casts safely, and splits the work over
threads -- slow, never wrong.  Calls estimated above ``_GIL_HOLD_NS`` of work
release the GIL (the trampoline around the kernel; ctypes on the careful path).

**Cache.**  Optimised object code lives in ``kernels/`` under the cache root
(``$PULLBACK_CACHE_DIR``, default ``/tmp/pullback-<euid>``) under a key hashing
the IR text, the pullback version, the llvmlite and LLVM versions, the CPU name
and features and the math library.  A file is a 48-byte header (magic, payload
length, SHA-256 of the payload) then the object code.  Every file operation goes
through ``runtime/safefile.py`` (verified folders, atomic writes, reads that
follow no symlink and block on no FIFO; an unusable folder means one warning and
no disk cache).  A file is linked only if its header, length and checksum hold
and, on Linux, it is a well-formed relocatable ELF object that defines the
kernel's symbol (``object_file_problem``: LLVM's linker trusts offsets, so
anything else could crash the process); otherwise it is reported with one
``NativeCacheWarning``, ignored and rebuilt.  Loading a cached kernel links the
object file into the engine (``add_object_file``): no optimisation, no code
generation.

``PULLBACK_NATIVE=0`` makes ``native_enabled()`` false: the fuser then keeps the
numpy path.  ``PULLBACK_THREADS=k`` (or ``set_threads(k)``) caps the threads a
large kernel call uses.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import hashlib
import keyword
import math
import os
import platform
import re
import struct
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import safefile

#: Elements per reduction chunk: partials are per chunk, threads split at chunk bounds.
CHUNK = 4096
#: Most input+output arrays, and most scalars, a kernel may take (the trampoline's buffers).
MAX_ARRAYS = 64
MAX_SCALARS = 64
REDUCTIONS = ("sum", "max", "min")
DTYPES = ("float32", "float64")


class KernelSpecError(ValueError):
    """A KernelSpec that cannot be lowered: names what is wrong and where."""


class NativeCacheWarning(UserWarning):
    """The on-disk kernel cache was unusable or held a damaged file (it is rebuilt)."""


# ----- the contract ---------------------------------------------------------------------

@dataclass(frozen=True)
class KernelSpec:
    """One fused elementwise kernel.

    dtype: "float32" or "float64".
    arrays: input arrays: same length n, C-contiguous 1-d (the caller flattens).
    scalars: input scalars (Python floats), broadcast to every element.
    statements: SSA ``(target, expression)`` pairs in order; expressions use the
        scalar language of ``compiler/lower.py`` over arrays, scalars and earlier targets.
    outputs: names written to output arrays of length n.
    reductions: ``(name, "sum"|"max"|"min")`` reduced over the n elements, returned
        as Python floats after the output arrays.
    """

    dtype: str
    arrays: tuple[str, ...]
    scalars: tuple[str, ...]
    statements: tuple[tuple[str, str], ...]
    outputs: tuple[str, ...]
    reductions: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        for field_name in ("arrays", "scalars", "outputs"):
            object.__setattr__(self, field_name, tuple(getattr(self, field_name)))
        object.__setattr__(self, "statements", tuple(tuple(s) for s in self.statements))
        object.__setattr__(self, "reductions", tuple(tuple(r) for r in self.reductions))
        _check_spec(self)


def _check_spec(spec: KernelSpec) -> None:
    def fail(message):
        raise KernelSpecError(f"{message}\n  in {spec}")

    if spec.dtype not in DTYPES:
        fail(f"dtype must be one of {DTYPES}, not {spec.dtype!r}")
    if not spec.arrays:
        fail("a kernel needs at least one input array (it sets the length n)")
    if len(spec.arrays) + len(spec.outputs) > MAX_ARRAYS or len(spec.scalars) > MAX_SCALARS:
        fail(f"at most {MAX_ARRAYS} arrays (inputs + outputs) and {MAX_SCALARS} scalars")
    defined = set()
    for name in (*spec.arrays, *spec.scalars, *(t for t, _ in spec.statements)):
        if not (isinstance(name, str) and name.isidentifier()) or keyword.iskeyword(name):
            fail(f"{name!r} is not a valid name")
        if name in defined:
            fail(f"{name!r} is defined twice (statements are SSA: one target, one assignment)")
        defined.add(name)
    for target, expression in spec.statements:
        if not isinstance(expression, str):
            fail(f"the expression of {target!r} must be a string, not {expression!r}")
    for name in (*spec.outputs, *(name for name, _ in spec.reductions)):
        if name not in defined:
            fail(f"{name!r} is an output or reduction but is never defined")
    for name, op in spec.reductions:
        if op not in REDUCTIONS:
            fail(f"reduction {op!r} of {name!r} is not one of {REDUCTIONS}")
    if not spec.outputs and not spec.reductions:
        fail("a kernel must have an output or a reduction")


def native_enabled() -> bool:
    """Whether native kernels may be used: false when ``PULLBACK_NATIVE=0`` or when
    llvmlite cannot be imported."""
    if os.environ.get("PULLBACK_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return _llvmlite_available()


@functools.cache
def _llvmlite_available() -> bool:
    try:
        import llvmlite.binding  # noqa: F401
    except ImportError:
        return False
    return True


# ----- the host -------------------------------------------------------------------------

#: libm functions the scalar language calls, with their number of arguments.
LIBM_FUNCTIONS = {"exp": 1, "log": 1, "sin": 1, "cos": 1, "tan": 1, "tanh": 1,
                  "log1p": 1, "expm1": 1, "pow": 2,
                  # numpy coverage (issue 11 item 5): compiler/lower.py's COVERAGE_LIBM
                  "sinh": 1, "cosh": 1, "asin": 1, "acos": 1, "atan": 1, "asinh": 1,
                  "acosh": 1, "atanh": 1, "log2": 1, "log10": 1, "exp2": 1, "cbrt": 1,
                  "atan2": 2, "hypot": 2}
#: Vector width (doubles per register) -> (LLVM feature that must be present, the vector
#: function ABI's ISA letter for it).  Widest first.
_VECTOR_ISAS = ((8, "+avx512f", "e"), (4, "+avx2", "d"), (2, "+sse2", "b"))


@dataclass(frozen=True)
class Host:
    """What the kernels are compiled for; part of every cache key."""

    cpu: str                       # LLVM's name for the host CPU
    features: str                  # LLVM feature string: +avx2,+avx512f,...
    lanes: int                     # doubles per vector the kernels use
    isa: str | None                # vector function ABI ISA letter for `lanes` (None: none)
    vector_math: frozenset         # LIBM_FUNCTIONS names with a libmvec double variant
    mathlib: str                   # e.g. "glibc 2.36 libmvec.so.1"
    vector_math_single: frozenset = frozenset()   # ... with a float variant (2 * lanes)

    def vector_symbol(self, function: str, single: bool = False) -> str:
        """The libmvec name of ``function`` at this host's width: the double variant on
        ``lanes`` lanes, or (``single``) the float variant on ``2 * lanes``."""
        lanes, suffix = (2 * self.lanes, "f") if single else (self.lanes, "")
        return f"_ZGV{self.isa}N{lanes}{'v' * LIBM_FUNCTIONS[function]}_{function}{suffix}"


@functools.cache
def host() -> Host:
    """The host CPU and math library, detected once per process."""
    import llvmlite.binding as llvm

    _initialize_llvm()
    cpu = llvm.get_host_cpu_name()
    features = llvm.get_host_cpu_features().flatten()
    enabled = set(features.split(","))
    lanes, isa = 2, None
    if platform.machine().lower() in ("x86_64", "amd64"):
        lanes, isa = next((w, letter) for w, feature, letter in _VECTOR_ISAS
                          if feature in enabled or w == 2)
    libmvec = _load_libmvec()
    vector_math = vector_math_single = frozenset()
    if libmvec is not None and isa is not None:
        probe = Host(cpu, features, lanes, isa, frozenset(), "")
        vector_math, vector_math_single = (
            frozenset(f for f in LIBM_FUNCTIONS if hasattr(libmvec, probe.vector_symbol(f, single)))
            for single in (False, True))
    libc = " ".join(os.confstr("CS_GNU_LIBC_VERSION").split()) if hasattr(os, "confstr") else "?"
    mathlib = f"{libc} {'libmvec.so.1' if libmvec is not None else 'libm only'}"
    return Host(cpu, features, lanes, isa, vector_math, mathlib, vector_math_single)


@functools.cache
def _load_libmvec():
    """glibc's vector math library, loaded into the process so JIT code can call it."""
    import llvmlite.binding as llvm

    name = ctypes.util.find_library("mvec") or "libmvec.so.1"
    try:
        library = ctypes.CDLL(name)
        llvm.load_library_permanently(name)
    except OSError:
        return None
    return library


@functools.cache
def _initialize_llvm() -> None:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


def kernel_symbol(ir_text: str) -> str:
    """The kernel function's name in IR made by ``compiler/lower.py``."""
    match = _KERNEL_DEFINITION.search(ir_text)
    if match is None:
        raise KernelSpecError("the IR defines no pb_kernel_<digest> function")
    return match.group(1)


_KERNEL_DEFINITION = re.compile(r'^define void @"?(pb_kernel_[0-9a-f]+)"?\(', re.MULTILINE)


#: Named metadata by which a module asks for LLVM's loop and SLP vectorisers (whole native
#: functions' array loops: scalar IR without fast-math flags, which the vectorisers keep
#: IEEE-exact: no reassociation, so a sum carried across iterations stays sequential, and
#: libm calls stay scalar calls).
VECTORISE_METADATA = "pullback.vectorise"


# ----- the engine -----------------------------------------------------------------------

class _Engine:
    """The process's one MCJIT engine.  Everything enters it as object code
    (``add_object_file``), from the disk cache or freshly optimised and code-generated."""

    def __init__(self):
        import llvmlite.binding as llvm

        _initialize_llvm()
        _load_libmvec()
        self.llvm, self.host = llvm, host()
        self.lock = threading.RLock()
        self.objects_loaded = 0
        # One target machine for optimising and emitting object code, another owned by the
        # engine (an engine must never share its target machine).
        self.codegen = self._target_machine()
        self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""),
                                                 self._target_machine())

    def _target_machine(self):
        llvm = self.llvm
        # The large code model, static: every address in the object code is a 64-bit
        # absolute relocation (R_X86_64_64), which the engine's linker resolves wherever
        # it puts the sections.  The small model's 32-bit PC-relative relocations (to the
        # constant pools, libm through the PLT) abort the process inside LLVM
        # (RuntimeDyldELF: ``isInt<32>(RealOffset)``) when the engine's memory for code
        # and for data land more than 2 GiB apart -- seen in a process that had loaded
        # Warp, JAX and PyTorch.  ``object_file_problem`` refuses any other relocation.
        return llvm.Target.from_default_triple().create_target_machine(
            cpu=self.host.cpu, features=self.host.features, opt=3, reloc="static",
            codemodel="large")

    def object_code(self, ir_text: str, speed_level: int = 3) -> bytes:
        """Optimise (O3 by default; a kernel's IR is already vectorised, so no loop
        vectoriser, unless the module asks for it: ``VECTORISE_METADATA``) and emit."""
        llvm = self.llvm
        module = llvm.parse_assembly(ir_text)
        module.triple = self.codegen.triple
        module.data_layout = str(self.codegen.target_data)
        module.verify()
        tuning = llvm.create_pipeline_tuning_options(speed_level=speed_level)
        vectorise = f"!{VECTORISE_METADATA} =" in ir_text   # part of the text: of the key
        tuning.loop_vectorization = vectorise
        tuning.slp_vectorization = vectorise
        tuning.loop_interleaving = False
        passes = llvm.create_pass_builder(self.codegen, tuning)
        passes.getModulePassManager().run(module, passes)
        return self.codegen.emit_object(module)

    def link(self, object_code: bytes, symbol: str) -> int:
        """Link object code into the engine; the address of ``symbol``."""
        self.engine.add_object_file(self.llvm.ObjectFileRef.from_data(object_code))
        self.engine.finalize_object()
        self.objects_loaded += 1
        address = self.engine.get_function_address(symbol)
        if not address:
            raise RuntimeError(f"pullback: native symbol {symbol} not found after linking")
        return address

    def load(self, ir_text: str, symbol: str,
             directory: safefile.Location | None = None, key: str | None = None,
             speed_level: int = 3) -> tuple[int, str]:
        """Address of ``symbol`` defined by ``ir_text``, via the disk cache when usable.

        ``directory`` (e.g. a ``__pullback_cache__/kernels`` beside the source, filled by
        ``pullback compile``) is looked in first and written to instead of the default.
        ``key``: the cache key to use instead of one hashing ``ir_text`` (a caller that
        knows what decides the IR; ``ir_text`` may then be a function making the text,
        called only on a miss; the key must then tell ``speed_level`` too).
        Returns (address, how) where how is "cached" or "compiled"."""
        with self.lock, contextlib.ExitStack() as open_caches:
            caches = [open_caches.enter_context(c) for c in
                      ((_DiskCache.current(directory) if directory else None),
                       _DiskCache.current()) if c is not None]
            key = key or self.cache_key(ir_text)
            object_code, found_in = None, None
            for found_in, cache in enumerate(caches):
                object_code = cache.read(key, symbol)
                if object_code is not None:
                    break
            how = "cached"
            if object_code is None:
                text = ir_text() if callable(ir_text) else ir_text
                object_code, how = self.object_code(text, speed_level), "compiled"
            if caches and (how == "compiled" or found_in > 0):
                caches[0].write(key, object_code)   # the preferred cache gets a copy
            return self.link(object_code, symbol), how

    def load_cached(self, key: str, symbol: str,
                    directory: safefile.Location | None = None) -> int | None:
        """Address of ``symbol`` from object code cached under ``key`` (no IR: a caller
        that recorded the key of the IR it lowered once), or None when no cache holds it."""
        with self.lock, contextlib.ExitStack() as open_caches:
            caches = [open_caches.enter_context(c) for c in
                      ((_DiskCache.current(directory, create=False) if directory else None),
                       _DiskCache.current(create=False)) if c is not None]
            for cache in caches:
                object_code = cache.read(key, symbol)
                if object_code is not None:
                    return self.link(object_code, symbol)
        return None

    def cache_key(self, ir_text: str) -> str:
        import llvmlite

        parts = [_CACHE_FORMAT, ir_text, _pullback_version(), llvmlite.__version__,
                 ".".join(map(str, self.llvm.llvm_version_info)), self.host.cpu,
                 self.host.features, self.host.mathlib]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()


_ENGINE: list = []
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
    """The process's engine, made on first use (by one thread only)."""
    if not _ENGINE:
        with _ENGINE_LOCK:
            if not _ENGINE:
                _ENGINE.append(_Engine())
    return _ENGINE[0]


@functools.cache
def _pullback_version() -> str:
    # The facade's __version__ when it is loaded (it nearly always is): the metadata
    # lookup below costs ~20 ms.
    version = getattr(sys.modules.get("pullback"), "__version__", None)
    if version:
        return version
    from importlib import metadata

    try:
        return metadata.version("pullback")
    except metadata.PackageNotFoundError:
        return "unknown"


# ----- the disk cache -------------------------------------------------------------------

_CACHE_FORMAT = "pullback-kernel-object-2"   # 2: the large code model
OBJECT_MAGIC = b"PBKOBJ1\n"
_HEADER = struct.Struct("<8sQ32s")          # magic, payload length, SHA-256 of the payload
_WARNED_DIRECTORIES: set = set()


def cache_directory() -> safefile.Location:
    """Where kernel object code is cached: ``kernels/`` under the cache root."""
    return safefile.Location(safefile.default_root(), ("kernels",))


class _DiskCache:
    """An open, verified kernel folder: object files named by cache key, each with a
    checksummed header.  Every file operation goes through ``runtime/safefile.py``."""

    def __init__(self, folder: safefile.Folder):
        self.folder = folder

    def __enter__(self) -> _DiskCache:
        return self

    def __exit__(self, *exc) -> None:
        self.folder.close()

    @classmethod
    def current(cls, directory: safefile.Location | Path | None = None,
                create: bool = True) -> _DiskCache | None:
        """The cache at ``directory`` (default ``cache_directory()``; a bare path is its own
        root), or None (warned once) if it is not safe; ``create`` false: None too when it
        does not exist (a reader: no directories made)."""
        if directory is None:
            directory = cache_directory()
        elif not isinstance(directory, safefile.Location):
            directory = safefile.Location(Path(directory))
        try:
            folder = directory.open(create=create)
            return None if folder is None else cls(folder)
        except safefile.Unsafe as error:
            problem = str(error)
        except OSError as error:
            problem = f"cannot create it ({error})"
        if str(directory) not in _WARNED_DIRECTORIES:
            _WARNED_DIRECTORIES.add(str(directory))
            warnings.warn(f"pullback: not using the kernel cache {directory}: {problem}; "
                          f"kernels are compiled in memory only", NativeCacheWarning,
                          stacklevel=4)
        return None

    def read(self, key: str, symbol: str) -> bytes | None:
        """The cached object code defining ``symbol``, or None if absent or damaged
        (damage warned once)."""
        path = self.folder.path / f"{key}.o"
        try:
            blob = self.folder.read(path.name)
        except OSError as error:   # safefile.Unsafe included: a symlink, a FIFO, not ours
            return self._damaged(path, str(error))
        if blob is None:
            return None
        problem = object_file_problem(blob, symbol)
        return self._damaged(path, problem) if problem else blob[_HEADER.size:]

    def _damaged(self, path: Path, reason: str) -> None:
        warnings.warn(f"pullback: ignoring damaged kernel cache file {path} ({reason}); "
                      f"it is rebuilt", NativeCacheWarning, stacklevel=5)

    def write(self, key: str, payload: bytes) -> None:
        header = _HEADER.pack(OBJECT_MAGIC, len(payload), hashlib.sha256(payload).digest())
        try:
            self.folder.write(f"{key}.o", header + payload, 0o600)
        except OSError:
            pass   # the kernel is linked anyway; the next process compiles it again


def object_file_problem(blob: bytes, symbol: str) -> str | None:
    """Why a kernel cache file must not be linked (None: it may).

    LLVM's linker trusts the offsets in an object file, so a damaged or forged file
    could crash the process: the header's length and checksum must hold and, on
    Linux, the payload must be a well-formed relocatable ELF object defining ``symbol``."""
    if len(blob) < _HEADER.size:
        return f"truncated header ({len(blob)} bytes)"
    magic, length, digest = _HEADER.unpack_from(blob)
    payload = blob[_HEADER.size:]
    if magic != OBJECT_MAGIC:
        return "bad magic"
    if len(payload) != length:
        return f"truncated: {len(payload)} of {length} bytes"
    if hashlib.sha256(payload).digest() != digest:
        return "checksum mismatch"
    return _elf_problem(payload, symbol) if _HOST_IS_ELF else None


_HOST_IS_ELF = sys.platform.startswith("linux") and sys.byteorder == "little"
_ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")   # ELF64: e_ident ... e_shstrndx
_ELF_SECTION = struct.Struct("<IIQQQQIIQQ")        # sh_name, sh_type, ..., sh_entsize
_ELF_SYMBOL = struct.Struct("<IBBHQQ")             # st_name, st_info, st_other, st_shndx, ...
_SHT_SYMTAB, _SHT_NOBITS, _STT_FUNC, _ET_REL = 2, 8, 2, 1
_SHT_RELA, _SHT_REL, _ELF_RELA_SIZE = 4, 9, 24
#: the relocations object code may carry (the large code model's, see _target_machine):
#: R_X86_64_NONE, R_X86_64_64 (absolute) and R_X86_64_PC64 (PC-relative), all 64 bits
_RELOCATIONS = frozenset({0, 1, 24})


def relocation_types(data: bytes) -> set:
    """The relocation types in a well-formed ELF64 object's RELA sections (REL: -1)."""
    header = _ELF_HEADER.unpack_from(data)
    offset, count = header[6], header[12]
    found = set()
    for k in range(count):
        kind, start, size = (_ELF_SECTION.unpack_from(data, offset + k * _ELF_SECTION.size)[i]
                             for i in (1, 4, 5))
        if kind == _SHT_REL:
            found.add(-1)
        elif kind == _SHT_RELA:
            for at in range(start, start + size - _ELF_RELA_SIZE + 1, _ELF_RELA_SIZE):
                found.add(struct.unpack_from("<QQq", data, at)[1] & 0xFFFFFFFF)
    return found


def _elf_problem(data: bytes, symbol: str) -> str | None:
    """Why ``data`` is not a 64-bit little-endian relocatable ELF object that defines the
    function ``symbol``, every section inside the file (None: it is)."""
    if len(data) < _ELF_HEADER.size or data[:6] != b"\x7fELF\x02\x01":
        return "not a 64-bit little-endian ELF object"
    header = _ELF_HEADER.unpack_from(data)
    kind, offset, entry_size, count = header[1], header[6], header[11], header[12]
    if kind != _ET_REL or entry_size != _ELF_SECTION.size or (
            offset + count * entry_size > len(data)):
        return "malformed ELF header"
    sections = [_ELF_SECTION.unpack_from(data, offset + i * entry_size) for i in range(count)]
    if any(s[1] != _SHT_NOBITS and s[4] + s[5] > len(data) for s in sections):
        return "an ELF section lies outside the file"
    if not relocation_types(data) <= _RELOCATIONS:
        return "relocations other than 64-bit absolute ones (another code model)"
    wanted = symbol.encode()
    for _, kind, _, _, start, size, link, _, _, entry_size in sections:
        if kind != _SHT_SYMTAB or entry_size != _ELF_SYMBOL.size or link >= count:
            continue
        names = data[sections[link][4]:sections[link][4] + sections[link][5]]
        for at in range(start, start + size - entry_size + 1, entry_size):
            name, info, _, section, _, _ = _ELF_SYMBOL.unpack_from(data, at)
            if (info & 0xF == _STT_FUNC and section != 0
                    and names[name:].split(b"\0", 1)[0] == wanted):
                return None
    return f"the object does not define {symbol}"


# ----- kernels --------------------------------------------------------------------------

_KERNELS: dict[str, Kernel] = {}
_KERNEL_C_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                  ctypes.c_void_p, ctypes.c_void_p)
#: Rough cost per element of a kernel: a base (loads, stores, arithmetic) plus each libm
#: call (bench/native_kernel.py measures libmvec at ~1-2 ns per element).
_BASE_NS, _LIBM_CALL_NS = 0.3, 1.5
#: Calls estimated to take longer than this release the GIL.
_GIL_HOLD_NS = 50_000
#: Splitting across threads costs a pool round trip: 60-100 us measured here with the other
#: core busy, 20-60 us idle (bench/native_kernel.py, table 5).  Two threads pay off once
#: half the work exceeds that; split from this much estimated work on (the estimate can
#: be 2x off).
_PARALLEL_MIN_NS = 400_000
_FOLD = {"sum": np.add.accumulate, "max": np.maximum.accumulate,
         "min": np.minimum.accumulate}
_LIBM_CALL = re.compile(r"\b(" + "|".join([*LIBM_FUNCTIONS, "sigmoid"]) + r")\s*\(")


def compile_kernel(spec: KernelSpec, ir_text: str,
                   directory: safefile.Location | None = None) -> Kernel:
    """The callable kernel for ``ir_text`` (which ``compiler/lower.py`` made from ``spec``).

    Compiled at most once per process (kept by IR hash), and its optimised object
    code at most once per machine (the disk cache; ``directory``, if given, is an
    extra cache looked in first and written to, e.g. beside the user's source).
    """
    ir_hash = hashlib.sha256(ir_text.encode()).hexdigest()
    kernel = _KERNELS.get(ir_hash)
    if kernel is not None:
        return kernel
    engine = _engine()
    with engine.lock:
        kernel = _KERNELS.get(ir_hash)
        if kernel is None:
            symbol = kernel_symbol(ir_text)
            address, how = engine.load(ir_text, symbol, directory)
            kernel = Kernel(spec, ir_text, symbol, address, how)
            _KERNELS[ir_hash] = kernel
    return kernel


_TRAMPOLINE: list = []


def _trampoline():
    """The installed fastcall trampoline (loaded once), or None where the object layouts
    differ from the ones it reads."""
    from . import fastcall

    engine = _engine()
    with engine.lock:
        if not _TRAMPOLINE:
            installed = None
            if fastcall.available():
                address, _ = engine.load(fastcall.trampoline_ir(engine.codegen.triple),
                                         fastcall.SYMBOL)
                installed = fastcall.Installed(address)
            _TRAMPOLINE.append(installed)
    return _TRAMPOLINE[0]


class Kernel:
    """A compiled kernel.

    ``kernel(*arrays, *scalars, out=None)`` returns ``(*outputs, *reductions)``: the
    output arrays (new, or the arrays of ``out``, which may be the inputs' own
    buffers) then each reduction as a Python float.  Inputs that are not
    C-contiguous 1-d arrays of the kernel's dtype are copied (safe casts only).
    """

    def __init__(self, spec: KernelSpec, ir_text: str, symbol: str, address: int, how: str):
        self.spec, self.ir, self.symbol, self.address, self.loaded_from = (
            spec, ir_text, symbol, address, how)
        self.dtype = np.dtype(spec.dtype)
        self._n_arrays, self._n_scalars = len(spec.arrays), len(spec.scalars)
        self._n_outputs, self._n_reductions = len(spec.outputs), len(spec.reductions)
        self._c_function = _KERNEL_C_TYPE(address)
        libm_calls = sum(len(_LIBM_CALL.findall(text)) for _, text in spec.statements)
        self.ns_per_element = _BASE_NS + _LIBM_CALL_NS * libm_calls
        self.parallel_min = max(2 * CHUNK, math.ceil(_PARALLEL_MIN_NS / self.ns_per_element))
        self.release_gil_min = math.ceil(_GIL_HOLD_NS / self.ns_per_element)
        self._fallback = self._call_from_trampoline   # kept alive: the trampoline holds its id
        trampoline = _trampoline()
        from . import fastcall

        if trampoline is None:
            self.call = self._fallback
        else:
            self._descriptor = fastcall.descriptor(
                address, len(spec.arrays), len(spec.scalars), len(spec.outputs),
                spec.reductions, self.dtype, self.parallel_min, self.release_gil_min,
                _THREAD_CELL, CHUNK, self._fallback)
            self.call = trampoline.function(self._descriptor)

    def __repr__(self) -> str:
        return f"<pullback Kernel {self.symbol} {self.spec.dtype} {self.spec.outputs}>"

    def set_parallel_min(self, n: int) -> None:
        """Split calls of at least ``n`` elements over the threads (benchmarks use this to
        measure where splitting pays)."""
        from . import fastcall

        self.parallel_min = n
        if self.call is not self._fallback:
            self._descriptor[fastcall.FIELDS.index("parallel_min")] = n

    def __call__(self, *args, out=None):
        """``(*outputs, *reductions)``; ``kernel.call(*args[, *out])`` is the same without the
        keyword, ~0.1 us cheaper (a builtin)."""
        if out is None:
            return self.call(*args)
        return self.call(*args, *out)

    def _allocate(self, n: int) -> tuple:
        return tuple([np.empty(n, self.dtype) for _ in range(self._n_outputs)])

    def _combine(self, partials: np.ndarray) -> tuple:
        """The reductions from the per-chunk partials, folded in chunk order (the
        trampoline folds the same way, so the result does not depend on the path)."""
        table = partials.reshape(-1, self._n_reductions)
        return tuple(float(_FOLD[op](table[:, r])[-1])
                     for r, (_, op) in enumerate(self.spec.reductions))

    def _call_from_trampoline(self, *args):
        leading = self._n_arrays + self._n_scalars
        if len(args) == leading:
            return self._call_carefully(args, None)
        if len(args) == leading + self._n_outputs:
            return self._call_carefully(args[:leading], args[leading:])
        return self._call_carefully(args, None)     # raises the argument-count error

    # ----- the careful path: any argument, copies where needed, threads for large n -----

    def _call_carefully(self, args, out):
        spec = self.spec
        if len(args) != self._n_arrays + self._n_scalars:
            raise TypeError(f"kernel takes {self._n_arrays} arrays ({', '.join(spec.arrays)}) "
                            f"and {self._n_scalars} scalars ({', '.join(spec.scalars)}), "
                            f"got {len(args)} arguments")
        inputs = [self._input(a, name) for a, name in zip(args, spec.arrays)]
        n = len(inputs[0])
        for array, name in zip(inputs, spec.arrays, strict=True):
            if len(array) != n:
                raise ValueError(f"kernel array {name!r} has length {len(array)}, "
                                 f"{spec.arrays[0]!r} has {n}")
        scalars = [self._scalar(s, name)
                   for s, name in zip(args[self._n_arrays:], spec.scalars, strict=True)]
        if out is None:
            outputs = targets = self._allocate(n)
        else:
            outputs = self._check_out(out, n)
            targets = [o if o.flags.c_contiguous else np.empty(n, self.dtype) for o in outputs]
            inputs = [_unshared(a, targets) for a in inputs]
        partials = np.empty(max(1, -(-n // CHUNK) * self._n_reductions))
        if n:
            self._run(n, inputs, scalars, targets, partials)
        for target, output in zip(targets, outputs, strict=True):
            if target is not output:
                output[...] = target
        return tuple(outputs) + self._reductions_of(partials, n)

    def _input(self, value, name: str) -> np.ndarray:
        array = np.asarray(value)
        if array.dtype != self.dtype and not np.can_cast(array.dtype, self.dtype, "safe"):
            raise TypeError(f"kernel array {name!r} is {array.dtype}, the kernel computes in "
                            f"{self.dtype} (cast it explicitly)")
        if array.ndim != 1:
            raise ValueError(f"kernel array {name!r} must be 1-d (flatten it), "
                             f"got shape {array.shape}")
        return np.ascontiguousarray(array, dtype=self.dtype)

    @staticmethod
    def _scalar(value, name: str) -> float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"kernel scalar {name!r} must be a number, got {value!r}") from None

    def _check_out(self, out, n: int) -> tuple:
        out = tuple(out)
        if len(out) != self._n_outputs:
            raise ValueError(f"out= needs {self._n_outputs} arrays ({', '.join(self.spec.outputs)})"
                             f", got {len(out)}")
        for array, name in zip(out, self.spec.outputs, strict=True):
            if not isinstance(array, np.ndarray) or array.dtype != self.dtype \
                    or array.shape != (n,) or not array.flags.writeable:
                raise ValueError(f"out array for {name!r} must be a writeable {self.dtype} "
                                 f"array of shape ({n},)")
        return out

    def _reductions_of(self, partials: np.ndarray, n: int) -> tuple:
        if not self._n_reductions:
            return ()
        if n == 0:
            empty = [name for name, op in self.spec.reductions if op != "sum"]
            if empty:
                raise ValueError(f"kernel reduction of {empty[0]!r}: max/min of zero elements")
            return (0.0,) * self._n_reductions
        return self._combine(partials)

    def _run(self, n: int, inputs, scalars, outputs, partials) -> None:
        """Through ctypes (the GIL is released), split at chunk bounds over the threads."""
        pointers = np.array([a.ctypes.data for a in (*inputs, *outputs)], dtype=np.uintp)
        scalar_block = np.array(scalars or [0.0], dtype=np.float64)
        args = (pointers.ctypes.data, scalar_block.ctypes.data, partials.ctypes.data)
        threads = min(thread_count(), -(-n // CHUNK)) if n >= self.parallel_min else 1
        if threads == 1:
            self._c_function(0, n, *args)
            return
        chunks = -(-n // CHUNK)
        bounds = [min(n, (chunks * t // threads) * CHUNK) for t in range(threads + 1)]
        pool = _pool()
        pending = [pool.submit(self._c_function, bounds[t], bounds[t + 1], *args)
                   for t in range(1, threads)]
        self._c_function(bounds[0], bounds[1], *args)
        for future in pending:
            future.result()


def _unshared(array: np.ndarray, outputs) -> np.ndarray:
    """``array``, or a copy if it overlaps an output other than as the very same buffer."""
    for output in outputs:
        if output is array or not np.may_share_memory(array, output):
            continue
        if output.__array_interface__["data"][0] != array.__array_interface__["data"][0]:
            return array.copy()
    return array


# ----- threads --------------------------------------------------------------------------

def _default_threads() -> int:
    configured = os.environ.get("PULLBACK_THREADS")
    if configured:
        return max(1, int(configured))
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


#: The thread count, where the trampoline reads it on every call.
_THREAD_CELL = np.array([_default_threads()], dtype=np.int64)


def thread_count() -> int:
    """Threads a large kernel call uses: ``set_threads``, else ``$PULLBACK_THREADS``, else
    the CPUs this process may run on."""
    return int(_THREAD_CELL[0])


def set_threads(count: int | None) -> None:
    """Cap the threads of large kernel calls (None: back to the default)."""
    _THREAD_CELL[0] = _default_threads() if count is None else max(1, int(count))


_POOL: list = []
_POOL_LOCK = threading.Lock()


def _forget_pool_after_fork() -> None:
    # A forked child has none of the parent's threads: a new pool is made on demand.
    _POOL.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _pool() -> ThreadPoolExecutor:
    with _POOL_LOCK:
        wanted = thread_count() - 1
        if not _POOL or _POOL[0][0] < wanted:
            _POOL[:] = [(wanted, ThreadPoolExecutor(max_workers=wanted,
                                                    thread_name_prefix="pullback-kernel"))]
        return _POOL[0][1]
