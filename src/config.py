"""Config helpers: OmegaConf resolvers used by conf/train.yaml, validation, resume handling."""
from __future__ import annotations

import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict


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


def select_or_none(cfg: DictConfig, key: str):
    """The value at dotted ``key``, None where it is missing (???) or cannot be resolved here."""
    try:
        return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    except Exception:  # noqa: BLE001 - an interpolation that cannot resolve outside its run
        return None


def unquoted(value: str) -> str:
    """A command-line value without one pair of enclosing quotes (Hydra strips them too)."""
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value


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


def _integer(cfg: DictConfig, key: str, minimum: int) -> None:
    """``key`` must hold an int >= ``minimum`` (1.5 or "abc" is an error, never truncated)."""
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, got {value!r} ({type(value).__name__}): "
                          f"set {key}=<integer>")
    if value < minimum:
        bound = "positive" if minimum == 1 else f">= {minimum}"
        raise ConfigError(f"{key} must be {bound}, got {value}")


# Integer keys and their smallest valid value (keys an env config does not have are skipped).
INTEGER_KEYS = {
    "seed": 0, "num_threads": 1, "model.width": 1,
    "train.num_warmup_rollouts": 0, "train.num_iters": 1, "train.rollouts_per_iter": 1,
    "train.updates_per_iter": 1, "train.batch_size": 1, "train.buffer_size": 1, "train.warmup_updates": 0,
    "train.env_steps": 1, "eval.interval": 1, "eval.num_episodes": 1,
    "env.num_tasks": 1, "env.num_train_tasks": 1, "env.num_eval_tasks": 1, "env.episodes_per_task": 1,
    "env.task_seed": 0,
}


def validate(cfg: DictConfig) -> None:
    """Cheap sanity checks with messages that say how to fix the input."""
    if cfg.algo.name != "ppo" and OmegaConf.is_missing(cfg.train, "num_iters"):  # task=popgym: env_steps, not iterations
        raise ConfigError(f"algo={cfg.algo.name} with task={cfg.task.name}: that task's schedule is PPO's "
                          f"(train.env_steps, num_envs, rollout_len), not an off-policy one: use algo=ppo, or "
                          f"set train.num_iters and eval.num_episodes, or pick an off-policy task (task=meta|credit|pomdp)")
    for key, minimum in INTEGER_KEYS.items():
        if OmegaConf.select(cfg, key) is not None:
            _integer(cfg, key, minimum)
    if isinstance(cfg.agent.actor_memory, str):
        raise ConfigError(f"agent.actor_memory={cfg.agent.actor_memory}: the actor's memory is a choice of "
                          f"the model group, spelled model@agent.actor_memory={cfg.agent.actor_memory}")
    if cfg.agent.init not in ("reference", "layer"):
        raise ConfigError(f"agent.init={cfg.agent.init}: valid: reference (the released code's orthogonal "
                          f"weights, zero biases) | layer (each memory layer's own init)")
    best_by = OmegaConf.select(cfg, "eval.best_by", default="success")
    if best_by not in ("success", "return"):
        raise ConfigError(f"eval.best_by={best_by}: valid: success (eval/success_eval) | return "
                          f"(eval/return_eval, for tasks without a success criterion)")
    check_ranges(cfg)
    check_precision(cfg)
    tr, ev = cfg.train, cfg.env
    if not float(tr.warmup_action_range) > 0:
        raise ConfigError(f"train.warmup_action_range must be > 0 (warm-up actions are uniform on [-r, r]), "
                          f"got {tr.warmup_action_range}")
    if "num_tasks" in ev and ev.num_train_tasks + ev.num_eval_tasks > ev.num_tasks:
        raise ConfigError(f"train/eval split {ev.num_train_tasks}+{ev.num_eval_tasks} is larger than "
                          f"env.num_tasks={ev.num_tasks}: lower env.num_train_tasks/num_eval_tasks")


def check_precision(cfg: DictConfig) -> None:
    """``precision`` is fp32, bf16 or auto; bf16 is implemented for the replay algorithms (SAC,
    SAC-Discrete, TD3); auto is bf16 for them where the device prefers it, float32 elsewhere."""
    from torchkit.precision import PRECISIONS
    precision = OmegaConf.select(cfg, "precision", default="fp32")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not supported: use precision=fp32 (float32), "
                          f"precision=bf16 (bfloat16 mixed precision) or precision=auto (bf16 on GPUs and "
                          f"AMX CPUs)")
    algo = OmegaConf.select(cfg, "algo.name")
    if precision == "bf16" and algo not in ("sac", "sacd", "td3"):
        raise ConfigError(f"precision={precision} is implemented for algo=sac, sacd and td3; algo={algo} "
                          f"trains in float32: use precision=fp32")


# Real-valued keys: (lowest, highest, whether each bound is included); checked where the config has them.
RANGES = {
    "algo.gamma": (0.0, 1.0, False, True), "algo.tau": (0.0, 1.0, False, True),
    "algo.lr": (0.0, None, False, None), "algo.alpha_lr": (0.0, None, False, None),
    "algo.init_alpha": (0.0, None, False, None), "algo.grad_clip": (0.0, None, False, None),
    "algo.target_entropy_ratio": (0.0, 1.0, False, True), "train.warmup_action_range": (0.0, 1.0, False, True),
    "train.updates_per_env_step": (0.0, None, False, None), "train.updates_per_step": (0.0, None, False, None),
}


def check_ranges(cfg: DictConfig) -> None:
    """Each real-valued key is a number in its range (algo.grad_clip may also be null: no clipping)."""
    for key, (lo, hi, lo_in, hi_in) in RANGES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and (value > lo or (lo_in and value == lo)) and (hi is None or value < hi or (hi_in and value == hi))
        if not ok:
            bound = ("(" if not lo_in else "[") + f"{lo:g}, " + ("∞)" if hi is None else f"{hi:g}" + ("]" if hi_in else ")"))
            extra = " or null (no clipping)" if key == "algo.grad_clip" else ""
            raise ConfigError(f"{key}={value!r} is out of range: it must be a number in {bound}{extra}")


# Top-level config nodes where a `+key=value` override could only add a key that memrl never reads.
OWN_NODES = ("train", "eval", "algo", "agent", "paths", "task")


def check_added_keys(cfg: DictConfig, overrides) -> None:
    """``+train.batchsize=4`` adds a key nobody reads (a typo): refuse it, naming the nearest key.
    Additions under env.kwargs, model.memory and hydra are left to their consumers."""
    import difflib
    for ov in overrides:
        if not ov.startswith("+") or ov.startswith("++"):
            continue
        key = ov[1:].split("=", 1)[0]
        parent, _, leaf = key.rpartition(".")
        if key.split(".")[0] not in OWN_NODES and parent != "":
            continue
        node = OmegaConf.select(cfg, parent) if parent else cfg
        known = [k for k in node if k != leaf] if isinstance(node, DictConfig) else []
        close = difflib.get_close_matches(leaf, known, n=1)
        hint = f"did you mean {(parent + '.') if parent else ''}{close[0]}? " if close else ""
        raise ConfigError(f"{ov}: {key} is not a key memrl reads ({hint}the keys of "
                          f"{parent or 'the top level'}: {', '.join(sorted(map(str, known)))})")


# Keys that may differ between a run and its resumption without changing the experiment.
RUNTIME_KEYS = {"resume", "progress_bar", "device", "num_threads"}


def best_by_or_default(best_by, task_name, env_name) -> str:
    """A run's eval.best_by; for configs saved before that key, what its task and env configs set
    today (conf/task/<task>.yaml, then conf/env/<env>.yaml: task=pomdp and the MuJoCo meta tasks
    score by return), else success."""
    if best_by:
        return str(best_by)
    value = "success"
    for path in (CONF_DIR / "task" / f"{task_name}.yaml", CONF_DIR / "env" / f"{env_name}.yaml"):
        if path.is_file():
            value = OmegaConf.select(OmegaConf.load(path), "eval.best_by", default=None) or value
    return value


def upgrade_saved_config(saved: DictConfig) -> DictConfig:
    """A run's saved config in today's keys, so that runs started before a rename still resume:
    agent.orthogonal_init (bool) -> agent.init (reference | layer); agent.actor_memory=<model name>
    -> that model's config (model@agent.actor_memory); eval.num_episodes, model.actor_overrides and
    ppo_agent.time_embedding / ppo_agent.layout / algo.lr_schedule, lr_decay_start (PPO) where they
    were absent (null, {}, null, memrl, constant, 0);
    eval.best_by (the task's)."""
    saved = saved.copy()
    agent, model = saved.agent, saved.model
    if "orthogonal_init" in agent:
        agent.init = "reference" if agent.orthogonal_init else "layer"
        del agent["orthogonal_init"]
    if "actor_memory" not in agent:  # runs from before the actor's memory could differ
        agent.actor_memory = None
    if isinstance(agent.actor_memory, str):
        with open_dict(agent):
            agent.actor_memory = OmegaConf.load(CONF_DIR / "model" / f"{agent.actor_memory}.yaml")
    for node in (model, agent.actor_memory):
        if node is not None and "actor_overrides" not in node:
            node.actor_overrides = {}
    if "num_episodes" not in saved.eval:
        saved.eval.num_episodes = None
    if "best_by" not in saved.eval:  # runs from before eval.best_by: what their task/env configs set now
        saved.eval.best_by = best_by_or_default(None, saved.task.name, saved.env.name)
    for key in ("seq_len", "updates_per_step"):  # runs from before windows / step-following updates
        if key not in saved.train:
            saved.train[key] = None
    if "precision" not in saved:  # runs from before mixed precision trained in float32
        saved.precision = "fp32"
    if "ppo_agent" in saved and "time_embedding" not in saved.ppo_agent:  # PPO runs from before the time code
        saved.ppo_agent.time_embedding = None
    if "ppo_agent" in saved and "layout" not in saved.ppo_agent:  # PPO runs from before POPGym's layout
        saved.ppo_agent.layout = "memrl"
    if saved.algo.get("name") == "ppo":  # PPO runs from before the learning-rate schedule
        saved.algo.setdefault("lr_schedule", "constant")
        saved.algo.setdefault("lr_decay_start", 0.0)
    return saved


def load_resume_config(run_dir: Path, cfg: DictConfig, overrides, choices=None) -> DictConfig:
    """The saved config of ``run_dir``; command-line overrides must agree with it, except the budget
    and PPO's learning-rate schedule (resumable_keys), which they may change. ``choices``: the
    config-group choices of this command (Hydra's runtime.choices), compared with the run's own
    (``experiment=paper`` on a run started without it is a conflict, not silently ignored)."""
    from src.rundir import saved_choices
    saved_path = Path(run_dir) / ".hydra" / "config.yaml"
    if not Path(run_dir).is_dir():
        raise ConfigError(f"resume={run_dir}: no such run directory")
    if not saved_path.exists():
        hint = (f"; it is a sweep dir: continue its runs with python -m launchers.sweep --continue {run_dir}, "
                f"or resume one of its job dirs" if (Path(run_dir) / "launch_command.txt").exists() else "")
        raise ConfigError(f"resume={run_dir}: {saved_path} is missing, so this is not a memrl run directory{hint}")
    saved = upgrade_saved_config(OmegaConf.load(saved_path))
    old_choices = saved_choices(run_dir)
    conflicts = []
    for ov in overrides:
        key = ov.split("=", 1)[0].lstrip("+~")
        if key.split(".")[0] in RUNTIME_KEYS or key.startswith("hydra"):
            continue
        if key in GROUP_KEYS or "@" in key:  # a config-group choice, e.g. experiment=paper, model@agent.actor_memory=gru
            new, label = (choices or {}).get(key), key
            if old_choices:
                old = old_choices.get(key)
            elif key == "experiment":
                old = "(unknown: the run predates saved choices)"
            else:  # runs without .hydra/hydra.yaml: compare the chosen config's name
                label = (key.split("@", 1)[1] if "@" in key else key) + ".name"
                new, old = OmegaConf.select(cfg, label), OmegaConf.select(saved, label)
            if new != old:
                conflicts.append(f"{label}: run has {old!r}, command line asks {new!r}")
            continue
        new, old = OmegaConf.select(cfg, key), OmegaConf.select(saved, key)
        if key in resumable_keys(saved):  # a longer run, a new lr ahead: taken, written to the run's config
            OmegaConf.update(saved, key, new, merge=False)
        elif new != old:
            conflicts.append(f"{key}: run has {old!r}, command line asks {new!r}")
    if conflicts:
        raise ConfigError(f"resume={run_dir} holds a different config:\n  " + "\n  ".join(conflicts)
                          + "\nresume with no other overrides, or start a new run")
    for key in RUNTIME_KEYS:
        if key in cfg:
            saved[key] = cfg[key]
    saved.resume = str(run_dir)
    return saved


def config_differences(saved: dict, current: dict, saved_is: str = "run has", ignore=()) -> list:
    """Lines naming every top-level key (runtime keys aside) whose value differs; ``ignore``: dotted
    keys left out of the comparison (resumable_keys when a checkpoint is loaded)."""
    saved, current = _without(saved, ignore), _without(current, ignore)
    return [f"{k}: {saved_is} {saved.get(k)!r}, now {current.get(k)!r}"
            for k in sorted(set(saved) | set(current))
            if k not in RUNTIME_KEYS and saved.get(k) != current.get(k)]


def _without(cfg: dict, dotted_keys) -> dict:
    """A shallow copy of a resolved config without ``dotted_keys`` (two levels: "train.num_iters")."""
    out = dict(cfg)
    for key in dotted_keys:
        group, _, leaf = key.partition(".")
        if isinstance(out.get(group), dict) and leaf in out[group]:
            out[group] = {k: v for k, v in out[group].items() if k != leaf}
    return out


# The run's length: a resumed run may change it (resume=<dir> train.num_iters=800 extends a finished
# run). Only PPO's linear lr schedule depends on it; a budget change that would alter a rate already
# used is refused (PPOTrainer).
BUDGET_KEYS = ("train.num_iters", "train.env_steps")
# PPO's learning-rate schedule: a resume may change it for the steps not yet run (resume=<dir>
# 'algo.lr_schedule=[[0,1e-3],[15000000,1e-3],[16000000,1e-4]]' train.env_steps=20000000 lowers the
# rate of a run that ran 15M at 1e-3); PPOTrainer refuses a schedule that changes a rate already used.
LR_SCHEDULE_KEYS = ("algo.lr", "algo.lr_schedule", "algo.lr_decay_start")


def resumable_keys(cfg) -> tuple:
    """The keys a resume may change (written to the run's config): the budget, and for PPO runs
    (``cfg``: a config or its dict) the learning-rate schedule."""
    algo = cfg.get("algo") or {}
    return BUDGET_KEYS + (LR_SCHEDULE_KEYS if algo.get("name") == "ppo" else ())


GROUP_KEYS = ("task", "env", "model", "algo", "logger", "experiment")


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # for composing outside a Hydra app


def compose_config(overrides=()) -> DictConfig:
    """The training config for these overrides, composed outside a Hydra app (tests, benchmarks)."""
    from hydra import compose, initialize_config_dir
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))
