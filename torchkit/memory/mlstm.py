"""Matrix LSTM (xLSTM, Beck et al. 2024): single head, gates from x, with a true recurrence.

Parameterisation of the SHM authors' fork (which dropped the recurrence; we keep it):
    q = W_q x + b_q;  k = (W_k x + b_k)/√H;  v = W_v x + b_v;  o = σ(W_o x + b_o)
    ĩ = w_i·x + b_i (input gate exp(ĩ));  log f = logσ(w_f·x + b_f)
    C_t = f_t C_{t-1} + i_t v_t k_tᵀ;   n_t = f_t n_{t-1} + i_t k_t
    y_t = W_out (o_t ⊙ C_t q_t / max(|n_tᵀ q_t|, 1)) + b_out
Stabilised storage: (C', n') = (C, n)·e^{-m} with m_t = max(log f_t + m_{t-1}, ĩ_t), so every
exponent is ≤ 0, and the readout becomes C' q / max(|n'ᵀq|, e^{-m}) (the same value).
The output does not depend on m, so m carries no gradient (detached).

forward uses the parallel (quadratic, T×T) form within windows of ``max_parallel_len`` steps;
step is the stabilised recurrence.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..precision import full_precision, recurrence_dtype
from .base import ReadoutMemory, State
from .util import check_positive_ints


class MLSTM(ReadoutMemory):
    """mLSTM; state = (C' [B,H,H], n' [B,H], m [B,1]), zeros at the start.

    Init: nn.Linear's default. agent.init=reference overwrites all of it: query, key, value,
    output/input/forget gate and out weights orthogonal, their biases (the gates' too) zero."""

    max_parallel_len = 256  # longer inputs are processed in windows of this length (memory O(B·T·256))

    def __init__(self, input_size: int, output_size: int = 512, mem_size: int = 24):
        super().__init__()
        check_positive_ints("MLSTM", input_size=input_size, output_size=output_size, mem_size=mem_size)
        self.input_size, self.output_size, self.mem_size = input_size, output_size, mem_size
        H = mem_size
        self.query = nn.Linear(input_size, H)
        self.key = nn.Linear(input_size, H)
        self.value = nn.Linear(input_size, H)
        self.ogate = nn.Linear(input_size, H)
        self.igate = nn.Linear(input_size, 1)
        self.fgate = nn.Linear(input_size, 1)
        self.out = nn.Linear(H, output_size)

    def initial_state(self, batch_size: int, device=None) -> State:
        H, dt = self.mem_size, self.out.weight.dtype
        return (torch.zeros(batch_size, H, H, device=device, dtype=dt),
                torch.zeros(batch_size, H, device=device, dtype=dt),
                torch.zeros(batch_size, 1, device=device, dtype=dt))

    def _project(self, x: Tensor):
        """x [...,D] -> q, k, v, o [...,H]; ĩ, log f [...] (pre-activation input gate, log forget gate).
        Float32 under mixed precision (autocast off): the readout C q / max(|nᵀq|, ·) is nearly
        invariant to the scale of q (and of the gates), so their gradients cancel and bf16 rounding
        in these GEMMs' backward becomes ~40 % errors of dW_q, dW_k (measured); the GEMMs are small."""
        with full_precision(x):
            x = x.to(recurrence_dtype(x, self.out.weight))
            k = self.key(x) / math.sqrt(self.mem_size)
            o = torch.sigmoid(self.ogate(x))
            return (self.query(x), k, self.value(x), o,
                    self.igate(x).squeeze(-1), F.logsigmoid(self.fgate(x)).squeeze(-1))

    def _read(self, num: Tensor, den: Tensor, m: Tensor, o: Tensor) -> Tensor:
        """num [...,H] = C'q, den [...] = n'·q, m [...]: z = o ⊙ num / max(|den|, e^{-m}) (y = W_out z)."""
        den = torch.maximum(den.abs(), torch.exp(-m)).clamp_min(torch.finfo(den.dtype).tiny)
        return o * num / den.unsqueeze(-1)

    # ------------------------------------------------------------------------ recurrent form
    def step_unread(self, x: Tensor, state: State, reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        C, n, m = self._apply_reset(state, reset)  # [B,H,H], [B,H], [B,1]
        q, k, v, o, i_pre, log_f = self._project(x)  # [B,H] ×4, [B] ×2
        with full_precision(x):  # the recurrence and its state in float32 under mixed precision
            return self._step(C, n, m, q, k, v, o, i_pre, log_f)

    def _step(self, C, n, m, q, k, v, o, i_pre, log_f) -> Tuple[Tensor, State]:
        i_pre, log_f = i_pre.unsqueeze(-1), log_f.unsqueeze(-1)  # [B,1]
        m_new = torch.maximum(log_f + m, i_pre).detach()
        i = torch.exp(i_pre - m_new)          # ≤ 1
        f = torch.exp(log_f + m - m_new)      # ≤ 1
        C = f.unsqueeze(-1) * C + i.unsqueeze(-1) * v.unsqueeze(-1) * k.unsqueeze(-2)  # + i v kᵀ
        n = f * n + i * k
        num = (C @ q.unsqueeze(-1)).squeeze(-1)  # C' q  [B,H]
        den = (n * q).sum(-1)                    # n'·q  [B]
        return self._read(num, den, m_new.squeeze(-1), o), (C, n, m_new)

    # ------------------------------------------------------------------------ parallel form
    def forward_unread(self, x: Tensor, state: Optional[State] = None,
                       reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        state = self._state_or_initial(state, x)
        ys, L = [], self.max_parallel_len
        for a in range(0, x.shape[1], L):
            y, state = self._parallel(x[:, a:a + L], state, None if reset is None else reset[:, a:a + L])
            ys.append(y)
        return torch.cat(ys, 1), state

    def _parallel(self, x: Tensor, state: State, reset: Optional[Tensor]) -> Tuple[Tensor, State]:
        """Quadratic form. Weight of input s in C_t: exp(ĩ_s + Σ_{s<r≤t} log f_r) within one segment
        (reset-free span); the segment's initial state weighs exp(m_0 + Σ_{start≤r≤t} log f_r)."""
        if reset is not None:
            state = self._apply_reset(state, reset[:, 0])
        q, k, v, o, i_pre, log_f = self._project(x)  # [B,T,H] ×4, [B,T] ×2
        with full_precision(x):  # the weights' exponentials and the state in float32 under mixed precision
            return self._parallel_from(state, reset, q, k, v, o, i_pre, log_f)

    def _parallel_from(self, state, reset, q, k, v, o, i_pre, log_f) -> Tuple[Tensor, State]:
        B, T = q.shape[:2]
        C0, n0, m0 = state  # [B,H,H], [B,H], [B,1]
        Fc = log_f.cumsum(1)  # [B,T]: Σ_{r≤t} log f_r
        ar = torch.arange(T, device=q.device)
        if reset is None:
            start = torch.zeros(B, T, dtype=torch.bool, device=q.device)
        else:
            start = reset.clone()
            start[:, 0] = False  # already applied to the state
        seg = start.long().cumsum(1)  # [B,T]: segment id; 0 = continues from `state`
        first = seg == 0
        last_start = torch.cummax(torch.where(start, ar, 0), 1).values  # [B,T]
        F_before = (Fc - log_f).gather(1, last_start)  # Σ_{r<start(t)} log f_r
        # log-weight of the segment's initial state (m0 for segment 0; zeros, m=0, after a reset)
        G = Fc - F_before + torch.where(first, m0, torch.zeros_like(m0))  # [B,T]
        D = Fc.unsqueeze(2) - Fc.unsqueeze(1) + i_pre.unsqueeze(1)         # [B,T,T]: [t, s]
        valid = (seg.unsqueeze(2) == seg.unsqueeze(1)) & (ar[:, None] >= ar[None, :])
        D = D.masked_fill(~valid, float("-inf"))
        m = torch.maximum(G, D.amax(-1)).detach()  # [B,T]: equals the recurrent stabiliser
        W = torch.exp(D - m.unsqueeze(-1))          # [B,T,T]
        g = torch.exp(G - m) * first                # [B,T]
        S = (q @ k.transpose(1, 2)) * W             # [B,T,T]: w_ts (q_t·k_s)
        num = S @ v + g.unsqueeze(-1) * (q @ C0.transpose(1, 2))  # [B,T,H]: C'_t q_t
        den = S.sum(-1) + g * (q @ n0.unsqueeze(-1)).squeeze(-1)  # [B,T]:   n'_t·q_t
        y = self._read(num, den, m, o)
        # final state from the last row of weights
        w, gT = W[:, -1].unsqueeze(-1), g[:, -1, None]  # [B,T,1], [B,1]
        C = (w * v).transpose(1, 2) @ k + gT.unsqueeze(-1) * C0  # Σ_s w_s v_s k_sᵀ  [B,H,H]
        n = (w * k).sum(1) + gT * n0
        return y, (C, n, m[:, -1:])
