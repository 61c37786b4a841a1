"""How often SHM's per-step clamp of M to ±clamp acts, in trained runs.

    python -m benchmarks.shm_clamp RUN_DIR [RUN_DIR ...] [--batches 8]

For each run (a memrl run dir with checkpoints/last.pt and an SHM model) it loads the agent and its
replay buffer, samples batches of whole episodes, and runs every SHM memory of the agent (actor,
critic, critic target) over them step by step, counting the entries of the pre-clamp state
P_t = C_t ⊙ M_{t-1} + U_t with |P_t| > clamp. Prints a markdown table: the share of clamped entries,
the share of (row, step) pairs with at least one clamped entry, and the largest |P_t| seen.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from omegaconf import OmegaConf

from src.algos.sac import shift_inputs
from src.checkpoint import load_checkpoint
from src.loop import Trainer
from torchkit.memory.shm import SHM


@torch.no_grad()
def clamp_stats(memory: SHM, x: torch.Tensor, mask: torch.Tensor) -> dict:
    """x [B,T,D] memory inputs, mask [B,T] valid steps -> counts of |P| > clamp."""
    limit = memory.clamp if memory.clamp is not None else float("inf")
    theta, vc, ev, k, q, _ = memory._factors(x)  # [B,T,H] each
    B, T, H = theta.shape
    M = x.new_zeros(B, H, H)
    clamped = rows_hit = steps = 0
    peak = 0.0
    for t in range(T):
        C = 1 + torch.tanh(theta[:, t, :, None] * vc[:, t, None, :])
        P = C * M + ev[:, t, :, None] * k[:, t, None, :]
        over = (P.abs() > limit) & mask[:, t, None, None]
        clamped += int(over.sum())
        rows_hit += int(over.flatten(1).any(1).sum())
        steps += int(mask[:, t].sum())
        peak = max(peak, float((P.abs() * mask[:, t, None, None]).max()))
        M = P.clamp(-limit, limit)
    return {"entries": clamped / max(1, steps * H * H), "row_steps": rows_hit / max(1, steps), "peak": peak}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--batches", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| run | env steps | memory | θ | clamp | clamped entries | (row, step) pairs with a clamped entry | max abs(P) |")
    print("|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        cfg.device, cfg.logger = "cpu", {"name": "none"}
        trainer = Trainer(cfg, Path(tempfile.mkdtemp(prefix="memrl_clamp_")))
        state = load_checkpoint(run / "checkpoints" / "last.pt")
        trainer.agent.load_state_dict(state["agent"])
        trainer.buffer.load_state_dict(state["buffer"])
        env_steps = state["counters"]["env_steps"]
        agent = trainer.agent
        for part in ("actor", "critic", "critic_target"):
            encoder = getattr(agent, part).encoder
            if not isinstance(encoder.memory, SHM):
                continue
            totals = {"entries": 0.0, "row_steps": 0.0, "peak": 0.0}
            for _ in range(args.batches):
                batch = trainer._to_tensors(trainer.buffer.sample(int(cfg.train.batch_size)))
                prev_act, prev_rew = shift_inputs(batch["act"], batch["rew"])
                x = encoder.inputs(prev_act, prev_rew, batch["obs"])
                mask = torch.cat([torch.ones_like(batch["mask"][:, :1]), batch["mask"]], 1).bool()
                s = clamp_stats(encoder.memory, x, mask)
                totals["entries"] += s["entries"] / args.batches
                totals["row_steps"] += s["row_steps"] / args.batches
                totals["peak"] = max(totals["peak"], s["peak"])
            m = encoder.memory
            print(f"| {cfg.env.name} seed {cfg.seed} | {env_steps:,} | {part} | {m.theta_sampling} | {m.clamp} | "
                  f"{totals['entries']:.2e} | {totals['row_steps']:.2e} | {totals['peak']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
