"""TD3 over sequences with masks (Fujimoto et al. 2018; pomdp-baselines policies/rl/td3.py facts).

The same recurrent actor-critic as SAC: the actor's tanh-Gaussian head is read deterministically,
μ(h) = tanh(mean) (its log-std output is unused). Actions live in the policy box [-1, 1] (the env
wrappers map it onto the env's range), so the noise scales below are in units of half the range.

  smoothing  ã_{t+1} = clip(μ̄(h̄'_{t+1}) + clip(ε, −c, c), −1, 1),  ε ~ N(0, σ̃²)   (μ̄: target actor)
  target     y_t = r_t + (1 − d_t) γ min Q̄(h̄_{t+1}, o_{t+1}, ã_{t+1})
  critic     L_Q = Σ_t m_t [(Q1 − y)² + (Q2 − y)²] / N                   N = max(1, Σ m)
  actor      L_μ = −Σ_{t<T} m_t min Q(h_t, o_t, μ(h_t)) / N   (min of the twins, as pomdp-baselines)
  acting     a = clip(μ(h) + N(0, σ²), −1, 1)  when stochastic (exploration noise σ)
Every update steps the critic; every ``policy_delay``-th update also steps the actor and then
soft-updates both targets (critic and actor) by τ.
"""
from __future__ import annotations

import copy
from typing import Dict, Optional

import torch
from torch import Tensor

from src.agent import RecurrentActorCritic
from src.algos.sac import SAC, adam, masked_mean, mixed_precision
from torchkit.precision import autocast_dtype


def smoothing_noise(like: Tensor, std: float, clip: float) -> Tensor:
    """Target-policy smoothing noise: N(0, std²) clipped to [−clip, clip], shaped like ``like``."""
    return (torch.randn_like(like) * std).clamp(-clip, clip)


class TD3:
    STATS = ("qf1_loss", "qf2_loss", "policy_loss", "q_grad_norm", "pi_grad_norm")

    def __init__(self, agent: RecurrentActorCritic, gamma: float = 0.99, tau: float = 0.005,
                 lr: float = 3e-4, exploration_noise: float = 0.1, target_noise: float = 0.2,
                 target_noise_clip: float = 0.5, policy_delay: int = 2, grad_clip: Optional[float] = None,
                 precision: str = "fp32"):
        if agent.discrete:
            raise ValueError("algo=td3 needs a continuous (Box) action space; for discrete actions use algo=sacd")
        if not 0.0 <= gamma <= 1.0 or not 0.0 < tau <= 1.0 or lr <= 0:
            raise ValueError(f"bad TD3 hyperparameters: gamma={gamma} (in [0,1]), tau={tau} (in (0,1]), lr={lr} (> 0)")
        if int(policy_delay) != policy_delay or policy_delay < 1:
            raise ValueError(f"algo.policy_delay={policy_delay}: must be an integer >= 1 (TD3: 2)")
        if min(exploration_noise, target_noise, target_noise_clip) < 0:
            raise ValueError(f"TD3 noise scales must be >= 0: exploration_noise={exploration_noise}, "
                             f"target_noise={target_noise}, target_noise_clip={target_noise_clip}")
        self.agent, self.gamma, self.tau, self.grad_clip = agent, gamma, tau, grad_clip
        self.target_noise, self.target_noise_clip = target_noise, target_noise_clip
        self.policy_delay = int(policy_delay)
        agent.exploration_noise = float(exploration_noise)  # stochastic acting: μ + N(0, σ²), clipped
        self.actor_target = copy.deepcopy(agent.actor).requires_grad_(False)
        self.actor_opt = adam(agent.actor.parameters(), lr)
        self.critic_opt = adam(agent.critic.parameters(), lr)
        self.num_updates = 0  # critic steps so far; the actor steps when it is a multiple of policy_delay
        device = self.device = next(agent.parameters()).device
        self.autocast_dtype = autocast_dtype(precision, device)  # None (float32) or torch.bfloat16, as SAC
        self._last_actor = {"policy_loss": torch.zeros((), device=device),
                            "pi_grad_norm": torch.zeros((), device=device)}

    @property
    def alpha(self) -> Tensor:
        """No entropy term (the loop logs α for every algorithm): always 0."""
        return torch.zeros(())

    _step = SAC._step

    @mixed_precision
    def update(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """One critic step; every ``policy_delay``-th call also an actor step and the target updates.
        Between actor steps the policy statistics repeat the last actor step's values."""
        agent = self.agent
        obs, act, rew, term, mask, n, prev_act, prev_rew = SAC._sequences(batch)
        T = act.shape[1]

        with torch.no_grad():
            (mean_t, _), _ = self.actor_target(prev_act, prev_rew, obs)          # [B,T+1,A]
            a_next = torch.tanh(mean_t[:, 1:])
            a_next = (a_next + smoothing_noise(a_next, self.target_noise, self.target_noise_clip)).clamp(-1.0, 1.0)
            h_target = agent.critic_target.features(prev_act, prev_rew, obs)[:, 1:]
            q1_t, q2_t = agent.critic_target.heads(h_target, obs[:, 1:], a_next)   # [B,T,1]
            y = rew.unsqueeze(-1) + (1.0 - term.unsqueeze(-1)) * self.gamma * torch.min(q1_t, q2_t)

        inputs = (prev_act[:, :T], prev_rew[:, :T], obs[:, :T])
        h = agent.critic.features(*inputs)
        q1, q2 = agent.critic.heads(h, obs[:, :T], act)
        qf1_loss = masked_mean((q1 - y).pow(2), mask, n)
        qf2_loss = masked_mean((q2 - y).pow(2), mask, n)
        q_grad_norm = self._step(self.critic_opt, qf1_loss + qf2_loss, agent.critic.parameters())
        self.num_updates += 1

        if self.num_updates % self.policy_delay == 0:
            (mean, _), _ = agent.actor(*inputs)                                   # [B,T,A]
            with torch.no_grad():  # the gradient reaches the actor through μ(h) only
                h = agent.critic.features(*inputs)
            agent.critic.requires_grad_(False)
            q1_pi, q2_pi = agent.critic.heads(h, obs[:, :T], torch.tanh(mean))
            agent.critic.requires_grad_(True)
            policy_loss = masked_mean(-torch.min(q1_pi, q2_pi), mask, n)
            pi_grad_norm = self._step(self.actor_opt, policy_loss, agent.actor.parameters())
            agent.soft_update_target(self.tau)
            with torch.no_grad():
                torch._foreach_lerp_(list(self.actor_target.parameters()), list(agent.actor.parameters()), self.tau)
            self._last_actor = {"policy_loss": policy_loss.detach(), "pi_grad_norm": pi_grad_norm.detach()}
        return {"qf1_loss": qf1_loss.detach(), "qf2_loss": qf2_loss.detach(), "q_grad_norm": q_grad_norm.detach(),
                **self._last_actor}

    def state_dict(self) -> dict:
        return {"actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "actor_target": self.actor_target.state_dict(), "num_updates": self.num_updates,
                "last_actor": {k: v.detach().clone() for k, v in self._last_actor.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.actor_target.load_state_dict(state["actor_target"])
        self.num_updates = int(state["num_updates"])
        self._last_actor = {k: v.to(self._last_actor[k].device) for k, v in state["last_actor"].items()}
