"""Shared helpers for tests that compose configs or run tiny trainings."""
from pathlib import Path

from hydra import compose, initialize_config_dir

from src.config import register_resolvers

CONF = Path(__file__).resolve().parents[1] / "conf"
register_resolvers()

TINY = ["experiment=smoke", "logger=none", "progress_bar=false", "train.num_warmup_rollouts=2",
        "train.rollouts_per_iter=2", "train.updates_per_iter=2", "train.batch_size=2", "eval.interval=2",
        "env.num_train_tasks=3", "env.num_eval_tasks=3", "model.width=8"]


def compose_cfg(overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))
