"""Golden trajectories of POPGym envs through memrl's adapter: fixed seed, fixed actions, the
observations and rewards recorded. Regenerate (only after checking that a change upstream is
intended): ``python -m tests.popgym_golden`` rewrites tests/data/popgym_golden.json."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).parent / "data" / "popgym_golden.json"
ENVS = ["AutoencodeEasy", "BattleshipEasy", "ConcentrationEasy", "RepeatPreviousEasy",
        "CountRecallEasy", "HigherLowerEasy", "MineSweeperEasy", "RepeatFirstEasy"]
SEED, STEPS = 123, 40


def trajectory(name: str, seed: int = SEED, steps: int = STEPS) -> dict:
    """Actions a_t = (7 t + 3) mod |A|; after an episode ends the env is reset (no seed)."""
    import envs
    env = envs.make(envs.popgym.env_id(name), prev_action=True)
    obs, _ = env.reset(seed=seed)
    n = int(env.action_space.n)
    observations, rewards, ends = [obs], [], []
    for t in range(steps):
        obs, r, term, trunc, _ = env.step((7 * t + 3) % n)
        rewards.append(round(float(r), 10))
        ends.append(int(term) + 2 * int(trunc))
        if term or trunc:
            obs, _ = env.reset()
        observations.append(obs)
    o = np.stack(observations).astype(np.float32)
    return {"obs_sha256": hashlib.sha256(o.tobytes()).hexdigest(), "obs_shape": list(o.shape),
            "first_obs_nonzero": [np.flatnonzero(x).tolist() for x in o[:3]],
            "rewards": rewards, "ends": ends}


def main() -> None:
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    import popgym
    data = {"popgym_version": getattr(popgym, "__version__", None), "seed": SEED, "steps": STEPS,
            "envs": {name: trajectory(name) for name in ENVS}}
    GOLDEN.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
