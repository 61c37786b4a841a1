"""Keep a run's learning curve as data under docs/results/, and the table of every kept run.

    python -m src.results add RUN_DIR [RUN_DIR ...] --group wind-paper [--note "..."] [--name NAME]
    python -m src.results table          # rewrite the table in docs/results/README.md

``add`` copies what a curve needs into ``docs/results/<group>/<run name>/``: ``.hydra/config.yaml``
and ``overrides.yaml`` (so ``python -m src.plot docs/results/<group>`` re-plots it like any run
directory), ``progress.csv`` (the evaluation rows) and ``git.txt`` (the commit), plus
``run.json`` (machine, wall time, where the run lived, a note). ``table`` then lists every kept
run: task, preset, model, seed, env steps, final and best eval success and return, wall time, machine, commit
and the command that made it, between the two TABLE markers of docs/results/README.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from src.config import best_by_or_default

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
BEGIN, END = "<!-- TABLE BEGIN (python -m src.results table) -->", "<!-- TABLE END -->"
KEPT = (".hydra/config.yaml", ".hydra/overrides.yaml", "progress.csv", "git.txt")


def machine() -> str:
    """e.g. "2-core Intel Xeon ..., no GPU" (from /proc/cpuinfo where there is one)."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # noqa: BLE001 - the table just says less
        gpu = "GPU unknown"
    return f"{os.cpu_count()}-core {name}, {gpu}"


def add(run_dir: Path, group: str, note: str = "", root: Path = RESULTS, name: Optional[str] = None) -> Path:
    run_dir = Path(run_dir)
    missing = [k for k in (".hydra/config.yaml", "progress.csv") if not (run_dir / k).is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir} is not a run directory with results: {', '.join(missing)} missing")
    dest = root / group / (name or run_dir.name)
    for rel in KEPT:
        if (run_dir / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run_dir / rel, dest / rel)
    info = {"machine": machine(), "source": str(run_dir.resolve()), "note": note}
    old = dest / "run.json"
    if old.is_file():  # a re-add (a run that went on) keeps the first note unless a new one is given
        info["note"] = note or json.loads(old.read_text()).get("note", "")
    (dest / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    return dest


def _rows(csv_path: Path) -> List[Dict[str, str]]:
    with open(csv_path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("env_steps")]


def _num(x) -> Optional[float]:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _final_best(rows: List[Dict[str, str]], metric: str) -> str:
    """"final / best" of a metric over the evaluation rows (returns: tasks without a success criterion)."""
    values = [v for v in (_num(r.get(metric)) for r in rows) if v is not None]
    return f"{values[-1]:.1f} / {max(values):.1f}" if values else "—"


def summarize(kept: Path) -> Dict[str, str]:
    """One table row for a kept run."""
    cfg = yaml.safe_load((kept / ".hydra" / "config.yaml").read_text())
    overrides = yaml.safe_load((kept / ".hydra" / "overrides.yaml").read_text()) \
        if (kept / ".hydra" / "overrides.yaml").is_file() else []
    rows = _rows(kept / "progress.csv")
    popgym = cfg["task"]["name"] == "popgym"  # PPO runs: the training episodes' mean return (and its best, MMER)
    metric = "eval/return_train" if popgym else "eval/success_eval"
    by_return = best_by_or_default((cfg.get("eval") or {}).get("best_by"), cfg["task"]["name"],
                                   cfg["env"]["name"]) == "return"  # tasks without a success criterion
    values = [v for v in (_num(r.get(metric)) for r in rows) if v is not None]
    commit = "?"
    if (kept / "git.txt").is_file():
        first = (kept / "git.txt").read_text().splitlines()[0]
        commit = first.split(":", 1)[1].strip()[:7]
    info = json.loads((kept / "run.json").read_text()) if (kept / "run.json").is_file() else {}
    preset = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), "—")
    last = rows[-1] if rows else {}
    hours = (_num(last.get("time_s")) or 0.0) / 3600
    return {
        "run": f"[{kept.parent.name}/{kept.name}]({kept.relative_to(kept.parents[1]).as_posix()}/progress.csv)",
        "task / env": f"{cfg['task']['name']} / {cfg['env']['name']}",
        "preset": preset, "model": cfg["model"]["name"], "seed": str(cfg["seed"]),
        "env steps": f"{int(float(last.get('env_steps', 0))):,}",
        "final / best success": (f"{values[-1]:.3f} / {max(values):.3f}" if values and not (popgym or by_return) else "—"),
        "final / best return": (f"{values[-1]:.3f} / {max(values):.3f}" if values else "—") if popgym
        else _final_best(rows, "eval/return_eval"),
        "wall": f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min",
        "machine": info.get("machine", "?"), "commit": commit,
        "command": "`python -m src.train " + " ".join(overrides) + "`",
        "note": info.get("note", ""),
    }


def table(root: Path = RESULTS) -> str:
    kept = sorted(p.parent.parent for p in root.glob("*/*/.hydra/config.yaml"))
    rows = [summarize(k) for k in kept]
    if not rows:
        return "(no runs kept yet)\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r[c].replace("|", "\\|") for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(root: Path = RESULTS) -> None:
    readme = root / "README.md"
    text = readme.read_text() if readme.is_file() else f"# Results\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme} has no table markers: add the lines\n{BEGIN}\n{END}")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(f"{head}{BEGIN}\n{table(root)}{END}{tail}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m src.results", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add", help="copy run directories' curves into docs/results/<group>/")
    a.add_argument("runs", nargs="+", type=Path)
    a.add_argument("--group", required=True, help="a folder name under docs/results, e.g. wind-paper")
    a.add_argument("--note", default="", help="one line for the table, e.g. 'stopped at 300k steps, continues'")
    a.add_argument("--name", default=None, help="the kept folder's name (one run only; default: the run dir's)")
    sub.add_parser("table", help="rewrite the table in docs/results/README.md from the kept runs")
    args = p.parse_args(argv)
    try:
        if args.cmd == "add":
            if args.name and len(args.runs) > 1:
                raise ValueError(f"--name {args.name} names one run; {len(args.runs)} were given")
            for run in args.runs:
                print(f"kept {add(run, args.group, args.note, name=args.name)}")
        write_table()
    except (FileNotFoundError, ValueError) as e:
        print(f"src.results: error: {e}", file=sys.stderr)
        return 2
    print(f"table: {RESULTS / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
