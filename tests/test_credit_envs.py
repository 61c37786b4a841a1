"""Credit-assignment envs (envs/credit): engine semantics, reference numbers, API checks.

Reference numbers are from /work/shared/reference/ref-credit-assignment.md (§1-§4, §8).
"""
from collections import deque

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.credit import (ENV_IDS, KeyToDoorEnv, TMazeActiveEnv, TMazePassiveEnv, VisualMatchEnv,
                         register_credit_envs)
from envs.credit.engine import (APPLE_CANDIDATE_CELLS, DOWN, LEFT, MOVES, RIGHT, UP, ApplePhase,
                                Phase, make_palette)
from envs.credit.visual_match import DOOR_CELLS

PALETTE = make_palette()
BACKGROUND_RGB, WALL_RGB, PLAYER_RGB = (204, 204, 204), (25, 25, 25), (228, 148, 109)
APPLE_RGB, KEY_RGB, DOOR_RGB, INDICATOR_RGB = (140, 178, 0), (159, 81, 44), (134, 206, 235), (255, 255, 255)

MRL_VM = dict(explore_steps=15, reward_steps=15, final_reward=5.0)
MRL_K2D = dict(explore_steps=15, reward_steps=10, final_reward=5.0)
SHM_VM = dict(explore_steps=15, reward_steps=10)
SHM_K2D = dict(explore_steps=10, reward_steps=3)


def run_episode(env, policy, seed):
    """Returns (total reward, info of the last step, number of steps)."""
    env.reset(seed=seed)
    total, steps, terminated = 0.0, 0, False
    while not terminated:
        _, reward, terminated, truncated, info = env.step(policy(env))
        assert not truncated
        total, steps = total + reward, steps + 1
    return total, info, steps


def distances(phase, avoid=()):
    """BFS on the phase's board: distance and first action from the player to each reachable cell."""
    start = phase.player
    dist, first = {start: 0}, {start: None}
    frontier = deque([start])
    while frontier:
        pos = frontier.popleft()
        for action, (d_row, d_col) in enumerate(MOVES):
            nxt = (pos[0] + d_row, pos[1] + d_col)
            if nxt in dist or nxt in avoid or phase.is_blocked(nxt):
                continue
            dist[nxt] = dist[pos] + 1
            first[nxt] = action if first[pos] is None else first[pos]
            frontier.append(nxt)
    return dist, first


def shortest_path_action(phase, goals, avoid=(), default=UP):
    """First action towards the nearest reachable goal cell (``default`` if there is none)."""
    dist, first = distances(phase, avoid)
    reachable = [goal for goal in goals if goal in dist and goal != phase.player]
    if not reachable:
        return default
    return first[min(reachable, key=lambda goal: (dist[goal], goal))]


def nearest_apple_action(phase):
    """Greedy collector: nearest apple; with none left, walk to the cell that respawns first."""
    goals = phase.find("a") or [cell for cell, _ in phase.pending_respawns()[:1]]
    return shortest_path_action(phase, goals)


def respawn_aware_apple_action(phase):
    """Collector aware of respawn times: go where an apple can be eaten soonest."""
    dist, first = distances(phase)
    ready_in = {cell: 0 for cell in phase.find("a")}
    for cell, respawn_frame in phase.pending_respawns():
        ready_in[cell] = respawn_frame + 1 - phase.frame  # eatable from the frame after it respawns
    if not ready_in:
        return UP
    best = min(ready_in, key=lambda cell: (max(dist[cell], ready_in[cell]), dist[cell]))
    if best == phase.player:  # wait on it by bumping into a wall if possible
        return next((a for a, (dr, dc) in enumerate(MOVES)
                     if phase.is_blocked((best[0] + dr, best[1] + dc))), UP)
    return first[best]


def visual_match_expert(apple_policy):
    def policy(env):
        phase = env.phase
        if env.phase_index == 1:
            return apple_policy(phase)
        if env.phase_index == 2 and phase.chosen is None:
            wrong = {cell for char, cell in DOOR_CELLS.items() if char != env.target}
            return shortest_path_action(phase, {DOOR_CELLS[env.target]}, avoid=wrong)
        return UP
    return policy


def key_to_door_expert(apple_policy):
    def policy(env):
        phase = env.phase
        if env.phase_index == 1:
            return apple_policy(phase)
        goals = phase.find("k") if env.phase_index == 0 else [(1, 5)]
        return shortest_path_action(phase, goals)
    return policy


def random_policy(seed):
    rng = np.random.default_rng(seed)
    return lambda env: rng.integers(4)


def crop_chars(obs, palette):
    colours = {tuple(palette[ord(ch)]): ch for ch in "#+akdibce"}
    colours[BACKGROUND_RGB] = "."
    return ["".join(colours[tuple(px)] for px in row) for row in obs]


# --------------------------------------------------------------------------- engine semantics
def test_palette_matches_reference_table():
    expected = {" ": BACKGROUND_RGB, "#": WALL_RGB, "+": PLAYER_RGB, "a": APPLE_RGB, "k": KEY_RGB,
                "d": DOOR_RGB, "i": INDICATOR_RGB, "\0": BACKGROUND_RGB}
    for char, rgb in expected.items():
        assert tuple(PALETTE[ord(char)]) == rgb, char


def test_crop_is_centred_and_padded_with_background():
    phase = Phase(("##", "# "), start=(1, 1), max_frames=5)
    obs = phase.render(PALETTE)
    assert obs.shape == (5, 5, 3) and obs.dtype == np.uint8
    assert crop_chars(obs, PALETTE) == [".....", ".##..", ".#+..", ".....", "....."]
    assert tuple(obs[2, 2]) == PLAYER_RGB and tuple(obs[0, 0]) == BACKGROUND_RGB


def test_movement_walls_and_board_edge():
    layout = ("### ",
              "#  #",
              "####")
    phase = Phase(layout, start=(1, 1), max_frames=99)
    for blocked in (UP, LEFT, DOWN):
        phase.step(blocked)
        assert phase.player == (1, 1)
    phase.step(RIGHT)
    assert phase.player == (1, 2)
    phase.step(RIGHT)  # wall
    assert phase.player == (1, 2)
    corner = Phase(layout, start=(0, 3), max_frames=99)
    for action in (UP, RIGHT, DOWN, LEFT):  # off-board, off-board, wall, wall
        corner.step(action)
        assert corner.player == (0, 3)


def test_phase_consumes_exactly_max_frames_actions():
    phase = Phase(("   ",), start=(0, 1), max_frames=3)
    assert [phase.step(LEFT)[1] for _ in range(3)] == [False, False, True]
    assert phase.frame == 3


def test_apple_pickup_and_respawn_21_frames_later():
    phase = ApplePhase([(5, 3)], max_frames=100, apple_reward=1.0, respawn_every=20)
    assert phase.step(LEFT) == (0.0, False)  # frame 1: (5, 4)
    assert phase.step(LEFT) == (1.0, False)  # frame 2: (5, 3) eats
    assert phase.char_at((5, 3)) == " "
    for frame in range(3, 23):  # bump into the bottom wall, standing on the eaten cell
        assert phase.step(DOWN)[0] == 0.0 and phase.char_at((5, 3)) == " ", frame
    assert phase.step(DOWN)[0] == 0.0  # frame 23 = 2 + 21: respawns after the pickup check
    assert phase.char_at((5, 3)) == "a"
    assert tuple(phase.render(PALETTE)[2, 2]) == PLAYER_RGB  # the player is drawn over apples
    assert phase.step(DOWN)[0] == 1.0  # frame 24: eaten again
    board_apples = sum(phase.char_at(cell) == "a" for cell in APPLE_CANDIDATE_CELLS)
    assert board_apples == 0  # cells that never had an apple never grow one


def test_apple_room_has_22_candidates_and_10_apples():
    assert len(APPLE_CANDIDATE_CELLS) == 22
    env = KeyToDoorEnv()
    env.reset(seed=3)
    env.phase_index, env.phase = 1, env._make_phase(1)
    assert len(env.phase.find("a")) == 10 and env.phase.player == (5, 5)


def test_chapter_timing_and_last_frame_reward():
    env = VisualMatchEnv(explore_steps=3, distractor_steps=4, reward_steps=2)
    env.reset(seed=0)
    phases, infos = [], []
    for step in range(1, 10):
        obs, _, terminated, _, info = env.step(UP)
        phases.append(env.phase_index)
        infos.append(info)
        assert terminated == (step == 9)
    # o_0..o_2 explore, o_3..o_6 distractor, o_7.. reward, o_9 terminal
    assert phases == [0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert all("success" not in info for info in infos[:-1]) and infos[-1]["success"] is False
    assert env.horizon == 9

    # An apple eaten on the last distractor frame is paid with the first reward-phase observation.
    env = VisualMatchEnv(explore_steps=1, distractor_steps=1, reward_steps=1)
    env.reset(seed=0)
    env._apple_cells = [(4, 5)]  # one apple right above the distractor start (5, 5)
    env.step(UP)
    assert env.phase_index == 1
    obs, reward, terminated, _, _ = env.step(UP)
    assert reward == 1.0 and not terminated and env.phase_index == 2
    assert crop_chars(obs, env.palette) == [".....", "#...#", "#.+.#", "#####", "....."]


def test_visual_match_cue_and_choice():
    env = VisualMatchEnv(**MRL_VM, distractor_steps=5)
    rng = np.random.default_rng(0)
    for seed in range(12):
        obs, _ = env.reset(seed=seed)
        chars = crop_chars(obs, env.palette)
        assert [row[0] + row[4] for row in chars] == [".."] * 5 and chars[0] == chars[4] == "....."
        cue = [ch for row in chars for ch in row if ch in "bce"]
        assert cue == [env.target] and sum(row.count("#") for row in chars) == 7
        for _ in range(14):  # the cue room does not let the player move
            assert np.array_equal(env.step(rng.integers(4))[0], obs)
        for _ in range(1 + 5):
            env.step(rng.integers(4))
        assert env.phase_index == 2 and env.phase.player == (5, 5)
        # Walk onto a wrong door: all doors vanish, no reward.
        wrong = next(ch for ch in "bce" if ch != env.target)
        total = 0.0
        for _ in range(15):
            others = {cell for char, cell in DOOR_CELLS.items() if char != wrong}
            action = shortest_path_action(env.phase, [DOOR_CELLS[wrong]], avoid=others)
            _, reward, terminated, _, info = env.step(action)
            total += reward
        assert terminated and total == 0.0 and info["success"] is False
        assert not any(env.phase.char_at(cell) in "bce" for cell in DOOR_CELLS.values())


def test_visual_match_door_colours_shuffled_per_episode():
    env = VisualMatchEnv(distractor_steps=1)
    colours_of_b, targets = set(), set()
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        colours = {tuple(env.palette[ord(ch)]) for ch in "bce"}
        assert colours == {(255, 0, 0), (0, 255, 0), (0, 0, 255)}
        cue_rgb = {tuple(px) for row in obs for px in row} - {BACKGROUND_RGB, WALL_RGB, PLAYER_RGB}
        assert cue_rgb == {tuple(env.palette[ord(env.target)])}
        colours_of_b.add(tuple(env.palette[ord("b")]))
        targets.add(env.target)
    assert len(colours_of_b) == 3 and targets == set("bce")


def test_key_indicator_shows_for_one_frame_and_door_opens():
    env = KeyToDoorEnv(**MRL_K2D, distractor_steps=3)
    for seed in range(8):
        env.reset(seed=seed)
        indicator_frames = []
        while env.phase_index == 0:
            obs, *_ = env.step(shortest_path_action(env.phase, env.phase.find("k")))
            if env.phase_index == 0:
                indicator_frames.append(any(tuple(px) == INDICATOR_RGB for row in obs for px in row))
                if indicator_frames[-1]:
                    row, col = env.phase.player
                    assert tuple(obs[2 + 0 - row, 2 + 5 - col]) == INDICATOR_RGB  # board (0, 5)
        assert sum(indicator_frames) == 1 and isinstance(env.phase, ApplePhase)
        assert env.has_key
        for _ in range(3):
            env.step(LEFT)
        assert env.phase_index == 2 and env.phase.player == (3, 5)
        _, r1, *_ = env.step(UP)
        obs, r2, *_ = env.step(UP)  # into the doorway: the door is drawn over the player
        assert (r1, r2) == (0.0, 5.0) and env.phase.player == (1, 5)
        assert tuple(obs[2, 2]) == DOOR_RGB
        obs, r3, *_ = env.step(UP)  # the door stays open; no second reward
        obs, r4, *_ = env.step(DOWN)
        assert env.phase.player == (1, 5) and (r3, r4) == (0.0, 0.0)
        for _ in range(6):
            *_, terminated, _, info = env.step(DOWN)
        assert terminated and info["success"] is True


def test_door_blocks_without_key():
    env = KeyToDoorEnv(**MRL_K2D, distractor_steps=2)
    env.reset(seed=0)
    for _ in range(15 + 2):  # never leaves the start room
        env.step(DOWN)
    assert env.phase_index == 2 and not env.has_key
    total = 0.0
    for _ in range(10):
        _, reward, terminated, _, info = env.step(UP)
        total += reward
        assert env.phase.player == (2, 5)
    assert terminated and info["success"] is False and total == 0.0


# --------------------------------------------------------------------------- reference numbers
def walk_hit_probability(free, start, goal, steps, absorbing=()):
    """Exact P(a uniform random walk, blocked moves staying put, reaches goal within steps)."""
    mass, hit = {start: 1.0}, 0.0
    for _ in range(steps):
        nxt_mass = {}
        for (row, col), weight in mass.items():
            for d_row, d_col in MOVES:
                cell = (row + d_row, col + d_col)
                cell = cell if cell in free else (row, col)
                if cell == goal:
                    hit += weight / 4
                elif cell not in absorbing:
                    nxt_mass[cell] = nxt_mass.get(cell, 0.0) + weight / 4
        mass = nxt_mass
    return hit


def exact_random_success(task, explore_steps, reward_steps):
    """Random-policy success from the layouts of the spec (independent of the engine code)."""
    if task == "vm":
        free = ({(r, c) for r in (1, 2, 3) for c in range(1, 10)}
                | {(r, c) for r in (4, 5) for c in (4, 5, 6)})
        doors = list(DOOR_CELLS.values())
        return np.mean([walk_hit_probability(free, (5, 5), door, reward_steps, absorbing=doors)
                        for door in doors])
    key_room = {(r, c) for r in (1, 2, 4, 5) for c in range(3, 8)} | {(3, 4), (3, 5), (3, 6)}
    keys = [(r, c) for r in (1, 2) for c in range(3, 8)]
    starts = [(r, c) for r in (4, 5) for c in range(3, 8)]
    p_key = np.mean([walk_hit_probability(key_room, s, k, explore_steps) for s in starts for k in keys])
    door_room = {(r, c) for r in (2, 3, 4) for c in (4, 5, 6)} | {(1, 5)}
    return p_key * walk_hit_probability(door_room, (3, 5), (1, 5), reward_steps)


@pytest.mark.parametrize("task, kwargs, reference, episodes", [
    ("vm", MRL_VM, 0.048, 2500),
    ("vm", SHM_VM, 0.019, 2500),
    ("k2d", MRL_K2D, 0.025, 3000),
    ("k2d", SHM_K2D, 0.004, 3000),
])
def test_random_policy_success_rate(task, kwargs, reference, episodes):
    exact = exact_random_success(task, kwargs["explore_steps"], kwargs["reward_steps"])
    # The spec's numbers are Monte-Carlo estimates (VM: 4,000 episodes); K2D-MRL's 2.5% is ~2 SE
    # above the exact 2.01% if it used 4,000 episodes too.
    assert abs(exact - reference) < 0.006
    env_cls = VisualMatchEnv if task == "vm" else KeyToDoorEnv
    env = env_cls(**kwargs, distractor_steps=1)  # the distractor does not affect success
    policy = random_policy(seed=1)
    wins = sum(run_episode(env, policy, seed)[1]["success"] for seed in range(episodes))
    standard_error = np.sqrt(exact * (1 - exact) / episodes)
    assert abs(wins / episodes - exact) < 4 * standard_error + 1e-9


@pytest.mark.parametrize("task, distractor_steps, reference", [
    ("vm", 60, 26.4), ("vm", 250, 91.7), ("k2d", 60, 27.1), ("k2d", 250, 95.1),
])
def test_greedy_expert_return(task, distractor_steps, reference):
    # The spec does not define its greedy collector: a plain nearest-apple collector lands within
    # ~2% of its VM table and a respawn-aware one within ~2% of its K2D table (both with perfect
    # key / door play), hence the 5% tolerance.
    if task == "vm":
        env = VisualMatchEnv(**MRL_VM, distractor_steps=distractor_steps)
        policy = visual_match_expert(nearest_apple_action)
    else:
        env = KeyToDoorEnv(**MRL_K2D, distractor_steps=distractor_steps)
        policy = key_to_door_expert(respawn_aware_apple_action)
    results = [run_episode(env, policy, seed) for seed in range(30)]
    assert all(info["success"] for _, info, _ in results)
    assert all(steps == env.horizon for _, _, steps in results)
    mean_return = np.mean([ret for ret, _, _ in results])
    assert abs(mean_return - reference) < 0.05 * reference, mean_return


# --------------------------------------------------------------------------- T-Maze
RIGHT_TM, UP_TM, LEFT_TM, DOWN_TM = 0, 1, 2, 3


def play_tmaze(env, seed, memory=True):
    obs, _ = env.reset(seed=seed)
    goal_seen, total, terminated = obs[1], 0.0, False
    while not terminated:
        if env.t == 0 and env.oracle_length:
            action = LEFT_TM
        elif env.x < env.junction_x:
            action = RIGHT_TM
        else:
            action = UP_TM if (not memory or goal_seen == 1) else DOWN_TM
        obs, reward, terminated, truncated, info = env.step(action)
        assert not truncated
        if obs[0] == 0 and obs[1] != 0:
            goal_seen = obs[1]
        total += reward
    return total, info


@pytest.mark.parametrize("env_cls", [TMazePassiveEnv, TMazeActiveEnv])
@pytest.mark.parametrize("length", [1, 5, 50])
def test_tmaze_optimal_return_is_one(env_cls, length):
    env = env_cls(corridor_length=length)
    assert env.horizon == length + (1 if env_cls is TMazePassiveEnv else 3)
    for seed in range(10):
        total, info = play_tmaze(env, seed)
        assert total == pytest.approx(1.0) and info["success"] is True


@pytest.mark.parametrize("env_cls", [TMazePassiveEnv, TMazeActiveEnv])
def test_tmaze_memoryless_return_is_half(env_cls):
    env = env_cls(corridor_length=10)
    returns = [play_tmaze(env, seed, memory=False)[0] for seed in range(2000)]
    assert set(np.round(returns, 9)) == {0.0, 1.0}
    assert abs(np.mean(returns) - 0.5) < 4 * 0.5 / np.sqrt(len(returns))


def test_tmaze_observations_and_penalty():
    passive = TMazePassiveEnv(corridor_length=3)
    obs, _ = passive.reset(seed=0)
    goal = passive.goal_y
    assert obs.dtype == np.float32 and list(obs) == [0, goal]
    obs, reward, *_ = passive.step(LEFT_TM)  # stays on the oracle: the cue is gone, lagging
    assert list(obs) == [0, 0] and reward == pytest.approx(-1 / 3)
    total = reward
    for _ in range(2):
        total += passive.step(LEFT_TM)[1]
    obs, reward, terminated, _, info = passive.step(UP_TM)  # up is blocked on the corridor
    assert terminated and total + reward == pytest.approx(-1.0) and info["success"] is False

    active = TMazeActiveEnv(corridor_length=3)
    obs, _ = active.reset(seed=1)
    assert list(obs) == [0, 0]
    obs, reward, *_ = active.step(LEFT_TM)
    assert list(obs) == [0, active.goal_y] and reward == 0.0
    obs, *_ = active.step(RIGHT_TM)
    assert list(obs) == [0, 0]
    obs, *_ = active.step(LEFT_TM)  # revisiting the oracle shows nothing
    assert list(obs) == [0, 0]

    passive.reset(seed=2)
    for expected in ([0, 0], [0, 0], [1, 0]):
        obs, reward, *_ = passive.step(RIGHT_TM)
        assert list(obs) == expected and reward == 0.0
    obs, _, terminated, _, info = passive.step(RIGHT_TM)  # beyond the junction: no move
    assert list(obs) == [1, 0] and passive.x == passive.junction_x
    assert terminated and info["success"] is False


# --------------------------------------------------------------------------- API
def make_all():
    return [VisualMatchEnv(distractor_steps=20), KeyToDoorEnv(distractor_steps=20),
            TMazePassiveEnv(corridor_length=8), TMazeActiveEnv(corridor_length=8)]


def test_registration_is_idempotent_without_time_limit():
    register_credit_envs()
    register_credit_envs()
    for env_id in ENV_IDS:
        env = gym.make(env_id)
        assert env.spec.max_episode_steps is None
        env.reset(seed=0)
        env.step(0)
    assert gym.make("memrl/VisualMatch-v0", distractor_steps=500).unwrapped.horizon == 525
    assert gym.make("memrl/KeyToDoor-v0", distractor_steps=500).unwrapped.horizon == 513
    assert gym.make("memrl/TMazeActive-v0", corridor_length=20).unwrapped.horizon == 23


@pytest.mark.parametrize("env_id", list(ENV_IDS))
def test_gymnasium_env_checker(env_id):
    register_credit_envs()
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.action_space == gym.spaces.Discrete(4)
    if "TMaze" not in env_id:
        assert env.observation_space == gym.spaces.Box(0, 255, (5, 5, 3), np.uint8)


@pytest.mark.parametrize("index", range(4))
def test_determinism_for_a_seed_and_global_rng_untouched(index):
    np.random.seed(123)
    global_state = np.random.get_state()[1].copy()

    def rollout(env, seed):
        obs, _ = env.reset(seed=seed)
        actions = np.random.default_rng(seed).integers(4, size=3 * 60)
        trace = [obs.copy()]
        for action in actions:
            obs, reward, terminated, _, _ = env.step(action)
            trace += [obs.copy(), reward]
            if terminated:
                trace.append(env.reset()[0].copy())
        return trace

    def same(a, b):
        return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))

    first, second = make_all()[index], make_all()[index]
    assert same(rollout(first, 7), rollout(second, 7))
    assert same(rollout(first, 7), rollout(first, 7))  # reset(seed) restores the same stream
    assert any(not same(rollout(first, 7), rollout(first, s)) for s in (8, 9, 10))
    assert np.array_equal(np.random.get_state()[1], global_state)
