"""The training loop, top to bottom (``Trainer.run``): warm-up rollouts with random actions (and the
credit tasks' catch-up updates), then iterations of (collect rollouts, gradient updates); whenever an
evaluation is due: evaluate, append a progress.csv row, write an atomic checkpoint. A stop signal
checkpoints mid-iteration; ``run(resume=True)`` continues bit-exactly from the checkpoint.

Meta-RL envs have task sets (evaluation: every train and every eval task); task-free envs (credit
assignment) run fresh episodes (evaluation: ``eval.num_episodes`` of them). Observations are stored
in the replay with the env's dtype (uint8 pixels stay uint8) and become float32 on the device.

The parts: src/build.py (device, envs, agent, algorithm from the config), src/rollouts.py
(rollouts, evaluation metrics), src/updates.py (gradient updates, their statistics),
src/stop_signals.py, src/checkpoint.py (atomic files, RNG states)."""
from __future__ import annotations

import logging
import math
import signal
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from src import preflight
from src.allocator import keep_freed_memory
from src.buffer import EpisodeReplay
from src.build import (action_dim, build_agent, build_algo, check_algo_and_action_space, episode_horizon,
                       resolve_device)
from src.build import make_env as env_from_config
from src.checkpoint import (load_run_checkpoint, publish_as, restore_rng_states, rng_states,
                            save_checkpoint)
from src.config import validate
from src.logger import RunLogger
from src.rollouts import eval_metrics, run_rollouts
from src.stop_signals import StopSignals, TrainingInterrupted  # noqa: F401 (re-exported)
from src.updates import (NonFiniteError, gradient_steps, iteration_means, non_finite, non_finite_advice,
                         to_tensors)

log = logging.getLogger(__name__)


class Trainer:
    def __init__(self, cfg: DictConfig, run_dir: Path):
        validate(cfg)
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.ckpt_path = self.run_dir / "checkpoints" / "last.pt"
        self.best_path = self.ckpt_path.with_name("best.pt")  # the best evaluation so far (eval.best_by)
        torch.set_num_threads(cfg.num_threads)
        keep_freed_memory()  # glibc: no page faults on every update's activations (src/allocator.py)
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.rng = np.random.default_rng(cfg.seed)  # task choice and warm-up actions
        self._setup_envs()
        self.agent = build_agent(cfg, self.obs_space.shape, self.action_dim, self.discrete, self.device)
        self.algo = build_algo(cfg, self.agent, self.discrete)
        preflight.check(cfg, self.obs_space.shape, np.dtype(self.obs_space.dtype).itemsize, self.action_dim,
                        self.max_episode_len, self.total_env_steps(), self.device)  # before allocating
        self.buffer = EpisodeReplay(cfg.train.buffer_size, self.obs_space.shape, self.obs_space.dtype,
                                    self.action_dim, self.max_episode_len, seed=cfg.seed + 1,
                                    seq_len=cfg.train.get("seq_len"))
        self.iteration = self.env_steps = self.updates = self.episodes = 0
        self.successes_in_buffer = 0  # successful episodes collected (the reference's most telling number)
        self.best_score = None  # best eval/success_eval (or eval/return_eval: eval.best_by) so far (best.pt)
        self.elapsed = 0.0
        self._since_eval: Dict[str, List[float]] = {}  # per-iteration stats since the last evaluation
        self._pending = None      # the current iteration's progress: collected, updates done, sums
        self.signals = StopSignals()  # SIGUSR2/SIGTERM/SIGINT: checkpoint and stop

    def _setup_envs(self) -> None:
        """Spaces and tasks from a probe env; one env per parallel rollout; one per evaluation task
        (all train + all eval tasks) or per evaluation episode (task-free envs)."""
        cfg, ev = self.cfg, self.cfg.env
        probe = self.make_env()
        self.obs_space, self.act_space = probe.observation_space, probe.action_space
        self.discrete = check_algo_and_action_space(cfg.algo.name, ev.name, self.act_space)
        self.action_dim = action_dim(self.act_space, self.discrete)
        self.has_tasks = hasattr(probe.unwrapped, "task_split")
        if self.has_tasks:
            self.train_tasks, self.eval_tasks = probe.unwrapped.task_split(ev.num_train_tasks, ev.num_eval_tasks)
        else:  # one "task" None for training, eval.num_episodes episodes for evaluation
            if cfg.eval.num_episodes is None:
                raise ValueError(f"env {ev.name} has no task set: set eval.num_episodes (> 0) to the number "
                                 f"of evaluation episodes (task=credit sets 20)")
            self.train_tasks = np.array([None], dtype=object)
            self.eval_tasks = np.array([None] * cfg.eval.num_episodes, dtype=object)
        self.max_episode_len = episode_horizon(probe) * ev.episodes_per_task
        probe.close()
        self.train_envs = [self.make_env(seed=cfg.seed * 100_003 + i) for i in range(cfg.train.rollouts_per_iter)]
        n_eval = len(self.train_tasks) + len(self.eval_tasks) if self.has_tasks else len(self.eval_tasks)
        self.eval_envs = [self.make_env(seed=cfg.seed * 100_003 + 50_000 + i) for i in range(n_eval)]

    def make_env(self, seed=None):
        return env_from_config(self.cfg.env, seed)

    _make_env = make_env

    # ------------------------------------------------------------------ rollouts
    def _rollouts(self, env_list, tasks, mode: str):
        ev = self.cfg.env
        return run_rollouts(self.agent, env_list, tasks, mode, rng=self.rng, device=self.device,
                            discrete=self.discrete, action_dim=self.action_dim,
                            episodes_per_task=ev.episodes_per_task, goal_is_terminal=ev.goal_is_terminal,
                            warmup_action_range=self.cfg.train.warmup_action_range)

    def collect(self, num_rollouts: int, mode: str) -> int:
        """Collect ``num_rollouts`` training rollouts (in parallel groups) into the replay."""
        steps, done = 0, 0
        while done < num_rollouts:
            m = min(len(self.train_envs), num_rollouts - done)
            tasks = self.train_tasks[self.rng.integers(len(self.train_tasks), size=m)]
            episodes, success, _ = self._rollouts(self.train_envs[:m], tasks, mode)
            self.successes_in_buffer += int(success.sum())
            for ep in episodes:
                self.buffer.add_episode(ep["obs"], ep["act"], ep["rew"], ep["term"])
                steps += len(ep["act"])
            done += m
        self.env_steps += steps
        self.episodes += num_rollouts
        return steps

    def evaluate(self) -> Dict[str, float]:
        """Deterministic policy on every train task and every eval task (fresh memory per task);
        task-free envs: ``eval.num_episodes`` fresh episodes, reported as the eval split only."""
        if self.has_tasks:
            tasks = np.concatenate([self.train_tasks, self.eval_tasks])
            splits = (("train", slice(0, len(self.train_tasks))), ("eval", slice(len(self.train_tasks), None)))
        else:
            tasks, splits = self.eval_tasks, (("eval", slice(None)),)
        _, success, returns = self._rollouts(self.eval_envs, tasks, "deterministic")
        return eval_metrics(success, returns, splits)

    # ------------------------------------------------------------------ updates
    def _to_tensors(self, batch: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
        return to_tensors(batch, self.device)

    def _sample(self) -> Dict[str, torch.Tensor]:
        return self._to_tensors(self.buffer.sample(self.cfg.train.batch_size))

    def _updates_for(self, steps: int, fixed: int) -> int:
        """``fixed`` updates, or with ``train.updates_per_step`` = r: ceil(r x ``steps``) (at least 1)."""
        r = self.cfg.train.get("updates_per_step")
        return int(fixed) if r is None else max(1, math.ceil(float(r) * steps))

    def _run_updates(self) -> bool:
        """The current iteration's remaining gradient updates; False if a stop signal came first."""
        p = self._pending
        n = self._updates_for(p["steps"], self.cfg.train.updates_per_iter)
        t0 = time.perf_counter()
        for _ in gradient_steps(self.algo, self._sample, n - p["updates_done"], p["sums"],
                                stop=lambda: self.signals.received is not None):
            p["updates_done"] += 1
            self.updates += 1
        p["update_s"] += time.perf_counter() - t0
        return p["updates_done"] == n

    def _finish_iteration(self) -> Dict[str, float]:
        p = self._pending
        n = self._updates_for(p["steps"], self.cfg.train.updates_per_iter)
        self._pending = None
        stats = iteration_means(p["sums"], n)
        bad = non_finite(stats)
        if bad:
            raise NonFiniteError(
                f"non-finite training values at iteration {self.iteration + 1} (model={self.cfg.model.name}, "
                f"env={self.cfg.env.name}): {bad}. Training stopped; the last good checkpoint "
                f"({self.ckpt_path}) is kept. In a new run, {non_finite_advice(bad, stats, self.cfg.algo.get('grad_clip'))}.")
        self.iteration += 1
        stats["perf/env_steps_per_s"] = p["steps"] / max(p["collect_s"], 1e-9)
        stats["perf/updates_per_s"] = n / max(p["update_s"], 1e-9)
        return stats

    def _catch_up_updates(self, n: int) -> None:
        """``train.warmup_updates`` updates right after the warm-up (credit tasks: the reference's
        int(0.25 x warm-up env steps)); recorded like an iteration's statistics."""
        if n <= 0:
            return
        sums: Dict[str, float] = {}
        t0 = time.perf_counter()
        for _ in gradient_steps(self.algo, self._sample, n, sums):
            self.updates += 1
        self._record({**{f"train/{k}": v / n for k, v in sums.items()},  # float32 tensor means (unchanged numerics)
                      "perf/updates_per_s": n / max(time.perf_counter() - t0, 1e-9)})

    def _record(self, stats: Dict[str, float]) -> None:
        for k, v in stats.items():
            self._since_eval.setdefault(k, []).append(v)

    # ------------------------------------------------------------------ stop signals
    def _on_signal(self, signum, frame) -> None:
        self.signals.on_signal(signum, frame)

    def _forward_stop_signal(self) -> None:
        log.info("received %s: checkpoint saved at iteration %d (%d updates into it), stopping",
                 signal.Signals(self.signals.received).name, self.iteration,
                 self._pending["updates_done"] if self._pending else 0)
        self.signals.forward(f"at iteration {self.iteration}; the checkpoint in {self.ckpt_path.parent} resumes it")

    # ------------------------------------------------------------------ checkpoints
    def save(self, csv_rows: int, best: bool = False) -> None:
        """checkpoints/last.pt; ``best``: also checkpoints/best.pt, the same file (written first, so
        that a kill in between leaves a last.pt whose resumption writes best.pt again)."""
        state = {
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "agent": self.agent.state_dict(), "algo": self.algo.state_dict(), "buffer": self.buffer.state_dict(),
            "counters": {"iteration": self.iteration, "env_steps": self.env_steps, "updates": self.updates,
                         "episodes": self.episodes, "elapsed": self.elapsed, "csv_rows": csv_rows,
                         "successes_in_buffer": self.successes_in_buffer, "best_score": self.best_score},
            "pending": None if self._pending is None else
            {**self._pending, "sums": {k: float(v) for k, v in self._pending["sums"].items()}},
            "since_eval": self._since_eval,
            "rng": rng_states(self.rng, self.train_envs + self.eval_envs),
        }
        if best:
            save_checkpoint(state, self.best_path)
            publish_as(self.best_path, self.ckpt_path)
        else:
            save_checkpoint(state, self.ckpt_path)

    def load(self) -> dict:
        state = load_run_checkpoint(self.ckpt_path, self.cfg, map_location=self.device)
        self.agent.load_state_dict(state["agent"])
        self.algo.load_state_dict(state["algo"])
        self.buffer.load_state_dict(state["buffer"])
        c = state["counters"]
        self.iteration, self.env_steps, self.updates = c["iteration"], c["env_steps"], c["updates"]
        self.episodes, self.elapsed = c["episodes"], c["elapsed"]
        # absent in checkpoints written before these counters existed
        self.successes_in_buffer = c.get("successes_in_buffer", 0)
        self.best_score = c.get("best_score", c.get("best_success"))  # (best_success: before eval.best_by)
        self._pending, self._since_eval = state["pending"], state["since_eval"]
        restore_rng_states(state["rng"], self.rng, self.train_envs + self.eval_envs)
        return c

    # ------------------------------------------------------------------ main loop
    def total_env_steps(self) -> int:
        tr = self.cfg.train
        return self.max_episode_len * (tr.num_warmup_rollouts + tr.num_iters * tr.rollouts_per_iter)

    def eval_due(self) -> bool:
        """The reference's schedule: evaluate when the number of iteration-sized rollout groups
        collected so far, warm-up included, is a multiple of ``eval.interval`` (Wind: warm-up =
        10 groups of 1,000 steps, interval 4 -> 12k, 16k, ... env steps)."""
        tr = self.cfg.train
        groups = (tr.num_warmup_rollouts + self.iteration * tr.rollouts_per_iter) // tr.rollouts_per_iter
        return groups % self.cfg.eval.interval == 0

    def run(self, logger_cfg, resume: bool = False) -> Dict[str, float]:
        cfg, tr = self.cfg, self.cfg.train
        counters = self.load() if resume else None
        logger = RunLogger(self.run_dir, logger_cfg, OmegaConf.to_container(cfg, resolve=True),
                           resume_step=self.env_steps if resume else None,
                           csv_rows=counters["csv_rows"] if counters else 0)
        if resume:
            log.info("resumed from %s at iteration %d, %d env steps", self.ckpt_path, self.iteration, self.env_steps)
        bar = tqdm(total=self.total_env_steps(), initial=self.env_steps, unit="step", dynamic_ncols=True,
                   disable=None if cfg.progress_bar else True, desc=f"{cfg.env.name}/{cfg.model.name}")
        last_eval: Dict[str, float] = {}
        start = time.perf_counter() - self.elapsed
        self.signals.install()
        try:
            with logging_redirect_tqdm():
                if not resume:
                    t0 = time.perf_counter()
                    steps = self.collect(tr.num_warmup_rollouts, "random")
                    bar.update(steps)
                    self._record({"perf/env_steps_per_s": steps / max(time.perf_counter() - t0, 1e-9)})
                    r = tr.get("updates_per_step")
                    self._catch_up_updates(tr.warmup_updates if r is None else int(float(r) * steps))
                    last_eval = self._eval_and_save(logger, start)
                while self.iteration < tr.num_iters:
                    if self._pending is None:  # collect this iteration's rollouts
                        t0 = time.perf_counter()
                        steps = self.collect(tr.rollouts_per_iter, "stochastic")
                        self._pending = {"steps": steps, "collect_s": time.perf_counter() - t0,
                                         "updates_done": 0, "update_s": 0.0, "sums": {}}
                        bar.update(steps)
                    if not self._run_updates():  # stop signal: save mid-iteration, then stop
                        self.elapsed = time.perf_counter() - start
                        self.save(csv_rows=logger.csv_rows)
                        logger.flush()
                        self._forward_stop_signal()
                        return last_eval
                    stats = self._finish_iteration()
                    self._record(stats)
                    logger.log_scalars(stats, self.env_steps)
                    if self.cfg.eval.best_by == "success":
                        postfix = {"success_eval": last_eval.get("eval/success_eval", float("nan")),
                                   "successes": self.successes_in_buffer}
                    else:  # no success criterion: the return
                        postfix = {"return_eval": round(last_eval.get("eval/return_eval", float("nan")), 1)}
                    postfix["upd/s"] = round(stats["perf/updates_per_s"], 1)
                    if self._has_alpha:
                        postfix["alpha"] = f"{float(self.algo.alpha):.3g}"
                    bar.set_postfix(postfix)
                    if self.eval_due() or self.iteration == tr.num_iters:
                        last_eval = self._eval_and_save(logger, start)
        finally:
            self.signals.restore()
            bar.close()
            logger.close()
        return last_eval

    @property
    def _has_alpha(self) -> bool:
        """SAC and SAC-Discrete have an entropy temperature to show; TD3 has none."""
        return "alpha" in self.algo.STATS

    def _eval_and_save(self, logger: RunLogger, start: float) -> Dict[str, float]:
        """Evaluate, append the progress.csv row (counters, eval metrics, train/perf means since the
        previous row), checkpoint, log one line."""
        metrics = self.evaluate()
        self.elapsed = time.perf_counter() - start
        row = {"env_steps": self.env_steps, "iteration": self.iteration, "updates": self.updates,
               "episodes": self.episodes, "time_s": round(self.elapsed, 2), **metrics}
        row.update({f"train/{k}": None for k in self.algo.STATS})  # fixed CSV columns from the first row
        row.update({"perf/updates_per_s": None, "perf/env_steps_per_s": None})
        row.update({k: float(np.mean(v)) for k, v in self._since_eval.items()})
        if self._has_alpha:
            row["train/alpha_now"] = float(self.algo.alpha)  # α at this row (train/alpha: mean since the last row)
        row["train/successes_in_buffer"] = self.successes_in_buffer
        self._since_eval = {}
        logger.log_row(row)
        logger.flush()
        score = metrics[f"eval/{self.cfg.eval.best_by}_eval"]  # success, or return where there is no success
        best = self.best_score is None or score > self.best_score  # ties keep the earlier best.pt
        if best:
            self.best_score = score
        self.save(csv_rows=logger.csv_rows, best=best)
        train_part = (f"train {metrics['eval/success_train']:.3f} " if "eval/success_train" in metrics else "")
        has_success = self.cfg.eval.best_by == "success"  # tasks without a success criterion: returns only
        log.info(f"iter {self.iteration} | env steps {self.env_steps} | "
                 + (f"success {train_part}eval {metrics['eval/success_eval']:.3f} | " if has_success else "")
                 + f"return eval {metrics['eval/return_eval']:.2f} | "
                 + (f"α {float(self.algo.alpha):.3g} | " if self._has_alpha else "")
                 + (f"successes in buffer {self.successes_in_buffer} | " if has_success else "")
                 + f"{self.elapsed:.0f}s")
        return metrics
