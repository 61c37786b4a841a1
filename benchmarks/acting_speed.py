"""Acting (experience collection) speed: env steps/s of one training iteration's stochastic rollouts
(all rollouts of an iteration stepped in lockstep, one batched actor call per step), per model and
env, for three implementations measured side by side in one process:

- before: the rollout loop and actor step as of commit 8bc5a72 (``legacy_rollouts`` below, kept
  verbatim for this comparison and as a test oracle);
- reference: today's loop with the plain steps (``run_rollouts(fast=False)``: ``agent.act``, each
  env's own ``step``);
- fast: today's loop as training runs it (``src.acting.ActingPolicy``; Wind/PointRobot stepped all
  at once by ``envs.batch.NavigationBatch``).

    python -m benchmarks.acting_speed [--models gru ...] [--default-models shm ...]
                                      [--envs wind point_robot] [--repeats 5] [--threads 1] [--extra k=v ...]

Each cell builds the real Trainer (same envs, agent and seeds as training) and times ``--repeats``
iterations' worth of stochastic rollouts per implementation, interleaved (before, reference, fast,
before, ...) so that a load change on the machine hits all three alike; the median is reported.
Default rows: ``experiment=paper`` (its actor is a GRU of width 64 on Wind, 128 on PointRobot for
every model, so one row stands for all of them) and the default arrangement (the memory under test
in both actor and critic) for model=shm (an SHM actor, width 512).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from src.config import compose_config
from src.loop import Trainer
from src.rollouts import random_actions, run_rollouts


def legacy_rollouts(agent, env_list, tasks, mode, *, rng, device, discrete, action_dim, episodes_per_task,
                    goal_is_terminal, warmup_action_range):
    """src/rollouts.py's run_rollouts as of commit 8bc5a72 (per-env lists, ``agent.act`` per step)."""
    n, A = len(env_list), action_dim
    obs = [env.reset(options=None if t is None else {"task": int(t)})[0] for env, t in zip(env_list, tasks)]
    traj = [{"obs": [o], "act": [], "rew": [], "term": []} for o in obs]
    success = np.zeros(n, dtype=bool)
    returns = np.zeros((n, episodes_per_task))
    alive = np.ones(n, dtype=bool)
    prev_a = np.zeros((n, A), dtype=np.float32)
    prev_r = np.zeros((n, 1), dtype=np.float32)
    cur = np.stack(obs)
    state = agent.initial_actor_state(n, device) if mode != "random" else None
    while alive.any():
        if mode == "random":
            actions = random_actions(rng, n, A, discrete, warmup_action_range)
        else:
            a, state = agent.act(torch.as_tensor(prev_a, device=device), torch.as_tensor(prev_r, device=device),
                                 torch.as_tensor(cur).to(device).float(), state,
                                 deterministic=(mode == "deterministic"))
            actions = a.cpu().numpy()
        env_actions = actions.argmax(-1) if discrete else actions
        for i in np.flatnonzero(alive):
            o, r, terminated, truncated, info = env_list[i].step(env_actions[i])
            t = traj[i]
            t["obs"].append(o)
            t["act"].append(actions[i])
            t["rew"].append(r)
            t["term"].append(float(terminated or (goal_is_terminal and info.get("is_goal", False))))
            returns[i, info.get("episode_index", 0)] += r
            cur[i], prev_r[i, 0] = o, r
            if terminated or truncated:
                alive[i] = False
                success[i] = bool(info.get("success", False))
        prev_a = actions
    episodes = [{key: np.asarray(v) if key == "obs" else np.asarray(v, dtype=np.float32)
                 for key, v in t.items()} for t in traj]
    return episodes, success, returns


def rollout_kwargs(trainer: Trainer) -> dict:
    ev = trainer.cfg.env
    return dict(rng=trainer.rng, device=trainer.device, discrete=trainer.discrete, action_dim=trainer.action_dim,
                episodes_per_task=ev.episodes_per_task, goal_is_terminal=ev.goal_is_terminal,
                warmup_action_range=trainer.cfg.train.warmup_action_range)


IMPLEMENTATIONS = {
    "before": lambda agent, envs, tasks, kw: legacy_rollouts(agent, envs, tasks, "stochastic", **kw),
    "reference": lambda agent, envs, tasks, kw: run_rollouts(agent, envs, tasks, "stochastic", fast=False, **kw),
    "fast": lambda agent, envs, tasks, kw: run_rollouts(agent, envs, tasks, "stochastic", fast=True, **kw),
}


def measure(overrides, repeats: int) -> dict:
    """Median env steps/s of one iteration's stochastic rollouts, per implementation."""
    torch.manual_seed(0)
    cfg = compose_config(["logger=none", "progress_bar=false", *overrides])
    trainer = Trainer(cfg, tempfile.mkdtemp(prefix="memrl_bench_"))
    m = int(cfg.train.rollouts_per_iter)
    envs, kw = trainer.train_envs[:m], rollout_kwargs(trainer)
    rates = {name: [] for name in IMPLEMENTATIONS}
    for rep in range(repeats + 1):  # the first round warms up (kernels, allocator)
        for name, run in IMPLEMENTATIONS.items():
            tasks = trainer.train_tasks[trainer.rng.integers(len(trainer.train_tasks), size=m)]
            t0 = time.perf_counter()
            episodes, _, _ = run(trainer.agent, envs, tasks, kw)
            seconds = time.perf_counter() - t0
            if rep:
                rates[name].append(sum(len(ep["act"]) for ep in episodes) / seconds)
    return {"cfg": cfg, **{name: statistics.median(r) for name, r in rates.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["gru"],
                    help="models for the experiment=paper rows: only the critic's memory (not timed here) "
                         "changes with the model, the actor is a GRU of the env's reference width for all")
    ap.add_argument("--default-models", nargs="*", default=["shm"],
                    help="models for rows with the default arrangement (the memory in the actor too)")
    ap.add_argument("--envs", nargs="+", default=["wind", "point_robot"])
    ap.add_argument("--repeats", type=int, default=5, help="timed iterations per implementation (median)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides for every row")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, device {'cuda' if torch.cuda.is_available() else 'cpu'}, "
          f"{args.threads} thread(s), overrides: {' '.join(args.extra) or '-'}\n")
    print("| env | arrangement | model | actor memory | rollouts | before env steps/s | "
          "reference env steps/s | fast env steps/s | fast / before |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = [("paper", model, ["experiment=paper"]) for model in args.models]
    rows += [("default", model, []) for model in args.default_models]
    for env in args.envs:
        for arrangement, model, preset in rows:
            r = measure([f"env={env}", f"model={model}", f"num_threads={args.threads}", *preset, *args.extra],
                        args.repeats)
            cfg = r["cfg"]
            actor = cfg.agent.actor_memory.name if cfg.agent.actor_memory is not None else cfg.model.name
            print(f"| {env} | {arrangement} | {model} | {actor} {int(cfg.model.width)} | "
                  f"{int(cfg.train.rollouts_per_iter)} | {r['before']:.0f} | {r['reference']:.0f} | "
                  f"{r['fast']:.0f} | {r['fast'] / r['before']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
