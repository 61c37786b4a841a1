"""The scans, by their older import path: the kernels now live one module per job in
``torchkit.memory.kernels`` (``hadamard``, ``shm``, ``backend``), each beside its reference."""
from .kernels.backend import BACKENDS, SHM_BACKENDS, compile_works, scan_backend  # noqa: F401
from .kernels.hadamard import hadamard_scan, hadamard_scan_steps  # noqa: F401
from .kernels.shm import _shm_gates, shm_scan, shm_scan_steps, shm_step  # noqa: F401
