"""Recurrent-PPO throughput per model on a POPGym env: env steps per second of whole iterations
(collection with the vectorised envs + GAE + all PPO epochs), collection alone, and the projected
hours of the budget (``train.env_steps``).

    python -m benchmarks.ppo_speed [--models gru shm ffm ...] [--env repeat_previous_easy]
                                   [--iters 3] [--threads 1] [--extra experiment=popgym_cpu ...]

Each cell builds the real PPOTrainer (agent, PPO, vector env as in training), runs one warm-up
iteration (kernel builds, torch.compile), then times ``--iters`` iterations and reports the median.
Without ``--extra`` it measures POPGym's own setting (64 envs x 1,024 steps, 30 epochs): minutes per
iteration on a CPU. It prints a markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from src.config import compose_config as compose_cfg
from src.ppo_loop import PPOTrainer


def measure(env: str, model: str, iters: int, threads: int, extra) -> dict:
    torch.manual_seed(0)
    cfg = compose_cfg(["task=popgym", f"env={env}", f"model={model}", "logger=none", "progress_bar=false",
                       f"num_threads={threads}", *extra])
    trainer = PPOTrainer(cfg, tempfile.mkdtemp(prefix="memrl_ppo_bench_"))
    steps = trainer.N * trainer.T
    total, collect = [], []
    for i in range(iters + 1):
        t0 = time.perf_counter()
        batch, state = trainer.collect()
        t1 = time.perf_counter()
        trainer.algo.update(batch, state)
        t2 = time.perf_counter()
        if i > 0:  # the first iteration builds kernels / compiles
            total.append(t2 - t0)
            collect.append(t1 - t0)
    sec = statistics.median(total)
    return {"model": model, "width": int(cfg.model.width), "envs": trainer.N, "rollout": trainer.T,
            "epochs": int(cfg.algo.epochs), "steps_per_s": steps / sec,
            "collect_steps_per_s": steps / statistics.median(collect),
            "hours": int(cfg.train.env_steps) / (steps / sec) / 3600, "budget": int(cfg.train.env_steps)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["gru", "shm", "ffm", "lstm", "fwp", "mlstm", "gpt2", "s6", "mlp"])
    ap.add_argument("--env", default="repeat_previous_easy")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--extra", nargs="*", default=[], help="more overrides, e.g. experiment=popgym_cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"env {a.env}, {a.threads} thread(s), overrides: {' '.join(a.extra) or '(task=popgym defaults)'}\n")
    print("| model | width | envs x rollout | epochs | env steps/s (incl. updates) | collect steps/s | projected budget |")
    print("|---|---|---|---|---|---|---|")
    for model in a.models:
        r = measure(a.env, model, a.iters, a.threads, a.extra)
        print(f"| {r['model']} | {r['width']} | {r['envs']} x {r['rollout']} | {r['epochs']} | "
              f"{r['steps_per_s']:.0f} | {r['collect_steps_per_s']:.0f} | "
              f"{r['hours']:.2f} h for {r['budget'] / 1e6:g}M |", flush=True)


if __name__ == "__main__":
    main()
