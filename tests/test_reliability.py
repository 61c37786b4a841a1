"""Faults and bad input: non-finite guard, determinism, checkpoint integrity, clear errors, SIGKILL."""
import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from src.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from src.loop import NonFiniteError, Trainer
from tests.helpers import TINY, compose_cfg

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"time_s", "perf/updates_per_s", "perf/env_steps_per_s"}


def rows_without_timing(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in SKIP} for r in csv.DictReader(f)]


def test_same_seed_twice_gives_identical_progress(tmp_path):
    for name in ("a", "b"):
        cfg = compose_cfg(TINY + ["train.num_iters=4", "seed=7"])
        Trainer(cfg, tmp_path / name).run(cfg.logger)
    assert rows_without_timing(tmp_path / "a" / "progress.csv") == rows_without_timing(tmp_path / "b" / "progress.csv")
    cfg = compose_cfg(TINY + ["train.num_iters=4", "seed=8"])
    Trainer(cfg, tmp_path / "c").run(cfg.logger)
    assert rows_without_timing(tmp_path / "a" / "progress.csv") != rows_without_timing(tmp_path / "c" / "progress.csv")


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    cfg = compose_cfg(TINY + ["train.num_iters=6", "model=shm"])
    trainer = Trainer(cfg, tmp_path)
    update = trainer.algo.update

    def poisoned(batch):
        out = update(batch)
        if trainer.updates >= 5:  # in iteration 3 (2 updates per iteration)
            out["qf1_loss"] = torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(trainer.algo, "update", poisoned)
    with pytest.raises(NonFiniteError) as err:
        trainer.run(cfg.logger)
    msg = str(err.value)
    assert "iteration 3" in msg and "qf1_loss" in msg and "model=shm" in msg and "grad_clip" in msg
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["counters"]["iteration"] == 1  # the last evaluation before the NaN (evaluations at 1, 3)
    assert all(torch.isfinite(v).all() for v in ckpt["agent"].values() if v.is_floating_point())


def test_grad_clip_bounds_the_update(tmp_path):
    cfg = compose_cfg(TINY + ["algo.grad_clip=0.001"])
    trainer = Trainer(cfg, tmp_path)
    trainer.collect(2, "random")
    before = [p.clone() for p in trainer.agent.critic.parameters()]
    trainer.algo.update(trainer._to_tensors(trainer.buffer.sample(2)))
    # Adam normalises step sizes, so check the clipped gradient itself
    total = torch.sqrt(sum((p.grad ** 2).sum() for p in trainer.agent.critic.parameters() if p.grad is not None))
    assert total <= 0.001 * 1.0001
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.agent.critic.parameters()))


def test_checkpoint_is_atomic_and_versioned(tmp_path):
    path = tmp_path / "c" / "last.pt"
    save_checkpoint({"x": 1}, path)
    assert load_checkpoint(path)["x"] == 1
    assert not list(path.parent.glob("*.tmp"))
    torch.save({"format_version": 999, "x": 2}, path)
    with pytest.raises(CheckpointError, match="format version 999"):
        load_checkpoint(path)
    path.write_bytes(b"\x80\x02garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"x": 1}, path)

    def killed_mid_write(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the process dies here

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"x": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["x"] == 1
    save_checkpoint({"x": 3}, path)  # a leftover temporary file does not get in the way
    assert load_checkpoint(path)["x"] == 3


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "src.train", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("args,match", [
    (["train.batch_size=0"], "train.batch_size must be positive"),
    (["env.num_train_tasks=100", "env.num_eval_tasks=150"], "larger than env.num_tasks"),
    (["paths.output_root=/proc/memrl_no"], "cannot write run directories"),
])
def test_bad_input_gets_one_clear_line(args, match, tmp_path):
    r = _cli("experiment=smoke", "logger=none", f"paths.output_root={tmp_path}", *args)
    assert r.returncode == 2
    assert match in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("group", ["task", "env", "model", "algo"])
def test_unknown_group_option_lists_the_valid_ones(group):
    r = _cli(f"{group}=nope", "--cfg", "job")
    assert r.returncode == 2 and f"unknown {group} 'nope'" in r.stderr
    assert f"valid {group} options: " in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path):
    """Kill -9 the training process at random times (some land inside checkpoint writes); each
    restart resumes from the last complete checkpoint; the final progress.csv equals an
    uninterrupted run's."""
    args = ["experiment=smoke", "logger=default", "progress_bar=false", "train.num_iters=12",
            "train.updates_per_iter=4", "eval.interval=1", "seed=3"]
    ref = tmp_path / "ref"
    t0 = time.perf_counter()
    assert _cli(*args, f"hydra.run.dir={ref}", timeout=600).returncode == 0
    whole = time.perf_counter() - t0  # kill moments scale with it: a faster machine or loop still gets killed
    run = tmp_path / "run"
    rng = random.Random(0)
    cmd = [sys.executable, "-m", "src.train", *args, f"hydra.run.dir={run}"]
    kills = 0
    for attempt in range(12):
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=rng.uniform(0.4, 0.95) * whole)
            break
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            if (run / "checkpoints" / "last.pt").exists():
                load_checkpoint(run / "checkpoints" / "last.pt")  # never corrupt
    else:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
    assert kills >= 1
    assert rows_without_timing(run / "progress.csv") == rows_without_timing(ref / "progress.csv")


def test_checkpoint_from_a_different_config_is_refused(tmp_path):
    cfg = compose_cfg(TINY)
    Trainer(cfg, tmp_path).run(cfg.logger)
    other = compose_cfg(TINY + ["algo.lr=0.001"])
    with pytest.raises(ValueError, match=r"different config:\n  algo: "):
        Trainer(other, tmp_path).run(other.logger, resume=True)
    same_but_runtime = compose_cfg(TINY + ["num_threads=2"])
    Trainer(same_but_runtime, tmp_path).run(same_but_runtime.logger, resume=True)
