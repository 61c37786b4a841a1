"""Seconds per gradient update, env steps/s while collecting and seconds per evaluation, per model
and env, with the projected wall time of the full paper budget.

    python -m benchmarks.train_speed [--models gru shm ...] [--envs wind point_robot] [--threads 1 2]
                                     [--updates 10] [--extra experiment=reference_sizes ...]
    python -m benchmarks.train_speed --envs halfcheetah_v --models gru shm --extra task=pomdp algo=td3

The batch column reads B×S for windows of S steps (train.seq_len, task=pomdp MuJoCo presets).

Each cell builds the real Trainer (same agent, SAC and replay as training), fills the replay with
random rollouts, times `--updates` updates after 3 warm-up updates (which include any
torch.compile), one iteration's stochastic rollouts (all rollouts of an iteration step together
through one batched actor call) and one evaluation (every train and eval task, deterministic).
Projected hours = updates × s/update + env steps / collect rate + evaluations × s/eval.
Run it on a quiet machine; it prints a markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from src.loop import Trainer
from src.config import compose_config as compose_cfg


def measure(env: str, model: str, updates: int, extra) -> dict:
    torch.manual_seed(0)
    cfg = compose_cfg([f"env={env}", f"model={model}", "logger=none", "progress_bar=false", *extra])
    trainer = Trainer(cfg, tempfile.mkdtemp(prefix="memrl_bench_"))
    tr = cfg.train
    trainer.collect(min(int(tr.batch_size), int(tr.num_warmup_rollouts)), "random")
    t0 = time.perf_counter()
    steps = trainer.collect(int(tr.rollouts_per_iter), "stochastic")
    collect_rate = steps / (time.perf_counter() - t0)
    batch = lambda: trainer._to_tensors(trainer.buffer.sample(int(tr.batch_size)))  # noqa: E731
    for _ in range(3):
        trainer.algo.update(batch())
    times = []
    for _ in range(updates):
        t0 = time.perf_counter()
        trainer.algo.update(batch())  # sampling is part of an update's cost, as in the reference's measurement
        times.append(time.perf_counter() - t0)
    sec_per_update = statistics.median(times)
    t0 = time.perf_counter()
    trainer.evaluate()
    sec_per_eval = time.perf_counter() - t0
    total_steps = trainer.total_env_steps()
    if tr.get("updates_per_step") is None:
        total_updates = int(tr.num_iters) * int(tr.updates_per_iter)
    else:  # one update per env step collected (task=pomdp): full-length episodes assumed
        total_updates = int(float(tr.updates_per_step) * total_steps)
    n_evals = -(-int(tr.num_iters) // int(cfg.eval.interval)) + 1
    hours = (total_updates * sec_per_update + total_steps / collect_rate + n_evals * sec_per_eval) / 3600
    seq = tr.get("seq_len")  # batch of windows: B×S
    return {"env": env, "model": model, "width": int(cfg.model.width),
            "batch": f"{int(tr.batch_size)}" if seq is None else f"{int(tr.batch_size)}×{int(seq)}",
            "sec_per_update": sec_per_update, "collect_steps_per_s": collect_rate, "sec_per_eval": sec_per_eval,
            "total_updates": total_updates, "total_env_steps": total_steps, "hours": hours}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["gru", "shm", "fwp", "mlstm", "ffm", "gpt2", "s6", "lstm", "mlp"])
    ap.add_argument("--envs", nargs="+", default=["wind", "point_robot"])
    ap.add_argument("--updates", type=int, default=10, help="timed updates per cell (the median is reported)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides, e.g. experiment=reference_sizes")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, device {'cuda' if torch.cuda.is_available() else 'cpu'}, "
          f"overrides: {' '.join(args.extra) or '-'}\n")
    print("| env | model | threads | width | batch | s / update | collect env steps/s | s / eval | "
          "full budget (updates, env steps) | projected hours |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for env in args.envs:
        for model in args.models:
            for threads in args.threads:
                r = measure(env, model, args.updates, [f"num_threads={threads}", *args.extra])
                print(f"| {r['env']} | {r['model']} | {threads} | {r['width']} | {r['batch']} | "
                      f"{r['sec_per_update']:.3f} | {r['collect_steps_per_s']:.0f} | {r['sec_per_eval']:.1f} | "
                      f"{r['total_updates']:,}, {r['total_env_steps']:,} | {r['hours']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
