"""Evaluate a trained run: a success/return table and pictures of what the policy does.

    python -m src.evaluate RUN_DIR [ckpt=auto|best|last|FILE] [episodes=N] [out=DIR] [device=cpu]
                           [tasks=K] [videos=M] [fps=F] [seed=S]

Loads the run's saved config (RUN_DIR/.hydra/config.yaml) and a checkpoint, runs the deterministic
policy (fresh memory per episode, as the training loop's evaluation) and prints one row per split:
episodes, success rate, return mean ± std (and per inner episode where a task has k > 1). Meta-RL
envs (Wind, PointRobot) run the train and the eval tasks; credit-assignment envs (no task sets)
run fresh episodes, reported as the eval split. PPO runs (task=popgym) play ``episodes`` (default
100) fresh episodes twice: greedily (argmax) and with sampled actions, as in training; POPGym has
returns only. The numbers use progress.csv's metric names.

Checkpoints (``ckpt=``): ``best`` = RUN_DIR/checkpoints/best.pt (the best evaluation's weights;
an error naming the file when it is missing), ``last`` = checkpoints/last.pt, ``auto`` (default)
= best.pt when the run has one, else last.pt; or the path of any memrl checkpoint file.

Written to ``out`` (default RUN_DIR/eval/<checkpoint name>, e.g. RUN_DIR/eval/best/), never into
the run's checkpoints/ or progress.csv:
  results.md, results.json        the table and its numbers
  episodes.csv                    off-policy runs: one row per episode (split, task, success, return,
                                  length; meta-RL: final distance to the goal, Wind: the task's wind),
                                  to see which tasks a policy fails
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

import csv
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from src.recorded_episodes import Episode, attach_path_recorder, run_episodes  # noqa: F401
from src.pictures import key_frame_indices, plot_trajectories, write_gif, write_key_frames  # noqa: F401

PPO_EPISODES = 100  # default episodes per policy for a PPO run (POPGym), whose config has no task set

USAGE = ("usage: python -m src.evaluate RUN_DIR [ckpt=auto|best|last|FILE] [episodes=N] [out=DIR] "
         "[device=auto|cpu|cuda] [tasks=K] [videos=M] [fps=F] [seed=S]")
DEFAULTS = {"ckpt": "auto", "episodes": None, "out": None, "device": None, "tasks": 4, "videos": 2,
            "fps": 10, "seed": 0}
INT_KEYS = {"episodes": 1, "tasks": 0, "videos": 0, "fps": 1, "seed": 0}  # key -> smallest value


class EvalError(Exception):
    """Bad input: reported as one line on stderr, exit code 2."""


# ----------------------------------------------------------------------------- arguments and files
def parse_args(argv: Sequence[str], defaults: Optional[dict] = None, int_keys: Optional[dict] = None,
               usage: str = USAGE) -> dict:
    """``RUN_DIR key=value ...`` -> the arguments (``defaults`` filled in) and ``run_dir``."""
    defaults = DEFAULTS if defaults is None else defaults
    int_keys = INT_KEYS if int_keys is None else int_keys
    args, run_dirs = dict(defaults), []
    for tok in argv:
        if "=" not in tok or "/" in tok.split("=", 1)[0] or Path(tok).is_dir():  # sweep job dirs hold '='
            run_dirs.append(tok)
            continue
        key, value = tok.split("=", 1)
        if key not in defaults:
            raise EvalError(f"unknown argument {key}={value}; valid keys: {', '.join(defaults)}")
        if key in int_keys:
            try:
                value = int(value)
            except ValueError:
                raise EvalError(f"{key}={value}: expected an integer") from None
            if value < int_keys[key]:
                raise EvalError(f"{key}={value}: must be >= {int_keys[key]}")
        args[key] = value
    if len(run_dirs) != 1:
        raise EvalError(f"expected one run directory, got {len(run_dirs)} ({' '.join(run_dirs) or 'none'}). {usage}")
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
    """The run's saved config in today's keys (runs of older commits too: upgrade_saved_config) with
    memrl's resolvers registered, and the device overridden if asked."""
    from omegaconf import OmegaConf

    from src.config import register_resolvers, upgrade_saved_config
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
    if all(key in cfg for key in ("agent", "model", "eval", "train")):  # else load_trained names what is wrong
        cfg = upgrade_saved_config(cfg)
    if device is not None:
        cfg.device = device
    cfg.resume = None
    return cfg


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


def format_table(metrics: Dict[str, float], splits: Sequence[str], k: int, has_success: bool = True) -> str:
    """The results table; ``has_success=False`` (tasks scored by return, eval.best_by=return) shows "—"."""
    head = "| split | episodes | success | return (mean ± std) |" + "".join(f" return ep{j + 1} |" for j in range(k if k > 1 else 0))
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in splits:
        success = f"{metrics[f'eval/success_{s}']:.3f}" if has_success else "—"
        row = (f"| {s} | {metrics[f'eval/episodes_{s}']} | {success} | "
               f"{metrics[f'eval/return_{s}']:.2f} ± {metrics[f'eval/return_{s}_std']:.2f} |")
        if k > 1:
            row += "".join(f" {metrics[f'eval/return_{s}_ep{j + 1}']:.2f} |" for j in range(k))
        lines.append(row)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- pictures
def load_trained(cfg, run_dir: Path, ckpt_path: Path):
    """The run's trainer (off-policy, or PPO for algo=ppo) with the checkpoint's agent weights, and
    the checkpoint."""
    from omegaconf.errors import OmegaConfBaseException

    from src.checkpoint import CheckpointError, load_checkpoint
    from src.loop import Trainer
    from src.ppo_loop import PPOTrainer
    try:
        trainer = (PPOTrainer if cfg.algo.get("name") == "ppo" else Trainer)(cfg, run_dir)
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
    return trainer, ckpt


def ppo_metrics(trainer, episodes: int, seed: int):
    """A PPO run (POPGym: returns only, no success): the same ``episodes`` fresh episodes played
    greedily (argmax; progress.csv's eval/return_eval) and with sampled actions (as in training)."""
    import torch
    torch.manual_seed(seed)
    metrics, lines = {}, ["| policy | episodes | return (mean ± std) |", "|---|---|---|"]
    for name, key, greedy in (("greedy (argmax)", "eval", True), ("sampled (as in training)", "sampled", False)):
        returns = trainer.play(episodes, seed * 100_003 + 70_000, greedy)
        metrics.update({f"eval/return_{key}": float(returns.mean()), f"eval/return_{key}_std": float(returns.std()),
                        f"eval/episodes_{key}": episodes})
        lines.append(f"| {name} | {episodes} | {returns.mean():.3f} ± {returns.std():.3f} |")
    return metrics, "\n".join(lines)


def episode_rows(split: str, episodes: Sequence[Episode]) -> List[dict]:
    """One row per episode; distance = from the last position of the last inner episode to the goal."""
    rows = []
    for ep in episodes:
        row = {"split": split, "task": "" if ep.task is None else int(ep.task), "success": int(ep.success),
               "return": float(np.sum(ep.returns)) if ep.returns is not None else "", "length": ep.length}
        if ep.paths and ep.goal is not None:
            row["final_distance"] = float(np.linalg.norm(ep.paths[-1][-1] - ep.goal))
        if ep.wind is not None:
            row["wind_x"], row["wind_y"] = (float(w) for w in ep.wind)
        rows.append(row)
    return rows


def write_episode_table(results: Dict[str, List[Episode]], path: Path) -> Path:
    rows = [r for split, eps in results.items() for r in episode_rows(split, eps)]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns, restval="")
        w.writeheader()
        w.writerows(rows)
    return path


def evaluate(args: dict) -> int:
    run_dir = args["run_dir"]
    cfg = load_run_config(run_dir, args["device"])
    ckpt_path = resolve_checkpoint(run_dir, args["ckpt"])
    trainer, ckpt = load_trained(cfg, run_dir, ckpt_path)
    out = Path(args["out"]) if args["out"] else run_dir / "eval" / ckpt_path.stem
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EvalError(f"cannot create the output directory {out} ({e.strerror or e}); pass out=<a writable directory>")

    ppo = cfg.algo.get("name") == "ppo"
    if ppo:
        metrics, table = ppo_metrics(trainer, args["episodes"] or PPO_EPISODES, args["seed"])
        results: Dict[str, List[Episode]] = {}
    else:
        metrics, results = {}, {}
        k = int(cfg.env.get("episodes_per_task", 1))
        splits = {"train": trainer.train_tasks, "eval": trainer.eval_tasks} if trainer.has_tasks else {"eval": trainer.eval_tasks}
        for offset, (split, task_set) in enumerate(splits.items()):
            n = args["episodes"] or len(task_set)
            tasks = [task_set[i % len(task_set)] for i in range(n)]
            seeds = [args["seed"] * 100_003 + 70_000 + 10_000 * offset + i for i in range(n)]
            results[split] = run_episodes(trainer, tasks, seeds, num_videos=args["videos"])
            metrics.update(split_metrics(split, results[split]))
        table = format_table(metrics, list(splits), k, cfg.eval.get("best_by", "success") == "success")

    counters = ckpt.get("counters") or {}
    where = ", ".join(f"{name} {counters[c]}" for c, name in (("iteration", "iteration"), ("env_steps", "env steps"))
                      if c in counters)
    header = (f"run {run_dir} | {cfg.env.name} / {cfg.model.name} / seed {cfg.seed}\n"
              f"checkpoint {ckpt_path}{f' ({where})' if where else ''} | "
              f"{'greedy and sampled policies' if ppo else 'deterministic policy'}, env seed {args['seed']}, device {trainer.device}")
    print(header + "\n\n" + table + "\n")
    (out / "results.md").write_text(header + "\n\n" + table + "\n")
    (out / "results.json").write_text(json.dumps(
        {"run_dir": str(run_dir), "checkpoint": str(ckpt_path), "counters": counters, "env": cfg.env.name,
         "model": cfg.model.name, "seed": cfg.seed, "env_seed": args["seed"], "metrics": metrics}, indent=2) + "\n")
    written = [out / "results.md", out / "results.json"]
    if results:
        written.append(write_episode_table(results, out / "episodes.csv"))
    for old in (*out.glob("trajectories_*.png"), *out.glob("episode*_success.*"), *out.glob("episode*_fail.*")):
        old.unlink()  # pictures of an earlier evaluation into this directory

    if not ppo and trainer.has_tasks and args["tasks"] > 0:
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


def run_cli(argv: Optional[Sequence[str]], prog: str, doc: str, usage: str, command) -> int:
    """A ``python -m prog RUN_DIR key=value ...`` entry point: ``-h`` prints ``doc``, no argument
    ``usage``; ``command(argv)``'s EvalError becomes one line on stderr and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(doc if argv else usage, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    try:
        return command(argv)
    except EvalError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(argv, "src.evaluate", __doc__, USAGE, lambda a: evaluate(parse_args(a)))


if __name__ == "__main__":
    sys.exit(main())
