"""Rollouts: one task per env, all envs stepped in lockstep with one batched actor call per time
step; and the evaluation metrics computed from them."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from envs.batch import LoopBatch, batch_stepper
from src.acting import acting_policy
from src.agent import RecurrentActorCritic

MODES = ("random", "stochastic", "deterministic")


def run_rollouts(agent: RecurrentActorCritic, env_list: Sequence, tasks, mode: str, *, rng: np.random.Generator,
                 device, discrete: bool, action_dim: int, episodes_per_task: int, goal_is_terminal: bool,
                 warmup_action_range: float, fast: bool = True) -> Tuple[List[dict], np.ndarray, np.ndarray]:
    """One task per env (a task None resets without options: task-free envs), until every env's
    task has ended.

    mode: "random" (uniform actions on [-warmup_action_range, warmup_action_range]^A, or uniform
    over the discrete actions; drawn from ``rng``), "stochastic" or "deterministic" (the actor:
    ``src.acting.ActingPolicy``, or with ``fast=False`` the reference ``agent.act``; the same
    function). The envs step in lockstep through ``envs.batch.batch_stepper`` (Wind/PointRobot: all
    at once in numpy; ``fast=False``: each env's own step; the same transitions).
    Returns per-env episodes {obs, act, rew, term}, successes [n], returns per inner episode [n, k].
    Discrete actions are one-hot vectors [A] in the episodes (and for the agent);
    ``term`` is also 1 on goal steps when ``goal_is_terminal`` (no TD bootstrap there, as the reference)."""
    if mode not in MODES:
        raise ValueError(f"rollout mode {mode!r}: valid: {', '.join(MODES)}")
    n, A = len(env_list), action_dim
    obs = [env.reset(options=None if t is None else {"task": int(t)})[0] for env, t in zip(env_list, tasks)]
    success = np.zeros(n, dtype=bool)
    returns = np.zeros((n, episodes_per_task))
    alive = np.ones(n, dtype=bool)
    lengths = np.zeros(n, dtype=np.int64)
    prev_a = np.zeros((n, A), dtype=np.float32)
    prev_r = np.zeros((n, 1), dtype=np.float32)
    cur = np.stack(obs)  # the env's dtype (uint8 pixels stay uint8)
    # per time step, for all envs at once: obs [n, *obs] (the reset ones first), act [n, A], rew, term [n]
    steps: Dict[str, list] = {"obs": [cur.copy()], "act": [], "rew": [], "term": []}
    policy = acting_policy(agent, fast) if mode != "random" else None
    state = policy.initial_state(n, device) if policy is not None else None
    stepper = batch_stepper(env_list) if fast else LoopBatch(env_list)
    try:
        while alive.any():
            if mode == "random":
                actions = random_actions(rng, n, A, discrete, warmup_action_range)
            else:
                a, state = policy.act(torch.as_tensor(prev_a, device=device), torch.as_tensor(prev_r, device=device),
                                      torch.as_tensor(cur).to(device).float(), state,
                                      deterministic=(mode == "deterministic"))
                actions = a.cpu().numpy()
            rows = np.flatnonzero(alive)
            out = stepper.step(actions.argmax(-1) if discrete else actions, rows)
            rew, term = np.zeros(n, dtype=np.float32), np.zeros(n, dtype=np.float32)
            rew[rows] = out.reward
            term[rows] = out.terminated | (bool(goal_is_terminal) & out.is_goal)
            returns[rows, out.episode_index] += out.reward
            cur[rows], prev_r[rows, 0] = out.obs, out.reward
            lengths[rows] += 1
            done = out.terminated | out.truncated
            alive[rows[done]] = False
            success[rows[done]] = out.success[done]
            for key, value in (("obs", cur.copy()), ("act", actions), ("rew", rew), ("term", term)):
                steps[key].append(value)
            prev_a = actions
    finally:
        stepper.close()  # the env objects get their state back (a batch stepper keeps it in arrays)
    stacked = {key: np.stack(v, 1) for key, v in steps.items()}  # [n, T(+1), ...]
    episodes = [{key: np.ascontiguousarray(v[i, :lengths[i] + (key == "obs")]) for key, v in stacked.items()}
                for i in range(n)]
    return episodes, success, returns


def random_actions(rng: np.random.Generator, n: int, action_dim: int, discrete: bool, action_range) -> np.ndarray:
    """Warm-up actions [n, A]: one-hot uniform choices (discrete), else uniform on [-r, r]^A."""
    if discrete:
        return np.eye(action_dim, dtype=np.float32)[rng.integers(action_dim, size=n)]
    r = float(action_range)
    return rng.uniform(-r, r, size=(n, action_dim)).astype(np.float32)


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
