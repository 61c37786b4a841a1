"""Where one gradient update's time goes: torch.profiler's table of self CPU time per op (on a GPU:
self GPU kernel time) over a few updates of the real Trainer (same agent, algorithm and replay as
training).

    python -m benchmarks.profile_update [--env wind] [--model shm] [--precision fp32|bf16]
                                        [--updates 5] [--rows 30] [--extra experiment=reference_sizes ...]

The replay is filled with random rollouts, 3 updates run unprofiled (kernel builds, caches), then
``--updates`` updates run under the profiler, sampling included as in training. Custom autograd
nodes (``_NativeSHMScan``, ``_ReLUMLP``, ...) appear by name; their "CPU total" includes the GEMMs
they call. Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import tempfile

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks import sync
from src.config import compose_config
from src.loop import Trainer


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="wind")
    ap.add_argument("--model", default="shm")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--updates", type=int, default=5)
    ap.add_argument("--rows", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--extra", nargs="*", default=["experiment=reference_sizes"])
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = compose_config([f"env={args.env}", f"model={args.model}", "logger=none", "progress_bar=false",
                          f"precision={args.precision}", *args.extra])
    trainer = Trainer(cfg, tempfile.mkdtemp(prefix="memrl_profile_"))
    tr = cfg.train
    trainer.collect(min(int(tr.batch_size), int(tr.num_warmup_rollouts)), "random")

    def update():
        trainer.algo.update(trainer._to_tensors(trainer.buffer.sample(int(tr.batch_size))))

    for _ in range(3):
        update()
    # on a GPU the CPU side only launches kernels: profile the device's kernel time as well
    gpu = trainer.device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])) as prof:
        for _ in range(args.updates):
            update()
        sync(trainer.device)
    events = prof.key_averages()
    key, unit = ("self_device_time_total", "GPU") if gpu else ("self_cpu_time_total", "CPU")
    total_ms = sum(getattr(e, key) for e in events) / 1e3
    report = (f"{args.env} {args.model} {args.precision}, {args.threads} thread(s), {' '.join(args.extra)}: "
              f"{total_ms / args.updates:.1f} ms of self {unit} time per update (profiler on)\n\n"
              + events.table(sort_by=key, row_limit=args.rows))
    print(report)
    return report


if __name__ == "__main__":
    main()
