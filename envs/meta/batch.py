"""Wind and PointRobot (optionally as k-episode tasks, MultiEpisode) stepped for n envs at once.

The per-env state (position, step count, goal reached; the inner episode and its success for
MultiEpisode) is read from the env objects when the batch is made, right after their reset, kept in
arrays while stepping, and written back by ``close()``. The arithmetic is the envs' own, elementwise
over the batch (same float64 operations in the same order, ``goal_distance`` shared), so
observations, rewards and flags are bit-identical to the envs' ``step`` (tests/test_env_batch.py
compares them); a PointRobot's next start position is drawn from that env's own generator, as its
reset does.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from gymnasium.wrappers import OrderEnforcing, TimeLimit

from ..batch import StepResults
from .multi_episode import MultiEpisode
from .navigation import NavigationEnv, PointRobotEnv, WindEnv, goal_distance

_ENV_TYPES = (WindEnv, PointRobotEnv)  # exactly these classes (a subclass may change the dynamics)


def _parts(env):
    """(MultiEpisode or None, TimeLimit or None, the navigation env) for
    env = [MultiEpisode(] [TimeLimit(] OrderEnforcing(nav) [)] [)] (envs.make with or without k episodes
    and gym.make's ``max_episode_steps``); None for anything else."""
    multi = env if type(env) is MultiEpisode else None
    inner = env.env if multi is not None else env
    limit = inner if type(inner) is TimeLimit else None
    inner = inner.env if limit is not None else inner
    if type(inner) is not OrderEnforcing or type(inner.env) not in _ENV_TYPES:
        return None
    return multi, limit, inner.env


class NavigationBatch:
    @staticmethod
    def supports(env_list: Sequence) -> bool:
        parts = [_parts(env) for env in env_list]
        if not parts or any(p is None for p in parts):
            return False
        # all without the k-episode wrapper, or all with it and the same episode-end flag in the
        # observation; all with or all without a TimeLimit
        return len({(None if m is None else m.add_flag, lim is None) for m, lim, _ in parts}) == 1

    def __init__(self, env_list: Sequence):
        parts = [_parts(env) for env in env_list]
        if not self.supports(env_list):
            raise ValueError("NavigationBatch steps Wind/PointRobot envs (each as made by envs.make), all with "
                             "or all without the k-episode wrapper")
        self.multis = [m for m, _, _ in parts] if parts[0][0] is not None else None
        self.limits = [lim for _, lim, _ in parts] if parts[0][1] is not None else None
        self.navs: Sequence[NavigationEnv] = [nav for _, _, nav in parts]
        navs = self.navs
        self.pos = np.stack([nav._pos for nav in navs]).astype(np.float64)      # [n, 2]
        self.t = np.array([nav._t for nav in navs], dtype=np.int64)
        self.reached = np.array([nav._reached for nav in navs], dtype=bool)
        self.goal = np.stack([np.asarray(nav._goal(), dtype=np.float64) for nav in navs])
        self.drift = np.stack([np.asarray(nav._drift(), dtype=np.float64) for nav in navs])
        self.max_step = np.array([nav.max_step for nav in navs], dtype=np.float64)[:, None]
        self.radius = np.array([nav.goal_radius for nav in navs], dtype=np.float64)
        self.horizon = np.array([nav.max_episode_steps for nav in navs], dtype=np.int64)
        big = np.iinfo(np.int64).max  # TimeLimit: its own step count and limit (none: never)
        self.elapsed = np.array([lim._elapsed_steps for lim in self.limits] if self.limits else [0] * len(navs),
                                dtype=np.int64)
        self.limit = np.array([lim._max_episode_steps for lim in self.limits] if self.limits else [big] * len(navs),
                              dtype=np.int64)
        if self.multis is not None:
            self.k = np.array([m.k for m in self.multis], dtype=np.int64)
            self.add_flag = self.multis[0].add_flag
            self.episode = np.array([m._episode for m in self.multis], dtype=np.int64)
            self.any_success = np.array([m._success for m in self.multis], dtype=bool)
            self.reports = np.array([m._reports_success for m in self.multis], dtype=bool)

    def step(self, actions: np.ndarray, rows: np.ndarray) -> StepResults:
        """NavigationEnv.step (and MultiEpisode.step) for the envs ``rows``; ``actions`` [n, 2]."""
        a = np.clip(np.asarray(actions[rows], dtype=np.float64).reshape(len(rows), 2), -1.0, 1.0)
        pos = self.pos[rows] + self.max_step[rows] * a + self.drift[rows]
        t = self.t[rows] + 1
        is_goal = goal_distance(pos, self.goal[rows]) <= self.radius[rows]
        reached = self.reached[rows] | is_goal
        own_end = t >= self.horizon[rows]                # the env's truncation: its info has "success"
        elapsed = self.elapsed[rows] + 1
        ended = own_end | (elapsed >= self.limit[rows])   # the (inner) episode's truncation, either one
        self.pos[rows], self.t[rows], self.reached[rows], self.elapsed[rows] = pos, t, reached, elapsed
        obs = pos.astype(np.float32)
        reward = is_goal.astype(np.float64)
        no = np.zeros(len(rows), dtype=bool)
        if self.multis is None:
            return StepResults(obs, reward, no, ended, is_goal, np.zeros(len(rows), dtype=np.int64),
                               reached & own_end)
        episode_index = self.episode[rows].copy()
        self.reports[rows] |= own_end
        self.any_success[rows] |= reached & own_end
        self.episode[rows] += ended
        restart = ended & (self.episode[rows] < self.k[rows])  # same task, next episode: the env's reset
        for j in np.flatnonzero(restart):
            i = rows[j]
            self.pos[i], self.t[i], self.reached[i], self.elapsed[i] = self.navs[i]._start(), 0, False, 0
            obs[j] = self.pos[i].astype(np.float32)
        final = ended & ~restart
        if self.add_flag:  # MultiEpisode's episode-end flag as the last observation element
            obs = np.concatenate([obs, ended.astype(np.float32)[:, None]], 1)
        # info["success"]: at the task's end whether any episode reached the goal (once the env has
        # reported success); when an inner episode restarts, the env's own report of it passes through
        success = np.where(final, self.reports[rows] & self.any_success[rows], restart & own_end & reached)
        return StepResults(obs, reward, no, final, is_goal, episode_index, success)

    def close(self) -> None:
        """Write the batch's state back into the env objects."""
        for i, nav in enumerate(self.navs):
            nav._pos, nav._t, nav._reached = self.pos[i].copy(), int(self.t[i]), bool(self.reached[i])
        for i, lim in enumerate(self.limits or ()):
            lim._elapsed_steps = int(self.elapsed[i])
        if self.multis is not None:
            for i, m in enumerate(self.multis):
                m._episode, m._success = int(self.episode[i]), bool(self.any_success[i])
                m._reports_success = bool(self.reports[i])
