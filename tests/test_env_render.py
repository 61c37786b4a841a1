"""Pictures of the envs (render helpers used by src.evaluate): what they draw agrees with the state
and with what the agent observes; the navigation envs' position and goal views."""
import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the memrl/ ids)
from envs.credit.engine import CROP, PLAYER, make_palette
from envs.credit.tmaze import RENDER_COLOURS

PALETTE = make_palette()
S = 24  # pixels per cell (default scale)
CREDIT = {"memrl/VisualMatch-v0": {"distractor_steps": 12}, "memrl/KeyToDoor-v0": {"distractor_steps": 12}}


def cell(image, row, col, scale=S):
    """The colour at the centre of a cell."""
    return tuple(image[row * scale + scale // 2, col * scale + scale // 2])


@pytest.mark.parametrize("env_id", sorted(CREDIT))
def test_grid_frame_shows_the_board_around_what_the_agent_sees(env_id):
    env = gym.make(env_id, **CREDIT[env_id]).unwrapped
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    for t in range(env.horizon):
        frame = env.render_rgb()
        board = env.phase.board.shape[0] - 2 * (CROP // 2), env.phase.board.shape[1] - 2 * (CROP // 2)
        assert frame.shape == (board[0] * S, board[1] * S, 3) and frame.dtype == np.uint8
        row, col = env.phase.player
        # every on-board cell of the agent's 5x5 view looks the same in the picture
        for dr in range(-2, 3):
            for dc in range(-2, 3):
                r, c = row + dr, col + dc
                if 0 <= r < board[0] and 0 <= c < board[1]:
                    assert cell(frame, r, c) == tuple(obs[dr + 2, dc + 2]), (t, dr, dc)
        # the view window is outlined (magenta) where it lies on the picture
        top, left = (row - 2) * S, (col - 2) * S
        if 0 <= top < frame.shape[0] and 0 <= left + S < frame.shape[1]:
            assert tuple(frame[top, left + S]) == (220, 0, 220)
        obs, *_ = env.step(int(rng.integers(4)))


def test_grid_player_is_drawn_in_the_picture():
    env = gym.make("memrl/VisualMatch-v0", distractor_steps=12).unwrapped
    env.reset(seed=0)
    for _ in range(15):  # into the apple room: the player is not boxed in, nothing covers it
        env.step(0)
    frame = env.render_rgb(scale=5)
    assert frame.shape == (7 * 5, 11 * 5, 3)
    assert cell(frame, *env.phase.player, scale=5) == tuple(PALETTE[ord(PLAYER)])


@pytest.mark.parametrize("env_id", sorted(CREDIT) + ["memrl/TMazePassive-v0"])
def test_render_modes(env_id):
    kwargs = CREDIT.get(env_id, {"corridor_length": 6})
    plain = gym.make(env_id, **kwargs)
    plain.reset(seed=0)
    assert plain.render() is None  # no render mode: nothing
    env = gym.make(env_id, render_mode="rgb_array", **kwargs)
    env.reset(seed=0)
    frame = env.render()
    assert np.array_equal(frame, env.unwrapped.render_rgb())
    with pytest.raises(ValueError, match="render_mode='ansi' is not supported"):
        type(env.unwrapped)(render_mode="ansi", **kwargs)


@pytest.mark.parametrize("oracle", [0, 1])
def test_tmaze_frame(oracle):
    from envs.credit.tmaze import TMazeEnv
    env = TMazeEnv(corridor_length=6, oracle_length=oracle)
    env.reset(seed=1)
    width = oracle + 6 + 1
    frame = env.render_rgb(scale=10)
    assert frame.shape == (30, width * 10, 3)
    c = {k: tuple(np.uint8(v) for v in rgb) for k, rgb in RENDER_COLOURS.items()}
    goal_row, wrong_row = (0, 2) if env.goal_y == 1 else (2, 0)
    assert cell(frame, goal_row, width - 1, 10) == c["goal"] and cell(frame, wrong_row, width - 1, 10) == c["wrong"]
    assert cell(frame, 0, 0, 10) == c["off"] and cell(frame, 1, width - 2, 10) == c["floor"]
    for t in range(width - 1 - oracle):
        assert cell(frame, 1, env.x, 10) == c["agent"]
        assert cell(frame, 1, 0, 10) == (c["agent"] if env.x == 0 else c["oracle"])
        env.step(0)  # right
        frame = env.render_rgb(scale=10)
    env.step(1 if env.goal_y == 1 else 3)  # into the goal arm
    assert cell(env.render_rgb(scale=10), goal_row, width - 1, 10) == c["agent"]
    assert env.render_rgb().shape[1] <= 800 + 32  # default scale: fits ~800 pixels
    assert TMazeEnv(corridor_length=1000).render_rgb().shape == (12, 1001 * 4, 3)  # at least 4 px per cell


def test_navigation_position_and_goal_views():
    wind = gym.make("memrl/Wind-v0").unwrapped
    obs, _ = wind.reset(seed=0, options={"task": 5})
    assert np.allclose(wind.position, obs) and np.allclose(wind.goal_position, [0.0, 1.0])
    obs, *_ = wind.step(np.array([1.0, 0.0]))
    assert np.allclose(wind.position, obs)
    assert np.allclose(wind.position, [0.1, 0.0] + wind.winds[5])
    wind.position[0] = 99.0  # a copy: the env is unchanged
    assert np.allclose(wind.position, obs)
    robot = gym.make("memrl/PointRobot-v0").unwrapped
    robot.reset(seed=0, options={"task": 7})
    assert np.allclose(robot.goal_position, robot.goals[7])
