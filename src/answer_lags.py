"""Which past card does a trained policy answer from? An analysis of PPO runs on POPGym's
RepeatPrevious, where the agent is rewarded for naming the suit of the card k − 1 steps before the
one it sees now (RepeatPrevious-Easy: k = 4, so lag 3; the env's own reward check, ``deck[-k]``).

    python -m src.answer_lags RUN_DIR [ckpt=auto|best|last|FILE] [episodes=N] [max_lag=L]
                              [out=DIR] [device=cpu] [seed=S]

It plays ``episodes`` (default 256) fresh episodes with the run's policy (actions sampled, as in
training) and measures, for every lag j = 0..max_lag (default: the target lag + 4), how often the
greedy answer (argmax) is the suit shown j steps before the current card, and the probability the
policy puts on that suit. A memory that recalls exactly has 1.0 at the target lag and chance
(≈ 0.25) elsewhere; a memory that keeps a recency-weighted blend of recent suits answers the most
frequent suit among the last few cards, with a profile that falls off with the lag and no peak at
the target. It also prints the accuracy at the target lag by position in the episode (the scored
steps in quarters), and how large the memory's state grows along the episode: the largest |entry|
of each env's state tensors at each step (median and max over the episodes). A linear recurrence
whose decays exceed 1 (SHM without its clamp: C = 1 + tanh(θ ⊗ v_c) ∈ (0, 2)) grows geometrically
there; its read stays bounded only while the query is exactly zero on the grown columns.

Written to ``out`` (default RUN_DIR/eval/<checkpoint name>/): answer_lags.md (the tables),
answer_lags.csv (lag, greedy match, probability, target flag) and memory_state.csv (step, median
and max of the largest |state| entry). Nothing else in the run changes.
Exit code 2 (one line on stderr) for a bad run directory, a missing checkpoint, bad arguments or a
run whose env is not a RepeatPrevious.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from src.evaluate import (EvalError, load_run_config, load_trained, parse_args, resolve_checkpoint,
                          run_cli)

USAGE = ("usage: python -m src.answer_lags RUN_DIR [ckpt=auto|best|last|FILE] [episodes=N] [max_lag=L] "
         "[out=DIR] [device=auto|cpu|cuda] [seed=S]")
DEFAULTS = {"ckpt": "auto", "episodes": 256, "max_lag": None, "out": None, "device": None, "seed": 0}
INT_KEYS = {"episodes": 1, "max_lag": 0, "seed": 0}
POSITION_BINS = 4  # accuracy by position: the scored steps cut into this many equal parts

# policy(obs [n, D], first [n] bool) -> action logits [n, A]; it keeps its own memory between calls
Policy = Callable[[np.ndarray, np.ndarray], np.ndarray]


def repeat_previous_env(venv):
    """The wrapped popgym RepeatPrevious of the first env of ``venv``, or an EvalError."""
    from popgym.envs.repeat_previous import RepeatPrevious
    env = getattr(venv.envs[0].unwrapped, "env", None)
    if not isinstance(env, RepeatPrevious):
        raise EvalError(f"answer_lags analyses POPGym RepeatPrevious runs only; this run's env is "
                        f"{type(env or venv.envs[0].unwrapped).__name__}")
    return env


def play_and_record(policy: Policy, venv, seed: int) -> Dict[str, np.ndarray]:
    """One episode per env of ``venv`` (reset with ``seed``), actions sampled from ``policy``.

    Returns suits [n, L] (the suit shown at each step), greedy [n, L] (the argmax answer),
    probs [n, L, A] (the policy's distribution), alive [n, L] (step inside the episode) and
    returns [n] (each episode's return)."""
    n = venv.num_envs
    n_suits = int(venv.single_action_space.n)
    rng = np.random.default_rng(seed)
    obs, _ = venv.reset(seed=seed)
    first, alive = np.ones(n, dtype=bool), np.ones(n, dtype=bool)
    suits, greedy, probs, mask, returns = [], [], [], [], np.zeros(n)
    while alive.any():
        logits = np.asarray(policy(obs, first), dtype=np.float64)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        action = (p.cumsum(-1) > rng.random((n, 1))).argmax(-1)           # one sample per row
        suits.append(obs[:, :n_suits].argmax(-1))                         # the card's suit (one-hot first)
        greedy.append(p.argmax(-1))
        probs.append(p)
        mask.append(alive.copy())
        obs, reward, term, trunc, _ = venv.step(action)
        returns += reward * alive
        alive &= ~(term | trunc)
        first = np.zeros(n, dtype=bool)
    return {"suits": np.stack(suits, 1), "greedy": np.stack(greedy, 1), "probs": np.stack(probs, 1),
            "alive": np.stack(mask, 1), "returns": returns}


def lag_profile(rec: Dict[str, np.ndarray], max_lag: int) -> Dict[str, np.ndarray]:
    """For each lag j ≤ max_lag, over the steps t ≥ max_lag (where every lag exists): the rate at
    which the greedy answer at t is the suit shown at t − j, and the mean probability on that suit."""
    suits, greedy, probs, alive = rec["suits"], rec["greedy"], rec["probs"], rec["alive"]
    L = suits.shape[1]
    if L <= max_lag:
        raise EvalError(f"max_lag={max_lag}: the episodes are only {L} steps long")
    t = np.arange(max_lag, L)
    live = alive[:, t]
    match, prob = np.zeros(max_lag + 1), np.zeros(max_lag + 1)
    for j in range(max_lag + 1):
        past = suits[:, t - j]                                                  # [n, |t|]
        match[j] = (greedy[:, t] == past)[live].mean()
        prob[j] = np.take_along_axis(probs[:, t], past[..., None], -1)[..., 0][live].mean()
    return {"lag": np.arange(max_lag + 1), "greedy": match, "prob": prob}


def accuracy_by_position(rec: Dict[str, np.ndarray], lag: int, bins: int = POSITION_BINS):
    """Accuracy of the greedy answer at ``lag`` over the scored steps t ≥ lag, cut into ``bins``
    equal parts: [(first step, last step, accuracy)]."""
    suits, greedy, alive = rec["suits"], rec["greedy"], rec["alive"]
    steps = np.arange(lag, suits.shape[1])
    out = []
    for part in np.array_split(steps, bins):
        if len(part):
            hit = greedy[:, part] == suits[:, part - lag]
            out.append((int(part[0]), int(part[-1]), float(hit[alive[:, part]].mean())))
    return out


def state_magnitude(state) -> np.ndarray:
    """The largest |entry| of each batch row's floating-point state tensors (batch-first, as the
    memory contract has them; integer parts such as a step counter are left out): [B]."""
    import torch
    parts = [t.detach().abs().flatten(1).amax(1) for t in state if torch.is_floating_point(t)]
    return torch.stack(parts).amax(0).float().cpu().numpy() if parts else np.zeros(0)


def state_growth(magnitude: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Per step: [step, median, max] over the live episodes of ``magnitude`` [n, L]; [L, 3]."""
    rows = [(t, np.median(magnitude[alive[:, t], t]), magnitude[alive[:, t], t].max())
            for t in range(magnitude.shape[1]) if alive[:, t].any()]
    return np.array(rows, dtype=np.float64)


def format_growth(growth: np.ndarray, points: int = 5) -> str:
    """The growth table at ``points`` evenly spaced steps (first and last included)."""
    lines = ["| step | largest memory-state entry, median over episodes | max |", "|---|---|---|"]
    for i in np.unique(np.linspace(0, len(growth) - 1, points).round().astype(int)):
        t, med, top = growth[i]
        lines.append(f"| {int(t)} | {med:.3g} | {top:.3g} |")
    return "\n".join(lines)


def format_report(profile, by_position, target: int, n_episodes: int, mean_return: float) -> str:
    lines = [f"{n_episodes} episodes, actions sampled; mean return {mean_return:.3f}; target lag {target}",
             "", "| lag j | greedy answer = suit j steps back | probability on that suit |", "|---|---|---|"]
    for j, g, p in zip(profile["lag"], profile["greedy"], profile["prob"]):
        mark = " (target)" if j == target else ""
        lines.append(f"| {j}{mark} | {g:.3f} | {p:.3f} |")
    lines += ["", "| steps | greedy accuracy at the target lag |", "|---|---|"]
    lines += [f"| {a}-{b} | {acc:.3f} |" for a, b, acc in by_position]
    return "\n".join(lines)


def agent_policy(trainer) -> Policy:
    """The run's PPO agent as a ``Policy``: its memory starts fresh and is carried between calls;
    ``policy.state_magnitude`` collects ``state_magnitude`` of the state after each call."""
    import torch
    state = None

    def policy(obs: np.ndarray, first: np.ndarray) -> np.ndarray:
        nonlocal state
        if state is None:
            state = trainer.agent.initial_state(len(obs), trainer.device)
        with torch.no_grad():
            logits, _, state = trainer.agent.step(trainer._t(obs), state, trainer._t(first, torch.bool))
        policy.state_magnitude.append(state_magnitude(state))
        return logits.float().cpu().numpy()
    policy.state_magnitude = []
    return policy


def analyse(args: dict) -> int:
    import torch
    run_dir = args["run_dir"]
    cfg = load_run_config(run_dir, args["device"])
    if cfg.algo.get("name") != "ppo":
        raise EvalError(f"answer_lags analyses PPO runs on POPGym's RepeatPrevious; {run_dir} is an "
                        f"algo={cfg.algo.get('name')} run")
    ckpt_path = resolve_checkpoint(run_dir, args["ckpt"])
    trainer, ckpt = load_trained(cfg, run_dir, ckpt_path)
    venv = trainer._vector_env(int(args["episodes"]), seed=int(args["seed"]))
    k = repeat_previous_env(venv).k
    target = k - 1
    max_lag = target + 4 if args["max_lag"] is None else int(args["max_lag"])
    torch.manual_seed(int(args["seed"]))
    policy = agent_policy(trainer)
    rec = play_and_record(policy, venv, seed=int(args["seed"]))
    venv.close()
    profile = lag_profile(rec, max_lag)
    growth = state_growth(np.stack(policy.state_magnitude, 1), rec["alive"])
    report = (format_report(profile, accuracy_by_position(rec, target), target, int(args["episodes"]),
                            float(rec["returns"].mean()))
              + "\n\n" + format_growth(growth))
    c = ckpt.get("counters", {})
    head = f"{run_dir}: {ckpt_path} (iteration {c.get('iteration', '?')}, env steps {c.get('env_steps', '?')})"
    print(head + "\n\n" + report)
    out = Path(args["out"]) if args["out"] else run_dir / "eval" / ckpt_path.stem
    out.mkdir(parents=True, exist_ok=True)
    (out / "answer_lags.md").write_text(f"# Answer lags\n\n{head}\n\n{report}\n")
    with open(out / "answer_lags.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["lag", "greedy_match", "probability", "target"])
        for j, g, p in zip(profile["lag"], profile["greedy"], profile["prob"]):
            w.writerow([int(j), f"{g:.6f}", f"{p:.6f}", int(j == target)])
    with open(out / "memory_state.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "median_abs_max", "max_abs_max"])
        w.writerows([int(t), f"{med:.6g}", f"{top:.6g}"] for t, med, top in growth)
    print(f"\nwrote {out / 'answer_lags.md'}, answer_lags.csv and memory_state.csv")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(argv, "src.answer_lags", __doc__, USAGE,
                   lambda a: analyse(parse_args(a, DEFAULTS, INT_KEYS, USAGE)))


if __name__ == "__main__":
    sys.exit(main())
