"""Credit-assignment training end to end (task=credit, SAC-Discrete): tiny runs for every credit env
with GRU and SHM, the replay's uint8 pixels and one-hot actions, exact resume, config defaults."""
import math

import numpy as np
import pytest

from src.loop import Trainer
from tests.helpers import compose_cfg, read_csv
from tests.test_train import run_until_signal

TINY_CREDIT = ["experiment=smoke", "task=credit", "logger=none", "progress_bar=false",
               "train.num_warmup_rollouts=2", "train.rollouts_per_iter=2", "train.updates_per_iter=2",
               "train.batch_size=2", "train.num_iters=2", "eval.interval=2", "eval.num_episodes=2",
               "model.width=8"]
SHORT = {  # shorter episodes keep the runs fast; the dynamics are the same
    "visual_match": ["env.kwargs.distractor_steps=12"],
    "key_to_door": ["env.kwargs.distractor_steps=12"],
    "tmaze_passive": ["env.kwargs.corridor_length=8"],
    "tmaze_active": ["env.kwargs.corridor_length=8"],
}



def tiny(env, *extra):
    return compose_cfg(TINY_CREDIT + [f"env={env}"] + SHORT[env] + list(extra))


@pytest.mark.parametrize("model", ["gru", "shm"])
@pytest.mark.parametrize("env", sorted(SHORT))
def test_tiny_credit_run(tmp_path, env, model):
    cfg = tiny(env, f"model={model}")
    trainer = Trainer(cfg, tmp_path)
    assert trainer.discrete and trainer.algo.__class__.__name__ == "SACDiscrete"
    metrics = trainer.run(cfg.logger)
    rows = read_csv(tmp_path / "progress.csv")
    T = trainer.max_episode_len
    # evaluations when the rollout groups collected (warm-up = 1 group of 2) are a multiple of 2
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2]
    assert [int(r["env_steps"]) for r in rows] == [2 * T, 4 * T, 6 * T]
    catch_up = int(0.25 * 2 * T)  # the released credit loop's updates right after warm-up
    assert cfg.train.warmup_updates == catch_up > 0
    assert [int(r["updates"]) for r in rows] == [catch_up, catch_up + 2, catch_up + 4]
    assert "eval/success_train" not in rows[0]  # no task sets: only the evaluation episodes
    for r in rows:
        assert float(r["eval/success_eval"]) in (0.0, 0.5, 1.0)
        assert math.isfinite(float(r["eval/return_eval"]))
    for k in ("qf1_loss", "qf2_loss", "policy_loss", "alpha", "entropy", "q_grad_norm", "pi_grad_norm"):
        assert math.isfinite(float(rows[-1][f"train/{k}"])), k
    assert float(rows[-1]["train/alpha"]) == pytest.approx(cfg.algo.init_alpha)  # fixed α
    assert (tmp_path / "checkpoints" / "last.pt").exists()
    assert set(metrics) == {"eval/success_eval", "eval/return_eval"}


def test_replay_holds_uint8_pixels_and_one_hot_actions(tmp_path):
    trainer = Trainer(tiny("visual_match"), tmp_path)
    assert trainer.max_episode_len == 15 + 12 + 10
    trainer.collect(2, "random")
    trainer.collect(1, "stochastic")
    buf = trainer.buffer
    assert buf.obs.dtype == np.uint8 and buf.obs.shape[1:] == (5, 5, 3)
    assert buf.obs[:buf.num_steps].max() > 1  # raw pixels, not scaled
    acts = buf.act[:buf.num_steps + 3]
    used = acts.sum(1) > 0
    assert used.sum() == buf.num_steps and set(np.unique(acts[used])) == {0.0, 1.0}
    assert np.all(acts[used].sum(1) == 1)
    batch = trainer.buffer.sample(2)
    assert batch["obs"].dtype == np.uint8
    tensors = trainer._to_tensors(batch)
    assert all(t.dtype.is_floating_point for t in tensors.values())
    assert tensors["obs"].max() > 1


def test_tmaze_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    """Stopped by a signal mid-iteration (5 updates = iteration 2 plus one update), then resumed."""
    cfg = tiny("tmaze_passive", "train.num_iters=4")
    Trainer(cfg, tmp_path / "a").run(cfg.logger)
    stopped = run_until_signal(tiny("tmaze_passive", "train.num_iters=4"), tmp_path / "b", 5, monkeypatch)
    assert stopped.updates == 5
    resumed = Trainer(tiny("tmaze_passive", "train.num_iters=4"), tmp_path / "b")
    resumed.run(cfg.logger, resume=True)
    a, b = read_csv(tmp_path / "a" / "progress.csv"), read_csv(tmp_path / "b" / "progress.csv")
    skip = {"time_s", "perf/updates_per_s", "perf/env_steps_per_s"}
    assert [int(r["iteration"]) for r in b] == [0, 1, 3, 4]
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in skip} == {k: v for k, v in rb.items() if k not in skip}


def test_wrong_algo_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"algo=sac needs a continuous \(Box\) action space .*use algo=sacd"):
        Trainer(tiny("visual_match", "algo=sac"), tmp_path)
    with pytest.raises(ValueError, match="algo=sacd needs a discrete action space but env wind"):
        Trainer(compose_cfg(["experiment=smoke", "logger=none", "algo=sacd"]), tmp_path / "x")


def test_credit_defaults():
    cfg = compose_cfg(["task=credit"])
    assert (cfg.task.name, cfg.env.name, cfg.algo.name) == ("credit", "visual_match", "sacd")
    assert (cfg.algo.gamma, cfg.algo.tau, cfg.algo.lr, cfg.algo.auto_alpha, cfg.algo.init_alpha) == \
        (0.99, 0.005, 3e-4, False, 0.1)
    assert cfg.env.horizon == 275 and cfg.train.updates_per_iter == 69  # ceil(0.25 T)
    assert cfg.train.num_warmup_rollouts + cfg.train.num_iters == math.ceil(2_000_000 / 275)
    assert (cfg.train.batch_size, cfg.eval.interval, cfg.eval.num_episodes) == (32, 50, 20)
    assert dict(cfg.agent.embed) == {"action": 0, "reward": 0, "obs": 100, "current_obs": 100}
    k2d = compose_cfg(["task=credit", "env=key_to_door_500"])
    assert (k2d.env.horizon, k2d.train.updates_per_iter) == (513, 129)
    assert compose_cfg(["task=credit", "env=visual_match_mrl"]).train.num_iters == 15_000
    tm = compose_cfg(["task=credit", "env=tmaze_passive", "env.kwargs.corridor_length=50"])
    assert (tm.env.horizon, tm.train.updates_per_iter, tm.eval.num_episodes) == (51, 13, 10)
    assert tm.algo.init_alpha == 0.01  # the env config lowers α (see tmaze_passive.yaml)
    assert compose_cfg(["task=credit", "env=tmaze_active"]).env.horizon == 23
    assert compose_cfg(["task=credit", "env=tmaze_passive", "model=shm"]).model.name == "shm"
    assert compose_cfg(["task=credit", "algo=sac"]).algo.name == "sac"  # command line wins (then errors at start)
