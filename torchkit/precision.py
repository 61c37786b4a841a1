"""Mixed precision for training (``precision: fp32 | bf16``).

bf16 = the update's forward passes run under ``torch.autocast(device_type, dtype=torch.bfloat16)``:
the matrix products of embedders, heads and memory input projections run in bfloat16 (on CPUs with
AVX512-BF16/AMX and on GPUs with tensor cores several times faster than float32), while

  - parameters (master weights), gradients and optimiser state stay float32;
  - losses, TD targets and the policy distribution are float32 (the heads' output layers run in
    float32: ``torchkit.nets.relu_mlp``);
  - every memory layer keeps its recurrent state and its recurrence/scan in float32: the layer
    casts its projected inputs up and runs the recurrence with autocast off (``recurrence_dtype``,
    ``full_precision``), since bf16 rounding would compound over the steps of a scan.

``auto`` (the default) = bf16 where it pays (``bf16_preferred``: GPUs with bf16, CPUs with AMX
tiles) and float32 elsewhere; the choice is logged.

Where the device has no bf16 support (``bf16_supported``: a CPU without AVX512-BF16/AMX, where
oneDNN only emulates bf16 — slower than float32 — or an old GPU), ``precision=bf16`` falls back to
float32 with a logged warning, so one sweep can run on mixed nodes; ``autocast_dtype`` returns None then.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Optional

import torch
from torch import Tensor

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "auto")


def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 matrix products run natively (fast) on ``device``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN
            return False
    return False


def bf16_preferred(device: torch.device) -> bool:
    """Whether ``precision=auto`` picks bf16 on ``device``: GPUs with bf16 (tensor cores) and CPUs
    with AMX tiles, where bf16 GEMMs run several times faster than float32. CPUs with only
    AVX512-BF16 dot products (e.g. AMD Zen 4) gain less (docs/speed.md) and stay float32."""
    device = torch.device(device)
    if device.type == "cpu":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
        return bool(amx is not None and amx() and bf16_supported(device))
    return bf16_supported(device)


def autocast_dtype(precision: str, device) -> Optional[torch.dtype]:
    """The autocast dtype of a training ``precision`` on ``device``: None (float32) or torch.bfloat16.
    ``auto``: bf16 where ``bf16_preferred``, else float32 (logged). Unknown values raise; bf16
    without device support falls back to float32 with a warning."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported: use one of {', '.join(PRECISIONS)} "
                         f"(e.g. precision=bf16 for bfloat16 mixed precision)")
    device = torch.device(device)
    if precision == "auto":
        chosen = "bf16" if bf16_preferred(device) else "fp32"
        log.info("precision=auto: %s on %s", chosen, device.type)
        precision = chosen
    if precision == "fp32":
        return None
    if not bf16_supported(device):
        log.warning("precision=bf16: %s has no native bfloat16 support (CPU: AVX512-BF16/AMX; GPU: "
                    "compute capability >= 8.0), training runs in float32 instead", device.type)
        return None
    return torch.bfloat16


def training_autocast(device, dtype: Optional[torch.dtype]):
    """The autocast region of an update's forward passes (a no-op context for float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def parameters_changed() -> None:
    """Call after an in-place parameter update (an optimiser step) inside an autocast region.
    Autocast caches the bf16 copy of each float32 leaf parameter it casts until the outermost region
    exits, keyed by the tensor and not by its version: without this, a forward after the step (the
    critic's, for the actor loss) would read the weights from before it."""
    torch.clear_autocast_cache()


def full_precision(x: Tensor):
    """Autocast off for ``x``'s device: for recurrences, backward passes and optimiser steps."""
    return torch.autocast(x.device.type, enabled=False)


def lower_precision(device_type: str) -> Optional[torch.dtype]:
    """The autocast dtype active for ``device_type`` right now, or None."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def recurrence_dtype(x: Tensor, param: Tensor) -> torch.dtype:
    """The dtype a memory layer's recurrence and state run in: its parameters' (float32 master
    weights under autocast), or x's when that is wider (float64 checks)."""
    return torch.promote_types(x.dtype, param.dtype)
