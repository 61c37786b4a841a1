"""How memrl's C++ kernels are built and cached (torchkit/memory/native.py).

A build killed midway (SIGKILL while the compiler runs: an OOM kill, a preempted SLURM job) must
not block the next run, and checkouts with different sources must not rebuild each other's
kernels. The fast tests build a tiny extension through the same machinery (``native.Build``);
the slow ones build memrl's own kernels (~1-2 min each).
"""
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from torchkit.memory import native

pytestmark = pytest.mark.skipif(shutil.which("c++") is None or shutil.which("ninja") is None,
                                reason="needs a C++ compiler and ninja")

TINY = r"""// a tiny extension module: builds in about a second
#include <Python.h>
#define STR_(x) #x
#define STR(x) STR_(x)
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
static PyObject* answer(PyObject*, PyObject*) { return PyLong_FromLong(42); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, "42"}, {nullptr, nullptr, 0, nullptr}};
static PyModuleDef module = {PyModuleDef_HEAD_INIT, STR(TORCH_EXTENSION_NAME), nullptr, -1, methods};
PyMODINIT_FUNC CAT(PyInit_, TORCH_EXTENSION_NAME)(void) { return PyModule_Create(&module); }
"""


def tiny_sources(path: Path, comment: str = "") -> Path:
    path.mkdir(parents=True)
    (path / "tiny.cpp").write_text(TINY + comment)
    return path


def slow_compiler(tmp_path: Path) -> tuple:
    """A compiler wrapper that touches a marker file and hangs on every compile (-c) step until a
    stop file appears (then fails), so a test can kill a build while the compiler runs. ninja puts
    each command in its own process group, so the stop file is how the test ends them.
    Returns (its path, the marker, the stop file)."""
    real = shutil.which("c++")
    marker, stop = tmp_path / "compiling", tmp_path / "stop"
    wrapper = tmp_path / "bin" / "g++"  # torch accepts compilers named g++ without probing them
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\ncase " $* " in *" -c "*) touch "{marker}"; n=0\n'
                       f'  while [ ! -e "{stop}" ] && [ $n -lt 3000 ]; do sleep 0.2; n=$((n+1)); done; exit 1;;\n'
                       f'esac\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, marker, stop


def child(code: str, env_extra: dict, cwd=None) -> subprocess.Popen:
    """A fresh Python process (its own session, so a test can kill what it started)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra}
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=cwd, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the build ended before its compiler started:\n{proc.stdout.read()}")
        if time.monotonic() > end:
            raise AssertionError(f"no compiler started within {timeout} s")
        time.sleep(0.05)


def lock_is_held(lock: Path) -> bool:
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def kill_build_midway_then_rebuild(tmp_path: Path, load_code: str, env: dict, timeout: float) -> str:
    """Start ``load_code`` (which builds) with a hanging compiler, SIGKILL it once the compiler runs,
    then run it again with the real compiler; returns the second run's output."""
    wrapper, marker, stop = slow_compiler(tmp_path)
    first = child(load_code, {**env, "CXX": str(wrapper)})
    try:
        wait_for(marker, first, timeout=120)
        (build_dir,) = Path(env["TORCH_EXTENSIONS_DIR"]).iterdir()
        assert lock_is_held(build_dir / "lock")  # killed while it holds the build lock …
        first.send_signal(signal.SIGKILL)  # … the Python process only: its compiler lives on
        first.wait()
        (scratch,) = build_dir.glob("build-*")
        assert (scratch / "lock").exists()  # torch's own lock file, left behind
        assert not lock_is_held(build_dir / "lock")  # the OS released the flock
        start = time.monotonic()
        second = child(load_code, env)
        out, _ = second.communicate(timeout=timeout)
        assert second.returncode == 0, out
        assert time.monotonic() - start < timeout
        assert not scratch.exists()  # the dead build's scratch was cleared
        assert {p.name for p in build_dir.iterdir()} == {"lock", next(build_dir.glob("*.so")).name}
        return out
    finally:
        stop.touch()  # ends the orphaned compiler wrappers
        first.kill()
        first.wait()
        first.stdout.close()


@pytest.mark.timeout(240)
def test_a_build_killed_midway_does_not_block_the_next_run(tmp_path):
    src = tiny_sources(tmp_path / "src")
    code = (f"from torchkit.memory.native import Build; "
            f"print('answer', Build('tiny', {str(src)!r}).load().answer())")
    out = kill_build_midway_then_rebuild(tmp_path, code, {"TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")},
                                         timeout=90)
    assert "answer 42" in out


@pytest.mark.timeout(120)
def test_leftovers_of_a_killed_build_are_cleared_in_process(tmp_path, caplog):
    """The same state without a kill: a scratch folder with torch's lock file and a half-written
    library in it (torch's load() would wait on that lock forever)."""
    build = native.Build("tiny", tiny_sources(tmp_path / "src"), root=tmp_path / "ext")
    scratch = build.dir / "build-1"
    (scratch / "src").mkdir(parents=True)
    (scratch / "lock").touch()
    (scratch / build.library.name).write_bytes(b"half")
    with caplog.at_level("WARNING"):
        assert build.load().answer() == 42
    assert "building memrl's C++ kernels" in caplog.text
    assert build.library.exists() and not scratch.exists()
    assert {p.name for p in build.dir.iterdir()} == {"lock", build.library.name}


@pytest.mark.timeout(120)
def test_two_checkouts_share_identical_sources_and_never_rebuild_each_other(tmp_path, caplog):
    root = tmp_path / "ext"
    a = tiny_sources(tmp_path / "checkout_a")
    a2 = tiny_sources(tmp_path / "checkout_a2")  # another checkout of the same sources
    b = tiny_sources(tmp_path / "checkout_b", comment="// edited in checkout b\n")
    with caplog.at_level("WARNING"):
        lib_a = native.Build("tiny", a, root=root)
        assert lib_a.load().answer() == 42
        mtime = lib_a.library.stat().st_mtime_ns
        lib_b = native.Build("tiny", b, root=root)
        assert lib_b.load().answer() == 42
        assert lib_b.dir != lib_a.dir and lib_b.module != lib_a.module
        for src in (a, a2, a):  # back to checkout a (or a copy of it): its build is still there
            again = native.Build("tiny", src, root=root)
            assert again.library == lib_a.library
            assert again.load().answer() == 42
    assert caplog.text.count("building memrl's C++ kernels") == 2  # a once, b once
    assert lib_a.library.stat().st_mtime_ns == mtime
    assert len(list(root.iterdir())) == 2


def test_the_key_covers_flags_and_isa(tmp_path):
    src = tiny_sources(tmp_path / "src")
    builds = [native.Build("tiny", src, isa=isa, root=tmp_path) for isa in native.ISAS]
    assert len({b.dir for b in builds}) == 3 and all(b.isa in b.dir.name for b in builds)


def test_bad_isa_names_the_value_and_the_choices(monkeypatch):
    monkeypatch.setenv("MEMRL_CPU_ISA", "sse9")
    with pytest.raises(ValueError, match=r"MEMRL_CPU_ISA must be one of .*'sse9'"):
        native.Build(native.NAME, native.CSRC)


def test_without_flock_support_it_builds_unlocked_and_leaves_other_builds_alone(tmp_path, monkeypatch, caplog):
    import errno

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(native.fcntl, "flock", no_flock)
    build = native.Build("tiny", tiny_sources(tmp_path / "src"), root=tmp_path / "ext")
    other = build.dir / "build-1"  # maybe another process's build in progress: no lock tells us
    other.mkdir(parents=True)
    with caplog.at_level("WARNING"):
        assert build.load().answer() == 42
    assert "building without a lock" in caplog.text
    assert build.library.exists() and other.exists()


def test_the_venvs_ninja_is_found_when_the_venv_is_not_activated(tmp_path):
    import sysconfig
    scripts = sysconfig.get_path("scripts")
    if not shutil.which("ninja", path=scripts):
        pytest.skip("ninja is not installed beside this python")
    assert native._with_ninja(str(tmp_path)) == os.pathsep.join([scripts, str(tmp_path)])
    assert native._with_ninja(scripts) == scripts  # already there: unchanged


def test_waiting_for_a_live_builder_then_loading_its_build(tmp_path, caplog):
    """A second process waits on the lock while a build runs and then loads the published library
    (here the "other process" is this one holding the lock from another descriptor)."""
    import threading
    build = native.Build("tiny", tiny_sources(tmp_path / "src"), root=tmp_path / "ext")
    build.dir.mkdir(parents=True)
    holder = native._flock(build.dir / "lock").__enter__()
    result = {}
    waiter = threading.Thread(target=lambda: result.setdefault("m", native.Build(
        "tiny", tmp_path / "src", root=tmp_path / "ext").load()))
    with caplog.at_level("WARNING"):
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive()  # blocked on the lock
        built = build._build()  # the "live builder" publishes …
        holder.__exit__(None, None, None)
        waiter.join(60)
    assert result["m"] is built  # … and the waiter loads that build instead of building again
    assert "waiting for pid" in caplog.text and caplog.text.count("once per source version") == 1


# ----------------------------------------------------------------------------- memrl's kernels
LOAD_KERNELS = ("import torch; from torchkit.memory import native; from torchkit.memory.kernels.gru import fused_gru; "
                "x, h0 = torch.randn(2, 5, 3), torch.zeros(2, 4); w = [torch.randn(12, 3), torch.randn(12, 4), "
                "torch.randn(12), torch.randn(12)]; print('ok', fused_gru(x, h0, *w).shape, "
                "native.extension().__name__)")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_memrl_kernels_build_after_a_killed_build(tmp_path):
    out = kill_build_midway_then_rebuild(tmp_path, LOAD_KERNELS, {"TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")},
                                         timeout=400)
    assert "ok torch.Size([2, 5, 4])" in out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_memrl_kernels_from_two_checkouts(tmp_path):
    """Two copies of the package, one with an edited source comment, take turns: each builds once."""
    package = Path(native.__file__).parents[2] / "torchkit"
    env = {"TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    for name in ("a", "b"):
        shutil.copytree(package, tmp_path / name / "torchkit", ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "b" / "torchkit" / "memory" / "csrc" / "gru_cpu.cpp", "a") as f:
        f.write("// edited in checkout b\n")
    outs = []
    for name in ("a", "b", "a", "b"):
        run = child(LOAD_KERNELS, env, cwd=tmp_path / name)
        out, _ = run.communicate(timeout=400)
        assert run.returncode == 0 and "ok" in out, out
        assert str(tmp_path / name) in child("import torchkit; print(torchkit.__file__)", env,
                                             cwd=tmp_path / name).communicate()[0]
        outs.append(out)
    builds = ["building memrl's" in out for out in outs]
    assert builds == [True, True, False, False], outs
    assert len(list((tmp_path / "ext").iterdir())) == 2
