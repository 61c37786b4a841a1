"""Learning curves and final-success tables from run directories.

    python -m src.plot outputs/sweeps/paper-meta_2026-11-21_17-00-00 [more run or sweep dirs] [--out DIR]

Reads only run directories (any directory under the given paths that holds .hydra/config.yaml):
the env, model and seed from .hydra/config.yaml, the curve from progress.csv. Writes, per env,
``<env>.png``: the metric (default: the runs' own measure, ``default_metric``) against env_steps,
one line per model, the mean over seeds with a ± std band (seeds evaluated at different steps are interpolated onto a
common grid that every seed covers), and ``summary.md``: per env and model, the final value
(each seed's last evaluation) as mean ± std over seeds and as the interquartile mean (IQM) with a
95 % stratified-bootstrap confidence interval, n seeds and the env steps reached; for success
metrics, also each model's IQM over all its (env, seed) finals.
Partial sweeps work: runs without progress.csv or without rows are listed as skipped.

IQM and its interval follow rliable (Agarwal et al., 2021): the IQM of n scores is the mean of
the scores left after dropping the floor(n/4) lowest and the floor(n/4) highest (scipy's
``trim_mean(x, 0.25)``, as in rliable; the plain mean for n < 4). The interval resamples the runs
with replacement within each task (env) separately, ``--n-boot`` times (default 10,000, numpy
generator seeded with 0, so the table is reproducible), and takes the 2.5 and 97.5 percentiles of
the resampled IQMs. With a single seed the interval is the point itself.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from src.aggregate import N_BOOT, fmt_iqm, iqm, iqm_rows, stratified_bootstrap_ci  # noqa: F401
from src.config import best_by_or_default, select_or_none

# Paper order and colours: SHM first in red, the baselines after it, then anything else.
MODEL_ORDER = ["shm", "gru", "fwp", "gpt2", "s6", "mlstm", "ffm", "lstm", "mlp"]
COLORS = {"shm": "#d62728", "gru": "#1f77b4", "fwp": "#2ca02c", "gpt2": "#9467bd", "s6": "#ff7f0e",
          "mlstm": "#8c564b", "ffm": "#e377c2", "lstm": "#17becf", "mlp": "#7f7f7f"}
EXTRA_COLORS = ["#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#31a354"]
SKIP_DIRS = {".submitit", ".hydra", "code", "checkpoints", "tb", "wandb", "plots", ".git", "__pycache__"}


@dataclass
class Run:
    path: Path
    env: str
    label: str
    seed: object
    x: np.ndarray
    y: np.ndarray


def find_run_dirs(paths: Sequence[Path]) -> Tuple[List[Path], List[str]]:
    """Every directory under ``paths`` that holds .hydra/config.yaml (a run); problems found."""
    runs, problems = [], []
    for p in paths:
        p = Path(p)
        if not p.is_dir():
            problems.append(f"{p}: not a directory")
            continue
        found = False
        for root, dirs, _ in os.walk(p):
            if (Path(root) / ".hydra" / "config.yaml").is_file():
                runs.append(Path(root))
                found = True
                dirs[:] = []  # a run dir is not searched further
                continue
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        if not found:
            problems.append(f"{p}: no run directories (no .hydra/config.yaml) under it")
    return sorted(set(runs)), problems


def read_curve(csv_path: Path, x_key: str, y_key: str) -> Tuple[np.ndarray, np.ndarray]:
    """(x, y) of the rows where both are numbers, sorted by x (one y per x: the last written)."""
    pts: Dict[float, float] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                x, y = float(row.get(x_key) or "nan"), float(row.get(y_key) or "nan")
            except ValueError:  # a row cut short by a kill
                continue
            if math.isfinite(x) and math.isfinite(y):
                pts[x] = y
    xs = np.array(sorted(pts), dtype=float)
    return xs, np.array([pts[x] for x in xs], dtype=float)


def default_metric(run_dirs: Sequence[Path]) -> str:
    """The measure the runs themselves use, the most common one where they differ: POPGym's
    eval/return_train for PPO runs, eval/return_eval where eval.best_by=return (tasks without a
    success criterion), else eval/success_eval."""
    from collections import Counter

    from omegaconf import OmegaConf
    votes: Counter = Counter()
    for d in run_dirs:
        try:
            cfg = OmegaConf.load(d / ".hydra" / "config.yaml")
        except Exception:  # noqa: BLE001 - load_runs reports it
            continue
        votes["eval/return_train" if select_or_none(cfg, "algo.name") == "ppo" else
              "eval/return_eval" if best_by_or_default(select_or_none(cfg, "eval.best_by"), select_or_none(cfg, "task.name"),
                                                       select_or_none(cfg, "env.name")) == "return"
              else "eval/success_eval"] += 1
    return votes.most_common(1)[0][0] if votes else "eval/success_eval"


def load_runs(run_dirs: Sequence[Path], metric: str, x_key: str = "env_steps",
              label_keys: Sequence[str] = ("model.name",)) -> Tuple[List[Run], List[str]]:
    from omegaconf import OmegaConf
    runs, skipped = [], []
    for d in run_dirs:
        try:
            cfg = OmegaConf.load(d / ".hydra" / "config.yaml")
        except Exception as e:  # noqa: BLE001
            skipped.append(f"{d}: unreadable .hydra/config.yaml ({e})")
            continue
        env = select_or_none(cfg, "env.name")
        if env is None:
            skipped.append(f"{d}: no env.name in .hydra/config.yaml")
            continue
        csv_path = d / "progress.csv"
        if not csv_path.is_file():
            skipped.append(f"{d}: no progress.csv (not started, or stopped before its first evaluation)")
            continue
        x, y = read_curve(csv_path, x_key, metric)
        if len(x) == 0:
            skipped.append(f"{d}: progress.csv has no rows with {x_key} and {metric}")
            continue
        label = "/".join(str(select_or_none(cfg, k)) for k in label_keys)
        runs.append(Run(d, str(env), label, select_or_none(cfg, "seed"), x, y))
    return runs, skipped


def aggregate(runs: Sequence[Run]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[str]]:
    """Mean and std over runs on a common step grid; a note when seeds cover different ranges."""
    xs = [r.x for r in runs]
    if all(len(x) == len(xs[0]) and np.array_equal(x, xs[0]) for x in xs):
        ys = np.stack([r.y for r in runs])
        return xs[0], ys.mean(0), ys.std(0), None
    lo, hi = max(x[0] for x in xs), min(x[-1] for x in xs)
    grid = np.unique(np.concatenate(xs))
    grid = grid[(grid >= lo) & (grid <= hi)]
    note = None
    if max(x[-1] for x in xs) > hi:
        note = f"seeds reach different steps: plotted up to {hi:g} (the shortest)"
    ys = np.stack([np.interp(grid, r.x, r.y) for r in runs])
    return grid, ys.mean(0), ys.std(0), note


def order_labels(labels) -> List[str]:
    def key(lab):
        base = lab.split("/")[0]
        return (MODEL_ORDER.index(base) if base in MODEL_ORDER else len(MODEL_ORDER), lab)
    return sorted(set(labels), key=key)


def color_of(label: str, extra: Dict[str, str]) -> str:
    if label in COLORS:
        return COLORS[label]
    if label not in extra:
        extra[label] = EXTRA_COLORS[len(extra) % len(EXTRA_COLORS)]
    return extra[label]


def _fmt_steps(v, _pos=None) -> str:
    v = float(v)
    if abs(v) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def axis_label(metric: str) -> str:
    if metric == "eval/mmer":  # POPGym's MMER (task=popgym)
        return "MMER (best mean training return)"
    m = re.fullmatch(r"eval/(success|return)_(train|eval)(_ep\d+)?", metric)
    if m:
        what = "success rate" if m.group(1) == "success" else "return"
        ep = f", episode {m.group(3)[3:]}" if m.group(3) else ""
        return f"{what} ({m.group(2)} tasks{ep})"
    return metric


def plot_env(env: str, by_label: Dict[str, List[Run]], metric: str, out: Path, extra_colors) -> Tuple[Path, List[str]]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    notes = []
    fig, ax = plt.subplots(figsize=(6.0, 3.6), dpi=150)
    for label in order_labels(by_label):
        runs = by_label[label]
        x, mean, std, note = aggregate(runs)
        if note:
            notes.append(f"{env}/{label}: {note}")
        c = color_of(label, extra_colors)
        lw = 2.2 if label.split("/")[0] == "shm" else 1.6
        if len(x) == 1:
            ax.errorbar(x, mean, yerr=std, fmt="o", color=c, label=f"{label} (n={len(runs)})", capsize=3)
        else:
            ax.plot(x, mean, color=c, lw=lw, label=f"{label} (n={len(runs)})")
            ax.fill_between(x, mean - std, mean + std, color=c, alpha=0.18, lw=0)
    ax.set_title(env, fontsize=11)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(axis_label(metric))
    if "success" in metric:
        ax.set_ylim(-0.02, 1.02)
    ax.xaxis.set_major_formatter(FuncFormatter(_fmt_steps))
    ax.grid(True, alpha=0.3, lw=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    path = out / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', env)}.png"
    # the canvas grows to hold the legend, so long labels (e.g. --label algo.lr_schedule) keep the axes' size
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path, notes


def summary_table(env: str, by_label: Dict[str, List[Run]], metric: str, n_boot: int = N_BOOT) -> str:
    lines = [f"### {env}", "", f"| model | final {metric} (mean ± std) | IQM [95 % CI] | n seeds | seeds | env steps |",
             "|---|---|---|---|---|---|"]
    for label in order_labels(by_label):
        runs = by_label[label]
        finals = np.array([r.y[-1] for r in runs])
        steps = sorted({int(r.x[-1]) for r in runs})
        steps_s = f"{steps[0]}" if len(steps) == 1 else f"{steps[0]}–{steps[-1]}"
        seeds = ",".join(str(s) for s in sorted(r.seed for r in runs if r.seed is not None))
        lines.append(f"| {label} | {finals.mean():.3f} ± {finals.std():.3f} | {fmt_iqm([finals], n_boot)} | "
                     f"{len(runs)} | {seeds} | {steps_s} |")
    return "\n".join(lines) + "\n"


def across_envs_table(groups: Dict[str, Dict[str, List[Run]]], metric: str, n_boot: int = N_BOOT) -> str:
    """Per label present in several envs: the IQM of the finals of all its (env, seed) runs, the
    interval resampling seeds within each env. Only for success rates (returns are not on one scale)."""
    labels = [lab for lab in order_labels({lab for g in groups.values() for lab in g})
              if sum(lab in g for g in groups.values()) > 1]
    if not labels or "success" not in metric:
        return ""
    lines = ["### all envs", "", f"| model | IQM of final {metric} [95 % CI] | envs | runs |", "|---|---|---|---|"]
    for label in labels:
        envs = sorted(env for env, g in groups.items() if label in g)
        strata = [np.array([r.y[-1] for r in groups[env][label]]) for env in envs]
        lines.append(f"| {label} | {fmt_iqm(strata, n_boot)} | {', '.join(envs)} | {sum(map(len, strata))} |")
    return "\n".join(lines) + "\n"


def _header(csv_path: Path) -> List[str]:
    with open(csv_path, newline="") as f:
        return next(csv.reader(f), [])


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m src.plot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, help="run directories and/or directories that contain them")
    p.add_argument("--out", type=Path, default=None,
                   help="output dir (default: <path>/plots for one path, ./plots for several)")
    p.add_argument("--metric", default=None,
                   help="progress.csv column (default: the runs' own measure: eval/success_eval, eval/return_eval "
                        "where eval.best_by=return, eval/return_train for PPO runs; also eval/mmer, ...)")
    p.add_argument("--x", default="env_steps", help="x-axis column (default env_steps)")
    p.add_argument("--label", default="model.name",
                   help="config key(s), comma-separated, naming a curve (default model.name)")
    p.add_argument("--n-boot", type=int, default=N_BOOT,
                   help=f"bootstrap resamples for the IQM confidence intervals (default {N_BOOT})")
    a = p.parse_args(argv)
    if a.n_boot < 1:
        p.error(f"--n-boot must be >= 1, got {a.n_boot}")

    run_dirs, problems = find_run_dirs(a.paths)
    if a.metric is None:
        a.metric = default_metric(run_dirs)
        print(f"metric: {a.metric} (the runs' own measure; --metric picks another)", file=sys.stderr)
    runs, skipped = load_runs(run_dirs, a.metric, a.x, [k for k in a.label.split(",") if k])
    for msg in problems + skipped:
        print(f"skipped: {msg}", file=sys.stderr)
    if not runs:
        columns = sorted({c for d in run_dirs if (d / "progress.csv").is_file()
                          for c in _header(d / "progress.csv") if c.startswith("eval/")})
        hint = f"; columns these runs have: {', '.join(columns)} (pick one with --metric)" if columns else ""
        print(f"src.plot: error: no run with {a.metric} data under {', '.join(map(str, a.paths))}{hint}",
              file=sys.stderr)
        return 1
    out = a.out or (a.paths[0] / "plots" if len(a.paths) == 1 else Path("plots"))
    out.mkdir(parents=True, exist_ok=True)

    groups: Dict[str, Dict[str, List[Run]]] = {}
    for r in runs:
        groups.setdefault(r.env, {}).setdefault(r.label, []).append(r)
    extra_colors: Dict[str, str] = {}
    tables, notes = [], []
    for env in sorted(groups):
        for label, rs in groups[env].items():
            seeds = [r.seed for r in rs]
            dups = sorted({str(s) for s in seeds if seeds.count(s) > 1})
            if dups:
                notes.append(f"{env}/{label}: seed(s) {','.join(dups)} appear in several runs; all are averaged")
        path, env_notes = plot_env(env, groups[env], a.metric, out, extra_colors)
        notes += env_notes
        print(f"wrote {path}")
        tables.append(summary_table(env, groups[env], a.metric, a.n_boot))
    across = across_envs_table(groups, a.metric, a.n_boot)
    if across:
        tables.append(across)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    md = (f"# Final {a.metric}\n\nEach seed's last evaluation; mean ± std (numpy std, ddof=0) over seeds; "
          f"interquartile mean (IQM) with a 95 % stratified-bootstrap interval (seeds resampled within each "
          f"env, {a.n_boot} resamples, seed 0; see `python -m src.plot --help`). "
          f"{len(runs)} runs, {len(problems) + len(skipped)} skipped.\n\n" + "\n".join(tables))
    (out / "summary.md").write_text(md)
    print(f"wrote {out / 'summary.md'}\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
