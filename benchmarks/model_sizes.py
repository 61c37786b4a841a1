"""Parameter count and state size of every memory layer, from its conf/model/*.yaml.

    python -m benchmarks.model_sizes [--input-size 40] [--width 512]

`--width` overrides model.width (the memory's output width); leave it out for the configs' defaults
(the paper's Table 4 sizes).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"


def build(name: str, input_size: int, width=None):
    cfg = OmegaConf.create({"model": OmegaConf.load(CONF / f"{name}.yaml")})
    if width is not None:
        cfg.model.width = width
    return cfg, instantiate(cfg.model.memory, input_size=input_size)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input-size", type=int, default=40, help="memory input size (Wind/PointRobot: 40)")
    ap.add_argument("--width", type=int, default=None)
    args = ap.parse_args()
    rows = []
    for path in sorted(CONF.glob("*.yaml")):
        cfg, layer = build(path.stem, args.input_size, args.width)
        state = layer.initial_state(1, torch.device("cpu"))
        sizes = {k: v for k, v in cfg.model.memory.items() if k not in ("_target_", "output_size")}
        rows.append((path.stem, cfg.model.width, ", ".join(f"{k}={v}" for k, v in sizes.items()),
                     sum(p.numel() for p in layer.parameters()), sum(s.numel() for s in state),
                     " + ".join(str(list(s.shape[1:])) for s in state) or "-"))
    print(f"memory input size {args.input_size}\n")
    print("| model | width | sizes | parameters | state floats / env | state tensors |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:,} | {r[4]:,} | {r[5]} |")


if __name__ == "__main__":
    main()
