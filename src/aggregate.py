"""Aggregates over seeds as rliable computes them: the interquartile mean (IQM) and its 95 %
stratified-bootstrap confidence interval (runs resampled with replacement within each task)."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

N_BOOT = 10_000  # bootstrap resamples for the IQM intervals


def iqm_rows(samples: np.ndarray) -> np.ndarray:
    """IQM of each row of [B, n]: the mean after dropping floor(n/4) lowest and highest values."""
    samples = np.sort(np.asarray(samples, dtype=float), axis=-1)
    n = samples.shape[-1]
    if n == 0:
        raise ValueError("IQM of no scores")
    cut = n // 4
    return samples[..., cut:n - cut].mean(-1)


def iqm(scores) -> float:
    """Interquartile mean of all the scores (flattened)."""
    return float(iqm_rows(np.ravel(np.asarray(scores, dtype=float))[None])[0])


def stratified_bootstrap_ci(strata: Sequence[Sequence[float]], n_boot: int = N_BOOT, confidence: float = 0.95,
                            seed: int = 0) -> Tuple[float, float]:
    """Percentile interval of the IQM of all strata's scores pooled, each bootstrap sample drawing
    every stratum's runs with replacement from that stratum only (so each keeps its size)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    parts = []
    for x in strata:
        x = np.asarray(x, dtype=float)
        parts.append(x[rng.integers(len(x), size=(n_boot, len(x)))])
    stats = iqm_rows(np.concatenate(parts, axis=1))
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(lo), float(hi)


def fmt_iqm(strata: Sequence[Sequence[float]], n_boot: int) -> str:
    lo, hi = stratified_bootstrap_ci(strata, n_boot)
    return f"{iqm(np.concatenate([np.ravel(s) for s in strata])):.3f} [{lo:.3f}, {hi:.3f}]"
