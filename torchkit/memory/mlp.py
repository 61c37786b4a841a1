"""Memoryless baseline: a per-step MLP in place of the memory (empty state)."""
from __future__ import annotations

from typing import Optional, Tuple

from torch import Tensor, nn

from .base import Memory, State


class MLP(Memory):
    """y_t = ReLU(W x_t + b): sees only the current (previous action, reward, observation).

    Init: nn.Linear's default. agent.init=reference overwrites it: W orthogonal, b zero."""

    def __init__(self, input_size: int, hidden_size: int = 512):
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(f"MLP memory: sizes must be positive, got {input_size}, {hidden_size}")
        self.input_size, self.output_size = input_size, hidden_size
        self.net = nn.Sequential(nn.Linear(input_size, hidden_size), nn.ReLU())

    def initial_state(self, batch_size: int, device=None) -> State:
        return ()

    def forward(self, x: Tensor, state: Optional[State] = None,
                reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        return self.net(x), ()

    def step(self, x: Tensor, state: State, reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        return self.net(x), ()
