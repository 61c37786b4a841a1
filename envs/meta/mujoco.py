"""MuJoCo meta-RL tasks of pomdp-baselines / VariBAD on Gymnasium's v5 envs (new-tasks.md §3).

Each class subclasses the v5 env and keeps its dynamics, observation, reset noise and termination;
only the reward's velocity term depends on the hidden task, recomputed from the v5 step's
``info["x_velocity"]`` / ``info["y_velocity"]``:

- HalfCheetahVel: target velocity v* ~ U[0, 3]; r = -|v_x - v*| - 0.05 ||a||^2.
- HalfCheetahDir: direction d in {-1, +1}; r = d v_x - 0.05 ||a||^2.
- AntDir: goal angle g; r = (cos g, sin g)·(v_x, v_y) + the v5 healthy, control and contact terms
  (v5's defaults equal the reference's: +1, 0.5 ||a||^2, 5e-4 ||clip(cfrc_ext, ±1)||^2).
  ``directions``: "reference" = g in {-1, +1} *radians* (the original code's draw, not ±π),
  "forward_backward" = g in {0, π}, "circle" = g ~ U[0, 2π).
- HumanoidDir: angle g ~ U[0, 2π); r = 1.25 (cos g, sin g)·(v_x, v_y) + the v5 healthy, control and
  contact terms (v5's forward weight 1.25 equals the reference's 0.25 / timestep over dt).

The task set (``n_tasks`` tasks) comes from ``task_seed`` alone, through its own
``RandomState`` (never the global numpy RNG); ``task_split(n_train, n_eval)`` draws a disjoint
train/eval split from the same stream. ``reset(options={"task": i})`` selects task i and later
resets keep it. Actions are in [-1, 1]^A (mapped affinely onto the v5 box: Humanoid's is ±0.4).
An episode is truncated after ``max_episode_steps`` (200) steps; Ant and Humanoid also terminate
when unhealthy, as in v5 and the reference. There is no success criterion: ``info`` has no
``"success"`` key; ``info["task"]`` is the task index and ``info["task_reward_forward"]`` the
task's velocity term. Other keyword arguments go to the v5 constructor (e.g.
``exclude_current_positions_from_observation=False``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from gymnasium import spaces

from .._mujoco import install_warning_filter
from .tasks import split_tasks

install_warning_filter()  # also says how to install MuJoCo when it is missing
from gymnasium.envs.mujoco.ant_v5 import AntEnv  # noqa: E402
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv  # noqa: E402
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv  # noqa: E402


class MujocoMetaMixin:
    """Task selection, [-1, 1] actions, step limit and task reward around a v5 MuJoCo env."""

    n_tasks: int
    task_seed: int
    max_episode_steps: int

    def _init_meta(self, n_tasks: int, task_seed: int, max_episode_steps: int) -> None:
        if n_tasks <= 0 or max_episode_steps <= 0:
            raise ValueError(f"n_tasks and max_episode_steps must be positive, got {n_tasks}, {max_episode_steps}")
        self.n_tasks, self.task_seed, self.max_episode_steps = int(n_tasks), int(task_seed), int(max_episode_steps)
        self.tasks, _ = self._tasks_and_stream()
        self.task = 0
        self._t = 0
        box = self.action_space
        self._act_low, self._act_high = box.low.astype(np.float64), box.high.astype(np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, shape=box.shape, dtype=np.float32)

    # --- task-specific parts
    def _sample_tasks(self, rs: np.random.RandomState, n: int) -> np.ndarray:
        raise NotImplementedError

    def _task_reward(self, info: dict, action: np.ndarray, v5_reward: float) -> tuple:
        """(reward, velocity term) for the current task."""
        raise NotImplementedError

    # --- task sets
    def _tasks_and_stream(self):
        rs = np.random.RandomState(self.task_seed)
        return np.asarray(self._sample_tasks(rs, self.n_tasks), dtype=np.float64), rs

    def task_split(self, n_train: int, n_eval: int):
        _, rs = self._tasks_and_stream()
        return split_tasks(rs, self.n_tasks, n_train, n_eval)

    # --- gymnasium API
    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        if options and "task" in options:
            task = int(options["task"])
            if not 0 <= task < self.n_tasks:
                raise ValueError(f"task {task} out of range [0, {self.n_tasks})")
            self.task = task
        self._t = 0
        obs, info = super().reset(seed=seed)
        return obs, {**info, "task": self.task}

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(self.action_space.shape), -1.0, 1.0)
        a = self._act_low + (a + 1.0) * 0.5 * (self._act_high - self._act_low)
        obs, v5_reward, terminated, _, info = super().step(a)
        self._t += 1
        reward, forward = self._task_reward(info, a, float(v5_reward))
        info = {**info, "task": self.task, "task_reward_forward": forward}
        return obs, float(reward), bool(terminated), self._t >= self.max_episode_steps, info


class _CheetahMetaEnv(MujocoMetaMixin, HalfCheetahEnv):
    """HalfCheetah v5 with a task set and a control cost of ``ctrl_cost`` · ‖a‖² in the task reward."""

    def __init__(self, n_tasks: int = 120, task_seed: int = 1337, max_episode_steps: int = 200,
                 ctrl_cost: float = 0.05, **kwargs):
        HalfCheetahEnv.__init__(self, **kwargs)
        self.ctrl_cost = ctrl_cost
        self._init_meta(n_tasks, task_seed, max_episode_steps)


class HalfCheetahVelEnv(_CheetahMetaEnv):
    """Cheetah-Vel: run at a hidden target velocity v* ~ U[0, 3] (see the module docstring)."""

    def _sample_tasks(self, rs, n):
        return rs.uniform(0.0, 3.0, size=n)

    def _task_reward(self, info, action, v5_reward):
        forward = -abs(info["x_velocity"] - self.tasks[self.task])
        return forward - self.ctrl_cost * float(np.sum(np.square(action))), forward


class HalfCheetahDirEnv(_CheetahMetaEnv):
    """Cheetah-Dir: run forward (d = +1) or backward (d = -1), hidden (see the module docstring)."""

    def _sample_tasks(self, rs, n):
        return rs.choice([-1.0, 1.0], size=n)

    def _task_reward(self, info, action, v5_reward):
        forward = self.tasks[self.task] * info["x_velocity"]
        return forward - self.ctrl_cost * float(np.sum(np.square(action))), forward


def _directional(info: dict, angle: float, weight: float, v5_reward: float):
    """v5 reward with its forward term replaced by ``weight`` x the velocity along ``angle``."""
    forward = weight * (np.cos(angle) * info["x_velocity"] + np.sin(angle) * info["y_velocity"])
    return v5_reward - info["reward_forward"] + forward, forward


ANT_DIRECTIONS = ("reference", "forward_backward", "circle")


class AntDirEnv(MujocoMetaMixin, AntEnv):
    """Ant-Dir: move along a hidden goal angle (see the module docstring for ``directions``)."""

    def __init__(self, n_tasks: int = 120, task_seed: int = 1337, max_episode_steps: int = 200,
                 directions: str = "reference", include_cfrc_ext_in_observation: bool = False, **kwargs):
        if directions not in ANT_DIRECTIONS:
            raise ValueError(f"directions={directions!r}: choose one of {', '.join(ANT_DIRECTIONS)}")
        self.directions = directions
        AntEnv.__init__(self, include_cfrc_ext_in_observation=include_cfrc_ext_in_observation, **kwargs)
        self._init_meta(n_tasks, task_seed, max_episode_steps)

    def _sample_tasks(self, rs, n):
        if self.directions == "reference":
            return rs.choice([-1.0, 1.0], size=n)
        if self.directions == "forward_backward":
            return rs.choice([0.0, np.pi], size=n)
        return rs.uniform(0.0, 2.0 * np.pi, size=n)

    def _task_reward(self, info, action, v5_reward):
        return _directional(info, self.tasks[self.task], self._forward_reward_weight, v5_reward)


class HumanoidDirEnv(MujocoMetaMixin, HumanoidEnv):
    """Humanoid-Dir: walk along a hidden angle g ~ U[0, 2π) (see the module docstring)."""

    def __init__(self, n_tasks: int = 120, task_seed: int = 1337, max_episode_steps: int = 200, **kwargs):
        HumanoidEnv.__init__(self, **kwargs)
        self._init_meta(n_tasks, task_seed, max_episode_steps)

    def _sample_tasks(self, rs, n):
        return rs.uniform(0.0, 2.0 * np.pi, size=n)

    def _task_reward(self, info, action, v5_reward):
        return _directional(info, self.tasks[self.task], self._forward_reward_weight, v5_reward)

