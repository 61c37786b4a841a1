"""src.plot on synthetic run dirs (the real-sweep case is in test_sweeps.py)."""
import csv

import numpy as np
import pytest

from src import plot

PNG = b"\x89PNG\r\n\x1a\n"


def make_run(path, env, model, seed, steps, values, extra_rows=()):
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(
        f"seed: {seed}\ntask:\n  name: meta\nenv:\n  name: {env}\n  num_tasks: 200\n  kwargs:\n"
        f"    n_tasks: ${{env.num_tasks}}\nmodel:\n  name: {model}\n")
    with open(path / "progress.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env_steps", "iteration", "eval/success_eval", "eval/success_train"])
        for i, (s, v) in enumerate(zip(steps, values)):
            w.writerow([s, i, v, ""])
        for row in extra_rows:
            w.writerow(row)


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    steps = [0, 100, 200, 300]
    for env in ("wind", "point_robot"):
        for model, base in (("shm", 0.5), ("gru", 0.2)):
            for seed in range(3):
                make_run(root / f"{env}_{model}_seed{seed}", env, model, seed, steps,
                         [base * k / 3 + 0.1 * seed for k in range(4)])
    # a seed evaluated at other steps, which also stopped early (interpolated, curve cut at 250)
    make_run(root / "wind_mlp_seed0", "wind", "mlp", 0, [0, 50, 150, 250], [0.0, 0.1, 0.3, 0.5])
    make_run(root / "wind_mlp_seed1", "wind", "mlp", 1, [0, 100, 200, 300], [0.0, 0.2, 0.4, 0.6],
             extra_rows=[["400", "4"]])  # a row cut short by a kill: ignored
    # partial sweep: a job that has not started, and one killed before its first evaluation
    (root / "wind_ffm_seed0" / ".hydra").mkdir(parents=True)
    (root / "wind_ffm_seed0" / ".hydra" / "config.yaml").write_text("seed: 0\nenv:\n  name: wind\nmodel:\n  name: ffm\n")
    make_run(root / "wind_ffm_seed1", "wind", "ffm", 1, [], [])
    (root / ".submitit" / "123").mkdir(parents=True)  # launcher logs: not runs
    return root


def test_plot_writes_a_png_per_env_and_the_final_table(sweep, tmp_path, capsys):
    out = tmp_path / "plots"
    assert plot.main([str(sweep), "--out", str(out)]) == 0
    for env in ("wind", "point_robot"):
        png = out / f"{env}.png"
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000
    md = (out / "summary.md").read_text()
    # shm finals: 0.5 + 0.1*seed over seeds 0,1,2 -> 0.6 ± std([0.5,0.6,0.7]) = 0.082
    assert "| shm | 0.600 ± 0.082 | 3 | 0,1,2 | 300 |" in md
    assert "| gru | 0.300 ± 0.082 | 3 | 0,1,2 | 300 |" in md
    assert md.index("| shm |") < md.index("| gru |")  # paper order
    # finals 0.5 (at 250 steps) and 0.6 (at 300: the cut-short row at 400 is ignored)
    assert "| mlp | 0.550 ± 0.050 | 2 | 0,1 | 250–300 |" in md
    err = capsys.readouterr().err
    assert "wind_ffm_seed0: no progress.csv" in err
    assert "wind_ffm_seed1: progress.csv has no rows" in err
    assert "wind/mlp: seeds reach different steps" in err
    assert ".submitit" not in err


def test_common_grid_interpolates_seeds_with_different_steps():
    a = plot.Run(None, "e", "m", 0, np.array([0.0, 10.0, 20.0]), np.array([0.0, 1.0, 2.0]))
    b = plot.Run(None, "e", "m", 1, np.array([0.0, 5.0, 10.0, 15.0]), np.array([0.0, 0.5, 1.0, 1.5]))
    x, mean, std, note = plot.aggregate([a, b])
    assert x.tolist() == [0.0, 5.0, 10.0, 15.0]
    assert np.allclose(mean, [0.0, 0.5, 1.0, 1.5]) and np.allclose(std, 0.0)
    assert "15" in note
    x, mean, std, note = plot.aggregate([a, a])
    assert x.tolist() == [0.0, 10.0, 20.0] and note is None


def test_single_run_dir_and_default_output(sweep, capsys):
    run = sweep / "wind_shm_seed0"
    assert plot.main([str(run), "--metric", "eval/success_eval"]) == 0
    assert (run / "plots" / "wind.png").read_bytes()[:8] == PNG
    assert "| shm | 0.500 ± 0.000 | 1 | 0 | 300 |" in (run / "plots" / "summary.md").read_text()


def test_nothing_to_plot_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert plot.main([str(tmp_path / "empty"), str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert "no run directories" in err and "missing: not a directory" in err and "error: no run" in err
