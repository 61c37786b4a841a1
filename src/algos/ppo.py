"""Recurrent PPO (Schulman et al. 2017) for discrete actions: GAE, the clipped surrogate, the value
loss (two optional clips), an entropy bonus and RLlib's adaptive KL penalty.

Rollouts are time-major [T, N] (N envs). ``dones[t]`` = the episode ended with step t (terminated
or truncated: POPGym's time limits are part of the task, so nothing is bootstrapped past them);
``first[t]`` = obs[t] starts an episode (the memory is reset before it). The functions are pure and
small enough to check by hand (tests/test_ppo.py).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def gae(rewards: Tensor, values: Tensor, dones: Tensor, last_value: Tensor, gamma: float,
        lam: float) -> Tuple[Tensor, Tensor]:
    """Generalised advantage estimation over a [T, N] chunk.

    δ_t = r_t + γ (1 − d_t) V_{t+1} − V_t,  A_t = δ_t + γ λ (1 − d_t) A_{t+1},  A_T = 0,
    with V_T = ``last_value`` [N] (the value of the observation after the chunk). Returns
    (advantages, returns = advantages + values), both [T, N]."""
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    next_adv = torch.zeros_like(last_value)
    next_value = last_value
    for t in range(T - 1, -1, -1):
        live = 1.0 - dones[t].to(rewards.dtype)
        delta = rewards[t] + gamma * live * next_value - values[t]
        next_adv = delta + gamma * lam * live * next_adv
        adv[t] = next_adv
        next_value = values[t]
    return adv, adv + values


def masked_mean(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    if mask is None:
        return x.mean()
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def categorical_kl(old_logits: Tensor, new_logits: Tensor) -> Tensor:
    """KL(old ‖ new) per position, [...]."""
    old_logp, new_logp = F.log_softmax(old_logits, -1), F.log_softmax(new_logits, -1)
    return (old_logp.exp() * (old_logp - new_logp)).sum(-1)


def ppo_loss(logits: Tensor, values: Tensor, actions: Tensor, old_logits: Tensor, old_values: Tensor,
             advantages: Tensor, returns: Tensor, *, clip: float, vf_coef: float = 1.0,
             ent_coef: float = 0.0, kl_coef: float = 0.0, value_clip: Optional[float] = None,
             vf_loss_clip: Optional[float] = None, mask: Optional[Tensor] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
    """The PPO loss over positions [...] (``mask``: 1 where a position counts; None: all count).

    policy  : −min(ρ A, clip(ρ, 1 − ε, 1 + ε) A),  ρ = π(a|h) / π_old(a|h)
    value   : (V − R)²; ``value_clip`` c: max((V − R)², (V_old + clip(V − V_old, −c, c) − R)²)
              (PPO2's clip); ``vf_loss_clip`` v: min(·, v) (RLlib's vf_clip_param)
    total   : policy + vf_coef · value − ent_coef · entropy + kl_coef · KL(π_old ‖ π)
    """
    logp_all = F.log_softmax(logits, -1)
    logp = logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    old_logp = F.log_softmax(old_logits, -1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    ratio = torch.exp(logp - old_logp)
    surrogate = torch.min(ratio * advantages, ratio.clamp(1.0 - clip, 1.0 + clip) * advantages)
    policy_loss = -masked_mean(surrogate, mask)
    v_err = (values - returns).pow(2)
    if value_clip is not None:
        v_clipped = old_values + (values - old_values).clamp(-value_clip, value_clip)
        v_err = torch.max(v_err, (v_clipped - returns).pow(2))
    if vf_loss_clip is not None:
        v_err = v_err.clamp(max=vf_loss_clip)
    value_loss = masked_mean(v_err, mask)
    entropy = masked_mean(-(logp_all.exp() * logp_all).sum(-1), mask)
    kl = masked_mean(categorical_kl(old_logits, logits), mask)
    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy + kl_coef * kl
    with torch.no_grad():
        clip_frac = masked_mean(((ratio - 1.0).abs() > clip).to(ratio.dtype), mask)
    return loss, {"policy_loss": policy_loss.detach(), "value_loss": value_loss.detach(),
                  "entropy": entropy.detach(), "kl": kl.detach(), "clip_frac": clip_frac}


def adapt_kl_coef(coef: float, kl: float, target: float) -> float:
    """RLlib's rule after each training batch: ×1.5 when KL > 2·target, ×0.5 when KL < target/2."""
    if kl > 2.0 * target:
        return coef * 1.5
    if kl < 0.5 * target:
        return coef * 0.5
    return coef


class PPO:
    """PPO updates of a recurrent actor-critic ``agent`` (``agent(obs[B,T,D], state, reset[B,T]) ->
    (logits, values, state)``) on whole sequences: each epoch shuffles the N env sequences of a
    rollout and splits them into ``num_minibatches`` minibatches; each sequence restarts from the
    memory state it had when the chunk was collected, with resets at the episode starts inside it."""

    STATS = ("policy_loss", "value_loss", "entropy", "kl", "clip_frac", "grad_norm", "kl_coef", "lr")

    def __init__(self, agent, *, lr: float, clip: float, epochs: int, num_minibatches: int,
                 vf_coef: float = 1.0, ent_coef: float = 0.0, kl_coef: float = 0.0, kl_target: float = 0.01,
                 value_clip: Optional[float] = None, vf_loss_clip: Optional[float] = None,
                 grad_clip: Optional[float] = None, norm_adv: bool = True, adam_eps: float = 1e-8):
        self.agent = agent
        self.opt = torch.optim.Adam(agent.parameters(), lr=lr, eps=adam_eps)
        self.clip, self.epochs, self.num_minibatches = clip, int(epochs), int(num_minibatches)
        self.vf_coef, self.ent_coef, self.kl_coef, self.kl_target = vf_coef, ent_coef, float(kl_coef), kl_target
        self.value_clip, self.vf_loss_clip, self.grad_clip, self.norm_adv = value_clip, vf_loss_clip, grad_clip, norm_adv

    def set_lr(self, lr: float) -> None:
        """The learning rate of the next updates (the trainer's schedule sets it before each rollout's)."""
        for group in self.opt.param_groups:
            group["lr"] = float(lr)

    def update(self, batch: Dict[str, Tensor], init_state) -> Dict[str, float]:
        """``batch``: obs [N,T,D], first [N,T] bool, actions, logits (the rollout's), values,
        advantages, returns [N,T(,A)]; ``init_state``: the memory state before each sequence."""
        adv = batch["advantages"]
        if self.norm_adv:  # over the whole batch, as RLlib's PPO
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        n = adv.shape[0]
        if n % self.num_minibatches:
            raise ValueError(f"{n} env sequences do not split into {self.num_minibatches} minibatches: make "
                             f"train.num_envs a multiple of the number of minibatches")
        sums: Dict[str, float] = {}
        count = 0
        for _ in range(self.epochs):
            for idx in torch.randperm(n).to(adv.device).chunk(self.num_minibatches):
                state = tuple(s[idx] for s in init_state)
                logits, values, _ = self.agent(batch["obs"][idx], state, batch["first"][idx])
                loss, stats = ppo_loss(
                    logits, values, batch["actions"][idx], batch["logits"][idx], batch["values"][idx],
                    adv[idx], batch["returns"][idx], clip=self.clip, vf_coef=self.vf_coef,
                    ent_coef=self.ent_coef, kl_coef=self.kl_coef, value_clip=self.value_clip,
                    vf_loss_clip=self.vf_loss_clip)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                params = [p for p in self.agent.parameters() if p.grad is not None]
                norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip else float("inf"))
                self.opt.step()
                stats["grad_norm"] = norm
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                count += 1
        out = {k: v / count for k, v in sums.items()}
        out["kl_coef"] = self.kl_coef  # the coefficient these updates used
        out["lr"] = self.opt.param_groups[0]["lr"]
        if self.kl_coef > 0:
            self.kl_coef = adapt_kl_coef(self.kl_coef, out["kl"], self.kl_target)
        return out

    def state_dict(self) -> dict:
        return {"opt": self.opt.state_dict(), "kl_coef": self.kl_coef}

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["opt"])
        self.kl_coef = float(state["kl_coef"])
