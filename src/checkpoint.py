"""Checkpoints: atomic files (written to a temporary file in the same directory, fsynced, then
renamed, so a kill at any moment leaves either the previous complete checkpoint or the new one),
the random streams a run saves, and the config check before a resume."""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import torch

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    pass


class CheckpointWriteError(CheckpointError):
    """The checkpoint could not be written (full disk, no permission); the previous one is intact."""


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def save_checkpoint(state: dict, path: Path) -> None:
    """Serialise in memory first (so the size is known before the disk is touched), then write a
    temporary file, fsync, rename. On any OS error the temporary file is removed and the previous
    checkpoint stays; the error says what, where and how much space was needed."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buf)
    data = buf.getbuffer()
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(path.parent).free
        if free < len(data):
            raise OSError(28, f"No space left on device: {_mb(len(data))} needed, {_mb(free)} free")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        kept = "the previous checkpoint is kept" if path.exists() else "no earlier checkpoint exists"
        raise CheckpointWriteError(
            f"could not write the checkpoint {path} ({e.strerror or e}; it needs {_mb(len(data))}); "
            f"{kept}: free space or fix the permissions, then continue with resume={path.parent.parent}") from None


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: nothing to resume (start a new run without resume=)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated or foreign file
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); "
                              f"delete it to start over") from e
    version = state.get("format_version") if isinstance(state, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version}, this memrl writes "
                              f"{FORMAT_VERSION}: resume it with the memrl version that wrote it")
    return state


def require_same_config(saved: dict, current: dict, path: Path) -> None:
    """A checkpoint only continues the experiment that wrote it: every top-level config key outside
    the runtime keys, the budget (a resumed run may be extended) and PPO's learning-rate schedule
    (checked by PPOTrainer against the rates already used) must be equal, else a ValueError lists
    the differences."""
    from src.config import config_differences, resumable_keys
    diffs = config_differences(saved, current, saved_is="checkpoint has", ignore=resumable_keys(current))
    if diffs:
        raise ValueError(f"{path} was written by a different config:\n  " + "\n  ".join(diffs)
                         + "\nuse a new output directory, or resume with the run's own config")


def load_run_checkpoint(path: Path, cfg, map_location="cpu") -> dict:
    """A run's checkpoint, checked to come from the run's own config (``cfg``: the DictConfig of
    this process; the saved one is first brought to today's keys)."""
    from omegaconf import OmegaConf
    from src.config import upgrade_saved_config
    state = load_checkpoint(path, map_location=map_location)
    saved = OmegaConf.to_container(upgrade_saved_config(OmegaConf.create(state["config"])), resolve=True)
    require_same_config(saved, OmegaConf.to_container(cfg, resolve=True), path)
    return state


def rng_states(np_rng, envs) -> dict:
    """Every random stream of a run: torch (CPU and CUDA), the loop's numpy generator, each env's."""
    return {"torch": torch.get_rng_state(), "numpy": np_rng.bit_generator.state,
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "envs": [e.unwrapped.np_random.bit_generator.state for e in envs]}


def restore_rng_states(state: dict, np_rng, envs) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    np_rng.bit_generator.state = state["numpy"]
    for env, s in zip(envs, state["envs"]):
        env.unwrapped.np_random.bit_generator.state = s


def publish_as(src: Path, dst: Path) -> None:
    """Make ``dst`` a complete copy of the checkpoint ``src``, atomically: a hard link (no bytes
    copied; later saves replace files, never write into them) or, where links fail, a copy."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(tmp, dst)
