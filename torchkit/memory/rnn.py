"""GRU and LSTM memories (PyTorch's fused kernels; a step loop only where a reset falls mid-sequence).

On CPU the GRU's whole-sequence forward runs the fused C++ recurrence of ``kernels.gru`` by default
(backend auto; resets inside the sequence included), with nn.GRU's parameters: the same model, a
faster backward."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..precision import full_precision, recurrence_dtype
from .base import Memory, State, has_inner_resets
from .kernels.gru import GRU_BACKENDS, fused_gru, gru_backend


class _RNN(Memory):
    """Init: PyTorch's nn.GRU/nn.LSTM default, U(±1/√hidden) for every weight and bias.
    agent.init=reference overwrites all of it: weights orthogonal, biases zero."""

    rnn_cls: type = nn.GRU
    n_state: int = 1

    def __init__(self, input_size: int, hidden_size: int = 512):
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(f"{type(self).__name__}: input_size and hidden_size must be positive, "
                             f"got {input_size} and {hidden_size}")
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.rnn = self.rnn_cls(input_size, hidden_size, batch_first=True)

    def initial_state(self, batch_size: int, device=None) -> State:
        w = self.rnn.weight_hh_l0
        z = torch.zeros(batch_size, self.hidden_size, device=device or w.device, dtype=w.dtype)
        return tuple(z.clone() for _ in range(self.n_state))

    def _to_torch(self, state: State):
        # nn.GRU/LSTM keep a layer axis first even when batch_first: [1, B, H].
        s = tuple(t.unsqueeze(0).contiguous() for t in state)
        return s[0] if self.n_state == 1 else s

    def _from_torch(self, s) -> State:
        s = (s,) if self.n_state == 1 else s
        return tuple(t.squeeze(0) for t in s)

    def forward(self, x: Tensor, state: Optional[State] = None,
                reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        # Under mixed precision nn.GRU/nn.LSTM (input projection included) run in the parameters'
        # float32, autocast off: the recurrence and its state stay float32.
        with full_precision(x):
            return self._forward(x.to(recurrence_dtype(x, self.rnn.weight_hh_l0)), state, reset)

    def _forward(self, x: Tensor, state: Optional[State], reset: Optional[Tensor]) -> Tuple[Tensor, State]:
        state = self._state_or_initial(state, x)
        if not has_inner_resets(reset):
            if reset is not None:
                state = self._apply_reset(state, reset[:, 0])
            y, s = self.rnn(x, self._to_torch(state))
            return y, self._from_torch(s)
        # Resets inside the sequence: run each maximal reset-free span with the fused kernel.
        ys, t0, T = [], 0, x.shape[1]
        starts = [0] + [t for t in range(1, T) if bool(reset[:, t].any())] + [T]
        for a, b in zip(starts[:-1], starts[1:]):
            state = self._apply_reset(state, reset[:, a])
            y, s = self.rnn(x[:, a:b], self._to_torch(state))
            state = self._from_torch(s)
            ys.append(y)
        return torch.cat(ys, 1), state

    def step(self, x: Tensor, state: State, reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        if reset is not None:
            state = self._apply_reset(state, reset)
        with full_precision(x):  # as forward
            y, s = self.rnn(x.to(recurrence_dtype(x, self.rnn.weight_hh_l0)).unsqueeze(1), self._to_torch(state))
        return y.squeeze(1), self._from_torch(s)


class GRU(_RNN):
    """Gated recurrent unit; state = (h [B,H],). backend: auto (the fused CPU kernel where it
    builds, else nn.GRU; CUDA: nn.GRU) | fused | torch."""
    rnn_cls, n_state = nn.GRU, 1

    def __init__(self, input_size: int, hidden_size: int = 512, backend: str = "auto"):
        super().__init__(input_size, hidden_size)
        if backend not in GRU_BACKENDS:
            raise ValueError(f"GRU: backend must be one of {GRU_BACKENDS}, got {backend!r}")
        self.backend = backend

    def forward(self, x: Tensor, state: Optional[State] = None,
                reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        dtype = recurrence_dtype(x, self.rnn.weight_hh_l0)
        if gru_backend(self.backend, x if x.dtype == dtype else x.to(dtype)) == "torch":
            return super().forward(x, state, reset)
        # fused: under mixed precision the input projection (one GEMM over all steps) runs in the
        # autocast dtype and the recurrence in float32 (fused_gru casts the projection up)
        (h0,) = self._state_or_initial(state, x)
        r = self.rnn
        y = fused_gru(x, h0, r.weight_ih_l0, r.weight_hh_l0, r.bias_ih_l0, r.bias_hh_l0, reset)
        return y, (y[:, -1],)

    def step(self, x: Tensor, state: State, reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        if reset is not None:
            state = self._apply_reset(state, reset)
        with full_precision(x):  # as forward: the recurrence and its state in float32 under autocast
            return self._cell(x.to(recurrence_dtype(x, self.rnn.weight_hh_l0)), state)

    def _cell(self, x: Tensor, state: State) -> Tuple[Tensor, State]:
        """One step through ATen's torch.gru_cell: nn.GRU's arithmetic on a length-1 sequence (the
        same bits), without the module's per-call overhead. (LSTM keeps nn.LSTM: lstm_cell differs
        from it in the last bit.)"""
        r = self.rnn
        h = torch.gru_cell(x, state[0], r.weight_ih_l0, r.weight_hh_l0, r.bias_ih_l0, r.bias_hh_l0)
        return h, (h,)

    def acting_step(self, unread: bool = False):
        return self._cell  # no readout, nothing to prepare


class LSTM(_RNN):
    """Long short-term memory; state = (h [B,H], c [B,H])."""
    rnn_cls, n_state = nn.LSTM, 2
