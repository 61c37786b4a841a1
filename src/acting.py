"""The actor's acting step for rollouts: ``ActingPolicy`` (fast) and ``ReferencePolicy`` (the plain
``RecurrentActorCritic.act``, kept as the reference the fast one is tested against).

Both compute the same function: per step, (previous action, previous reward, observation) [B, ...]
-> embeddings -> the actor's memory step -> head -> an action (sampled, or the mode when
deterministic), drawing the same random numbers in the same order. ``ActingPolicy`` reads the actor's
parameters once, when it is made, and so is valid for one rollout, while the parameters do not
change. What it prepares then:

- the three flat-input embedders (Linear + ReLU each) and the current-observation embedder as one
  block-diagonal Linear over [a_{t-1}, r_{t-1}, o_t] (one GEMM instead of four, and no concatenation
  of their outputs); image observations keep their CNN modules;
- the memory's ``acting_step`` (GRU: torch.gru_cell; SHM: its input projections as one weight);
- the head's layers as (Wᵀ, b) pairs, with a widening memory readout folded into the first one and
  the mean and log-std layers as one (what the heads build on every call when training);
- every tensor op runs under ``torch.inference_mode`` (no autograd bookkeeping).
Numbers can differ from the reference path in the last bits (GEMMs of other shapes);
tests/test_acting.py bounds the difference and checks it against the actor's sequence forward.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from src.agent import RecurrentActorCritic, is_image
from torchkit.memory import State
from torchkit.nets import LOG_STD_MAX, LOG_STD_MIN, Embedder


class ReferencePolicy:
    """``agent.act`` step by step, behind the same interface as ``ActingPolicy``."""

    def __init__(self, agent: RecurrentActorCritic):
        self.agent = agent

    def initial_state(self, batch_size: int, device=None) -> State:
        return self.agent.initial_actor_state(batch_size, device)

    def act(self, prev_action: Tensor, prev_reward: Tensor, obs: Tensor, state: State,
            deterministic: bool = False) -> Tuple[Tensor, State]:
        return self.agent.act(prev_action, prev_reward, obs, state, deterministic=deterministic)


def _block_embedding(actor, action_dim: int, obs_dim: int) -> Tuple[Tensor, Tensor, int]:
    """The flat embedders as one Linear over u = [a (A), r (1), o (D)]: (Wᵀ [A+1+D, E], b [E], the
    width of the memory input). Output columns: [emb(a), emb(r), emb(o) | current_obs_emb(o)]."""
    enc = actor.encoder
    spans = ((enc.action_emb, 0, action_dim), (enc.reward_emb, action_dim, action_dim + 1),
             (enc.obs_emb, action_dim + 1, action_dim + 1 + obs_dim),
             (actor.current_obs_emb, action_dim + 1, action_dim + 1 + obs_dim))
    rows, biases = [], []
    for emb, lo, hi in spans:
        if emb.net is None:  # embedding size 0: no columns
            continue
        lin = emb.net[0]
        w = lin.weight.new_zeros(lin.out_features, action_dim + 1 + obs_dim)
        w[:, lo:hi] = lin.weight
        rows.append(w)
        biases.append(lin.bias)
    return torch.cat(rows).t().contiguous(), torch.cat(biases), enc.input_size


class ActingPolicy:
    """The actor's step with its weights prepared once (see the module docstring). Make a new one
    after every parameter update; ``act`` has ``RecurrentActorCritic.act``'s signature."""

    @torch.no_grad()
    def __init__(self, agent: RecurrentActorCritic):
        actor = agent.actor
        enc = actor.encoder
        self.agent, self.discrete, self.action_dim = agent, agent.discrete, agent.action_dim
        self.flat = not is_image(agent.obs_shape) and all(
            isinstance(m, Embedder) for m in (enc.action_emb, enc.reward_emb, enc.obs_emb, actor.current_obs_emb))
        if self.flat:
            self.emb_w, self.emb_b, self.memory_width = _block_embedding(actor, agent.action_dim, agent.obs_shape[0])
        self.memory_step = enc.memory.acting_step(unread=enc.fold)
        if self.discrete:
            layers = actor.head.layers(enc.readout)
        else:  # mean and log-std as one output layer, as TanhGaussianHead.forward
            head = actor.head
            last = (torch.cat([head.mlp.last.weight, head.log_std.weight]),
                    torch.cat([head.mlp.last.bias, head.log_std.bias]))
            layers = head.mlp.layers(enc.readout, last=last)
        self.layers: List[Tuple[Tensor, Tensor]] = [(w.t().contiguous(), b.clone()) for w, b in layers]

    def initial_state(self, batch_size: int, device=None) -> State:
        return self.agent.initial_actor_state(batch_size, device)

    def _embed(self, prev_action: Tensor, prev_reward: Tensor, obs: Tensor) -> Tuple[Tensor, Tensor]:
        """(memory input [B, input_size], current-observation embedding [B, E_cur])."""
        if self.flat:
            e = torch.addmm(self.emb_b, torch.cat([prev_action, prev_reward, obs], -1), self.emb_w).relu_()
            return e[:, :self.memory_width], e[:, self.memory_width:]
        actor = self.agent.actor  # images: the modules themselves (one CNN pass where shared)
        shared = actor._shared_emb(obs)
        x = actor.encoder.inputs(prev_action, prev_reward, obs, shared)
        return x, shared if shared is not None else actor.current_obs_emb(obs)

    @torch.inference_mode()
    def act(self, prev_action: Tensor, prev_reward: Tensor, obs: Tensor, state: State,
            deterministic: bool = False) -> Tuple[Tensor, State]:
        """One batched step: [B, A], [B, 1], [B, *obs] -> action [B, A] in [-1, 1] (discrete: one-hot),
        new state."""
        x, cur = self._embed(prev_action, prev_reward, obs)
        features, state = self.memory_step(x, state)
        h = torch.cat([features, cur], -1)
        for w_t, b in self.layers[:-1]:
            h = torch.addmm(b, h, w_t).relu_()
        out = torch.addmm(self.layers[-1][1], h, self.layers[-1][0])
        if self.discrete:
            idx = out.argmax(-1) if deterministic else torch.distributions.Categorical(logits=out).sample()
            return F.one_hot(idx, self.action_dim).to(out.dtype), state
        mean, log_std = out.split(self.action_dim, -1)
        if deterministic:
            return torch.tanh(mean), state
        eps = torch.randn_like(mean)  # the draw of tanh_gaussian_sample
        return torch.tanh(mean + log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp() * eps), state


def acting_policy(agent: RecurrentActorCritic, fast: bool = True):
    """The policy one rollout acts with: ``ActingPolicy`` (fast) or ``ReferencePolicy``."""
    return ActingPolicy(agent) if fast else ReferencePolicy(agent)
