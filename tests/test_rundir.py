"""Run directories that cannot be corrupted: a lock, no writes before a start is accepted, honest
resumes, refused options named before anything is created, and disk faults at a checkpoint."""
import subprocess
import sys
from pathlib import Path

import pytest

from src import checkpoint as ckpt_mod
from src.checkpoint import CheckpointWriteError, load_checkpoint, save_checkpoint
from src.loop import Trainer
from src.rundir import RunLock, check_group_options
from tests.helpers import TINY, compose_cfg
from tests.test_reliability import rows_without_timing

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["experiment=smoke", "logger=none", "progress_bar=false"]


def _cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "src.train", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def snapshot(run_dir: Path) -> dict:
    """Every file's bytes, except the lock (it holds the PID of the last process that held it)."""
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "a"
    r = _cli(*SMOKE, f"hydra.run.dir={run}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "git.txt").is_file()
    return run


@pytest.mark.parametrize("args,match", [
    (["algo.lr=0.001"], "already holds a run with a different config"),        # a refused start
    (["experiment=reference_sizes", "resume={run}"], "experiment: run has 'smoke'"),
    (["resume={run}", "hydra.run.dir={run}_other"], "drop hydra.run.dir"),
])
def test_refused_start_leaves_the_run_untouched(finished_run, args, match):
    before = snapshot(finished_run)
    args = [a.format(run=finished_run) for a in args]
    extra = [] if any(a.startswith("resume=") for a in args) else [f"hydra.run.dir={finished_run}"]
    r = _cli(*SMOKE, *args, *extra)
    assert r.returncode == 2 and match in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert snapshot(finished_run) == before


def test_a_second_process_on_a_run_dir_stops_at_once(finished_run):
    before = snapshot(finished_run)
    lock = RunLock(finished_run).acquire()  # as a live run would hold it
    try:
        r = _cli(*SMOKE, f"hydra.run.dir={finished_run}")
    finally:
        lock.release()
    import os
    assert r.returncode == 2 and f"in use by process {os.getpid()}" in r.stderr, r.stderr[-2000:]
    assert snapshot(finished_run) == before


def test_a_dead_holder_never_blocks(tmp_path):
    holder = subprocess.run([sys.executable, "-c", f"from src.rundir import RunLock; RunLock({str(tmp_path)!r}).acquire()"],
                            cwd=ROOT, timeout=60)
    assert holder.returncode == 0 and (tmp_path / ".lock").exists()  # it died holding the lock
    RunLock(tmp_path).acquire().release()


@pytest.mark.parametrize("args,match", [
    (["model=shmm"], "unknown model 'shmm': did you mean model=shm?"),
    (["-m", "model=gru,lsmt"], "unknown model 'lsmt': did you mean model=lstm?"),
    (["experiment=papr"], "did you mean experiment=paper?"),
    (["resume={tmp}/nope"], "no such run directory"),
])
def test_bad_options_are_refused_before_any_directory_exists(tmp_path, args, match):
    out = tmp_path / "out"
    r = _cli(*SMOKE, f"paths.output_root={out}", *[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == 2 and match in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not any(out.rglob("*"))


def test_a_quoted_run_dir_is_probed_without_its_quotes(tmp_path, monkeypatch):
    # hydra.run.dir='<path with =>' (as sweep job dirs are named): the writability probe must create
    # <path>, not a directory named "'<path>'" under the current directory
    from src.train import precheck
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "job_experiment=smoke"
    precheck([*SMOKE, f"hydra.run.dir='{run_dir}'"])
    assert run_dir.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_group_option_check_lists_the_valid_options():
    (msg,) = check_group_options(["env=wnd"])
    assert "did you mean env=wind?" in msg and "point_robot_10_190" in msg
    assert check_group_options(["model=gru,shm", "env=wind", "seed=3", "model=choice(gru,shm)"]) == []


def test_full_disk_at_a_checkpoint_keeps_the_previous_one_and_resume_works(tmp_path, monkeypatch):
    cfg = compose_cfg(TINY + ["train.num_iters=4"])
    Trainer(cfg, tmp_path / "ref").run(cfg.logger)

    run = tmp_path / "run"
    real = ckpt_mod.shutil.disk_usage
    saves = []

    def disk_usage(path):  # the disk fills up after the first checkpoint
        saves.append(path)
        usage = real(path)
        return usage._replace(free=100) if len(saves) > 1 else usage

    monkeypatch.setattr(ckpt_mod.shutil, "disk_usage", disk_usage)
    with pytest.raises(CheckpointWriteError, match=r"No space left on device: .* needed, 0.0 MB free.*previous checkpoint is kept"):
        Trainer(cfg, run).run(cfg.logger)
    monkeypatch.undo()
    assert not list((run / "checkpoints").glob("*.tmp"))
    assert load_checkpoint(run / "checkpoints" / "last.pt")["counters"]["iteration"] == 0
    Trainer(cfg, run).run(cfg.logger, resume=True)
    assert rows_without_timing(run / "progress.csv") == rows_without_timing(tmp_path / "ref" / "progress.csv")


def test_unwritable_checkpoint_is_one_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"x": 1}, path)

    def denied(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ckpt_mod.os, "replace", denied)
    with pytest.raises(CheckpointWriteError, match="Permission denied.*previous checkpoint is kept"):
        save_checkpoint({"x": 2}, path)
    monkeypatch.undo()
    assert not path.with_name("last.pt.tmp").exists() and load_checkpoint(path)["x"] == 1


BAD_INPUTS = [  # (override, what the one-line error must say)
    ("algo.grad_clip=-1", "algo.grad_clip=-1 is out of range"),
    ("algo.init_alpha=-1", "algo.init_alpha=-1 is out of range"),
    ("algo.gamma=1.5", "algo.gamma=1.5 is out of range"),
    ("train.batch_size=1.5", "train.batch_size must be an integer"),
    ("eval.interval=1.5", "eval.interval must be an integer"),
    ("+train.batchsize=4", "did you mean train.batch_size?"),
    ("train.batchsize=4", "Could not override 'train.batchsize'"),
    ("seed=abc", "seed must be an integer"),
    ("seed=-1", "seed must be >= 0"),
    ("model.width=abc", "model.width must be an integer"),
    ("train.warmup_action_range=0", "train.warmup_action_range=0 is out of range"),
]


@pytest.mark.parametrize("override,match", BAD_INPUTS)
def test_bad_values_are_refused_by_name_and_the_run_dir_is_untouched(finished_run, override, match):
    before = snapshot(finished_run)
    r = _cli(*SMOKE, override, f"hydra.run.dir={finished_run}")
    assert r.returncode == 2 and match in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert snapshot(finished_run) == before


def test_non_finite_advice_follows_the_cause():
    from src.updates import non_finite_advice
    nan = float("nan")
    assert "algo.init_alpha" in non_finite_advice({"train/alpha": nan}, {"train/alpha": nan})
    stats = {"train/qf1_loss": nan, "train/q_grad_norm": 5e6}
    assert "gradients exploded" in non_finite_advice({"train/qf1_loss": nan}, stats)
    assert "algo.grad_clip=1.0" in non_finite_advice({"train/qf1_loss": nan}, stats)
    clipped = non_finite_advice({"train/qf1_loss": nan}, stats, grad_clip=0.5)
    assert "tighter algo.grad_clip (now 0.5)" in clipped and "grad_clip=1.0" not in clipped
