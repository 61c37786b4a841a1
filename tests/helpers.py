"""Shared helpers for tests that compose configs or run tiny trainings."""
import csv

from src.config import CONF_DIR as CONF
from src.config import compose_config as compose_cfg  # noqa: F401
from src.config import register_resolvers

register_resolvers()  # for tests that compose with Hydra's API directly

TINY = ["experiment=smoke", "logger=none", "progress_bar=false", "train.num_warmup_rollouts=2",
        "train.rollouts_per_iter=2", "train.updates_per_iter=2", "train.batch_size=2", "eval.interval=2",
        "env.num_train_tasks=3", "env.num_eval_tasks=3", "model.width=8"]


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def read_csv(path):
    """A run's progress.csv (or any CSV) as a list of row dicts."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
