"""How fast can a PPO agent's memory *learn* RepeatPrevious's recall? A supervised probe that takes
RL out of the question: the task=popgym agent (pre MLP -> memory -> post MLP -> policy head) is
trained by cross-entropy to output the suit of the card ``--lag`` steps before the one it sees from
random suit sequences, with Adam and grad clip 0.5 as in experiment=popgym_cpu. It prints the
accuracy of the first and the last 50 batches (chance 0.25). The default lag is what
RepeatPrevious-Easy rewards: POPGym's k = 4 means the env checks ``deck[-4]`` while the agent sees
``deck[-1]``, i.e. the card 3 steps before the current one (``src.answer_lags``; its tests check the
lag against the env's reward). Runs before session 14 used lag 4, one step too far.

    python -m benchmarks.recall_probe [--steps 800] [--lr 1e-3] [--lag 3] [--models gru shm shm:sine ...]

A model is ``name`` (the task=popgym config of model=name, with experiment=popgym_cpu's width) or
``name:sine`` / ``name:none`` (ppo_agent.time_embedding sine / null), optionally ``@H`` for SHM's
mem_size (``shm:none@32``). Seeded; one process; CPU timings are wall-clock of this machine.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from src.config import compose_config as compose_cfg
from src.ppo_agent import PPOAgent

SUITS, EPISODE, BATCH = 4, 52, 16
REPEAT_PREVIOUS_EASY_LAG = 3  # POPGym k = 4: the card k − 1 steps before the observed one


def build(spec: str) -> PPOAgent:
    name, _, rest = spec.partition(":")
    code, _, mem = rest.partition("@")
    over = ["task=popgym", "experiment=popgym_cpu", f"model={name}"]
    if code:
        over.append(f"ppo_agent.time_embedding={'null' if code == 'none' else code}")
    if mem:
        over.append(f"model.memory.mem_size={int(mem)}")
    cfg = compose_cfg(over)
    from hydra.utils import instantiate
    ag = cfg.ppo_agent
    return PPOAgent(SUITS, SUITS, lambda d: instantiate(cfg.model.memory, input_size=d), list(ag.pre_layers),
                    list(ag.post_layers), ag.init, ag.get("time_embedding"))


def probe(spec: str, steps: int, lr: float, lag: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    agent = build(spec)
    opt = torch.optim.Adam(agent.parameters(), lr=lr)
    accs, t0 = [], time.perf_counter()
    for _ in range(steps):
        suits = torch.randint(0, SUITS, (BATCH, EPISODE))
        logits, _, _ = agent(F.one_hot(suits, SUITS).float())
        target, pred = suits[:, :-lag], logits[:, lag:]
        loss = F.cross_entropy(pred.reshape(-1, SUITS), target.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
        opt.step()
        accs.append(float((pred.argmax(-1) == target).float().mean()))
    n = min(50, steps)
    return {"model": spec, "first": sum(accs[:n]) / n, "last": sum(accs[-n:]) / n, "s": time.perf_counter() - t0}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["gru", "shm", "shm:none"])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lag", type=int, default=REPEAT_PREVIOUS_EASY_LAG)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    if a.steps <= 0 or a.lag <= 0 or a.lag >= EPISODE:
        raise SystemExit(f"--steps must be positive and 0 < --lag < {EPISODE}, got {a.steps}, {a.lag}")
    torch.set_num_threads(a.threads)
    print(f"Supervised recall of the suit {a.lag} steps back, {a.steps} Adam steps (lr {a.lr}) of "
          f"{BATCH} x {EPISODE}-step sequences; accuracy, chance 0.25\n")
    print("| model | first 50 batches | last 50 batches | wall s |\n|---|---|---|---|")
    for spec in a.models:
        r = probe(spec, a.steps, a.lr, a.lag)
        print(f"| {r['model']} | {r['first']:.3f} | {r['last']:.3f} | {r['s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
