"""src.plot on synthetic run dirs (the real-sweep case is in test_sweeps.py)."""
import csv
import re

import numpy as np
import pytest

from src import plot

PNG = b"\x89PNG\r\n\x1a\n"


def table_row(md, label):
    """The cells of the first table row of ``label`` in ``md``, the IQM's interval left out."""
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| {label} |"))
    return [re.sub(r" \[.*\]$", "", c.strip()) for c in line.strip("|").split("|")]


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
    wind = md[md.index("### wind"):]
    # shm finals: 0.5 + 0.1*seed over seeds 0,1,2 -> 0.6 ± std([0.5,0.6,0.7]) = 0.082; IQM of 3 = mean
    assert table_row(wind, "shm") == ["shm", "0.600 ± 0.082", "0.600", "3", "0,1,2", "300"]
    lo, hi = plot.stratified_bootstrap_ci([[0.5, 0.6, 0.7]])
    assert f"0.600 [{lo:.3f}, {hi:.3f}]" in wind and 0.5 <= lo < 0.6 < hi <= 0.7
    assert table_row(wind, "gru") == ["gru", "0.300 ± 0.082", "0.300", "3", "0,1,2", "300"]
    assert wind.index("| shm |") < wind.index("| gru |")  # paper order
    # finals 0.5 (at 250 steps) and 0.6 (at 300: the cut-short row at 400 is ignored)
    assert table_row(wind, "mlp") == ["mlp", "0.550 ± 0.050", "0.550", "2", "0,1", "250–300"]
    # across envs: shm's 6 finals (0.5, 0.6, 0.7 in both envs): IQM drops one 0.5 and one 0.7 -> 0.6
    across = md[md.index("### all envs"):]
    assert table_row(across, "shm") == ["shm", "0.600", "point_robot, wind", "6"]
    assert "| mlp |" not in across  # mlp ran on wind only
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
    md = (run / "plots" / "summary.md").read_text()
    assert "| shm | 0.500 ± 0.000 | 0.500 [0.500, 0.500] | 1 | 0 | 300 |" in md  # one seed: a point interval
    assert "### all envs" not in md


def test_nothing_to_plot_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert plot.main([str(tmp_path / "empty"), str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert "no run directories" in err and "missing: not a directory" in err and "error: no run" in err


# ------------------------------------------------------------------ IQM and its bootstrap interval
def test_the_default_metric_is_the_runs_own_measure(tmp_path, capsys):
    """PPO runs (POPGym: returns only) are plotted by eval/return_train without --metric."""
    for seed in range(2):
        run = tmp_path / "popgym" / f"repeat_previous_easy_shm_seed{seed}"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(
            f"seed: {seed}\nalgo:\n  name: ppo\nenv:\n  name: repeat_previous_easy\nmodel:\n  name: shm\n")
        with open(run / "progress.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["env_steps", "iteration", "eval/return_train", "eval/mmer"])
            w.writerows([[65536, 1, -0.5, -0.5], [131072, 2, 0.25 + seed / 4, 0.25 + seed / 4]])
    assert plot.default_metric(sorted((tmp_path / "popgym").iterdir())) == "eval/return_train"
    assert plot.main([str(tmp_path / "popgym"), "--out", str(tmp_path / "out")]) == 0
    assert "metric: eval/return_train" in capsys.readouterr().err
    md = (tmp_path / "out" / "summary.md").read_text()
    assert md.startswith("# Final eval/return_train") and table_row(md, "shm")[1] == "0.375 ± 0.125"
    (tmp_path / "popgym" / "repeat_previous_easy_shm_seed0" / ".hydra" / "config.yaml").write_text(
        "seed: 0\neval:\n  best_by: return\nenv:\n  name: halfcheetah_v\nmodel:\n  name: shm\n")
    runs = [tmp_path / "popgym" / "repeat_previous_easy_shm_seed0"]
    assert plot.default_metric(runs) == "eval/return_eval"  # a task without success
    (runs[0] / ".hydra" / "config.yaml").write_text(  # saved before eval.best_by: task=pomdp's measure
        "seed: 0\ntask:\n  name: pomdp\neval:\n  interval: 4\nenv:\n  name: halfcheetah_v\nmodel:\n  name: shm\n")
    assert plot.default_metric(runs) == "eval/return_eval"
    make_run(tmp_path / "wind_gru_seed0", "wind", "gru", 0, [0], [0.5])
    assert plot.default_metric([tmp_path / "wind_gru_seed0"]) == "eval/success_eval"


def test_iqm_matches_hand_computed_values():
    # 8 scores: drop the 2 lowest (1, 2) and 2 highest (7, 8): mean(3, 4, 5, 6) = 4.5
    assert plot.iqm([5, 1, 8, 3, 7, 2, 6, 4]) == pytest.approx(4.5)
    # sorted 0.1 0.2 | 0.3 0.4 0.5 0.8 | 0.9 1.0 -> 2.0 / 4
    assert plot.iqm([0.1, 0.9, 0.2, 0.8, 0.5, 0.4, 0.3, 1.0]) == pytest.approx(0.5)
    # an outlier does not move it: 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 100 -> 0.5
    assert plot.iqm([0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 100]) == pytest.approx(0.5)
    # n = 5: floor(5/4) = 1 cut each side (scipy's trim_mean(x, 0.25)): mean(2, 3, 4) = 3
    assert plot.iqm([10, 2, 3, 4, -10]) == pytest.approx(3.0)
    assert plot.iqm([1.0, 2.0, 6.0]) == pytest.approx(3.0)  # n < 4: the mean
    assert plot.iqm([[1, 2], [3, 4]]) == pytest.approx(2.5)  # flattened
    assert np.allclose(plot.iqm_rows(np.array([[5, 1, 8, 3, 7, 2, 6, 4], [1, 1, 1, 1, 9, 9, 9, 9]])), [4.5, 5.0])
    with pytest.raises(ValueError, match="no scores"):
        plot.iqm([])


def test_bootstrap_ci_contains_the_estimate_and_shrinks_with_more_seeds():
    rng = np.random.default_rng(1)
    widths = []
    for n in (5, 20, 80):
        scores = rng.normal(0.5, 0.2, size=n)
        lo, hi = plot.stratified_bootstrap_ci([scores], n_boot=4000)
        assert lo <= plot.iqm(scores) <= hi
        assert lo < hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    # reproducible: a fixed seed gives the same interval
    assert plot.stratified_bootstrap_ci([[0.1, 0.4, 0.9, 0.3]]) == plot.stratified_bootstrap_ci([[0.1, 0.4, 0.9, 0.3]])


def test_bootstrap_is_stratified_by_task():
    # Task A all 0, task B all 1, 4 seeds each: every resample keeps 4 zeros and 4 ones, so the
    # pooled IQM is always 0.5 (pooled resampling would give anything from 0 to 1).
    lo, hi = plot.stratified_bootstrap_ci([np.zeros(4), np.ones(4)], n_boot=2000)
    assert lo == hi == 0.5
    lo, hi = plot.stratified_bootstrap_ci([np.r_[np.zeros(4), np.ones(4)]], n_boot=2000)
    assert lo < 0.5 < hi
    # unequal strata sizes: each stratum is resampled at its own size
    lo, hi = plot.stratified_bootstrap_ci([[0.0], [1.0, 1.0, 1.0]], n_boot=500)
    assert lo == hi == 1.0  # IQM of (0, 1, 1, 1) drops 0 and one 1
    with pytest.raises(ValueError, match="n_boot"):
        plot.stratified_bootstrap_ci([[1.0]], n_boot=0)


def test_long_labels_widen_the_figure_and_keep_the_axes(tmp_path):
    """The legend sits right of the axes: a long label (e.g. ``--label algo.lr_schedule``) widens the
    saved image instead of squeezing the curves into a sliver."""
    import matplotlib.image

    widths = {}
    for name, label in (("short", "shm"), ("long", "shm_" + "x" * 80)):
        make_run(tmp_path / name / "run", "wind", label, 0, [0, 100, 200], [0.0, 0.3, 0.6])
        assert plot.main([str(tmp_path / name / "run"), "--out", str(tmp_path / name / "plots")]) == 0
        _, widths[name], _ = matplotlib.image.imread(tmp_path / name / "plots" / "wind.png").shape
    assert widths["long"] > widths["short"] + 300  # ~80 more characters of legend at fontsize 8, 150 dpi
