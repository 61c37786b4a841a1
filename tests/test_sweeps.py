"""Sweeps: local and SLURM launcher configs, frozen code snapshots, per-job dirs, W&B run ids,
the paper launcher, and a signalled job that is requeued and resumes in its own dir."""
import importlib.util
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from launchers import paper, sweep
from launchers.snapshot import snapshot
from src.config import dir_tag
from src.logger import RunLogger, wandb_run_id
from tests.helpers import CONF, TINY, compose_cfg, read_csv

ROOT = Path(__file__).resolve().parents[1]
HAS_GIT = shutil.which("git") is not None


def _has(module):
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


needs_submitit = pytest.mark.skipif(not _has("hydra_plugins.hydra_submitit_launcher"),
                                    reason='needs hydra-submitit-launcher: pip install -e ".[slurm]"')



def compose_with_hydra(overrides, conf=CONF):
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


# ---------------------------------------------------------------- launcher configs

@needs_submitit
def test_local_launcher_runs_jobs_in_batches_of_two_by_default():
    cfg = compose_with_hydra(["hydra/launcher=local"])
    assert cfg.hydra.launcher._target_.endswith("submitit_launcher.LocalLauncher")
    assert cfg.hydra.launcher.timeout_min == 10080
    assert cfg.hydra.sweeper.max_batch_size == 2
    assert compose_with_hydra(["hydra/launcher=local", "hydra.sweeper.max_batch_size=3"]).hydra.sweeper.max_batch_size == 3
    # no batching with the other launchers (SLURM limits concurrency with array_parallelism)
    assert compose_with_hydra([]).hydra.sweeper.max_batch_size is None
    assert compose_with_hydra(["hydra/launcher=slurm"]).hydra.sweeper.max_batch_size is None


@needs_submitit
def test_slurm_launcher_config_has_the_cluster_keys():
    launcher = compose_with_hydra(["hydra/launcher=slurm"]).hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    for key in ("partition", "account", "qos", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min",
                "array_parallelism", "max_num_timeout", "signal_delay_s", "setup", "additional_parameters"):
        assert key in launcher, key
    assert launcher.max_num_timeout >= 1  # time-outs are requeued (the plugin's default, 0, would not)


@needs_submitit
def test_site_settings_come_from_conf_local(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf, ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    (conf / "local" / "slurm.yaml").write_text("partition: site_gpu\naccount: site_acct\nsetup: ['module load cuda']\n")
    (conf / "local" / "local_launcher.yaml").write_text("timeout_min: 77\n")
    (conf / "local" / "default.yaml").write_text("# @package _global_\npaths:\n  output_root: /scratch/me/memrl\n")
    cfg = compose_with_hydra(["hydra/launcher=slurm", "hydra.launcher.account=cli_acct"], conf)
    assert cfg.hydra.launcher.partition == "site_gpu"
    assert cfg.hydra.launcher.account == "cli_acct"  # the command line wins over the site file
    assert list(cfg.hydra.launcher.setup) == ["module load cuda"]
    assert cfg.paths.output_root == "/scratch/me/memrl"
    assert compose_with_hydra(["hydra/launcher=local"], conf).hydra.launcher.timeout_min == 77
    assert "partition" not in compose_with_hydra(["hydra/launcher=local"], conf).hydra.launcher


@needs_submitit
def test_the_shipped_site_examples_compose(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf, ignore=shutil.ignore_patterns("local"))
    shutil.copytree(CONF / "local.example", conf / "local")
    cfg = compose_with_hydra(["hydra/launcher=slurm"], conf)
    OmegaConf.resolve(cfg)
    assert cfg.hydra.launcher.partition == "gpu" and cfg.paths.output_root.startswith("/scratch/")
    assert compose_with_hydra(["hydra/launcher=local"], conf).hydra.launcher.timeout_min == 10080


@needs_submitit
def test_cli_prints_the_slurm_launcher_config():
    r = subprocess.run([sys.executable, "-m", "src.train", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                        "--cfg", "hydra", "-p", "hydra.launcher"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    printed = OmegaConf.create(r.stdout.split("\n", 1)[1])  # first line: "# @package hydra.launcher"
    assert printed.partition == "gpu" and printed.max_num_timeout == 10 and printed.gpus_per_node == 1


FAKE_SBATCH = """#!/bin/sh
# fake sbatch: keep the script it was given, then refuse (so the launcher stops at once)
for a in "$@"; do last="$a"; done
cp "$last" "$MEMRL_SBATCH_CAPTURE"
echo "sbatch: error: fake sbatch (test)" >&2
exit 1
"""


def fake_slurm_bin(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in {"sbatch": FAKE_SBATCH, "srun": "#!/bin/sh\nexit 0\n", "sacct": "#!/bin/sh\nexit 0\n",
                       "scontrol": "#!/bin/sh\nexit 0\n"}.items():
        (bindir / name).write_text(text)
        (bindir / name).chmod((bindir / name).stat().st_mode | stat.S_IEXEC)
    return bindir


@needs_submitit
def test_sbatch_script_carries_the_configured_fields(tmp_path):
    capture = tmp_path / "submitted.sh"
    env = dict(os.environ, PATH=f"{fake_slurm_bin(tmp_path)}{os.pathsep}{os.environ['PATH']}",
               MEMRL_SBATCH_CAPTURE=str(capture))
    sweep_dir = tmp_path / "sweep"
    r = subprocess.run([
        sys.executable, "-m", "src.train", "-m", "hydra/launcher=slurm", f"hydra.sweep.dir={sweep_dir}",
        "hydra.launcher.partition=gpu", "hydra.launcher.account=acct", "hydra.launcher.qos=high",
        "hydra.launcher.gpus_per_node=1", "hydra.launcher.cpus_per_task=3", "hydra.launcher.mem_gb=20",
        "hydra.launcher.timeout_min=90", "hydra.launcher.array_parallelism=1", "hydra.launcher.signal_delay_s=200",
        "hydra.launcher.setup=['module load cuda','export MEMRL_SITE=1']",
        "+hydra.launcher.additional_parameters.mail_type=FAIL",
        "experiment=smoke", "seed=0,1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert capture.exists(), r.stdout[-2000:] + r.stderr[-2000:]
    script = capture.read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=acct", "#SBATCH --qos=high",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=3", "#SBATCH --mem=20GB",
                 "#SBATCH --time=90", "#SBATCH --array=0-1%1", "#SBATCH --signal=USR2@200",
                 "#SBATCH --mail-type=FAIL", "#SBATCH --job-name=memrl", "module load cuda", "export MEMRL_SITE=1"):
        assert line in script, (line, script)
    assert f"{sys.executable} -u -m submitit.core._submit" in script
    assert r.returncode != 0 and "fake sbatch" in (r.stdout + r.stderr)


# ---------------------------------------------------------------- job dirs, W&B ids

def test_job_dir_tag_depends_only_on_the_overrides():
    assert dir_tag("") == ""
    assert dir_tag("algo.lr=0.001,experiment=smoke") == "_algo.lr=0.001,experiment=smoke"
    assert "/" not in dir_tag("agent/actor_memory=gru")
    long = ",".join(f"train.key{i}={i}" for i in range(40))
    assert len(dir_tag(long)) <= 81 and dir_tag(long) == dir_tag(long) != dir_tag(long + "0")


def test_wandb_metadata_is_sent_and_the_run_id_follows_the_run_dir(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_cfg(["logger=wandb", "env=point_robot", "model=shm", "seed=3"])
    assert cfg.logger.wandb.mode == "offline"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = OmegaConf.to_container(cfg, resolve=True)
    RunLogger(run_dir, cfg.logger, config).close()
    RunLogger(run_dir, cfg.logger, config, resume_step=0).close()  # a resumed job: same id
    run_id = wandb_run_id(run_dir)
    assert run_id == wandb_run_id(run_dir / ".." / "run") != wandb_run_id(tmp_path / "other")
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    # wandb names the dir offline-run-<time>-<id>, with a -N suffix when two runs start in the same second
    assert len(offline) == 2 and all(f"-{run_id}" in p.name for p in offline)
    data = next(offline[0].glob("*.wandb")).read_bytes()
    for value in ("memrl", "meta/point_robot", "shm", "shm-point_robot-s3", run_id):
        assert value.encode() in data, value


def test_wandb_mode_follows_the_environment_unless_set(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert compose_cfg(["logger=wandb"]).logger.wandb.mode == "disabled"
    assert compose_cfg(["logger=wandb", "logger.wandb.mode=online"]).logger.wandb.mode == "online"
    monkeypatch.delenv("WANDB_MODE")
    assert compose_cfg(["logger=wandb"]).logger.wandb.mode == "offline"


# ---------------------------------------------------------------- snapshots

def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


@pytest.mark.skipif(not HAS_GIT, reason="git not installed")
def test_snapshot_freezes_the_working_tree_with_its_commit(tmp_path):
    src = tmp_path / "proj"
    (src / "conf").mkdir(parents=True)
    (src / "a.py").write_text("A = 1\n")
    (src / "gone.py").write_text("x\n")
    (src / ".gitignore").write_text("conf/local/\nbig/\n")
    _git(src, "init", "-q")
    _git(src, "add", "-A")
    _git(src, "commit", "-q", "-m", "init")
    (src / "a.py").write_text("A = 2  # uncommitted\n")
    (src / "new.py").write_text("N = 1\n")
    (src / "gone.py").unlink()
    (src / "big").mkdir()
    (src / "big" / "data.bin").write_text("ignored\n")
    (src / "conf" / "local").mkdir()
    (src / "conf" / "local" / "slurm.yaml").write_text("partition: p\n")
    dest = src / "outputs" / "sweeps" / "s" / "code"  # inside the project, as by default
    meta = snapshot(src, dest)
    (src / "a.py").write_text("A = 3  # edited after submission\n")
    assert (dest / "a.py").read_text() == "A = 2  # uncommitted\n"
    assert (dest / "new.py").exists() and not (dest / "gone.py").exists() and not (dest / "big").exists()
    assert (dest / "conf" / "local" / "slurm.yaml").read_text() == "partition: p\n"
    head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert meta["commit"] == head
    assert subprocess.run(["git", "-C", str(dest), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip() == head
    status = subprocess.run(["git", "-C", str(dest), "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True).stdout
    assert " M a.py" in status and " D gone.py" in status
    assert not (dest / "outputs").exists()


def test_snapshot_of_a_plain_directory_is_a_copy(tmp_path):
    src = tmp_path / "proj"
    (src / "src").mkdir(parents=True)
    (src / "src" / "m.py").write_text("M = 1\n")
    (src / ".venv").mkdir()
    (src / ".venv" / "big").write_text("no\n")
    dest = src / "sweeps" / "s" / "code"
    meta = snapshot(src, dest)
    assert meta["method"] == "copy" and meta["commit"] is None  # (also for a plain dir inside a git checkout)
    assert (dest / "src" / "m.py").read_text() == "M = 1\n"
    assert not (dest / ".venv").exists() and not (dest / "sweeps").exists()


# ---------------------------------------------------------------- the paper launcher

def test_paper_dry_run_prints_the_exact_commands(tmp_path, capsys):
    sweep_dir = tmp_path / "s"
    assert paper.main(["meta", "--dry-run", "--launcher", "slurm", "--sweep-dir", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    cmd = (f"-m src.train -m hydra/launcher=slurm hydra.sweep.dir={sweep_dir.resolve()} seed=0,1,2,3,4 task=meta "
           "env=wind,wind_10_190,point_robot,point_robot_10_190 model=shm,gru,fwp,gpt2,s6,mlstm,ffm")
    assert cmd in out and "jobs (140):" in out
    assert "seed=4 task=meta env=point_robot_10_190 model=ffm" in out
    assert not sweep_dir.exists()  # a dry run touches nothing

    assert paper.main(["credit", "--dry-run", "--sweep-dir", str(sweep_dir), "--max-parallel", "3"]) == 0
    out = capsys.readouterr().out
    assert ("hydra/launcher=local" in out and "hydra.sweeper.max_batch_size=3" in out and "jobs (84):" in out
            and "env=visual_match,visual_match_500,key_to_door,key_to_door_500" in out)


def test_paper_sweep_options_and_errors(tmp_path, capsys):
    ovs = paper.sweep_overrides("meta", ["shm"], ["wind"], [3, 4], ["experiment=reference_sizes"])
    assert ovs == ["seed=3,4", "task=meta", "env=wind", "model=shm", "experiment=reference_sizes"]
    assert sweep.expand_jobs(ovs) == [["seed=3", "task=meta", "env=wind", "model=shm", "experiment=reference_sizes"],
                                      ["seed=4", "task=meta", "env=wind", "model=shm", "experiment=reference_sizes"]]
    sweep_dir = tmp_path / "s"
    assert paper.main(["meta", "--envs", "nope", "--sweep-dir", str(sweep_dir)]) == 2
    assert "conf/ has no env/nope.yaml" in capsys.readouterr().err and not sweep_dir.exists()


# ---------------------------------------------------------------- a real local sweep

@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory):
    """Two tiny jobs through launchers.sweep: snapshot + hydra/launcher=local (separate processes)."""
    sweep_dir = tmp_path_factory.mktemp("sweeps") / "smoke"
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "launchers.sweep", "--sweep-dir", str(sweep_dir), *TINY,
                        "model=gru,mlp"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return sweep_dir, time.time() - t0


@needs_submitit
def test_local_sweep_runs_each_job_in_its_own_dir_from_the_snapshot(smoke_sweep):
    sweep_dir, _ = smoke_sweep
    code = sweep_dir / "code"
    runs = sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())
    assert [p.name.split("_")[:3] for p in runs] == [["wind", "gru", "seed0"], ["wind", "mlp", "seed0"]]
    for run, model in zip(runs, ("gru", "mlp")):
        assert OmegaConf.load(run / ".hydra" / "config.yaml").model.name == model
        assert read_csv(run / "progress.csv") and (run / "checkpoints" / "last.pt").exists()
        hydra_cfg = OmegaConf.load(run / ".hydra" / "hydra.yaml").hydra
        assert hydra_cfg.runtime.cwd == str(code)  # launched from the frozen copy ...
        assert str(code / "conf") in [s.path for s in hydra_cfg.runtime.config_sources]  # ... and its conf/
        assert hydra_cfg.launcher._target_.endswith("LocalLauncher")
    assert (sweep_dir / ".submitit").is_dir() and (code / "snapshot.json").exists()
    assert "hydra/launcher=local" in (sweep_dir / "launch_command.txt").read_text()
    if HAS_GIT and (ROOT / ".git").exists():
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert f"commit: {head.strip()}" in (runs[0] / "git.txt").read_text()


@needs_submitit
def test_continue_relaunches_the_sweep_as_launched_and_finished_jobs_stop(smoke_sweep):
    sweep_dir, _ = smoke_sweep
    runs = sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())
    before = [(p / "progress.csv").read_text() for p in runs]
    r = subprocess.run([sys.executable, "-m", "launchers.sweep", "--continue", str(sweep_dir)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()) == runs  # the same job dirs
    assert [(p / "progress.csv").read_text() for p in runs] == before  # finished: resumed and stopped
    launches = (sweep_dir / "launch_command.txt").read_text().splitlines()
    assert len(launches) == 2 and launches[1].split(" && ")[1].endswith(launches[0].split(" && ")[1].split(" -m ", 1)[1])
    r = subprocess.run([sys.executable, "-m", "launchers.sweep", "--continue", str(runs[0])], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no launch_command.txt" in r.stderr


@needs_submitit
def test_status_reports_the_finished_sweep(smoke_sweep):
    sweep_dir, _ = smoke_sweep
    r = subprocess.run([sys.executable, "-m", "launchers.sweep", "--status", str(sweep_dir)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert lines[0] == str(sweep_dir.resolve()) and len(lines) == 4  # dir, header, two jobs
    for line, model in zip(lines[2:], ("gru", "mlp")):
        n = OmegaConf.load(next(sweep_dir.glob(f"wind_{model}_*")) / ".hydra" / "config.yaml").train.num_iters
        assert line.startswith(f"wind_{model}_seed0") and f"iter {n}/{n} (100%)" in line and line.endswith("finished")


def test_status_tells_running_paused_and_stopped_runs_apart(tmp_path):
    from launchers.status import run_status, total_iterations
    from src.loop import Trainer
    cfg = compose_cfg(TINY + ["train.num_iters=2"])
    run = tmp_path / "run"
    Trainer(cfg, run).run(cfg.logger)
    cfg.train.num_iters = 8  # the same rows against a larger budget: an unfinished run
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    row = run_status(run)
    rows = read_csv(run / "progress.csv")
    assert row["progress"] == f"{int(rows[-1]['env_steps']) / 1000:.0f}k env steps, iter 2/8 (25%)"
    assert row["state"].startswith("stopped, ≈ ") or row["state"] == "stopped"
    best = max(float(r["eval/success_eval"]) for r in rows)
    assert row["success (last / best)"] == f"{float(rows[-1]['eval/success_eval']):.3f} / {best:.3f}"

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from src.rundir import RunLock; "
                               f"RunLock({str(run)!r}).acquire(); print('held', flush=True); time.sleep(120)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run_status(run)["state"].startswith(f"running (pid {holder.pid})")
        os.kill(holder.pid, signal.SIGSTOP)
        assert run_status(run)["state"].startswith(f"paused (pid {holder.pid}, SIGSTOP)")
    finally:
        holder.kill()
        holder.wait()
    assert run_status(run)["state"].startswith("stopped")  # the lock died with its holder
    from launchers.status import status_table
    assert status_table([run]).splitlines()[-1] == f"continue: python -m src.train resume={run}"
    ppo = OmegaConf.create({"algo": {"name": "ppo"}, "train": {"env_steps": 15_000_000, "num_envs": 64, "rollout_len": 1024}})
    assert total_iterations(ppo) == 229  # ceil(15M / 65,536)
    credit = compose_cfg(["task=credit", "env=visual_match"])  # num_iters derived from env_steps by a resolver
    job = tmp_path / "credit"
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(credit, job / ".hydra" / "config.yaml")
    (job / "progress.csv").write_text("env_steps,iteration,time_s,eval/success_eval\n6000,1,5.0,0.5\n")
    r = subprocess.run([sys.executable, "-m", "launchers.sweep", "--status", str(job)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)  # a fresh process: no resolvers registered yet
    assert r.returncode == 0 and f"iter 1/{credit.train.num_iters} (" in r.stdout, r.stdout + r.stderr


@needs_submitit
def test_plot_renders_the_real_sweep(smoke_sweep, tmp_path, capsys):
    from src import plot
    sweep_dir, _ = smoke_sweep
    assert plot.main([str(sweep_dir), "--out", str(tmp_path)]) == 0
    png = tmp_path / "wind.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "summary.md").read_text()
    assert "| gru |" in table and "| mlp |" in table
    assert "code" not in capsys.readouterr().err  # the snapshot is not mistaken for a run


# ---------------------------------------------------------------- signal -> requeue -> resume

def _job_pids(sweep_dir):
    """Pids of the submitit job processes working for this sweep (not the launcher itself)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in cmd and any(str(sweep_dir).encode() in c for c in cmd):
            pids.append(int(d.name))
    return pids


@pytest.mark.slow
@needs_submitit
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the job process")
def test_signalled_local_job_is_requeued_and_resumes_in_its_dir(tmp_path):
    pytest.importorskip("wandb")
    sweep_dir = tmp_path / "sweep"
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true")
    args = [a for a in TINY if not a.startswith("logger=")] + [
        "logger=wandb", "logger.tensorboard=false", "train.num_iters=12", "train.updates_per_iter=10",
        "eval.interval=4", "seed=0"]
    proc = subprocess.Popen([sys.executable, "-m", "src.train", "-m", "hydra/launcher=local",
                             f"hydra.sweep.dir={sweep_dir}", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        ckpts = []
        while time.time() < deadline and not ckpts and proc.poll() is None:
            ckpts = list(sweep_dir.glob("*/checkpoints/last.pt"))
            time.sleep(0.2)
        assert ckpts, "no checkpoint appeared"
        run_dir = ckpts[0].parents[1]
        pids = _job_pids(sweep_dir)
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGUSR2)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    log = (run_dir / "train.log").read_text()
    assert "received SIGUSR2" in log and "resumed from" in log, log
    submitit_logs = "".join(p.read_text() for p in sweep_dir.glob(".submitit/*/*_log.*"))
    assert "Requeued job" in submitit_logs
    assert [p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()] == [run_dir]  # same dir after requeue
    iters = [int(r["iteration"]) for r in read_csv(run_dir / "progress.csv")]
    assert iters == sorted(set(iters)) and iters[-1] == 12
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(wandb_run_id(run_dir)) for p in offline)
