"""Occluded-observation control tasks ("-P" = positions only, "-V" = velocities only).

One generic wrapper, :class:`ObservationMask`, keeps a list of observation indices of a standard
Gymnasium env; :func:`make_masked` builds the base env (its raw class, so ``gym.make`` adds the
only ``TimeLimit``), maps the policy's [-1, 1] actions onto the base env's action box, and masks
the observation. The index lists the trainer uses are ``env.kwargs.keep`` in ``conf/env/<name>.yaml``;
the registered ids below carry the same lists as defaults (a test keeps both equal), so
``gym.make("memrl/HalfCheetah-V-v0")`` works on its own.

Index lists (new-tasks.md §2; MuJoCo v5 observations are qpos without x (and y for Ant) ⊕ qvel):

| id | base | -P (positions) | -V (velocities) |
|---|---|---|---|
| Pendulum | Pendulum-v1 (cos θ, sin θ, θ̇) | 0, 1 | 2 |
| CartPole | CartPole-v1 (x, ẋ, θ, θ̇) | 0, 2 | 1, 3 |
| HalfCheetah | HalfCheetah-v5 (17) | 0–7 | 8–16 |
| Hopper | Hopper-v5 (11) | 0–4 | 5–10 |
| Walker2d | Walker2d-v5 (17) | 0–7 | 8–16 |
| Ant | Ant-v5 without contact forces (27) | 0–12 | 13–26 |

Episodes: the base env's time limit (Pendulum 200, CartPole 500, MuJoCo 1000; change it with
``max_episode_steps=``). Rewards and termination are the base env's (Hopper, Walker2d, Ant and
CartPole terminate when they fall). These tasks have no success criterion: ``info`` carries no
``"success"`` key (the base env's own info keys pass through unchanged).
"""
from __future__ import annotations

from typing import Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .._mujoco import install_warning_filter

# id -> (base env id, default kept indices, base env kwargs)
MASKED_ENVS = {
    "memrl/Pendulum-P-v0": ("Pendulum-v1", [0, 1], {}),
    "memrl/Pendulum-V-v0": ("Pendulum-v1", [2], {}),
    "memrl/CartPole-P-v0": ("CartPole-v1", [0, 2], {}),
    "memrl/CartPole-V-v0": ("CartPole-v1", [1, 3], {}),
    "memrl/HalfCheetah-P-v0": ("HalfCheetah-v5", list(range(0, 8)), {}),
    "memrl/HalfCheetah-V-v0": ("HalfCheetah-v5", list(range(8, 17)), {}),
    "memrl/Hopper-P-v0": ("Hopper-v5", list(range(0, 5)), {}),
    "memrl/Hopper-V-v0": ("Hopper-v5", list(range(5, 11)), {}),
    "memrl/Walker2d-P-v0": ("Walker2d-v5", list(range(0, 8)), {}),
    "memrl/Walker2d-V-v0": ("Walker2d-v5", list(range(8, 17)), {}),
    "memrl/Ant-P-v0": ("Ant-v5", list(range(0, 13)), {"include_cfrc_ext_in_observation": False}),
    "memrl/Ant-V-v0": ("Ant-v5", list(range(13, 27)), {"include_cfrc_ext_in_observation": False}),
}


class ObservationMask(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Keep the observation entries ``keep`` (in that order) of a 1-D Box observation.

    The new space has the base space's dtype and the kept entries' bounds."""

    def __init__(self, env: gym.Env, keep: Sequence[int]):
        gym.utils.RecordConstructorArgs.__init__(self, keep=keep)
        gym.ObservationWrapper.__init__(self, env)
        box = env.observation_space
        if not isinstance(box, spaces.Box) or len(box.shape) != 1:
            raise ValueError(f"ObservationMask needs a 1-D Box observation space, got {box}")
        keep = [int(i) for i in keep]
        n = box.shape[0]
        bad = [i for i in keep if not 0 <= i < n]
        if not keep or bad:
            raise ValueError(f"keep={keep}: indices {bad if keep else '(none)'} are not in [0, {n}) for the "
                             f"{n}-dim observation of {_name(env)}; give a non-empty list of indices 0..{n - 1}")
        if len(set(keep)) != len(keep):
            raise ValueError(f"keep={keep} repeats an index; list each kept observation index once")
        self.keep = np.asarray(keep, dtype=np.intp)
        self.observation_space = spaces.Box(box.low[self.keep], box.high[self.keep], dtype=box.dtype)

    def observation(self, observation):
        return np.asarray(observation)[self.keep]


class UnitActions(gym.ActionWrapper):
    """The policy acts in [-1, 1]^A; clip there, then map affinely onto the base env's action box
    (as pomdp-baselines' wrappers do)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        box = env.action_space
        self._low, self._high = box.low.astype(np.float64), box.high.astype(np.float64)
        if not (np.isfinite(self._low).all() and np.isfinite(self._high).all()):
            raise ValueError(f"{_name(env)} has an unbounded action space {box}; cannot map [-1, 1] onto it")
        self.action_space = spaces.Box(-1.0, 1.0, shape=box.shape, dtype=np.float32)

    def action(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        env_a = self._low + (a + 1.0) * 0.5 * (self._high - self._low)
        return np.clip(env_a, self._low, self._high).astype(self.env.action_space.dtype)


def unit_box(space) -> bool:
    return isinstance(space, spaces.Box) and bool(np.all(space.low == -1.0) and np.all(space.high == 1.0))


def make_base(base_id: str, **kwargs) -> gym.Env:
    """The base env's raw class (no TimeLimit or checker wrappers), with a hint if MuJoCo is missing."""
    from gymnasium.envs.registration import load_env_creator
    spec = gym.spec(base_id)
    if "mujoco" in str(spec.entry_point):
        install_warning_filter()  # raises with MUJOCO_HINT when mujoco is missing
    try:
        creator = load_env_creator(spec.entry_point)
    except gym.error.DependencyNotInstalled as e:
        raise ImportError(f"{base_id}: {e}") from e
    return creator(**{**spec.kwargs, **kwargs})


def make_masked(base_id: str, keep: Sequence[int], **kwargs) -> gym.Env:
    """``base_id`` (kwargs go to its constructor) with [-1, 1] actions and observation ``keep``."""
    env = make_base(base_id, **kwargs)
    if isinstance(env.action_space, spaces.Box) and not unit_box(env.action_space):
        env = UnitActions(env)
    return ObservationMask(env, keep)


def register_pomdp_envs() -> None:
    """Register the ids of MASKED_ENVS (idempotent), with the base env's time limit."""
    for env_id, (base_id, keep, base_kwargs) in MASKED_ENVS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="envs.pomdp:make_masked",
                         kwargs={"base_id": base_id, "keep": list(keep), **base_kwargs},
                         max_episode_steps=gym.spec(base_id).max_episode_steps)


def _name(env) -> str:
    spec = getattr(env, "spec", None)
    return spec.id if spec is not None else type(env.unwrapped).__name__


__all__ = ["MASKED_ENVS", "ObservationMask", "UnitActions", "make_masked", "register_pomdp_envs"]
