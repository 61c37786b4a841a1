"""SAC-Discrete over whole-episode sequences with masks (ref-pomdp-baselines §2.3,
ref-credit-assignment §6.1; Christodoulou 2019).

Batch (from EpisodeReplay) as for SAC, with one-hot actions: obs [B,T+1,...], act [B,T,|A|] one-hot,
rew [B,T], term [B,T], mask [B,T]. Sequence index t of the memory input holds (a_{t-1}, r_{t-1}, o_t)
with zeros at t = 0.

  policy  p = softmax(logits), log p = log(clamp(p, 1e-8))
  target  y_t = r_t + (1 − d_t) γ Σ_a p(a|h_{t+1}) [min Q̄(h̄_{t+1}, a) − α log p(a|h_{t+1})]   (current actor)
  critic  L_Q = Σ_t m_t [(Q1(h_t, a_t) − y)² + (Q2(h_t, a_t) − y)²] / N        Q gathered at the stored action
  actor   L_π = Σ_{t<T} m_t Σ_a p(a|h_t) [α log p(a|h_t) − min Q(h_t, a)] / N  (critic after its step)
  alpha   L_α = −α (mean Σ_a p log p + H̄),  H̄ = ratio · log|A|   (only with auto_alpha)
Fixed α = 0.1 by default (the reference credit-assignment configs; auto-tuning fails on delayed
rewards, pomdp-baselines PR #2). Update order: critic step -> actor step -> soft target update -> α step.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
from torch import Tensor

from src.agent import RecurrentActorCritic
from src.algos.sac import SAC, masked_mean, mixed_precision


def categorical_probs(logits: Tensor) -> Tuple[Tensor, Tensor]:
    """logits [..., A] -> (p, log p) with log p = log(clamp(p, 1e-8)) as the reference."""
    p = torch.softmax(logits, -1)
    return p, torch.log(p.clamp_min(1e-8))


class SACDiscrete(SAC):
    STATS = SAC.STATS

    def __init__(self, agent: RecurrentActorCritic, gamma: float = 0.99, tau: float = 0.005,
                 lr: float = 3e-4, alpha_lr: float = 3e-4, auto_alpha: bool = False,
                 init_alpha: float = 0.1, target_entropy_ratio: float = 0.7, grad_clip=None,
                 precision: str = "fp32"):
        if not getattr(agent, "discrete", False):
            raise ValueError("SAC-Discrete needs an agent built with discrete=True (categorical actor, |A| Q values)")
        if init_alpha <= 0:
            raise ValueError(f"init_alpha must be > 0, got {init_alpha}")
        if not 0.0 < target_entropy_ratio <= 1.0:
            raise ValueError(f"target_entropy_ratio must be in (0, 1], got {target_entropy_ratio}")
        self.target_entropy_ratio = float(target_entropy_ratio)
        super().__init__(agent, gamma=gamma, tau=tau, lr=lr, alpha_lr=alpha_lr, auto_alpha=auto_alpha,
                         init_alpha=init_alpha, target_entropy=self.target_entropy_ratio * math.log(agent.action_dim),
                         grad_clip=grad_clip, precision=precision)

    @mixed_precision
    def update(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """One gradient step on each of critic, actor and (if auto_alpha) α. Returns detached scalars."""
        agent, alpha = self.agent, self.alpha
        obs, act, rew, term, mask, n, prev_act, prev_rew = self._sequences(batch)
        T = act.shape[1]

        # One actor forward (T+1 steps) serves the TD target (detached) and the actor loss.
        logits, _ = agent.actor(prev_act, prev_rew, obs)                   # [B,T+1,A]
        p, logp = categorical_probs(logits)

        with torch.no_grad():
            q1_t, q2_t = agent.critic_target.action_values(prev_act, prev_rew, obs, slice(1, None))  # [B,T,A]
            p_next, logp_next = p[:, 1:].detach(), logp[:, 1:].detach()
            v_next = (p_next * (torch.min(q1_t, q2_t) - alpha * logp_next)).sum(-1, keepdim=True)
            y = rew.unsqueeze(-1) + (1.0 - term.unsqueeze(-1)) * self.gamma * v_next

        # The critic and actor losses read memory outputs at t < T only: its inputs stop at T-1.
        inputs = (prev_act[:, :T], prev_rew[:, :T], obs[:, :T])
        q1_all, q2_all = agent.critic.action_values(*inputs, slice(None))  # [B,T,A]
        idx = act.argmax(-1, keepdim=True)                                 # stored one-hot -> index
        q1, q2 = q1_all.gather(-1, idx), q2_all.gather(-1, idx)            # [B,T,1]
        qf1_loss = masked_mean((q1 - y).pow(2), mask, n)
        qf2_loss = masked_mean((q2 - y).pow(2), mask, n)
        q_grad_norm = self._step(self.critic_opt, qf1_loss + qf2_loss, agent.critic.parameters())

        with torch.no_grad():  # the actor loss needs no gradient through Q (expectation over actions)
            q1_pi, q2_pi = agent.critic.action_values(*inputs, slice(None))
            min_q = torch.min(q1_pi, q2_pi)
        p_t, logp_t = p[:, :T], logp[:, :T]
        policy_loss = masked_mean((p_t * (alpha * logp_t - min_q)).sum(-1, keepdim=True), mask, n)
        pi_grad_norm = self._step(self.actor_opt, policy_loss, agent.actor.parameters())

        agent.soft_update_target(self.tau)

        mean_plogp = masked_mean((p_t * logp_t).sum(-1, keepdim=True).detach(), mask, n)  # −entropy
        self._alpha_step(mean_plogp)
        return self._stats(qf1_loss, qf2_loss, policy_loss, alpha, mean_plogp, q_grad_norm, pi_grad_norm)
