"""POPGym adapter: check_env for every POPGym env, one-hot observations, the MultiDiscrete -> Discrete
action map, the previous-action input, and golden trajectories that catch upstream dynamics changes."""
import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

pytest.importorskip("popgym")

import envs  # noqa: E402
from envs.popgym import GENERIC_ID, PopGymEnv, env_id, popgym_classes  # noqa: E402
from tests.popgym_golden import ENVS as GOLDEN_ENVS, GOLDEN, trajectory  # noqa: E402

TABLE1 = [f"{task}{level}" for task in ("Autoencode", "Battleship", "Concentration", "RepeatPrevious")
          for level in ("Easy", "Medium", "Hard")]
# Upstream choices that gymnasium's checker only warns about: unbounded velocities (VelocityOnlyCartPole)
# and the pendulum's torque box [-2, 2]. Every other warning fails the test.
UPSTREAM_WARNINGS = (r".*(minimum|maximum) value is -?infinity", r".*symmetric and normalized space")
ALL = sorted(c.__name__ for c in __import__("popgym.envs", fromlist=["ALL"]).ALL)


@pytest.mark.parametrize("name", ALL)
def test_check_env_every_popgym_env(name):
    env = envs.make(env_id(name))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # check_env's warnings (dtype, bounds, ...) are failures here
        for pattern in UPSTREAM_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("name", TABLE1)
def test_check_env_with_previous_action(name):
    env = envs.make(env_id(name), prev_action=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)


def test_observations_are_one_hot():
    env = PopGymEnv("AutoencodeEasy")  # obs: Tuple(Discrete(2) is-playing flag, Discrete(4) suit)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == (6,) and obs.dtype == np.float32
    assert obs[:2].sum() == 1 and obs[2:].sum() == 1 and set(np.unique(obs)) <= {0.0, 1.0}
    raw = env.env.observation_space
    assert isinstance(raw, gym.spaces.Tuple) and [s.n for s in raw.spaces] == [2, 4]


def test_repeat_previous_observation_is_the_dealt_suit():
    env = PopGymEnv("RepeatPreviousEasy")
    obs, _ = env.reset(seed=5)
    assert obs.argmax() == env.env.card and obs.sum() == 1


def test_multidiscrete_actions_become_one_discrete_index():
    env = PopGymEnv("BattleshipEasy")  # MultiDiscrete([8, 8]) cells
    assert env.action_space == gym.spaces.Discrete(64)
    env.reset(seed=0)
    env.step(8 * 3 + 5)  # row 3, column 5
    assert env.env.guesses[3, 5] == 1 and env.env.guesses.sum() == 1


def test_previous_action_is_appended_zeros_at_reset():
    env = PopGymEnv("RepeatPreviousEasy", prev_action=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (8,) and not obs[4:].any()
    obs, *_ = env.step(2)
    assert obs[4:].tolist() == [0, 0, 1, 0]
    obs, _ = env.reset()
    assert not obs[4:].any()


def test_episode_ends_by_itself_at_max_episode_steps():
    env = PopGymEnv("RepeatPreviousEasy")
    env.reset(seed=0)
    for t in range(env.max_episode_steps):
        _, _, term, trunc, _ = env.step(0)
        assert (term or trunc) == (t == env.max_episode_steps - 1)


def test_same_seed_same_episode_different_seed_differs():
    a, b, c = (trajectory("ConcentrationEasy", seed=s) for s in (1, 1, 2))
    assert a == b and a["obs_sha256"] != c["obs_sha256"]


def test_bad_names_and_actions_are_clear_errors():
    with pytest.raises(ValueError, match="unknown POPGym env 'RepeatPrevius'.*RepeatPreviousEasy"):
        PopGymEnv("RepeatPrevius")
    env = PopGymEnv("RepeatPreviousEasy")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action 4 is not in Discrete"):
        env.step(4)


def test_registered_ids_and_generic_id():
    assert set(ALL) <= set(popgym_classes())
    for name in TABLE1:
        assert env_id(name) in gym.registry
    env = envs.make(GENERIC_ID, name="RepeatPrevious", env_kwargs={"num_decks": 1, "k": 2})
    assert env.unwrapped.env.k == 2
    env = envs.make(env_id("BattleshipMedium"))
    assert env.action_space == gym.spaces.Discrete(100)


@pytest.mark.parametrize("name", GOLDEN_ENVS)
def test_golden_trajectory(name):
    """Seed and actions fixed -> the recorded observations and rewards. A failure means the env's
    dynamics (or its RNG use) changed: check popgym's changelog before regenerating the file."""
    golden = json.loads(GOLDEN.read_text())
    got = trajectory(name, golden["seed"], golden["steps"])
    want = golden["envs"][name]
    assert got["rewards"] == pytest.approx(want["rewards"], abs=1e-9)
    assert got["ends"] == want["ends"]
    assert got["first_obs_nonzero"] == want["first_obs_nonzero"]
    assert got["obs_sha256"] == want["obs_sha256"]
