"""Elementwise (Hadamard) linear recurrence M_t = C_t ⊙ M_{t-1} + U_t, computed in parallel.

``hadamard_scan`` is the fast path (chunked parallel scan with a hand-written backward);
``hadamard_scan_steps`` is the plain loop beside it, the oracle the tests compare against.
No log-space and no division by cumulative products, so exact zeros in C (resets) are safe.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor


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
#     X_t = θ_t ⊗ vc_t,  C_t = keep_t·(1 + tanh X_t),  U_t = ev_t ⊗ k_t        ([B,H,H] per step)
#     P_t = C_t ⊙ M_{t-1} + U_t,  M_t = clamp(P_t, ±clamp),  h_t = M_t q_t
#
# keep_t = 0 where reset[b,t] (the state before step t becomes the zero initial state).
# Backward (D_t = dL/dP_t; the clamp passes gradient where |P_t| ≤ clamp, as torch.clamp does):
#
#     D_t = mask_t ⊙ (dh_t ⊗ q_t + C_{t+1} ⊙ D_{t+1}),   D_{T+1} := dM_T seed, C_{T+1} := 1
#     dev_t = D_t k_t,  dk_t = D_tᵀ ev_t,  dq_t = M_tᵀ dh_t,  dM_0 = C_1 ⊙ D_1
#     dX_t = D_t ⊙ M_{t-1} ⊙ C_t ⊙ (1 − tanh X_t)      (tanh' = (1+tanh)(1−tanh); C = 0 ⇒ dX = 0)
#     dθ_t = dX_t vc_t,  dvc_t = dX_tᵀ θ_t
#
# Only the inputs and one [B,H,H] state per chunk are saved; the backward recomputes each chunk's
# states from its saved start. The chunk kernels run eagerly or through torch.compile (fused).

def _mv(A: Tensor, x: Tensor) -> Tensor:
    """(A x)_i = Σ_j A_ij x_j for A [...,H,H], x [...,H]."""
    if torch.compiler.is_compiling():  # elementwise + sum: inductor fuses it with the recurrence
        return (A * x.unsqueeze(-2)).sum(-1)
    return (A @ x.unsqueeze(-1)).squeeze(-1)


def _vm(x: Tensor, A: Tensor) -> Tensor:
    """(xᵀ A)_j = Σ_i x_i A_ij for x [...,H], A [...,H,H]."""
    if torch.compiler.is_compiling():
        return (x.unsqueeze(-1) * A).sum(-2)
    return (x.unsqueeze(-2) @ A).squeeze(-2)


def _shm_gates(th: Tensor, vc: Tensor, ev: Tensor, k: Tensor, keep: Optional[Tensor]):
    """tanh X, C, U for a chunk: [c,B,H,H] each (inputs [c,B,H], keep [c,B])."""
    tn = torch.tanh(th.unsqueeze(-1) * vc.unsqueeze(-2))
    C = 1 + tn
    if keep is not None:
        C = C * keep[..., None, None]
    return tn, C, ev.unsqueeze(-1) * k.unsqueeze(-2)


def _shm_fwd_chunk(th, vc, ev, k, q, keep, M, clamp: Optional[float]):
    """Forward of one chunk. th..q [c,B,H], keep [c,B] or None, M [B,H,H] -> h [c,B,H], M_end."""
    _, C, U = _shm_gates(th, vc, ev, k, keep)
    Ms = []
    for i in range(th.shape[0]):
        M = torch.addcmul(U[i], C[i], M)  # C ⊙ M + U
        if clamp is not None:
            M = M.clamp(-clamp, clamp)
        Ms.append(M)
    return _mv(torch.stack(Ms), q), M


def _shm_bwd_chunk(th, vc, ev, k, q, keep, M, dh, D, clamp: Optional[float]):
    """Backward of one chunk, from its start state M [B,H,H] and D = dL/dM_end [B,H,H].

    Returns dθ, dvc, dev, dk, dq [c,B,H] and dL/dM_start [B,H,H]."""
    c = th.shape[0]
    tn, C, U = _shm_gates(th, vc, ev, k, keep)
    Ms, masks = [M], []  # recompute M_0..M_c of the chunk
    for i in range(c):
        P = torch.addcmul(U[i], C[i], Ms[-1])
        if clamp is not None:
            masks.append(P.abs() <= clamp)
            P = P.clamp(-clamp, clamp)
        Ms.append(P)
    G = dh.unsqueeze(-1) * q.unsqueeze(-2)  # dh_t ⊗ q_t: what h_t sends to M_t  [c,B,H,H]
    Ds = [D] * c
    for i in reversed(range(c)):  # D_i = mask_i ⊙ (G_i + C_{i+1} ⊙ D_{i+1})
        D = G[i] + D if i == c - 1 else torch.addcmul(G[i], C[i + 1], D)
        if clamp is not None:
            D = D * masks[i]
        Ds[i] = D
    Ds = torch.stack(Ds)                             # dL/dP_t             [c,B,H,H]
    dX = Ds * torch.stack(Ms[:-1]) * C * (1 - tn)    # dL/dX_t, X = θ ⊗ vc
    return (_mv(dX, vc), _vm(th, dX), _mv(Ds, k), _vm(ev, Ds), _vm(dh, torch.stack(Ms[1:])),
            C[0] * Ds[0])


@functools.lru_cache(maxsize=None)
def _compiled_kernels():
    """The chunk kernels through torch.compile, built once per process (dynamo then caches the
    code per input shape/dtype/device; with dynamic=None a second shape compiles a dynamic one)."""
    return (torch.compile(_shm_fwd_chunk, fullgraph=True),
            torch.compile(_shm_bwd_chunk, fullgraph=True))


@functools.lru_cache(maxsize=None)
def compile_works(device_type: str) -> bool:
    """Whether torch.compile can build and run a kernel on this device type (probed once)."""
    try:
        f = torch.compile(lambda a: torch.tanh(a) * 2 + 1, fullgraph=True)
        a = torch.randn(4, 3, device=device_type)
        return bool(torch.allclose(f(a), torch.tanh(a) * 2 + 1))
    except Exception:  # no C++/Triton toolchain, unsupported Python, …
        return False


BACKENDS = ("eager", "compiled", "auto")


def shm_backend(backend: str, x: Tensor) -> str:
    """Resolve ``backend`` to "eager" or "compiled" for inputs like ``x``.

    auto = compiled when torch.compile works on x's device, except for float64 (the dtype of the
    checks, where a compile per test shape costs more than it saves) and inside an outer compile."""
    if backend not in BACKENDS:
        raise ValueError(f"shm_scan: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if x.dtype == torch.float64 or torch.compiler.is_compiling():
            return "eager"
        return "compiled" if compile_works(x.device.type) else "eager"
    return backend


class _SHMScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, th, vc, ev, k, q, M0, keep, clamp, chunk, compiled):
        B, T, H = th.shape
        tm = [x.transpose(0, 1).contiguous() for x in (th, vc, ev, k, q)]  # time-major [T,B,H]
        keep = None if keep is None else keep.transpose(0, 1).contiguous()  # [T,B]
        if compiled and T % chunk:  # one static chunk length: pad with θ = ev = 0 (C = 1, U = 0)
            pad = chunk - T % chunk
            tm = [torch.cat([x, x.new_zeros(pad, B, H)]) for x in tm]
            keep = None if keep is None else torch.cat([keep, keep.new_ones(pad, B)])
        fwd = _compiled_kernels()[0] if compiled else _shm_fwd_chunk
        Tp = tm[0].shape[0]
        M, starts, hs = M0.detach().contiguous(), [], []  # (plain inputs: no compiled re-guards)
        for a in range(0, Tp, chunk):
            sl = slice(a, a + chunk)
            starts.append(M)
            h, M = fwd(*(x[sl] for x in tm), None if keep is None else keep[sl], M, clamp)
            hs.append(h)
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(*tm, keep, torch.stack(starts))  # inputs + [n,B,H,H] states
            ctx.clamp, ctx.chunk, ctx.compiled, ctx.T = clamp, chunk, compiled, T
        return torch.cat(hs)[:T].transpose(0, 1).contiguous(), M  # h [B,T,H], M_T [B,H,H]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dh, dM):
        *tm, keep, starts = ctx.saved_tensors
        T, chunk = ctx.T, ctx.chunk
        Tp, B, H = tm[0].shape
        dh = dh.transpose(0, 1).contiguous()  # [T,B,H] (incoming grads may be expanded views)
        if Tp > T:
            dh = torch.cat([dh, dh.new_zeros(Tp - T, B, H)])
        bwd = _compiled_kernels()[1] if ctx.compiled else _shm_bwd_chunk
        grads = [torch.empty_like(x) for x in tm]  # dθ, dvc, dev, dk, dq   [Tp,B,H]
        D = dM.contiguous()
        for n, a in reversed(list(enumerate(range(0, Tp, chunk)))):
            sl = slice(a, a + chunk)
            *g, D = bwd(*(x[sl] for x in tm), None if keep is None else keep[sl], starts[n],
                        dh[sl], D, ctx.clamp)
            for out, gi in zip(grads, g):
                out[sl] = gi
        grads = [g[:T].transpose(0, 1) for g in grads]
        return (*grads, D, None, None, None, None)


def shm_scan(theta: Tensor, vc: Tensor, ev: Tensor, k: Tensor, q: Tensor, M0: Tensor,
             clamp: Optional[float] = None, reset: Optional[Tensor] = None,
             backend: str = "auto", chunk: Optional[int] = None):
    """SHM memory over a sequence: returns h [B,T,H] (h_t = M_t q_t) and M_T [B,H,H].

    M_t = clamp(C_t ⊙ M_{t-1} + U_t) with C_t = 1 + tanh(θ_t ⊗ vc_t), U_t = ev_t ⊗ k_t.
    theta, vc, ev, k, q: [B,T,H]; M0: [B,H,H]; reset: [B,T] bool (zero state before step t).
    backend: eager | compiled | auto (see ``shm_backend``); chunk: steps per kernel call and
    between saved states (default 8 compiled, 16 eager). Memory saved for backward:
    5·B·T·H + B·⌈T/chunk⌉·H² numbers.
    """
    compiled = shm_backend(backend, theta) == "compiled"
    chunk = chunk or (8 if compiled else 16)
    keep = None if reset is None else (~reset).to(theta.dtype)
    return _SHMScan.apply(theta, vc, ev, k, q, M0, keep, clamp, chunk, compiled)


def shm_step(theta: Tensor, vc: Tensor, ev: Tensor, k: Tensor, q: Tensor, M: Tensor,
             clamp: Optional[float] = None):
    """One SHM step in O(B·H²) (acting): inputs [B,H], M [B,H,H] -> h [B,H], new M [B,H,H]."""
    C = 1 + torch.tanh(theta.unsqueeze(-1) * vc.unsqueeze(-2))
    M = torch.addcmul(ev.unsqueeze(-1) * k.unsqueeze(-2), C, M)
    if clamp is not None:
        M = M.clamp(-clamp, clamp)
    return _mv(M, q), M
