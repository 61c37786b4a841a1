"""Elementwise (Hadamard) linear recurrence M_t = C_t ⊙ M_{t-1} + U_t, computed in parallel.

``hadamard_scan`` is the fast path (chunked parallel scan with a hand-written backward);
``hadamard_scan_steps`` is the plain loop beside it, the oracle the tests compare against.
No log-space and no division by cumulative products, so exact zeros in C (resets) are safe.
"""
from __future__ import annotations

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
