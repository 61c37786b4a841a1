"""A thin Gymnasium adapter around POPGym envs (Morad et al., ICLR 2023; package ``popgym``).

POPGym's own ``gym.make`` ids assert on the raw class, so envs are built from their class by name
(``PopGymEnv(name="RepeatPreviousEasy")``). The adapter

* flattens every observation to one float32 vector: Discrete parts become one-hot vectors,
  MultiDiscrete parts concatenated one-hots, Box parts stay as they are
  (``gymnasium.spaces.utils.flatten``);
* turns a MultiDiscrete action space (Battleship, MineSweeper: a board cell) into one Discrete
  space over all combinations (index = ``np.ravel_multi_index``), so that one categorical policy
  serves every discrete env; Discrete and Box action spaces pass through;
* with ``prev_action=True`` appends the previous action (one-hot for discrete actions, the raw
  vector for Box) to the observation, zeros at the first step of an episode. POPGym's baselines
  feed it (``Antialias(PreviousAction(env))``: previous action with a null action and an is-first
  flag at reset; the zero vector here marks the first step just as well); the SHM paper's
  scripts do not, hence the default False;
* exposes ``max_episode_steps`` (the env's own ``max_episode_length`` where it has one) and keeps
  the env's own ends of episodes: POPGym envs terminate or truncate themselves.

Rewards are POPGym's (scaled so that an episode's return lies in [-1, 1]).
"""
from __future__ import annotations

import copy
import inspect
from typing import Optional

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.spaces.utils import flatdim, flatten, flatten_space


def popgym_classes() -> dict:
    """Every POPGym env class by name (the 45 of ``popgym.envs.ALL``, plus the base classes)."""
    import popgym.envs as pe
    classes = {c.__name__: c for c in pe.ALL}
    for name, obj in vars(pe).items():  # base classes (RepeatPrevious, ...) take constructor kwargs
        if inspect.isclass(obj) and issubclass(obj, gym.Env) and obj.__module__.startswith("popgym.envs."):
            classes.setdefault(name, obj)
    return classes


def popgym_class(name: str):
    classes = popgym_classes()
    if name not in classes:
        raise ValueError(f"unknown POPGym env {name!r}; valid names: {', '.join(sorted(classes))}")
    return classes[name]


class PopGymEnv(gym.Env):
    """POPGym env ``name`` (a class of ``popgym.envs``) with flat one-hot observations.

    ``env_kwargs`` go to the class's constructor (base classes only, e.g.
    ``name="RepeatPrevious", env_kwargs={"k": 8}``)."""

    metadata = {"render_modes": []}

    def __init__(self, name: str = "RepeatPreviousEasy", prev_action: bool = False,
                 env_kwargs: Optional[dict] = None):
        self.name = name
        self.env = popgym_class(name)(**(env_kwargs or {}))
        raw_obs, raw_act = self.env.observation_space, self.env.action_space
        self._raw_obs_space = raw_obs
        self._nvec = None
        if isinstance(raw_act, spaces.MultiDiscrete):
            self._nvec = np.asarray(raw_act.nvec).ravel()
            self.action_space = spaces.Discrete(int(np.prod(self._nvec)))
        elif isinstance(raw_act, (spaces.Discrete, spaces.Box)):
            self.action_space = raw_act
        else:
            raise ValueError(f"POPGym env {name} has action space {raw_act}: only Discrete, MultiDiscrete "
                             f"and Box are supported")
        self.prev_action = bool(prev_action)
        obs_box = flatten_space(raw_obs)
        low, high = obs_box.low.astype(np.float32), obs_box.high.astype(np.float32)
        if self.prev_action:
            a_low, a_high = self._action_bounds()
            low, high = np.concatenate([low, a_low]), np.concatenate([high, a_high])
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        length = getattr(self.env, "max_episode_length", None)
        self.max_episode_steps = int(length) if length else None

    def _action_bounds(self):
        if isinstance(self.action_space, spaces.Discrete):
            n = int(self.action_space.n)
            return np.zeros(n, np.float32), np.ones(n, np.float32)
        return (self.action_space.low.ravel().astype(np.float32),
                self.action_space.high.ravel().astype(np.float32))

    def _action_vector(self, action) -> np.ndarray:
        if isinstance(self.action_space, spaces.Discrete):
            v = np.zeros(int(self.action_space.n), np.float32)
            v[int(action)] = 1.0
            return v
        return np.asarray(action, np.float32).ravel()

    def _obs(self, raw, action_vec: Optional[np.ndarray]) -> np.ndarray:
        obs = np.asarray(flatten(self._raw_obs_space, raw), dtype=np.float32)
        if self.prev_action:
            if action_vec is None:
                action_vec = np.zeros(flatdim(self.action_space) if isinstance(self.action_space, spaces.Box)
                                      else int(self.action_space.n), np.float32)
            obs = np.concatenate([obs, action_vec])
        return obs

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        raw, info = self.env.reset(seed=seed, options=options)
        self._np_random = self.env.np_random  # one generator: the wrapped env's (decks, boards)
        return self._obs(raw, None), copy.deepcopy(info)  # POPGym reuses info objects

    def step(self, action):
        if isinstance(self.action_space, spaces.Discrete):
            if not self.action_space.contains(action):
                raise ValueError(f"action {action!r} is not in {self.action_space} ({self.name})")
            action = int(action)
        raw_action = action if self._nvec is None else np.array(np.unravel_index(action, self._nvec))
        raw, reward, terminated, truncated, info = self.env.step(raw_action)
        return (self._obs(raw, self._action_vector(action) if self.prev_action else None), float(reward),
                bool(terminated), bool(truncated), copy.deepcopy(info))
