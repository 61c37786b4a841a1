"""Benchmarks that print markdown tables (python -m benchmarks.<name>)."""
import torch


def sync(device) -> None:
    """Wait for the device's queued kernels before reading a timer (CUDA runs them asynchronously;
    a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
