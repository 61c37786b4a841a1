"""Fast weight programmer with the delta rule (Schlag et al. 2021), as in the SHM authors' fork.

    x̂ = LN(x);  k, q = sumnorm(ReLU(W x̂));  v = W_v x̂;  β = σ(w_β·x̂)
    v̄_t = M_{t-1} k_t
    M_t = M_{t-1} + β_t (v_t − v̄_t) ⊗ k_t          (M[i,j]: i value side, j key side)
    y_t = W_o (M_t q_t + W_s x̂_t + b_s) + b_o

scan: chunked (default) | loop. Chunked runs the delta rule c steps at a time (c = `chunk`). With
start state S and the written values u_t = β_t (v_t − M_{t-1} k_t), M_t = S + Σ_{s≤t} u_s k_sᵀ, so

    u_t = β_t (v_t − S k_t − Σ_{s<t} (k_s·k_t) u_s)   ⇔   (I + diag(β) L) U = diag(β) (V − K Sᵀ)

with L = strictly-lower part of K Kᵀ: one unit-triangular solve per chunk. Then
Y = Q Sᵀ + (Q Kᵀ ⊙ causal) U and S' = S + Uᵀ K (rows [c,H], all batched over B). A reset at step t
cuts S and every earlier u_s off from step t on (same-segment masks inside the chunk).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..precision import full_precision, recurrence_dtype
from .base import ReadoutMemory, State
from .util import check_positive_ints, sumnorm_relu


def _delta_chunk(S: Tensor, k: Tensor, q: Tensor, v: Tensor, beta: Tensor, reset: Optional[Tensor]):
    """c delta-rule steps at once (module docstring). S [B,H,H]; k, q, v [B,c,H]; β [B,c,1];
    reset [B,c] or None -> (M_t q_t [B,c,H], M_c [B,H,H])."""
    c = k.shape[1]
    causal = torch.ones(c, c, dtype=torch.bool, device=k.device).tril()   # s ≤ t
    if reset is None:
        same, first = causal, None
    else:
        seg = reset.long().cumsum(1)                                       # segment of each step
        same = causal & (seg[:, :, None] == seg[:, None, :])               # [B,c,c]
        first = (seg == 0).to(k.dtype)[..., None]                          # steps that still see S
    KK = (k @ k.transpose(1, 2)).masked_fill(~same, 0.0)                   # [B,c,c], (t, s) = k_t·k_s
    A = torch.eye(c, dtype=k.dtype, device=k.device) + beta * KK.tril(-1)  # I + diag(β) L
    SK = k @ S.transpose(1, 2)                                             # row t: (S k_t)ᵀ
    SQ = q @ S.transpose(1, 2)
    if first is not None:
        SK, SQ = SK * first, SQ * first
    U = torch.linalg.solve_triangular(A, beta * (v - SK), upper=False, unitriangular=True)
    QK = (q @ k.transpose(1, 2)).masked_fill(~same, 0.0)
    y = SQ + QK @ U                                                        # [B,c,H]
    if reset is None:
        return y, S + U.transpose(1, 2) @ k
    last = (seg == seg[:, -1:]).to(k.dtype)[..., None]                     # steps in the last segment
    keep_S = (seg[:, -1] == 0).to(k.dtype)[:, None, None]
    return y, S * keep_S + (U * last).transpose(1, 2) @ k


class FWP(ReadoutMemory):
    """Delta-rule fast weights; state = (M [B,H,H],). Forward: chunkwise (default) or a step loop.

    Init: nn.Linear/LayerNorm defaults. agent.init=reference overwrites every Linear: key, query,
    value, beta, shortcut and out weights orthogonal, shortcut/out biases zero (and the LayerNorm
    bias, zero already); the LayerNorm weight keeps 1."""

    def __init__(self, input_size: int, output_size: int = 512, mem_size: int = 24,
                 scan: str = "chunked", chunk: int = 32):
        super().__init__()
        check_positive_ints("FWP", input_size=input_size, output_size=output_size, mem_size=mem_size,
                            chunk=chunk)
        if scan not in ("chunked", "loop"):
            raise ValueError(f"FWP: scan must be 'chunked' or 'loop', got {scan!r}")
        self.scan, self.chunk = scan, chunk
        self.input_size, self.output_size, self.mem_size = input_size, output_size, mem_size
        H = mem_size
        self.norm = nn.LayerNorm(input_size)
        self.key = nn.Linear(input_size, H, bias=False)
        self.query = nn.Linear(input_size, H, bias=False)
        self.value = nn.Linear(input_size, H, bias=False)
        self.beta = nn.Linear(input_size, 1, bias=False)
        self.shortcut = nn.Linear(input_size, H)
        self.out = nn.Linear(H, output_size)

    def initial_state(self, batch_size: int, device=None) -> State:
        H = self.mem_size
        return (torch.zeros(batch_size, H, H, device=device, dtype=self.out.weight.dtype),)

    def _project(self, x: Tensor):
        """x [...,D] -> k, q, v [...,H], β [...,1], shortcut [...,H]. Float32 under mixed precision
        (autocast off), as SHM's: bf16 rounding through the keys' sum-normalisation costs ~5 % of dW_k."""
        with full_precision(x):
            xh = self.norm(x.to(recurrence_dtype(x, self.out.weight)))
            k, q = sumnorm_relu(self.key(xh)), sumnorm_relu(self.query(xh))
            return k, q, self.value(xh), torch.sigmoid(self.beta(xh)), self.shortcut(xh)

    @staticmethod
    def _update(M: Tensor, k: Tensor, v: Tensor, beta: Tensor) -> Tensor:
        """Delta rule on M [B,H,H] with k, v [B,H], β [B,1]."""
        v_old = (M * k.unsqueeze(-2)).sum(-1)                          # v̄ = M k        [B,H]
        return M + (beta * (v - v_old)).unsqueeze(-1) * k.unsqueeze(-2)  # + β(v − v̄) kᵀ

    @staticmethod
    def _read(M: Tensor, q: Tensor, s: Tensor) -> Tensor:
        return (M * q.unsqueeze(-2)).sum(-1) + s  # M q + shortcut (before the readout)

    def forward_unread(self, x: Tensor, state: Optional[State] = None,
                reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        (M,) = self._state_or_initial(state, x)
        k, q, v, beta, s = self._project(x)  # [B,T,H] (β: [B,T,1])
        with full_precision(x):  # the delta rule and its state in float32 under mixed precision
            return self._scan(M, k, q, v, beta, s, reset)

    def _scan(self, M, k, q, v, beta, s, reset) -> Tuple[Tensor, State]:
        T = k.shape[1]
        if self.scan == "chunked":
            ys = []
            for a in range(0, T, self.chunk):
                sl = slice(a, a + self.chunk)
                y, M = _delta_chunk(M, k[:, sl], q[:, sl], v[:, sl], beta[:, sl],
                                    None if reset is None else reset[:, sl])
                ys.append(y)
            return torch.cat(ys, 1) + s, (M,)
        keeps = [None] * T if reset is None else (~reset).to(M.dtype)[:, :, None, None].unbind(1)
        Ms = []
        for kt, vt, bt, keep in zip(k.unbind(1), v.unbind(1), beta.unbind(1), keeps):
            if keep is not None:
                M = M * keep  # reset: the state becomes the zero initial state
            M = self._update(M, kt, vt, bt)
            Ms.append(M)
        return self._read(torch.stack(Ms, 1), q, s), (M,)  # read all steps at once: [B,T,H,H]

    def step_unread(self, x: Tensor, state: State, reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        (M,) = self._apply_reset(state, reset)
        k, q, v, beta, s = self._project(x)  # [B,H]
        with full_precision(x):
            M = self._update(M, k, v, beta)
            return self._read(M, q, s), (M,)
