"""A small numpy gridworld engine for the TVT credit-assignment tasks (no pycolab).

It reproduces the pycolab semantics of Visual Match / Key-to-Door (ref-credit-assignment.md §1):

* An episode is a sequence of phases ("chapters"), each a 7x11 board of characters. A phase
  consumes exactly ``max_frames`` actions. Its frame 0 is shown at the phase start; every action
  advances one frame. When a non-final phase ends, the step returns the *first* observation of the
  next phase (the ending phase's last frame is never seen) together with the reward of that last
  frame. The final phase's last frame is the terminal observation.
* Within a frame: the player moves first (blocked by impassable characters as drawn at the end of
  the previous frame, and by the board edge), then objects react to the player's new cell.
* The observation is the egocentric 5x5 RGB crop centred on the player; cells off the board are
  drawn as background. The player is drawn on top unless its cell holds a character that the phase
  draws over the player (the Key-to-Door door).

Boards are stored with a 2-cell ``OFF_BOARD`` margin so that a crop is a plain slice.
"""
from __future__ import annotations

from collections import deque
from typing import Optional, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# Board characters.
BACKGROUND, WALL, PLAYER = " ", "#", "+"
APPLE, KEY, DOOR, INDICATOR = "a", "k", "d", "i"
COLOUR_OBJECTS = "bce"  # Visual Match colour cue / colour doors; colours are set per episode
OFF_BOARD = "\0"  # the margin around a board: drawn as background, never enterable

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))  # (d_row, d_col) per action

CROP = 5
MARGIN = CROP // 2

# Colours on pycolab's 0-1000 scale.
FIXED_COLOURS_1000 = {
    BACKGROUND: (800, 800, 800),
    WALL: (100, 100, 100),
    PLAYER: (898, 584, 430),
    APPLE: (550, 700, 0),
    KEY: (627, 321, 176),
    DOOR: (529, 808, 922),
    INDICATOR: (1000, 1000, 1000),
}
# The three Visual Match colours: hues 0, 1/3, 2/3 at full saturation and value.
PRIMARY_COLOURS_1000 = ((1000, 0, 0), (0, 1000, 0), (0, 0, 1000))


def rgb_from_1000(colour: Sequence[int]) -> tuple:
    """pycolab's conversion: int(c * 255 / 1000) per channel (truncation, not rounding)."""
    return tuple(int(c * 255 / 1000) for c in colour)


def make_palette() -> np.ndarray:
    """A (256, 3) uint8 lookup table from character code to RGB; unknown codes draw as background."""
    palette = np.empty((256, 3), dtype=np.uint8)
    palette[:] = rgb_from_1000(FIXED_COLOURS_1000[BACKGROUND])
    for char, colour in FIXED_COLOURS_1000.items():
        palette[ord(char)] = rgb_from_1000(colour)
    return palette


# The distractor room shared by both tasks: 22 candidate apple cells, player start (5, 5).
APPLE_ROOM_LAYOUT = (
    "###########",
    "#         #",
    "#         #",
    "#         #",
    "#         #",
    "#         #",
    "###########",
)
APPLE_ROOM_START = (5, 5)
APPLE_CANDIDATE_CELLS = tuple(
    (row, col)
    for row in range(1, 6)
    for col in range(1, 10)
    if (row + col) % 2 == 0 and (row, col) != APPLE_ROOM_START
)
assert len(APPLE_CANDIDATE_CELLS) == 22


class Phase:
    """One chapter: a character board, the player, a frame budget and the rules of its objects.

    ``layout`` rows are strings; positions are (row, col) in layout coordinates. Subclasses
    override ``update_objects`` (called each frame after the player moved; returns the frame's
    reward). ``covers_player`` lists characters drawn on top of the player.
    """

    def __init__(self, layout: Sequence[str], start: tuple, max_frames: int,
                 impassable: str = WALL, covers_player: str = ""):
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        height, width = len(layout), len(layout[0])
        self.board = np.full((height + 2 * MARGIN, width + 2 * MARGIN), ord(OFF_BOARD), np.uint8)
        self.board[MARGIN:-MARGIN, MARGIN:-MARGIN] = [[ord(ch) for ch in row] for row in layout]
        self.blocked = np.zeros(256, dtype=bool)
        self.blocked[[ord(OFF_BOARD)] + [ord(ch) for ch in impassable]] = True
        self._covers_player = frozenset(ord(ch) for ch in covers_player)
        self._player = self._padded(start)
        self.max_frames = max_frames
        self.frame = 0
        self.total_reward = 0.0

    # --- coordinates: the board carries a margin, the public API uses layout coordinates
    @staticmethod
    def _padded(pos: tuple) -> tuple:
        return pos[0] + MARGIN, pos[1] + MARGIN

    @property
    def player(self) -> tuple:
        return self._player[0] - MARGIN, self._player[1] - MARGIN

    def char_at(self, pos: tuple) -> str:
        return chr(self.board[self._padded(pos)])

    def set_char(self, pos: tuple, char: str) -> None:
        self.board[self._padded(pos)] = ord(char)

    def find(self, char: str) -> list:
        """The cells currently holding ``char`` (the player is not on the board)."""
        return [(int(r) - MARGIN, int(c) - MARGIN) for r, c in np.argwhere(self.board == ord(char))]

    def is_blocked(self, pos: tuple) -> bool:
        row, col = self._padded(pos)
        if not (0 <= row < self.board.shape[0] and 0 <= col < self.board.shape[1]):
            return True
        return bool(self.blocked[self.board[row, col]])

    # --- dynamics
    def step(self, action: int) -> tuple:
        """Advance one frame; returns (reward, phase_over)."""
        self.frame += 1
        d_row, d_col = MOVES[action]
        target = (self._player[0] + d_row, self._player[1] + d_col)
        if not self.blocked[self.board[target]]:
            self._player = target
        reward = self.update_objects()
        self.total_reward += reward
        return reward, self.frame >= self.max_frames

    def update_objects(self) -> float:
        return 0.0

    def render_board(self, palette: np.ndarray) -> np.ndarray:
        """The whole (height, width, 3) uint8 board with the player, as a person would look at it
        (pictures only; the agent sees ``render``)."""
        view = palette[self.board[MARGIN:-MARGIN, MARGIN:-MARGIN]]
        if self.board[self._player] not in self._covers_player:
            view[self.player] = palette[ord(PLAYER)]
        return view

    def render(self, palette: np.ndarray) -> np.ndarray:
        """The (5, 5, 3) uint8 egocentric crop."""
        row, col = self._player
        view = palette[self.board[row - MARGIN:row + MARGIN + 1, col - MARGIN:col + MARGIN + 1]]
        if self.board[row, col] not in self._covers_player:
            view[MARGIN, MARGIN] = palette[ord(PLAYER)]
        return view


class ApplePhase(Phase):
    """The distractor room: +apple_reward per apple; an eaten apple respawns on the first frame
    with frame > pickup_frame + respawn_every (0 = never). Pickup is checked before respawn."""

    def __init__(self, apple_cells: Sequence[tuple], max_frames: int, apple_reward: float = 1.0,
                 respawn_every: int = 20, impassable: str = WALL):
        super().__init__(APPLE_ROOM_LAYOUT, APPLE_ROOM_START, max_frames, impassable)
        self.apple_reward = apple_reward
        self.respawn_every = respawn_every
        self._apple_cells = {self._padded(tuple(cell)) for cell in apple_cells}
        for cell in self._apple_cells:
            self.board[cell] = ord(APPLE)
        # The delay is the same for all apples, so they respawn in pickup order.
        self._eaten = deque()  # (pickup_frame, padded cell)
        self.apples_eaten = 0

    def pending_respawns(self) -> list:
        """[(cell, frame at which its apple reappears)] for the eaten apples, earliest first."""
        if not self.respawn_every:
            return []
        return [((r - MARGIN, c - MARGIN), frame + self.respawn_every + 1)
                for frame, (r, c) in self._eaten]

    def update_objects(self) -> float:
        reward = 0.0
        if self.board[self._player] == ord(APPLE):
            self.board[self._player] = ord(BACKGROUND)
            self._eaten.append((self.frame, self._player))
            self.apples_eaten += 1
            reward = self.apple_reward
        if self.respawn_every:
            while self._eaten and self.frame > self._eaten[0][0] + self.respawn_every:
                self.board[self._eaten.popleft()[1]] = ord(APPLE)
        return reward


class KeyPhase(Phase):
    """Picking up the key (walking onto it) sets ``has_key``, hides the key and shows the
    indicator at ``indicator_cell`` for exactly that one frame."""

    def __init__(self, layout: Sequence[str], start: tuple, key_cell: tuple,
                 indicator_cell: tuple, max_frames: int, impassable: str):
        super().__init__(layout, start, max_frames, impassable)
        self._key = self._padded(key_cell)
        self._indicator = self._padded(indicator_cell)
        self._under_indicator = self.board[self._indicator]
        self.board[self._key] = ord(KEY)
        self.has_key = False

    def update_objects(self) -> float:
        if self.board[self._indicator] == ord(INDICATOR):  # shown on the previous frame only
            self.board[self._indicator] = self._under_indicator
        if not self.has_key and self._player == self._key:
            self.has_key = True
            self.board[self._key] = ord(BACKGROUND)
            self.board[self._indicator] = ord(INDICATOR)
        return 0.0


class DoorPhase(Phase):
    """The door is drawn over the player. It is passable iff the key was held when the phase began
    (and stays open after use); entering it with the key pays ``door_reward`` once."""

    def __init__(self, layout: Sequence[str], start: tuple, door_cell: tuple, has_key: bool,
                 door_reward: float, max_frames: int, impassable: str):
        if has_key:
            impassable = impassable.replace(DOOR, "")
        super().__init__(layout, start, max_frames, impassable, covers_player=DOOR)
        self._door = self._padded(door_cell)
        self.board[self._door] = ord(DOOR)
        self.has_key = has_key
        self.door_reward = door_reward
        self.door_opened = False

    def update_objects(self) -> float:
        if self.has_key and self._player == self._door:
            self.has_key = False
            self.door_opened = True
            return self.door_reward
        return 0.0


class ColourChoicePhase(Phase):
    """Colour objects the player can walk onto. Touching any of them removes all of them (one
    choice per episode); touching ``target`` pays ``target_reward``."""

    def __init__(self, layout: Sequence[str], start: tuple, object_cells: dict, target: str,
                 target_reward: float, max_frames: int):
        super().__init__(layout, start, max_frames, impassable=WALL)
        self._objects = {self._padded(cell): char for char, cell in object_cells.items()}
        for cell, char in self._objects.items():
            self.board[cell] = ord(char)
        self.target = target
        self.target_reward = target_reward
        self.chosen: Optional[str] = None

    def update_objects(self) -> float:
        if self.chosen is None and self._player in self._objects:
            self.chosen = self._objects[self._player]
            for cell in self._objects:
                self.board[cell] = ord(BACKGROUND)
            return self.target_reward if self.chosen == self.target else 0.0
        return 0.0


class PhasedGridEnv(gym.Env):
    """Gymnasium env running ``num_phases`` phases back to back (fixed horizon, no early end).

    Subclasses implement ``_new_episode`` (draw the episode's randomness from ``self.np_random``),
    ``_make_phase(index)`` (called when phase ``index`` begins) and ``_success``. The episode's
    end is ``terminated=True`` (the horizon is part of the task); its last step carries
    ``info["success"]``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    num_phases = 3
    action_names = ("up", "down", "left", "right")  # for captions

    def __init__(self, render_mode: Optional[str] = None):
        check_render_mode(render_mode, self.metadata)
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0, 255, shape=(CROP, CROP, 3), dtype=np.uint8)
        self.action_space = spaces.Discrete(len(MOVES))
        self.palette = make_palette()
        self.phase: Optional[Phase] = None
        self.phase_index = 0

    def _set_schedule(self, explore_steps: int, distractor_steps: int, reward_steps: int, final_reward: float,
                      apple_reward: float, num_apples: int, respawn_every: int) -> None:
        """The three phases' lengths, the rewards and the distractor phase's apples (both tasks')."""
        if not 0 <= num_apples <= len(APPLE_CANDIDATE_CELLS):
            raise ValueError(f"num_apples must be in [0, {len(APPLE_CANDIDATE_CELLS)}]")
        self.phase_steps = (explore_steps, distractor_steps, reward_steps)
        self.horizon = sum(self.phase_steps)
        self.final_reward, self.apple_reward = final_reward, apple_reward
        self.num_apples, self.respawn_every = num_apples, respawn_every

    def _new_episode(self) -> None:
        raise NotImplementedError

    def _make_phase(self, index: int) -> Phase:
        raise NotImplementedError

    def _success(self) -> bool:
        raise NotImplementedError

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        self._new_episode()
        self.phase_index = 0
        self.phase = self._make_phase(0)
        return self.phase.render(self.palette), {}

    def step(self, action):
        action = int(action)
        if not 0 <= action < len(MOVES):
            raise ValueError(f"invalid action {action}")
        reward, phase_over = self.phase.step(action)
        terminated, info = False, {}
        if phase_over:
            if self.phase_index == self.num_phases - 1:
                terminated = True
                info["success"] = self._success()
            else:
                self.phase_index += 1
                self.phase = self._make_phase(self.phase_index)
        return self.phase.render(self.palette), float(reward), terminated, False, info

    def render_rgb(self, scale: int = 24) -> np.ndarray:
        """The current phase's whole board, ``scale`` pixels per cell, with a magenta outline around
        the 5x5 window the agent observes: (H * scale, W * scale, 3) uint8."""
        image = upscale(self.phase.render_board(self.palette), scale)
        row, col = self.phase.player
        top, left = (row - MARGIN) * scale, (col - MARGIN) * scale
        outline_box(image, top, left, CROP * scale, CROP * scale, width_px=max(1, scale // 12))
        return image

    def render(self):
        """``render_mode="rgb_array"``: ``render_rgb()``; no render mode: None."""
        return self.render_rgb() if self.render_mode == "rgb_array" else None


def check_render_mode(render_mode: Optional[str], metadata: dict) -> None:
    if render_mode is not None and render_mode not in metadata["render_modes"]:
        raise ValueError(f"render_mode={render_mode!r} is not supported; valid: None, "
                         f"{', '.join(map(repr, metadata['render_modes']))}")


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Each pixel of an (H, W, 3) image becomes a scale x scale block."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1 pixel per cell, got {scale}")
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def outline_box(image: np.ndarray, top: int, left: int, height: int, width: int,
                width_px: int = 1, colour=(220, 0, 220)) -> None:
    """Draw a rectangle outline in place, clipped to the image."""
    H, W = image.shape[:2]
    t, b = max(top, 0), min(top + height, H)
    l, r = max(left, 0), min(left + width, W)
    if t >= b or l >= r:
        return
    w = width_px
    if top >= 0:
        image[t:t + w, l:r] = colour
    if top + height <= H:
        image[b - w:b, l:r] = colour
    if left >= 0:
        image[t:b, l:l + w] = colour
    if left + width <= W:
        image[t:b, r - w:r] = colour
