"""Raw env steps per second with uniform random actions (no agent), as the trainer builds the envs.

    python -m benchmarks.env_speed [--envs halfcheetah_v pendulum_v cheetah_vel ...] [--steps 20000]

Each env config (conf/env/<name>.yaml) is made with envs.make(env.id, env.episodes_per_task,
**env.kwargs), reset on episode ends, and stepped ``--steps`` times; prints a markdown table.
"""
from __future__ import annotations

import argparse
import time

from omegaconf import OmegaConf

import envs
from src.config import compose_config


def steps_per_second(env_name: str, steps: int, seed: int = 0) -> float:
    ev = compose_config([f"env={env_name}"]).env
    env = envs.make(ev.id, int(ev.episodes_per_task), **OmegaConf.to_container(ev.kwargs, resolve=True))
    env.reset(seed=seed)
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(min(steps, 1000))]
    t0 = time.perf_counter()
    for i in range(steps):
        _, _, terminated, truncated, _ = env.step(actions[i % len(actions)])
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", nargs="+", default=["halfcheetah_v"])
    ap.add_argument("--steps", type=int, default=20000)
    args = ap.parse_args()
    print("| env | env steps/s (random actions) |")
    print("|---|---|")
    for name in args.envs:
        print(f"| {name} | {steps_per_second(name, args.steps):,.0f} |", flush=True)


if __name__ == "__main__":
    main()
