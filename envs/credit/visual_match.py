"""Passive Visual Match (TVT; Memory-RL / SHM settings), ref-credit-assignment.md §2.

1. Cue (``explore_steps``): the player is boxed in a 3x3 cell and cannot move; one of its 8
   neighbours (uniform) shows the target colour, the other 7 are walls.
2. Distractor (``distractor_steps``): the apple room, +``apple_reward`` per apple.
3. Choice (``reward_steps``): three colour doors (red, green, blue in a per-episode random order);
   touching one removes all three; the one with the cue's colour pays ``final_reward``.

Success = the target door was touched. Horizon T = explore + distractor + reward steps.
Defaults are the SHM fork's (15 / 250 / 10, final reward 10); Memory-RL uses 15 / N / 15 and 5.0.
Unlike the original (one unseeded colour permutation per env instance), door colours and the
target are drawn per episode from ``self.np_random``, the same rule for training and evaluation.
"""
from __future__ import annotations

from typing import Optional

from .engine import (APPLE_CANDIDATE_CELLS, COLOUR_OBJECTS, PRIMARY_COLOURS_1000, WALL,
                     ApplePhase, ColourChoicePhase, Phase, PhasedGridEnv, rgb_from_1000)

CUE_ROOM_LAYOUT = (
    "           ",
    "    ###    ",
    "    # #    ",
    "    ###    ",
    "           ",
    "           ",
    "           ",
)
CUE_ROOM_START = (2, 5)
CUE_CELLS = tuple((2 + dr, 5 + dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0))

CHOICE_ROOM_LAYOUT = (
    "###########",
    "#         #",
    "#         #",
    "#         #",
    "####   ####",
    "   #   #   ",
    "   #####   ",
)
CHOICE_ROOM_START = (5, 5)
DOOR_CELLS = {"b": (1, 2), "c": (1, 5), "e": (1, 8)}  # left, middle, right


class VisualMatchEnv(PhasedGridEnv):
    def __init__(self, explore_steps: int = 15, distractor_steps: int = 250, reward_steps: int = 10,
                 final_reward: float = 10.0, apple_reward: float = 1.0, num_apples: int = 10,
                 respawn_every: int = 20, render_mode: Optional[str] = None):
        super().__init__(render_mode)
        self._set_schedule(explore_steps, distractor_steps, reward_steps, final_reward, apple_reward, num_apples,
                           respawn_every)
        self.target = COLOUR_OBJECTS[0]

    def _new_episode(self) -> None:
        rng = self.np_random
        colour_order = rng.permutation(len(PRIMARY_COLOURS_1000))
        for char, colour_index in zip(COLOUR_OBJECTS, colour_order):
            self.palette[ord(char)] = rgb_from_1000(PRIMARY_COLOURS_1000[colour_index])
        self.target = COLOUR_OBJECTS[rng.integers(len(COLOUR_OBJECTS))]
        self._cue_cell = CUE_CELLS[rng.integers(len(CUE_CELLS))]
        chosen = rng.choice(len(APPLE_CANDIDATE_CELLS), size=self.num_apples, replace=False)
        self._apple_cells = [APPLE_CANDIDATE_CELLS[i] for i in chosen]

    def _make_phase(self, index: int) -> Phase:
        if index == 0:
            phase = Phase(CUE_ROOM_LAYOUT, CUE_ROOM_START, self.phase_steps[0],
                          impassable=WALL + self.target)
            phase.set_char(self._cue_cell, self.target)
            return phase
        if index == 1:
            return ApplePhase(self._apple_cells, self.phase_steps[1], self.apple_reward,
                              self.respawn_every)
        return ColourChoicePhase(CHOICE_ROOM_LAYOUT, CHOICE_ROOM_START, DOOR_CELLS, self.target,
                                 self.final_reward, self.phase_steps[2])

    def _success(self) -> bool:
        return self.phase.chosen == self.target
