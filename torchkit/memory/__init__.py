"""Memory layers behind one interface (see ``base.Memory``); one file per model."""
from .base import Memory, State, forward_by_steps, reference_init_, reference_init_targets

__all__ = ["Memory", "State", "forward_by_steps", "reference_init_", "reference_init_targets"]
