"""Freeze the code of a sweep: copy the working tree, as it is now, to ``<sweep dir>/code``.

Queued (and requeued) jobs import ``src/`` and compose ``conf/`` when they *start*, so a sweep
launched from the live checkout would run whatever the tree holds by then. A sweep is therefore
launched from a snapshot:

* in a git checkout, the snapshot is a local clone (objects shared with the source repository,
  nothing written to it) checked out at the source's HEAD commit, with the uncommitted state
  laid over it: modified tracked files, untracked files that git does not ignore, deleted
  files removed, plus the git-ignored site settings in ``conf/local/``. Runs launched from it
  record that commit and the same dirty status in their ``git.txt``;
* elsewhere, a plain copy (without .git, .venv, outputs and caches).

``snapshot.json`` in the snapshot records the source path, commit, dirty file list and time.
The Python environment is not copied: jobs use the interpreter that launched the sweep.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, List

# Plain-copy fallback (no git): never copied.
IGNORE = (".git", ".venv", "venv", "outputs", "multirun", "runs", "wandb", "__pycache__", ".pytest_cache",
          "*.egg-info", "*.pyc")


class SnapshotError(RuntimeError):
    pass


def _git(root: Path, *args: str) -> str:
    r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise SnapshotError(f"git {' '.join(args)} failed in {root}: {r.stderr.strip()}")
    return r.stdout


def _git_root(path: Path):
    try:
        return Path(_git(path, "rev-parse", "--show-toplevel").strip())
    except (SnapshotError, OSError):
        return None


def _copy(src_root: Path, dest_root: Path, rel: str) -> None:
    src, dest = src_root / rel, dest_root / rel
    if src.is_symlink() or src.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        if src.is_symlink():
            os.symlink(os.readlink(src), dest)
        else:
            shutil.copy2(src, dest)


def snapshot(src: Path, dest: Path) -> Dict:
    """Copy the project at ``src`` (its working tree as it is now) to ``dest``; return its metadata."""
    src, dest = Path(src).resolve(), Path(dest).resolve()
    if dest.exists() and any(dest.iterdir()):
        raise SnapshotError(f"snapshot destination {dest} already exists and is not empty")
    root = _git_root(src)
    inside = dest.is_relative_to(src)  # e.g. <project>/outputs/sweeps/<name>/code: never copy it into itself
    meta: Dict = {"source": str(src), "created": time.strftime("%Y-%m-%d %H:%M:%S"), "method": "git"}
    if root is None or root != src:
        meta["method"] = "copy"
        patterns = shutil.ignore_patterns(*IGNORE)

        def ignore(directory, names):
            skip = set(patterns(directory, names))
            if inside:
                skip |= {n for n in names if dest.is_relative_to(Path(directory, n).resolve())}
            return skip

        shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True, ignore=ignore)
        meta.update(commit=None, dirty=[])
    else:
        commit = _git(src, "rev-parse", "HEAD").strip()
        dest.parent.mkdir(parents=True, exist_ok=True)
        # --shared: the clone borrows the source's objects (fast, no copy); --no-checkout then an
        # explicit detached checkout of the exact commit (HEAD may be a detached or local commit).
        _git(src, "clone", "--quiet", "--shared", "--no-checkout", str(src), str(dest))
        _git(dest, "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit)
        changed: List[str] = [p for p in _git(src, "ls-files", "-z", "--modified").split("\0") if p]
        untracked = [p for p in _git(src, "ls-files", "-z", "--others", "--exclude-standard").split("\0") if p]
        deleted = {p for p in _git(src, "ls-files", "-z", "--deleted").split("\0") if p}
        if inside:
            below = dest.relative_to(src).as_posix() + "/"
            untracked = [p for p in untracked if not p.startswith(below)]
        for rel in changed + untracked:
            if rel not in deleted:
                _copy(src, dest, rel)
        for rel in deleted:
            target = dest / rel
            if target.is_file() or target.is_symlink():
                target.unlink()
        meta.update(commit=commit, dirty=sorted(set(changed) | deleted), untracked=untracked)
    site = src / "conf" / "local"  # git-ignored site settings still belong to the sweep
    if site.is_dir():
        shutil.copytree(site, dest / "conf" / "local", symlinks=True, dirs_exist_ok=True)
        meta["site_config"] = sorted(p.name for p in site.iterdir())
    (dest / "snapshot.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
