"""Memory pre-flight: a configuration that cannot fit is refused by name before allocating."""
import pytest
import torch

from src import preflight
from src.config import ConfigError
from src.loop import Trainer
from tests.helpers import TINY, compose_cfg


def test_estimate_covers_the_measured_update_memory():
    # one update's peak RSS growth per (row x step), measured on CPU (src/preflight.py docstring)
    measured = {("gru", 64): 10.2e3, ("shm", 64): 12.5e3, ("mlp", 64): 9.6e3, ("gru", 512): 50.0e3}
    for (model, width), bytes_per_step in measured.items():
        cfg = compose_cfg(["experiment=paper", f"model={model}", f"model.width={width}"])
        assert bytes_per_step <= preflight.activation_bytes_per_step(cfg) <= 3 * bytes_per_step, model


def test_a_batch_that_cannot_fit_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "available_bytes", lambda: 24 * 2**30)
    cfg = compose_cfg(TINY + ["train.batch_size=100000"])
    with pytest.raises(ConfigError, match=r"train.batch_size=100000 × 100 steps.*lower train.batch_size"):
        Trainer(cfg, tmp_path)
    for name in ("experiment=paper", "experiment=paper env=point_robot", "task=credit env=visual_match"):
        cfg = compose_cfg(name.split())
        replay, batch = preflight.estimate(cfg, (5, 5, 3) if "visual" in name else (3,), 1 if "visual" in name else 4,
                                           4, 275 if "visual" in name else 200, 2_000_000)
        assert replay + batch < 8 * 2**30, name  # the reference schedules fit a laptop


def test_no_meminfo_means_no_check(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "available_bytes", lambda: None)
    cfg = compose_cfg(TINY)
    preflight.check(cfg, (2,), 4, 2, 100, 10_000, torch.device("cpu"))


def test_windows_size_the_update_estimate():
    """train.seq_len = S: one update holds batch × S steps, not batch × the episode length."""
    cfg = compose_cfg(["task=pomdp", "env=halfcheetah_v"])
    assert cfg.train.seq_len == 64
    _, windows = preflight.estimate(cfg, (9,), 8, 6, 1000, 1_510_000)
    cfg.train.seq_len = None
    _, whole = preflight.estimate(cfg, (9,), 8, 6, 1000, 1_510_000)
    assert whole == windows * 1000 // 64
