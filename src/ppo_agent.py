"""The recurrent actor-critic of PPO (POPGym's layout): observation -> pre MLP -> memory (any
``model=``) -> post MLP -> policy logits and value. Actor and critic share the memory, as in
POPGym's RLlib models (one recurrent core, two linear heads).

``layout``: ``memrl`` (the default above: ReLU layers, π and V each one Linear, orthogonal final
weights with gains 0.01 and 1) or ``popgym``, POPGym's ``BaseModel`` as the SHM paper's POPGym
script built it: the first layer is Linear + LayerNorm without affine (its ``feature_map``, no
ReLU), every hidden weight orthogonal (biases PyTorch's), and π and V each a linear Linear(P, P)
followed by a final layer drawn from N(0, 0.01²) (its ``actor``/``critic`` and ``*_final``). That
script gave SHM a 1,024-wide readout before its 64-wide post layer (``model.width=1024``) and left
the memory's own layers at PyTorch's init (``init=layer``).

``time_embedding="sine"`` (POPGym's ``embedding: sine``, which the SHM paper's POPGym script sets
for SHM only): after the first pre layer, the features are layer-normalised and mixed with a
sinusoidal code of the step index within the episode, x <- (1 - s) x + s pe(t), s learnable (0.5 at
the start, used clamped to [0, 1]). The step counter is part of the agent's state (the last entry,
an int64 [B]), so it resets with the memory and is carried across rollout chunks. SHM's keys,
queries and decays are functions of the current input only: without a time code it cannot tell
"the card 3 steps ago" from "the card 4 steps ago" except by its decays (docs/results/popgym).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from torchkit.memory import Memory, State, reference_init_

TIME_EMBEDDINGS = (None, "sine")
LAYOUTS = ("memrl", "popgym")


def relu_stack(in_size: int, sizes: Sequence[int], first_norm: bool = False) -> Tuple[nn.Module, int]:
    """Linear + ReLU per size; ``first_norm``: the first activation is LayerNorm without affine."""
    layers = []
    for i, h in enumerate(sizes):
        act = nn.LayerNorm(int(h), elementwise_affine=False) if first_norm and i == 0 else nn.ReLU()
        layers += [nn.Linear(in_size, int(h)), act]
        in_size = int(h)
    return nn.Sequential(*layers), in_size


def orthogonal_weights_(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight)


class SineTimeEmbedding(nn.Module):
    """x [...,F], t [...] -> (1 − s) LN(x) + s pe(t), pe(t)[2i] = sin(t ω_i), pe(t)[2i+1] = cos(t ω_i),
    ω_i = max_len^(−2i/F) (POPGym's table, with log(max_len) in place of log(10⁴); computed, not
    looked up, so any t works)."""

    def __init__(self, size: int, max_len: int = 1024):
        super().__init__()
        self.size = size
        self.norm = nn.LayerNorm(size, elementwise_affine=False)
        self.strength = nn.Parameter(torch.tensor(0.5))
        self.register_buffer("freq", torch.exp(torch.arange(0, size, 2) * (-math.log(max_len) / size)),
                             persistent=False)

    def code(self, t: Tensor, dtype) -> Tensor:
        angle = t.unsqueeze(-1).to(dtype) * self.freq.to(dtype)              # [..., ceil(F/2)]
        return torch.stack([angle.sin(), angle.cos()], -1).flatten(-2)[..., :self.size]

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        s = self.strength.clamp(0.0, 1.0)
        return (1 - s) * self.norm(x) + s * self.code(t, x.dtype)


def episode_steps(t0: Tensor, reset: Optional[Tensor], T: int) -> Tensor:
    """Step index within the episode of each position of a [B,T] chunk: t0 [B] (the first
    position's index unless it starts an episode) + j, restarting at 0 where ``reset``."""
    pos = torch.arange(T, device=t0.device)
    t = t0.unsqueeze(1) + pos
    if reset is None:
        return t
    last = torch.where(reset, pos, -1).cummax(1).values                     # last episode start at or before j
    return torch.where(last >= 0, pos - last, t)


class PPOAgent(nn.Module):
    def __init__(self, obs_dim: int, num_actions: int, memory: Callable[[int], Memory],
                 pre_layers: Sequence[int] = (128, 64), post_layers: Sequence[int] = (64,),
                 init: str = "reference", time_embedding: Optional[str] = None, layout: str = "memrl"):
        super().__init__()
        if time_embedding not in TIME_EMBEDDINGS:
            raise ValueError(f"ppo_agent.time_embedding={time_embedding!r}: valid: null (none) | sine")
        if layout not in LAYOUTS:
            raise ValueError(f"ppo_agent.layout={layout!r}: valid: {' | '.join(LAYOUTS)}")
        if layout == "popgym" and len(pre_layers) == 0:
            raise ValueError("ppo_agent.layout=popgym starts with POPGym's Linear + LayerNorm: give "
                             "ppo_agent.pre_layers at least one layer")
        if time_embedding is not None and len(pre_layers) == 0:
            raise ValueError("ppo_agent.time_embedding=sine mixes the code into the first pre layer's "
                             "features: give ppo_agent.pre_layers at least one layer")
        popgym = layout == "popgym"
        self.pre, size = relu_stack(obs_dim, pre_layers, first_norm=popgym)
        self.time_embedding = None
        if time_embedding == "sine":
            self.time_embedding = SineTimeEmbedding(int(pre_layers[0]))
        self.memory = memory(size)
        if init not in ("reference", "layer"):
            raise ValueError(f"ppo_agent.init={init}: valid: reference (orthogonal weights, zero biases) | layer")
        if init == "reference":  # as agent.init for SAC (docs/memory_models.md, "Init")
            reference_init_(self.memory)
        self.post, size = relu_stack(self.memory.output_size, post_layers)
        if popgym:
            self.pi = nn.Sequential(nn.Linear(size, size), nn.Linear(size, num_actions))
            self.v = nn.Sequential(nn.Linear(size, size), nn.Linear(size, 1))
            for part in (self.pre, self.post, self.pi[0], self.v[0]):
                orthogonal_weights_(part)
            nn.init.normal_(self.pi[1].weight, std=0.01)  # near-uniform policy, near-zero values
            nn.init.normal_(self.v[1].weight, std=0.01)
        else:
            self.pi = nn.Linear(size, num_actions)
            self.v = nn.Linear(size, 1)
            nn.init.orthogonal_(self.pi.weight, 0.01)  # near-uniform initial policy
            nn.init.zeros_(self.pi.bias)
            nn.init.orthogonal_(self.v.weight, 1.0)
            nn.init.zeros_(self.v.bias)

    def initial_state(self, batch_size: int, device=None) -> State:
        state = self.memory.initial_state(batch_size, device)
        if self.time_embedding is not None:  # + the step counter of each env's episode
            state = (*state, torch.zeros(batch_size, dtype=torch.long, device=device))
        return state

    def _features(self, obs: Tensor, t: Tensor) -> Tensor:
        if self.time_embedding is None:
            return self.pre(obs)
        first, rest = self.pre[:2], self.pre[2:]  # Linear + ReLU, then the others
        return rest(self.time_embedding(first(obs), t))

    def _heads(self, h: Tensor) -> Tuple[Tensor, Tensor]:
        h = self.post(h)
        return self.pi(h), self.v(h).squeeze(-1)

    def forward(self, obs: Tensor, state: Optional[State] = None,
                reset: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, State]:
        """Sequences obs [B,T,D] (``reset[b,t]``: obs[b,t] starts an episode) -> logits [B,T,A],
        values [B,T], the state after the last step."""
        if state is None:
            state = self.initial_state(obs.shape[0], obs.device)
        t = None
        if self.time_embedding is not None:
            *state, t0 = state
            t = episode_steps(t0, reset, obs.shape[1])
        h, mem = self.memory(self._features(obs, t), tuple(state), reset)
        state = mem if t is None else (*mem, t[:, -1] + 1)
        return (*self._heads(h), state)

    @torch.no_grad()
    def step(self, obs: Tensor, state: State, reset: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, State]:
        """One acting step: obs [B,D] -> logits [B,A], values [B], new state."""
        t = None
        if self.time_embedding is not None:
            *state, t = state
            if reset is not None:
                t = torch.where(reset, torch.zeros_like(t), t)
        h, mem = self.memory.step(self._features(obs, t), tuple(state), reset)
        state = mem if t is None else (*mem, t + 1)
        return (*self._heads(h), state)
