"""Seeded task sets and train/eval splits for the meta-RL envs.

Task sets come from their own legacy ``RandomState(task_seed)`` stream (never the global numpy RNG).
The draw order follows the reference code, which seeded the global stream with 1337 inside the env
constructor and then drew the split permutation from the same stream, so with ``task_seed=1337`` the
tasks and splits equal the reference's (checked in tests against its published values).
"""
from __future__ import annotations

import numpy as np


def wind_tasks(n_tasks: int, task_seed: int, wind_range: float = 0.1):
    """Winds [n_tasks, 2] ~ U(-r, r)^2 (x then y per task) and the stream positioned after them."""
    rs = np.random.RandomState(task_seed)
    winds = np.array([[rs.uniform(-wind_range, wind_range), rs.uniform(-wind_range, wind_range)]
                      for _ in range(n_tasks)])
    return winds, rs


def point_robot_tasks(n_tasks: int, task_seed: int):
    """Goals [n_tasks, 2] on the unit upper half-circle, and the stream positioned after them.

    Reference order: n_tasks U[-10,10]^2 goals drawn and discarded, one start state, the angles
    φ ~ U[0, π], a row shuffle of the goals, one more start state.
    """
    rs = np.random.RandomState(task_seed)
    rs.uniform(-10.0, 10.0, size=(n_tasks, 2))  # discarded base-class goals
    rs.uniform([-1.5, -0.5], [1.5, 1.5])         # start state of reset_task(0)
    phi = rs.uniform(0.0, np.pi, size=n_tasks)
    goals = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    rs.shuffle(goals)
    rs.uniform([-1.5, -0.5], [1.5, 1.5])         # start state of the second reset_task(0)
    return goals, rs


def split_tasks(rs: np.random.RandomState, n_tasks: int, n_train: int, n_eval: int):
    """Disjoint train/eval task indices: a permutation, train = head, eval = tail."""
    if n_train <= 0 or n_eval <= 0:
        raise ValueError(f"num_train_tasks and num_eval_tasks must be positive, got {n_train} and {n_eval}")
    if n_train + n_eval > n_tasks:
        raise ValueError(f"train/eval split {n_train}+{n_eval} is larger than num_tasks={n_tasks}: "
                         f"lower env.num_train_tasks / env.num_eval_tasks or raise env.num_tasks")
    perm = rs.permutation(n_tasks)
    return perm[:n_train].copy(), perm[n_tasks - n_eval:].copy()
