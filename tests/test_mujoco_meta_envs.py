"""MuJoCo meta-RL envs (new-tasks.md §3): task sets, splits, rewards against plain v5 envs."""
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from src.loop import episode_horizon

pytest.importorskip("mujoco")
pytestmark = pytest.mark.mujoco

from envs.meta.mujoco import AntDirEnv, HalfCheetahDirEnv, HalfCheetahVelEnv, HumanoidDirEnv  # noqa: E402

IDS = ["memrl/HalfCheetahVel-v0", "memrl/HalfCheetahDir-v0", "memrl/AntDir-v0", "memrl/HumanoidDir-v0"]
CLASSES = [HalfCheetahVelEnv, HalfCheetahDirEnv, AntDirEnv, HumanoidDirEnv]


@pytest.mark.parametrize("env_id", IDS)
def test_check_env_and_horizon(env_id):
    env = envs.make(env_id, 2)
    check_env(env, skip_render_check=True)
    check_env(env.unwrapped, skip_render_check=True)
    assert episode_horizon(env) == 200
    assert (env.action_space.low == -1).all() and (env.action_space.high == 1).all()


@pytest.mark.parametrize("cls", CLASSES)
def test_task_sets_come_from_task_seed_only(cls):
    state = np.random.get_state()[1].copy()
    a, b = cls(n_tasks=30, task_seed=4), cls(n_tasks=30, task_seed=4)
    assert np.array_equal(a.tasks, b.tasks)
    a.reset(seed=1)
    b.reset(seed=2)  # the run seed does not change the task set or the split
    assert np.array_equal(a.task_split(20, 10)[0], b.task_split(20, 10)[0])
    assert np.array_equal(a.task_split(20, 10)[1], b.task_split(20, 10)[1])
    c = cls(n_tasks=30, task_seed=5)
    if cls is HalfCheetahVelEnv or cls is HumanoidDirEnv:  # continuous task parameters
        assert not np.array_equal(a.tasks, c.tasks)
    assert not np.array_equal(a.task_split(20, 10)[0], c.task_split(20, 10)[0])
    assert np.array_equal(state, np.random.get_state()[1]), "global numpy RNG touched"


@pytest.mark.parametrize("n_train,n_eval", [(100, 20), (10, 110)])
def test_splits_are_disjoint(n_train, n_eval):
    train, ev = HalfCheetahVelEnv().task_split(n_train, n_eval)
    assert len(train) == n_train and len(ev) == n_eval and not set(train) & set(ev)
    assert set(train) | set(ev) <= set(range(120))
    with pytest.raises(ValueError, match="larger than num_tasks"):
        HalfCheetahVelEnv().task_split(100, 21)


def test_task_distributions():
    assert ((HalfCheetahVelEnv().tasks >= 0) & (HalfCheetahVelEnv().tasks <= 3)).all()
    assert set(HalfCheetahDirEnv().tasks) == {-1.0, 1.0}
    assert set(AntDirEnv().tasks) == {-1.0, 1.0}  # radians: the reference's draw
    assert set(AntDirEnv(directions="forward_backward").tasks) == {0.0, np.pi}
    for angles in (AntDirEnv(directions="circle").tasks, HumanoidDirEnv().tasks):
        assert ((angles >= 0) & (angles < 2 * np.pi)).all() and np.ptp(angles) > 5
    with pytest.raises(ValueError, match="directions='up'"):
        AntDirEnv(directions="up")


def _paired(env_cls, base_id, base_kwargs, task, steps=15, **kwargs):
    """Step the meta env and the plain v5 env with the same seed and actions; yield both results."""
    env = env_cls(**kwargs)
    base = gym.make(base_id, **base_kwargs)
    o, info = env.reset(seed=7, options={"task": task})
    ob, _ = base.reset(seed=7)
    assert np.array_equal(o, ob) and info["task"] == task
    rng = np.random.default_rng(0)
    low, high = base.action_space.low.astype(np.float64), base.action_space.high.astype(np.float64)
    for _ in range(steps):
        a = rng.uniform(-1, 1, size=env.action_space.shape).astype(np.float32)
        a_env = low + (a.astype(np.float64) + 1) * 0.5 * (high - low)  # [-1, 1] -> the v5 box
        out, out_b = env.step(a), base.step(a_env)
        assert np.array_equal(out[0], out_b[0]) and out[2] == out_b[2]  # same dynamics, termination
        yield env, a_env, out, out_b


def test_cheetah_vel_reward():
    for env, a, (_, r, _, _, info), (_, _, _, _, info_b) in _paired(HalfCheetahVelEnv, "HalfCheetah-v5", {}, task=3):
        v_star = env.tasks[3]
        assert r == pytest.approx(-abs(info_b["x_velocity"] - v_star) - 0.05 * np.sum(a ** 2))
        assert info["x_velocity"] == info_b["x_velocity"]


def test_cheetah_dir_reward():
    env = HalfCheetahDirEnv()
    task = int(np.flatnonzero(env.tasks == -1.0)[0])
    for env, a, (_, r, *_), (_, _, _, _, info_b) in _paired(HalfCheetahDirEnv, "HalfCheetah-v5", {}, task=task):
        assert r == pytest.approx(-info_b["x_velocity"] - 0.05 * np.sum(a ** 2))


@pytest.mark.parametrize("directions", ["reference", "circle"])
def test_ant_dir_reward(directions):
    kw = {"include_cfrc_ext_in_observation": False}
    for env, a, (_, r, *_), (_, r_b, _, _, info_b) in _paired(AntDirEnv, "Ant-v5", kw, task=5, directions=directions):
        g = env.tasks[5]
        along = np.cos(g) * info_b["x_velocity"] + np.sin(g) * info_b["y_velocity"]
        # v5's reward with its forward term (x velocity, weight 1) replaced by the velocity along g
        assert r == pytest.approx(r_b - info_b["x_velocity"] + along)


def test_humanoid_dir_reward_and_action_scale():
    for env, a, (_, r, *_), (_, r_b, _, _, info_b) in _paired(HumanoidDirEnv, "Humanoid-v5", {}, task=2, steps=8):
        g = env.tasks[2]
        along = np.cos(g) * info_b["x_velocity"] + np.sin(g) * info_b["y_velocity"]
        assert np.abs(a).max() <= 0.4 + 1e-6  # policy box [-1, 1] mapped onto ±0.4
        assert r == pytest.approx(r_b - 1.25 * info_b["x_velocity"] + 1.25 * along)


def test_task_is_kept_across_resets_and_validated():
    env = HalfCheetahVelEnv()
    env.reset(seed=0, options={"task": 17})
    env.reset()
    assert env.task == 17
    with pytest.raises(ValueError, match="task 120 out of range"):
        env.reset(options={"task": 120})


def test_two_episodes_of_200_steps_per_task():
    env = envs.make("memrl/HalfCheetahVel-v0", 2)
    obs, _ = env.reset(seed=0, options={"task": 4})
    assert obs.shape == (18,) and obs[-1] == 0.0
    flags, idx = [], []
    for t in range(400):
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        flags.append(obs[-1])
        idx.append(info["episode_index"])
        assert (term or trunc) == (t == 399)
    assert trunc and not term and "success" not in info  # no success criterion is invented
    assert idx == [0] * 200 + [1] * 200 and flags[199] == 1.0 and sum(flags) == 2.0
    assert env.unwrapped.task == 4


def test_reset_is_seeded():
    a, b = envs.make("memrl/AntDir-v0", 2), envs.make("memrl/AntDir-v0", 2)
    assert np.array_equal(a.reset(seed=3)[0], b.reset(seed=3)[0])
    assert not np.array_equal(a.reset(seed=3)[0], a.reset(seed=4)[0])
