"""The SHM paper's pomdp-baselines sweeps (Le et al., ICLR 2025), locally or on SLURM.

    python -m launchers.paper meta --dry-run                 # print the command and its 140 jobs
    python -m launchers.paper meta --launcher slurm --background
    python -m launchers.paper credit --launcher local --max-parallel 2 --models shm,gru --seeds 1
    python -m launchers.paper meta --envs wind --models shm -- experiment=reference_sizes logger=wandb

Sweeps (every env x model x seed, one Hydra multirun = one SLURM job array):
  meta    task=meta: wind, wind_10_190, point_robot, point_robot_10_190 (50/150 and 10/190
          train/eval task splits) x 7 memories x 5 seeds = 140 jobs
  credit  task=credit: visual_match, visual_match_500, key_to_door, key_to_door_500 (distractor
          phase 250 and 500 steps) x 7 memories x 3 seeds = 84 jobs
Memories: shm, gru, fwp, gpt2, s6, mlstm, ffm. Extra overrides after the options (or after
`--`) go to every job. The code is frozen into <sweep dir>/code first (see launchers/sweep.py);
running the same command with --sweep-dir <existing sweep> continues that sweep.
Plot it with `python -m src.plot <sweep dir>`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from launchers.sweep import PROJECT_ROOT, add_launch_args, default_sweep_dir, launch, run_cli

MODELS = ["shm", "gru", "fwp", "gpt2", "s6", "mlstm", "ffm"]
SWEEPS: Dict[str, Dict] = {
    "meta": {"task": "meta", "envs": ["wind", "wind_10_190", "point_robot", "point_robot_10_190"], "seeds": 5},
    "credit": {"task": "credit", "envs": ["visual_match", "visual_match_500", "key_to_door", "key_to_door_500"],
               "seeds": 3},
}


def sweep_overrides(sweep: str, models: Sequence[str] = MODELS, envs: Optional[Sequence[str]] = None,
                    seeds: Optional[Sequence[int]] = None, extra: Sequence[str] = ()) -> List[str]:
    """The multirun overrides of a paper sweep. Seeds vary slowest, so a partly finished sweep
    already has every env x model with the first seeds."""
    spec = SWEEPS[sweep]
    envs = list(envs or spec["envs"])
    seeds = list(range(spec["seeds"])) if seeds is None else list(seeds)
    if not (envs and models and seeds):
        raise ValueError("empty sweep: give at least one env, model and seed")
    return [f"seed={','.join(map(str, seeds))}", f"task={spec['task']}", f"env={','.join(envs)}",
            f"model={','.join(models)}", *extra]


def missing_configs(overrides: Sequence[str], conf: Path = PROJECT_ROOT / "conf") -> List[str]:
    """Config-group options named by the overrides that conf/ does not have (yet)."""
    missing = []
    for ov in overrides:
        key, _, values = ov.partition("=")
        if key in ("task", "env", "model", "algo", "logger", "experiment"):
            missing += [f"{key}/{v}.yaml" for v in values.split(",") if not (conf / key / f"{v}.yaml").exists()]
    return missing


def _csv(s: str) -> List[str]:
    return [x for x in s.split(",") if x]


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launchers.paper", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", choices=sorted(SWEEPS))
    add_launch_args(p)
    p.add_argument("--models", type=_csv, default=MODELS, help=f"comma list (default: {','.join(MODELS)})")
    p.add_argument("--envs", type=_csv, default=None, help="comma list (default: the sweep's four envs)")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default: meta 5, credit 3)")
    p.add_argument("--seed-list", type=lambda s: [int(x) for x in _csv(s)], default=None,
                   help="explicit seeds, e.g. 3,4 (instead of --seeds)")
    p.add_argument("extra", nargs="*", help="more overrides for every job, e.g. experiment=reference_sizes")
    a = p.parse_intermixed_args(argv)
    seeds = a.seed_list if a.seed_list is not None else (None if a.seeds is None else list(range(a.seeds)))

    def go() -> int:
        overrides = sweep_overrides(a.sweep, a.models, a.envs, seeds, a.extra)
        missing = missing_configs(overrides)
        if missing:
            msg = "conf/ has no " + ", ".join(missing) + ": these jobs would fail to compose"
            if not a.dry_run:
                raise ValueError(msg + " (add the configs, or choose --envs/--models that exist)")
            print(f"warning: {msg}", file=sys.stderr)
        sweep_dir = a.sweep_dir or default_sweep_dir(f"paper-{a.sweep}")
        return launch(overrides, sweep_dir, a.launcher, max_parallel=a.max_parallel,
                      snapshot=not a.no_snapshot, dry_run=a.dry_run, background=a.background)

    return run_cli("launchers.paper", go)


if __name__ == "__main__":
    sys.exit(main())
