"""src.evaluate on tiny smoke runs of every task family: the table, the pictures, checkpoint
choice, errors, and the recorded paths (checked against the env's own reward)."""
import csv
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from src import evaluate
from src.loop import Trainer
from tests.helpers import TINY, compose_cfg
from tests.test_credit_train import SHORT, TINY_CREDIT

ROOT = Path(__file__).resolve().parents[1]
META = ("wind", "point_robot")
FAMILIES = ("wind", "point_robot", "visual_match", "key_to_door", "tmaze_passive")


def overrides(env, *extra):
    base = TINY + [f"env={env}"] if env in META else TINY_CREDIT + [f"env={env}"] + SHORT[env]
    return base + list(extra)


def smoke_run(run_dir: Path, env: str, *extra) -> Path:
    """A complete tiny training run with the run directory layout of src.train (.hydra/config.yaml
    as Hydra saves it: unresolved)."""
    cfg = compose_cfg(overrides(env, *extra))
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    Trainer(cfg, run_dir).run(cfg.logger)
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    cache = {}

    def get(env):
        if env not in cache:
            cache[env] = smoke_run(tmp_path_factory.mktemp(env) / "run", env)
        return cache[env]
    return get


def fingerprint(run_dir: Path) -> dict:
    """Every file of the run outside eval/, with a hash of its bytes."""
    return {str(p.relative_to(run_dir)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and "eval" not in p.relative_to(run_dir).parts}


@pytest.mark.parametrize("env", FAMILIES)
def test_evaluate_a_smoke_run_of_every_family(runs, env, capsys):
    run = runs(env)
    before = fingerprint(run)
    assert evaluate.main([str(run), "videos=1", "tasks=2", "ckpt=last"]) == 0
    out = capsys.readouterr().out
    assert fingerprint(run) == before  # checkpoints, progress.csv, config: untouched
    assert "| split | episodes | success | return (mean ± std) |" in out
    assert "checkpoints/last.pt (iteration 2" in out
    d = run / "eval" / "last"
    res = json.loads((d / "results.json").read_text())
    m = res["metrics"]
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    splits = ("train", "eval") if env in META else ("eval",)
    for split in splits:
        n = int(cfg.env[f"num_{split}_tasks"]) if env in META else int(cfg.eval.num_episodes)
        assert m[f"eval/episodes_{split}"] == n
        assert 0.0 <= m[f"eval/success_{split}"] <= 1.0 and np.isfinite(m[f"eval/return_{split}"])
        assert f"| {split} | {n} | {m[f'eval/success_{split}']:.3f} |" in out
    if env == "point_robot":  # k = 2 episodes per task: a return column per episode
        assert "return ep1 | return ep2 |" in out and "eval/return_eval_ep2" in m
    if env in META:
        for split in splits:
            png = d / f"trajectories_{split}.png"
            with Image.open(png) as im:
                im.verify()
                assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
        assert not list(d.glob("*.gif"))
    else:
        gifs = sorted(d.glob("episode*.gif"))
        assert len(gifs) == 1 and gifs[0].name in ("episode1_success.gif", "episode1_fail.gif")
        horizon = int(cfg.env.horizon)
        with Image.open(gifs[0]) as im:
            assert im.format == "GIF" and im.n_frames == horizon + 1  # the reset frame + one per step
            panel = im.size
            assert panel[0] >= 360 and panel[1] > 18
        # key frames: each phase's first and the last (3 phases), or first, middle, last (T-Maze)
        with Image.open(gifs[0].with_suffix(".png")) as im:
            n = 3 if env == "tmaze_passive" else 4
            assert im.format == "PNG" and im.size == (n * panel[0] + 8 * (n - 1), panel[1])
        assert len(list(d.glob("*.png"))) == 1
    assert f"wrote {d / 'results.md'}" in out


def test_evaluate_a_ppo_run(tmp_path, capsys):
    from src.ppo_loop import PPOTrainer
    from tests.test_ppo import TINY as PPO_TINY
    cfg = compose_cfg(PPO_TINY + ["model=gru", "eval.num_episodes=0"])  # as task=popgym: no greedy episodes
    run = tmp_path / "run_algo.lr=0.001"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    trainer = PPOTrainer(cfg, run)
    trainer.run(cfg.logger)
    before = fingerprint(run)
    assert evaluate.main([str(run), "episodes=6", "ckpt=last"]) == 0
    out = capsys.readouterr().out
    assert fingerprint(run) == before
    m = json.loads((run / "eval" / "last" / "results.json").read_text())["metrics"]
    # the final weights (= last.pt) played greedily on the same seeded episodes give the same returns
    assert m["eval/return_eval"] == pytest.approx(trainer.play(6, 70_000, greedy=True).mean(), abs=1e-9)
    assert m["eval/episodes_eval"] == m["eval/episodes_sampled"] == 6 and -1 <= m["eval/return_sampled"] <= 1
    assert f"| greedy (argmax) | 6 | {m['eval/return_eval']:.3f} ± " in out and "| sampled (as in training) | 6 |" in out
    assert "checkpoints/last.pt (iteration 2, env steps 512)" in out


def test_checkpoint_choice(runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs("tmaze_passive"), run)
    shutil.rmtree(run / "eval", ignore_errors=True)
    (run / "checkpoints" / "best.pt").unlink(missing_ok=True)  # as a run made before best.pt existed
    # ckpt=best without best.pt: an error naming the file, nothing written
    assert evaluate.main([str(run), "ckpt=best"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(run / "checkpoints" / "best.pt") in err and "ckpt=last" in err
    assert not (run / "eval").exists()
    # auto prefers best.pt once it exists; last stays selectable
    shutil.copy(run / "checkpoints" / "last.pt", run / "checkpoints" / "best.pt")
    assert evaluate.main([str(run)]) == 0
    assert "checkpoints/best.pt" in capsys.readouterr().out and (run / "eval" / "best" / "results.json").exists()
    assert evaluate.main([str(run), "ckpt=last", f"out={tmp_path / 'mine'}", "videos=0"]) == 0
    res = json.loads((tmp_path / "mine" / "results.json").read_text())
    assert res["checkpoint"].endswith("last.pt") and not (run / "eval" / "last").exists()
    assert not list((tmp_path / "mine").glob("*.gif"))
    # the same weights give the same numbers, whichever file held them
    best = json.loads((run / "eval" / "best" / "results.json").read_text())
    assert best["metrics"] == res["metrics"]
    # a checkpoint file by path
    assert evaluate.main([str(run), f"ckpt={run / 'checkpoints' / 'last.pt'}", f"out={tmp_path / 'p'}"]) == 0


def test_run_without_checkpoint_exits_2_with_one_line(tmp_path):
    run = tmp_path / "run"
    cfg = compose_cfg(overrides("tmaze_passive"))
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    p = subprocess.run([sys.executable, "-m", "src.evaluate", str(run)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2
    err = p.stderr.strip()
    assert "\n" not in err and str(run / "checkpoints") in err and "resume=" in err, err
    assert not (run / "eval").exists()


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "no such run directory"),
    (["{bare}"], ".hydra/config.yaml is missing"),
    (["{run}", "ckpt=last"], "checkpoints/last.pt does not exist"),
    (["{run}", "ckpt={missing}/x.pt"], "no such file"),
    (["{run}", "episodes=0"], "episodes=0: must be >= 1"),
    (["{run}", "episodes=many"], "episodes=many: expected an integer"),
    (["{run}", "colour=red"], "unknown argument colour=red; valid keys: ckpt, episodes"),
    (["{run}", "{bare}"], "expected one run directory, got 2"),
])
def test_bad_input_is_exit_2(tmp_path, capsys, args, message):
    paths = {"missing": tmp_path / "missing", "bare": tmp_path / "bare", "run": tmp_path / "run"}
    paths["bare"].mkdir()
    (paths["run"] / ".hydra").mkdir(parents=True)
    (paths["run"] / ".hydra" / "config.yaml").write_text("seed: 0\n")
    assert evaluate.main([a.format(**paths) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("src.evaluate: error: ") and message in err and err.count("\n") == 1


def test_tasks_scored_by_return_show_no_success_column_value():
    m = {"eval/episodes_eval": 3, "eval/success_eval": 0.0, "eval/return_eval": -296.4, "eval/return_eval_std": 8.2}
    assert evaluate.format_table(m, ["eval"], 1).splitlines()[2] == "| eval | 3 | 0.000 | -296.40 ± 8.20 |"
    assert evaluate.format_table(m, ["eval"], 1, has_success=False).splitlines()[2] == "| eval | 3 | — | -296.40 ± 8.20 |"


def test_a_sweep_job_dir_with_an_equals_sign_is_the_run(tmp_path):
    job = tmp_path / "wind_gru_seed0_algo.lr=0.001,experiment=paper"  # as Hydra names multirun jobs
    job.mkdir()
    args = evaluate.parse_args([str(job), "episodes=3"])
    assert args["run_dir"] == job and args["episodes"] == 3
    rel = evaluate.parse_args(["sweep/job_seed=1", "ckpt=last"])  # a relative path (not made yet) too
    assert args["ckpt"] == "auto" and rel["run_dir"] == Path("sweep/job_seed=1") and rel["ckpt"] == "last"


def test_paths_match_the_env_rewards_and_seeds_fix_the_episodes():
    """PointRobot (k = 2 episodes per task, random starts) with a goal region large enough to be
    entered: each inner episode's return equals the number of recorded positions (after the start)
    inside the goal region, and success says whether there was one."""
    cfg = compose_cfg(overrides("point_robot", "env.kwargs.goal_radius=0.7"))
    trainer = Trainer(cfg, Path("/nonexistent"))
    tasks = list(trainer.train_tasks) + list(trainer.eval_tasks)
    eps = evaluate.run_episodes(trainer, tasks, seeds=range(len(tasks)))
    env = trainer._make_env().unwrapped
    for ep in eps:
        assert len(ep.paths) == 2 and [len(p) for p in ep.paths] == [101, 101] and ep.length == 200
        assert np.allclose(ep.goal, env.goals[ep.task])
        for path, ret in zip(ep.paths, ep.returns):
            steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
            assert steps.max() <= 0.1 * np.sqrt(2) + 1e-6  # one move per step, no jumps between episodes
            inside = np.linalg.norm(path[1:] - ep.goal, axis=1) <= 0.7
            assert ret == inside.sum()
        assert ep.success == any((np.linalg.norm(p[1:] - ep.goal, axis=1) <= 0.7).any() for p in ep.paths)
    assert any(ep.success for ep in eps) and not all(ep.returns.sum() == 0 for ep in eps)
    # the second episode starts afresh, not where the first ended
    assert not np.allclose(eps[0].paths[1][0], eps[0].paths[0][-1])
    # the env seeds fix the episodes: same seeds, same paths; other seeds, other starts
    again = evaluate.run_episodes(trainer, tasks, seeds=range(len(tasks)))
    assert all(np.array_equal(a.paths[0], b.paths[0]) for a, b in zip(again, eps))
    fewer = evaluate.run_episodes(trainer, tasks[:2], seeds=range(2))  # another batch size: float noise only
    assert all(np.allclose(a.paths[0], b.paths[0], atol=1e-6) for a, b in zip(fewer, eps))
    other = evaluate.run_episodes(trainer, tasks[:2], seeds=[7, 8])
    assert not np.allclose(other[0].paths[0][0], eps[0].paths[0][0])


def test_wind_paths_start_at_the_origin_and_carry_the_wind():
    cfg = compose_cfg(overrides("wind"))
    trainer = Trainer(cfg, Path("/nonexistent"))
    eps = evaluate.run_episodes(trainer, list(trainer.eval_tasks), seeds=range(3))
    env = trainer._make_env().unwrapped
    for ep in eps:
        assert len(ep.paths) == 1 and np.allclose(ep.paths[0][0], 0.0)
        assert np.allclose(ep.goal, [0.0, 1.0]) and np.allclose(ep.wind, env.winds[ep.task])


def test_key_frames():
    assert evaluate.key_frame_indices([0, 0, 1, 1, 1, 2, 2]) == [0, 2, 5, 6]
    assert evaluate.key_frame_indices([0] * 7) == [0, 3, 6]
    assert evaluate.key_frame_indices([0, 1]) == [0, 1]


def test_checkpoints_that_do_not_fit_are_exit_2(runs, tmp_path, capsys):
    run, other = runs("tmaze_passive"), runs("key_to_door")
    # another run's weights (pixels and a CNN there, two floats here)
    assert evaluate.main([str(run), f"ckpt={other / 'checkpoints' / 'last.pt'}", f"out={tmp_path / 'a'}"]) == 2
    err = capsys.readouterr().err
    assert "does not fit the run's config" in err and err.count("\n") == 1
    # a truncated file
    bad = tmp_path / "bad.pt"
    bad.write_bytes((run / "checkpoints" / "last.pt").read_bytes()[:100])
    assert evaluate.main([str(run), f"ckpt={bad}", f"out={tmp_path / 'b'}"]) == 2
    assert "cannot be read" in capsys.readouterr().err
    # a config that is not a training config, with a checkpoint beside it
    broken = tmp_path / "broken"
    (broken / ".hydra").mkdir(parents=True)
    (broken / ".hydra" / "config.yaml").write_text("seed: 0\nnum_threads: 1\ndevice: cpu\n")
    (broken / "checkpoints").mkdir()
    shutil.copy(run / "checkpoints" / "last.pt", broken / "checkpoints" / "last.pt")
    assert evaluate.main([str(broken)]) == 2
    assert "cannot build the agent" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (broken / "eval").exists()


def test_a_run_saved_by_an_older_commit_is_evaluated(runs, tmp_path, capsys):
    """Runs that predate a key rename (here: agent.actor_memory as a model name, as the Wind
    reproduction's snapshot saved it) load through upgrade_saved_config, as they resume."""
    old = tmp_path / "old_run"
    shutil.copytree(runs("wind"), old, ignore=shutil.ignore_patterns("eval"))
    cfg = OmegaConf.load(old / ".hydra" / "config.yaml")
    cfg.agent.actor_memory = "gru"
    for key in ("best_by", "num_episodes"):
        cfg.eval.pop(key, None)
    OmegaConf.save(cfg, old / ".hydra" / "config.yaml")
    assert evaluate.main([str(old), "ckpt=last", "tasks=0"]) == 0, capsys.readouterr().err
    assert "| split | episodes | success |" in capsys.readouterr().out


def test_episode_table_has_a_row_per_episode_with_the_wind(runs, capsys):
    run = runs("wind")
    assert evaluate.main([str(run), "ckpt=last", "tasks=0", "out=" + str(run / "eval" / "table")]) == 0
    rows = list(csv.DictReader(open(run / "eval" / "table" / "episodes.csv")))
    res = json.loads((run / "eval" / "table" / "results.json").read_text())["metrics"]
    for split in ("train", "eval"):
        mine = [r for r in rows if r["split"] == split]
        assert len(mine) == res[f"eval/episodes_{split}"]
        assert np.mean([int(r["success"]) for r in mine]) == pytest.approx(res[f"eval/success_{split}"])
        assert np.mean([float(r["return"]) for r in mine]) == pytest.approx(res[f"eval/return_{split}"])
    for r in rows:  # success at goal radius 0.01 (Wind's default) <=> ended within it
        assert abs(float(r["wind_x"])) <= 0.1 and abs(float(r["wind_y"])) <= 0.1
        assert (float(r["final_distance"]) <= 0.01) == bool(int(r["success"]))
