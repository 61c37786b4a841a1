"""Fast weight programmer with the delta rule (Schlag et al. 2021), as in the SHM authors' fork.

    x̂ = LN(x);  k, q = sumnorm(ReLU(W x̂));  v = W_v x̂;  β = σ(w_β·x̂)
    v̄_t = M_{t-1} k_t
    M_t = M_{t-1} + β_t (v_t − v̄_t) ⊗ k_t          (M[i,j]: i value side, j key side)
    y_t = W_o (M_t q_t + W_s x̂_t + b_s) + b_o
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .base import Memory, State
from .util import check_positive_ints, sumnorm_relu


class FWP(Memory):
    """Delta-rule fast weights; state = (M [B,H,H],). Forward is a loop over time (M is H×H)."""

    def __init__(self, input_size: int, output_size: int = 512, mem_size: int = 24):
        super().__init__()
        check_positive_ints("FWP", input_size=input_size, output_size=output_size, mem_size=mem_size)
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
        """x [...,D] -> k, q, v [...,H], β [...,1], shortcut [...,H]."""
        xh = self.norm(x)
        k, q = sumnorm_relu(self.key(xh)), sumnorm_relu(self.query(xh))
        return k, q, self.value(xh), torch.sigmoid(self.beta(xh)), self.shortcut(xh)

    @staticmethod
    def _update(M: Tensor, k: Tensor, v: Tensor, beta: Tensor) -> Tensor:
        """Delta rule on M [B,H,H] with k, v [B,H], β [B,1]."""
        v_old = (M * k.unsqueeze(-2)).sum(-1)                          # v̄ = M k        [B,H]
        return M + (beta * (v - v_old)).unsqueeze(-1) * k.unsqueeze(-2)  # + β(v − v̄) kᵀ

    def _read(self, M: Tensor, q: Tensor, s: Tensor) -> Tensor:
        return self.out((M * q.unsqueeze(-2)).sum(-1) + s)

    def forward(self, x: Tensor, state: Optional[State] = None,
                reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        (M,) = self._state_or_initial(state, x)
        k, q, v, beta, s = self._project(x)  # [B,T,H] (β: [B,T,1])
        T = x.shape[1]
        keeps = [None] * T if reset is None else (~reset).to(M.dtype)[:, :, None, None].unbind(1)
        Ms = []
        for kt, vt, bt, keep in zip(k.unbind(1), v.unbind(1), beta.unbind(1), keeps):
            if keep is not None:
                M = M * keep  # reset: the state becomes the zero initial state
            M = self._update(M, kt, vt, bt)
            Ms.append(M)
        return self._read(torch.stack(Ms, 1), q, s), (M,)  # read all steps at once: [B,T,H,H]

    def step(self, x: Tensor, state: State, reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        (M,) = self._apply_reset(state, reset)
        k, q, v, beta, s = self._project(x)  # [B,H]
        M = self._update(M, k, v, beta)
        return self._read(M, q, s), (M,)
