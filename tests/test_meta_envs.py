"""Meta-RL envs against the reference facts (ref-pomdp-baselines.md §5)."""
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.meta import MultiEpisode, PointRobotEnv, WindEnv
from envs.meta.tasks import point_robot_tasks, split_tasks, wind_tasks


def test_task_sets_and_splits_match_reference_values():
    winds, rs = wind_tasks(200, 1337)
    train, ev = split_tasks(rs, 200, 50, 150)
    assert list(train[:5]) == [67, 193, 117, 142, 118]
    assert np.allclose(winds[67], [0.0272, -0.0883], atol=1e-4)
    goals, rs = point_robot_tasks(200, 1337)
    train, ev = split_tasks(rs, 200, 50, 150)
    assert list(train[:5]) == [33, 194, 175, 59, 170]
    assert np.allclose(goals[33], [0.982, 0.186], atol=1e-3)
    assert np.allclose(np.linalg.norm(goals, axis=1), 1.0) and (goals[:, 1] >= 0).all()


@pytest.mark.parametrize("n_train,n_eval", [(50, 150), (10, 190)])
def test_splits_are_disjoint_and_seed_independent(n_train, n_eval):
    env = WindEnv()
    train, ev = env.task_split(n_train, n_eval)
    assert len(train) == n_train and len(ev) == n_eval
    assert not set(train) & set(ev)
    assert np.array_equal(train, WindEnv().task_split(n_train, n_eval)[0])
    state = np.random.get_state()[1].copy()
    WindEnv(task_seed=7).task_split(n_train, n_eval)
    assert np.array_equal(state, np.random.get_state()[1]), "global numpy RNG touched"


def test_split_larger_than_task_set_is_rejected():
    with pytest.raises(ValueError, match="larger than num_tasks"):
        WindEnv().task_split(100, 150)


def test_wind_dynamics_and_reward():
    env = WindEnv()
    obs, _ = env.reset(seed=0, options={"task": 67})
    assert np.array_equal(obs, [0.0, 0.0])
    w = env.winds[67]
    obs, r, term, trunc, info = env.step(np.array([2.0, -0.5]))  # clipped to [1, -0.5] -> 0.1 * a
    assert np.allclose(obs, np.array([0.1, -0.05]) + w, atol=1e-6)
    assert r == 0.0 and not term and not trunc and not info["is_goal"]
    for _ in range(98):
        obs, r, term, trunc, info = env.step(np.zeros(2))
    assert not trunc
    obs, r, term, trunc, info = env.step(np.zeros(2))
    assert trunc and not term and info["success"] is False


def _wind_controller_success(env, task):
    """Knows the wind: steps toward the goal, cancelling the wind, as fast as the box allows."""
    env.reset(options={"task": task})
    success = False
    for _ in range(env.max_episode_steps):
        need = env.goal - env._pos - env.winds[task]          # displacement still needed
        a = np.clip(need / env.max_step, -1, 1)
        _, r, _, trunc, info = env.step(a)
        success |= r == 1.0
        if trunc:
            assert info["success"] == success
    return success


def test_wind_oracle_solves_every_reachable_task_and_95_percent_are_reachable():
    env = WindEnv()
    # Reachable in 100 steps iff net y-speed 0.1 + w_y (x can always be cancelled) covers 1 - radius.
    reachable = 100 * (0.1 + env.winds[:, 1]) >= 1.0 - env.goal_radius
    assert 0.93 <= reachable.mean() <= 0.97
    for task in range(env.n_tasks):
        assert _wind_controller_success(env, task) == reachable[task], task
    train, ev = env.task_split(50, 150)
    assert reachable[train].sum() == 49 and reachable[ev].sum() == 140  # reference §5.2


def test_point_robot_start_goal_and_reward():
    env = PointRobotEnv()
    obs, _ = env.reset(seed=3, options={"task": 5})
    assert -1.5 <= obs[0] <= 1.5 and -0.5 <= obs[1] <= 1.5
    goal = env.goals[5]
    env._pos = goal - np.array([0.1, 0.0])
    _, r, _, _, info = env.step(np.array([1.0, 0.0]))  # lands exactly on the goal
    assert r == 1.0 and info["is_goal"]
    _, r, _, _, info = env.step(np.array([1.0, 0.0]))  # 0.1 away > 0.05 radius
    assert r == 0.0 and not info["is_goal"]


def test_point_robot_starts_come_from_env_seed():
    a, b = PointRobotEnv(), PointRobotEnv()
    oa = [a.reset(seed=11)[0] for _ in range(1)] + [a.reset()[0] for _ in range(3)]
    ob = [b.reset(seed=11)[0] for _ in range(1)] + [b.reset()[0] for _ in range(3)]
    assert np.array_equal(np.array(oa), np.array(ob))
    assert not np.array_equal(oa[1], oa[2])


def test_multi_episode_wrapper_returns_fresh_start_and_flags_boundaries():
    env = MultiEpisode(PointRobotEnv(max_episode_steps=5), episodes_per_task=2)
    obs, _ = env.reset(seed=0, options={"task": 3})
    assert obs.shape == (3,) and obs[2] == 0.0
    flags, idx = [], []
    for t in range(10):
        obs, r, term, trunc, info = env.step(np.zeros(2))
        flags.append(obs[2])
        idx.append(info["episode_index"])
        if t == 4:  # boundary: the observation is the new episode's start, flagged
            assert not (term or trunc)
            assert np.array_equal(obs[:2], env.unwrapped._pos.astype(np.float32))
            assert env.unwrapped._t == 0
    assert trunc and "success" in info
    assert flags == [0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    assert idx == [0] * 5 + [1] * 5
    assert env.unwrapped.task == 3


def test_multi_episode_success_counts_any_episode():
    env = MultiEpisode(PointRobotEnv(max_episode_steps=3), episodes_per_task=2)
    env.reset(seed=0, options={"task": 0})
    env.unwrapped._pos = env.unwrapped.goals[0].copy()
    env.step(np.zeros(2))  # in the goal during episode 1
    for _ in range(5):
        *_, info = env.step(np.array([1.0, 1.0]))
    assert info["success"] is True


@pytest.mark.parametrize("env_id,k", [("memrl/Wind-v0", 1), ("memrl/PointRobot-v0", 2)])
def test_check_env(env_id, k):
    env = envs.make(env_id, k)
    check_env(env, skip_render_check=True)
    check_env(env.unwrapped, skip_render_check=True)


def test_unknown_env_id_lists_known_ones():
    with pytest.raises(ValueError, match="memrl/Wind-v0"):
        envs.make("memrl/Nope-v0")
    assert "memrl/Wind-v0" in gym.registry


def test_a_broken_credit_env_module_is_an_import_error_not_an_unknown_id(monkeypatch):
    """envs.register_all must not swallow the credit envs' ImportError (it would surface later as
    "unknown env id")."""
    import sys
    monkeypatch.setitem(sys.modules, "envs.credit", None)  # importing it now raises ImportError
    with pytest.raises(ImportError, match="envs.credit"):
        envs.register_all()
