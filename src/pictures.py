"""Pictures of evaluated episodes (src.evaluate): meta-RL trajectories as PNG, credit-assignment
episodes as captioned GIFs and key-frame sheets."""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

EPISODE_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]


def plot_trajectories(episodes: Sequence, title: str, path: Path, goal_radius: float,
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


def write_key_frames(ep, path: Path) -> Path:
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
