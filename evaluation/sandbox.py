"""Running untrusted generated programs (HumanEval, MBPP) so that they cannot hang, crash or damage the evaluation.

Each program runs in its own process, in a fresh temporary directory, with closed stdin, a scrubbed environment,
`python -I -B`, and:
- OS limits: RLIMIT_AS (memory), RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_NPROC, RLIMIT_NOFILE, no core files;
- a new session; on the wall-clock timeout (and after every run) the whole process group is SIGKILLed;
- a disposable shim process as the program's parent, so "kill my parent" hits the shim, not the evaluation;
- a private network namespace where the OS allows it (root), so no network;
- when the evaluation runs as root: the program runs as `nobody` (root ignores RLIMIT_NPROC and can write
  anywhere), with an interpreter `nobody` can execute (ours if its files are world-readable, else /usr/bin/python3);
- a Python-level guard (after OpenAI human-eval's `reliability_guard`): no fork/exec/kill/subprocess, no file
  deletion or renaming, and `open()` may write only inside the sandbox directory.
Limits that fail to apply raise before the program starts, so a program never runs without them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass

NOBODY = 65534
CLONE_NEWNET = 0x40000000

GUARD = r"""
import builtins, io, os, shutil, subprocess, sys
_root = os.path.realpath(os.getcwd())
_open = builtins.open
def _guarded_open(file, mode="r", *args, **kwargs):
    if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
        path = os.path.realpath(os.fsdecode(file))
        if path != _root and not path.startswith(_root + os.sep):
            raise PermissionError(f"sandbox: writing outside the sandbox directory is not allowed: {path}")
    return _open(file, mode, *args, **kwargs)
builtins.open = io.open = _guarded_open
for _name in ("kill", "killpg", "fork", "forkpty", "setsid", "setpgrp", "setpgid", "system", "popen", "putenv",
              "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace", "truncate", "chmod", "chown",
              "lchown", "fchmod", "fchown", "chroot", "chdir", "fchdir", "link", "symlink", "mkfifo", "mknod",
              "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve",
              "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp"):
    if hasattr(os, _name):
        setattr(os, _name, None)
shutil.rmtree = shutil.move = shutil.chown = None
subprocess.Popen = None
sys.argv = ["program.py"]
with _open("program.py", encoding="utf-8") as _fh:
    _source = _fh.read()
exec(compile(_source, "program.py", "exec"), {"__name__": "__main__", "__builtins__": builtins})
"""


# The program's parent: runs the guarded interpreter and reports its exit status (or dies in its place).
SHIM = "import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-I', '-B', '-c', sys.argv[1]]))"


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one program: passed = exit status 0 within the limits."""

    passed: bool
    status: str  # "passed" | "failed" | "timed out"
    returncode: int | None
    stdout: str
    stderr: str


def _world_usable(path: str) -> bool:
    """Every directory on the way is world-searchable and the file world-readable (so `nobody` can use it)."""
    path = os.path.realpath(path)
    parts = path.split(os.sep)
    for i in range(2, len(parts)):
        if not os.stat(os.sep.join(parts[:i])).st_mode & stat.S_IXOTH:
            return False
    return bool(os.stat(path).st_mode & stat.S_IROTH)


def sandbox_interpreter() -> tuple[str, bool]:
    """(python executable, run as `nobody`): drop root when an interpreter `nobody` can run exists."""
    if os.geteuid() != 0:
        return sys.executable, False
    if _world_usable(sys.executable) and _world_usable(sysconfig.get_paths()["stdlib"]):
        return sys.executable, True
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and _world_usable(candidate):
            return candidate, True
    return sys.executable, False  # root without a usable interpreter: limits + guard only


def _limits(memory_mb: int, cpu_seconds: int, max_processes: int, drop_root: bool):
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)  # resolved before fork

    def apply() -> None:
        if drop_root:
            libc.unshare(CLONE_NEWNET)  # best effort: a namespace with only a down loopback
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_DATA, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024 * 1024, 16 * 1024 * 1024))
        resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if drop_root:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)

    return apply


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_program(source: str, *, timeout: float = 10.0, memory_mb: int = 1024, max_processes: int = 16) -> SandboxResult:
    """Run `source` as a Python program under the limits above; never raises for anything the program does."""
    python, drop_root = sandbox_interpreter()
    workdir = tempfile.mkdtemp(prefix="llama-paper-sandbox-")
    try:
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as fh:
            fh.write(source)
        if drop_root:
            os.chown(workdir, NOBODY, NOBODY)
            os.chown(os.path.join(workdir, "program.py"), NOBODY, NOBODY)
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        proc = subprocess.Popen(
            [python, "-I", "-B", "-c", SHIM, GUARD], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=_limits(memory_mb, max(1, int(timeout) + 1), max_processes, drop_root),
        )
        try:
            out, err = proc.communicate(timeout=timeout)
            status = "passed" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            out, err = proc.communicate()
            status = "timed out"
        _kill_group(proc.pid)  # children left behind by a program that exited
        return SandboxResult(status == "passed", status, proc.returncode,
                             out.decode("utf-8", "replace")[-2000:], err.decode("utf-8", "replace")[-2000:])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def code_execution_allowed(flag: bool) -> bool:
    """True when the user opted in with --allow-code-execution or HF_ALLOW_CODE_EVAL=1."""
    return flag or os.environ.get("HF_ALLOW_CODE_EVAL", "") == "1"
