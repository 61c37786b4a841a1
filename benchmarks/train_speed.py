"""Seconds per gradient update, env steps/s while collecting and seconds per evaluation, per model
and env, with the projected wall time of the full paper budget.

    python -m benchmarks.train_speed [--models gru shm ...] [--envs wind point_robot] [--threads 1 2]
                                     [--precision fp32 bf16] [--updates 10] [--extra experiment=reference_sizes ...]
    python -m benchmarks.train_speed --envs halfcheetah_v --models gru shm --extra task=pomdp algo=td3

The batch column reads B×S for windows of S steps (train.seq_len, task=pomdp MuJoCo presets).

Each cell builds the real Trainer (same agent, SAC and replay as training), fills the replay with
random rollouts, times `--updates` updates after 3 warm-up updates (which include any
torch.compile), one iteration's stochastic rollouts (all rollouts of an iteration step together
through one batched actor call) and one evaluation (every train and eval task, deterministic).
Projected hours = updates × s/update + env steps / collect rate + evaluations × s/eval.
With several ``--precision`` values (fp32 bf16: the ``precision`` config key) each cell's precisions
are timed side by side on the same replay batches, interleaved update by update so that machine
load hits them alike, and a bf16/fp32 column gives the ratio of s/update (< 1: bf16 is faster).
Run it on a quiet machine; it prints a markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from benchmarks import sync
from src.loop import Trainer
from src.config import compose_config as compose_cfg
from torchkit.precision import bf16_supported


def measure(env: str, model: str, updates: int, extra, precisions=("fp32",)) -> list:
    """One result dict per precision (same agent init, replay and batches for each)."""
    trainers = []
    for precision in precisions:
        torch.manual_seed(0)
        cfg = compose_cfg([f"env={env}", f"model={model}", "logger=none", "progress_bar=false", *extra,
                           f"precision={precision}"])
        trainers.append(Trainer(cfg, tempfile.mkdtemp(prefix="memrl_bench_")))
    trainer, tr = trainers[0], cfg.train
    trainer.collect(min(int(tr.batch_size), int(tr.num_warmup_rollouts)), "random")
    t0 = time.perf_counter()
    steps = trainer.collect(int(tr.rollouts_per_iter), "stochastic")  # acting is fp32 in every precision
    collect_rate = steps / (time.perf_counter() - t0)
    batch = lambda: trainer._to_tensors(trainer.buffer.sample(int(tr.batch_size)))  # noqa: E731
    for t in trainers:
        for _ in range(3):
            t.algo.update(batch())
    times = [[] for _ in trainers]
    for _ in range(updates):
        for t, ts in zip(trainers, times):  # interleaved: load changes hit every precision alike
            sync(t.device)  # on a GPU the update's kernels run asynchronously: time them to their end
            t0 = time.perf_counter()
            t.algo.update(batch())  # sampling is part of an update's cost, as in the reference's measurement
            sync(t.device)
            ts.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    trainer.evaluate()
    sec_per_eval = time.perf_counter() - t0
    total_steps = trainer.total_env_steps()
    if tr.get("updates_per_step") is None:
        total_updates = int(tr.num_iters) * int(tr.updates_per_iter)
    else:  # one update per env step collected (task=pomdp): full-length episodes assumed
        total_updates = int(float(tr.updates_per_step) * total_steps)
    n_evals = -(-int(tr.num_iters) // int(cfg.eval.interval)) + 1
    seq = tr.get("seq_len")  # batch of windows: B×S
    rows = []
    for precision, ts in zip(precisions, times):
        sec_per_update = statistics.median(ts)
        hours = (total_updates * sec_per_update + total_steps / collect_rate + n_evals * sec_per_eval) / 3600
        rows.append({"env": env, "model": model, "precision": precision, "width": int(cfg.model.width),
                     "batch": f"{int(tr.batch_size)}" if seq is None else f"{int(tr.batch_size)}×{int(seq)}",
                     "sec_per_update": sec_per_update,
                     "collect_steps_per_s": collect_rate, "sec_per_eval": sec_per_eval,
                     "total_updates": total_updates, "total_env_steps": total_steps, "hours": hours})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["gru", "shm", "fwp", "mlstm", "ffm", "gpt2", "s6", "lstm", "mlp"])
    ap.add_argument("--envs", nargs="+", default=["wind", "point_robot"])
    ap.add_argument("--updates", type=int, default=10, help="timed updates per cell (the median is reported)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                    help="training precisions to time side by side (the precision config key)")
    ap.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides, e.g. experiment=reference_sizes")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, device {'cuda' if torch.cuda.is_available() else 'cpu'}, "
          f"overrides: {' '.join(args.extra) or '-'}\n")
    if "bf16" in args.precision and not bf16_supported(torch.device("cuda" if torch.cuda.is_available() else "cpu")):
        print("warning: no native bf16 on this device: precision=bf16 falls back to fp32\n")
    ratio = args.precision[0] == "fp32" and len(args.precision) > 1
    print("| env | model | threads | precision | width | batch | s / update | collect env steps/s | s / eval | "
          "full budget (updates, env steps) | projected hours |" + (" s/update vs fp32 |" if ratio else ""))
    print("|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if ratio else ""))
    for env in args.envs:
        for model in args.models:
            for threads in args.threads:
                rows = measure(env, model, args.updates, [f"num_threads={threads}", *args.extra], args.precision)
                for r in rows:
                    vs = f" {r['sec_per_update'] / rows[0]['sec_per_update']:.2f} |" if ratio else ""
                    print(f"| {r['env']} | {r['model']} | {threads} | {r['precision']} | {r['width']} | "
                          f"{r['batch']} | {r['sec_per_update']:.3f} | {r['collect_steps_per_s']:.0f} | "
                          f"{r['sec_per_eval']:.1f} | {r['total_updates']:,}, {r['total_env_steps']:,} | "
                          f"{r['hours']:.1f} |{vs}", flush=True)


if __name__ == "__main__":
    main()
