"""Stepping a list of envs in lockstep, one call per time step, with array results: what the
rollouts of src/rollouts.py need from their envs.

``batch_stepper(env_list)`` returns ``NavigationBatch`` (envs/meta/batch.py: Wind and PointRobot,
their transitions computed for all envs at once in numpy) where every env is one of those, and
``LoopBatch`` (each env's own ``step``) otherwise. Both give the same numbers as the envs' own
``step``; ``close()`` leaves every env object in the state its own steps would have left it in.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


class StepResults(NamedTuple):
    """One lockstep step of the envs ``rows`` (m of them), in that order."""
    obs: np.ndarray            # [m, *obs], the env's dtype
    reward: np.ndarray         # [m] float64
    terminated: np.ndarray     # [m] bool
    truncated: np.ndarray      # [m] bool
    is_goal: np.ndarray        # [m] bool: info["is_goal"] (False where the env has no such key)
    episode_index: np.ndarray  # [m] int: info["episode_index"] (0 where absent)
    success: np.ndarray        # [m] bool: info["success"] (False where absent)


class LoopBatch:
    """Each env's own ``step``, one after the other."""

    def __init__(self, env_list: Sequence):
        self.env_list = env_list

    def step(self, actions: np.ndarray, rows: np.ndarray) -> StepResults:
        """``actions`` [n, ...] for every env (the env action of row i is actions[i]); steps only ``rows``."""
        out = [self.env_list[i].step(actions[i]) for i in rows]
        infos = [o[4] for o in out]
        return StepResults(np.stack([o[0] for o in out]), np.array([o[1] for o in out], dtype=np.float64),
                           np.array([bool(o[2]) for o in out]), np.array([bool(o[3]) for o in out]),
                           np.array([bool(i.get("is_goal", False)) for i in infos]),
                           np.array([int(i.get("episode_index", 0)) for i in infos], dtype=np.int64),
                           np.array([bool(i.get("success", False)) for i in infos]))

    def close(self) -> None:
        """Nothing to hand back: the envs stepped themselves."""


def batch_stepper(env_list: Sequence):
    """The fastest stepper that reproduces ``env.step`` for every env of ``env_list`` (all freshly
    reset)."""
    from .meta.batch import NavigationBatch
    if NavigationBatch.supports(env_list):
        return NavigationBatch(env_list)
    return LoopBatch(env_list)
