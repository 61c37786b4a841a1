"""Fused GRU recurrence for CPU training (``csrc/gru_cpu.cpp``, built on first use).

PyTorch's CPU GRU runs a small autograd graph per time step; its backward costs ~10 node calls per
step, which dominates at the reference's sizes (B=64, T=100, H=64-128). The fused kernel loops over
time in C++ with one matrix product per step each way (MKL) and plain loops for the gates, so a
whole sequence is one autograd node. Same parameters and math as ``nn.GRU`` (gate order r, z, n).

The extension is compiled once per machine with torch.utils.cpp_extension (a C++ compiler and
``ninja``, a package dependency) and cached under $TORCH_EXTENSIONS_DIR (default
~/.cache/torch_extensions), one folder per Python and torch version. ``fused_available()`` says
whether that worked; callers fall back to ``nn.GRU`` when it did not.
"""
from __future__ import annotations

import functools
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

log = logging.getLogger(__name__)
_SOURCE = Path(__file__).with_name("csrc") / "gru_cpu.cpp"


def _build_dir() -> Path:
    """Where the kernel is built and cached: one folder per Python and torch version (a build
    does not load under another torch)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    tag = f"py{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}".replace("+", "_")
    path = Path(root) / f"memrl_gru_cpu-{tag}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _clear_stale_lock(build_dir: Path, max_age_s: float = 600.0) -> None:
    """A build killed hard (SIGKILL, OOM) leaves torch's lock file behind, and every later build
    would wait on it forever; a build takes ~1 min, so a lock older than ``max_age_s`` is stale."""
    lock = build_dir / "lock"
    try:
        if time.time() - lock.stat().st_mtime > max_age_s:
            log.warning("removing the stale build lock %s", lock)
            lock.unlink()
    except FileNotFoundError:
        pass


@functools.lru_cache(maxsize=None)
def _extension():
    from torch.utils.cpp_extension import load
    log.info("loading the fused CPU GRU kernel (compiled on the first use on a machine, ~1 min)")
    build_dir = _build_dir()
    _clear_stale_lock(build_dir)
    return load(name="memrl_gru_cpu", sources=[str(_SOURCE)], extra_cflags=["-O3"],
                build_directory=str(build_dir), verbose=False)


@functools.lru_cache(maxsize=None)
def fused_available() -> bool:
    """Whether the C++ kernel builds (or is cached) and loads here; logs why not, once."""
    try:
        _extension()
        return True
    except Exception as e:  # no compiler / ninja / headers
        log.warning("fused CPU GRU kernel unavailable (%s: %s); GRU uses torch.nn.GRU",
                    type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return False


GRU_BACKENDS = ("auto", "fused", "torch")


def gru_backend(backend: str, x: Tensor) -> str:
    """Resolve ``backend`` to "fused" or "torch" for inputs like ``x``. auto = fused on CPU when the
    kernel is available and x is float32/float64 (MEMRL_GRU_BACKEND=fused|torch overrides auto);
    CUDA keeps cuDNN's GRU."""
    if backend not in GRU_BACKENDS:
        raise ValueError(f"GRU backend must be one of {GRU_BACKENDS}, got {backend!r}")
    if backend == "auto":
        forced = os.environ.get("MEMRL_GRU_BACKEND", "auto")
        if forced in ("fused", "torch"):
            backend = forced
        else:
            cpu_float = x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            return "fused" if cpu_float and fused_available() else "torch"
    if backend == "fused":
        if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"GRU backend 'fused' is a float32/float64 CPU kernel, got {x.dtype} on "
                             f"{x.device.type}; use backend=auto or torch")
        if not fused_available():
            raise RuntimeError("GRU backend 'fused' needs the C++ kernel, which did not build here (a C++ "
                               "compiler and the ninja package are needed); use backend=auto or torch")
    return backend


class _FusedGRU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gi, h0, w_hh, b_hh, keep):
        """gi [T,B,3H] = W_ih x + b_ih, h0 [B,H], keep [T,B] (0 before a new episode) or empty."""
        ext = _extension()
        save = any(ctx.needs_input_grad)
        out = ext.forward(gi, h0, w_hh, b_hh, keep, save)
        if save:
            ctx.save_for_backward(w_hh, keep, *out[1:])  # gates rz, n, gh_n and masked states hp
        return out[0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dhs):
        dgi, dh0, dw, db = _extension().backward(dhs, *ctx.saved_tensors)
        return dgi, dh0, dw, db, None


def fused_gru(x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor,
              reset: Optional[Tensor] = None) -> Tensor:
    """All hidden states [B,T,H] of nn.GRU's recurrence over x [B,T,D] from h0 [B,H]; reset [B,T]
    bool zeroes the state before step t (the GRU's initial state is zero). The last state is
    out[:, -1]."""
    gi = torch.nn.functional.linear(x.transpose(0, 1), w_ih, b_ih).contiguous()  # [T,B,3H]
    keep = x.new_empty(0) if reset is None else (~reset).t().to(x.dtype).contiguous()
    hs = _FusedGRU.apply(gi, h0.contiguous(), w_hh.contiguous(), b_hh.contiguous(), keep)  # [T,B,H]
    return hs.transpose(0, 1)
