"""envs.batch: NavigationBatch (Wind/PointRobot stepped all at once) gives bit for bit what the envs'
own step gives (LoopBatch), rows stepped in any subset, and hands the envs back in that state."""
import numpy as np
import pytest

import gymnasium as gym

import envs
import envs.meta
from envs.batch import LoopBatch, batch_stepper
from envs.meta.batch import NavigationBatch

CASES = {  # (env id, episodes per task, env kwargs, TimeLimit wrapper's limit or None)
    "wind": ("memrl/Wind-v0", 1, {}, None),
    "wind-100": ("memrl/Wind-v0", 1, {"max_episode_steps": 100}, None),  # as conf/env/wind.yaml
    "wind-limit100": ("memrl/Wind-v0", 1, {}, 100),
    "wind-k3-limit20": ("memrl/Wind-v0", 3, {}, 20),  # the TimeLimit ends episodes first
    "wind-k3-horizon20": ("memrl/Wind-v0", 3, {"max_episode_steps": 20}, None),
    "point_robot-k2": ("memrl/PointRobot-v0", 2, {"max_episode_steps": 100}, None),  # as conf/env/point_robot.yaml
    "point_robot-k2-limit150": ("memrl/PointRobot-v0", 2, {}, 150),  # the env ends them first
    "point_robot": ("memrl/PointRobot-v0", 1, {}, None),
}


def make_env(env_id, k, kwargs, time_limit):
    if time_limit is None:
        return envs.make(env_id, k, **kwargs)
    env = gym.make(env_id, max_episode_steps=time_limit, **kwargs)  # gym's own TimeLimit wrapper
    return envs.meta.MultiEpisode(env, k) if k > 1 else env


def make_envs(case, n=5):
    env_list = [make_env(*CASES[case]) for _ in range(n)]
    for i, env in enumerate(env_list):
        env.reset(seed=100 + i, options={"task": 3 * i + 1})
    return env_list


def test_max_episode_steps_reaches_the_env():
    """env.kwargs.max_episode_steps sets the navigation env's own horizon (where it truncates and reports
    success), not a gym TimeLimit in front of an env that still thinks episodes last 100 steps."""
    from src.build import episode_horizon
    env = envs.make("memrl/Wind-v0", 1, max_episode_steps=50)
    assert env.unwrapped.max_episode_steps == 50 and episode_horizon(env) == 50
    env.reset(seed=0, options={"task": 0})
    for t in range(50):
        _, _, terminated, truncated, info = env.step(np.zeros(2, dtype=np.float32))
        assert not terminated and truncated == (t == 49)
    assert "success" in info


def env_state(env):
    nav = env.unwrapped
    multi = (env._episode, env._success, env._reports_success) if isinstance(env, envs.meta.MultiEpisode) else None
    limit = env.env if isinstance(env, envs.meta.MultiEpisode) else env
    elapsed = getattr(limit, "_elapsed_steps", None)
    return nav.position.tolist(), nav._t, nav._reached, multi, elapsed, nav.np_random.bit_generator.state


@pytest.mark.parametrize("case", CASES)
def test_navigation_batch_steps_like_the_envs(case):
    batch_envs, loop_envs = make_envs(case), make_envs(case)
    assert NavigationBatch.supports(batch_envs) and type(batch_stepper(batch_envs)) is NavigationBatch
    batch, loop = NavigationBatch(batch_envs), LoopBatch(loop_envs)
    rng = np.random.default_rng(0)
    n = len(batch_envs)
    alive = np.ones(n, dtype=bool)
    goals = successes = 0
    while alive.any():
        # half the steps head straight for the goal (exactly, against the wind): goal steps and
        # successes happen; the rest are random, some outside [-1, 1] (clipped)
        navs = [env.unwrapped for env in loop_envs]
        steer = np.stack([(nav.goal_position - nav.position - nav._drift()) / nav.max_step for nav in navs])
        actions = np.where(rng.random((n, 1)) < 0.5, steer, rng.uniform(-1.5, 1.5, (n, 2))).astype(np.float32)
        rows = np.flatnonzero(alive & (rng.random(n) < 0.8))  # any (non-empty) subset of the live envs
        if len(rows) == 0:
            continue
        got, want = batch.step(actions, rows), loop.step(actions, rows)
        for field, a, b in zip(got._fields, got, want):
            assert a.dtype == b.dtype and a.shape == b.shape, field
            np.testing.assert_array_equal(a, b, err_msg=field)
        alive[rows[want.terminated | want.truncated]] = False
        goals += int(want.is_goal.sum())
        successes += int(want.success.sum())
    assert goals > 0  # the goal path was exercised (and success, where the env's own ends come first)
    assert successes > 0 or "limit20" in case
    batch.close()
    for a, b in zip(batch_envs, loop_envs):
        assert env_state(a) == env_state(b)
    for a, b in zip(batch_envs, loop_envs):  # after close, the envs continue as if they had stepped themselves
        a.reset(options={"task": 0})
        b.reset(options={"task": 0})
        for _ in range(3):
            oa, ra, *_ = a.step(np.array([0.3, 0.9], dtype=np.float32))
            ob, rb, *_ = b.step(np.array([0.3, 0.9], dtype=np.float32))
            np.testing.assert_array_equal(oa, ob)
            assert ra == rb


def test_other_envs_step_one_by_one():
    env_list = [envs.make("memrl/TMazePassive-v0")]
    assert not NavigationBatch.supports(env_list) and type(batch_stepper(env_list)) is LoopBatch
    mixed = make_envs("wind", 2) + make_envs("point_robot-k2", 2)  # with and without the k-episode wrapper
    assert not NavigationBatch.supports(mixed) and type(batch_stepper(mixed)) is LoopBatch
    with pytest.raises(ValueError, match="Wind/PointRobot"):
        NavigationBatch(mixed)
