"""Config helpers: OmegaConf resolvers used by conf/train.yaml, validation, resume handling."""
from __future__ import annotations

import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    pass


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("memrl_run_dir"):
        # resume=<dir> continues in that directory (if it exists: a typo must not create one;
        # the run then fails with a clear error); otherwise the default (timestamped) one.
        OmegaConf.register_new_resolver(
            "memrl_run_dir", lambda resume, default: resume if resume and Path(resume).is_dir() else default)
    if not OmegaConf.has_resolver("memrl_local_batch"):
        # hydra.sweeper.max_batch_size: `n` jobs at a time with the submitit local launcher, no
        # batching otherwise (SLURM limits concurrency with hydra.launcher.array_parallelism).
        OmegaConf.register_new_resolver(
            "memrl_local_batch", lambda target, n: int(n) if str(target).endswith(".LocalLauncher") else None)
    if not OmegaConf.has_resolver("memrl_dir_tag"):
        OmegaConf.register_new_resolver("memrl_dir_tag", dir_tag)
    # Schedule arithmetic for the credit-assignment env configs (episode length from phase lengths,
    # 0.25 updates per env step, iterations from an env-step budget).
    if not OmegaConf.has_resolver("memrl_sum"):
        OmegaConf.register_new_resolver("memrl_sum", lambda *xs: sum(xs))
    if not OmegaConf.has_resolver("memrl_updates"):
        OmegaConf.register_new_resolver("memrl_updates", updates_per_iter)
    if not OmegaConf.has_resolver("memrl_catchup"):
        OmegaConf.register_new_resolver(
            "memrl_catchup", lambda ratio, horizon, rollouts: int(float(ratio) * int(horizon) * int(rollouts)))
    if not OmegaConf.has_resolver("memrl_iters"):
        OmegaConf.register_new_resolver("memrl_iters", iters_for_budget)


def updates_per_iter(updates_per_env_step, horizon, rollouts_per_iter) -> int:
    """ceil(ratio x T) updates per collected episode (the reference's ⌈0.25 T⌉), times the rollouts."""
    return max(1, math.ceil(float(updates_per_env_step) * int(horizon))) * int(rollouts_per_iter)


def iters_for_budget(env_steps, horizon, warmup_rollouts, rollouts_per_iter) -> int:
    """Iterations so that warm-up + iterations x rollouts x T reaches ``env_steps``."""
    episodes = math.ceil(int(env_steps) / int(horizon)) - int(warmup_rollouts)
    return max(1, math.ceil(episodes / int(rollouts_per_iter)))


def dir_tag(override_dirname: str, max_len: int = 80) -> str:
    """Suffix of a multirun job directory: "" or "_" + the job's other overrides, path-safe.

    It depends only on the job's own overrides (not on its position in the sweep), so a job that
    is requeued or relaunched into the same sweep dir finds its directory (and checkpoint) again.
    """
    if not override_dirname:
        return ""
    tag = "".join(c if c.isalnum() or c in "=,.-+_" else "-" for c in str(override_dirname))
    if len(tag) > max_len:  # keep it readable and below file-name limits, still unique
        import hashlib
        tag = tag[: max_len - 9] + "-" + hashlib.sha1(tag.encode()).hexdigest()[:8]
    return "_" + tag


def validate(cfg: DictConfig) -> None:
    """Cheap sanity checks with messages that say how to fix the input."""
    tr, ev = cfg.train, cfg.env
    for key in ("num_iters", "rollouts_per_iter", "updates_per_iter", "batch_size", "buffer_size"):
        if int(tr[key]) <= 0:
            raise ConfigError(f"train.{key} must be positive, got {tr[key]}")
    if int(tr.num_warmup_rollouts) < 0:
        raise ConfigError(f"train.num_warmup_rollouts must be >= 0, got {tr.num_warmup_rollouts}")
    if int(tr.warmup_updates) < 0:
        raise ConfigError(f"train.warmup_updates must be >= 0, got {tr.warmup_updates}")
    if not float(tr.warmup_action_range) > 0:
        raise ConfigError(f"train.warmup_action_range must be > 0 (warm-up actions are uniform on [-r, r]), "
                          f"got {tr.warmup_action_range}")
    if int(cfg.eval.interval) <= 0:
        raise ConfigError(f"eval.interval must be positive, got {cfg.eval.interval}")
    if int(cfg.model.width) <= 0:
        raise ConfigError(f"model.width must be positive, got {cfg.model.width}")
    if "num_tasks" in ev and int(ev.num_train_tasks) + int(ev.num_eval_tasks) > int(ev.num_tasks):
        raise ConfigError(f"train/eval split {ev.num_train_tasks}+{ev.num_eval_tasks} is larger than "
                          f"env.num_tasks={ev.num_tasks}: lower env.num_train_tasks/num_eval_tasks")
    if "num_episodes" in cfg.eval and int(cfg.eval.num_episodes) <= 0:
        raise ConfigError(f"eval.num_episodes must be positive, got {cfg.eval.num_episodes}")
    if int(cfg.num_threads) <= 0:
        raise ConfigError(f"num_threads must be positive, got {cfg.num_threads}")


# Keys that may differ between a run and its resumption without changing the experiment.
RUNTIME_KEYS = {"resume", "progress_bar", "device", "num_threads"}


def load_resume_config(run_dir: Path, cfg: DictConfig, overrides, choices=None) -> DictConfig:
    """The saved config of ``run_dir``; command-line overrides must agree with it. ``choices``: the
    config-group choices of this command (Hydra's runtime.choices), compared with the run's own
    (``experiment=paper`` on a run started without it is a conflict, not silently ignored)."""
    from src.rundir import saved_choices
    saved_path = Path(run_dir) / ".hydra" / "config.yaml"
    if not Path(run_dir).is_dir():
        raise ConfigError(f"resume={run_dir}: no such run directory")
    if not saved_path.exists():
        raise ConfigError(f"resume={run_dir}: {saved_path} is missing, so this is not a memrl run directory")
    saved = OmegaConf.load(saved_path)
    old_choices = saved_choices(run_dir)
    conflicts = []
    for ov in overrides:
        key = ov.split("=", 1)[0].lstrip("+~")
        if key.split(".")[0] in RUNTIME_KEYS or key.startswith("hydra"):
            continue
        if key in GROUP_KEYS:
            new = (choices or {}).get(key)
            old = old_choices.get(key) if old_choices else OmegaConf.select(saved, f"{key}.name")
            if key == "experiment" and not old_choices:
                old = "(unknown: the run predates saved choices)"
            if new != old:
                conflicts.append(f"{key}: run has {old!r}, command line asks {new!r}")
            continue
        new, old = OmegaConf.select(cfg, key), OmegaConf.select(saved, key)
        if new != old:
            conflicts.append(f"{key}: run has {old!r}, command line asks {new!r}")
    if conflicts:
        raise ConfigError(f"resume={run_dir} holds a different config:\n  " + "\n  ".join(conflicts)
                          + "\nresume with no other overrides, or start a new run")
    for key in RUNTIME_KEYS:
        if key in cfg:
            saved[key] = cfg[key]
    saved.resume = str(run_dir)
    return saved


def config_differences(saved: dict, current: dict) -> list:
    """Lines naming every top-level key (runtime keys aside) whose value differs."""
    return [f"{k}: run has {saved.get(k)!r}, now {current.get(k)!r}"
            for k in sorted(set(saved) | set(current))
            if k not in RUNTIME_KEYS and saved.get(k) != current.get(k)]


GROUP_KEYS = ("task", "env", "model", "algo", "logger", "experiment")


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_config(overrides=()) -> DictConfig:
    """The training config for these overrides, composed outside a Hydra app (tests, benchmarks)."""
    from hydra import compose, initialize_config_dir
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))
