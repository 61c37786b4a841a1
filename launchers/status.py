"""Where the runs of a sweep (or single run dirs) stand: progress against their budget, the last and
best evaluation, when they last wrote a row, and whether a process is running them now.

    python -m launchers.sweep --status ~/memrl-runs/wind-paper [more sweep or run dirs]

A run is "running" when a live process holds its ``.lock`` (``/proc/locks``; runs of older code
without the lock are found by their run dir on a process's command line), "paused" when that
process is stopped (SIGSTOP), "finished" when its last row reached the budget, else "stopped":
continue a sweep with ``--continue <sweep dir>``, a single run with ``src.train resume=<run dir>``.
Only processes of this machine are seen: a job running on a SLURM node shows as "stopped" here
(its "last row" age tells it is alive).
The time left is projected from the run's own recent rows (their ``time_s``), so it reflects the
load the run saw lately.
"""
from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path
from typing import Dict, List, Optional

from omegaconf import OmegaConf

from src.config import unquoted


def run_dirs(path: Path) -> List[Path]:
    """``path`` itself if it is a run dir, else its job dirs (a sweep dir's subfolders with a config)."""
    path = Path(path).expanduser().resolve()
    if (path / ".hydra" / "config.yaml").exists():
        return [path]
    if not path.is_dir():
        raise ValueError(f"{path}: no such directory")
    return sorted(p for p in path.iterdir() if (p / ".hydra" / "config.yaml").exists())


def total_iterations(cfg) -> Optional[int]:
    """The run's budget in iterations: ``train.num_iters`` (off-policy loop), or PPO's
    ceil(train.env_steps / (num_envs * rollout_len))."""
    from src.config import register_resolvers
    register_resolvers()  # num_iters may be derived from train.env_steps (credit tasks)
    try:
        tr = cfg.get("train", {})
        if cfg.get("algo", {}).get("name") == "ppo":
            return math.ceil(int(tr["env_steps"]) / (int(tr["num_envs"]) * int(tr["rollout_len"])))
        n = tr.get("num_iters")
        return int(n) if isinstance(n, int) else None
    except Exception:  # noqa: BLE001 - a config this code cannot read: the budget is unknown
        return None


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _proc_state(pid: int) -> Optional[str]:
    """The one-letter state of a live process (R, S, T = stopped, ...), None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def lock_holder(run_dir: Path) -> Optional[int]:
    """PID of the process holding ``<run_dir>/.lock`` (src.rundir.RunLock's flock), read from
    /proc/locks without touching the lock; else a ``src.train resume=<run dir>`` process (code
    older than the lock). None if neither."""
    lock = run_dir / ".lock"
    if lock.exists():
        st = os.stat(lock)
        dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        try:
            for line in Path("/proc/locks").read_text().splitlines():
                fields = line.split()
                if "FLOCK" in fields and len(fields) >= 6 and fields[5] == dev and _proc_state(int(fields[4])):
                    return int(fields[4])
        except (OSError, ValueError):
            pass
    for proc in Path("/proc").glob("[0-9]*"):  # src.train resume=<run dir>, the path maybe quoted
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "src.train" in args and any(a.startswith("resume=") and unquoted(a[7:]) == str(run_dir) for a in args):
            return int(proc.name)
    return None


def _num(v: float) -> str:
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"


def _last_best(rows: List[dict], keys) -> str:
    """"last / best" of the first of ``keys`` with a value in the rows (success or return)."""
    for key in keys:
        values = [v for v in (_float(r.get(key)) for r in rows) if math.isfinite(v)]
        if values:
            return f"{_num(values[-1])} / {_num(max(values))}"
    return "-"


def _steps(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1_000_000 else f"{n / 1000:.0f}k"


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def run_status(run_dir: Path, now: Optional[float] = None) -> Dict[str, str]:
    """One run's row: name, progress, success and return (last / best of the eval rows; a PPO run's
    return is that of its training episodes), last row age, state (with time left)."""
    now = time.time() if now is None else now
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    total = total_iterations(cfg)
    progress_csv = run_dir / "progress.csv"
    rows = []
    if progress_csv.exists():
        with open(progress_csv, newline="") as f:
            rows = list(csv.DictReader(f))
    out = {"run": run_dir.name, "success (last / best)": _last_best(rows, ("eval/success_eval",)),
           "return (last / best)": _last_best(rows, ("eval/return_eval", "eval/return_train"))}

    done, left = False, ""
    if rows:
        last = rows[-1]
        it, steps = int(_float(last["iteration"])), int(_float(last["env_steps"]))
        done = total is not None and it >= total
        out["progress"] = (f"{_steps(steps)} env steps, iter {it}/{total if total else '?'}"
                           + (f" ({100 * it / total:.0f}%)" if total else ""))
        out["last row"] = _ago(now - progress_csv.stat().st_mtime)
        recent = rows[-6:]  # time left at the rate of the last rows (time_s is the run's own clock)
        d_it = _float(recent[-1]["iteration"]) - _float(recent[0]["iteration"])
        d_t = _float(recent[-1]["time_s"]) - _float(recent[0]["time_s"])
        if total and not done and d_it > 0 and d_t > 0:
            left = f", ≈ {(total - it) * d_t / d_it / 3600:.1f} h left"
    else:
        out["progress"], out["last row"] = "no rows yet", "-"

    pid = lock_holder(run_dir)
    state = _proc_state(pid) if pid else None
    if state is not None:
        out["state"] = (f"paused (pid {pid}, SIGSTOP)" if state in "Tt" else f"running (pid {pid})") + left
    else:
        out["state"] = "finished" if done else "stopped" + left
    return out


def continue_command(path: Path) -> str:
    """How to continue the stopped runs of ``path``: the sweep's --continue, or a run's resume=."""
    import shlex
    if (path / "launch_command.txt").exists():
        return f"python -m launchers.sweep --continue {shlex.quote(str(path))} --background"
    return f"python -m src.train resume={shlex.quote(str(path))}"


def status_table(paths: List[Path], now: Optional[float] = None) -> str:
    """A text table per sweep dir (or one for the run dirs given)."""
    blocks = []
    columns = ("run", "progress", "success (last / best)", "return (last / best)", "last row", "state")
    for path in paths:
        rows = [run_status(d, now) for d in run_dirs(path)]
        if not rows:
            blocks.append(f"{Path(path).expanduser().resolve()}: no run dirs (none with .hydra/config.yaml)")
            continue
        widths = [max(len(c), *(len(r.get(c, "")) for r in rows)) for c in columns]
        lines = [str(Path(path).expanduser().resolve()),
                 "  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
        lines += ["  ".join(r.get(c, "").ljust(w) for c, w in zip(columns, widths)).rstrip() for r in rows]
        if any(r["state"].startswith("stopped") for r in rows):
            lines.append(f"continue: {continue_command(Path(path).expanduser().resolve())}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
