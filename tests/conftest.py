import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MEMRL_SCAN_BACKEND", "eager")  # SHM/S6 backend=auto: skip torch.compile (10–60 s) in tests
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield
