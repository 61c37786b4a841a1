"""Launch a Hydra multirun of ``src.train`` from a frozen snapshot of the code.

    python -m launchers.sweep --launcher local model=gru,shm seed=0,1,2 [--dry-run]
    python -m launchers.sweep --launcher slurm --name wind-lr env=wind algo.lr=1e-4,3e-4 --background

What it does:
  1. picks the sweep dir (``--sweep-dir``, default ``<paths.output_root>/sweeps/<name>_<time>``,
     i.e. ``outputs/sweeps/...`` unless conf/local/default.yaml moves it);
  2. copies the code, as it is now, to ``<sweep dir>/code`` (launchers/snapshot.py), or reuses
     that copy when the sweep dir already has one (relaunching a sweep continues it: every job
     dir that holds a checkpoint resumes);
  3. runs ``python -m src.train -m hydra/launcher=<local|slurm> hydra.sweep.dir=<sweep dir>
     <overrides>`` with the snapshot as working directory, so the launcher and every queued or
     requeued job import ``src/`` and compose ``conf/`` from the snapshot, never from the live
     checkout.
``--dry-run`` prints the command and the jobs it would start, and touches nothing.

    python -m launchers.sweep --continue <sweep dir> [--background]

launches a sweep again exactly as it was last launched (after a session, a reboot or a kill): the
jobs with a checkpoint resume, finished ones stop at once.

    python -m launchers.sweep --status <sweep dir> [<sweep or run dir> ...]

prints where each run stands (progress, last and best eval, running / paused / stopped / finished,
time left at its recent rate): launchers/status.py.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LAUNCHERS = ("local", "slurm", "basic")


def expand_jobs(overrides: Sequence[str]) -> List[List[str]]:
    """The per-job override lists of a multirun, in the order Hydra's basic sweeper makes them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = [o for o in OverridesParser.create().parse_overrides(list(overrides)) if not o.is_hydra_override()]
    return BasicSweeper.split_arguments(parsed, None)[0]


def build_command(overrides: Sequence[str], sweep_dir: Path, launcher: str = "local",
                  max_parallel: Optional[int] = None, python: str = sys.executable) -> List[str]:
    """The ``python -m src.train -m ...`` command line of a sweep."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    cmd = [python, "-m", "src.train", "-m"]
    if launcher != "basic":
        cmd.append(f"hydra/launcher={launcher}")
    cmd.append(f"hydra.sweep.dir={Path(sweep_dir).resolve()}")
    if max_parallel is not None:
        if max_parallel <= 0:
            raise ValueError(f"--max-parallel must be positive, got {max_parallel}")
        if launcher == "slurm":
            cmd.append(f"hydra.launcher.array_parallelism={max_parallel}")
        else:
            cmd.append(f"hydra.sweeper.max_batch_size={max_parallel}")
    return cmd + list(overrides)


def output_root() -> Path:
    """``paths.output_root`` as composed from conf/ (site settings in conf/local/ included)."""
    try:
        from hydra import compose, initialize_config_dir

        from src.config import register_resolvers
        register_resolvers()
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
            root = Path(str(compose("train").paths.output_root))
    except Exception:  # noqa: BLE001 - a config problem shows up when the sweep composes its jobs
        root = Path("outputs")
    return root if root.is_absolute() else PROJECT_ROOT / root


def default_sweep_dir(name: str, root: Optional[Path] = None) -> Path:
    """``<paths.output_root>/sweeps/<name>_<time>``."""
    return Path(root or output_root()) / "sweeps" / f"{name}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"


def launch(overrides: Sequence[str], sweep_dir: Path, launcher: str = "local", *,
           max_parallel: Optional[int] = None, snapshot: bool = True, dry_run: bool = False,
           background: bool = False, source: Path = PROJECT_ROOT, out=None) -> int:
    """Snapshot the code into ``<sweep_dir>/code`` and run the sweep from there.

    Returns the launcher's exit status (0 for a dry run; 0 once started with ``background``).
    """
    out = out or sys.stdout
    sweep_dir = Path(sweep_dir).resolve()
    code = sweep_dir / "code" if snapshot else Path(source).resolve()
    cmd = build_command(overrides, sweep_dir, launcher, max_parallel)
    jobs = expand_jobs(overrides)
    print(f"sweep dir: {sweep_dir}", file=out)
    print(f"code:      {code}" + ("" if snapshot else "  (live checkout: --no-snapshot)"), file=out)
    print(f"command:   cd {shlex.quote(str(code))} && {shlex.join(cmd)}", file=out)
    print(f"jobs ({len(jobs)}):", file=out)
    for i, job in enumerate(jobs):
        print(f"  {i:4d}  {' '.join(job)}", file=out)
    if dry_run:
        return 0
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if snapshot:
        from launchers.snapshot import snapshot as make_snapshot
        if (code / "snapshot.json").exists():
            print(f"reusing the code snapshot in {code} (relaunch: jobs with a checkpoint resume)", file=out)
        else:
            meta = make_snapshot(source, code)
            dirty = f", {len(meta.get('dirty') or [])} uncommitted change(s)" if meta.get("dirty") else ""
            print(f"snapshot:  {meta['method']} of {meta['source']} at {meta.get('commit') or 'no commit'}{dirty}",
                  file=out)
    return _run(cmd, code, sweep_dir, background, out)


def _run(cmd: List[str], code: Path, sweep_dir: Path, background: bool, out) -> int:
    with open(sweep_dir / "launch_command.txt", "a") as f:  # one line per (re)launch
        f.write(f"cd {shlex.quote(str(code))} && {shlex.join(cmd)}\n")
    env = dict(os.environ)
    out.flush()
    if background:
        log = sweep_dir / "launcher.log"
        with open(log, "ab") as f:
            proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        print(f"started in the background: pid {proc.pid}, log {log}", file=out)
        return 0
    return subprocess.run(cmd, cwd=code, env=env).returncode


def continue_sweep(sweep_dir: Path, *, background: bool = False, dry_run: bool = False, out=None) -> int:
    """Launch a sweep again as it was last launched (the last line of its launch_command.txt), from
    its own code snapshot, with this interpreter: every job that holds a checkpoint resumes (a
    finished one stops at once), the others start. What to run after a session or a machine stop."""
    out = out or sys.stdout
    sweep_dir = Path(sweep_dir).resolve()
    record = sweep_dir / "launch_command.txt"
    if not record.exists():
        raise ValueError(f"{sweep_dir} has no launch_command.txt, so it was not launched by launchers.sweep or "
                         f"launchers.paper: continue a single run with python -m src.train resume=<run dir>")
    line = [l for l in record.read_text().splitlines() if l.strip()][-1]  # "cd CODE && PYTHON -m src.train -m ..."
    cd, _, command = line.partition(" && ")
    code, cmd = Path(shlex.split(cd)[1]), [sys.executable, *shlex.split(command)[1:]]
    if not (code / "src" / "train.py").exists():
        raise ValueError(f"the sweep's code snapshot {code} is missing: launch the sweep again with its overrides")
    print(f"sweep dir: {sweep_dir}\ncode:      {code}\ncommand:   cd {shlex.quote(str(code))} && {shlex.join(cmd)}",
          file=out)
    return 0 if dry_run else _run(cmd, code, sweep_dir, background, out)


def add_launch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local: jobs as processes on this machine; slurm: one SLURM job array; "
                        "basic: sequential, in one process (default: local)")
    p.add_argument("--sweep-dir", type=Path, default=None,
                   help="where the sweep goes (default <paths.output_root>/sweeps/<name>_<time>); an existing sweep "
                        "dir is continued with its own code snapshot")
    p.add_argument("--max-parallel", type=int, default=None,
                   help="jobs at once: hydra.sweeper.max_batch_size (local, default 2) or "
                        "hydra.launcher.array_parallelism (slurm)")
    p.add_argument("--no-snapshot", action="store_true",
                   help="run from the live checkout (queued jobs then see later edits)")
    p.add_argument("--background", action="store_true",
                   help="detach the launcher (it waits for all jobs); its output goes to <sweep dir>/launcher.log")
    p.add_argument("--dry-run", action="store_true", help="print the command and the jobs; launch nothing")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launchers.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_launch_args(p)
    p.add_argument("--name", default="sweep", help="sweep name in the default sweep dir (default: sweep)")
    p.add_argument("--continue", dest="continue_dir", type=Path, default=None, metavar="SWEEP_DIR",
                   help="launch SWEEP_DIR again as it was last launched (its snapshot, its overrides): "
                        "unfinished jobs resume, finished ones stop at once; no overrides needed")
    p.add_argument("--status", nargs="+", type=Path, default=None, metavar="DIR",
                   help="where the runs of these sweep dirs (or run dirs) stand: progress, last and best eval, "
                        "running / paused / stopped / finished, time left; launches nothing")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, with comma lists to sweep (model=gru,shm)")
    a = p.parse_intermixed_args(argv)
    if a.status is not None:
        from launchers.status import status_table
        return run_cli("launchers.sweep", lambda: print(status_table(a.status)) or 0)
    if a.continue_dir is not None:
        if a.overrides:
            p.error("--continue takes no overrides: the sweep's own are used")
        return run_cli("launchers.sweep", lambda: continue_sweep(a.continue_dir, background=a.background,
                                                                 dry_run=a.dry_run))
    if not a.overrides:
        p.error("give Hydra overrides (model=gru,shm ...), or --continue SWEEP_DIR")
    sweep_dir = a.sweep_dir or default_sweep_dir(a.name)
    return run_cli("launchers.sweep", lambda: launch(
        a.overrides, sweep_dir, a.launcher, max_parallel=a.max_parallel, snapshot=not a.no_snapshot,
        dry_run=a.dry_run, background=a.background))


def run_cli(prog: str, fn) -> int:
    """Run ``fn``; bad input (overrides that do not parse, a failed snapshot) is a one-line error."""
    from hydra.errors import OverrideParseException

    from launchers.snapshot import SnapshotError
    try:
        return fn()
    except (SnapshotError, ValueError, OverrideParseException) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
