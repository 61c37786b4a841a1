"""Evaluate a trained run: a success/return table and pictures of what the policy does.

    python -m src.evaluate RUN_DIR [ckpt=auto|best|last|FILE] [episodes=N] [out=DIR] [device=cpu]
                           [tasks=K] [videos=M] [fps=F] [seed=S]

Loads the run's saved config (RUN_DIR/.hydra/config.yaml) and a checkpoint, runs the deterministic
policy (fresh memory per episode, as the training loop's evaluation) and prints one row per split:
episodes, success rate, return mean ± std (and per inner episode where a task has k > 1). Meta-RL
envs (Wind, PointRobot) run the train and the eval tasks; credit-assignment envs (no task sets)
run fresh episodes, reported as the eval split. The numbers use progress.csv's metric names.

Checkpoints (``ckpt=``): ``best`` = RUN_DIR/checkpoints/best.pt (the best evaluation's weights;
an error naming the file when it is missing), ``last`` = checkpoints/last.pt, ``auto`` (default)
= best.pt when the run has one, else last.pt; or the path of any memrl checkpoint file.

Written to ``out`` (default RUN_DIR/eval/<checkpoint name>, e.g. RUN_DIR/eval/best/), never into
the run's checkpoints/ or progress.csv:
  results.md, results.json        the table and its numbers
  trajectories_{train,eval}.png   meta-RL: the paths of the first ``tasks`` (default 4) episodes of
                                  each split: start, goal region, path per inner episode
  episode{i}_{success|fail}.gif   credit: the first ``videos`` (default 2) episodes frame by frame
                                  (the whole board, the agent's 5x5 view outlined), ``fps`` 10
  episode{i}_{success|fail}.png   the same episode's key frames side by side: the first frame of
                                  each phase and the last (T-Maze: first, middle, last)

``episodes=N``: episodes per split (default: each task of the split once, as in training; credit:
eval.num_episodes). Meta-RL tasks are taken in split order, round robin when N exceeds the split.
``seed=S`` (default 0) seeds the episodes' envs: the same seed gives the same episodes.
Exit code 2 (one line on stderr) for a bad run directory, a missing checkpoint or bad arguments.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

USAGE = ("usage: python -m src.evaluate RUN_DIR [ckpt=auto|best|last|FILE] [episodes=N] [out=DIR] "
         "[device=auto|cpu|cuda] [tasks=K] [videos=M] [fps=F] [seed=S]")
DEFAULTS = {"ckpt": "auto", "episodes": None, "out": None, "device": None, "tasks": 4, "videos": 2,
            "fps": 10, "seed": 0}
INT_KEYS = {"episodes": 1, "tasks": 0, "videos": 0, "fps": 1, "seed": 0}  # key -> smallest value


class EvalError(Exception):
    """Bad input: reported as one line on stderr, exit code 2."""


# ----------------------------------------------------------------------------- arguments and files
def parse_args(argv: Sequence[str]) -> dict:
    args, run_dirs = dict(DEFAULTS), []
    for tok in argv:
        if "=" not in tok:
            run_dirs.append(tok)
            continue
        key, value = tok.split("=", 1)
        if key not in DEFAULTS:
            raise EvalError(f"unknown argument {key}={value}; valid keys: {', '.join(DEFAULTS)}")
        if key in INT_KEYS:
            try:
                value = int(value)
            except ValueError:
                raise EvalError(f"{key}={value}: expected an integer") from None
            if value < INT_KEYS[key]:
                raise EvalError(f"{key}={value}: must be >= {INT_KEYS[key]}")
        args[key] = value
    if len(run_dirs) != 1:
        raise EvalError(f"expected one run directory, got {len(run_dirs)} ({' '.join(run_dirs) or 'none'}). {USAGE}")
    args["run_dir"] = Path(run_dirs[0])
    return args


def resolve_checkpoint(run_dir: Path, choice: str) -> Path:
    """The checkpoint file for ``ckpt=choice`` (see the module doc)."""
    ckpt_dir = run_dir / "checkpoints"
    best, last = ckpt_dir / "best.pt", ckpt_dir / "last.pt"
    if choice == "best":
        if not best.is_file():
            hint = "use ckpt=last" if last.is_file() else "the run has no checkpoint yet"
            raise EvalError(f"ckpt=best: {best} does not exist (this run kept no best-evaluation "
                            f"checkpoint); {hint}")
        return best
    if choice == "last":
        if not last.is_file():
            raise EvalError(f"ckpt=last: {last} does not exist: the run stopped before its first "
                            f"evaluation; train it longer (python -m src.train resume={run_dir})")
        return last
    if choice == "auto":
        for path in (best, last):
            if path.is_file():
                return path
        raise EvalError(f"no checkpoint in {ckpt_dir} (neither best.pt nor last.pt): the run stopped "
                        f"before its first evaluation; train it longer (python -m src.train "
                        f"resume={run_dir}) or pass ckpt=<checkpoint file>")
    path = Path(choice)
    if not path.is_file():
        raise EvalError(f"ckpt={choice}: no such file; use ckpt=best, ckpt=last or the path of a checkpoint")
    return path


def load_run_config(run_dir: Path, device: Optional[str]):
    """The run's saved config (memrl's resolvers registered), with the device overridden if asked."""
    from omegaconf import OmegaConf

    from src.config import register_resolvers
    if not run_dir.is_dir():
        raise EvalError(f"{run_dir}: no such run directory")
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise EvalError(f"{path} is missing, so {run_dir} is not a memrl run directory (pass the "
                        f"directory that holds .hydra/ and checkpoints/)")
    register_resolvers()
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # noqa: BLE001 - YAML errors of several kinds
        raise EvalError(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    if device is not None:
        cfg.device = device
    cfg.resume = None
    return cfg


# ----------------------------------------------------------------------------- episodes
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


def split_metrics(split: str, episodes: Sequence[Episode]) -> Dict[str, float]:
    """progress.csv's names: eval/success_<split>, eval/return_<split> (sum over the k inner
    episodes), eval/return_<split>_ep<j> when k > 1; plus the std of the return and the count."""
    returns = np.stack([ep.returns for ep in episodes])
    out = {f"eval/success_{split}": float(np.mean([ep.success for ep in episodes])),
           f"eval/return_{split}": float(returns.sum(1).mean()),
           f"eval/return_{split}_std": float(returns.sum(1).std()),
           f"eval/episodes_{split}": len(episodes)}
    if returns.shape[1] > 1:
        for j in range(returns.shape[1]):
            out[f"eval/return_{split}_ep{j + 1}"] = float(returns[:, j].mean())
    return out


def format_table(metrics: Dict[str, float], splits: Sequence[str], k: int) -> str:
    head = "| split | episodes | success | return (mean ± std) |" + "".join(f" return ep{j + 1} |" for j in range(k if k > 1 else 0))
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in splits:
        row = (f"| {s} | {metrics[f'eval/episodes_{s}']} | {metrics[f'eval/success_{s}']:.3f} | "
               f"{metrics[f'eval/return_{s}']:.2f} ± {metrics[f'eval/return_{s}_std']:.2f} |")
        if k > 1:
            row += "".join(f" {metrics[f'eval/return_{s}_ep{j + 1}']:.2f} |" for j in range(k))
        lines.append(row)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- pictures
EPISODE_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]


def plot_trajectories(episodes: Sequence[Episode], title: str, path: Path, goal_radius: float,
                      all_goals: Optional[np.ndarray] = None) -> Path:
    """One panel per episode, all with the same square window: the goal region, the start, the
    path and the end of each inner episode (and the task's wind, where there is one)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    n = len(episodes)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.0 * rows + 0.9), dpi=120, squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    pts = [p for ep in episodes for p in ep.paths] + [ep.goal[None] for ep in episodes if ep.goal is not None]
    if all_goals is not None:
        pts.append(all_goals)
    allp = np.concatenate(pts)
    centre, half = (allp.min(0) + allp.max(0)) / 2, (allp.max(0) - allp.min(0)).max() / 2 * 1.08 + 0.05
    for ax, ep in zip(axes.flat, episodes):
        if all_goals is not None:  # the task distribution's goals (PointRobot: the upper half-circle)
            ax.scatter(all_goals[:, 0], all_goals[:, 1], s=3, color="#c0c0c0", zorder=1, label="possible goals")
        if ep.goal is not None:
            ax.add_patch(Circle(ep.goal, goal_radius, color="#2ca02c", alpha=0.35, zorder=2))
            ax.scatter(*ep.goal, marker="*", s=140, color="#2ca02c", edgecolor="k", lw=0.5, zorder=5,
                       label="goal")
        for j, p in enumerate(ep.paths):
            c = EPISODE_COLOURS[j % len(EPISODE_COLOURS)]
            ax.plot(p[:, 0], p[:, 1], "-", color=c, lw=1.3, alpha=0.9, zorder=3,
                    label=f"episode {j + 1}" if len(ep.paths) > 1 else "path")
            ax.scatter(*p[0], marker="o", s=36, facecolor="white", edgecolor=c, lw=1.5, zorder=4,
                       label="start" if j == 0 else None)
            ax.scatter(*p[-1], marker="x", s=30, color=c, lw=1.5, zorder=4, label="end" if j == 0 else None)
        if ep.wind is not None and ep.paths:
            start = ep.paths[0][0]
            ax.annotate("", xy=start + 5 * ep.wind, xytext=start, zorder=4,
                        arrowprops=dict(arrowstyle="-|>", color="#d62728", lw=1.5))
            ax.plot([], [], color="#d62728", label="wind (x5, per step)")
        ax.set_xlim(centre[0] - half, centre[0] + half)
        ax.set_ylim(centre[1] - half, centre[1] + half)
        ax.set_aspect("equal")
        ax.set_title(f"task {ep.task}: {'success' if ep.success else 'miss'}, return {ep.returns.sum():g}",
                     fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.25, lw=0.5)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def _caption_font():
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=12)  # scalable where Pillow has FreeType
    except (TypeError, ValueError, OSError):
        return ImageFont.load_default()


def captioned(frame: np.ndarray, caption: str, font, min_width: int = 360):
    """The frame (centred, widened to ``min_width`` with white) above a one-line caption bar."""
    from PIL import Image, ImageDraw
    h, w = frame.shape[:2]
    width, bar = max(w, min_width), 18
    image = Image.new("RGB", (width, h + bar), "white")
    image.paste(Image.fromarray(frame), ((width - w) // 2, 0))
    ImageDraw.Draw(image).text((4, h + 3), caption, fill=(0, 0, 0), font=font)
    return image


def key_frame_indices(phases: Sequence[int]) -> List[int]:
    """The first frame of every phase and the last frame; without phases: first, middle, last."""
    n = len(phases)
    starts = [i for i in range(n) if i == 0 or phases[i] != phases[i - 1]]
    idx = starts if len(starts) > 1 else [0, n // 2]
    return sorted(set(idx + [n - 1]))


def write_key_frames(ep: Episode, path: Path) -> Path:
    """The key frames of an episode side by side (a still to look at or put in a document)."""
    from PIL import Image
    font = _caption_font()
    images = [captioned(ep.frames[i], ep.captions[i], font) for i in key_frame_indices(ep.phases)]
    sheet = Image.new("RGB", (sum(im.width for im in images) + 8 * (len(images) - 1),
                              max(im.height for im in images)), "white")
    x = 0
    for im in images:
        sheet.paste(im, (x, 0))
        x += im.width + 8
    sheet.save(path)
    return path


def write_gif(frames: Sequence[np.ndarray], captions: Sequence[str], path: Path, fps: int) -> Path:
    font = _caption_font()
    images = [captioned(f, c, font) for f, c in zip(frames, captions)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)),
                   loop=0, optimize=False)
    return path


# ----------------------------------------------------------------------------- main
def evaluate(args: dict) -> int:
    run_dir = args["run_dir"]
    cfg = load_run_config(run_dir, args["device"])
    ckpt_path = resolve_checkpoint(run_dir, args["ckpt"])
    from omegaconf.errors import OmegaConfBaseException

    from src.checkpoint import CheckpointError, load_checkpoint
    from src.loop import Trainer
    try:
        trainer = Trainer(cfg, run_dir)
        ckpt = load_checkpoint(ckpt_path, map_location=trainer.device)
    except (CheckpointError, ValueError) as e:
        raise EvalError(str(e)) from e
    except OmegaConfBaseException as e:
        raise EvalError(f"the run's config {run_dir / '.hydra' / 'config.yaml'} cannot build the agent "
                        f"({type(e).__name__}: {str(e).splitlines()[0]}): is it a memrl training config?") from e
    if "agent" not in ckpt:
        raise EvalError(f"{ckpt_path} holds no agent weights (keys: {', '.join(ckpt)}): not a memrl training checkpoint")
    try:
        trainer.agent.load_state_dict(ckpt["agent"])
    except RuntimeError as e:
        raise EvalError(f"{ckpt_path} does not fit the run's config {run_dir / '.hydra' / 'config.yaml'} "
                        f"({str(e).splitlines()[0]}): was the checkpoint copied from another run?") from e
    trainer.agent.eval()
    out = Path(args["out"]) if args["out"] else run_dir / "eval" / ckpt_path.stem
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EvalError(f"cannot create the output directory {out} ({e.strerror or e}); pass out=<a writable directory>")

    k = int(cfg.env.get("episodes_per_task", 1))
    splits = {"train": trainer.train_tasks, "eval": trainer.eval_tasks} if trainer.has_tasks else {"eval": trainer.eval_tasks}
    metrics: Dict[str, float] = {}
    results: Dict[str, List[Episode]] = {}
    for offset, (split, task_set) in enumerate(splits.items()):
        n = args["episodes"] or len(task_set)
        tasks = [task_set[i % len(task_set)] for i in range(n)]
        seeds = [args["seed"] * 100_003 + 70_000 + 10_000 * offset + i for i in range(n)]
        results[split] = run_episodes(trainer, tasks, seeds, num_videos=args["videos"])
        metrics.update(split_metrics(split, results[split]))

    counters = ckpt.get("counters") or {}
    where = ", ".join(f"{name} {counters[c]}" for c, name in (("iteration", "iteration"), ("env_steps", "env steps"))
                      if c in counters)
    header = (f"run {run_dir} | {cfg.env.name} / {cfg.model.name} / seed {cfg.seed}\n"
              f"checkpoint {ckpt_path}{f' ({where})' if where else ''} | deterministic policy, "
              f"env seed {args['seed']}, device {trainer.device}")
    table = format_table(metrics, list(splits), k)
    print(header + "\n\n" + table + "\n")
    (out / "results.md").write_text(header + "\n\n" + table + "\n")
    (out / "results.json").write_text(json.dumps(
        {"run_dir": str(run_dir), "checkpoint": str(ckpt_path), "counters": counters, "env": cfg.env.name,
         "model": cfg.model.name, "seed": cfg.seed, "env_seed": args["seed"], "metrics": metrics}, indent=2) + "\n")
    written = [out / "results.md", out / "results.json"]
    for old in (*out.glob("trajectories_*.png"), *out.glob("episode*_success.*"), *out.glob("episode*_fail.*")):
        old.unlink()  # pictures of an earlier evaluation into this directory

    if trainer.has_tasks and args["tasks"] > 0:
        probe = trainer._make_env().unwrapped
        all_goals = getattr(probe, "goals", None)
        for split, eps in results.items():
            written.append(plot_trajectories(
                eps[:args["tasks"]], f"{cfg.env.name} / {cfg.model.name}: {split} tasks ({ckpt_path.name})",
                out / f"trajectories_{split}.png", float(probe.goal_radius), all_goals))
    for split, eps in results.items():
        for i, ep in enumerate(e for e in eps if e.frames):
            stem = f"episode{i + 1}_{'success' if ep.success else 'fail'}"
            written.append(write_gif(ep.frames, ep.captions, out / f"{stem}.gif", args["fps"]))
            written.append(write_key_frames(ep, out / f"{stem}.png"))
    for path in written:
        print(f"wrote {path}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__ if argv else USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    try:
        return evaluate(parse_args(argv))
    except EvalError as e:
        print(f"src.evaluate: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
