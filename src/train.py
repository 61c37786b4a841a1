"""Train a recurrent actor-critic: ``python -m src.train task=meta env=wind model=shm``.

Every hyperparameter lives in conf/ (Hydra). The run directory (Hydra's output dir) receives
.hydra/ (resolved config), git.txt, progress.csv, tb/, wandb/ and checkpoints/last.pt;
``resume=<run dir>`` continues a run, and a run whose directory already holds a checkpoint
(a requeued SLURM job) resumes from it by itself.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from src.config import ConfigError, load_resume_config, register_resolvers, validate

log = logging.getLogger("memrl")
register_resolvers()
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def write_git_info(run_dir: Path) -> None:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "HEAD") or "unknown (not a git checkout)"
    status = git("status", "--porcelain", "--untracked-files=no")
    (run_dir / "git.txt").write_text(f"commit: {commit}\ndirty: {bool(status)}\n{status}\n")


def run(cfg: DictConfig) -> dict:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    resume = False
    if cfg.resume:
        cfg = load_resume_config(Path(cfg.resume), cfg, hc.overrides.task)
        if not (run_dir / "checkpoints" / "last.pt").exists():
            raise ConfigError(f"resume={cfg.resume}: no checkpoints/last.pt in it (the run stopped "
                              f"before its first evaluation); start a new run instead")
        resume = True
    elif (run_dir / "checkpoints" / "last.pt").exists():
        resume = True  # same output dir with a checkpoint: a requeued job
    if cfg.algo.name == "ppo":
        from src.ppo_loop import validate_ppo
        validate_ppo(cfg)
    else:
        validate(cfg)
    writable_error = check_writable(run_dir)
    if writable_error:
        raise ConfigError(f"cannot write to the run directory {run_dir} ({writable_error}); set "
                          f"paths.output_root or hydra.run.dir to a writable location")
    write_git_info(run_dir)
    log.info("run directory: %s", run_dir)
    if cfg.algo.name == "ppo":  # recurrent PPO (task=popgym)
        from src.ppo_loop import PPOTrainer
        return PPOTrainer(cfg, run_dir).run(cfg.logger, resume=resume)
    from src.loop import Trainer  # heavy imports (torch) only once the config is known
    trainer = Trainer(cfg, run_dir)
    return trainer.run(cfg.logger, resume=resume)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig):
    from src.checkpoint import CheckpointError
    from src.loop import NonFiniteError, TrainingInterrupted
    try:
        metrics = run(cfg)
    except TrainingInterrupted as e:
        log.warning("%s", e)
        sys.exit(e.exit_code)
    except (ConfigError, CheckpointError, ValueError, NonFiniteError) as e:
        log.error("%s", e)
        print(f"memrl: error: {e}", file=sys.stderr)
        sys.exit(2)
    return metrics.get("eval/success_eval")


def check_writable(directory: Path):
    """Create ``directory`` if needed and write a file in it; None if that works, else the reason."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".memrl_write_test_{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        return e.strerror or str(e)
    return None


def check_output_root(argv) -> None:
    """Hydra creates the run directory before any of our code runs and fails there with a stack
    trace; check the requested location first and say how to fix it."""
    target = "outputs"
    for arg in argv:
        for key in ("paths.output_root=", "hydra.run.dir=", "hydra.sweep.dir="):
            if arg.startswith(key):
                target = arg[len(key):]
    if "${" in target:
        return
    writable_error = check_writable(Path(target))
    if writable_error:
        print(f"memrl: error: cannot write run directories under {target} ({writable_error}); "
              f"set paths.output_root=<a writable directory>", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    check_output_root(sys.argv[1:])
    main()
