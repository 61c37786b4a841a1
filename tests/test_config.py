"""Every env x model config composes; defaults reproduce the reference schedules."""
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.config import ConfigError, validate
from tests.helpers import compose_cfg, options


@pytest.mark.parametrize("env", options("env"))
@pytest.mark.parametrize("model", options("model"))
def test_every_env_and_model_composes(env, model):
    cfg = compose_cfg([f"env={env}", f"model={model}"])
    OmegaConf.resolve(cfg)
    validate(cfg)
    layer = instantiate(cfg.model.memory, input_size=sum(cfg.agent.embed[k] for k in ("action", "reward", "obs")))
    assert layer.output_size == cfg.model.width


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(experiment):
    cfg = compose_cfg([f"experiment={experiment}"])
    OmegaConf.resolve(cfg)
    validate(cfg)


def test_wind_defaults_are_the_reference_schedule():
    cfg = compose_cfg([])
    assert (cfg.task.name, cfg.env.name, cfg.model.name, cfg.algo.name) == ("meta", "wind", "gru", "sac")
    tr = cfg.train
    assert (tr.num_warmup_rollouts, tr.num_iters, tr.rollouts_per_iter, tr.updates_per_iter, tr.batch_size) == \
        (100, 500, 10, 500, 64)
    assert (cfg.algo.gamma, cfg.algo.tau, cfg.algo.lr, cfg.algo.target_entropy) == (0.9, 0.005, 3e-4, None)
    assert dict(cfg.agent.embed) == {"action": 8, "reward": 0, "obs": 32, "current_obs": 32}
    assert (cfg.env.num_tasks, cfg.env.num_train_tasks, cfg.env.num_eval_tasks) == (200, 50, 150)
    assert cfg.env.kwargs.goal_radius == 0.01 and cfg.env.kwargs.max_episode_steps == 100


def test_point_robot_defaults_are_the_reference_schedule():
    cfg = compose_cfg(["env=point_robot_10_190"])
    tr = cfg.train
    assert (tr.num_warmup_rollouts, tr.num_iters, tr.rollouts_per_iter, tr.updates_per_iter, tr.batch_size) == \
        (400, 200, 25, 1000, 32)
    assert (cfg.env.num_train_tasks, cfg.env.num_eval_tasks, cfg.env.episodes_per_task) == (10, 190, 2)
    assert dict(cfg.agent.embed) == {"action": 0, "reward": 8, "obs": 32, "current_obs": 32}


def test_reference_sizes_follow_the_env():
    assert compose_cfg(["experiment=reference_sizes"]).model.width == 64
    assert compose_cfg(["experiment=reference_sizes", "env=point_robot"]).model.width == 128


@pytest.mark.parametrize("override,match", [
    (["train.batch_size=0"], "train.batch_size must be positive"),
    (["env.num_train_tasks=150"], "larger than env.num_tasks"),
    (["model.width=-3"], "model.width must be positive"),
    (["eval.interval=0"], "eval.interval"),
])
def test_bad_values_are_named(override, match):
    with pytest.raises(ConfigError, match=match):
        validate(compose_cfg(override))
