"""Recorded evaluation episodes (src.evaluate): deterministic policy rollouts that keep what a
picture needs (meta-RL: the agent's path per inner episode, goal, wind; credit: rendered frames)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

@dataclass
class Episode:
    task: object
    success: bool = False
    returns: Optional[np.ndarray] = None    # [k] per inner episode
    length: int = 0
    paths: List[np.ndarray] = field(default_factory=list)  # meta-RL: [steps + 1, 2] per inner episode
    goal: Optional[np.ndarray] = None
    wind: Optional[np.ndarray] = None
    frames: List[np.ndarray] = field(default_factory=list)  # credit: rendered frames (recorded episodes)
    captions: List[str] = field(default_factory=list)
    phases: List[int] = field(default_factory=list)  # the phase of each frame (phased envs; else 0)


def _path_recorder_cls():
    import gymnasium as gym

    class PathRecorder(gym.Wrapper):
        """Records the point's position after every reset and step of a navigation env; a reset
        starts a new path. Sits under MultiEpisode, so inner episodes get their own paths."""

        def __init__(self, env):
            super().__init__(env)
            self.paths: List[List[np.ndarray]] = []

        def reset(self, **kwargs):
            out = self.env.reset(**kwargs)
            self.paths.append([self.env.unwrapped.position])
            return out

        def step(self, action):
            out = self.env.step(action)
            self.paths[-1].append(self.env.unwrapped.position)
            return out

    return PathRecorder


def attach_path_recorder(env):
    """(env to step, recorder): the recorder goes under a MultiEpisode wrapper, else on top."""
    from envs.meta import MultiEpisode
    recorder_cls = _path_recorder_cls()
    if isinstance(env, MultiEpisode):
        env.env = recorder = recorder_cls(env.env)
        return env, recorder
    recorder = recorder_cls(env)
    return recorder, recorder


def _phase(env) -> str:
    """", phase p/P" for the phased credit envs (Visual Match, Key-to-Door), else ""."""
    u = env.unwrapped
    return f", phase {u.phase_index + 1}/{u.num_phases}" if hasattr(u, "phase_index") else ""


def _record_frame(env, ep: Episode, caption: str) -> None:
    ep.frames.append(env.unwrapped.render_rgb())
    ep.captions.append(caption)
    ep.phases.append(int(getattr(env.unwrapped, "phase_index", 0)))


def run_episodes(trainer, tasks: Sequence, seeds: Sequence[int], num_videos: int = 0) -> List[Episode]:
    """One deterministic episode per (task, env seed), all in lockstep (one batched actor call per
    step, fresh memory each); meta-RL paths for every episode, frames for the first ``num_videos``."""
    import torch
    from envs.meta import MultiEpisode
    n, A, dev = len(tasks), trainer.action_dim, trainer.device
    env_list, recorders, episodes = [], [], []
    for i, seed in enumerate(seeds):
        env = trainer._make_env(seed=int(seed))
        k = env.k if isinstance(env, MultiEpisode) else 1  # inner episodes per task
        recorder = None
        if hasattr(env.unwrapped, "position"):
            env, recorder = attach_path_recorder(env)
        env_list.append(env)
        recorders.append(recorder)
        episodes.append(Episode(task=tasks[i], returns=np.zeros(k)))
    obs = []
    for env, ep in zip(env_list, episodes):
        o, _ = env.reset(options=None if ep.task is None else {"task": int(ep.task)})
        obs.append(o)
        u = env.unwrapped
        if hasattr(u, "goal_position"):
            ep.goal = u.goal_position
        if getattr(u, "winds", None) is not None:
            ep.wind = np.array(u.winds[u.task], dtype=float)
    video = [i < num_videos and hasattr(env.unwrapped, "render_rgb") for i, env in enumerate(env_list)]
    names = [getattr(env.unwrapped, "action_names", None) for env in env_list]
    for i in np.flatnonzero(video):
        _record_frame(env_list[i], episodes[i], f"t 0{_phase(env_list[i])} | return 0")

    alive = np.ones(n, dtype=bool)
    prev_a = np.zeros((n, A), dtype=np.float32)
    prev_r = np.zeros((n, 1), dtype=np.float32)
    cur = np.stack(obs)
    state = trainer.agent.initial_actor_state(n, dev)
    while alive.any():
        a, state = trainer.agent.act(torch.as_tensor(prev_a, device=dev), torch.as_tensor(prev_r, device=dev),
                                     torch.as_tensor(cur).to(dev).float(), state, deterministic=True)
        actions = a.cpu().numpy()
        env_actions = actions.argmax(-1) if trainer.discrete else actions
        for i in np.flatnonzero(alive):
            o, r, terminated, truncated, info = env_list[i].step(env_actions[i])
            ep = episodes[i]
            ep.returns[info.get("episode_index", 0)] += r
            ep.length += 1
            cur[i], prev_r[i, 0] = o, r
            if video[i]:
                act = names[i][int(env_actions[i])] if names[i] else str(env_actions[i])
                _record_frame(env_list[i], ep, f"t {ep.length}{_phase(env_list[i])} | {act} | r {r:+g} | "
                                               f"return {ep.returns.sum():g}")
            if terminated or truncated:
                alive[i] = False
                ep.success = bool(info.get("success", False))
                if video[i]:
                    ep.captions[-1] += " | success" if ep.success else " | fail"
        prev_a = actions
    for env, recorder, ep in zip(env_list, recorders, episodes):
        if recorder is not None:
            ep.paths = [np.array(p) for p in recorder.paths[-len(ep.returns):]]
        env.close()
    return episodes
