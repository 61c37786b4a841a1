"""memrl's C++ CPU kernels (``csrc/``: the GRU, SHM, S6 and FFM recurrences, SHM's inputs, dropout
masks): built once, cached.

The extension is compiled with torch.utils.cpp_extension (a C++ compiler and ``ninja``, a package
dependency; ~1-2 min) on first use, or ahead of time with ``python -m torchkit.memory.native
--build``, for the vector instructions the CPU has (AVX-512/AVX2 code is only built, and loaded,
where the CPU has it; MEMRL_CPU_ISA=avx512|avx2|base overrides the choice). ``available()`` says
whether that worked; the layers fall back to their PyTorch paths when it did not
(``applies``/``require``).

The cache (under $TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions) is keyed by content:
one folder per hash of the sources, the flags, the ISA and the Python/torch versions, so checkouts
with the same sources share a build and checkouts with different ones never rebuild each other's.
A build holds an ``fcntl.flock`` on the folder's ``lock`` file, which the OS releases when the
builder dies (SIGKILL, OOM, a preempted job), so a killed build never blocks a later one: the next
process takes the lock, clears the dead build's scratch folder (torch's own lock file with it) and
builds again. The built library is renamed into place only when complete, so a half-written one
is never loaded, and loading a published build takes no lock at all.
"""
from __future__ import annotations

import argparse
import fcntl
import functools
import hashlib
import importlib.util
import logging
import os
import shutil
import socket
import sys
import sysconfig
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

log = logging.getLogger(__name__)
CSRC = Path(__file__).with_name("csrc")
NAME = "memrl_cpu"
ISAS = ("avx512", "avx2", "base")  # MEMRL_CPU_ISA values
_LAYOUT = "1"  # bump when the cache layout or what the key covers changes


def _isa_flags(isa: Optional[str] = None) -> tuple:
    """(tag, compiler flags) for the vector instructions this CPU runs, from torch's own probe
    (``isa`` or MEMRL_CPU_ISA=avx512|avx2|base overrides it, e.g. to compare builds)."""
    forced = isa or os.environ.get("MEMRL_CPU_ISA")
    if forced and forced not in ISAS:
        raise ValueError(f"MEMRL_CPU_ISA must be one of {ISAS} (or unset: this CPU's), got {forced!r}")
    capability = forced or torch.backends.cpu.get_cpu_capability().lower()
    if capability == "avx512":
        return "avx512", ["-mavx2", "-mfma", "-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl"]
    if capability == "avx2":
        return "avx2", ["-mavx2", "-mfma"]
    return "base", []


def _flags(isa: Optional[str] = None) -> tuple:
    """(ISA tag, cflags, ldflags). -fopenmp: ATen's parallel_for is an OpenMP region compiled into
    the caller; the process's libgomp (loaded by torch) serves it. The ISA flags let csrc/vec.h's
    packs map to registers."""
    tag, isa_flags = _isa_flags(isa)
    return tag, ["-O3", "-fopenmp", *isa_flags], ["-fopenmp"]


def cache_root() -> Path:
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")


def _read_sources(src_dir: Path) -> dict:
    """{file name: bytes} of the extension's sources (every .cpp and .h in ``src_dir``)."""
    files = sorted(p for p in src_dir.iterdir() if p.suffix in (".cpp", ".h"))
    if not any(p.suffix == ".cpp" for p in files):
        raise FileNotFoundError(f"no C++ sources (*.cpp) in {src_dir}")
    return {p.name: p.read_bytes() for p in files}


class Build:
    """Where one build of an extension lives: ``root/<name>-<isa>-<versions>-<key>/``, holding
    ``lock`` (the flock), the published ``<module>.so`` and, only while building (or after a
    killed build), a scratch folder ``build-<host>-<pid>/``. ``key`` hashes everything the binary depends on."""

    def __init__(self, name: str, src_dir: Path, isa: Optional[str] = None, root: Optional[Path] = None):
        self.sources = _read_sources(Path(src_dir))  # read once: what is hashed is what is compiled
        self.isa, self.cflags, self.ldflags = _flags(isa)
        h = hashlib.sha256()
        for part in (_LAYOUT, name, self.isa, sys.version, sys.platform, torch.__version__,
                     str(torch.version.git_version), *self.cflags, "|", *self.ldflags):
            h.update(part.encode() + b"\0")
        for fname, data in self.sources.items():
            h.update(fname.encode() + b"\0" + hashlib.sha256(data).digest())
        self.key = h.hexdigest()[:16]
        self.module = f"{name}_{self.key}"  # the module's own name: unique per key, so one process
        # can hold several builds and torch's in-process versioning never renames it
        tag = f"py{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}".replace("+", "_")
        self.dir = Path(root or cache_root()) / f"{name}-{self.isa}-{tag}-{self.key}"
        self.library = self.dir / f"{self.module}{'.pyd' if sys.platform == 'win32' else '.so'}"

    def load(self):
        """The compiled module: the published build if there is one, else built now under the lock."""
        if self.library.exists():  # published builds are complete: no lock needed
            return _import(self.module, self.library)
        self.dir.mkdir(parents=True, exist_ok=True)
        with _flock(self.dir / "lock") as lock:
            if self.library.exists():  # built by the process we waited for
                return _import(self.module, self.library)
            return self._build(exclusive=lock.held)

    def _build(self, exclusive: bool = True):
        """Build in a scratch folder and publish by rename. ``exclusive``: the caller holds the
        lock, so no other build runs (without it, concurrent builds only duplicate work)."""
        from torch.utils import cpp_extension
        # Only the lock holder builds, so any scratch folder here was left by a killed build (its
        # half-written objects and torch's FileBaton 'lock', on which torch's load() would wait).
        # Each build has its own folder: a dead build's compiler may still be writing into its own.
        for old in self.dir.glob("build-*") if exclusive else ():
            shutil.rmtree(old, ignore_errors=True)
        scratch = self.dir / f"build-{socket.gethostname()}-{os.getpid()}"
        src = scratch / "src"
        src.mkdir(parents=True)
        for fname, data in self.sources.items():
            (src / fname).write_bytes(data)
        log.warning("building memrl's C++ kernels (%s, once per source version; ~1-2 min) in %s",
                    self.isa, self.dir)
        start = time.perf_counter()
        # torch renames a module it has built before in this process from another folder (name_v1);
        # the published library must keep its own name, so forget that earlier build
        versions = getattr(cpp_extension, "JIT_EXTENSION_VERSIONER", None)
        if versions is not None:
            versions.entries.pop(self.module, None)
        path = os.environ.get("PATH", "")
        try:
            os.environ["PATH"] = _with_ninja(path)
            module = cpp_extension.load(
                name=self.module, sources=[str(src / f) for f in self.sources if f.endswith(".cpp")],
                extra_cflags=self.cflags, extra_ldflags=self.ldflags, build_directory=str(scratch))
            os.replace(scratch / self.library.name, self.library)  # atomic: complete or absent
        finally:
            os.environ["PATH"] = path
            shutil.rmtree(scratch, ignore_errors=True)
        log.warning("built memrl's C++ kernels in %.0f s: %s", time.perf_counter() - start, self.library)
        sys.modules[self.module] = module
        return module


def _with_ninja(path: str) -> str:
    """``path`` with the environment's scripts folder added when ninja is only there: the ninja
    package installs it beside python, which is not on PATH when a venv's python runs unactivated."""
    scripts = sysconfig.get_path("scripts")
    if shutil.which("ninja", path=path) is None and scripts and shutil.which("ninja", path=scripts):
        return os.pathsep.join([scripts, path])
    return path


class _flock:
    """An exclusive fcntl.flock on ``path`` (created if needed), held for a ``with`` block. The OS
    releases it when the holder's process dies, however it dies; the file itself may stay. On a file
    system without flock (e.g. Lustre mounted without it) ``held`` is False and nothing waits."""

    def __init__(self, path: Path):
        self.path = path
        self.held = False

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 200, 0).decode(errors="replace").strip() or "another process"
            log.warning("waiting for %s, which is building memrl's C++ kernels (lock %s)", holder, self.path)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as e:  # ENOLCK, ENOSYS, EOPNOTSUPP: no flock on this file system
            log.warning("cannot lock %s (%s): building without a lock; concurrent runs may build the "
                        "kernels twice (set TORCH_EXTENSIONS_DIR to a local disk to avoid it)", self.path, e)
            return self
        self.held = True
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # closing the descriptor releases the lock


def _import(module: str, library: Path):
    if module in sys.modules:
        return sys.modules[module]
    spec = importlib.util.spec_from_file_location(module, library)
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    sys.modules[module] = ext
    return ext


@functools.lru_cache(maxsize=None)
def extension():
    """The compiled module (raises when it cannot be built)."""
    return Build(NAME, CSRC).load()


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """Whether the kernels build (or are cached) and load here; logs why not, once."""
    try:
        extension()
        return True
    except Exception as e:  # no compiler / ninja / headers
        log.warning("memrl's CPU kernels are unavailable (%s: %s); the memory layers use their PyTorch paths",
                    type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return False


def _cpu_float(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def applies(x: Tensor) -> bool:
    """Whether a kernel here can run on inputs like ``x``: float32/float64 on CPU, and it built."""
    return _cpu_float(x) and available()


def require(x: Tensor, what: str, instead: str) -> None:
    """Raise a clear error when a kernel here was asked for explicitly but cannot run on ``x``;
    ``what`` names the choice (e.g. "GRU backend 'fused'"), ``instead`` the alternatives."""
    if not _cpu_float(x):
        raise ValueError(f"{what} is a float32/float64 CPU kernel, got {x.dtype} on {x.device.type}; "
                         f"use {instead}")
    if not available():
        raise RuntimeError(f"{what} needs memrl's C++ kernels, which did not build here (a C++ compiler "
                           f"and the ninja package are needed); use {instead}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m torchkit.memory.native",
                                description="Build memrl's C++ CPU kernels ahead of time into the cache "
                                            "($TORCH_EXTENSIONS_DIR), so that runs only load them. Builds "
                                            "for this CPU's instruction set (or MEMRL_CPU_ISA's).")
    p.add_argument("--build", action="store_true", help="build (or find) the kernels and print where")
    args = p.parse_args(argv)
    if not args.build:
        p.error("nothing to do: pass --build")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    build = Build(NAME, CSRC)
    build.load()  # builds if needed, and checks that it loads
    print(f"memrl's C++ kernels ({build.isa}): {build.library} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
