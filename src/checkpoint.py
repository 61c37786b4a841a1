"""Atomic checkpoints: written to a temporary file in the same directory, fsynced, then renamed,
so a kill at any moment leaves either the previous complete checkpoint or the new one."""
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
