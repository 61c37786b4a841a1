"""S6: one Mamba block (Gu & Dao 2023) as a memory layer.

    (u, res) = in_proj(x)                                  u, res [B,T,E], E = expand * d_model
    u = SiLU(causal depthwise conv_{d_conv}(u))
    (δ, B_t, C_t) = x_proj(u);  Δ = softplus(dt_proj(δ))   Δ [B,T,E], B_t, C_t [B,T,N]
    h_t = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t u_t) ⊗ B_t           h [B,E,N], A = -exp(A_log) [E,N]
    y_t = h_t C_t + D ⊙ u_t
    out = Linear(out_proj(y ⊙ SiLU(res)))                  d_model = input_size -> output_size

State = (h [B,E,N], the last d_conv-1 conv inputs [B,E,d_conv-1]). A reset zeroes both the SSM state
and the conv taps that lie before it. No path materialises a [B,T,E,N] tensor (it would be ~1 GB at
N=512, E=80, B=64, T=101): on CPU (float32/float64) the scan is a C++ kernel (csrc/s6_cpu.cpp) that
runs each (row, channel) recurrence with its state in cache and recomputes it in backward, saving
only the inputs; elsewhere, or without a C++ compiler, a sequential loop inside a custom autograd
function that keeps every L-th state (L ≈ √T), or chunk kernels through torch.compile.
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from . import native as _native
from ..precision import recurrence_dtype
from .base import ReadoutMemory, State
from .kernels.backend import S6_BACKENDS, scan_backend


def _check_sizes(owner: str, **sizes) -> None:
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{owner}: {name} must be a positive int, got {v!r}; "
                             f"set {name} to an integer >= 1")


def _decay(a: Tensor, dt_t: Tensor, A: Tensor, keep_t: Optional[Tensor]) -> Tensor:
    """a <- exp(Δ_t A), zeroed in rows where the state resets. a [B,E,N]; dt_t [B,E]; keep_t [B]."""
    torch.mul(dt_t[:, :, None], A, out=a).exp_()
    if keep_t is not None:
        a.mul_(keep_t[:, None, None])
    return a


class _SelectiveScan(torch.autograd.Function):
    """y_t = h_t C_t (D term excluded) and the last h, by a loop over T with checkpointed states.

    h_t = a_t ⊙ h_{t-1} + (Δ_t u_t) ⊗ B_t with a_t = exp(Δ_t A). Forward keeps h_{t-1} every L steps;
    backward recomputes one chunk of states at a time and runs the adjoint recurrence
    g_{t-1} = a_t ⊙ g_t (g_t = dLoss/dh_t). All [B,E,N] work happens in a few reused buffers.
    """

    @staticmethod
    def forward(ctx, u, dt, A, Bm, Cm, h0, keep):
        # u, dt [B,T,E]; A [E,N]; Bm, Cm [B,T,N]; h0 [B,E,N]; keep [B,T] (0 at a reset) or None
        T = u.shape[1]
        L = math.isqrt(T - 1) + 1                                  # checkpoint every L steps, L ≈ √T
        dtu = dt * u                                               # [B,T,E]
        y = u.new_empty(u.shape)                                   # [B,T,E]
        marks = h0.new_empty((T + L - 1) // L, *h0.shape)          # h_{t-1} at t = 0, L, 2L, ...
        h, a = h0.clone(), torch.empty_like(h0)
        for t in range(T):
            if t % L == 0:
                marks[t // L].copy_(h)
            _decay(a, dt[:, t], A, None if keep is None else keep[:, t])
            h.mul_(a).addcmul_(dtu[:, t, :, None], Bm[:, t, None, :])
            y[:, t] = torch.bmm(h, Cm[:, t, :, None]).squeeze(-1)
        ctx.L = L
        ctx.save_for_backward(u, dt, A, Bm, Cm, keep, marks)
        return y, h

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, gh_last):
        u, dt, A, Bm, Cm, keep, marks = ctx.saved_tensors
        T, L = u.shape[1], ctx.L
        dtu = dt * u
        gh = torch.zeros_like(marks[0]) if gh_last is None else gh_last.clone()  # dLoss/dh_t [B,E,N]
        gy = torch.zeros_like(u) if gy is None else gy
        gdtu, gdt = torch.zeros_like(u), torch.zeros_like(u)     # grads via Δu and via exp(ΔA) [B,T,E]
        gB, gC = torch.zeros_like(Bm), torch.zeros_like(Cm)       # [B,T,N]
        gA_b = torch.zeros_like(marks[0])                         # per-row dLoss/dA [B,E,N]
        hs = marks.new_empty(L + 1, *marks.shape[1:])             # hs[i] = h_{t0+i-1} of a chunk
        a, ga = torch.empty_like(gh), torch.empty_like(gh)
        for c in reversed(range(marks.shape[0])):
            t0, t1 = c * L, min(T, (c + 1) * L)
            hs[0].copy_(marks[c])
            for t in range(t0, t1):                               # recompute the chunk's states
                _decay(a, dt[:, t], A, None if keep is None else keep[:, t])
                torch.mul(a, hs[t - t0], out=hs[t - t0 + 1]).addcmul_(dtu[:, t, :, None], Bm[:, t, None, :])
            for t in reversed(range(t0, t1)):
                h_prev, h_t = hs[t - t0], hs[t - t0 + 1]
                gh.addcmul_(gy[:, t, :, None], Cm[:, t, None, :])                 # + ∂y_t/∂h_t
                gC[:, t] = torch.bmm(gy[:, t, None, :], h_t).squeeze(1)
                gB[:, t] = torch.bmm(dtu[:, t, None, :], gh).squeeze(1)
                gdtu[:, t] = torch.bmm(gh, Bm[:, t, :, None]).squeeze(-1)
                _decay(a, dt[:, t], A, None if keep is None else keep[:, t])
                torch.mul(gh, h_prev, out=ga).mul_(a)                             # dLoss/d(Δ_t A)
                gh.mul_(a)                                                        # -> dLoss/dh_{t-1}
                gA_b.addcmul_(ga, dt[:, t, :, None])
                gdt[:, t] = ga.mul_(A).sum(-1)
        return gdtu * dt, gdtu * u + gdt, gA_b.sum(0), gB, gC, gh, None


# ---------------------------------------------------------------- chunked kernels (torch.compile)
# The same recurrence in chunks of CHUNK steps, written as plain tensor code so that inductor fuses
# each step's decay, update and read into a few passes over the [B,E,N] state (the eager loop above
# makes ~6). Time-major inputs: dt, dtu [c,B,E]; Bm, Cm [c,B,N]; keep [c,B] or None.
CHUNK = 8


def _chunk_fwd(dt, dtu, Bm, Cm, keep: Optional[Tensor], A, h):
    """y [c,B,E] (y_t = h_t C_t) and the chunk's last state, from its start state h [B,E,N]."""
    ys = []
    for i in range(dt.shape[0]):
        a = torch.exp(dt[i, :, :, None] * A)
        if keep is not None:
            a = a * keep[i, :, None, None]
        h = a * h + dtu[i, :, :, None] * Bm[i, :, None, :]
        ys.append((h * Cm[i, :, None, :]).sum(-1))
    return torch.stack(ys), h


def _chunk_bwd(dt, dtu, Bm, Cm, keep: Optional[Tensor], A, h, gy, gh):
    """Recompute the chunk's states from its start h, then run the adjoint back through it.

    gh = dL/dh at the chunk's end -> gdtu, gdt [c,B,E], gB, gC [c,B,N], gA [E,N], dL/dh at its start."""
    c = dt.shape[0]
    hs, decays = [h], []
    for i in range(c):
        a = torch.exp(dt[i, :, :, None] * A)
        if keep is not None:
            a = a * keep[i, :, None, None]
        decays.append(a)
        hs.append(a * hs[-1] + dtu[i, :, :, None] * Bm[i, :, None, :])
    gdtu, gdt, gB, gC = [None] * c, [None] * c, [None] * c, [None] * c
    gA = torch.zeros_like(A)
    for i in reversed(range(c)):
        gh = gh + gy[i, :, :, None] * Cm[i, :, None, :]         # + ∂y_t/∂h_t
        gC[i] = (gy[i, :, :, None] * hs[i + 1]).sum(1)
        gB[i] = (dtu[i, :, :, None] * gh).sum(1)
        gdtu[i] = (gh * Bm[i, :, None, :]).sum(-1)
        ga = gh * hs[i] * decays[i]                              # dL/d(Δ_t A)
        gA = gA + (ga * dt[i, :, :, None]).sum(0)
        gdt[i] = (ga * A).sum(-1)
        gh = gh * decays[i]                                      # -> dL/dh_{t-1}
    return torch.stack(gdtu), torch.stack(gdt), torch.stack(gB), torch.stack(gC), gA, gh


@functools.lru_cache(maxsize=None)
def _compiled_chunks():
    return (torch.compile(_chunk_fwd, fullgraph=True, dynamic=False),
            torch.compile(_chunk_bwd, fullgraph=True, dynamic=False))


class _ChunkedSelectiveScan(torch.autograd.Function):
    """As ``_SelectiveScan``, by chunk kernels; saves the inputs and one state per chunk.

    T is padded to a multiple of CHUNK with Δ = Δu = 0 (decay 1, no input: the state is unchanged
    exactly), so every chunk has one shape and compiles once."""

    @staticmethod
    def forward(ctx, u, dt, A, Bm, Cm, h0, keep, compiled):
        B, T, E = u.shape
        pad = -T % CHUNK
        tm = lambda z: F.pad(z.transpose(0, 1), (0, 0, 0, 0, 0, pad)).contiguous()  # noqa: E731  [Tp,B,·]
        dt_, dtu, Bm_, Cm_ = tm(dt), tm(dt * u), tm(Bm), tm(Cm)
        keep_ = None if keep is None else F.pad(keep.t(), (0, 0, 0, pad), value=1.0).contiguous()
        fwd = _compiled_chunks()[0] if compiled else _chunk_fwd
        save = any(ctx.needs_input_grad)
        h, ys, starts = h0, [], []
        for a in range(0, T + pad, CHUNK):
            sl = slice(a, a + CHUNK)
            if save:
                starts.append(h)
            y, h = fwd(dt_[sl], dtu[sl], Bm_[sl], Cm_[sl], None if keep_ is None else keep_[sl], A, h)
            ys.append(y)
        if save:  # (no-grad calls, e.g. the target critic, keep nothing)
            ctx.save_for_backward(u, dt, dt_, dtu, Bm_, Cm_, keep_, A, torch.stack(starts))
            ctx.T, ctx.compiled = T, compiled
        return torch.cat(ys)[:T].transpose(0, 1), h

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, gh_last):
        u, dt, dt_, dtu, Bm_, Cm_, keep_, A, starts = ctx.saved_tensors
        T, Tp = ctx.T, dt_.shape[0]
        gy_ = torch.zeros_like(dtu) if gy is None else F.pad(gy.transpose(0, 1), (0, 0, 0, 0, 0, Tp - T))
        gh = torch.zeros_like(starts[0]) if gh_last is None else gh_last
        bwd = _compiled_chunks()[1] if ctx.compiled else _chunk_bwd
        gdtu, gdt, gB, gC = (torch.empty_like(z) for z in (dtu, dt_, Bm_, Cm_))
        gA = torch.zeros_like(A)
        for n in reversed(range(starts.shape[0])):
            sl = slice(n * CHUNK, (n + 1) * CHUNK)
            gdtu[sl], gdt[sl], gB[sl], gC[sl], gA_n, gh = bwd(
                dt_[sl], dtu[sl], Bm_[sl], Cm_[sl], None if keep_ is None else keep_[sl], A, starts[n],
                gy_[sl], gh)
            gA += gA_n
        bt = lambda z: z[:T].transpose(0, 1)  # noqa: E731  [B,T,·]
        gdtu, gdt = bt(gdtu), bt(gdt)
        return gdtu * dt, gdtu * u + gdt, gA, bt(gB), bt(gC), gh, None, None


class _NativeSelectiveScan(torch.autograd.Function):
    """The scan through the C++ kernel (csrc/s6_cpu.cpp): saves only the inputs; the backward
    recomputes each (row, channel) trajectory and runs the adjoint recurrence over it."""

    @staticmethod
    def forward(ctx, u, dt, A, Bm, Cm, h0, keep):
        xs = [z.contiguous() for z in (u, dt, A, Bm, Cm, h0)]
        keep = u.new_empty(0) if keep is None else keep.contiguous()       # [B,T] or empty
        y, h = _native.extension().s6_forward(*xs, keep)
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(*xs, keep)
        return y, h

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, gh_last):
        *xs, keep = ctx.saved_tensors
        gy = torch.zeros_like(xs[0]) if gy is None else gy
        gh_last = torch.zeros_like(xs[5]) if gh_last is None else gh_last
        gu, gdt, gA_rows, gB, gC, gh0 = _native.extension().s6_backward(*xs, keep, gy, gh_last)
        return gu, gdt, gA_rows.sum(0), gB, gC, gh0, None


def selective_scan(u: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor, h0: Tensor,
                   keep: Optional[Tensor] = None, method: str = "loop",
                   backend: str = "auto") -> Tuple[Tensor, Tensor]:
    """Returns (y [B,T,E] with y_t = h_t C_t, h_T [B,E,N]); see the module docstring.

    backend: native (the C++ CPU kernel, float32/float64) | auto (native where it applies, see
    ``torchkit.memory.kernels.backend.scan_backend``, else as below) | compiled | eager.
    method, where the C++ kernel does not run: loop (in-place step loop, √T checkpoints) | chunked
    (chunk kernels, compiled by ``backend``; auto without a working torch.compile runs the loop,
    which beats the uncompiled kernels, and explicit eager runs the uncompiled kernels, for checks).
    Runs in h0's dtype with autocast off (the in-place buffers need one dtype).
    """
    if method not in ("loop", "chunked"):
        raise ValueError(f"S6: scan must be 'loop' or 'chunked', got {method!r}")
    args = [z.to(h0.dtype) for z in (u, dt, A, Bm, Cm)]
    keep = None if keep is None else keep.to(h0.dtype)
    with torch.autocast(u.device.type, enabled=False):
        if scan_backend(backend, h0, native=True) == "native":
            return _NativeSelectiveScan.apply(*args, h0, keep)
        if method == "chunked" and u.shape[1] >= CHUNK:  # (shorter, e.g. acting steps: the loop)
            compiled = scan_backend(backend, h0) == "compiled"
            if compiled or backend == "eager":  # uncompiled chunk kernels are slower than the loop:
                return _ChunkedSelectiveScan.apply(*args, h0, keep, compiled)  # only when asked for
        return _SelectiveScan.apply(*args, h0, keep)


class S6(ReadoutMemory):
    """Mamba block + Linear(d_model -> output_size); state = (h [B,E,N], conv window [B,E,d_conv-1]).

    Init: Mamba's (``_init_own``): A = -(1..N) per row, D = 1, Δ's dt_proj weight U(±dt_rank^-½)
    and bias softplus⁻¹(dt) with dt log-uniform in [dt_min, dt_max]; nn.Linear/Conv1d defaults for
    the rest. agent.init=reference overwrites in_proj, conv1d, x_proj, dt_proj, out_proj and out:
    weights orthogonal (dt_proj's too), biases zero: the Δ bias 0 makes every initial step
    softplus(0) = 0.69 instead of dt in [dt_min, dt_max]. A_log and D keep their init."""

    def __init__(self, input_size: int, output_size: int = 512, d_state: int = 512, expand: int = 2,
                 d_conv: int = 4, dt_rank: Optional[int] = None, dt_min: float = 1e-3,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4, scan: str = "chunked",
                 backend: str = "auto"):
        super().__init__()
        if scan not in ("loop", "chunked"):
            raise ValueError(f"S6: scan must be 'loop' or 'chunked', got {scan!r}")
        if backend not in S6_BACKENDS:
            raise ValueError(f"S6: backend must be one of {S6_BACKENDS}, got {backend!r}")
        self.scan, self.backend = scan, backend
        if dt_rank is None:
            dt_rank = math.ceil(input_size / 16) if isinstance(input_size, int) else input_size
        _check_sizes("S6", input_size=input_size, output_size=output_size, d_state=d_state,
                     expand=expand, d_conv=d_conv, dt_rank=dt_rank)
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"S6: need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        d, E, N = input_size, expand * input_size, d_state
        self.input_size, self.output_size = input_size, output_size
        self.d_inner, self.d_state, self.d_conv, self.dt_rank = E, N, d_conv, dt_rank

        self.in_proj = nn.Linear(d, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, d_conv, groups=E, bias=True)  # weight [E,1,d_conv]; applied by hand
        self.x_proj = nn.Linear(E, dt_rank + 2 * N, bias=False)
        self.dt_proj = nn.Linear(dt_rank, E, bias=True)
        self.A_log = nn.Parameter(torch.empty(E, N))
        self.D = nn.Parameter(torch.empty(E))
        self.out_proj = nn.Linear(E, d, bias=False)
        self.out = nn.Linear(d, output_size)
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self._init_own()

    @torch.no_grad()
    def _init_own(self) -> None:
        E, N, r = self.d_inner, self.d_state, self.dt_rank
        self.A_log.copy_(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.D.fill_(1.0)
        # Mamba's Δ init: weight U(±dt_rank^-½); bias = softplus⁻¹(dt), dt log-uniform in [dt_min, dt_max].
        nn.init.uniform_(self.dt_proj.weight, -r ** -0.5, r ** -0.5)
        lo, hi = math.log(self.dt_min), math.log(self.dt_max)
        dt = torch.exp(torch.rand(E) * (hi - lo) + lo).clamp(min=self.dt_init_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def initial_state(self, batch_size: int, device=None) -> State:
        dtype = self.A_log.dtype
        return (torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=dtype),
                torch.zeros(batch_size, self.d_inner, self.d_conv - 1, device=device, dtype=dtype))

    def _conv(self, u: Tensor, window: Tensor, reset: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """Causal depthwise conv over [window, u]; taps from before a reset are zeroed.

        u [B,T,E]; window [B,E,K-1] (the K-1 inputs before u) -> (conv(u) [B,T,E], new window [B,E,K-1]).
        """
        T, K = u.shape[1], self.d_conv
        xp = torch.cat([window.transpose(1, 2).to(u.dtype), u], 1)  # [B,K-1+T,E]; row i = step i-(K-1)
        w = self.conv1d.weight[:, 0, :]                               # [E,K]; tap k sees step t-(K-1-k)
        if reset is None:
            out = sum(xp[:, k:k + T] * w[:, k] for k in range(K))
            return out + self.conv1d.bias, xp[:, T:].transpose(1, 2)
        # n[i] = number of resets at steps <= i-(K-1); a tap from step s is alive at step t iff n(s) == n(t).
        n = F.pad(reset.long().cumsum(1), (K - 1, 0))                 # [B,K-1+T]
        now = n[:, K - 1:]                                            # [B,T]
        out = sum(xp[:, k:k + T] * w[:, k] * (n[:, k:k + T] == now)[..., None] for k in range(K))
        alive = (n[:, T:] == n[:, -1:])[..., None]                    # [B,K-1,1]
        return out + self.conv1d.bias, (xp[:, T:] * alive).transpose(1, 2)

    def forward_unread(self, x: Tensor, state: Optional[State] = None,
                       reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        h0, window = self._state_or_initial(state, x)
        dtype = recurrence_dtype(x, self.A_log)  # the state's (conv window, scan): float32 under autocast
        u, res = self.in_proj(x).chunk(2, dim=-1)                     # [B,T,E] each
        u, window = self._conv(u.to(dtype), window, reset)
        u = F.silu(u)
        delta, Bm, Cm = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(delta))                          # [B,T,E]
        A = -torch.exp(self.A_log)                                    # [E,N]
        keep = None if reset is None else (~reset).to(dtype)          # [B,T]; 0 zeroes h_{t-1}
        y, h = selective_scan(u, dt, A, Bm, Cm, h0.to(dtype), keep, self.scan, self.backend)
        y = (y + u * self.D) * F.silu(res)                            # [B,T,E]
        return self.out_proj(y), (h, window)  # readout: out
