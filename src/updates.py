"""The gradient-update side of an iteration: replay batches to the device, a run of updates that
accumulates their statistics and can stop between two updates, and the iteration's means."""
from __future__ import annotations

import math
from typing import Callable, Dict, Iterator, Optional

import numpy as np
import torch


class NonFiniteError(RuntimeError):
    pass


def to_tensors(batch: Dict[str, np.ndarray], device) -> Dict[str, torch.Tensor]:
    """To the device first (uint8 pixels travel as uint8), then float32 there."""
    return {k: torch.as_tensor(v).to(device, non_blocking=True).float() for k, v in batch.items()}


def gradient_steps(algo, sample: Callable[[], Dict[str, torch.Tensor]], n: int, sums: Dict,
                   stop: Callable[[], bool] = lambda: False) -> Iterator[None]:
    """Up to ``n`` updates of ``algo`` on batches from ``sample()``, each adding its statistics to
    ``sums``; yields after each update (the caller counts it); ends early once ``stop()`` is true."""
    for _ in range(n):
        if stop():
            return
        for key, v in algo.update(sample()).items():
            sums[key] = sums.get(key, 0.0) + v
        yield


def iteration_means(sums: Dict, n: int) -> Dict[str, float]:
    """``train/<stat>`` = the sum over the iteration's ``n`` updates / n."""
    return {f"train/{key}": float(v) / n for key, v in sums.items()}


def non_finite(stats: Dict[str, float]) -> Dict[str, float]:
    """The statistics that are NaN or infinite (training must stop on any)."""
    return {key: v for key, v in stats.items() if not math.isfinite(v)}


def non_finite_advice(bad: Dict[str, float], stats: Dict[str, float], grad_clip: Optional[float] = None) -> str:
    """What to try, from what went non-finite: α on its own points at its schedule; the losses
    with huge gradient norms at the step size (a tighter clip when one is already set)."""
    if "train/alpha" in bad and set(bad) <= {"train/alpha", "train/entropy"}:  # (PPO has no α)
        return ("α (the entropy temperature) left the finite range: check algo.init_alpha (> 0) and "
                "algo.alpha_lr, or fix α with algo.auto_alpha=false")
    clip = "algo.grad_clip=1.0" if grad_clip is None else f"a tighter algo.grad_clip (now {grad_clip:g})"
    norms = [v for k, v in stats.items() if k.endswith("grad_norm")]
    if any(not math.isfinite(v) or v > 1e3 for v in norms):
        return f"the gradients exploded: try {clip} or a lower algo.lr"
    return f"try {clip} or a lower algo.lr; if it persists, check the env's rewards and observations"
