"""Replay of whole episodes, each stored once, sampled uniformly with replacement.

Storage is a flat ring of time slots. An episode of length L takes L+1 consecutive slots:
observations o_0..o_L in every slot, and (a_t, r_t, terminal_t) in slots 0..L-1 (the last slot's
transition fields are unused), so no next observation is stored twice. When the ring is full, the
oldest episodes are dropped to make room.

``sample(B)`` returns a batch padded to the longest sampled episode T:
    obs [B, T+1, *obs_shape], act [B, T, A], rew [B, T], term [B, T], mask [B, T]
with mask = 1 on real steps and 0 on padding.

``seq_len`` = S (pomdp-baselines' ``sampled_seq_len``; None = whole episodes): ``sample`` returns
windows of S steps instead. As in the reference's buffer (ref-pomdp-baselines.md §4, with
``sample_weight_baseline`` 0), an episode of L steps has max(1, L − S + 1) valid starts, the steps
from which a whole window fits (a shorter episode: its first step only, the window padded and
masked past its end), and a batch draws B valid starts uniformly over the whole replay (so an
episode is drawn in proportion to its valid starts). The algorithms start every window from the
initial memory state with zero previous action and reward. T = the longest window in the batch.
"""
from __future__ import annotations

from collections import deque
from typing import Dict

import numpy as np


class EpisodeReplay:
    def __init__(self, capacity: int, obs_shape, obs_dtype, action_dim: int, max_episode_len: int,
                 seed: int = 0, seq_len=None):
        if seq_len is not None and (int(seq_len) != seq_len or seq_len < 1):
            raise ValueError(f"train.seq_len={seq_len}: must be a positive integer (window length) or null "
                             f"(whole episodes)")
        self.seq_len = None if seq_len is None else int(seq_len)
        if capacity <= 0:
            raise ValueError(f"replay capacity must be positive, got {capacity}")
        if capacity < max_episode_len + 1:
            raise ValueError(f"replay capacity {capacity} cannot hold one episode of {max_episode_len} steps")
        self.capacity = int(capacity)
        self.obs = np.zeros((self.capacity, *obs_shape), dtype=obs_dtype)
        self.act = np.zeros((self.capacity, action_dim), dtype=np.float32)
        self.rew = np.zeros(self.capacity, dtype=np.float32)
        self.term = np.zeros(self.capacity, dtype=np.float32)
        self.episodes: deque = deque()  # (start slot, length) in insertion order
        self.write = 0                  # next free slot
        self.num_steps = 0              # transitions currently stored
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.episodes)

    def add_episode(self, obs: np.ndarray, act: np.ndarray, rew: np.ndarray, term: np.ndarray) -> None:
        """obs [L+1, ...], act [L, A], rew [L], term [L]."""
        L = len(act)
        if L == 0 or len(obs) != L + 1 or len(rew) != L or len(term) != L:
            raise ValueError(f"inconsistent episode: obs {len(obs)}, act {L}, rew {len(rew)}, term {len(term)}")
        if L + 1 > self.capacity:
            raise ValueError(f"episode of {L} steps does not fit a replay of capacity {self.capacity}")
        start = self.write if self.write + L + 1 <= self.capacity else 0  # no wrap inside an episode
        end = start + L + 1
        while self.episodes and self._overlaps(self.episodes[0], start, end):
            self.num_steps -= self.episodes.popleft()[1]
        self.obs[start:end] = obs
        self.act[start:end - 1] = act
        self.rew[start:end - 1] = rew
        self.term[start:end - 1] = term
        self.episodes.append((start, L))
        self.num_steps += L
        self.write = end % self.capacity

    @staticmethod
    def _overlaps(episode, start: int, end: int) -> bool:
        s, L = episode
        return s < end and start < s + L + 1

    def sample(self, batch_size: int) -> Dict[str, np.ndarray]:
        if not self.episodes:
            raise RuntimeError("cannot sample from an empty replay buffer")
        starts, lengths = self._windows(batch_size)
        T = int(lengths.max())
        t = np.arange(T + 1)
        slots = np.minimum(starts[:, None] + t, self.capacity - 1)          # [B, T+1]
        valid_obs = t[None, :] <= lengths[:, None]
        mask = (t[None, :T] < lengths[:, None]).astype(np.float32)        # [B, T]
        obs = self.obs[slots] * valid_obs.reshape(*valid_obs.shape, *[1] * (self.obs.ndim - 1)).astype(self.obs.dtype)
        tr = slots[:, :T]
        return {
            "obs": obs,
            "act": self.act[tr] * mask[..., None],
            "rew": self.rew[tr] * mask,
            "term": self.term[tr] * mask,
            "mask": mask,
        }

    def _windows(self, batch_size: int):
        """First slot [B] and number of real steps [B] of each sampled sequence."""
        table = np.asarray(self.episodes)                                  # [N, 2]
        if self.seq_len is None:  # whole episodes, uniformly
            pick = table[self.rng.integers(len(table), size=batch_size)]   # [B, 2]
            return pick[:, 0], pick[:, 1]
        n_valid = np.maximum(1, table[:, 1] - self.seq_len + 1)            # valid starts per episode
        ep = self.rng.choice(len(table), size=batch_size, p=n_valid / n_valid.sum())
        offset = self.rng.integers(n_valid[ep])                            # uniform among its valid starts
        return table[ep, 0] + offset, np.minimum(self.seq_len, table[ep, 1] - offset)

    # ---- checkpointing: only the filled part of the arrays is saved
    def state_dict(self) -> dict:
        used = max((s + L + 1 for s, L in self.episodes), default=0)
        return {"capacity": self.capacity, "used": used, "obs": self.obs[:used].copy(),
                "act": self.act[:used].copy(), "rew": self.rew[:used].copy(), "term": self.term[:used].copy(),
                "episodes": list(self.episodes), "write": self.write, "num_steps": self.num_steps,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"checkpoint replay capacity {state['capacity']} != configured {self.capacity}")
        used = state["used"]
        self.obs[:used], self.act[:used] = state["obs"], state["act"]
        self.rew[:used], self.term[:used] = state["rew"], state["term"]
        self.episodes = deque(tuple(e) for e in state["episodes"])
        self.write, self.num_steps = state["write"], state["num_steps"]
        self.rng.bit_generator.state = state["rng"]
