"""MuJoCo helpers shared by the -P/-V and meta-RL envs."""
from __future__ import annotations

import warnings

MUJOCO_HINT = 'MuJoCo tasks need the mujoco extra: pip install -e ".[mujoco]"'

# Gymnasium's own half_cheetah.xml uses a compiler attribute that MuJoCo >= 3.4 deprecates; MuJoCo
# prints that on every model compile (one per env, 100+ per run) and writes MUJOCO_LOG.TXT into
# the working directory. Known-harmless messages are dropped; every other one becomes a Python warning.
_KNOWN_HARMLESS = ("compiler attribute 'settotalmass' is deprecated",)


def _on_mujoco_warning(message: str) -> None:
    if not message.startswith(_KNOWN_HARMLESS):
        warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)


def install_warning_filter() -> None:
    """Route MuJoCo's warnings through Python's (only if nobody installed a handler already)."""
    try:
        import mujoco
    except ImportError as e:
        raise ImportError(f"{e}. {MUJOCO_HINT}") from e
    setter = getattr(mujoco, "set_mju_user_warning", None)
    if setter is not None and mujoco.get_mju_user_warning() is None:
        setter(_on_mujoco_warning)
