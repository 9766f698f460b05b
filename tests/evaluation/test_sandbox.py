"""Hostile programs in the code-execution sandbox: none may hang, crash or damage the evaluation.

Every program here is bounded by construction even if a limit failed (the fork test forks at most 64 times, the
loop runs under a 2 s timeout, the allocation fails under RLIMIT_AS before any page is touched).
"""

from __future__ import annotations

import os

from evaluation.sandbox import code_execution_allowed, run_program, sandbox_interpreter

MARKER = b"llama-paper-sandbox-"


def _leftover_sandbox_processes() -> list[int]:
    """Processes whose environment points into a sandbox directory (HOME is set to it)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if MARKER in fh.read():
                    pids.append(int(pid))
        except OSError:
            continue
    return pids


def test_correct_and_incorrect_programs():
    assert run_program("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\n").passed
    failed = run_program("def add(a, b):\n    return a * b\nassert add(2, 3) == 5\n")
    assert not failed.passed and failed.status == "failed" and "AssertionError" in failed.stderr


def test_infinite_loop_is_killed_at_the_timeout():
    result = run_program("while True:\n    pass\n", timeout=2)
    assert result.status == "timed out" and not result.passed
    assert _leftover_sandbox_processes() == []


def test_huge_allocation_fails_inside_the_program():
    result = run_program("x = bytearray(50 * 1024 ** 3)\n", memory_mb=512)
    assert result.status == "failed" and "MemoryError" in result.stderr


def test_fork_bomb_is_bounded_and_cleaned_up():
    # Forks through libc (bypassing the Python-level guard), so only RLIMIT_NPROC can stop it.
    bomb = (
        "import ctypes, os, time\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "for i in range(64):\n"
        "    pid = libc.fork()\n"
        "    if pid == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    if pid < 0:\n"
        "        print('fork refused after', i, flush=True)\n"
        "        break\n"
        "time.sleep(60)\n"
    )
    result = run_program(bomb, timeout=3, max_processes=8)
    assert result.status == "timed out"
    _, unprivileged = sandbox_interpreter()
    if unprivileged or os.geteuid() != 0:  # RLIMIT_NPROC binds every user except root
        assert "fork refused after" in result.stdout
    assert _leftover_sandbox_processes() == []  # the whole process group was killed
    os_fork = run_program("import os\nos.fork()\n")  # the plain API is disabled outright
    assert os_fork.status == "failed" and "TypeError" in os_fork.stderr


def test_killing_the_parent_fails():
    result = run_program("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n")
    assert result.status == "failed"
    # Through libc the Python guard is bypassed: the signal reaches the disposable shim, never this process.
    ctypes_kill = run_program("import ctypes, os, time\nctypes.CDLL(None).kill(os.getppid(), 9)\ntime.sleep(1)\n")
    assert ctypes_kill.status == "failed" and not ctypes_kill.passed
    assert _leftover_sandbox_processes() == []


def test_writing_outside_the_directory_fails(tmp_path):
    target = tmp_path / "outside.txt"
    result = run_program(f"open({str(target)!r}, 'w').write('pwned')\n")
    assert result.status == "failed" and not target.exists()
    inside = run_program("open('inside.txt', 'w').write('ok')\nprint(open('inside.txt').read())\n")
    assert inside.passed and inside.stdout.strip() == "ok"


def test_stdin_is_closed_and_opt_in_is_required(monkeypatch):
    assert run_program("import sys\nassert sys.stdin.read() == ''\n").passed
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    assert not code_execution_allowed(False) and code_execution_allowed(True)
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")
    assert code_execution_allowed(False)
