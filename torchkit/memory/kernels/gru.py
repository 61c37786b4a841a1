"""Fused GRU recurrence for CPU training (``csrc/gru_cpu.cpp``), and ``gru_steps``, its reference.

PyTorch's CPU GRU runs a small autograd graph per time step; its backward costs ~10 node calls per
step, which dominates at the reference's sizes (B=64, T=100, H=64-128). The fused kernel loops over
time in C++ with one matrix product per step each way (MKL) and plain loops for the gates, so a
whole sequence is one autograd node. Same parameters and math as ``nn.GRU`` (gate order r, z, n).

The kernel is part of memrl's C++ extension (``native``: compiled once and cached);
``fused_available()`` says whether that worked; callers fall back to ``nn.GRU`` when it did not.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor

from .. import native


def fused_available() -> bool:
    """Whether the C++ kernels build (or are cached) and load here (``native.available``)."""
    return native.available()


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
            return "fused" if native.applies(x) else "torch"
    if backend == "fused":
        native.require(x, "GRU backend 'fused'", "backend=auto or torch")
    return backend


class _FusedGRU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gi, h0, w_hh, b_hh, keep):
        """gi [T,B,3H] = W_ih x + b_ih, h0 [B,H], keep [T,B] (0 before a new episode) or empty."""
        ext = native.extension()
        save = any(ctx.needs_input_grad)
        out = ext.gru_forward(gi, h0, w_hh, b_hh, keep, save)
        if save:
            ctx.save_for_backward(w_hh, keep, *out[1:])  # gates rz, n, gh_n and masked states hp
        return out[0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dhs):
        dgi, dh0, dw, db = native.extension().gru_backward(dhs, *ctx.saved_tensors)
        return dgi, dh0, dw, db, None


def fused_gru(x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor,
              reset: Optional[Tensor] = None) -> Tensor:
    """All hidden states [B,T,H] of nn.GRU's recurrence over x [B,T,D] from h0 [B,H]; reset [B,T]
    bool zeroes the state before step t (the GRU's initial state is zero). The last state is
    out[:, -1]. Under autocast only the input projection runs in the lower precision."""
    # the input projection may run under autocast (bf16); the recurrence runs in h0's dtype
    gi = torch.nn.functional.linear(x.transpose(0, 1), w_ih, b_ih).to(h0.dtype).contiguous()  # [T,B,3H]
    keep = gi.new_empty(0) if reset is None else (~reset).t().to(h0.dtype).contiguous()
    hs = _FusedGRU.apply(gi, h0.contiguous(), w_hh.contiguous(), b_hh.contiguous(), keep)  # [T,B,H]
    return hs.transpose(0, 1)


def gru_steps(x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor,
              reset: Optional[Tensor] = None) -> Tensor:
    """The reference of ``fused_gru`` (same arguments and result): nn.GRU's equations one step at
    a time, with gates r, z, n stacked in that order in the weights' rows,

        r = σ(W_ir x + b_ir + W_hr h + b_hr),  z = σ(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),  h' = (1 − z) ⊙ n + z ⊙ h

    and h zeroed before step t where reset[:, t]."""
    h, hs = h0, []
    for t in range(x.shape[1]):
        if reset is not None:
            h = h * (~reset[:, t, None]).to(h.dtype)
        ir, iz, i_n = torch.nn.functional.linear(x[:, t], w_ih, b_ih).chunk(3, -1)
        hr, hz, hn = torch.nn.functional.linear(h, w_hh, b_hh).chunk(3, -1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(i_n + r * hn)
        h = (1 - z) * n + z * h
        hs.append(h)
    return torch.stack(hs, 1)
