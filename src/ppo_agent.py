"""The recurrent actor-critic of PPO (POPGym's layout): observation -> pre MLP -> memory (any
``model=``) -> post MLP -> policy logits and value. Actor and critic share the memory, as in
POPGym's RLlib models (one recurrent core, two linear heads)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from torchkit.memory import Memory, State, reference_init_


def relu_stack(in_size: int, sizes: Sequence[int]) -> Tuple[nn.Module, int]:
    layers = []
    for h in sizes:
        layers += [nn.Linear(in_size, int(h)), nn.ReLU()]
        in_size = int(h)
    return nn.Sequential(*layers), in_size


class PPOAgent(nn.Module):
    def __init__(self, obs_dim: int, num_actions: int, memory: Callable[[int], Memory],
                 pre_layers: Sequence[int] = (128, 64), post_layers: Sequence[int] = (64,),
                 init: str = "reference"):
        super().__init__()
        self.pre, size = relu_stack(obs_dim, pre_layers)
        self.memory = memory(size)
        if init not in ("reference", "layer"):
            raise ValueError(f"ppo_agent.init={init}: valid: reference (orthogonal weights, zero biases) | layer")
        if init == "reference":  # as agent.init for SAC (docs/memory_models.md, "Init")
            reference_init_(self.memory)
        self.post, size = relu_stack(self.memory.output_size, post_layers)
        self.pi = nn.Linear(size, num_actions)
        self.v = nn.Linear(size, 1)
        nn.init.orthogonal_(self.pi.weight, 0.01)  # near-uniform initial policy
        nn.init.zeros_(self.pi.bias)
        nn.init.orthogonal_(self.v.weight, 1.0)
        nn.init.zeros_(self.v.bias)

    def initial_state(self, batch_size: int, device=None) -> State:
        return self.memory.initial_state(batch_size, device)

    def _heads(self, h: Tensor) -> Tuple[Tensor, Tensor]:
        h = self.post(h)
        return self.pi(h), self.v(h).squeeze(-1)

    def forward(self, obs: Tensor, state: Optional[State] = None,
                reset: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, State]:
        """Sequences obs [B,T,D] (``reset[b,t]``: obs[b,t] starts an episode) -> logits [B,T,A],
        values [B,T], the state after the last step."""
        h, state = self.memory(self.pre(obs), state, reset)
        return (*self._heads(h), state)

    @torch.no_grad()
    def step(self, obs: Tensor, state: State, reset: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, State]:
        """One acting step: obs [B,D] -> logits [B,A], values [B], new state."""
        h, state = self.memory.step(self.pre(obs), state, reset)
        return (*self._heads(h), state)
