"""Running model-written Python against unit tests without letting it hurt the machine.

Contract for `tests` (what a suite author writes):

1. The program is the model's code, two blank lines, then the tests text, saved as one file and run as `__main__`
   by the stdlib-only interpreter (`python -I -S`: no site-packages, no user environment).
2. The tests may be plain `assert` statements, calls such as `check(candidate)`, or `unittest.main()`.
3. Then every top-level function of the tests text named `test*` (pytest style, no fixtures) is called, and every
   top-level `unittest.TestCase` subclass of the tests text is run (unless the tests already called
   `unittest.main()`, which exits).
4. The case passes when all of that finished and the process exited with status 0. An exception, a non-zero exit,
   a timeout or a resource limit fails it, with the failing test line or test name in `error`. A `sys.exit(0)` in
   the model's code is ignored (the tests still run); `os._exit(0)` before the tests finish is a failure.

Containment, strongest first (probed once per process, see `isolation()`):

* wall-clock timeout; the program runs in its own session and the whole process group is SIGKILLed at the end;
* `resource` limits set in `preexec_fn`: address space (`memory_mb`), CPU seconds, file size, no core dumps, and a
  process count (RLIMIT_NPROC);
* when running as root with util-linux: `unshare --net --pid` (no network interfaces at all; every process the
  program starts dies with it, even ones that escaped the process group) and `setpriv` to a throwaway uid, because
  RLIMIT_NPROC does not apply to root and a fork bomb would otherwise exhaust the machine's pids. If the
  interpreter is not readable by that uid (a pyenv under /root), the uid keeps CAP_DAC_READ_SEARCH only;
* as a non-root user: `unshare --user --map-root-user --net --pid` when user namespaces are allowed;
* always: a network guard prepended by the launcher that makes `socket.socket` refuse non-Unix sockets. It is a
  guard against accidental network use, not a security boundary (ctypes or `_socket` get around it).

This is containment for honest-but-buggy code (infinite loops, fork bombs, memory hogs), not a security boundary
against hostile code: run untrusted code in a VM or container as well.
"""

from __future__ import annotations

import ast
import contextlib
import itertools
import json
import logging
import math
import os
import re
import resource
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

MAX_PROCESSES = 64  # per sandboxed program (threads count too): enough for subprocess/multiprocessing, not a bomb
MAX_FILE_BYTES = 64 * 1024 * 1024
OUTPUT_TAIL_CHARS = 8000  # of stdout/stderr kept in the result
_MIN_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}

_FENCED_PYTHON = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_FENCED_ANY = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)


@dataclass
class SandboxResult:
    passed: bool
    error: str | None  # why it failed: the failing test, the exception, "timed out after 10s"…
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0


def extract_code(text: str) -> str:
    """The code in a model's answer: its ```python blocks (joined), else any fenced blocks, else the whole text.

    An unclosed fence (an answer cut off at the token limit) counts as a block up to the end of the text.
    """
    blocks = _FENCED_PYTHON.findall(text) or _FENCED_ANY.findall(text)
    return "\n\n".join(block.strip("\n") for block in blocks) if blocks else text


# --------------------------------------------------------------------------------------------------- isolation


@dataclass(frozen=True)
class Isolation:
    """How `run_python` contains a program on this machine."""

    prefix: tuple[str, ...]  # command words before the interpreter; "{uid}" is replaced by the run's uid
    network_namespace: bool = False
    pid_namespace: bool = False
    own_uid: bool = False  # a throwaway uid per run, so RLIMIT_NPROC applies even when fmstack runs as root

    def command(self, uid: int | None) -> list[str]:
        return [word.replace("{uid}", str(uid)) for word in self.prefix]


_uid_counter = itertools.count()
_uid_lock = threading.Lock()


def _throwaway_uid() -> int:
    """A uid no account uses, distinct for concurrent runs of this process (so they don't share a process budget)."""
    with _uid_lock:
        n = next(_uid_counter) % 1000
    return 2_000_000_000 + (os.getpid() % 1_000_000) * 1000 + n


def _candidates() -> list[Isolation]:
    unshare, setpriv = shutil.which("unshare"), shutil.which("setpriv")
    found: list[Isolation] = []
    if unshare and setpriv and os.geteuid() == 0:
        ns = [unshare, "--net", "--pid", "--fork", "--kill-child", "--"]
        drop = [setpriv, "--reuid={uid}", "--regid={uid}", "--clear-groups", "--no-new-privs"]
        read_caps = ["--inh-caps=-all,+dac_read_search", "--ambient-caps=-all,+dac_read_search"]
        for caps in (["--bounding-set=-all"], [*read_caps, "--bounding-set=-all,+dac_read_search"]):
            found.append(Isolation((*ns, *drop, *caps, "--"), True, True, True))
    if unshare and os.geteuid() != 0:
        userns = (unshare, "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--")
        found.append(Isolation(userns, True, True, False))
    return found


def _works(candidate: Isolation) -> bool:
    """Whether the candidate runs our interpreter with its own stdlib (not a system one found as a fallback)."""
    probe = [
        *candidate.command(_throwaway_uid()),
        sys.executable,
        "-I",
        "-S",
        "-B",
        "-c",
        "import os; print(os.__file__)",
    ]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=20, env=_MIN_ENV, cwd="/")
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == os.__file__


@lru_cache(maxsize=1)
def isolation() -> Isolation:
    """The strongest containment that works here (probed once: starting two processes costs ~0.1 s)."""
    for candidate in _candidates():
        if _works(candidate):
            return candidate
    if os.geteuid() == 0:
        log.warning("sandbox: running as root without unshare/setpriv: fork bombs cannot be contained")
    else:
        log.warning("sandbox: no namespaces available: relying on resource limits and the network guard")
    return Isolation(())


# ---------------------------------------------------------------------------------------------------- limits


def _user_process_count() -> int:
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                count += os.stat(entry.path).st_uid == uid
    return count


def _limiter(memory_mb: int, cpu_s: int, processes: int) -> Callable[[], None]:
    """The `preexec_fn`: runs in the child between fork and exec, so the limits bind only the program."""

    def lower(kind: int, value: int) -> None:
        _, hard = resource.getrlimit(kind)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))

    def apply() -> None:
        lower(resource.RLIMIT_AS, memory_mb * 1024 * 1024)
        lower(resource.RLIMIT_FSIZE, MAX_FILE_BYTES)
        lower(resource.RLIMIT_NPROC, processes)
        lower(resource.RLIMIT_CORE, 0)
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)  # soft: SIGXCPU, a second later SIGKILL
        top = cpu_s + 1 if hard == resource.RLIM_INFINITY else min(cpu_s + 1, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (min(cpu_s, top), top))

    return apply


# ------------------------------------------------------------------------------------------------------- run


def run_python(code: str, tests: str, timeout_s: float = 10, memory_mb: int = 512) -> SandboxResult:
    """Run `code` (a model's answer: fenced blocks are extracted) followed by `tests`; see the module docstring."""
    program, tests = _lf(extract_code(code)), _lf(tests)  # the launcher counts lines by "\n"
    workspace = Path(tempfile.mkdtemp(prefix="fmstack-sbx-"))
    try:
        return _run(workspace, program, tests, timeout_s, memory_mb)
    finally:
        _remove_tree(workspace)


def _run(workspace: Path, code: str, tests: str, timeout_s: float, memory_mb: int) -> SandboxResult:
    box = isolation()
    uid = _throwaway_uid() if box.own_uid else None
    launcher, config = _write_workspace(workspace, code, tests, uid)
    work = Path(config["program"]).parent
    command = [*box.command(uid), sys.executable, "-I", "-S", "-B", "-X", "utf8", str(launcher), json.dumps(config)]
    processes = MAX_PROCESSES if box.own_uid else _user_process_count() + MAX_PROCESSES
    limits = _limiter(memory_mb, math.ceil(timeout_s) + 1, processes)
    env = {**_MIN_ENV, "HOME": str(work), "TMPDIR": str(work)}
    with open(workspace / "stdout", "wb") as out, open(workspace / "stderr", "wb") as err:
        # Output goes to files, not pipes: a leftover grandchild holding a pipe open cannot block us.
        start = time.monotonic()
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=work,
            env=env,
            start_new_session=True,
            preexec_fn=limits,  # only setrlimit calls: no locks, so safe enough even with threads
        )
        finished = _wait_then_kill_group(proc, timeout_s)
        duration = time.monotonic() - start
    stdout, stderr = _tail(workspace / "stdout"), _tail(workspace / "stderr")
    done = _read(Path(config["marker"])) == config["token"]
    error = _diagnose(finished, proc.returncode, done, stderr, timeout_s)
    return SandboxResult(error is None, error, stdout, stderr, round(duration, 3))


def _write_workspace(workspace: Path, code: str, tests: str, uid: int | None) -> tuple[Path, dict]:
    """workspace/launcher.py (ours, read-only to the program) and workspace/work/program.py (work/ is the program's
    cwd, HOME and TMPDIR); returns the launcher and its configuration."""
    work = workspace / "work"
    work.mkdir()
    program = work / "program.py"
    program.write_text(f"{code}\n\n{tests}\n", encoding="utf-8")
    launcher = workspace / "launcher.py"
    launcher.write_text(_LAUNCHER, encoding="utf-8")
    workspace.chmod(0o711)
    launcher.chmod(0o644)
    if uid is not None:
        for path in (work, program):
            os.chown(path, uid, uid)
    config = {
        "program": str(program),
        "tests_start_line": code.count("\n") + 3,
        **_test_names(tests),
        "marker": str(work / ".fmstack-done"),
        "token": secrets.token_hex(8),
    }
    return launcher, config


def _wait_then_kill_group(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait up to `timeout_s`, then SIGKILL the whole process group; True if the program ended by itself.

    The leader is left unreaped (WNOWAIT) until its group is killed, so its pid, which is the group id,
    cannot be reused by an unrelated process in between.
    """
    deadline = time.monotonic() + timeout_s
    delay, finished = 0.001, False
    while True:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            finished = True
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers: background children, a fork bomb's survivors
    proc.wait()
    return finished


def _diagnose(finished: bool, code: int, done: bool, stderr: str, timeout_s: float) -> str | None:
    if not finished:
        return f"timed out after {timeout_s:g}s"
    if code < 0:  # killed by a signal (unshare dies by the same signal as its child)
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        hints = {"SIGXCPU": "CPU time limit", "SIGKILL": "CPU time limit or out of memory"}
        return f"killed by {name}" + (f" ({hints[name]})" if name in hints else "")
    if code != 0:
        return _failure_line(stderr) or f"exit status {code}"
    if not done:
        return "the program exited before its tests finished"
    return None


def _failure_line(stderr: str) -> str | None:
    """The launcher's one-line summary ("fmstack: …"), else the last line of stderr (usually the exception)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("fmstack: "):
            return line.removeprefix("fmstack: ")
    return lines[-1][:500] if lines else None


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _test_names(tests: str) -> dict[str, list[str]]:
    """Top-level `test*` functions and classes of the tests text (the launcher runs them after the script)."""
    try:
        tree = ast.parse(tests)
    except SyntaxError:
        return {"test_functions": [], "test_classes": []}  # the program itself will fail with the SyntaxError
    functions = [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    ]
    classes = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
    return {"test_functions": functions, "test_classes": classes}


def _tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - OUTPUT_TAIL_CHARS * 4))
        text = f.read().decode("utf-8", errors="replace")
    return text[-OUTPUT_TAIL_CHARS:]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")[:100]
    except (OSError, ValueError):
        return None


def _remove_tree(path: Path) -> None:
    """rmtree that also removes what the program made unreadable (chmod 000 directories)."""

    def fix(func: Callable, target: str, _exc: object) -> None:
        try:
            os.chmod(os.path.dirname(target), stat.S_IRWXU)
            os.chmod(target, stat.S_IRWXU)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


# The program's entry point inside the sandbox (stdlib only; runs under `python -I -S`). It lives here as text so
# the sandbox needs no importable fmstack: the interpreter runs without site-packages.
_LAUNCHER = r'''
import builtins, json, linecache, os, socket, sys, traceback, types


def guard_network():
    """Refuse new non-Unix sockets: a guard against accidental network use, NOT a security boundary."""

    class GuardedSocket(socket.socket):
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if fileno is None and family != socket.AF_UNIX:
                raise PermissionError("network access is disabled in the fmstack sandbox")
            super().__init__(family, type, proto, fileno)

    socket.socket = GuardedSocket


def finish(status):
    # os._exit: a leftover non-daemon thread must not keep the process alive until the timeout.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(status)


def fail(message):
    print("fmstack: " + message, file=sys.stderr)
    finish(1)


def describe(exc):
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def program_lines(exc, program):
    return [n for frame, n in traceback.walk_tb(exc.__traceback__) if frame.f_code.co_filename == program]


def print_trimmed(exc, program):
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != program:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb or exc.__traceback__)


def where(exc, program, start):
    if isinstance(exc, SyntaxError) and exc.filename == program and exc.lineno:
        return f"tests line {exc.lineno - start + 1}" if exc.lineno >= start else f"code line {exc.lineno}"
    lines = program_lines(exc, program)
    tests = [n for n in lines if n >= start]
    if tests:
        n = tests[-1]
        return f"tests line {n - start + 1} `{linecache.getline(program, n).strip()}`"
    return f"code line {lines[-1]}" if lines else "startup"


def run_chunk(source, namespace, program):
    exec(compile(source, program, "exec"), namespace)


def run_test_functions(namespace, names):
    import asyncio, inspect

    for name in names:
        test = namespace.get(name)
        if not callable(test) or isinstance(test, type):
            continue
        required = [p.name for p in inspect.signature(test).parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if required:
            fail(f"{name} needs arguments {required} (pytest fixtures are not supported)")
        try:
            result = test()
            if inspect.iscoroutine(result):
                asyncio.run(result)
        except BaseException as exc:
            print_trimmed(exc, namespace["__file__"])
            fail(f"{name} failed: {describe(exc)}")


def run_test_classes(namespace, names):
    import unittest

    classes = [namespace.get(n) for n in names]
    classes = [c for c in classes if isinstance(c, type) and issubclass(c, unittest.TestCase)]
    if not classes:
        return
    suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromTestCase(c) for c in classes)
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(suite)
    if not result.wasSuccessful():
        bad = result.failures + result.errors
        if bad:
            test, text = bad[0]
            last = [line for line in text.strip().splitlines() if line.strip()][-1]
            fail(f"{len(bad)} of {result.testsRun} tests failed; first: {test.id().removeprefix('__main__.')}: {last}")
        fail("unittest reported unexpected successes")


def main():
    config = json.loads(sys.argv[1])
    program, start = config["program"], config["tests_start_line"]
    with open(program, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    code, tests = "\n".join(lines[: start - 1]), "\n" * (start - 1) + "\n".join(lines[start - 1:])
    guard_network()
    sys.argv = [program]
    launcher = sys.modules["__main__"]  # noqa: keep alive
    module = types.ModuleType("__main__")
    module.__file__, module.__builtins__ = program, builtins
    sys.modules["__main__"] = module
    namespace = module.__dict__

    try:
        run_chunk(code, namespace, program)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            fail(f"the code exited with status {exc.code!r} before the tests ran")
        print("fmstack: note: the code called exit(0); running the tests anyway", file=sys.stderr)
    except BaseException as exc:
        print_trimmed(exc, program)
        fail(f"the code failed at {where(exc, program, start)}: {describe(exc)}")

    try:
        run_chunk(tests, namespace, program)
    except SystemExit as exc:
        lines = program_lines(exc, program)
        if not lines or lines[-1] < start:
            fail(f"the code called exit({exc.code!r}) while the tests ran")
        if exc.code is True:
            fail("unittest.main() reported failing tests (see stderr)")
        if exc.code not in (None, 0):
            fail(f"the tests exited with status {exc.code!r}")
        namespace = None  # unittest.main() ran the tests and exited: nothing left to collect
    except BaseException as exc:
        print_trimmed(exc, program)
        fail(f"test failed at {where(exc, program, start)}: {describe(exc)}")

    if namespace is not None:
        run_test_functions(namespace, config["test_functions"])
        run_test_classes(namespace, config["test_classes"])
    with open(config["marker"], "w") as f:
        f.write(config["token"])
    del launcher
    finish(0)


main()
'''
