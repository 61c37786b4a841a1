"""SAC over whole-episode sequences with masks (reference §2.1-2.2).

Batch (from EpisodeReplay): obs [B,T+1,...], act [B,T,A], rew [B,T], term [B,T], mask [B,T].
Sequence index t of the memory input holds (a_{t-1}, r_{t-1}, o_t) with zeros at t = 0, so memory
output h_t summarises everything up to o_t, exactly as at acting time.

  target  y_t = r_t + (1 - d_t) γ [min Q̄(h̄_{t+1}, o_{t+1}, ã_{t+1}) − α log π(ã_{t+1})],  ã ~ π (current actor)
  critic  L_Q = Σ_t m_t [(Q1 − y)² + (Q2 − y)²] / N              N = max(1, Σ m)
  actor   L_π = Σ_{t<T} m_t [α log π(ã_t) − min Q(h_t, o_t, ã_t)] / N  (critic after its step)
  alpha   L_α = −α (mean log π + H̄),  H̄ = −|A| by default, α₀ = 1
Update order: critic step -> actor step -> soft target update -> α step.

precision="bf16": the forward passes run under bfloat16 autocast (torchkit.precision: float32
parameters, optimiser state, losses, TD targets and memory recurrences); backward passes and
optimiser steps run with autocast off.
"""
from __future__ import annotations

import functools
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from src.agent import RecurrentActorCritic
from torchkit.nets import tanh_gaussian_sample
from torchkit.precision import autocast_dtype, full_precision, parameters_changed, training_autocast


def shift_inputs(act: Tensor, rew: Tensor):
    """[B,T,A], [B,T] -> previous action [B,T+1,A] and previous reward [B,T+1,1], zero at t = 0."""
    prev_act = F.pad(act, (0, 0, 1, 0))
    prev_rew = F.pad(rew, (1, 0)).unsqueeze(-1)
    return prev_act, prev_rew


def masked_mean(x: Tensor, mask: Tensor, n: Tensor) -> Tensor:
    return (x * mask).sum() / n


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam with PyTorch's fused (single-kernel) step where the parameters allow it: the same update,
    ~3x cheaper on CPU for the agent's ~30 small tensors; the for-loop implementation otherwise."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.Adam(params, lr=lr)


def mixed_precision(update):
    """An update method whose forward passes run under the algorithm's autocast (``precision``)."""
    @functools.wraps(update)
    def wrapped(self, batch):
        with training_autocast(self.device, self.autocast_dtype):
            return update(self, batch)
    return wrapped


class SAC:
    STATS = ("qf1_loss", "qf2_loss", "policy_loss", "alpha", "entropy", "q_grad_norm", "pi_grad_norm")

    def __init__(self, agent: RecurrentActorCritic, gamma: float = 0.9, tau: float = 0.005,
                 lr: float = 3e-4, alpha_lr: float = 3e-4, auto_alpha: bool = True,
                 init_alpha: float = 1.0, target_entropy: Optional[float] = None,
                 grad_clip: Optional[float] = None, precision: str = "fp32"):
        if not 0.0 <= gamma <= 1.0 or not 0.0 < tau <= 1.0 or lr <= 0:
            raise ValueError(f"bad SAC hyperparameters: gamma={gamma} (in [0,1]), tau={tau} (in (0,1]), lr={lr} (> 0)")
        self.agent, self.gamma, self.tau, self.grad_clip = agent, gamma, tau, grad_clip
        self.actor_opt = adam(agent.actor.parameters(), lr)
        self.critic_opt = adam(agent.critic.parameters(), lr)
        device = self.device = next(agent.parameters()).device
        # None (float32) or torch.bfloat16; bf16 on a device without it: float32 and a warning
        self.autocast_dtype = autocast_dtype(precision, device)
        self.log_alpha = torch.tensor(float(init_alpha), device=device).log().requires_grad_(True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=alpha_lr)
        self.auto_alpha = auto_alpha
        self.target_entropy = -float(agent.action_dim) if target_entropy is None else float(target_entropy)

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.detach().exp()

    @staticmethod
    def _sequences(batch: Dict[str, Tensor]):
        """Batch -> (obs, act, rew, term, mask [B,T,1], N = max(1, Σ mask), prev action, prev reward)."""
        obs, act, rew, term, mask = (batch[k] for k in ("obs", "act", "rew", "term", "mask"))
        prev_act, prev_rew = shift_inputs(act, rew)
        mask = mask.unsqueeze(-1)
        return obs, act, rew, term, mask, mask.sum().clamp_min(1.0), prev_act, prev_rew

    def _step(self, opt, loss: Tensor, params) -> Tensor:
        with full_precision(loss):  # backward (in the forward's dtypes) and the float32 optimiser step
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip or float("inf"))
            opt.step()
        parameters_changed()  # later forwards in this update's autocast region see the new weights
        return norm

    @mixed_precision
    def update(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """One gradient step on each of critic, actor and α. Returns detached scalar tensors."""
        agent, alpha = self.agent, self.alpha
        obs, act, rew, term, mask, n, prev_act, prev_rew = self._sequences(batch)
        T = act.shape[1]

        # Actor over the whole sequence (T+1 steps); its parameters do not change during the
        # critic step, so this one forward serves both the TD target and the actor loss.
        (mean, log_std), _ = agent.actor(prev_act, prev_rew, obs)          # [B,T+1,A]

        with torch.no_grad():
            a_next, logp_next = tanh_gaussian_sample(mean.detach(), log_std.detach())
            h_target = agent.critic_target.features(prev_act, prev_rew, obs)[:, 1:]
            q1_t, q2_t = agent.critic_target.heads(h_target, obs[:, 1:], a_next[:, 1:])  # [B,T,1]
            v_next = torch.min(q1_t, q2_t) - alpha * logp_next[:, 1:]
            y = rew.unsqueeze(-1) + (1.0 - term.unsqueeze(-1)) * self.gamma * v_next

        # The critic and actor losses read memory outputs at t < T only: its inputs stop at T-1.
        inputs = (prev_act[:, :T], prev_rew[:, :T], obs[:, :T])
        h = agent.critic.features(*inputs)                                   # [B,T,W]
        q1, q2 = agent.critic.heads(h, obs[:, :T], act)                    # [B,T,1]
        qf1_loss = masked_mean((q1 - y).pow(2), mask, n)
        qf2_loss = masked_mean((q2 - y).pow(2), mask, n)
        q_grad_norm = self._step(self.critic_opt, qf1_loss + qf2_loss, agent.critic.parameters())

        a_new, logp = tanh_gaussian_sample(mean[:, :T], log_std[:, :T])     # reparameterised
        with torch.no_grad():  # gradient reaches the actor through ã only
            h = agent.critic.features(*inputs)
        agent.critic.requires_grad_(False)  # no critic weight gradients in the actor's backward
        q1_pi, q2_pi = agent.critic.heads(h, obs[:, :T], a_new)
        agent.critic.requires_grad_(True)
        policy_loss = masked_mean(alpha * logp - torch.min(q1_pi, q2_pi), mask, n)
        pi_grad_norm = self._step(self.actor_opt, policy_loss, agent.actor.parameters())

        agent.soft_update_target(self.tau)

        mean_logp = masked_mean(logp.detach(), mask, n)
        self._alpha_step(mean_logp)
        return self._stats(qf1_loss, qf2_loss, policy_loss, alpha, mean_logp, q_grad_norm, pi_grad_norm)

    def _alpha_step(self, mean_logp: Tensor) -> None:
        """L_α = −α (mean log π + H̄): α grows when the policy's entropy is below the target."""
        if self.auto_alpha:
            with full_precision(mean_logp):
                alpha_loss = -self.log_alpha.exp() * (mean_logp + self.target_entropy)
                self.alpha_opt.zero_grad(set_to_none=True)
                alpha_loss.backward()
                self.alpha_opt.step()

    @staticmethod
    def _stats(qf1_loss, qf2_loss, policy_loss, alpha, mean_logp, q_grad_norm, pi_grad_norm) -> Dict[str, Tensor]:
        return {"qf1_loss": qf1_loss.detach(), "qf2_loss": qf2_loss.detach(),
                "policy_loss": policy_loss.detach(), "alpha": alpha, "entropy": -mean_logp,
                "q_grad_norm": q_grad_norm.detach(), "pi_grad_norm": pi_grad_norm.detach()}

    def state_dict(self) -> dict:
        return {"actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "alpha_opt": self.alpha_opt.state_dict(), "log_alpha": self.log_alpha.detach().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
