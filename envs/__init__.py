"""Gymnasium environments of memrl, registered under the ``memrl/`` namespace on import."""
from __future__ import annotations

import dataclasses
import inspect

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

META_ENVS = {
    "memrl/Wind-v0": "envs.meta.navigation:WindEnv",
    "memrl/PointRobot-v0": "envs.meta.navigation:PointRobotEnv",
    # MuJoCo v5 meta-RL (the mujoco extra); they truncate their own episodes (max_episode_steps)
    "memrl/HalfCheetahVel-v0": "envs.meta.mujoco:HalfCheetahVelEnv",
    "memrl/HalfCheetahDir-v0": "envs.meta.mujoco:HalfCheetahDirEnv",
    "memrl/AntDir-v0": "envs.meta.mujoco:AntDirEnv",
    "memrl/HumanoidDir-v0": "envs.meta.mujoco:HumanoidDirEnv",
}


def register_all() -> None:
    """Register every memrl env (idempotent: multirun jobs re-import this module)."""
    for env_id, entry in META_ENVS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=entry, disable_env_checker=True)
    from .pomdp import register_pomdp_envs
    register_pomdp_envs()
    from .credit import register_credit_envs  # an error in a credit env module surfaces here
    register_credit_envs()
    from .popgym import register_popgym_envs  # the per-class ids only where popgym is installed
    register_popgym_envs()


def make(env_id: str, episodes_per_task: int = 1, **kwargs) -> gym.Env:
    """Build a registered env, wrapped into k-episode tasks when ``episodes_per_task > 1``."""
    register_all()
    if env_id not in gym.registry:
        if "popgym" in env_id.lower():
            try:
                import popgym  # noqa: F401
            except ImportError as e:
                raise ValueError(f"env {env_id!r} needs the popgym package: pip install 'popgym>=1.0.7,<1.1'") from e
        known = sorted(k for k in gym.registry if k.startswith("memrl/"))
        raise ValueError(f"unknown env id {env_id!r}; registered memrl envs: {', '.join(known)}")
    env = gym.make(_spec_with_own_horizon(env_id, kwargs), **kwargs)
    if episodes_per_task > 1:
        from .meta import MultiEpisode
        env = MultiEpisode(env, episodes_per_task)
    return env


def _spec_with_own_horizon(env_id: str, kwargs: dict) -> gym.envs.registration.EnvSpec:
    """gym.make takes a ``max_episode_steps`` keyword for itself (a TimeLimit wrapper) and never passes
    it on; for an env whose constructor has that argument (the meta-RL envs: it sets their horizon and
    where they report success) it goes to the constructor instead, through the spec's kwargs."""
    spec = gym.spec(env_id)
    if "max_episode_steps" in kwargs and isinstance(spec.entry_point, str):
        creator = load_env_creator(spec.entry_point)
        if "max_episode_steps" in inspect.signature(creator).parameters:
            own = {**spec.kwargs, "max_episode_steps": kwargs.pop("max_episode_steps")}
            spec = dataclasses.replace(spec, kwargs=own)
    return spec


register_all()
