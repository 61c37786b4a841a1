"""docs/results bookkeeping: a kept run is a plottable run dir, and the table reads it right."""
import csv

import yaml

from src import results
from src.loop import Trainer
from tests.helpers import TINY, compose_cfg


def test_kept_run_is_plottable_and_tabled(tmp_path):
    run = tmp_path / "run"
    overrides = TINY + ["seed=3"]
    cfg = compose_cfg(overrides)
    Trainer(cfg, run).run(cfg.logger)
    (run / ".hydra").mkdir()
    from omegaconf import OmegaConf
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["experiment=smoke", "seed=3"]))
    (run / "git.txt").write_text("commit: 0123456789abcdef\ndirty: False\n")

    root = tmp_path / "results"
    kept = results.add(run, "g", note="tiny", root=root)
    assert (kept / "progress.csv").read_text() == (run / "progress.csv").read_text()
    from src.plot import find_run_dirs
    assert find_run_dirs([root / "g"])[0] == [kept]

    (root / "README.md").write_text(f"# R\n\n{results.BEGIN}\nold\n{results.END}\ntail\n")
    results.write_table(root)
    text = (root / "README.md").read_text()
    assert "old" not in text and text.endswith(f"{results.END}\ntail\n")
    with open(run / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    success = [float(r["eval/success_eval"]) for r in rows]
    row = results.summarize(kept)
    assert row["model"] == "gru" and row["seed"] == "3" and row["preset"] == "smoke"
    assert row["env steps"] == f"{int(rows[-1]['env_steps']):,}"
    assert row["final / best success"] == f"{success[-1]:.3f} / {max(success):.3f}"
    returns = [float(r["eval/return_eval"]) for r in rows]
    assert row["final / best return"] == f"{returns[-1]:.1f} / {max(returns):.1f}"
    assert row["commit"] == "0123456" and row["note"] == "tiny"
    assert row["command"] == "`python -m src.train experiment=smoke seed=3`"


def test_ppo_runs_are_tabled_by_their_training_return(tmp_path):
    """POPGym (PPO) runs have no success metric: the table shows the final mean return and its best
    (MMER)."""
    kept = tmp_path / "popgym" / "run"
    (kept / ".hydra").mkdir(parents=True)
    cfg = {"task": {"name": "popgym"}, "env": {"name": "repeat_previous_easy"}, "model": {"name": "shm"}, "seed": 0}
    (kept / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (kept / "progress.csv").write_text("env_steps,time_s,eval/return_train,eval/mmer\n"
                                       "10240,10,-0.5,-0.5\n20480,20,0.75,0.75\n30720,30,0.5,0.75\n")
    row = results.summarize(kept)
    assert row["final / best return"] == "0.500 / 0.750" and row["env steps"] == "30,720"
    assert row["final / best success"] == "—"


def test_name_names_one_run_only(tmp_path, capsys):
    assert results.main(["add", str(tmp_path / "a"), str(tmp_path / "b"), "--group", "g", "--name", "x"]) == 2
    assert "--name x names one run; 2 were given" in capsys.readouterr().err


def test_tasks_without_success_show_a_dash(tmp_path):
    """Runs scored by return (eval.best_by=return, and task=pomdp runs saved before that key) have
    no success column value, only returns."""
    progress = "env_steps,time_s,eval/return_eval,eval/success_eval\n10000,10,-555.4,0\n20000,20,-300.0,0\n"
    for name, cfg_eval in (("new", {"best_by": "return"}), ("old", {})):
        kept = tmp_path / "g" / name
        (kept / ".hydra").mkdir(parents=True)
        cfg = {"task": {"name": "pomdp"}, "env": {"name": "halfcheetah_v"}, "model": {"name": "gru"}, "seed": 0,
               "eval": cfg_eval}
        (kept / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
        (kept / "progress.csv").write_text(progress)
        row = results.summarize(kept)
        assert row["final / best success"] == "—" and row["final / best return"] == "-300.0 / -300.0"
