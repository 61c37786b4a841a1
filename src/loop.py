"""The training loop: warm-up, then iterations of (collect rollouts, gradient updates), periodic
evaluation (meta-RL: all train and eval tasks; task-free envs such as the credit-assignment ones:
``eval.num_episodes`` fresh episodes), logging and atomic checkpoints (resumable).

Continuous (Box) action spaces use SAC (``algo=sac``), discrete ones SAC-Discrete (``algo=sacd``);
discrete actions are one-hot vectors for the agent and the replay. Observations are stored in the
replay with the env's dtype (uint8 pixels stay uint8) and become float32 on the device."""
from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from gymnasium import spaces
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import envs
from src.agent import RecurrentActorCritic
from src.allocator import keep_freed_memory
from src.algos.sac import SAC
from src.algos.sacd import SACDiscrete
from src.buffer import EpisodeReplay
from src.checkpoint import load_checkpoint, save_checkpoint
from src.config import RUNTIME_KEYS, validate
from src.logger import RunLogger

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    pass


class TrainingInterrupted(Exception):
    """A stop signal ended the run after a checkpoint; ``exit_code`` = 128 + signal number."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


ALGOS = ("sac", "sacd")  # sac: Box actions, sacd: Discrete ones


def check_algo_and_action_space(algo: str, env_name: str, act_space) -> bool:
    """The algorithm must fit the env's action space; returns True for discrete actions."""
    if algo not in ALGOS:
        raise ValueError(f"algo={algo}: unknown algorithm; valid: {', '.join(ALGOS)}")
    discrete = isinstance(act_space, spaces.Discrete)
    if not discrete and not isinstance(act_space, spaces.Box):
        raise ValueError(f"env {env_name} has action space {act_space}: only Box (algo=sac) and "
                         f"Discrete (algo=sacd) are supported")
    if algo == "sac" and discrete:
        raise ValueError(f"algo=sac needs a continuous (Box) action space but env {env_name} has "
                         f"{act_space}: use algo=sacd (task=credit)")
    if algo == "sacd" and not discrete:
        raise ValueError(f"algo=sacd needs a discrete action space but env {env_name} has "
                         f"{act_space}: use algo=sac (task=meta)")
    return discrete


def episode_horizon(env) -> int:
    """Max steps of one episode: the env's ``max_episode_steps`` (meta-RL) or ``horizon`` (credit)."""
    for name in ("max_episode_steps", "horizon"):
        value = getattr(env.unwrapped, name, None)
        if value is not None:
            return int(value)
    if env.spec is not None and env.spec.max_episode_steps:
        return int(env.spec.max_episode_steps)
    raise ValueError(f"cannot tell the episode length of {env.unwrapped}: it has no max_episode_steps "
                     f"or horizon attribute")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name} requested but CUDA is not available: use device=auto or device=cpu")
    return torch.device(name)


def actor_memory_node(cfg: DictConfig) -> dict:
    """The actor's memory config: ``agent.actor_memory`` (a model config, chosen with
    ``model@agent.actor_memory=<model>``) or else ``model``, with that config's non-null
    ``actor_overrides`` applied (e.g. SHM's ``theta_sampling``)."""
    model = cfg.model if cfg.agent.actor_memory is None else cfg.agent.actor_memory
    overrides = OmegaConf.to_container(model.actor_overrides, resolve=True)
    return OmegaConf.merge(OmegaConf.to_container(model.memory, resolve=True),
                           {k: v for k, v in overrides.items() if v is not None})


def actor_memory_factory(cfg: DictConfig):
    """input_size -> the actor's memory layer (see ``actor_memory_node``)."""
    node = actor_memory_node(cfg)
    return lambda d: instantiate(node, input_size=d)


class Trainer:
    def __init__(self, cfg: DictConfig, run_dir: Path):
        validate(cfg)
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.ckpt_path = self.run_dir / "checkpoints" / "last.pt"
        torch.set_num_threads(int(cfg.num_threads))
        keep_freed_memory()  # glibc: no page faults on every update's activations (src/allocator.py)
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.rng = np.random.default_rng(cfg.seed)
        tr, ev = cfg.train, cfg.env

        probe = self._make_env()
        self.obs_space, self.act_space = probe.observation_space, probe.action_space
        self.discrete = check_algo_and_action_space(cfg.algo.name, ev.name, self.act_space)
        self.action_dim = int(self.act_space.n) if self.discrete else int(np.prod(self.act_space.shape))
        # Meta-RL envs have task sets (train/eval splits); task-free envs (credit assignment) run
        # fresh episodes: one "task" None for training, eval.num_episodes episodes for evaluation.
        self.has_tasks = hasattr(probe.unwrapped, "task_split")
        if self.has_tasks:
            self.train_tasks, self.eval_tasks = probe.unwrapped.task_split(ev.num_train_tasks, ev.num_eval_tasks)
        else:
            n_ep = cfg.eval.num_episodes
            if n_ep is None:
                raise ValueError(f"env {ev.name} has no task set: set eval.num_episodes (> 0) to the number "
                                 f"of evaluation episodes (task=credit sets 20)")
            self.train_tasks = np.array([None], dtype=object)
            self.eval_tasks = np.array([None] * n_ep, dtype=object)
        self.max_episode_len = episode_horizon(probe) * ev.episodes_per_task
        probe.close()

        # One env per parallel rollout; one per evaluation task (all train + all eval tasks) or
        # per evaluation episode (task-free envs).
        self.train_envs = [self._make_env(seed=cfg.seed * 100_003 + i) for i in range(tr.rollouts_per_iter)]
        n_eval = len(self.train_tasks) + len(self.eval_tasks) if self.has_tasks else len(self.eval_tasks)
        self.eval_envs = [self._make_env(seed=cfg.seed * 100_003 + 50_000 + i) for i in range(n_eval)]

        memory = lambda d: instantiate(cfg.model.memory, input_size=d)  # noqa: E731
        actor_memory = actor_memory_factory(cfg)
        self.agent = RecurrentActorCritic(
            self.obs_space.shape, self.action_dim, dict(cfg.agent.embed), memory, actor_memory,
            policy_layers=list(cfg.agent.policy_layers), q_layers=list(cfg.agent.q_layers),
            orthogonal_init=cfg.agent.orthogonal_init, discrete=self.discrete,
            fold_readout=cfg.agent.fold_readout).to(self.device)
        a = cfg.algo
        if self.discrete:
            self.algo = SACDiscrete(self.agent, gamma=a.gamma, tau=a.tau, lr=a.lr, alpha_lr=a.alpha_lr,
                                    auto_alpha=a.auto_alpha, init_alpha=a.init_alpha,
                                    target_entropy_ratio=a.target_entropy_ratio, grad_clip=a.grad_clip)
        else:
            self.algo = SAC(self.agent, gamma=a.gamma, tau=a.tau, lr=a.lr, alpha_lr=a.alpha_lr,
                            auto_alpha=a.auto_alpha, init_alpha=a.init_alpha, target_entropy=a.target_entropy,
                            grad_clip=a.grad_clip)
        self.buffer = EpisodeReplay(int(tr.buffer_size), self.obs_space.shape, self.obs_space.dtype,
                                    self.action_dim, self.max_episode_len, seed=cfg.seed + 1)
        self.iteration = self.env_steps = self.updates = self.episodes = 0
        self.successes_in_buffer = 0  # successful episodes collected (the reference's most telling number)
        self.elapsed = 0.0
        self._since_eval: Dict[str, List[float]] = {}  # per-iteration stats since the last evaluation
        self._pending = None      # the current iteration's progress: collected, updates done, sums
        self._stop_signal = None  # set by SIGUSR2/SIGTERM/SIGINT: checkpoint and stop
        self._prev_handlers = {}

    # ------------------------------------------------------------------ envs and rollouts
    def _make_env(self, seed=None):
        ev = self.cfg.env
        env = envs.make(ev.id, ev.episodes_per_task, **OmegaConf.to_container(ev.kwargs, resolve=True))
        if seed is not None:
            env.reset(seed=int(seed))
            env.action_space.seed(int(seed))
        return env

    def _rollouts(self, env_list, tasks, mode: str):
        """Run one task per env in lockstep; one batched actor call per time step.

        mode: "random" (uniform actions over the policy box, or over the discrete actions),
        "stochastic" or "deterministic". A task None resets without options (task-free envs).
        Returns per-env episodes (obs, act, rew, term), successes, per-inner-episode returns.
        Discrete actions are one-hot vectors [A] in the episodes (and for the agent).
        """
        n, A = len(env_list), self.action_dim
        k = self.cfg.env.episodes_per_task
        goal_terminal = self.cfg.env.goal_is_terminal
        obs = [env.reset(options=None if t is None else {"task": int(t)})[0] for env, t in zip(env_list, tasks)]
        traj = [{"obs": [o], "act": [], "rew": [], "term": []} for o in obs]
        success = np.zeros(n, dtype=bool)
        returns = np.zeros((n, k))
        alive = np.ones(n, dtype=bool)
        prev_a = np.zeros((n, A), dtype=np.float32)
        prev_r = np.zeros((n, 1), dtype=np.float32)
        cur = np.stack(obs)
        state = self.agent.initial_actor_state(n, self.device) if mode != "random" else None
        while alive.any():
            if mode == "random" and self.discrete:
                actions = np.eye(A, dtype=np.float32)[self.rng.integers(A, size=n)]
            elif mode == "random":  # train.warmup_action_range: 1 = the whole box; the reference's is 0.1
                r = float(self.cfg.train.warmup_action_range)
                actions = self.rng.uniform(-r, r, size=(n, A)).astype(np.float32)
            else:
                a, state = self.agent.act(
                    torch.as_tensor(prev_a, device=self.device), torch.as_tensor(prev_r, device=self.device),
                    torch.as_tensor(cur).to(self.device).float(), state,
                    deterministic=(mode == "deterministic"))
                actions = a.cpu().numpy()
            env_actions = actions.argmax(-1) if self.discrete else actions
            for i in np.flatnonzero(alive):
                o, r, terminated, truncated, info = env_list[i].step(env_actions[i])
                t = traj[i]
                t["obs"].append(o)
                t["act"].append(actions[i])
                t["rew"].append(r)
                t["term"].append(float(terminated or (goal_terminal and info.get("is_goal", False))))
                returns[i, info.get("episode_index", 0)] += r
                cur[i], prev_r[i, 0] = o, r
                if terminated or truncated:
                    alive[i] = False
                    success[i] = bool(info.get("success", False))
            prev_a = actions
        episodes = [{key: np.asarray(v) if key == "obs" else np.asarray(v, dtype=np.float32)
                     for key, v in t.items()} for t in traj]  # obs keep the env's dtype (uint8 pixels)
        return episodes, success, returns

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
        out = {}
        for split, sl in splits:
            out[f"eval/success_{split}"] = float(success[sl].mean())
            out[f"eval/return_{split}"] = float(returns[sl].sum(1).mean())
            if returns.shape[1] > 1:
                for j in range(returns.shape[1]):
                    out[f"eval/return_{split}_ep{j + 1}"] = float(returns[sl, j].mean())
        return out

    # ------------------------------------------------------------------ updates
    def _to_tensors(self, batch: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
        """To the device first (uint8 pixels travel as uint8), then float32 there."""
        return {k: torch.as_tensor(v).to(self.device, non_blocking=True).float() for k, v in batch.items()}

    def _run_updates(self) -> bool:
        """The current iteration's remaining gradient updates; False if a stop signal came first."""
        p, n = self._pending, int(self.cfg.train.updates_per_iter)
        t0 = time.perf_counter()
        while p["updates_done"] < n:
            if self._stop_signal is not None:
                break
            stats = self.algo.update(self._to_tensors(self.buffer.sample(int(self.cfg.train.batch_size))))
            for key, v in stats.items():
                p["sums"][key] = p["sums"].get(key, 0.0) + v
            p["updates_done"] += 1
            self.updates += 1
        p["update_s"] += time.perf_counter() - t0
        return p["updates_done"] == n

    def _finish_iteration(self) -> Dict[str, float]:
        p, n = self._pending, int(self.cfg.train.updates_per_iter)
        self._pending = None
        stats = {f"train/{key}": float(v) / n for key, v in p["sums"].items()}
        bad = {key: v for key, v in stats.items() if not math.isfinite(v)}
        if bad:
            raise NonFiniteError(
                f"non-finite training values at iteration {self.iteration + 1} (model={self.cfg.model.name}, "
                f"env={self.cfg.env.name}): {bad}. Training stopped; the last good checkpoint "
                f"({self.ckpt_path}) is kept. Try algo.grad_clip=1.0 or a lower algo.lr.")
        self.iteration += 1
        stats["perf/env_steps_per_s"] = p["steps"] / max(p["collect_s"], 1e-9)
        stats["perf/updates_per_s"] = n / max(p["update_s"], 1e-9)
        return stats

    # ------------------------------------------------------------------ stop signals
    STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGUSR2", "SIGTERM", "SIGINT") if hasattr(signal, name))

    def _install_signal_handlers(self) -> None:
        """SLURM/submitit send SIGUSR2 (or SIGTERM) before a kill: finish the current update,
        checkpoint, then hand the signal to the previous handler (submitit requeues the job)."""
        self._prev_handlers = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.STOP_SIGNALS:
            self._prev_handlers[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self._stop_signal = signum

    def _restore_signal_handlers(self) -> None:
        for sig, handler in self._prev_handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._prev_handlers = {}

    def _forward_stop_signal(self) -> None:
        sig, self._stop_signal = self._stop_signal, None
        log.info("received %s: checkpoint saved at iteration %d (%d updates into it), stopping",
                 signal.Signals(sig).name, self.iteration, self._pending["updates_done"] if self._pending else 0)
        handler = self._prev_handlers.get(sig, signal.SIG_DFL)
        self._restore_signal_handlers()
        if callable(handler):
            handler(sig, None)  # e.g. submitit's requeue, or KeyboardInterrupt for SIGINT
        else:
            os.kill(os.getpid(), sig)
        # A handler that returns (submitit ignores SIGTERM) must not make a partial run look finished.
        raise TrainingInterrupted(f"stopped by {signal.Signals(sig).name} at iteration {self.iteration}; "
                                  f"the checkpoint in {self.ckpt_path.parent} resumes it", 128 + sig)

    # ------------------------------------------------------------------ checkpoints
    def _check_same_experiment(self, saved: dict) -> None:
        """A checkpoint only continues the experiment that wrote it (runtime keys may differ)."""
        current = OmegaConf.to_container(self.cfg, resolve=True)
        diffs = [f"{k}: checkpoint has {saved.get(k)!r}, now {current.get(k)!r}"
                 for k in sorted(set(saved) | set(current))
                 if k not in RUNTIME_KEYS and saved.get(k) != current.get(k)]
        if diffs:
            raise ValueError(f"{self.ckpt_path} was written by a different config:\n  " + "\n  ".join(diffs)
                             + "\nuse a new output directory, or resume with the run's own config")

    def _env_rng_states(self):
        return [e.unwrapped.np_random.bit_generator.state for e in self.train_envs + self.eval_envs]

    def save(self, csv_rows: int) -> None:
        state = {
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "agent": self.agent.state_dict(), "algo": self.algo.state_dict(),
            "buffer": self.buffer.state_dict(),
            "counters": {"iteration": self.iteration, "env_steps": self.env_steps, "updates": self.updates,
                         "episodes": self.episodes, "elapsed": self.elapsed, "csv_rows": csv_rows,
                         "successes_in_buffer": self.successes_in_buffer},
            "pending": None if self._pending is None else
            {**self._pending, "sums": {k: float(v) for k, v in self._pending["sums"].items()}},
            "since_eval": self._since_eval,
            "rng": {"torch": torch.get_rng_state(), "numpy": self.rng.bit_generator.state,
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "envs": self._env_rng_states()},
        }
        save_checkpoint(state, self.ckpt_path)

    def load(self) -> dict:
        state = load_checkpoint(self.ckpt_path, map_location=self.device)
        self._check_same_experiment(state["config"])
        self.agent.load_state_dict(state["agent"])
        self.algo.load_state_dict(state["algo"])
        self.buffer.load_state_dict(state["buffer"])
        c = state["counters"]
        self.iteration, self.env_steps, self.updates = c["iteration"], c["env_steps"], c["updates"]
        self.episodes, self.elapsed = c["episodes"], c["elapsed"]
        self.successes_in_buffer = c.get("successes_in_buffer", 0)
        self._pending, self._since_eval = state["pending"], state["since_eval"]
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
        self.rng.bit_generator.state = state["rng"]["numpy"]
        for env, s in zip(self.train_envs + self.eval_envs, state["rng"]["envs"]):
            env.unwrapped.np_random.bit_generator.state = s
        return c

    # ------------------------------------------------------------------ main loop
    def total_env_steps(self) -> int:
        tr = self.cfg.train
        return self.max_episode_len * (tr.num_warmup_rollouts + tr.num_iters * tr.rollouts_per_iter)

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
        self._install_signal_handlers()
        try:
            with logging_redirect_tqdm():
                if not resume:
                    t0 = time.perf_counter()
                    steps = self.collect(int(tr.num_warmup_rollouts), "random")
                    bar.update(steps)
                    self._record({"perf/env_steps_per_s": steps / max(time.perf_counter() - t0, 1e-9)})
                    self._catch_up_updates(int(tr.warmup_updates))
                    last_eval = self._eval_and_save(logger, start)
                while self.iteration < int(tr.num_iters):
                    if self._pending is None:  # collect this iteration's rollouts
                        t0 = time.perf_counter()
                        steps = self.collect(int(tr.rollouts_per_iter), "stochastic")
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
                    bar.set_postfix({"success_eval": last_eval.get("eval/success_eval", float("nan")),
                                     "alpha": f"{float(self.algo.alpha):.3g}",
                                     "successes": self.successes_in_buffer,
                                     "upd/s": round(stats["perf/updates_per_s"], 1)})
                    if self.eval_due() or self.iteration == int(tr.num_iters):
                        last_eval = self._eval_and_save(logger, start)
        finally:
            self._restore_signal_handlers()
            bar.close()
            logger.close()
        return last_eval

    def eval_due(self) -> bool:
        """The reference's schedule: evaluate when the number of iteration-sized rollout groups
        collected so far, warm-up included, is a multiple of ``eval.interval`` (Wind: warm-up =
        10 groups of 1,000 steps, interval 4 -> 12k, 16k, ... env steps)."""
        tr = self.cfg.train
        groups = (int(tr.num_warmup_rollouts) + self.iteration * int(tr.rollouts_per_iter)) // int(tr.rollouts_per_iter)
        return groups % int(self.cfg.eval.interval) == 0

    def _catch_up_updates(self, n: int) -> None:
        """``train.warmup_updates`` updates right after the warm-up (credit tasks: the reference's
        int(0.25 x warm-up env steps)); recorded like an iteration's statistics."""
        if n <= 0:
            return
        sums: Dict[str, float] = {}
        t0 = time.perf_counter()
        for _ in range(n):
            for key, v in self.algo.update(self._to_tensors(self.buffer.sample(int(self.cfg.train.batch_size)))).items():
                sums[key] = sums.get(key, 0.0) + v
            self.updates += 1
        self._record({**{f"train/{k}": v / n for k, v in sums.items()},
                      "perf/updates_per_s": n / max(time.perf_counter() - t0, 1e-9)})

    def _record(self, stats: Dict[str, float]) -> None:
        for k, v in stats.items():
            self._since_eval.setdefault(k, []).append(v)

    def _eval_and_save(self, logger: RunLogger, start: float) -> Dict[str, float]:
        metrics = self.evaluate()
        self.elapsed = time.perf_counter() - start
        row = {"env_steps": self.env_steps, "iteration": self.iteration, "updates": self.updates,
               "episodes": self.episodes, "time_s": round(self.elapsed, 2), **metrics}
        row.update({f"train/{k}": None for k in self.algo.STATS})  # fixed CSV columns from the first row
        row.update({"perf/updates_per_s": None, "perf/env_steps_per_s": None})
        row.update({k: float(np.mean(v)) for k, v in self._since_eval.items()})
        row["train/alpha_now"] = float(self.algo.alpha)  # α at this row (train/alpha: mean since the last row)
        row["train/successes_in_buffer"] = self.successes_in_buffer
        self._since_eval = {}
        logger.log_row(row)
        logger.flush()
        self.save(csv_rows=logger.csv_rows)
        train_part = (f"train {metrics['eval/success_train']:.3f} " if "eval/success_train" in metrics else "")
        msg = (f"iter {self.iteration} | env steps {self.env_steps} | success {train_part}"
               f"eval {metrics['eval/success_eval']:.3f} | "
               f"return eval {metrics['eval/return_eval']:.2f} | α {float(self.algo.alpha):.3g} | "
               f"successes in buffer {self.successes_in_buffer} | {self.elapsed:.0f}s")
        log.info(msg)
        return metrics
