"""Memory pre-flight: refuse a configuration that cannot fit before allocating it.

Two things grow with the config: the replay (it stores every collected step, up to
``train.buffer_size``) and the activations autograd keeps for one update (proportional to
``train.batch_size`` × episode length). Their estimate is checked against the memory available
now (Linux ``MemAvailable``; on CUDA, the device's free memory for the activations), so that a
typo such as ``train.batch_size=100000`` is a one-line error naming the keys to lower, not a kill
by the kernel's OOM killer (which may take other jobs with it).

Activation bytes per (batch row × step) were measured on CPU with one update's peak RSS growth
(Wind, width 64: GRU 10.2 KB, SHM 12.5 KB, mlp 9.6 KB; GRU width 512: 50 KB). The estimate below
over-covers those: heads ≈ 1.2 floats per unit of (6 × Σ Q layers + 2 × Σ policy layers) — twin Q
heads run in three passes per update, the policy in two — plus 20 floats per memory unit for the
four memory passes (GRU's gates and states; the other layers keep less), plus the embeddings.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from src.config import ConfigError

HEADROOM = 0.9  # refuse above 90 % of what is available


def available_bytes() -> Optional[int]:
    """MemAvailable from /proc/meminfo, None where there is no such file."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def activation_bytes_per_step(cfg) -> int:
    q, pi = sum(cfg.agent.q_layers), sum(cfg.agent.policy_layers)
    width = 0 if cfg.model.name == "mlp" else int(cfg.model.width)
    embed = sum(int(v) for v in cfg.agent.embed.values())
    floats = 1.2 * (6 * q + 2 * pi) + 20 * width + 4 * embed
    return int(4 * floats)


def estimate(cfg, obs_shape, obs_itemsize: int, action_dim: int, episode_len: int,
             total_env_steps: int) -> Tuple[int, int]:
    """(replay bytes when full for this run, activation bytes of one update)."""
    tr = cfg.train
    stored = min(int(tr.buffer_size), total_env_steps + total_env_steps // max(episode_len, 1) + 1)
    per_step = math.prod(obs_shape) * obs_itemsize + 4 * (action_dim + 2)
    seq = episode_len if tr.get("seq_len") is None else min(int(tr.seq_len), episode_len)  # windows: S steps
    batch = int(tr.batch_size) * seq * activation_bytes_per_step(cfg)
    return stored * per_step, batch


def check(cfg, obs_shape, obs_itemsize: int, action_dim: int, episode_len: int, total_env_steps: int,
          device: torch.device) -> None:
    replay, batch = estimate(cfg, obs_shape, obs_itemsize, action_dim, episode_len, total_env_steps)
    gb = lambda n: f"{n / 2**30:.1f} GB"  # noqa: E731
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if batch > HEADROOM * free:
            raise ConfigError(f"one update needs ≈ {gb(batch)} of GPU memory (train.batch_size="
                              f"{cfg.train.batch_size} × {episode_len} steps), {gb(free)} is free on {device}: "
                              f"lower train.batch_size or model.width")
        batch = 0  # the activations live on the GPU
    avail = available_bytes()
    if avail is None or replay + batch <= HEADROOM * avail:
        return
    raise ConfigError(f"this run needs ≈ {gb(replay + batch)} of memory (replay {gb(replay)}: "
                      f"train.buffer_size={cfg.train.buffer_size}, up to {total_env_steps:,} env steps; one "
                      f"update {gb(batch)}: train.batch_size={cfg.train.batch_size} × {episode_len} steps, "
                      f"model.width={cfg.model.width}), but only {gb(avail)} is available: lower "
                      f"train.batch_size, train.buffer_size or model.width")
