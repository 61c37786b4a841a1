"""POMDP control and MuJoCo meta-RL end to end: tiny Trainer runs that write progress.csv, and the
config defaults (pomdp-baselines' schedules, new-tasks.md §2-3)."""
import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from src.config import validate
from src.loop import Trainer
from tests.helpers import TINY, compose_cfg, read_csv

TINY_POMDP = ["experiment=smoke", "task=pomdp", "logger=none", "progress_bar=false",
              "train.num_warmup_rollouts=2", "train.rollouts_per_iter=2", "train.updates_per_iter=2",
              "train.batch_size=2", "train.num_iters=2", "eval.interval=2", "eval.num_episodes=2",
              "model.width=8", "train.updates_per_step=null"]  # fixed updates per iteration



@pytest.mark.parametrize("env,algo", [("pendulum_v", "SAC"), ("cartpole_v", "SACDiscrete")])
def test_tiny_classic_control_run(tmp_path, env, algo):
    cfg = compose_cfg(TINY_POMDP + [f"env={env}", "env.kwargs.max_episode_steps=20"])
    trainer = Trainer(cfg, tmp_path)
    assert type(trainer.algo).__name__ == algo and trainer.obs_space.shape == (len(cfg.env.kwargs.keep),)
    assert trainer.max_episode_len == 20
    metrics = trainer.run(cfg.logger)
    rows = read_csv(tmp_path / "progress.csv")
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2]
    catch_up = 1 * 20 * 2  # one update per warm-up env step (pomdp-baselines' first catch-up)
    assert cfg.train.warmup_updates == catch_up
    assert [int(r["updates"]) for r in rows] == [catch_up, catch_up + 2, catch_up + 4]
    if env == "pendulum_v":  # never terminates: every episode is the full 20 steps
        assert [int(r["env_steps"]) for r in rows] == [40, 80, 120]
    assert "eval/success_train" not in rows[0]
    for r in rows:
        assert math.isfinite(float(r["eval/return_eval"]))
    assert all(math.isfinite(float(rows[-1][f"train/{k}"])) for k in ("qf1_loss", "qf2_loss", "policy_loss"))
    assert set(metrics) == {"eval/success_eval", "eval/return_eval"}


@pytest.mark.mujoco
def test_tiny_cheetah_vel_run(tmp_path):
    pytest.importorskip("mujoco")
    cfg = compose_cfg(TINY + ["task=meta", "env=cheetah_vel"])
    trainer = Trainer(cfg, tmp_path)
    assert trainer.max_episode_len == 400 and trainer.obs_space.shape == (18,)
    metrics = trainer.run(cfg.logger)
    rows = read_csv(tmp_path / "progress.csv")
    assert [int(r["env_steps"]) for r in rows] == [800, 1600, 2400]  # k = 2 episodes of 200 steps
    assert [int(r["updates"]) for r in rows] == [0, 2, 4]
    for r in rows:
        for split in ("train", "eval"):
            ret = float(r[f"eval/return_{split}"])
            assert math.isfinite(ret) and ret < 0  # -|v - v*| - ctrl cost per step
            assert float(r[f"eval/return_{split}_ep1"]) + float(r[f"eval/return_{split}_ep2"]) == pytest.approx(ret, rel=1e-4)  # CSV rounding
    assert set(metrics) >= {"eval/return_train", "eval/return_eval"}
    assert (tmp_path / "checkpoints" / "last.pt").exists()


@pytest.mark.mujoco
def test_tiny_halfcheetah_v_run(tmp_path):
    pytest.importorskip("mujoco")
    cfg = compose_cfg(TINY_POMDP + ["env=halfcheetah_v", "env.kwargs.max_episode_steps=30"])
    trainer = Trainer(cfg, tmp_path)
    assert trainer.obs_space.shape == (9,) and trainer.obs_space.dtype == np.float64
    trainer.run(cfg.logger)
    rows = read_csv(tmp_path / "progress.csv")
    assert [int(r["env_steps"]) for r in rows] == [60, 120, 180]


def test_pomdp_task_defaults():
    cfg = compose_cfg(["task=pomdp"])
    assert (cfg.task.name, cfg.env.name, cfg.algo.name) == ("pomdp", "pendulum_v", "sac")
    tr = cfg.train  # pomdp-baselines configs/pomdp/pendulum/v/rnn.yml
    assert (tr.num_warmup_rollouts, tr.num_iters, tr.rollouts_per_iter, tr.updates_per_iter, tr.batch_size,
            tr.warmup_updates) == (5, 250, 1, 200, 32, 1000)
    assert (cfg.eval.interval, cfg.eval.num_episodes, cfg.algo.gamma) == (5, 20, 0.9)
    assert (tr.seq_len, tr.updates_per_step) == (None, 1.0)  # whole 200-step episodes
    cart = compose_cfg(["task=pomdp", "env=cartpole_p"])
    assert cart.algo.name == "sacd" and cart.algo.auto_alpha and cart.algo.target_entropy_ratio == 0.7


@pytest.mark.parametrize("env", ["halfcheetah_p", "halfcheetah_v", "hopper_p", "hopper_v", "walker_p",
                                 "walker_v", "ant_p", "ant_v"])
def test_mujoco_pomdp_schedule_is_pomdp_baselines(env):
    """1.5M env steps, 10 warm-up episodes, one episode and one update per env step, batch 64."""
    cfg = compose_cfg(["task=pomdp", f"env={env}"])
    OmegaConf.resolve(cfg)
    validate(cfg)
    tr = cfg.train
    assert (tr.num_warmup_rollouts, tr.num_iters, tr.rollouts_per_iter, tr.updates_per_iter, tr.batch_size) == \
        (10, 1500, 1, 1000, 64)
    assert tr.warmup_updates == 10_000 and cfg.env.kwargs.max_episode_steps == 1000
    assert 1000 * (tr.num_warmup_rollouts + tr.num_iters) == 1_510_000
    assert (cfg.algo.name, cfg.algo.gamma, cfg.eval.interval, cfg.eval.num_episodes) == ("sac", 0.99, 4, 10)
    assert (tr.seq_len, tr.updates_per_step) == (64, 1.0)  # batch 64 windows of 64; one update per step collected
    assert list(cfg.agent.q_layers) == [256, 256] and cfg.env.reference_width == 128


@pytest.mark.parametrize("env,iters,catch_up", [("cheetah_vel", 500, 0), ("cheetah_dir", 2000, 0),
                                                ("ant_dir", 3000, 4000), ("humanoid_dir", 3000, 4000)])
def test_mujoco_meta_schedule_is_pomdp_baselines(env, iters, catch_up):
    cfg = compose_cfg(["task=meta", f"env={env}"])
    OmegaConf.resolve(cfg)
    validate(cfg)
    ev, tr = cfg.env, cfg.train
    assert (ev.num_tasks, ev.num_train_tasks, ev.num_eval_tasks, ev.episodes_per_task) == (120, 100, 20, 2)
    assert ev.kwargs.max_episode_steps == 200
    assert (tr.num_warmup_rollouts, tr.num_iters, tr.rollouts_per_iter, tr.updates_per_iter, tr.batch_size,
            tr.warmup_updates) == (500, iters, 25, 200, 32, catch_up)
    assert cfg.algo.gamma == 0.99 and cfg.eval.interval == 4


@pytest.mark.mujoco
def test_mujoco_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    """Stopped by a signal mid-iteration (5 updates = iteration 2 plus one), then resumed: the MuJoCo
    envs' generators come back from the checkpoint, so every row equals the uninterrupted run's."""
    pytest.importorskip("mujoco")
    from tests.test_train import run_until_signal
    over = TINY_POMDP + ["env=halfcheetah_v", "env.kwargs.max_episode_steps=15", "train.num_iters=4",
                         "train.warmup_updates=0"]
    cfg = compose_cfg(over)
    Trainer(cfg, tmp_path / "a").run(cfg.logger)
    assert run_until_signal(compose_cfg(over), tmp_path / "b", 5, monkeypatch).updates == 5
    Trainer(compose_cfg(over), tmp_path / "b").run(cfg.logger, resume=True)
    a, b = read_csv(tmp_path / "a" / "progress.csv"), read_csv(tmp_path / "b" / "progress.csv")
    skip = {"time_s", "perf/updates_per_s", "perf/env_steps_per_s"}
    assert [int(r["iteration"]) for r in b] == [0, 1, 3, 4]
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in skip} == {k: v for k, v in rb.items() if k not in skip}


@pytest.mark.mujoco
@pytest.mark.parametrize("model", ["shm", "ffm", "gpt2", "s6", "mlp"])
def test_every_kind_of_memory_trains_on_float64_mujoco_observations(tmp_path, model):
    """MuJoCo v5 observations are float64 (kept by the mask); every memory takes them."""
    pytest.importorskip("mujoco")
    cfg = compose_cfg(TINY_POMDP + ["env=halfcheetah_v", "env.kwargs.max_episode_steps=15",
                                    "train.warmup_updates=0", f"model={model}"])
    metrics = Trainer(cfg, tmp_path).run(cfg.logger)
    assert math.isfinite(metrics["eval/return_eval"])
    assert len(read_csv(tmp_path / "progress.csv")) == 3


def test_updates_follow_the_env_steps_collected(tmp_path):
    """train.updates_per_step = 1 on CartPole-V (episodes end early, at different lengths): after
    the warm-up and after every iteration, the updates so far equal the env steps so far."""
    cfg = compose_cfg(TINY_POMDP + ["env=cartpole_v", "env.kwargs.max_episode_steps=50",
                                    "train.updates_per_step=1.0", "train.num_iters=3"])
    Trainer(cfg, tmp_path).run(cfg.logger)
    rows = read_csv(tmp_path / "progress.csv")
    steps = [int(r["env_steps"]) for r in rows]
    assert [int(r["updates"]) for r in rows] == steps
    assert any(s % 50 for s in steps)  # some episode ended before the 50-step limit
    half = compose_cfg(TINY_POMDP + ["env=pendulum_v", "env.kwargs.max_episode_steps=9",
                                     "train.updates_per_step=0.5", "train.num_iters=2"])
    Trainer(half, tmp_path / "half").run(half.logger)
    rows = read_csv(tmp_path / "half" / "progress.csv")
    # warm-up: int(0.5 x 18) = 9; each iteration (2 episodes of 9 steps): ceil(0.5 x 18) = 9
    assert [int(r["updates"]) for r in rows] == [9, 18, 27]


@pytest.mark.mujoco
def test_sub_sequence_training_through_the_loop(tmp_path):
    """HalfCheetah-V with 30-step episodes and train.seq_len=8: batches are 8-step windows."""
    pytest.importorskip("mujoco")
    cfg = compose_cfg(TINY_POMDP + ["env=halfcheetah_v", "env.kwargs.max_episode_steps=30", "train.seq_len=8",
                                    "train.warmup_updates=0", "algo=td3"])
    trainer = Trainer(cfg, tmp_path)
    metrics = trainer.run(cfg.logger)
    b = trainer.buffer.sample(16)
    assert b["mask"].shape == (16, 8) and b["obs"].shape == (16, 9, 9) and (b["mask"] == 1).all()
    assert math.isfinite(metrics["eval/return_eval"])
