"""Long-horizon credit-assignment environments: Visual Match, Key-to-Door and the T-Mazes.

Pure numpy, Gymnasium >= 1.0 API; the envs end their episodes themselves (fixed horizon,
``terminated=True`` on the last step, which carries ``info["success"]``).
"""
import gymnasium as gym

from .key_to_door import KeyToDoorEnv
from .tmaze import TMazeActiveEnv, TMazeEnv, TMazePassiveEnv
from .visual_match import VisualMatchEnv

ENV_IDS = {
    "memrl/VisualMatch-v0": "envs.credit.visual_match:VisualMatchEnv",
    "memrl/KeyToDoor-v0": "envs.credit.key_to_door:KeyToDoorEnv",
    "memrl/TMazePassive-v0": "envs.credit.tmaze:TMazePassiveEnv",
    "memrl/TMazeActive-v0": "envs.credit.tmaze:TMazeActiveEnv",
}


def register_credit_envs() -> None:
    """Register the ids of ENV_IDS (idempotent). No TimeLimit: the envs have a fixed horizon.
    Phase lengths etc. go through ``gym.make(id, distractor_steps=500, ...)``."""
    for env_id, entry_point in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point)


__all__ = ["ENV_IDS", "KeyToDoorEnv", "TMazeActiveEnv", "TMazeEnv", "TMazePassiveEnv",
           "VisualMatchEnv", "register_credit_envs"]
