"""SHM's memory recurrence from its low-rank factors: ``shm_scan`` (fused chunk kernels, C++ on CPU,
compiled or eager PyTorch elsewhere), ``shm_step`` (one step, for acting) and ``shm_scan_steps``
beside them, the float64-ready step loop written from the equations that the tests compare against.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor

from .. import native as _native
from .backend import scan_backend

# The SHM recurrence from its low-rank factors, never materialising [B,T,H,H]:
#
#     C_t = keep_t · (1 + tanh(θ_t ⊗ vc_t)),   U_t = ev_t ⊗ k_t                 (a ⊗ b)[i,j] = a_i b_j
#     P_t = C_t ⊙ M_{t-1} + U_t,   M_t = clamp(P_t, ±clamp),   h_t = M_t q_t     h_i = Σ_j M_ij q_j
#
# keep_t = 0 where reset[b,t] (the state before step t becomes the zero initial state).
#
# Backward, with D_t = dL/dP_t (the clamp passes gradient where |P_t| ≤ clamp, as torch.clamp does):
#
#     D_t = mask_t ⊙ (dh_t ⊗ q_t + C_{t+1} ⊙ D_{t+1}),   seeded by dL/dM_T (and C_{T+1} := 1)
#     dev_t = D_t k_t,   dk_t = D_tᵀ ev_t,   dq_t = M_tᵀ dh_t,   dM_0 = C_1 ⊙ D_1
#     dX_t = D_t ⊙ M_{t-1} ⊙ keep_t tanh'(X_t)    (X = θ ⊗ vc)
#     dθ_t = dX_t vc_t,   dvc_t = dX_tᵀ θ_t
#
# Only the inputs and one state per chunk are saved; the backward recomputes the chunk's states
# from its saved start. Kernels work batch-last (state [H,H,B], inputs [c,H,B]): every reduction
# then runs over an outer axis and vectorises over B, eager or compiled.

def _outer(a: Tensor, b: Tensor) -> Tensor:
    """a ⊗ b for a, b [...,H,B] -> [...,H,H,B]."""
    return a.unsqueeze(-2) * b.unsqueeze(-3)


def _rows(A: Tensor, x: Tensor) -> Tensor:
    """A x: Σ_j A_ij x_j for A [...,H,H,B], x [...,H,B] -> [...,H,B]."""
    return (A * x.unsqueeze(-3)).sum(-2)


def _cols(x: Tensor, A: Tensor) -> Tensor:
    """xᵀ A: Σ_i x_i A_ij for x [...,H,B], A [...,H,H,B] -> [...,H,B]."""
    return (A * x.unsqueeze(-2)).sum(-3)


def _shm_gates(th, vc, ev, k, keep, deriv: bool):
    """C = keep·(1 + tanh X), keep·tanh'(X) (if deriv) and U [c,H,H,B] of a chunk, X = θ ⊗ vc.

    Inputs [c,H,B], keep [c,B] or None."""
    X = _outer(th, vc)
    if torch.compiler.is_compiling():
        # inductor: from e = exp(−2|X|) ∈ (0,1] (its tanh is ~3× slower): C = 2σ(2X) and
        # tanh' = 4e/(1+e)², accurate near C = 0 and C = 2 and exactly 0 where e underflows.
        e = torch.exp(-2 * X.abs())
        r = 1 / (1 + e)
        C, dC = 2 * torch.where(X >= 0, r, e * r), 4 * e * r * r
    else:  # eager: library tanh, in place on the temporary X; tanh' = C(2 − C) = 1 − tanh²
        C = X.tanh_().add_(1)
        dC = (2 - C).mul_(C) if deriv else None
    if keep is not None:
        keep = keep[:, None, None, :]
        C, dC = C * keep, (dC * keep if deriv else None)
    return C, dC, _outer(ev, k)


def _shm_fwd_chunk(th, vc, ev, k, q, keep, M, clamp: Optional[float]):
    """One chunk forward: th..q [c,H,B], keep [c,B] or None, M [H,H,B] -> h [c,H,B], M_end."""
    C, _, U = _shm_gates(th, vc, ev, k, keep, deriv=False)
    Ms = []
    for i in range(th.shape[0]):
        M = torch.addcmul(U[i], C[i], M)  # C ⊙ M + U
        if clamp is not None:
            M = M.clamp(-clamp, clamp)
        Ms.append(M)
    return _rows(torch.stack(Ms), q), M


def _shm_bwd_chunk(th, vc, ev, k, q, keep, M, dh, D, clamp: Optional[float]):
    """One chunk backward from its start state M and D = dL/dM_end ([H,H,B]).

    Returns dθ, dvc, dev, dk, dq [c,H,B] and dL/dM_start [H,H,B]."""
    c = th.shape[0]
    C, dC, U = _shm_gates(th, vc, ev, k, keep, deriv=True)
    Ms, masks = [M], []  # recompute M_0..M_c
    for i in range(c):
        P = torch.addcmul(U[i], C[i], Ms[-1])
        if clamp is not None:
            masks.append(P.abs() <= clamp)
            P = P.clamp(-clamp, clamp)
        Ms.append(P)
    G = _outer(dh, q)  # what h_t sends back to M_t
    Ds = [D] * c
    for i in reversed(range(c)):  # D_i = mask_i ⊙ (G_i + C_{i+1} ⊙ D_{i+1})
        D = G[i] + D if i == c - 1 else torch.addcmul(G[i], C[i + 1], D)
        if clamp is not None:
            D = D * masks[i]
        Ds[i] = D
    Ds = torch.stack(Ds)                           # dL/dP_t      [c,H,H,B]
    dX = Ds * torch.stack(Ms[:-1]) * dC            # dL/dX_t
    return (_rows(dX, vc), _cols(th, dX), _rows(Ds, k), _cols(ev, Ds), _cols(dh, torch.stack(Ms[1:])),
            C[0] * Ds[0])


@functools.lru_cache(maxsize=None)
def _compiled_kernels():
    """The chunk kernels through torch.compile, made once per process. Dynamo then caches the
    code per shape/dtype/device (after one shape change it compiles a shape-generic version)."""
    return (torch.compile(_shm_fwd_chunk, fullgraph=True),
            torch.compile(_shm_bwd_chunk, fullgraph=True))


class _NativeSHMScan(torch.autograd.Function):
    """shm_scan through the C++ kernel: forward saves the inputs and one state per chunk, backward
    recomputes each chunk's states (csrc/shm_cpu.cpp)."""

    @staticmethod
    def forward(ctx, th, vc, ev, k, q, M0, keep, clamp, chunk):
        xs = [x.contiguous() for x in (th, vc, ev, k, q)]                   # [B,T,H]
        keep = th.new_empty(0) if keep is None else keep.contiguous()       # [B,T]
        c = -1.0 if clamp is None else float(clamp)                         # <= 0: no clamp
        save = any(ctx.needs_input_grad)
        h, M, starts = _native.extension().shm_forward(*xs, keep, M0.detach().contiguous(), c, chunk, save)
        if save:
            ctx.save_for_backward(*xs, keep, starts)                        # starts [B,n,H,H]
            ctx.clamp, ctx.chunk = c, chunk
        return h, M

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dh, dM):
        *xs, keep, starts = ctx.saved_tensors
        grads = _native.extension().shm_backward(*xs, keep, starts, dh, dM, ctx.clamp, ctx.chunk)
        return (*grads, None, None, None)


class _SHMScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, th, vc, ev, k, q, M0, keep, clamp, chunk, compiled):
        B, T, H = th.shape
        xs = [x.permute(1, 2, 0).contiguous() for x in (th, vc, ev, k, q)]  # [T,H,B]
        keep = None if keep is None else keep.t().contiguous()               # [T,B]
        if compiled and T % chunk:  # one chunk length for the compiled kernels: pad with
            pad = chunk - T % chunk  # θ = ev = 0, i.e. C = 1, U = 0 (M unchanged, exactly)
            xs = [torch.cat([x, x.new_zeros(pad, H, B)]) for x in xs]
            keep = None if keep is None else torch.cat([keep, keep.new_ones(pad, B)])
        fwd = _compiled_kernels()[0] if compiled else _shm_fwd_chunk
        M = M0.detach().permute(1, 2, 0).contiguous()  # [H,H,B]
        starts, hs = [], []
        for a in range(0, xs[0].shape[0], chunk):
            sl = slice(a, a + chunk)
            starts.append(M)
            h, M = fwd(*(x[sl] for x in xs), None if keep is None else keep[sl], M, clamp)
            hs.append(h)
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(*xs, keep, torch.stack(starts))  # inputs + [n,H,H,B] states
            ctx.clamp, ctx.chunk, ctx.compiled, ctx.T = clamp, chunk, compiled, T
        h = torch.cat(hs)[:T].permute(2, 0, 1).contiguous()  # [B,T,H]
        return h, M.permute(2, 0, 1).contiguous()            # M_T [B,H,H]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dh, dM):
        *xs, keep, starts = ctx.saved_tensors
        T, chunk = ctx.T, ctx.chunk
        Tp, H, B = xs[0].shape
        dh = dh.permute(1, 2, 0).contiguous()  # [T,H,B]
        if Tp > T:
            dh = torch.cat([dh, dh.new_zeros(Tp - T, H, B)])
        bwd = _compiled_kernels()[1] if ctx.compiled else _shm_bwd_chunk
        grads = [torch.empty_like(x) for x in xs]  # dθ, dvc, dev, dk, dq   [Tp,H,B]
        D = dM.permute(1, 2, 0).contiguous()       # dL/dM_T   [H,H,B]
        for n, a in reversed(list(enumerate(range(0, Tp, chunk)))):
            sl = slice(a, a + chunk)
            *g, D = bwd(*(x[sl] for x in xs), None if keep is None else keep[sl], starts[n],
                        dh[sl], D, ctx.clamp)
            for out, gi in zip(grads, g):
                out[sl] = gi
        grads = [g[:T].permute(2, 0, 1) for g in grads]  # [B,T,H]
        return (*grads, D.permute(2, 0, 1), None, None, None, None)


def shm_scan(theta: Tensor, vc: Tensor, ev: Tensor, k: Tensor, q: Tensor, M0: Tensor,
             clamp: Optional[float] = None, reset: Optional[Tensor] = None,
             backend: str = "auto", chunk: Optional[int] = None):
    """SHM memory over a sequence: h [B,T,H] (h_t = M_t q_t) and the last state M_T [B,H,H].

    M_t = clamp(C_t ⊙ M_{t-1} + U_t), C_t = 1 + tanh(θ_t ⊗ vc_t), U_t = ev_t ⊗ k_t, from
    theta, vc, ev, k, q [B,T,H] and M0 [B,H,H]; reset [B,T] bool zeroes the state before step t.
    backend: native | eager | compiled | auto (``scan_backend``). chunk: steps between saved states
    (and per kernel call, eager/compiled; default 8). Saved for backward: 5·B·T·H + B·H²·⌈T/chunk⌉
    numbers.
    """
    which = scan_backend(backend, theta, native=True)
    keep = None if reset is None else (~reset).to(theta.dtype)
    if which == "native":
        return _NativeSHMScan.apply(theta, vc, ev, k, q, M0, keep, clamp, chunk or 8)
    return _SHMScan.apply(theta, vc, ev, k, q, M0, keep, clamp, chunk or 8, which == "compiled")


def shm_step(theta: Tensor, vc: Tensor, ev: Tensor, k: Tensor, q: Tensor, M: Tensor,
             clamp: Optional[float] = None):
    """One SHM step in O(B·H²), for acting: inputs [B,H], M [B,H,H] -> h [B,H], new M [B,H,H]."""
    tn = torch.tanh(theta.unsqueeze(-1) * vc.unsqueeze(-2))
    M = torch.addcmul(M, M, tn).addcmul_(ev.unsqueeze(-1), k.unsqueeze(-2))  # (1 + tanh) ⊙ M + ev ⊗ k
    if clamp is not None:
        M = M.clamp(-clamp, clamp)
    return torch.bmm(M, q.unsqueeze(-1)).squeeze(-1), M


def shm_scan_steps(theta: Tensor, vc: Tensor, ev: Tensor, k: Tensor, q: Tensor, M0: Tensor,
                   clamp: Optional[float] = None, reset: Optional[Tensor] = None, pre_clamp: bool = False):
    """The reference of ``shm_scan``: the recurrence one step at a time, straight from the equations
    (any dtype; the tests run it in float64 with autograd). Same arguments and results (h [B,T,H],
    M_T [B,H,H]); ``pre_clamp`` also returns the states before the clamp, P [B,T,H,H], to see
    where the clamp acts."""
    M, hs, Ps = M0, [], []
    for t in range(theta.shape[1]):
        if reset is not None:  # a new episode: the state before step t is the zero initial state
            M = M * (~reset[:, t]).to(M.dtype)[:, None, None]
        C = 1 + torch.tanh(theta[:, t, :, None] * vc[:, t, None, :])     # C[i,j] = 1 + tanh(θ_i vc_j)
        M = C * M + ev[:, t, :, None] * k[:, t, None, :]                  # + ev ⊗ k
        Ps.append(M)
        if clamp is not None:
            M = torch.clamp(M, -clamp, clamp)
        hs.append((M * q[:, t, None, :]).sum(-1))                         # h = M q
    h = torch.stack(hs, 1)
    return (h, M, torch.stack(Ps, 1)) if pre_clamp else (h, M)
