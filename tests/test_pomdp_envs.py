"""Occluded -P/-V envs: the generic observation mask against the unmasked env (new-tasks.md §2)."""
import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from omegaconf import OmegaConf

import envs
from envs.pomdp import MASKED_ENVS, ObservationMask, UnitActions, make_masked
from src.loop import episode_horizon
from tests.helpers import CONF

try:  # plain gymnasium MuJoCo envs below: MuJoCo's known deprecation notice must not write MUJOCO_LOG.TXT
    from envs._mujoco import install_warning_filter
    install_warning_filter()
except ImportError:
    pass

CLASSIC = [i for i, (base, _, _) in MASKED_ENVS.items() if not base.endswith("-v5")]
MUJOCO = [i for i, (base, _, _) in MASKED_ENVS.items() if base.endswith("-v5")]
ALL_IDS = CLASSIC + [pytest.param(i, marks=pytest.mark.mujoco) for i in MUJOCO]

# conf/env/<name>.yaml of each registered id
CONF_NAMES = {"memrl/Pendulum-P-v0": "pendulum_p", "memrl/Pendulum-V-v0": "pendulum_v",
              "memrl/CartPole-P-v0": "cartpole_p", "memrl/CartPole-V-v0": "cartpole_v",
              "memrl/HalfCheetah-P-v0": "halfcheetah_p", "memrl/HalfCheetah-V-v0": "halfcheetah_v",
              "memrl/Hopper-P-v0": "hopper_p", "memrl/Hopper-V-v0": "hopper_v",
              "memrl/Walker2d-P-v0": "walker_p", "memrl/Walker2d-V-v0": "walker_v",
              "memrl/Ant-P-v0": "ant_p", "memrl/Ant-V-v0": "ant_v"}


def needs_mujoco(env_id):
    if MASKED_ENVS[env_id][0].endswith("-v5"):
        pytest.importorskip("mujoco")


def conf_env(name):
    return OmegaConf.load(CONF / "env" / f"{name}.yaml").env


def test_every_registered_id_has_a_conf_with_the_same_index_list():
    assert set(CONF_NAMES) == set(MASKED_ENVS)
    for env_id, name in CONF_NAMES.items():
        ev = conf_env(name)
        base, keep, base_kwargs = MASKED_ENVS[env_id]
        assert ev.id == env_id and ev.name == name
        assert list(ev.kwargs.keep) == keep, name
        for k, v in base_kwargs.items():
            assert ev.kwargs[k] == v


@pytest.mark.parametrize("stem", ["Pendulum", "CartPole", "HalfCheetah", "Hopper", "Walker2d", "Ant"])
def test_p_and_v_split_the_full_observation(stem):
    """-P and -V are disjoint and together cover every index of the base observation."""
    base, p, kwargs = MASKED_ENVS[f"memrl/{stem}-P-v0"]
    _, v, _ = MASKED_ENVS[f"memrl/{stem}-V-v0"]
    if base.endswith("-v5"):
        pytest.importorskip("mujoco")
    dim = gym.make(base, **kwargs).observation_space.shape[0]
    assert not set(p) & set(v) and sorted(p + v) == list(range(dim))


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_check_env(env_id):
    needs_mujoco(env_id)
    env = envs.make(env_id)
    check_env(env, skip_render_check=True)
    assert env.observation_space.shape == (len(MASKED_ENVS[env_id][1]),)
    if isinstance(env.action_space, spaces.Box):  # the policy box
        assert (env.action_space.low == -1).all() and (env.action_space.high == 1).all()


def _scaled(base_env, a):
    """The base env's action for policy action a in [-1, 1] (unchanged where the box is [-1, 1])."""
    box = base_env.action_space
    if not isinstance(box, spaces.Box) or ((box.low == -1).all() and (box.high == 1).all()):
        return a
    lo, hi = box.low.astype(np.float64), box.high.astype(np.float64)
    return (lo + (np.clip(a.astype(np.float64), -1, 1) + 1) * 0.5 * (hi - lo)).astype(box.dtype)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_mask_keeps_exactly_the_listed_entries_of_the_full_observation(env_id):
    """The masked env and the plain base env, same seed and same actions: the masked observation is
    the full one at the kept indices, step for step; rewards and episode ends agree."""
    needs_mujoco(env_id)
    base_id, keep, kwargs = MASKED_ENVS[env_id]
    masked, full = envs.make(env_id), gym.make(base_id, **kwargs)
    o_m, _ = masked.reset(seed=5)
    o_f, _ = full.reset(seed=5)
    assert o_m.dtype == o_f.dtype and np.array_equal(o_m, o_f[keep])
    masked.action_space.seed(3)
    for _ in range(25):
        a = masked.action_space.sample()
        o_m, r_m, term_m, trunc_m, _ = masked.step(a)
        o_f, r_f, term_f, trunc_f, _ = full.step(_scaled(full, a))
        assert np.array_equal(o_m, o_f[keep])
        assert r_m == pytest.approx(r_f, rel=1e-6) and (term_m, trunc_m) == (term_f, trunc_f)
        if term_m:
            break


@pytest.mark.mujoco
@pytest.mark.parametrize("stem,skip,vclip", [("HalfCheetah", 1, np.inf), ("Hopper", 1, 10), ("Walker2d", 1, 10),
                                             ("Ant", 2, np.inf)])
def test_mujoco_p_is_qpos_and_v_is_qvel(stem, skip, vclip):
    """-P = qpos without the excluded x (and y) coordinates, -V = qvel (new-tasks.md §2; Hopper
    and Walker2d v5 clip the observed velocities to ±10)."""
    pytest.importorskip("mujoco")
    for part, expect in (("P", lambda d: d.qpos[skip:]), ("V", lambda d: np.clip(d.qvel, -vclip, vclip))):
        env = envs.make(f"memrl/{stem}-{part}-v0")
        env.reset(seed=0)
        obs, *_ = env.step(env.action_space.sample())
        assert np.array_equal(obs, expect(env.unwrapped.data))


def test_observation_space_is_sliced_with_bounds_and_dtype():
    base = gym.make("CartPole-v1")
    env = ObservationMask(base, [3, 0])
    b = base.observation_space
    assert env.observation_space.dtype == b.dtype
    assert np.array_equal(env.observation_space.low, b.low[[3, 0]])
    assert np.array_equal(env.observation_space.high, b.high[[3, 0]])
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


@pytest.mark.parametrize("keep,match", [([0, 4], r"indices \[4\] are not in \[0, 4\)"),
                                         ([-1], r"indices \[-1\]"), ([], "non-empty"),
                                         ([1, 1], "repeats an index")])
def test_bad_index_lists_are_named(keep, match):
    with pytest.raises(ValueError, match=match):
        ObservationMask(gym.make("CartPole-v1"), keep)
    with pytest.raises(ValueError, match=match):
        envs.make("memrl/CartPole-V-v0", keep=keep)


def test_non_vector_observation_is_rejected():
    class Img(gym.Env):
        observation_space = spaces.Box(0, 255, (5, 5, 3), np.uint8)
        action_space = spaces.Discrete(2)
    with pytest.raises(ValueError, match="1-D Box"):
        ObservationMask(Img(), [0])


def test_pendulum_actions_are_rescaled_onto_the_torque_box():
    env = make_masked("Pendulum-v1", [2])
    assert isinstance(env.env, UnitActions)
    assert np.allclose(env.env.action(np.array([-1.0])), [-2.0])
    assert np.allclose(env.env.action(np.array([0.25])), [0.5])
    assert np.allclose(env.env.action(np.array([7.0])), [2.0])  # clipped to the box


@pytest.mark.parametrize("env_id,horizon", [("memrl/Pendulum-V-v0", 200), ("memrl/CartPole-P-v0", 500),
                                            pytest.param("memrl/HalfCheetah-V-v0", 1000, marks=pytest.mark.mujoco),
                                            pytest.param("memrl/Ant-P-v0", 1000, marks=pytest.mark.mujoco)])
def test_episode_horizon_is_the_base_time_limit(env_id, horizon):
    needs_mujoco(env_id)
    assert episode_horizon(envs.make(env_id)) == horizon
    assert episode_horizon(envs.make(env_id, max_episode_steps=7)) == 7


@pytest.mark.parametrize("env_id,T", [("memrl/Pendulum-P-v0", 200),
                                      pytest.param("memrl/HalfCheetah-V-v0", 1000, marks=pytest.mark.mujoco)])
def test_truncation_at_the_time_limit(env_id, T):
    """Pendulum and HalfCheetah never terminate: exactly T steps, truncated on the last only."""
    needs_mujoco(env_id)
    env = envs.make(env_id)
    env.reset(seed=0)
    ends = []
    for _ in range(T):
        *_, term, trunc, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        ends.append((term, trunc))
    assert ends[-1] == (False, True) and not any(t or u for t, u in ends[:-1])
    assert "success" not in info  # no success criterion is invented


def test_same_seed_same_episode():
    a, b = envs.make("memrl/Pendulum-V-v0"), envs.make("memrl/Pendulum-V-v0")
    assert np.array_equal(a.reset(seed=9)[0], b.reset(seed=9)[0])
    assert not np.array_equal(a.reset(seed=9)[0], a.reset(seed=10)[0])


@pytest.mark.mujoco
def test_mujoco_warnings_become_python_warnings_without_a_log_file(tmp_path, monkeypatch):
    """MuJoCo's compile-time deprecation of Gymnasium's own half_cheetah.xml is dropped (it would be
    printed once per env and written to MUJOCO_LOG.TXT in the working directory); others warn."""
    pytest.importorskip("mujoco")
    from envs import _mujoco
    monkeypatch.chdir(tmp_path)
    envs.make("memrl/HalfCheetah-V-v0")
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    with pytest.warns(RuntimeWarning, match="MuJoCo: something else"):
        _mujoco._on_mujoco_warning("something else")
