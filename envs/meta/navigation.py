"""2-D navigation meta-RL tasks of pomdp-baselines: Wind and PointRobot (sparse, half-circle goals).

Both share one engine: a point moves by ``max_step * clip(a, -1, 1)`` (plus a task wind for Wind)
each step; reward 1 when the point is within ``goal_radius`` of the goal (after the move), else 0.
An episode lasts ``max_episode_steps`` steps (truncation). The task is chosen with
``reset(options={"task": i})`` and kept by later resets. ``info["is_goal"]`` flags goal steps
(the reference cuts TD bootstrapping there); ``info["success"]`` says at the episode's end whether
the goal was reached at any step.
"""
from __future__ import annotations

from typing import Optional

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .tasks import point_robot_tasks, split_tasks, wind_tasks


def goal_distance(pos: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Euclidean distance over the last axis, written elementwise so that one env ([2]) and a batch
    ([n, 2], NavigationBatch) round alike."""
    return np.sqrt(np.square(pos - goal).sum(-1))


class NavigationEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, n_tasks: int, task_seed: int, max_episode_steps: int, goal_radius: float,
                 max_step: float = 0.1):
        if n_tasks <= 0 or max_episode_steps <= 0:
            raise ValueError(f"n_tasks and max_episode_steps must be positive, got {n_tasks}, {max_episode_steps}")
        self.n_tasks, self.task_seed = n_tasks, task_seed
        self.max_episode_steps, self.goal_radius, self.max_step = max_episode_steps, goal_radius, max_step
        # The policy acts in [-1, 1]^2; the env scales it to a displacement of at most max_step.
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.task = 0
        self._pos = np.zeros(2)
        self._t = 0
        self._reached = False

    # --- task-specific parts
    def _goal(self) -> np.ndarray:
        raise NotImplementedError

    def _drift(self) -> np.ndarray:
        return np.zeros(2)

    def _start(self) -> np.ndarray:
        raise NotImplementedError

    def task_split(self, n_train: int, n_eval: int):
        raise NotImplementedError

    # --- gymnasium API
    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        if options and "task" in options:
            task = int(options["task"])
            if not 0 <= task < self.n_tasks:
                raise ValueError(f"task {task} out of range [0, {self.n_tasks})")
            self.task = task
        self._pos = self._start()
        self._t = 0
        self._reached = False
        return self._pos.astype(np.float32), {"task": self.task}

    # --- read-only views for pictures (src.evaluate draws paths from them)
    @property
    def position(self) -> np.ndarray:
        """The point's current (x, y)."""
        return self._pos.copy()

    @property
    def goal_position(self) -> np.ndarray:
        """The current task's goal (x, y); the goal region is the disc of ``goal_radius`` around it."""
        return np.array(self._goal(), dtype=float)

    def is_goal_state(self) -> bool:
        return bool(goal_distance(self._pos, self._goal()) <= self.goal_radius)

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        self._pos = self._pos + self.max_step * a + self._drift()
        self._t += 1
        is_goal = self.is_goal_state()
        self._reached |= is_goal
        truncated = self._t >= self.max_episode_steps
        info = {"is_goal": is_goal, "task": self.task}
        if truncated:
            info["success"] = self._reached
        return self._pos.astype(np.float32), float(is_goal), False, truncated, info


class WindEnv(NavigationEnv):
    """Goal fixed at (0, 1), start at the origin; a hidden per-task wind w ~ U(-0.1, 0.1)^2 is added
    to every move, so the agent must infer it from its own trajectory."""

    def __init__(self, n_tasks: int = 200, task_seed: int = 1337, max_episode_steps: int = 100,
                 goal_radius: float = 0.01, wind_range: float = 0.1, max_step: float = 0.1):
        super().__init__(n_tasks, task_seed, max_episode_steps, goal_radius, max_step)
        self.wind_range = wind_range
        self.winds, _ = wind_tasks(n_tasks, task_seed, wind_range)
        self.goal = np.array([0.0, 1.0])

    def _goal(self):
        return self.goal

    def _drift(self):
        return self.winds[self.task]

    def _start(self):
        return np.zeros(2)

    def task_split(self, n_train: int, n_eval: int):
        _, rs = wind_tasks(self.n_tasks, self.task_seed, self.wind_range)
        return split_tasks(rs, self.n_tasks, n_train, n_eval)


class PointRobotEnv(NavigationEnv):
    """Sparse 'semi-circle' task: a hidden goal on the unit upper half-circle; random start in
    [-1.5, 1.5] x [-0.5, 1.5] each episode (from the env's own seeded generator)."""

    def __init__(self, n_tasks: int = 200, task_seed: int = 1337, max_episode_steps: int = 100,
                 goal_radius: float = 0.05, max_step: float = 0.1):
        super().__init__(n_tasks, task_seed, max_episode_steps, goal_radius, max_step)
        self.goals, _ = point_robot_tasks(n_tasks, task_seed)

    def _goal(self):
        return self.goals[self.task]

    def _start(self):
        return self.np_random.uniform([-1.5, -0.5], [1.5, 1.5])

    def task_split(self, n_train: int, n_eval: int):
        _, rs = point_robot_tasks(self.n_tasks, self.task_seed)
        return split_tasks(rs, self.n_tasks, n_train, n_eval)
