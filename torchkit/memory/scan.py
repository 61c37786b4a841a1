"""Elementwise (Hadamard) linear recurrence M_t = C_t ⊙ M_{t-1} + U_t, computed in parallel.

``hadamard_scan`` is the fast path (chunked parallel scan with a hand-written backward);
``hadamard_scan_steps`` is the plain loop beside it, the oracle the tests compare against.
No log-space and no division by cumulative products, so exact zeros in C (resets) are safe.
"""
from __future__ import annotations

import functools
import os
from typing import Optional

import torch
from torch import Tensor

from . import native as _native


def hadamard_scan_steps(C: Tensor, U: Tensor, M0: Optional[Tensor] = None,
                        clamp: Optional[float] = None) -> Tensor:
    """Step-by-step M_t = clamp(C_t ⊙ M_{t-1} + U_t). C, U: [B,T,...]; M0: [B,...]. Returns [B,T,...]."""
    M = torch.zeros_like(U[:, 0]) if M0 is None else M0
    out = []
    for c, u in zip(C.unbind(1), U.unbind(1)):  # unbind: one gradient stack, not T zero-filled copies
        M = c * M + u
        if clamp is not None:
            M = M.clamp(-clamp, clamp)
        out.append(M)
    return torch.stack(out, 1)


def hadamard_scan(C: Tensor, U: Tensor, M0: Optional[Tensor] = None,
                  clamp: Optional[float] = None, chunk: Optional[int] = None) -> Tensor:
    """All states M_1..M_T of M_t = C_t ⊙ M_{t-1} + U_t (optionally clamped to ±clamp per step).

    C, U: [B,T,...] (e.g. [B,T,H,H]); M0: [B,...] or None (zeros). Returns [B,T,...].
    ``chunk``: chunk length of the parallel scan; default 16 on accelerators (log-depth inside
    chunks, few kernel launches) and 1 on CPU, which means the plain loop (the least work there).
    With ``clamp`` in the parallel scan: the clamp is the identity until some |M_t| first exceeds
    it, so the parallel result is kept up to that step and the rest runs sequentially (exact).
    """
    if chunk is None:
        chunk = 1 if U.device.type == "cpu" else 16
    if chunk <= 1:
        return hadamard_scan_steps(C, U, M0, clamp)
    if M0 is None:
        M0 = torch.zeros_like(U[:, 0])
    M = _HadamardScan.apply(C, U, M0, chunk)
    if clamp is None:
        return M
    over = (M.detach().abs() > clamp).reshape(*M.shape[:2], -1).any(-1).any(0)  # [T]: clamp bites?
    if not bool(over.any()):  # (one host sync)
        return M
    t0 = int(over.int().argmax())
    # Recompute the head alone: M past t0 may have overflowed to inf, which would poison gradients.
    head = _HadamardScan.apply(C[:, :t0], U[:, :t0], M0, chunk) if t0 > 0 else M[:, :0]
    start = head[:, -1] if t0 > 0 else M0
    return torch.cat([head, hadamard_scan_steps(C[:, t0:], U[:, t0:], start, clamp)], 1)


def _scan_nograd(C: Tensor, U: Tensor, M0: Tensor, chunk: int) -> Tensor:
    """Chunked scan: a Hillis–Steele scan inside every chunk at once, then a loop over chunks."""
    B, T, *S = U.shape
    K = max(1, min(chunk, T))
    n = -(-T // K)
    pad = n * K - T
    if pad:  # identity steps (C=1, U=0) at the end
        C = torch.cat([C, C.new_ones(B, pad, *S)], 1)
        U = torch.cat([U, U.new_zeros(B, pad, *S)], 1)
    A = C.reshape(B, n, K, *S).clone()  # [B,n,K,...]
    X = U.reshape(B, n, K, *S).clone()
    # Combine (A_l, X_l) then (A_r, X_r) = (A_r A_l, A_r X_l + X_r). After the loop, within each chunk
    # A[:, c, k] = C_k ⊙ ... ⊙ C_0 and X[:, c, k] = the state at k when the chunk starts from zero.
    s = 1
    while s < K:
        X[:, :, s:] += A[:, :, s:] * X[:, :, :-s]  # right side is materialised before the add
        A[:, :, s:] = A[:, :, s:] * A[:, :, :-s]
        s *= 2
    m = M0  # [B,...]: state entering chunk c
    for c in range(n):
        X[:, c] += A[:, c] * m.unsqueeze(1)
        m = X[:, c, -1]
    return X.reshape(B, n * K, *S)[:, :T]


class _HadamardScan(torch.autograd.Function):
    """Parallel forward; backward is the same scan run backwards in time (saves only C, M0, M)."""

    @staticmethod
    def forward(ctx, C, U, M0, chunk):
        M = _scan_nograd(C, U, M0, chunk)
        ctx.save_for_backward(C, M0, M)
        ctx.chunk = chunk
        return M

    @staticmethod
    def backward(ctx, gM):
        C, M0, M = ctx.saved_tensors
        # Adjoint G_t = dL/dM_t (total) = gM_t + C_{t+1} ⊙ G_{t+1}, with G_{T+1} = 0.
        C_next = torch.cat([C[:, 1:], torch.zeros_like(C[:, :1])], 1)
        G = _HadamardScan.apply(C_next.flip(1), gM.flip(1), torch.zeros_like(M0), ctx.chunk).flip(1)
        M_prev = torch.cat([M0.unsqueeze(1), M[:, :-1]], 1)  # [B,T,...]: M_{t-1}
        return G * M_prev, G, C[:, 0] * G[:, 0], None


# ============================================================================================ SHM
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


@functools.lru_cache(maxsize=None)
def compile_works(device_type: str) -> bool:
    """Whether torch.compile can build and run a kernel on this device type (probed once)."""
    try:
        f = torch.compile(lambda a: torch.sigmoid(a) * 2 + 1, fullgraph=True)
        a = torch.randn(4, 3, device=device_type)
        return bool(torch.allclose(f(a), torch.sigmoid(a) * 2 + 1))
    except Exception:  # no C++/Triton toolchain, unsupported Python, …
        return False


BACKENDS = ("eager", "compiled", "auto")       # S6's scan
SHM_BACKENDS = ("native", *BACKENDS)             # SHM's: also the C++ CPU kernel (csrc/shm_cpu.cpp)


def scan_backend(backend: str, x: Tensor, native: bool = False) -> str:
    """Resolve ``backend`` to "native", "eager" or "compiled" for inputs like ``x``.

    ``native`` (the SHM scan): the C++ CPU kernel is a choice. auto = native for float32/float64 on
    CPU where it builds; otherwise compiled when torch.compile works on x's device, except for
    float64 (the dtype of checks, where a compile per test shape costs more than it saves) and
    inside an outer compile. Where the native kernel does not apply, the environment variable
    MEMRL_SCAN_BACKEND=eager|compiled overrides auto (e.g. in tests, to skip the one-time compile
    of 10–60 s). Used by the SHM and S6 scans."""
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
