"""Seconds per gradient update and env steps/s while collecting, per model and env, with the
projected wall time of the full paper budget.

    python -m benchmarks.train_speed [--models gru shm ...] [--envs wind point_robot]
                                     [--updates 10] [--extra experiment=reference_sizes ...]

Each cell builds the real Trainer (same agent, SAC and replay as training), fills the replay with
random rollouts, times `--updates` updates after 2 warm-up updates, and times one iteration's
stochastic rollouts (all rollouts of an iteration step together through one batched actor call).
Run it on a quiet machine; it prints a markdown table.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from src.loop import Trainer
from src.config import compose_config as compose_cfg


def measure(env: str, model: str, updates: int, extra) -> dict:
    cfg = compose_cfg([f"env={env}", f"model={model}", "logger=none", "progress_bar=false", *extra])
    trainer = Trainer(cfg, tempfile.mkdtemp(prefix="memrl_bench_"))
    tr = cfg.train
    trainer.collect(min(int(tr.batch_size), int(tr.num_warmup_rollouts)), "random")
    t0 = time.perf_counter()
    steps = trainer.collect(int(tr.rollouts_per_iter), "stochastic")
    collect_rate = steps / (time.perf_counter() - t0)
    batch = lambda: trainer._to_tensors(trainer.buffer.sample(int(tr.batch_size)))  # noqa: E731
    for _ in range(2):
        trainer.algo.update(batch())
    t0 = time.perf_counter()
    for _ in range(updates):
        trainer.algo.update(batch())
    sec_per_update = (time.perf_counter() - t0) / updates
    total_updates = int(tr.num_iters) * int(tr.updates_per_iter)
    total_steps = trainer.total_env_steps()
    hours = (total_updates * sec_per_update + total_steps / collect_rate) / 3600
    return {"env": env, "model": model, "width": int(cfg.model.width), "batch": int(tr.batch_size),
            "sec_per_update": sec_per_update, "collect_steps_per_s": collect_rate,
            "total_updates": total_updates, "total_env_steps": total_steps, "hours": hours}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["gru", "shm", "fwp", "mlstm", "ffm", "gpt2", "s6", "lstm", "mlp"])
    ap.add_argument("--envs", nargs="+", default=["wind", "point_robot"])
    ap.add_argument("--updates", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides, e.g. experiment=reference_sizes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}, overrides: {' '.join(args.extra) or '-'}\n")
    print("| env | model | width | batch | s / update | collect env steps/s | full budget (updates, env steps) | projected hours |")
    print("|---|---|---|---|---|---|---|---|")
    for env in args.envs:
        for model in args.models:
            r = measure(env, model, args.updates, ["num_threads=%d" % args.threads, *args.extra])
            print(f"| {r['env']} | {r['model']} | {r['width']} | {r['batch']} | {r['sec_per_update']:.3f} | "
                  f"{r['collect_steps_per_s']:.0f} | {r['total_updates']:,}, {r['total_env_steps']:,} | "
                  f"{r['hours']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
