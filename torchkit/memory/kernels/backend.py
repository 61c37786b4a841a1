"""Which implementation of a scan runs: the C++ CPU kernel, torch.compile'd PyTorch kernels or eager
ones (``scan_backend``), used by the SHM scan (``shm_scan``) and S6's selective scan."""
from __future__ import annotations

import functools
import os

import torch
from torch import Tensor

from .. import native as _native


@functools.lru_cache(maxsize=None)
def compile_works(device_type: str) -> bool:
    """Whether torch.compile can build and run a kernel on this device type (probed once)."""
    try:
        f = torch.compile(lambda a: torch.sigmoid(a) * 2 + 1, fullgraph=True)
        a = torch.randn(4, 3, device=device_type)
        return bool(torch.allclose(f(a), torch.sigmoid(a) * 2 + 1))
    except Exception:  # no C++/Triton toolchain, unsupported Python, …
        return False


BACKENDS = ("eager", "compiled", "auto")       # PyTorch-only scans
SHM_BACKENDS = ("native", *BACKENDS)             # SHM's: also the C++ CPU kernel (csrc/shm_cpu.cpp)
S6_BACKENDS = SHM_BACKENDS                       # S6's: also the C++ CPU kernel (csrc/s6_cpu.cpp)


def scan_backend(backend: str, x: Tensor, native: bool = False) -> str:
    """Resolve ``backend`` to "native", "eager" or "compiled" for inputs like ``x``.

    ``native`` (the SHM scan): the C++ CPU kernel is a choice. auto = native for float32/float64 on
    CPU where it builds; otherwise compiled when torch.compile works on x's device, except for
    float64 (the dtype of checks, where a compile per test shape costs more than it saves) and
    inside an outer compile. Where the native kernel does not apply, the environment variable
    MEMRL_SCAN_BACKEND=eager|compiled overrides auto (e.g. in tests, to skip the one-time compile
    of 10–60 s). Used by the SHM and S6 scans (both with ``native``)."""
    valid = SHM_BACKENDS if native else BACKENDS
    if backend not in valid:
        raise ValueError(f"scan backend must be one of {valid}, got {backend!r}")
    if backend == "native":
        _native.require(x, "scan backend 'native'", "backend=auto, compiled or eager")
        return backend
    if backend == "auto":
        if native and not torch.compiler.is_compiling() and _native.applies(x):
            return "native"
        forced = os.environ.get("MEMRL_SCAN_BACKEND", "auto")
        if forced in ("eager", "compiled"):
            return forced
        if x.dtype == torch.float64 or torch.compiler.is_compiling():
            return "eager"
        return "compiled" if compile_works(x.device.type) else "eager"
    return backend
