"""memrl's C++ CPU kernels (``csrc/``: the GRU and SHM recurrences, SHM's inputs), built on first use.

The extension is compiled once per machine with torch.utils.cpp_extension (a C++ compiler and
``ninja``, a package dependency; ~1-2 min) and cached under $TORCH_EXTENSIONS_DIR (default
~/.cache/torch_extensions), one folder per Python version, torch version and CPU instruction set
(AVX-512/AVX2 code is only built, and loaded, where the CPU has it). ``available()`` says whether
that worked; the layers fall back to their PyTorch paths when it did not (``applies``/``require``).
"""
from __future__ import annotations

import functools
import logging
import os
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)
_CSRC = Path(__file__).with_name("csrc")
SOURCES = [_CSRC / name for name in ("bindings.cpp", "gru_cpu.cpp", "shm_cpu.cpp", "shm_inputs_cpu.cpp")]


def _isa_flags() -> tuple:
    """(tag, compiler flags) for the vector instructions this CPU runs, from torch's own probe
    (MEMRL_CPU_ISA=avx512|avx2|base overrides it, e.g. to compare builds)."""
    capability = os.environ.get("MEMRL_CPU_ISA") or torch.backends.cpu.get_cpu_capability().lower()
    if capability == "avx512":
        return "avx512", ["-mavx2", "-mfma", "-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl"]
    if capability == "avx2":
        return "avx2", ["-mavx2", "-mfma"]
    return "base", []


def _build_dir() -> Path:
    """Where the kernels are built and cached (a build does not load under another torch)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    tag = f"py{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}-{_isa_flags()[0]}"
    path = Path(root) / f"memrl_cpu-{tag.replace('+', '_')}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _clear_stale_lock(build_dir: Path, max_age_s: float = 600.0) -> None:
    """A build killed hard (SIGKILL, OOM) leaves torch's lock file behind, and every later build
    would wait on it forever; a build takes ~1-2 min, so a lock older than ``max_age_s`` is stale."""
    lock = build_dir / "lock"
    try:
        if time.time() - lock.stat().st_mtime > max_age_s:
            log.warning("removing the stale build lock %s", lock)
            lock.unlink()
    except FileNotFoundError:
        pass


@functools.lru_cache(maxsize=None)
def extension():
    """The compiled module (raises when it cannot be built)."""
    from torch.utils.cpp_extension import load
    log.info("loading memrl's CPU kernels (compiled on the first use on a machine, ~1-2 min)")
    build_dir = _build_dir()
    _clear_stale_lock(build_dir)
    # -fopenmp: ATen's parallel_for is an OpenMP region compiled into the caller; the process's
    # libgomp (loaded by torch) serves it. The ISA flags let csrc/vec.h's packs map to registers.
    flags = ["-O3", "-fopenmp", *_isa_flags()[1]]
    return load(name="memrl_cpu", sources=[str(s) for s in SOURCES], extra_cflags=flags,
                extra_ldflags=["-fopenmp"], build_directory=str(build_dir), verbose=False)


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """Whether the kernels build (or are cached) and load here; logs why not, once."""
    try:
        extension()
        return True
    except Exception as e:  # no compiler / ninja / headers
        log.warning("memrl's CPU kernels are unavailable (%s: %s); GRU and SHM use their PyTorch paths",
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
