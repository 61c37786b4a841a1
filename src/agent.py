"""The recurrent actor-critic used for every task (DESIGN.md, reference §1).

Sequence inputs at index t are (previous action a_{t-1}, previous reward r_{t-1}, observation o_t),
with zeros at t = 0. Each of actor and critic embeds them, concatenates the embeddings
[action, reward, observation] (an embedding of size 0 switches that input off) and feeds its own
memory layer. Heads:
  actor  : [memory_t, emb(o_t)]                  -> MLP -> tanh-Gaussian
  critic : [memory_t, relu(Linear([o_t, a_t]))]  -> twin MLP -> Q1, Q2
The critic has a full target copy (embedders, memory and heads).
"""
from __future__ import annotations

import copy
from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from torchkit.memory import Memory, State, orthogonal_init_
from torchkit.nets import MLP, Embedder, TanhGaussianHead, tanh_gaussian_sample

MemoryFactory = Callable[[int], Memory]  # input_size -> memory layer


def obs_embedder(obs_shape: Tuple[int, ...], size: int) -> nn.Module:
    if len(obs_shape) != 1:
        raise ValueError(f"observations of shape {obs_shape} need an image encoder; "
                         f"only flat vector observations are supported by this agent")
    return Embedder(obs_shape[0], size)


class SequenceEncoder(nn.Module):
    """(prev action, prev reward, obs) sequences -> memory features [B, T, W]."""

    def __init__(self, obs_shape, action_dim: int, embed: dict, memory: MemoryFactory,
                 orthogonal_init: bool = True):
        super().__init__()
        self.action_emb = Embedder(action_dim, embed["action"])
        self.reward_emb = Embedder(1, embed["reward"])
        self.obs_emb = obs_embedder(obs_shape, embed["obs"])
        self.input_size = embed["action"] + embed["reward"] + embed["obs"]
        if self.input_size <= 0:
            raise ValueError("agent embeddings are all 0: enable at least one of action/reward/obs")
        self.memory = memory(self.input_size)
        if orthogonal_init:
            orthogonal_init_(self.memory)
        self.output_size = self.memory.output_size

    def inputs(self, prev_action: Tensor, prev_reward: Tensor, obs: Tensor) -> Tensor:
        return torch.cat([self.action_emb(prev_action), self.reward_emb(prev_reward), self.obs_emb(obs)], -1)

    def forward(self, prev_action, prev_reward, obs, state: Optional[State] = None,
                reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        return self.memory(self.inputs(prev_action, prev_reward, obs), state, reset)

    def step(self, prev_action, prev_reward, obs, state: State,
             reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        return self.memory.step(self.inputs(prev_action, prev_reward, obs), state, reset)


class Actor(nn.Module):
    def __init__(self, obs_shape, action_dim: int, embed: dict, memory: MemoryFactory,
                 hidden: Sequence[int], orthogonal_init: bool = True):
        super().__init__()
        self.encoder = SequenceEncoder(obs_shape, action_dim, embed, memory, orthogonal_init)
        self.current_obs_emb = obs_embedder(obs_shape, embed["current_obs"])
        self.head = TanhGaussianHead(self.encoder.output_size + embed["current_obs"], hidden, action_dim)

    def dist_params(self, features: Tensor, obs: Tensor) -> Tuple[Tensor, Tensor]:
        return self.head(torch.cat([features, self.current_obs_emb(obs)], -1))

    def forward(self, prev_action, prev_reward, obs, state=None, reset=None):
        """Whole sequences -> (mean, log_std) [B, T, A] and the final memory state."""
        h, state = self.encoder(prev_action, prev_reward, obs, state, reset)
        return self.dist_params(h, obs), state

    def step(self, prev_action, prev_reward, obs, state, reset=None):
        h, state = self.encoder.step(prev_action, prev_reward, obs, state, reset)
        return self.dist_params(h, obs), state


class Critic(nn.Module):
    def __init__(self, obs_shape, action_dim: int, embed: dict, memory: MemoryFactory,
                 hidden: Sequence[int], orthogonal_init: bool = True):
        super().__init__()
        self.encoder = SequenceEncoder(obs_shape, action_dim, embed, memory, orthogonal_init)
        if len(obs_shape) != 1:
            raise ValueError(f"critic shortcut needs flat observations, got shape {obs_shape}")
        shortcut = self.encoder.input_size  # reference: Linear(obs+act -> rnn_input_size)
        self.shortcut = Embedder(obs_shape[0] + action_dim, shortcut)
        in_size = self.encoder.output_size + shortcut
        self.q1 = MLP(in_size, hidden, 1, init_w=3e-3)
        self.q2 = MLP(in_size, hidden, 1, init_w=3e-3)

    def features(self, prev_action, prev_reward, obs, state=None, reset=None) -> Tensor:
        return self.encoder(prev_action, prev_reward, obs, state, reset)[0]

    def heads(self, features: Tensor, obs: Tensor, action: Tensor) -> Tuple[Tensor, Tensor]:
        x = torch.cat([features, self.shortcut(torch.cat([obs, action], -1))], -1)
        return self.q1(x), self.q2(x)


class RecurrentActorCritic(nn.Module):
    """Actor, twin-Q critic and the critic's target copy; each of actor and critic owns a memory."""

    def __init__(self, obs_shape, action_dim: int, embed: dict, memory: MemoryFactory,
                 actor_memory: Optional[MemoryFactory] = None, policy_layers=(128, 128),
                 q_layers=(128, 128), orthogonal_init: bool = True):
        super().__init__()
        self.obs_shape, self.action_dim = tuple(obs_shape), action_dim
        self.actor = Actor(obs_shape, action_dim, embed, actor_memory or memory, policy_layers, orthogonal_init)
        self.critic = Critic(obs_shape, action_dim, embed, memory, q_layers, orthogonal_init)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_target.requires_grad_(False)

    def initial_actor_state(self, batch_size: int, device=None) -> State:
        return self.actor.encoder.memory.initial_state(batch_size, device)

    @torch.no_grad()
    def act(self, prev_action: Tensor, prev_reward: Tensor, obs: Tensor, state: State,
            deterministic: bool = False) -> Tuple[Tensor, State]:
        """One batched acting step: [B, A], [B, 1], [B, *obs] -> action [B, A] in [-1, 1], new state."""
        (mean, log_std), state = self.actor.step(prev_action, prev_reward, obs, state)
        if deterministic:
            return torch.tanh(mean), state
        a, _ = tanh_gaussian_sample(mean, log_std, reparameterize=False)
        return a, state

    @torch.no_grad()
    def soft_update_target(self, tau: float) -> None:
        for p_t, p in zip(self.critic_target.parameters(), self.critic.parameters()):
            p_t.lerp_(p, tau)

