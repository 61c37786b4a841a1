"""Gymnasium environments of memrl, registered under the ``memrl/`` namespace on import."""
from __future__ import annotations

import gymnasium as gym

META_ENVS = {
    "memrl/Wind-v0": "envs.meta.navigation:WindEnv",
    "memrl/PointRobot-v0": "envs.meta.navigation:PointRobotEnv",
}


def register_all() -> None:
    """Register every memrl env (idempotent: multirun jobs re-import this module)."""
    for env_id, entry in META_ENVS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=entry, disable_env_checker=True)
    from .credit import register_credit_envs  # an error in a credit env module surfaces here
    register_credit_envs()


def make(env_id: str, episodes_per_task: int = 1, **kwargs) -> gym.Env:
    """Build a registered env, wrapped into k-episode tasks when ``episodes_per_task > 1``."""
    register_all()
    if env_id not in gym.registry:
        known = sorted(k for k in gym.registry if k.startswith("memrl/"))
        raise ValueError(f"unknown env id {env_id!r}; registered memrl envs: {', '.join(known)}")
    env = gym.make(env_id, **kwargs)
    if episodes_per_task > 1:
        from .meta import MultiEpisode
        env = MultiEpisode(env, episodes_per_task)
    return env


register_all()
