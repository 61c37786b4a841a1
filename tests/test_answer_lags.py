"""src.answer_lags: the lag profile of RepeatPrevious answers, checked with hand-made policies whose
answer lag is known (and against the env's own reward), and the CLI on a tiny PPO run."""
import csv
import functools

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from omegaconf import OmegaConf

import envs
from src import answer_lags
from src.evaluate import EvalError
from tests.helpers import compose_cfg

N_SUITS = 4


def vector_env(n, name="RepeatPreviousEasy", **kwargs):
    make = functools.partial(envs.make, "memrl/PopGym-v0", 1, name=name, **kwargs)
    return gym.vector.SyncVectorEnv([make] * n, autoreset_mode=AutoresetMode.SAME_STEP)


def recalling(lag, confidence=1.0):
    """A policy that answers the suit it saw ``lag`` steps before the current card (uniform before
    that card exists), with probability ``confidence`` on it."""
    history = []

    def policy(obs, first):
        if first.all():
            history.clear()
        history.append(obs[:, :N_SUITS].argmax(-1))
        p = np.full((len(obs), N_SUITS), 0.25)
        if len(history) > lag:
            p[:] = (1 - confidence) / (N_SUITS - 1)
            p[np.arange(len(obs)), history[-1 - lag]] = confidence
        return np.log(np.maximum(p, 1e-12))
    return policy


def test_a_policy_recalling_lag_k_minus_1_earns_the_full_return_and_peaks_there():
    venv = vector_env(32)
    rec = answer_lags.play_and_record(recalling(3), venv, seed=0)   # Easy: k = 4 -> lag 3
    # the env's own reward confirms the target lag: every scored answer right
    np.testing.assert_allclose(rec["returns"], 1.0, atol=1e-9)
    assert rec["suits"].shape == (32, 51) and rec["alive"].all()
    prof = answer_lags.lag_profile(rec, max_lag=7)
    assert prof["greedy"][3] == 1.0 and prof["prob"][3] == pytest.approx(1.0)
    others = np.delete(prof["greedy"], 3)
    assert np.all(np.abs(others - 0.25) < 0.06), others               # other lags: chance
    assert [acc for _, _, acc in answer_lags.accuracy_by_position(rec, 3)] == [1.0] * 4
    venv.close()


def test_a_policy_recalling_the_wrong_lag_peaks_at_its_own_lag():
    venv = vector_env(32)
    rec = answer_lags.play_and_record(recalling(1, confidence=0.7), venv, seed=1)
    prof = answer_lags.lag_profile(rec, max_lag=6)
    assert prof["greedy"][1] == 1.0 and prof["prob"][1] == pytest.approx(0.7)
    assert np.argmax(prof["greedy"]) == 1 and abs(prof["greedy"][3] - 0.25) < 0.06
    # sampled at 70 % on lag 1: the return is ≈ that of a chance-level answer at lag 3 (−0.5)
    assert -0.65 < rec["returns"].mean() < -0.35
    with pytest.raises(EvalError, match="max_lag=60"):
        answer_lags.lag_profile(rec, max_lag=60)
    venv.close()


def test_state_magnitude_takes_each_rows_largest_float_entry_and_growth_summarises_live_steps():
    import torch
    M = torch.tensor([[[1.0, -7.0], [2.0, 0.5]], [[0.25, 0.0], [-0.5, 0.125]]])   # [B=2, 2, 2]
    h = torch.tensor([[3.0, -4.0], [-9.0, 1.0]])                                # [B=2, 2]
    counter = torch.tensor([1000, 2000])                                        # integer: left out
    np.testing.assert_array_equal(answer_lags.state_magnitude((M, h, counter)), [7.0, 9.0])
    # 3 episodes, 4 steps; the third ends after step 1 (its later, huge values are not counted)
    mag = np.array([[1.0, 2.0, 4.0, 8.0], [3.0, 6.0, 12.0, 24.0], [5.0, 10.0, 1e9, 1e9]])
    alive = np.array([[True] * 4, [True] * 4, [True, True, False, False]])
    growth = answer_lags.state_growth(mag, alive)
    np.testing.assert_array_equal(growth, [[0, 3.0, 5.0], [1, 6.0, 10.0], [2, 8.0, 12.0], [3, 16.0, 24.0]])
    table = answer_lags.format_growth(growth, points=3)
    assert table.splitlines()[2:] == ["| 0 | 3 | 5 |", "| 2 | 8 | 12 |", "| 3 | 16 | 24 |"]


def test_other_envs_are_refused():
    venv = vector_env(2, name="AutoencodeEasy")
    with pytest.raises(EvalError, match="RepeatPrevious runs only; this run's env is AutoencodeEasy"):
        answer_lags.repeat_previous_env(venv)
    venv.close()


def test_the_cli_on_a_ppo_run(tmp_path, capsys):
    from src.ppo_loop import PPOTrainer
    from tests.test_ppo import TINY as PPO_TINY
    cfg = compose_cfg(PPO_TINY + ["model=gru", "eval.num_episodes=0"])
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    PPOTrainer(cfg, run).run(cfg.logger)
    assert answer_lags.main([str(run), "episodes=8", "max_lag=5"]) == 0
    out = capsys.readouterr().out
    assert "8 episodes, actions sampled" in out and "| 3 (target) |" in out
    with open(run / "eval" / "last" / "answer_lags.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["lag"]) for r in rows] == list(range(6))
    assert [int(r["target"]) for r in rows] == [0, 0, 0, 1, 0, 0]
    assert all(0.0 <= float(r["greedy_match"]) <= 1.0 and 0.0 <= float(r["probability"]) <= 1.0 for r in rows)
    # the GRU's state: one row per step of the 51-step episodes, |h| < 1 (tanh), and after the first
    # step never zero
    assert "| step | largest memory-state entry" in out
    with open(run / "eval" / "last" / "memory_state.csv") as f:
        growth = list(csv.DictReader(f))
    assert [int(r["step"]) for r in growth] == list(range(51))
    assert all(0.0 < float(r["median_abs_max"]) <= float(r["max_abs_max"]) < 1.0 for r in growth)
    # bad input: one line on stderr, exit code 2
    assert answer_lags.main([str(run), "lags=3"]) == 2
    assert "unknown argument lags=3" in capsys.readouterr().err
    assert answer_lags.main([str(tmp_path / "nowhere")]) == 2
    assert "no such run directory" in capsys.readouterr().err
