"""A run directory's guards: one process at a time, and nothing written before a start is accepted.

* ``RunLock``: an exclusive ``flock`` on ``<run dir>/.lock`` for the life of the process. The OS
  releases it when the holder dies (SIGKILL, OOM, a preempted SLURM job), so a dead holder never
  blocks; a live one makes a second process stop at once with the holder's PID.
* ``write_run_files``: ``.hydra/`` (config, overrides, Hydra's own config) and ``git.txt`` are
  written by the run itself once its start is accepted (Hydra's own ``.hydra`` output is off), so
  a refused start never replaces the files of the run that lives in that directory.
* ``check_group_options``: ``model=shmm`` and friends are refused before Hydra creates anything,
  with the valid options and a "did you mean".
"""
from __future__ import annotations

import difflib
import fcntl
import os
import subprocess
import time
from pathlib import Path
from typing import List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from src.config import CONF_DIR, ConfigError, select_or_none

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class RunLock:
    """Exclusive lock on a run directory, held until ``release()`` or the process ends."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(f"run directory {self.path.parent} is in use by process {holder} (it holds "
                              f"{self.path}); wait for that run to end or stop it, or choose another "
                              f"hydra.run.dir / paths.output_root") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=10).stdout.rstrip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_info() -> str:
    commit = _git("rev-parse", "HEAD") or "unknown (not a git checkout)"
    status = _git("status", "--porcelain", "--untracked-files=no")
    return f"commit: {commit}\ndirty: {bool(status)}\n{status}\n"


def write_run_files(run_dir: Path, cfg: DictConfig, hydra_cfg, resumed: bool) -> List[str]:
    """A new run: ``.hydra/{config,overrides,hydra}.yaml`` and ``git.txt``. A resumed run keeps
    its own ``.hydra`` (but for a changed budget) and gets a line in ``git.txt`` with the code that
    continued it. Returns the budget changes ("train.num_iters 500 -> 800")."""
    run_dir = Path(run_dir)
    if resumed:
        changed = record_budget(run_dir, cfg)
        with open(run_dir / "git.txt", "a") as f:
            commit = git_info().splitlines()[0].split(":", 1)[1].strip()
            f.write(f"resumed {time.strftime('%Y-%m-%d %H:%M:%S')} with commit {commit}"
                    + "".join(f"; {c}" for c in changed) + "\n")
        return changed
    out = run_dir / ".hydra"
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (out / "overrides.yaml").write_text(OmegaConf.to_yaml(list(hydra_cfg.overrides.task)))
    (out / "hydra.yaml").write_text(OmegaConf.to_yaml({"hydra": hydra_cfg}))
    (run_dir / "git.txt").write_text(git_info())
    return []


def record_budget(run_dir: Path, cfg: DictConfig) -> List[str]:
    """A resume that changed the run's budget (``resume=<dir> train.num_iters=800``) or PPO's
    learning-rate schedule writes it into ``.hydra/config.yaml`` (atomically), so later resumes and
    src.evaluate see the run as it now is. Returns "key old -> new" for each change."""
    from src.config import resumable_keys
    path = run_dir / ".hydra" / "config.yaml"
    saved = OmegaConf.load(path)
    changed = []
    for key in sorted(resumable_keys(saved)):  # train.env_steps before a num_iters derived from it
        old, new = select_or_none(saved, key), select_or_none(cfg, key)
        if new is not None and new != old:
            changed.append(f"{key} {old} -> {new}")
            OmegaConf.update(saved, key, new, merge=False)
    if changed:
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(OmegaConf.to_yaml(saved))
        os.replace(tmp, path)
    return changed



def saved_choices(run_dir: Path) -> dict:
    """The config-group choices a run was started with ({} for runs without .hydra/hydra.yaml)."""
    path = Path(run_dir) / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return {}
    saved = OmegaConf.load(path)
    choices = OmegaConf.select(saved, "hydra.runtime.choices", default=None)
    return dict(OmegaConf.to_container(choices)) if choices is not None else {}


GROUPS = ("task", "env", "model", "algo", "logger", "experiment")
_SWEEP_SYNTAX = ("(", "[", "{", "$")  # choice(...), range(...), glob(...), interpolations: Hydra checks those


def check_group_options(argv: Sequence[str], conf: Path = CONF_DIR) -> List[str]:
    """One message per ``group=option`` on the command line whose option does not exist."""
    problems = []
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key not in GROUPS or any(c in value for c in _SWEEP_SYNTAX) or value in ("", "null"):
            continue
        valid = sorted(p.stem for p in (conf / key).glob("*.yaml"))
        for option in value.split(","):
            if option not in valid:
                close = difflib.get_close_matches(option, valid, n=1)
                hint = f"did you mean {key}={close[0]}? " if close else ""
                problems.append(f"unknown {key} {option!r}: {hint}valid {key} options: {', '.join(valid)}")
    return problems
