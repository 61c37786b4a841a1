"""End-to-end: tiny training runs, progress.csv, checkpoints, exact resume, CLI errors."""
import math
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from src.loop import Trainer
from tests.helpers import TINY, compose_cfg, read_csv

ROOT = Path(__file__).resolve().parents[1]



@pytest.mark.parametrize("env", ["wind", "point_robot"])
def test_tiny_run_writes_progress_and_checkpoint(tmp_path, env):
    cfg = compose_cfg(TINY + [f"env={env}"])
    metrics = Trainer(cfg, tmp_path).run(cfg.logger)
    rows = read_csv(tmp_path / "progress.csv")
    # the reference's schedule: evaluate when the rollout groups so far (warm-up: 1) are a multiple of 2
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2]
    horizon = 100 * cfg.env.episodes_per_task
    assert [int(r["env_steps"]) for r in rows] == [2 * horizon, 4 * horizon, 6 * horizon]
    assert [int(r["updates"]) for r in rows] == [0, 2, 4]
    for r in rows:
        for split in ("train", "eval"):
            assert 0.0 <= float(r[f"eval/success_{split}"]) <= 1.0
    assert all(math.isfinite(float(rows[-1][f"train/{k}"])) for k in ("qf1_loss", "qf2_loss", "policy_loss", "alpha"))
    if env == "point_robot":
        assert "eval/return_eval_ep2" in rows[0]
    assert (tmp_path / "checkpoints" / "last.pt").exists()
    assert set(metrics) >= {"eval/success_train", "eval/success_eval"}


def tb_steps(tb_dir, tag):
    """Steps of a TensorBoard scalar as a reader sees them (purged events dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


class Stopped(Exception):
    pass


def run_until_signal(cfg, run_dir, stop_after_updates, monkeypatch):
    """Run, deliver a stop signal once `stop_after_updates` updates are done, return the trainer."""
    trainer = Trainer(cfg, run_dir)
    update = trainer.algo.update

    def update_then_signal(batch):
        out = update(batch)
        if trainer.updates + 1 == stop_after_updates:
            trainer._on_signal(signal.SIGUSR2, None)
        return out

    monkeypatch.setattr(trainer.algo, "update", update_then_signal)
    monkeypatch.setattr(Trainer, "_forward_stop_signal", lambda self: (_ for _ in ()).throw(Stopped()))
    with pytest.raises(Stopped):
        trainer.run(cfg.logger)
    monkeypatch.undo()
    return trainer


@pytest.mark.parametrize("stop_after_updates", [4, 5])  # at an iteration boundary, mid-iteration
def test_resume_continues_counters_and_equals_an_uninterrupted_run(tmp_path, monkeypatch, stop_after_updates):
    overrides = TINY + ["train.num_iters=4", "logger.tensorboard=true"]
    cfg = compose_cfg(overrides)
    Trainer(cfg, tmp_path / "a").run(cfg.logger)

    stopped = run_until_signal(compose_cfg(overrides), tmp_path / "b", stop_after_updates, monkeypatch)
    assert stopped.updates == stop_after_updates
    resumed = Trainer(compose_cfg(overrides), tmp_path / "b")
    resumed.run(cfg.logger, resume=True)
    assert resumed.iteration == 4 and resumed.updates == 8

    a, b = read_csv(tmp_path / "a" / "progress.csv"), read_csv(tmp_path / "b" / "progress.csv")
    assert [int(r["iteration"]) for r in b] == [0, 1, 3, 4]  # no duplicated or missing rows
    assert tb_steps(tmp_path / "b" / "tb", "train/qf1_loss") == tb_steps(tmp_path / "a" / "tb", "train/qf1_loss")
    assert tb_steps(tmp_path / "b" / "tb", "eval/success_eval") == [int(r["env_steps"]) for r in a]
    skip = {"time_s", "perf/updates_per_s", "perf/env_steps_per_s"}
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in skip} == {k: v for k, v in rb.items() if k not in skip}


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "src.train", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_resume_of_missing_dir_is_a_clear_error(tmp_path):
    r = _cli("experiment=smoke", f"resume={tmp_path / 'nope'}")
    assert r.returncode == 2
    assert "no such run directory" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_unknown_model_lists_the_valid_ones():
    r = _cli("model=nope", "--cfg", "job")
    assert r.returncode == 2
    assert "unknown model 'nope'" in r.stderr and "shm" in r.stderr


def test_cli_cfg_job_with_a_package_prints_that_key():
    r = _cli("--cfg", "job", "-p", "train.num_iters", "task=pomdp", "env=halfcheetah_v")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "1500"


def test_cli_help_lists_groups_and_examples():
    r = _cli("--help")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "model: ffm, fwp, gpt2, gru" in r.stdout and "python -m src.train experiment=smoke" in r.stdout


def test_cli_bad_seed_names_the_key(tmp_path):
    r = _cli("seed=abc", f"paths.output_root={tmp_path}")
    assert r.returncode == 2 and "seed must be an integer, got 'abc'" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_smoke_run_and_resume(tmp_path):
    run_dir = tmp_path / "run_experiment=smoke"  # named as a sweep job's dir: '=' in the path
    common = ["logger=none", "progress_bar=false"]
    r = _cli("experiment=smoke", *common, f"hydra.run.dir='{run_dir}'")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = read_csv(run_dir / "progress.csv")
    assert rows and "eval/success_eval" in rows[-1]
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / "git.txt").exists()
    r = _cli(f"resume={run_dir}", "model=shm")  # conflicts with the run's model
    assert r.returncode == 2 and "holds a different config" in r.stderr
    # finished run: resumes and stops at once; the path is pasted unquoted, src.train quotes it for Hydra
    r = _cli(f"resume={run_dir}", "progress_bar=false")
    assert r.returncode == 0, r.stderr[-2000:]
    assert read_csv(run_dir / "progress.csv") == rows


def test_a_finished_run_extended_on_resume_continues_as_a_longer_run(tmp_path):
    from tests.test_reliability import rows_without_timing
    common = ["experiment=smoke", "logger=none", "progress_bar=false", "eval.interval=2"]
    short, long = tmp_path / "short", tmp_path / "long"
    assert _cli(*common, "train.num_iters=2", f"hydra.run.dir={short}").returncode == 0
    r = _cli(f"resume={short}", "train.num_iters=4", "progress_bar=false")  # the curve was still rising
    assert r.returncode == 0, r.stderr[-2000:]
    assert "changed on resume: train.num_iters 2 -> 4" in r.stdout
    assert OmegaConf.load(short / ".hydra" / "config.yaml").train.num_iters == 4
    assert "; train.num_iters 2 -> 4" in (short / "git.txt").read_text()
    assert _cli(*common, "train.num_iters=4", f"hydra.run.dir={long}").returncode == 0
    assert rows_without_timing(short / "progress.csv") == rows_without_timing(long / "progress.csv")
    r = _cli(f"resume={short}", "train.batch_size=3")  # anything but the budget is still a conflict
    assert r.returncode == 2 and "train.batch_size: run has" in r.stderr


def test_resume_composes_with_the_runs_own_group_choices(tmp_path):
    from src.train import with_run_choices
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save({"hydra": {"runtime": {"choices": {
        "task": "popgym", "env": "repeat_previous_easy", "model": "shm", "algo": "ppo", "experiment": None,
        "model@agent.actor_memory": None, "task_model": "popgym_shm", "hydra/launcher": "local",
        "logger": "renamed_since"}}}}, tmp_path / ".hydra" / "hydra.yaml")
    argv = [f"resume={tmp_path}", "train.env_steps=20000000", "model=shm"]
    assert with_run_choices(argv) == argv + ["task=popgym", "env=repeat_previous_easy", "algo=ppo"]
    assert with_run_choices(["model=gru"]) == ["model=gru"]  # not a resume: unchanged


MODELS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))


@pytest.mark.parametrize("env", ["wind", "point_robot"])
@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_with_finite_losses(tmp_path, env, model):
    small = {"s6": ["model.memory.d_state=16"], "gpt2": ["model.memory.window=256"]}.get(model, [])
    cfg = compose_cfg(TINY + [f"env={env}", f"model={model}", "train.num_iters=2", "eval.interval=2"] + small)
    Trainer(cfg, tmp_path).run(cfg.logger)
    last = read_csv(tmp_path / "progress.csv")[-1]
    for k in ("qf1_loss", "qf2_loss", "policy_loss", "alpha", "entropy", "q_grad_norm", "pi_grad_norm"):
        assert math.isfinite(float(last[f"train/{k}"])), (k, last[f"train/{k}"])


def test_actor_memory_override_builds_a_gru_actor(tmp_path):
    from torchkit.memory.rnn import GRU
    from torchkit.memory.shm import SHM
    cfg = compose_cfg(TINY + ["model=shm", "model@agent.actor_memory=gru", "train.num_iters=2"])
    trainer = Trainer(cfg, tmp_path)
    assert isinstance(trainer.agent.actor.encoder.memory, GRU)
    assert isinstance(trainer.agent.critic.encoder.memory, SHM)
    assert trainer.agent.actor.encoder.memory.output_size == cfg.model.width
    trainer.run(cfg.logger)
    with pytest.raises(Exception, match="Could not find 'model/nope'"):
        compose_cfg(TINY + ["model@agent.actor_memory=nope"])


def test_model_actor_overrides_change_the_actor_memory_only(tmp_path):
    """conf/model/shm.yaml's actor_overrides change the actor's SHM only, never the critic or its
    target: by default the actor acts with θ row 0 (chosen by measurement, docs/results) and the
    critic draws random rows; null keeps the critic's setting."""
    agent = Trainer(compose_cfg(TINY + ["model=shm"]), tmp_path / "a").agent
    assert agent.actor.encoder.memory.theta_sampling == "fixed"
    assert agent.critic.encoder.memory.theta_sampling == "random"
    assert agent.critic_target.encoder.memory.theta_sampling == "random"
    agent = Trainer(compose_cfg(TINY + ["model=shm", "model.actor_overrides.theta_sampling=null"]), tmp_path / "c").agent
    assert agent.actor.encoder.memory.theta_sampling == "random"
    cfg = compose_cfg(TINY + ["model=shm", "model.actor_overrides.theta_sampling=mean_step"])
    agent = Trainer(cfg, tmp_path / "b").agent
    assert agent.actor.encoder.memory.theta_sampling == "mean_step"
    assert agent.critic.encoder.memory.theta_sampling == "random"
    assert agent.critic_target.encoder.memory.theta_sampling == "random"
    assert agent.actor.encoder.memory.output_size == cfg.model.width


def test_evaluations_follow_the_reference_schedule():
    """Wind as released: warm-up 10k steps, 1,000 per iteration, log_interval 4 -> 12k, 16k, ..."""
    from types import SimpleNamespace
    cfg = compose_cfg(["experiment=paper"])
    due = [10_000 + 1_000 * i for i in range(1, 501)
           if Trainer.eval_due(SimpleNamespace(cfg=cfg, iteration=i))]
    assert due[:3] == [12_000, 16_000, 20_000] and due[-1] == 508_000 and len(due) == 125


def test_successes_in_buffer_and_warmup_action_range(tmp_path):
    """Every Wind episode succeeds with a huge goal radius: the counter sees each one; warm-up
    actions stay in [-r, r]; both the counter and the current α are in every evaluation row."""
    cfg = compose_cfg(TINY + ["env.kwargs.goal_radius=100", "train.warmup_action_range=0.1"])
    trainer = Trainer(cfg, tmp_path)
    trainer.run(cfg.logger)
    assert trainer.successes_in_buffer == trainer.episodes == 6
    acts = trainer.buffer.act[: 2 * 101].reshape(2, 101, 2)[:, :100]  # the two warm-up episodes
    assert np.abs(acts).max() <= 0.1 and np.abs(acts).max() > 0.05
    rows = read_csv(tmp_path / "progress.csv")
    assert [int(r["train/successes_in_buffer"]) for r in rows] == [2, 4, 6]
    assert float(rows[0]["train/alpha_now"]) == pytest.approx(1.0)  # nothing updated yet
    assert float(rows[-1]["train/alpha_now"]) == pytest.approx(float(trainer.algo.alpha), rel=1e-5)
    assert float(rows[-1]["train/alpha_now"]) < 1.0


def test_best_checkpoint_is_the_first_evaluation_with_the_best_success(tmp_path, monkeypatch):
    """checkpoints/best.pt: the same format as last.pt, written at the evaluation whose
    eval/success_eval first beat every earlier one (ties keep the earlier file); resume keeps the mark."""
    from src.checkpoint import load_checkpoint
    successes = iter([0.2, 0.5, 0.5, 0.1, 0.4])  # evaluations at iterations 0, 1, 2, 3, 4
    real_evaluate = Trainer.evaluate
    monkeypatch.setattr(Trainer, "evaluate", lambda self: {**real_evaluate(self), "eval/success_eval": next(successes)})
    cfg = compose_cfg(TINY + ["train.num_iters=4", "eval.interval=1"])
    trainer = Trainer(cfg, tmp_path)
    trainer.run(cfg.logger)
    last, best = (load_checkpoint(tmp_path / "checkpoints" / f"{n}.pt") for n in ("last", "best"))
    assert set(best) == set(last) and set(best["counters"]) == set(last["counters"])
    assert best["counters"]["iteration"] == 1 and last["counters"]["iteration"] == 4
    assert best["counters"]["best_score"] == last["counters"]["best_score"] == 0.5
    assert not (tmp_path / "checkpoints" / "best.pt.tmp").exists()
    resumed = Trainer(cfg, tmp_path)
    resumed.load()
    assert resumed.best_score == 0.5


def test_best_checkpoint_follows_the_return_where_there_is_no_success(tmp_path, monkeypatch, caplog):
    """eval.best_by=return (task=pomdp, the MuJoCo meta tasks): success stays 0 there, so best.pt
    follows eval/return_eval, and the progress line shows no success numbers."""
    from src.checkpoint import load_checkpoint
    returns = iter([-900.0, -300.0, -500.0, -200.0, -250.0])
    real_evaluate = Trainer.evaluate
    monkeypatch.setattr(Trainer, "evaluate", lambda self: {**real_evaluate(self), "eval/success_eval": 0.0,
                                                           "eval/return_eval": next(returns)})
    cfg = compose_cfg(TINY + ["train.num_iters=4", "eval.interval=1", "eval.best_by=return"])
    with caplog.at_level("INFO", logger="src.loop"):
        Trainer(cfg, tmp_path).run(cfg.logger)
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["counters"]["iteration"] == 3 and best["counters"]["best_score"] == -200.0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("iter ")]
    assert lines and all("success" not in line and "return eval" in line for line in lines)
    assert compose_cfg(["task=pomdp", "env=halfcheetah_v"]).eval.best_by == "return"
    assert compose_cfg(["task=meta", "env=cheetah_vel"]).eval.best_by == "return"
    assert compose_cfg(["task=meta", "env=wind"]).eval.best_by == "success"
