"""FFM: Fast and Forgetful Memory (Morad et al., 2023).

    (ỹ, thru, g) = pre(x)                  ỹ [B,T,m], thru [B,T,O], g [B,T,m+O]
    (g_in, g_out) = σ(g)
    S_t = γ ⊙ S_{t-1} + (ỹ_t ⊙ g_in,t) 1_cᵀ     S [B,m,c] complex, γ[i,j] = exp(a_i + i·b_j), a < 0
    z_t = mix([Re S_t, Im S_t])            2mc -> O (real/imag interleaved per element)
    out_t = LN(z_t) ⊙ g_out,t + thru_t ⊙ (1 - g_out,t)       (LayerNorm without affine)

On CPU (float32/float64, where memrl's C++ kernels build; ``backend``) the recurrence runs step by
step in real arithmetic on (re, im) pairs, in the input's dtype (csrc/ffm_cpu.cpp; |γ| < 1 keeps it
stable), writing every state straight into the [B,T,m,c,2] layout that ``mix`` reads. Elsewhere it
is evaluated in closed form per chunk, in complex128:
    S_t = γ^t (Q_t - Q_{r-1}) + [no reset in 0..t] γ^{t+1} S_in,   Q_t = Σ_{j<=t} γ^{-j} x_j,
where r is the last reset at or before t (Q_{-1} = 0). |γ^{-j}| <= e^{0.683 j}, so chunks of a few
hundred steps stay far from float64 overflow. The state is stored as a real view [B,m,c,2].
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from . import native
from ..precision import full_precision, recurrence_dtype
from .base import Memory, State

# The reference's bound on -a: ln(DBL_MAX)/max_len - 0.01 with max_len = 1024 (≈ 0.6832).
A_LIMIT = math.log(torch.finfo(torch.float64).max) / 1024 - 0.01


def _check_sizes(owner: str, **sizes) -> None:
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{owner}: {name} must be a positive int, got {v!r}; "
                             f"set {name} to an integer >= 1")


def ffa_closed_form(x: Tensor, s0: Optional[Tensor], log_gamma: Tensor,
                    reset: Optional[Tensor] = None) -> Tensor:
    """All states S_t of S_t = γ ⊙ S_{t-1} + x_t for one chunk, in closed form.

    x [B,L,m,1] (broadcast over c) complex; s0 [B,m,c] or None (= 0); log_gamma = a + i·b [m,c];
    reset [B,L] bool.
    Returns S [B,L,m,c].
    """
    L = x.shape[1]
    t = torch.arange(L, device=x.device, dtype=torch.float64)[:, None, None]  # [L,1,1]
    g_pos, g_neg = torch.exp(t * log_gamma), torch.exp(-t * log_gamma)       # γ^t, γ^-t [L,m,c]
    q = torch.cumsum(g_neg * x, dim=1)                                        # Q_t [B,L,m,c]
    if reset is not None:
        idx = torch.arange(L, device=x.device)
        last = torch.where(reset, idx, 0).cummax(dim=1).values                # r (0 if none) [B,L]
        q_before = F.pad(q, (0, 0, 0, 0, 1, 0))[:, :-1]                       # Q_{t-1}, Q_{-1} = 0
        q = q - torch.gather(q_before, 1, last[:, :, None, None].expand_as(q))  # Q_t - Q_{r-1}
    s = g_pos * q
    if s0 is None:
        return s
    carry = g_pos * torch.exp(log_gamma) * s0[:, None]                        # γ^{t+1} S_in
    if reset is not None:
        carry = carry * (reset.cumsum(1) == 0)[:, :, None, None]              # only before any reset
    return s + carry


class _NativeTrace(torch.autograd.Function):
    """All states S [B,T,m,c,2] of S_t = keep_t γ ⊙ S_{t-1} + x_t from x [B,T,m], γ as (re, im)
    [m,c] each, s0 [B,m,c,2] and keep [B,T] or empty, by the C++ kernel (csrc/ffm_cpu.cpp). Saves its
    output (which ``mix`` keeps anyway) for the backward's S_{t-1}."""

    @staticmethod
    def forward(ctx, x, g_re, g_im, s0, keep):
        args = [z.contiguous() for z in (x, g_re, g_im, s0)]
        S = native.extension().ffm_forward(*args, keep)
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(S, *args[1:], keep)
        return S

    @staticmethod
    @once_differentiable
    def backward(ctx, gS):
        S, g_re, g_im, s0, keep = ctx.saved_tensors
        gx, gg_re, gg_im, gs0 = native.extension().ffm_backward(gS, S, g_re, g_im, s0, keep)
        return gx, gg_re.sum(0), gg_im.sum(0), gs0, None


FFM_BACKENDS = ("auto", "native", "torch")


class FFM(Memory):
    """Fast and Forgetful Memory; state = (S as a real view [B,m,c,2],).

    Init: a and b as below (``_init_own``), nn.Linear defaults for pre and mix. agent.init=reference
    overwrites pre and mix: weights orthogonal, biases zero; a and b keep their init."""

    def __init__(self, input_size: int, output_size: int = 512, trace_size: int = 128,
                 context_size: int = 4, min_period: float = 1.0, max_period: float = 1024.0,
                 chunk_size: int = 256, backend: str = "auto"):
        super().__init__()
        if backend not in FFM_BACKENDS:
            raise ValueError(f"FFM: backend must be one of {FFM_BACKENDS}, got {backend!r}")
        self.backend = backend
        _check_sizes("FFM", input_size=input_size, output_size=output_size, trace_size=trace_size,
                     context_size=context_size, chunk_size=chunk_size)
        if not 0 < min_period <= max_period:
            raise ValueError(f"FFM: need 0 < min_period <= max_period, got {min_period}, {max_period}")
        if chunk_size > 1000:
            raise ValueError(f"FFM: chunk_size {chunk_size} risks float64 overflow in γ^-t; use <= 1000")
        m, c, O = trace_size, context_size, output_size
        self.input_size, self.output_size = input_size, output_size
        self.trace_size, self.context_size, self.chunk_size = m, c, chunk_size
        self.pre = nn.Linear(input_size, 2 * m + 2 * O)
        self.mix = nn.Linear(2 * m * c, O)
        self.min_period, self.max_period = float(min_period), float(max_period)
        self.a = nn.Parameter(torch.empty(m))
        self.b = nn.Parameter(torch.empty(c))
        self._init_own()

    @torch.no_grad()
    def _init_own(self) -> None:
        # a: decay rates (learned, kept in [-A_LIMIT, -1e-8]); b: angular frequencies 2π/period.
        m, c = self.trace_size, self.context_size
        self.a.copy_(torch.linspace(-A_LIMIT + 0.01, math.log(0.01) / 1024, m))
        self.b.copy_(2 * math.pi / torch.linspace(self.min_period, self.max_period, c))

    def initial_state(self, batch_size: int, device=None) -> State:
        m, c = self.trace_size, self.context_size
        return (torch.zeros(batch_size, m, c, 2, device=device, dtype=self.a.dtype),)

    def log_gamma(self) -> Tensor:
        """log γ = a + i·b as complex128 [m,c]."""
        a = self.a.clamp(-A_LIMIT, -1e-8).double()
        b = self.b.double()
        return torch.complex(a[:, None].expand(-1, b.shape[0]), b[None, :].expand(a.shape[0], -1))

    def _native(self, x: Tensor) -> bool:
        """Whether the C++ recurrence runs for inputs like x (backend auto: where it applies)."""
        if self.backend == "native":
            native.require(x, "FFM backend 'native'", "backend=auto or torch")
            return True
        return self.backend == "auto" and native.applies(x) and not torch.compiler.is_compiling()

    def forward(self, x: Tensor, state: Optional[State] = None,
                reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        m, O = self.trace_size, self.output_size
        B, T, _ = x.shape
        y, thru, gate = self.pre(x).split([m, O, m + O], dim=-1)
        in_gate, out_gate = torch.sigmoid(gate).split([m, O], dim=-1)
        if self._native(x):
            a = self.a.clamp(-A_LIMIT, -1e-8).to(x.dtype)[:, None]
            b = self.b.to(x.dtype)[None, :]
            mag = torch.exp(a)                                                # γ = e^a (cos b + i sin b)
            s0 = (torch.zeros(B, m, self.context_size, 2, dtype=x.dtype, device=x.device) if state is None
                  else state[0].to(x.dtype))
            keep = x.new_empty(0) if reset is None else (~reset).to(x.dtype).contiguous()
            S = _NativeTrace.apply(y * in_gate, mag * torch.cos(b), mag * torch.sin(b), s0, keep)
            out = F.layer_norm(self.mix(S.view(B, T, -1)), (O,)) * out_gate + thru * (1 - out_gate)
            return out, (S[:, -1],)
        xin = (y * in_gate).to(torch.complex128)[..., None]                  # [B,T,m,1]
        lg = self.log_gamma()
        s = None if state is None else torch.view_as_complex(state[0].to(torch.float64).contiguous())
        states = []
        with full_precision(x):  # (complex128 anyway; autocast off for certain)
            for t0 in range(0, T, self.chunk_size):
                t1 = min(T, t0 + self.chunk_size)
                chunk = ffa_closed_form(xin[:, t0:t1], s, lg, None if reset is None else reset[:, t0:t1])
                states.append(chunk)
                s = chunk[:, -1]
        S = torch.cat(states, 1) if len(states) > 1 else states[0]          # [B,T,m,c]
        dtype = recurrence_dtype(x, self.a)  # the state's: float32 under mixed precision
        z = self.mix(torch.view_as_real(S).reshape(B, T, -1).to(dtype))    # [B,T,O]
        out = F.layer_norm(z, (O,)) * out_gate + thru * (1 - out_gate)
        return out, (torch.view_as_real(s).to(dtype),)
