"""POPGym envs behind a thin adapter (flat one-hot observations, optional previous action), registered
as ``memrl/popgym-<ClassName>-v0`` for every env of ``popgym.envs.ALL`` and as the generic
``memrl/PopGym-v0`` (``gym.make("memrl/PopGym-v0", name="BattleshipEasy")``). Needs the ``popgym``
package (a dependency of memrl, ``popgym>=1.0.7,<1.1``)."""
import importlib.util

import gymnasium as gym

from .adapter import PopGymEnv, popgym_class, popgym_classes

ENTRY_POINT = "envs.popgym.adapter:PopGymEnv"
GENERIC_ID = "memrl/PopGym-v0"


def env_id(name: str) -> str:
    return f"memrl/popgym-{name}-v0"


def register_popgym_envs() -> None:
    """Register the generic id and one id per POPGym env (idempotent). No TimeLimit wrapper: POPGym
    envs end their episodes themselves; the env checker is off as for the other memrl envs (the
    tests run ``check_env`` on the adapter)."""
    if GENERIC_ID not in gym.registry:
        gym.register(GENERIC_ID, entry_point=ENTRY_POINT, disable_env_checker=True)
    if importlib.util.find_spec("popgym") is None:  # the generic id then says how to install it
        return
    import popgym.envs as pe
    for cls in pe.ALL:
        if env_id(cls.__name__) not in gym.registry:
            gym.register(env_id(cls.__name__), entry_point=ENTRY_POINT, kwargs={"name": cls.__name__},
                         disable_env_checker=True)


__all__ = ["GENERIC_ID", "PopGymEnv", "env_id", "popgym_class", "popgym_classes", "register_popgym_envs"]
