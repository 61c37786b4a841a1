"""Passive and Active T-Maze (Memory-RL ``tmaze.py``, ambiguous position), ref-credit-assignment.md §4.

Map: corridor cells (x, 0) for x = 0 .. o + L, goal candidates (o + L, +1) and (o + L, -1).
The oracle is x = 0, the start is x = o: o = 0 (passive, start on the oracle) or o = 1 (active,
one step left to see the goal). L = ``corridor_length``.

Actions (Discrete(4)): 0 right (x + 1), 1 up (y + 1), 2 left (x - 1), 3 down (y - 1); a move off
the T does nothing (up/down only at the junction).

Observation (float32, 2 values):
  x = 0:         [0, goal_y] the first time an observation is made there, [0, 0] afterwards;
  0 < x < o + L: [0, 0];
  x = o + L:     [1, y] (junction y = 0, goal cells y = +-1).

Horizon T = L + 2o + 1 (passive L + 1, active L + 3), ``terminated`` on the last step.
Reward at step t < T: ``penalty`` (default -1/L) if x_t < t - o (lagging behind the schedule),
plus ``distract_reward`` at x = 0; at t = T: ``goal_reward`` if y_T = goal_y, else 0.
Optimal return 1.0; the best memoryless return is 0.5 in expectation.
``info["success"]`` on the last step: the goal was reached.
"""
from __future__ import annotations

from typing import Optional

import gymnasium as gym
import numpy as np
from gymnasium import spaces

MOVES = ((1, 0), (0, 1), (-1, 0), (0, -1))  # (dx, dy) per action


# Picture colours (RGB): off the T, corridor, oracle cell, goal arm, wrong arm, agent.
RENDER_COLOURS = {"off": (60, 60, 60), "floor": (204, 204, 204), "oracle": (240, 200, 40),
                  "goal": (40, 170, 60), "wrong": (200, 70, 70), "agent": (30, 90, 220)}


class TMazeEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    action_names = ("right", "up", "left", "down")  # for captions

    def __init__(self, corridor_length: int = 100, oracle_length: int = 0,
                 goal_reward: float = 1.0, penalty: Optional[float] = None,
                 distract_reward: float = 0.0, render_mode: Optional[str] = None):
        if corridor_length < 1 or oracle_length < 0:
            raise ValueError("need corridor_length >= 1 and oracle_length >= 0")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not supported; valid: None, 'rgb_array'")
        self.render_mode = render_mode
        self.corridor_length, self.oracle_length = corridor_length, oracle_length
        self.junction_x = oracle_length + corridor_length
        self.horizon = corridor_length + 2 * oracle_length + 1
        self.goal_reward = goal_reward
        self.penalty = -1.0 / corridor_length if penalty is None else penalty
        self.distract_reward = distract_reward
        self.action_space = spaces.Discrete(4)
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.x = self.y = self.goal_y = self.t = 0
        self._oracle_seen = False

    def _on_map(self, x: int, y: int) -> bool:
        if y == 0:
            return 0 <= x <= self.junction_x
        return x == self.junction_x and abs(y) == 1

    def _observe(self) -> np.ndarray:
        if self.x == 0:
            cue = 0 if self._oracle_seen else self.goal_y
            self._oracle_seen = True
            return np.array([0.0, cue], dtype=np.float32)
        if self.x < self.junction_x:
            return np.zeros(2, dtype=np.float32)
        return np.array([1.0, self.y], dtype=np.float32)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        self.x, self.y, self.t = self.oracle_length, 0, 0
        self.goal_y = 1 if self.np_random.integers(2) else -1
        self._oracle_seen = False
        return self._observe(), {}

    def step(self, action):
        action = int(action)
        if not 0 <= action < len(MOVES):
            raise ValueError(f"invalid action {action}")
        self.t += 1
        dx, dy = MOVES[action]
        if self._on_map(self.x + dx, self.y + dy):
            self.x, self.y = self.x + dx, self.y + dy
        terminated = self.t >= self.horizon
        info = {}
        if terminated:
            success = self.y == self.goal_y
            reward = self.goal_reward if success else 0.0
            info["success"] = success
        else:
            lagging = self.x < self.t - self.oracle_length
            reward = (self.penalty if lagging else 0.0) + (self.distract_reward if self.x == 0 else 0.0)
        return self._observe(), float(reward), terminated, False, info

    def render_rgb(self, scale: int = 0) -> np.ndarray:
        """The T seen from above, ``scale`` pixels per cell (0: as large as fits ~800 pixels of
        width, 4 to 32): rows y = +1, 0, -1; the oracle cell yellow, the goal arm green, the other
        arm red, the agent blue. (3 * scale, (o + L + 1) * scale, 3) uint8."""
        width = self.junction_x + 1
        scale = scale or int(np.clip(800 // width, 4, 32))
        c = {k: np.array(v, dtype=np.uint8) for k, v in RENDER_COLOURS.items()}
        cells = np.empty((3, width, 3), dtype=np.uint8)
        cells[:] = c["off"]
        cells[1, :] = c["floor"]
        cells[1, 0] = c["oracle"]
        row_of = {1: 0, 0: 1, -1: 2}  # y -> image row (y = +1 on top)
        cells[row_of[self.goal_y], self.junction_x] = c["goal"]
        cells[row_of[-self.goal_y], self.junction_x] = c["wrong"]
        image = np.repeat(np.repeat(cells, scale, axis=0), scale, axis=1)
        r, x, m = row_of[self.y] * scale, self.x * scale, max(1, scale // 5)
        image[r + m:r + scale - m, x + m:x + scale - m] = c["agent"]
        return image

    def render(self):
        """``render_mode="rgb_array"``: ``render_rgb()``; no render mode: None."""
        return self.render_rgb() if self.render_mode == "rgb_array" else None


class TMazePassiveEnv(TMazeEnv):
    """The goal is shown at the start (the agent starts on the oracle): tests memory."""

    def __init__(self, corridor_length: int = 100, **kwargs):
        super().__init__(corridor_length, oracle_length=0, **kwargs)


class TMazeActiveEnv(TMazeEnv):
    """The agent must first step left to the oracle to see the goal: tests credit assignment."""

    def __init__(self, corridor_length: int = 100, **kwargs):
        super().__init__(corridor_length, oracle_length=1, **kwargs)
