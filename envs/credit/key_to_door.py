"""Key-to-Door (TVT; Memory-RL / pomdp-baselines / SHM settings), ref-credit-assignment.md §3.

1. Explore (``explore_steps``): a key room above a start room (key and start cells uniform).
   Walking onto the key picks it up (it disappears); on that frame only, a white indicator pixel
   shows on the top wall at (0, 5).
2. Distractor (``distractor_steps``): the apple room, +``apple_reward`` per apple.
3. Reward (``reward_steps``): a small room with a door two steps above the player. The door is
   passable only with the key; entering it pays ``final_reward`` once. The door is drawn over the
   player.

Success = the door was opened (key picked up in phase 1 and door entered in phase 3).
Defaults are the SHM fork's (10 / 250 / 3, final reward 10); Memory-RL uses 15 / N / 10 and 5.0.
"""
from __future__ import annotations

from typing import Optional

from .engine import (APPLE_CANDIDATE_CELLS, DOOR, INDICATOR, WALL, ApplePhase, DoorPhase,
                     KeyPhase, Phase, PhasedGridEnv)

IMPASSABLE = WALL + INDICATOR + DOOR  # the door opens only for a player holding the key

KEY_ROOM_LAYOUT = (
    "  #######  ",
    "  #     #  ",
    "  #     #  ",
    "  ##   ##  ",
    "  #     #  ",
    "  #     #  ",
    "  #######  ",
)
KEY_CELLS = tuple((row, col) for row in (1, 2) for col in range(3, 8))
START_CELLS = tuple((row, col) for row in (4, 5) for col in range(3, 8))
INDICATOR_CELL = (0, 5)

DOOR_ROOM_LAYOUT = (
    "           ",
    "   ##d##   ",
    "   #   #   ",
    "   #   #   ",
    "   #   #   ",
    "   #####   ",
    "           ",
)
DOOR_ROOM_START = (3, 5)
DOOR_CELL = (1, 5)


class KeyToDoorEnv(PhasedGridEnv):
    def __init__(self, explore_steps: int = 10, distractor_steps: int = 250, reward_steps: int = 3,
                 final_reward: float = 10.0, apple_reward: float = 1.0, num_apples: int = 10,
                 respawn_every: int = 20, render_mode: Optional[str] = None):
        super().__init__(render_mode)
        self._set_schedule(explore_steps, distractor_steps, reward_steps, final_reward, apple_reward, num_apples,
                           respawn_every)
        self.has_key = False

    def _new_episode(self) -> None:
        rng = self.np_random
        self._key_cell = KEY_CELLS[rng.integers(len(KEY_CELLS))]
        self._start_cell = START_CELLS[rng.integers(len(START_CELLS))]
        chosen = rng.choice(len(APPLE_CANDIDATE_CELLS), size=self.num_apples, replace=False)
        self._apple_cells = [APPLE_CANDIDATE_CELLS[i] for i in chosen]
        self.has_key = False

    def _make_phase(self, index: int) -> Phase:
        if index == 0:
            return KeyPhase(KEY_ROOM_LAYOUT, self._start_cell, self._key_cell, INDICATOR_CELL,
                            self.phase_steps[0], IMPASSABLE)
        if index == 1:
            self.has_key = self.phase.has_key  # carried over from the explore phase
            return ApplePhase(self._apple_cells, self.phase_steps[1], self.apple_reward,
                              self.respawn_every, IMPASSABLE)
        return DoorPhase(DOOR_ROOM_LAYOUT, DOOR_ROOM_START, DOOR_CELL, self.has_key,
                         self.final_reward, self.phase_steps[2], IMPASSABLE)

    def _success(self) -> bool:
        return self.phase.door_opened
