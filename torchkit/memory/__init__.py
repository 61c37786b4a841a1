"""Memory layers behind one interface (see ``base.Memory``); one file per model."""
from .base import Memory, State, forward_by_steps, orthogonal_init_

__all__ = ["Memory", "State", "forward_by_steps", "orthogonal_init_"]
