"""Small helpers shared by the memory layers."""
from __future__ import annotations

import torch
from torch import Tensor


def check_positive_ints(owner: str, **sizes) -> None:
    """Raise a ValueError naming the first size that is not a positive int."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}; "
                             f"set model.memory.{name} (or the agent's input size) to a positive integer")


SUMNORM_EPS = 1e-5


def sumnorm_relu(z: Tensor, eps: float = SUMNORM_EPS) -> Tensor:
    """ReLU then divide by the sum over the last axis: non-negative, sums to ≈ 1 (keys/queries)."""
    z = torch.relu(z)
    return z / (eps + z.sum(-1, keepdim=True))
