"""Train a recurrent actor-critic: ``python -m src.train task=meta env=wind model=shm``.

Every hyperparameter lives in conf/ (Hydra). The run directory (Hydra's output dir) receives
.hydra/ (resolved config), git.txt, progress.csv, tb/, wandb/ and checkpoints/last.pt;
``resume=<run dir>`` continues a run, and a run whose directory already holds a checkpoint
(a requeued SLURM job) resumes from it by itself.
"""
from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from src.config import (CONF_DIR, GROUP_KEYS, ConfigError, check_added_keys, check_precision, config_differences,
                        load_resume_config, register_resolvers, unquoted, upgrade_saved_config, validate)
from src.rundir import RunLock, check_group_options, saved_choices, write_run_files

log = logging.getLogger("memrl")
register_resolvers()
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def run(cfg: DictConfig) -> dict:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    writable_error = check_writable(run_dir)
    if writable_error:
        raise ConfigError(f"cannot write to the run directory {run_dir} ({writable_error}); set "
                          f"paths.output_root or hydra.run.dir to a writable location")
    lock = RunLock(run_dir).acquire()  # a second process on this dir stops here
    try:
        checkpoint = run_dir / "checkpoints" / "last.pt"
        if cfg.resume:
            if Path(cfg.resume).resolve() != run_dir.resolve():
                raise ConfigError(f"resume={cfg.resume} continues the run in that directory, but the run "
                                  f"directory was set to {run_dir} (hydra.run.dir): drop hydra.run.dir")
            cfg = load_resume_config(Path(cfg.resume), cfg, hc.overrides.task, dict(hc.runtime.choices))
            if not checkpoint.exists():
                raise ConfigError(f"resume={cfg.resume}: no checkpoints/last.pt in it (the run stopped "
                                  f"before its first evaluation); start a new run instead")
        else:
            check_added_keys(cfg, hc.overrides.task)
        validate_for_algo(cfg)  # the values themselves first, then whether this directory may take them
        if not cfg.resume and checkpoint.exists():  # a requeued job continues its own run only
            check_same_run(run_dir, cfg)
        resumed = checkpoint.exists()
        if resumed and cfg.algo.name == "ppo":  # a new lr schedule must keep the rates already used
            from src.ppo_loop import check_resume_schedule
            check_resume_schedule(checkpoint, cfg)
        budget_changes = write_run_files(run_dir, cfg, hc, resumed)
        log.info("run directory: %s", run_dir)
        for change in budget_changes:
            log.info("changed on resume: %s (written to .hydra/config.yaml)", change)
        if cfg.algo.name == "ppo":  # recurrent PPO (task=popgym)
            from src.ppo_loop import PPOTrainer
            return PPOTrainer(cfg, run_dir).run(cfg.logger, resume=resumed)
        from src.loop import Trainer  # heavy imports (torch) only once the config is known
        trainer = Trainer(cfg, run_dir)
        return trainer.run(cfg.logger, resume=resumed)
    finally:
        lock.release()


def validate_for_algo(cfg: DictConfig) -> None:
    if cfg.algo.name == "ppo":
        from src.ppo_loop import validate_ppo
        validate_ppo(cfg)
        check_precision(cfg)
    else:
        validate(cfg)


def check_same_run(run_dir: Path, cfg: DictConfig) -> None:
    """A directory holding a run is only continued by that run's own config (before anything is
    written; the checkpoint's copy of the config is checked again when it loads)."""
    saved_path = run_dir / ".hydra" / "config.yaml"
    if not saved_path.is_file():
        return
    saved = OmegaConf.to_container(upgrade_saved_config(OmegaConf.load(saved_path)), resolve=True)
    diffs = config_differences(saved, OmegaConf.to_container(cfg, resolve=True))
    if diffs:
        raise ConfigError(f"{run_dir} already holds a run with a different config:\n  " + "\n  ".join(diffs)
                          + f"\nuse another output directory, or continue it with resume={run_dir}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig):
    from src.checkpoint import CheckpointError, CheckpointWriteError
    from src.loop import NonFiniteError, TrainingInterrupted
    try:
        metrics = run(cfg)
    except TrainingInterrupted as e:
        log.warning("%s", e)
        sys.exit(e.exit_code)
    except CheckpointWriteError as e:  # disk full / unwritable: the previous checkpoint is intact
        log.error("%s", e)
        print(f"memrl: error: {e}", file=sys.stderr)
        sys.exit(EXIT_IO)
    except ConfigError as e:  # refused before the run started: stderr only, the run dir is untouched
        print(f"memrl: error: {e}", file=sys.stderr)
        sys.exit(2)
    except (CheckpointError, ValueError, NonFiniteError) as e:
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


EXIT_IO = 74  # sysexits' EX_IOERR: a checkpoint could not be written (input errors exit 2)


# Hydra's command-line flags that take the next argument as their value (``--cfg job -p train``).
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun"}
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_/.~+:-]*")  # what Hydra's grammar takes unquoted in a path


def overrides_in(argv) -> list:
    """The ``key=value`` overrides of a command line, without Hydra's flags and their values."""
    overrides, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _FLAGS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides


def quote_resume_path(argv) -> list:
    """``resume=<dir>`` with a path Hydra cannot parse unquoted (sweep job dirs are named
    ``..._experiment=paper``) is quoted for it, so the path can be pasted as it is."""
    out = []
    for arg in argv:
        if arg.startswith("resume=") and not _PLAIN_PATH.fullmatch(arg[7:]) and unquoted(arg[7:]) == arg[7:]:
            quote = "'" if "'" not in arg[7:] else '"'
            arg = f"resume={quote}{arg[7:]}{quote}"
        out.append(arg)
    return out


def with_run_choices(argv) -> list:
    """``resume=<dir>``: the run's own config-group choices (task=popgym, model=shm, ...) join the
    command line where it names none, so it composes as the run did and an override of a key only
    those groups have (``train.env_steps`` of task=popgym, to extend the run) is accepted. Choices
    whose config no longer exists are left out (the run's saved config is what resumes anyway)."""
    resume = next((unquoted(a[7:]) for a in argv if a.startswith("resume=") and a != "resume=null"), None)
    if resume is None or any(a in ("-m", "--multirun") for a in argv):
        return list(argv)
    given = {a.split("=", 1)[0].lstrip("+~") for a in overrides_in(argv)}
    extra = []
    for key, name in saved_choices(Path(resume)).items():
        group = key.split("@", 1)[0]
        if (key in GROUP_KEYS or key.startswith("model@")) and name is not None and key not in given \
                and (CONF_DIR / group / f"{name}.yaml").is_file():
            extra.append(f"{key}={name}")
    return list(argv) + extra


def precheck(argv) -> None:
    """What Hydra would only find after creating a run directory (or with a stack trace) is
    checked first: unknown group options, a resume dir that does not exist, an unwritable output
    location. One line each, exit code 2, nothing created."""
    problems = check_group_options(overrides_in(argv))
    target, target_key = "outputs", "paths.output_root"
    for arg in argv:
        for key in ("paths.output_root", "hydra.run.dir", "hydra.sweep.dir"):
            if arg.startswith(key + "="):
                target, target_key = unquoted(arg[len(key) + 1:]), key  # Hydra strips the quotes too
        if arg.startswith("resume=") and arg != "resume=null" and not Path(unquoted(arg[7:])).is_dir():
            problems.append(f"{arg}: no such run directory")
    if "${" not in target:
        writable_error = check_writable(Path(target))
        if writable_error:
            problems.append(f"cannot write run directories under {target} ({writable_error}); "
                            f"set {target_key}=<a writable directory>")
    if not problems:
        problems = composition_problems(argv)
    if problems:
        for p in problems:
            print(f"memrl: error: {p}", file=sys.stderr)
        sys.exit(2)


def composition_problems(argv) -> list:
    """Compose the config once as Hydra will (single runs): an override of a key that does not exist
    (``train.batchsize=4``) or that cannot parse is one line and exit 2, not Hydra's exit 1."""
    if any(a in ("-m", "--multirun", "--help", "-h", "--hydra-help") or a.startswith("--info") for a in argv):
        return []
    overrides = [a for a in overrides_in(argv) if not a.lstrip("+~").startswith("hydra")]
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException
    from src.config import compose_config
    try:
        compose_config(overrides)
    except (HydraException, OmegaConfBaseException) as e:
        first = str(e).strip().splitlines()
        hint = next((line for line in first[1:] if line.startswith("To append")), "")
        return [f"{first[0] if first else type(e).__name__} {hint}".strip()]
    return []


if __name__ == "__main__":
    sys.argv[1:] = with_run_choices(quote_resume_path(sys.argv[1:]))
    precheck(sys.argv[1:])
    main()
