"""The fused CPU GRU recurrence, by its older import path: it lives in ``torchkit.memory.kernels.gru``
beside its reference ``gru_steps``."""
from .kernels.gru import GRU_BACKENDS, fused_available, fused_gru, gru_backend, gru_steps  # noqa: F401
