"""k episodes of the same task as one sequence (the BAMDP view of meta-RL, "VariBAD wrapper").

The agent's memory carries over the k episodes of a task. When an inner episode ends, the task's
env is reset and the *fresh start observation* is returned (the reference fed the stale terminal
observation instead); when k > 1 a last observation element flags that an episode just ended.
The wrapped episode ends after the k-th inner episode; ``info["success"]`` then says whether the
goal was reached at any step of any episode (only for tasks whose env reports ``"success"``; the
MuJoCo meta-RL tasks have no success criterion and get no such key). ``info["episode_index"]`` is
the inner episode of the step just taken.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class MultiEpisode(gym.Wrapper, gym.utils.RecordConstructorArgs):
    def __init__(self, env: gym.Env, episodes_per_task: int):
        gym.utils.RecordConstructorArgs.__init__(self, episodes_per_task=episodes_per_task)
        gym.Wrapper.__init__(self, env)
        if episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
        self.k = episodes_per_task
        self.add_flag = episodes_per_task > 1
        if self.add_flag:
            box = env.observation_space
            self.observation_space = spaces.Box(
                np.append(box.low, 0.0).astype(np.float32), np.append(box.high, 1.0).astype(np.float32),
                dtype=np.float32)
        self._episode = 0
        self._success = False
        self._reports_success = False  # the inner env has a success criterion

    def _obs(self, obs, flag: float):
        return np.append(obs, np.float32(flag)).astype(np.float32) if self.add_flag else obs

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._episode, self._success = 0, False
        return self._obs(obs, 0.0), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info, episode_index=self._episode)
        self._reports_success |= "success" in info
        self._success |= bool(info.get("success", False))
        if terminated or truncated:
            self._episode += 1
            if self._episode < self.k:
                obs, _ = self.env.reset()  # same task, next episode
                return self._obs(obs, 1.0), reward, False, False, info
            if self._reports_success:
                info["success"] = self._success
            return self._obs(obs, 1.0), reward, terminated, truncated, info
        info.pop("success", None)
        return self._obs(obs, 0.0), reward, terminated, truncated, info
