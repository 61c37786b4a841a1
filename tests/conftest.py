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


@pytest.fixture
def no_native_kernels(monkeypatch):
    """memrl's C++ kernels fail to build (as on a machine without a compiler or ninja)."""
    from torchkit.memory import native

    def no_build():
        raise RuntimeError("Ninja is required to load C++ extensions")
    monkeypatch.setattr(native, "extension", no_build)
    native.available.cache_clear()
    yield
    native.available.cache_clear()


@pytest.fixture
def bf16_path(monkeypatch):
    """Run the bf16 path on every CPU, so that CI checks its numbers on any machine. A CPU without
    AVX512-BF16/AMX still computes bfloat16 autocast (ATen/oneDNN widen the bfloat16 operands,
    multiply-add in float32 and round the result to bfloat16: what native units do, up to the order
    of the sums; ~10x slower than float32, so only the unit tests take this path), but
    ``precision=bf16`` falls back to float32 there: the fixture lets the algorithms take it."""
    from torchkit import precision

    if not precision.bf16_supported(torch.device("cpu")):
        monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
