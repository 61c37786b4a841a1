"""The recurrent actor-critic used for every task (DESIGN.md, reference §1).

Sequence inputs at index t are (previous action a_{t-1}, previous reward r_{t-1}, observation o_t),
with zeros at t = 0. Each of actor and critic embeds them, concatenates the embeddings
[action, reward, observation] (an embedding of size 0 switches that input off) and feeds its own
memory layer. Heads, continuous actions (SAC):
  actor  : [memory_t, emb(o_t)]                  -> MLP -> tanh-Gaussian
  critic : [memory_t, relu(Linear([o_t, a_t]))]  -> twin MLP -> Q1, Q2
discrete actions (SAC-Discrete; actions one-hot everywhere):
  actor  : [memory_t, emb(o_t)]                  -> MLP -> |A| logits (categorical policy)
  critic : [memory_t, shortcut(o_t)]             -> twin MLP -> |A| values each
The critic has a full target copy (embedders, memory and heads).

Image observations ([H, W, C] uint8 pixels, e.g. the 5x5x3 credit-assignment crops) are embedded
by the reference's small CNN (``torchkit.nets.ImageEncoder``). As in the reference, within each of
actor and critic one CNN serves both the memory input and the current-observation shortcut (the
actor's ``current_obs`` embedding when its size equals ``obs``; the critic's shortcut is the CNN
embedding of o_t itself).
"""
from __future__ import annotations

import copy
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchkit.memory import Memory, State, reference_init_
from torchkit.nets import MLP, Embedder, ImageEncoder, TanhGaussianHead, tanh_gaussian_sample

MemoryFactory = Callable[[int], Memory]  # input_size -> memory layer
# How the memory layers start: "reference" = the released code's blanket rule (weights orthogonal,
# biases zero, by parameter name; torchkit.memory.reference_init_) over the layer's own init;
# "layer" = each layer's own init (reset_parameters), e.g. S6's Δ bias and GPT-2's N(0, 0.02).
MEMORY_INITS = ("reference", "layer")


def is_image(obs_shape: Tuple[int, ...]) -> bool:
    return len(obs_shape) == 3


class NoEmbedding(nn.Module):
    """An input switched off (embedding size 0): [..., *obs_shape] -> [..., 0]."""

    def __init__(self, obs_ndim: int):
        super().__init__()
        self.obs_ndim = obs_ndim

    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros(*x.shape[:x.dim() - self.obs_ndim], 0, device=x.device)


def obs_embedder(obs_shape: Tuple[int, ...], size: int) -> nn.Module:
    """Flat vectors -> Linear + ReLU; [H, W, C] images -> the reference CNN; size 0 -> off."""
    if is_image(obs_shape):
        return ImageEncoder(obs_shape, size) if size > 0 else NoEmbedding(3)
    if len(obs_shape) != 1:
        raise ValueError(f"observations of shape {tuple(obs_shape)} are not supported: the agent takes "
                         f"flat vectors [D] or images [H, W, C]")
    return Embedder(obs_shape[0], size)


class SequenceEncoder(nn.Module):
    """(prev action, prev reward, obs) sequences -> memory features [B, T, W].

    ``fold_readout``: when the memory ends in a Linear that widens (SHM: 24 -> width), the encoder
    outputs the narrow z before it and the heads fold that Linear into their first layers
    (``readout`` is then set; the heads read [readout(z), ...] at the cost of [z, ...])."""

    def __init__(self, obs_shape, action_dim: int, embed: dict, memory: MemoryFactory,
                 memory_init: str = "reference", fold_readout: bool = True):
        super().__init__()
        self.action_emb = Embedder(action_dim, embed["action"])
        self.reward_emb = Embedder(1, embed["reward"])
        self.obs_emb = obs_embedder(obs_shape, embed["obs"])
        self.input_size = embed["action"] + embed["reward"] + embed["obs"]
        if self.input_size <= 0:
            raise ValueError("agent embeddings are all 0: enable at least one of action/reward/obs")
        self.memory = memory(self.input_size)
        if memory_init not in MEMORY_INITS:
            raise ValueError(f"agent.init={memory_init}: valid: {', '.join(MEMORY_INITS)}")
        if memory_init == "reference":  # overwrites parts of the layer's own init (its docstring says which)
            reference_init_(self.memory)
        self.output_size = self.memory.output_size
        ro = self.memory.readout
        self.fold = fold_readout and ro is not None and ro.in_features < ro.out_features

    @property
    def readout(self) -> Optional[nn.Linear]:
        """The memory's final Linear when the heads apply it (folded), else None."""
        return self.memory.readout if self.fold else None

    def inputs(self, prev_action: Tensor, prev_reward: Tensor, obs: Tensor,
               obs_emb: Optional[Tensor] = None) -> Tensor:
        """Memory inputs [..., input_size]; ``obs_emb`` = self.obs_emb(obs) when already computed."""
        e = self.obs_emb(obs) if obs_emb is None else obs_emb
        return torch.cat([self.action_emb(prev_action), self.reward_emb(prev_reward), e], -1)

    def forward(self, prev_action, prev_reward, obs, state: Optional[State] = None,
                reset: Optional[Tensor] = None, obs_emb: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        memory = self.memory.forward_unread if self.fold else self.memory
        return memory(self.inputs(prev_action, prev_reward, obs, obs_emb), state, reset)

    def step(self, prev_action, prev_reward, obs, state: State,
             reset: Optional[Tensor] = None, obs_emb: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        step = self.memory.step_unread if self.fold else self.memory.step
        return step(self.inputs(prev_action, prev_reward, obs, obs_emb), state, reset)


class Actor(nn.Module):
    def __init__(self, obs_shape, action_dim: int, embed: dict, memory: MemoryFactory,
                 hidden: Sequence[int], memory_init: str = "reference", discrete: bool = False,
                 fold_readout: bool = True):
        super().__init__()
        self.encoder = SequenceEncoder(obs_shape, action_dim, embed, memory, memory_init, fold_readout)
        if is_image(obs_shape) and embed["current_obs"] > 0 and embed["current_obs"] == embed["obs"]:
            self.current_obs_emb = self.encoder.obs_emb  # one CNN for memory input and shortcut
        else:
            self.current_obs_emb = obs_embedder(obs_shape, embed["current_obs"])
        in_size = self.encoder.output_size + embed["current_obs"]
        self.discrete = discrete
        self.head = MLP(in_size, hidden, action_dim, init_w=1e-3) if discrete else \
            TanhGaussianHead(in_size, hidden, action_dim)

    def dist_params(self, features: Tensor, obs: Tensor, obs_emb: Optional[Tensor] = None):
        """Continuous: (mean, log_std); discrete: logits [..., |A|]. ``obs_emb``: the shared CNN's
        embedding of ``obs`` when already computed."""
        cur = obs_emb if obs_emb is not None else self.current_obs_emb(obs)
        return self.head(torch.cat([features, cur], -1), self.encoder.readout)

    def _shared_emb(self, obs: Tensor) -> Optional[Tensor]:
        """One CNN pass for the memory input and the current-observation input, when they share it."""
        return self.encoder.obs_emb(obs) if self.current_obs_emb is self.encoder.obs_emb else None

    def forward(self, prev_action, prev_reward, obs, state=None, reset=None):
        """Whole sequences -> (mean, log_std) [B, T, A] (discrete: logits [B, T, A]) and the final state."""
        e = self._shared_emb(obs)
        h, state = self.encoder(prev_action, prev_reward, obs, state, reset, obs_emb=e)
        return self.dist_params(h, obs, e), state

    def step(self, prev_action, prev_reward, obs, state, reset=None):
        e = self._shared_emb(obs)
        h, state = self.encoder.step(prev_action, prev_reward, obs, state, reset, obs_emb=e)
        return self.dist_params(h, obs, e), state


class Critic(nn.Module):
    def __init__(self, obs_shape, action_dim: int, embed: dict, memory: MemoryFactory,
                 hidden: Sequence[int], memory_init: str = "reference", discrete: bool = False,
                 fold_readout: bool = True):
        super().__init__()
        self.encoder = SequenceEncoder(obs_shape, action_dim, embed, memory, memory_init, fold_readout)
        self.discrete = discrete
        if is_image(obs_shape):
            if not discrete:
                raise ValueError("image observations are supported with discrete actions only (SAC-Discrete)")
            # reference: the shortcut is the CNN embedding of o_t, the same CNN as the memory input's
            if embed["obs"] > 0:
                self.shortcut, shortcut = self.encoder.obs_emb, embed["obs"]
            else:
                shortcut = self.encoder.input_size
                self.shortcut = ImageEncoder(obs_shape, shortcut)
        elif len(obs_shape) != 1:
            raise ValueError(f"critic shortcut needs flat or image observations, got shape {tuple(obs_shape)}")
        else:
            shortcut = self.encoder.input_size  # reference: Linear(obs(+act) -> rnn_input_size)
            self.shortcut = Embedder(obs_shape[0] + (0 if discrete else action_dim), shortcut)
        in_size = self.encoder.output_size + shortcut
        out = action_dim if discrete else 1
        self.q1 = MLP(in_size, hidden, out, init_w=3e-3)
        self.q2 = MLP(in_size, hidden, out, init_w=3e-3)

    def features(self, prev_action, prev_reward, obs, state=None, reset=None) -> Tensor:
        return self.encoder(prev_action, prev_reward, obs, state, reset)[0]

    def heads(self, features: Tensor, obs: Tensor, action: Optional[Tensor] = None,
              obs_emb: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Continuous: Q(h, o, a) [..., 1] each; discrete (no ``action``): Q(h, o, ·) [..., |A|] each.
        ``obs_emb``: the shortcut's embedding of ``obs`` when already computed."""
        if obs_emb is not None:
            s = obs_emb
        else:
            s = self.shortcut(obs) if self.discrete else self.shortcut(torch.cat([obs, action], -1))
        x = torch.cat([features, s], -1)
        readout = self.encoder.readout
        return self.q1(x, readout), self.q2(x, readout)

    def action_values(self, prev_action, prev_reward, obs, rows: slice) -> Tuple[Tensor, Tensor]:
        """Discrete: Q1, Q2 [B, len(rows), |A|] at sequence positions ``rows`` of whole sequences; the
        CNN runs once when the memory input and the shortcut share it."""
        shared = self.shortcut is self.encoder.obs_emb
        e = self.encoder.obs_emb(obs) if shared else None
        h = self.encoder(prev_action, prev_reward, obs, obs_emb=e)[0]
        return self.heads(h[:, rows], obs[:, rows], obs_emb=None if e is None else e[:, rows])


class RecurrentActorCritic(nn.Module):
    """Actor, twin-Q critic and the critic's target copy; each of actor and critic owns a memory."""

    def __init__(self, obs_shape, action_dim: int, embed: dict, memory: MemoryFactory,
                 actor_memory: Optional[MemoryFactory] = None, policy_layers=(128, 128),
                 q_layers=(128, 128), memory_init: str = "reference", discrete: bool = False,
                 fold_readout: bool = True):
        """``discrete``: ``action_dim`` = |A|, actions are one-hot vectors (inputs and ``act`` output).
        ``memory_init``: one of MEMORY_INITS, for both memories.
        ``fold_readout``: heads fold a widening final Linear of the memory into their first layers
        (the same function, fewer FLOPs; see SequenceEncoder)."""
        super().__init__()
        self.obs_shape, self.action_dim, self.discrete = tuple(obs_shape), action_dim, discrete
        self.actor = Actor(obs_shape, action_dim, embed, actor_memory or memory, policy_layers, memory_init,
                           discrete, fold_readout)
        self.critic = Critic(obs_shape, action_dim, embed, memory, q_layers, memory_init, discrete,
                             fold_readout)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_target.requires_grad_(False)
        # Stochastic acting: None = sample the tanh-Gaussian (SAC); σ = tanh(mean) + N(0, σ²),
        # clipped to [-1, 1] (TD3 sets it)
        self.exploration_noise: Optional[float] = None

    def initial_actor_state(self, batch_size: int, device=None) -> State:
        return self.actor.encoder.memory.initial_state(batch_size, device)

    @torch.no_grad()
    def act(self, prev_action: Tensor, prev_reward: Tensor, obs: Tensor, state: State,
            deterministic: bool = False) -> Tuple[Tensor, State]:
        """One batched acting step: [B, A], [B, 1], [B, *obs] -> action [B, A] in [-1, 1]
        (discrete: one-hot [B, |A|], sampled or argmax), new state."""
        params, state = self.actor.step(prev_action, prev_reward, obs, state)
        if self.discrete:
            idx = params.argmax(-1) if deterministic else torch.distributions.Categorical(logits=params).sample()
            return F.one_hot(idx, self.action_dim).to(params.dtype), state
        mean, log_std = params
        if deterministic:
            return torch.tanh(mean), state
        if self.exploration_noise is not None:
            return (torch.tanh(mean) + self.exploration_noise * torch.randn_like(mean)).clamp(-1.0, 1.0), state
        a, _ = tanh_gaussian_sample(mean, log_std, reparameterize=False)
        return a, state

    @torch.no_grad()
    def soft_update_target(self, tau: float) -> None:
        torch._foreach_lerp_(list(self.critic_target.parameters()), list(self.critic.parameters()), tau)

