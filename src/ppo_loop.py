"""The recurrent-PPO training loop (``algo=ppo``, ``task=popgym``): N vectorised envs (Gymnasium's
``SyncVectorEnv``, same-step autoreset) collect chunks of ``train.rollout_len`` steps each with the
memory state carried from chunk to chunk, GAE, then ``algo.epochs`` passes of PPO over minibatches
of whole env sequences (``src/algos/ppo.py``).

Every ``eval.interval`` iterations one row goes to progress.csv (and TensorBoard/W&B) against
``env_steps``: ``eval/return_train`` (the mean return of the training episodes that ended since the
previous row: POPGym's measure), ``eval/mmer`` (the best such mean so far: POPGym's MMER),
``eval/return_eval`` (greedy episodes, when ``eval.num_episodes`` > 0), the train/* means and
``perf/env_steps_per_s`` (env steps per second of collection and updates together), then an atomic
checkpoint (networks, optimiser, envs, the carried memory state and every RNG): ``resume=``
continues exactly where the checkpoint was written.
"""
from __future__ import annotations

import logging
import math
import pickle
import signal
import time
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List

import gymnasium as gym
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import envs
from src.algos.ppo import PPO, gae
from src.allocator import keep_freed_memory
from src.checkpoint import load_run_checkpoint, save_checkpoint
from src.config import ConfigError, upgrade_saved_config
from src.logger import RunLogger
from src.loop import resolve_device
from src.stop_signals import StopSignals, TrainingInterrupted  # noqa: F401 (re-exported)
from src.ppo_agent import PPOAgent
from src.updates import NonFiniteError, non_finite, non_finite_advice

log = logging.getLogger(__name__)
SAME_STEP = gym.vector.AutoresetMode.SAME_STEP
LR_SCHEDULES = ("constant", "linear")


def lr_points(schedule) -> List[List[float]] | None:
    """algo.lr_schedule as a list of [env_steps, lr] points (RLlib's ``lr_schedule`` form), or None
    for the named schedules. Raises ConfigError for anything else."""
    if isinstance(schedule, str):
        if schedule not in LR_SCHEDULES:
            raise ConfigError(f"algo.lr_schedule must be one of {', '.join(LR_SCHEDULES)} or a list of "
                              f"[env_steps, lr] points, got {schedule!r}")
        return None
    points = OmegaConf.to_container(schedule) if OmegaConf.is_config(schedule) else schedule
    bad = ConfigError(f"algo.lr_schedule as a list must hold [env_steps, lr] pairs with env_steps increasing "
                      f"and lr >= 0, e.g. '[[0,1e-3],[4000000,1e-3],[4500000,1e-4]]', got {points!r}")
    if not isinstance(points, (list, tuple)) or not points:
        raise bad
    try:
        points = [[float(step), float(lr)] for step, lr in points]
    except (TypeError, ValueError):
        raise bad from None
    steps = [step for step, _ in points]
    if any(b <= a for a, b in zip(steps, steps[1:])) or steps[0] < 0 or any(lr < 0 for _, lr in points):
        raise bad
    return points


def validate_ppo(cfg: DictConfig) -> None:
    tr, a = cfg.train, cfg.algo
    missing = [k for k in ("env_steps", "num_envs", "rollout_len") if k not in tr] + \
        [k for k in ("pre_layers", "post_layers") if k not in cfg.get("ppo_agent", {})]
    if missing:
        raise ConfigError(f"algo=ppo needs its schedule and agent keys ({', '.join(missing)} are missing): "
                          f"use task=popgym (it sets algo=ppo and them)")
    for key in ("env_steps", "num_envs", "rollout_len"):
        if int(tr[key]) <= 0:
            raise ConfigError(f"train.{key} must be positive, got {tr[key]}")
    for key in ("epochs", "num_minibatches", "lr", "clip"):
        if not float(a[key]) > 0:
            raise ConfigError(f"algo.{key} must be positive, got {a[key]}")
    if int(tr.num_envs) % int(a.num_minibatches):
        raise ConfigError(f"train.num_envs={tr.num_envs} does not split into algo.num_minibatches="
                          f"{a.num_minibatches} minibatches of whole sequences: make num_envs a multiple of it")
    if not 0.0 < float(a.gamma) <= 1.0 or not 0.0 <= float(a.gae_lambda) <= 1.0:
        raise ConfigError(f"algo.gamma must be in (0, 1] and algo.gae_lambda in [0, 1], got {a.gamma}, {a.gae_lambda}")
    if lr_points(a.get("lr_schedule", "constant")) is not None and float(a.get("lr_decay_start", 0.0)):
        raise ConfigError("algo.lr_decay_start belongs to lr_schedule=linear; with a list of points, "
                          "put the start of the decay in the points")
    if not 0.0 <= float(a.get("lr_decay_start", 0.0)) < 1.0:
        raise ConfigError(f"algo.lr_decay_start is the fraction of train.env_steps before the linear decay "
                          f"begins: it must be in [0, 1), got {a.lr_decay_start}")
    if int(cfg.eval.interval) <= 0 or int(cfg.eval.num_episodes) < 0:
        raise ConfigError(f"eval.interval must be positive and eval.num_episodes >= 0, got "
                          f"{cfg.eval.interval}, {cfg.eval.num_episodes}")
    if int(cfg.num_threads) <= 0:
        raise ConfigError(f"num_threads must be positive, got {cfg.num_threads}")


def lr_schedule(cfg) -> Callable[[int], float]:
    """The learning rate of the update after ``env_steps`` collected, as a function of env_steps
    (the schedule parsed once): algo.lr throughout (constant, RLlib's); with linear, algo.lr up to the
    fraction algo.lr_decay_start of train.env_steps and from there annealed linearly to 0 at
    train.env_steps (start 0: CleanRL's ``anneal_lr``); with a list of [env_steps, lr] points, linear
    between them and flat outside (RLlib's ``lr_schedule``; algo.lr is then unused). It depends only
    on the step count (and the budget), so a resumed run follows the same schedule; a resume may
    change the schedule, or the budget of a linear one, only where the run has not been yet
    (check_schedule_keeps_the_past)."""
    a, budget = cfg.algo, int(cfg.train.env_steps)
    points = lr_points(a.get("lr_schedule", "constant"))
    if points is not None:
        steps, lrs = zip(*points)
        return lambda env_steps: float(np.interp(env_steps, steps, lrs))
    lr = float(a.lr)
    if a.get("lr_schedule", "constant") != "linear":
        return lambda env_steps: lr
    start = float(a.get("lr_decay_start", 0.0)) * budget
    return lambda env_steps: lr * min(1.0, max(0.0, (budget - env_steps) / (budget - start)))


def check_schedule_keeps_the_past(saved: DictConfig, cfg: DictConfig, iterations: int) -> None:
    """A resume may change the learning-rate schedule only ahead of the run: the new one must give
    the rate each finished iteration used (iteration k updated at k * num_envs * rollout_len env steps)."""
    per_iter = int(cfg.train.num_envs) * int(cfg.train.rollout_len)
    old_lr, new_lr = lr_schedule(saved), lr_schedule(cfg)
    for k in range(iterations):
        old, new = old_lr(k * per_iter), new_lr(k * per_iter)
        if not math.isclose(old, new, rel_tol=1e-9, abs_tol=1e-15):
            raise ConfigError(
                f"the new learning-rate schedule changes the past: at env step {k * per_iter:,} the run "
                f"used lr {old:g}, the new schedule gives {new:g}. A resume may change the schedule only "
                f"from env step {iterations * per_iter:,} on (the run's count); keep the old rates up to "
                f"there, e.g. 'algo.lr_schedule=[[0,{old_lr(0):g}],[{iterations * per_iter},"
                f"{old_lr(iterations * per_iter):g}],...]' for a run that ran at a constant rate")


def check_resume_schedule(ckpt_path: Path, cfg: DictConfig) -> None:
    """check_schedule_keeps_the_past for the run whose checkpoint is ``ckpt_path``, before anything
    of the resume is written."""
    state = load_run_checkpoint(ckpt_path, cfg)
    check_schedule_keeps_the_past(upgrade_saved_config(OmegaConf.create(state["config"])), cfg,
                                  state["counters"]["iteration"])


class PPOTrainer:
    def __init__(self, cfg: DictConfig, run_dir: Path):
        validate_ppo(cfg)
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.ckpt_path = self.run_dir / "checkpoints" / "last.pt"
        torch.set_num_threads(int(cfg.num_threads))
        keep_freed_memory()
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(cfg.device)
        tr, a = cfg.train, cfg.algo
        self.N, self.T = int(tr.num_envs), int(tr.rollout_len)
        self.venv = self._vector_env(self.N, seed=int(cfg.seed) * 100_003)
        act = self.venv.single_action_space
        if not isinstance(act, gym.spaces.Discrete):
            raise ValueError(f"algo=ppo supports discrete actions only; env {cfg.env.name} has {act}: for continuous "
                             f"actions use algo=sac or algo=td3 with an off-policy task (task=meta|pomdp)")
        obs_dim = int(np.prod(self.venv.single_observation_space.shape))
        memory = lambda d: instantiate(cfg.model.memory, input_size=d)  # noqa: E731  every model= works
        ag = cfg.ppo_agent
        self.agent = PPOAgent(obs_dim, int(act.n), memory, list(ag.pre_layers), list(ag.post_layers),
                              ag.init, ag.get("time_embedding"), ag.get("layout", "memrl")).to(self.device)
        self.algo = PPO(self.agent, lr=a.lr, clip=a.clip, epochs=a.epochs, num_minibatches=a.num_minibatches,
                        vf_coef=a.vf_coef, ent_coef=a.ent_coef, kl_coef=a.kl_coef, kl_target=a.kl_target,
                        value_clip=a.value_clip, vf_loss_clip=a.vf_loss_clip, grad_clip=a.grad_clip,
                        norm_adv=a.norm_adv, adam_eps=a.adam_eps)
        # Rollout state carried across chunks (and checkpoints): next obs, its is-first flag, memory.
        self.obs, _ = self.venv.reset(seed=int(cfg.seed) * 100_003)
        self.first = np.ones(self.N, dtype=bool)
        self.state = self.agent.initial_state(self.N, self.device)
        self.ep_return, self.ep_len = np.zeros(self.N), np.zeros(self.N, dtype=np.int64)
        self.iteration = self.env_steps = self.updates = self.episodes = 0
        self.elapsed, self.mmer = 0.0, -math.inf
        self._since_row: Dict[str, List[float]] = {}
        self.signals = StopSignals()  # SIGUSR2/SIGTERM/SIGINT: finish the iteration, checkpoint, stop
        self.lr_at = lr_schedule(cfg)  # env steps -> the learning rate of the next update

    def _vector_env(self, n: int, seed: int):
        ev = self.cfg.env
        make = partial(envs.make, ev.id, int(ev.get("episodes_per_task", 1)),
                       **OmegaConf.to_container(ev.kwargs, resolve=True))
        venv = gym.vector.SyncVectorEnv([make] * n, autoreset_mode=SAME_STEP)
        venv.action_space.seed(seed)
        return venv

    def total_iterations(self) -> int:
        return math.ceil(int(self.cfg.train.env_steps) / (self.N * self.T))

    # ------------------------------------------------------------------ rollouts
    def _t(self, x, dtype=torch.float32):
        return torch.as_tensor(np.asarray(x), device=self.device).to(dtype)

    @torch.no_grad()
    def collect(self):
        """One chunk [T, N]; returns the batch ([N, T] sequences) and the memory state before it."""
        T, dev = self.T, self.device
        init_state = tuple(s.clone() for s in self.state)
        buf = {k: [] for k in ("obs", "first", "actions", "logits", "values", "rewards", "dones")}
        for _ in range(T):
            obs, first = self._t(self.obs), self._t(self.first, torch.bool)
            logits, value, self.state = self.agent.step(obs, self.state, first)
            action = torch.distributions.Categorical(logits=logits).sample()
            self.obs, reward, term, trunc, _ = self.venv.step(action.cpu().numpy())
            done = term | trunc
            for k, v in (("obs", obs), ("first", first), ("actions", action), ("logits", logits),
                         ("values", value), ("rewards", self._t(reward)), ("dones", self._t(done))):
                buf[k].append(v)
            self.ep_return += reward
            self.ep_len += 1
            for i in np.flatnonzero(done):
                self._record({"eval/return_train": float(self.ep_return[i]),
                              "eval/episode_length_train": float(self.ep_len[i])})
                self.ep_return[i], self.ep_len[i] = 0.0, 0
                self.episodes += 1
            self.first = done
        _, last_value, _ = self.agent.step(self._t(self.obs), self.state, self._t(self.first, torch.bool))
        b = {k: torch.stack(v) for k, v in buf.items()}
        a = self.cfg.algo
        b["advantages"], b["returns"] = gae(b["rewards"], b["values"], b["dones"], last_value,
                                            float(a.gamma), float(a.gae_lambda))
        return {k: v.transpose(0, 1).to(dev) for k, v in b.items()}, init_state

    @torch.no_grad()
    def play(self, n: int, seed: int, greedy: bool = True) -> np.ndarray:
        """``n`` whole episodes, one per env of a fresh vector env seeded with ``seed``, from a fresh
        memory: actions by argmax (``greedy``) or sampled from the policy. Returns their returns [n]."""
        venv = self._vector_env(n, seed=seed)
        obs, _ = venv.reset(seed=seed)
        state = self.agent.initial_state(n, self.device)
        returns, alive = np.zeros(n), np.ones(n, dtype=bool)
        while alive.any():
            logits, _, state = self.agent.step(self._t(obs), state)
            action = logits.argmax(-1) if greedy else torch.distributions.Categorical(logits=logits).sample()
            obs, reward, term, trunc, _ = venv.step(action.cpu().numpy())
            returns += reward * alive
            alive &= ~(term | trunc)
        venv.close()
        return returns

    def evaluate(self) -> Dict[str, float]:
        """``eval.num_episodes`` greedy episodes with a fixed seed (the same episodes at every evaluation)."""
        n = int(self.cfg.eval.num_episodes)
        if n == 0:
            return {}
        return {"eval/return_eval": float(self.play(n, seed=int(self.cfg.seed) * 100_003 + 50_000).mean())}

    # ------------------------------------------------------------------ main loop
    def run(self, logger_cfg, resume: bool = False) -> Dict[str, float]:
        counters = self.load() if resume else None
        logger = RunLogger(self.run_dir, logger_cfg, OmegaConf.to_container(self.cfg, resolve=True),
                           resume_step=self.env_steps if resume else None,
                           csv_rows=counters["csv_rows"] if counters else 0)
        if resume:
            log.info("resumed from %s at iteration %d, %d env steps", self.ckpt_path, self.iteration, self.env_steps)
        start = time.perf_counter() - self.elapsed
        last: Dict[str, float] = {}
        self.signals.install()
        try:
            while self.iteration < self.total_iterations():
                t0 = time.perf_counter()
                batch, init_state = self.collect()
                t1 = time.perf_counter()
                self.algo.set_lr(self.lr_at(self.env_steps))
                stats = {f"train/{k}": v for k, v in self.algo.update(batch, init_state).items()}
                t2 = time.perf_counter()
                bad = non_finite(stats)
                if bad:  # the same message as SAC's (src/loop.py)
                    raise NonFiniteError(
                        f"non-finite training values at iteration {self.iteration + 1} (model={self.cfg.model.name}, "
                        f"env={self.cfg.env.name}): {bad}. Training stopped; the last good checkpoint "
                        f"({self.ckpt_path}) is kept. In a new run, {non_finite_advice(bad, stats, self.cfg.algo.get('grad_clip'))}.")
                self.iteration += 1
                self.env_steps += self.N * self.T
                self.updates += self.algo.epochs * self.algo.num_minibatches
                stats["perf/env_steps_per_s"] = self.N * self.T / max(t2 - t0, 1e-9)  # updates included
                stats["perf/collect_steps_per_s"] = self.N * self.T / max(t1 - t0, 1e-9)
                stats["perf/updates_per_s"] = self.algo.epochs * self.algo.num_minibatches / max(t2 - t1, 1e-9)
                self._record(stats)
                logger.log_scalars(stats, self.env_steps)
                row_due = self.iteration % int(self.cfg.eval.interval) == 0
                if row_due or self.iteration == self.total_iterations() or self.signals.received is not None:
                    self.elapsed = time.perf_counter() - start
                    last = self._write_row(logger)
                if self.signals.received is not None:  # logged first: the default action ends the process at once
                    log.info("received %s: iteration %d finished and checkpointed (%d env steps), stopping; "
                             "continue with python -m src.train resume=%s", signal.Signals(self.signals.received).name,
                             self.iteration, self.env_steps, self.run_dir)
                    self.signals.forward(f"at iteration {self.iteration}; the checkpoint in {self.ckpt_path.parent} resumes it")
        finally:
            self.signals.restore()
            logger.close()
        return last

    def _record(self, stats: Dict[str, float]) -> None:
        for k, v in stats.items():
            self._since_row.setdefault(k, []).append(v)

    def _write_row(self, logger: RunLogger) -> Dict[str, float]:
        rets = self._since_row.pop("eval/return_train", [])
        mean_return = float(np.mean(rets)) if rets else None
        if mean_return is not None:
            self.mmer = max(self.mmer, mean_return)
        row = {"env_steps": self.env_steps, "iteration": self.iteration, "updates": self.updates,
               "episodes": self.episodes, "time_s": round(self.elapsed, 2), "eval/return_train": mean_return,
               "eval/mmer": self.mmer if math.isfinite(self.mmer) else None, "eval/episodes_train": len(rets),
               **{f"train/{k}": None for k in PPO.STATS}, **self.evaluate()}
        row.update({k: float(np.mean(v)) for k, v in self._since_row.items()})
        self._since_row = {}
        logger.log_row(row)
        logger.flush()
        self.save(csv_rows=logger.csv_rows)
        log.info("iter %d | env steps %d | return %s | MMER %s | %.0f steps/s | %.0fs", self.iteration,
                 self.env_steps, "-" if mean_return is None else f"{mean_return:.3f}",
                 "-" if row["eval/mmer"] is None else f"{self.mmer:.3f}", row["perf/env_steps_per_s"], self.elapsed)
        return {k: v for k, v in row.items() if k.startswith("eval/")}

    # ------------------------------------------------------------------ checkpoints
    def save(self, csv_rows: int) -> None:
        save_checkpoint({
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "agent": self.agent.state_dict(), "algo": self.algo.state_dict(),
            "counters": {"iteration": self.iteration, "env_steps": self.env_steps, "updates": self.updates,
                         "episodes": self.episodes, "elapsed": self.elapsed, "csv_rows": csv_rows, "mmer": self.mmer},
            "rollout": {"obs": self.obs, "first": self.first, "state": self.state, "ep_return": self.ep_return,
                        "ep_len": self.ep_len, "envs": pickle.dumps(self.venv.envs)},
            "since_row": self._since_row,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        }, self.ckpt_path)

    def load(self) -> dict:
        state = load_run_checkpoint(self.ckpt_path, self.cfg, map_location=self.device)
        saved = upgrade_saved_config(OmegaConf.create(state["config"]))
        check_schedule_keeps_the_past(saved, self.cfg, state["counters"]["iteration"])
        self.agent.load_state_dict(state["agent"])
        self.algo.load_state_dict(state["algo"])
        c = state["counters"]
        self.iteration, self.env_steps, self.updates = c["iteration"], c["env_steps"], c["updates"]
        self.episodes, self.elapsed, self.mmer = c["episodes"], c["elapsed"], c["mmer"]
        r = state["rollout"]
        self.obs, self.first, self.ep_return, self.ep_len = r["obs"], r["first"], r["ep_return"], r["ep_len"]
        self.state = tuple(s.to(self.device) for s in r["state"])
        self.venv.close()
        self.venv = gym.vector.SyncVectorEnv([partial(lambda e: e, e) for e in pickle.loads(r["envs"])],
                                             autoreset_mode=SAME_STEP)
        self._since_row = state["since_row"]
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
        return c
