"""Run logging: progress.csv (one row per evaluation), TensorBoard and W&B, all against env steps.

Metric names (shared by every sink):
  eval/success_train, eval/success_eval, eval/return_train, eval/return_eval,
  eval/return_{train,eval}_ep{j} (per inner episode j when a task has k > 1 episodes),
  train/qf1_loss, train/qf2_loss, train/policy_loss, train/alpha, train/entropy,
  train/q_grad_norm, train/pi_grad_norm, perf/updates_per_s, perf/env_steps_per_s,
plus the counters env_steps, iteration, updates, episodes, time_s.
progress.csv holds the eval rows, with the train/* and perf/* means over the iterations since the
previous evaluation; TensorBoard and W&B also get every iteration's train/* values.
"""
from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import Dict, Optional

COUNTERS = ["env_steps", "iteration", "updates", "episodes", "time_s"]


def wandb_run_id(run_dir: Path) -> str:
    """Stable W&B id derived from the run directory, so a resumed/requeued job continues its run."""
    return "memrl-" + hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]


class RunLogger:
    def __init__(self, run_dir: Path, cfg_logger, config: dict, resume_step: Optional[int] = None,
                 csv_rows: int = 0):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / "progress.csv"
        self.csv_rows = csv_rows
        self._fields = None
        if resume_step is not None:
            self._truncate_csv(csv_rows)
        elif self.csv_path.exists():
            self.csv_path.unlink()
        self.tb = None
        if cfg_logger.tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # heavy import: only when used
            # purge_step hides events a killed run wrote after its last checkpoint.
            self.tb = SummaryWriter(str(self.run_dir / "tb"),
                                    purge_step=None if resume_step is None else resume_step + 1)
        self.wandb = None
        wcfg = cfg_logger.wandb  # null: no W&B (logger=default|none); logger=wandb sets every key
        if wcfg is not None and wcfg.mode != "disabled":
            import wandb
            self.wandb = wandb.init(
                project=wcfg.project, entity=wcfg.entity, group=wcfg.group, job_type=wcfg.job_type,
                name=wcfg.name, tags=list(wcfg.tags), mode=wcfg.mode, dir=str(self.run_dir), config=config,
                id=wandb_run_id(self.run_dir), resume="allow")

    def _truncate_csv(self, rows: int) -> None:
        """Keep the header and the first ``rows`` data rows (those covered by the checkpoint)."""
        if not self.csv_path.exists():
            return
        with open(self.csv_path, newline="") as f:
            lines = list(csv.reader(f))
        if lines:
            self._fields = lines[0]
        tmp = self.csv_path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(lines[:rows + 1])
        os.replace(tmp, self.csv_path)

    def log_scalars(self, metrics: Dict[str, float], step: int) -> None:
        """Per-iteration scalars for TensorBoard and W&B (not the CSV)."""
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def log_row(self, row: Dict[str, float]) -> None:
        """One evaluation row: appended to progress.csv and sent to TensorBoard/W&B."""
        step = int(row["env_steps"])
        if self._fields is None:
            self._fields = COUNTERS + sorted(k for k in row if k not in COUNTERS)
        new = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self._fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: _fmt(row.get(k)) for k in self._fields})
            f.flush()
            os.fsync(f.fileno())
        self.csv_rows += 1
        self.log_scalars({k: v for k, v in row.items() if k != "env_steps" and v is not None}, step)

    def flush(self) -> None:
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v
