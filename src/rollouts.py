"""Rollouts: one task per env, all envs stepped in lockstep with one batched actor call per time
step; and the evaluation metrics computed from them."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from src.agent import RecurrentActorCritic

MODES = ("random", "stochastic", "deterministic")


def run_rollouts(agent: RecurrentActorCritic, env_list: Sequence, tasks, mode: str, *, rng: np.random.Generator,
                 device, discrete: bool, action_dim: int, episodes_per_task: int, goal_is_terminal: bool,
                 warmup_action_range: float) -> Tuple[List[dict], np.ndarray, np.ndarray]:
    """One task per env (a task None resets without options: task-free envs), until every env's
    task has ended.

    mode: "random" (uniform actions on [-warmup_action_range, warmup_action_range]^A, or uniform
    over the discrete actions; drawn from ``rng``), "stochastic" or "deterministic" (the actor).
    Returns per-env episodes {obs, act, rew, term}, successes [n], returns per inner episode [n, k].
    Discrete actions are one-hot vectors [A] in the episodes (and for the agent); ``term`` is also 1
    on goal steps when ``goal_is_terminal`` (no TD bootstrap there, as the reference)."""
    if mode not in MODES:
        raise ValueError(f"rollout mode {mode!r}: valid: {', '.join(MODES)}")
    n, A = len(env_list), action_dim
    obs = [env.reset(options=None if t is None else {"task": int(t)})[0] for env, t in zip(env_list, tasks)]
    traj = [{"obs": [o], "act": [], "rew": [], "term": []} for o in obs]
    success = np.zeros(n, dtype=bool)
    returns = np.zeros((n, episodes_per_task))
    alive = np.ones(n, dtype=bool)
    prev_a = np.zeros((n, A), dtype=np.float32)
    prev_r = np.zeros((n, 1), dtype=np.float32)
    cur = np.stack(obs)
    state = agent.initial_actor_state(n, device) if mode != "random" else None
    while alive.any():
        if mode == "random" and discrete:
            actions = np.eye(A, dtype=np.float32)[rng.integers(A, size=n)]
        elif mode == "random":
            r = float(warmup_action_range)
            actions = rng.uniform(-r, r, size=(n, A)).astype(np.float32)
        else:
            a, state = agent.act(torch.as_tensor(prev_a, device=device), torch.as_tensor(prev_r, device=device),
                                 torch.as_tensor(cur).to(device).float(), state,
                                 deterministic=(mode == "deterministic"))
            actions = a.cpu().numpy()
        env_actions = actions.argmax(-1) if discrete else actions
        for i in np.flatnonzero(alive):
            o, r, terminated, truncated, info = env_list[i].step(env_actions[i])
            t = traj[i]
            t["obs"].append(o)
            t["act"].append(actions[i])
            t["rew"].append(r)
            t["term"].append(float(terminated or (goal_is_terminal and info.get("is_goal", False))))
            returns[i, info.get("episode_index", 0)] += r
            cur[i], prev_r[i, 0] = o, r
            if terminated or truncated:
                alive[i] = False
                success[i] = bool(info.get("success", False))
        prev_a = actions
    episodes = [{key: np.asarray(v) if key == "obs" else np.asarray(v, dtype=np.float32)
                 for key, v in t.items()} for t in traj]  # obs keep the env's dtype (uint8 pixels)
    return episodes, success, returns


def eval_metrics(success: np.ndarray, returns: np.ndarray, splits) -> Dict[str, float]:
    """``eval/success_<split>``, ``eval/return_<split>`` (summed over a task's k episodes) and, for
    k > 1, ``eval/return_<split>_ep<j>``; ``splits``: (name, slice of the tasks) pairs."""
    out = {}
    for split, sl in splits:
        out[f"eval/success_{split}"] = float(success[sl].mean())
        out[f"eval/return_{split}"] = float(returns[sl].sum(1).mean())
        if returns.shape[1] > 1:
            for j in range(returns.shape[1]):
                out[f"eval/return_{split}_ep{j + 1}"] = float(returns[sl, j].mean())
    return out
