"""The Python sandbox and the functional-correctness metrics built on it.

The hostile programs here (infinite loop, fork bomb, memory hog, network) must fail their case within the timeout
and leave no process behind, which is checked with `ps` after each.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fmstack.app.eval.metrics import Case, MetricContext, Output, get_metric
from fmstack.app.eval.metrics.functional import pass_at_k
from fmstack.app.eval.sandbox import extract_code, isolation, run_python
from fmstack.app.eval.suite import metric_label

CTX = MetricContext()
ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"


@pytest.fixture(scope="module")
def sandbox_root() -> Iterator[Path]:
    """A directory of our own for the sandboxes' workspaces, so `ps` finds our leftovers and not those of
    someone else running sandboxes on the same machine. World-traversable, like the system temp dir."""
    root = Path(tempfile.mkdtemp(prefix="fmstack-sbx-test-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def leftover_processes(root: Path) -> list[str]:
    """Processes our sandbox runs may have left: the command line names our workspace root."""
    table = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in table.splitlines()[1:] if str(root) in line]


@pytest.fixture(autouse=True)
def no_leftovers(sandbox_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(tempfile, "tempdir", str(sandbox_root))
    assert leftover_processes(sandbox_root) == []
    yield
    assert leftover_processes(sandbox_root) == []
    assert list(sandbox_root.iterdir()) == []  # every workspace was removed


def test_extract_code_prefers_python_blocks() -> None:
    answer = "Sure:\n```python\ndef f():\n    return 1\n```\nOutput:\n```\n1\n```\n"
    assert extract_code(answer) == "def f():\n    return 1"
    assert extract_code("```\nx = 1\n```") == "x = 1"
    assert extract_code("```py\nx = 1\n") == "x = 1"  # cut off at the token limit
    assert extract_code("x = 1") == "x = 1"


def test_correct_solution_passes_wrong_one_names_the_failing_test() -> None:
    ok = run_python(f"Here it is:\n```python\n{ADD}```\nHope it helps.", ADD_TESTS)
    assert ok.passed and ok.error is None and ok.duration_s < 5
    bad = run_python("def add(a, b):\n    return a - b", ADD_TESTS)
    assert not bad.passed
    assert bad.error == "test failed at tests line 1 `assert add(1, 2) == 3`: AssertionError"
    assert "AssertionError" in bad.stderr


UNITTEST_TESTS = """
import unittest

class T(unittest.TestCase):
    def test_pos(self):
        self.assertEqual(add(2, 2), 5)
"""


def test_unittest_and_pytest_style_tests_run_automatically() -> None:
    unit = UNITTEST_TESTS
    result = run_python(ADD, unit)
    assert not result.passed and "T.test_pos" in result.error and "4 != 5" in result.error
    assert run_python(ADD, unit.replace("5", "4") + "unittest.main()\n").passed
    plain = "def test_small():\n    assert add(1, 1) == 2\n\ndef test_big():\n    assert add(10, 10) == 21, 'big'\n"
    result = run_python(ADD, plain)
    assert not result.passed and result.error == "test_big failed: AssertionError: big"
    assert run_python(ADD, "def check(candidate):\n    assert candidate(2, 3) == 5\n\ncheck(add)\n").passed


def test_early_exit_cannot_skip_the_tests() -> None:
    assert not run_python("import sys\nsys.exit(0)", "assert False").passed  # tests still run
    result = run_python("import os\nos._exit(0)", "assert False")
    assert not result.passed and result.error == "the program exited before its tests finished"
    result = run_python("import sys\ndef add(a, b):\n    sys.exit(0)", "assert add(1, 2) == 3")
    assert not result.passed and "exit" in result.error


def test_syntax_error_is_reported() -> None:
    result = run_python("def add(a, b)\n    return a + b", ADD_TESTS)
    assert not result.passed and "SyntaxError" in result.error and "code line 1" in result.error


def test_infinite_loop_is_killed_at_the_timeout() -> None:
    result = run_python("while True:\n    pass", "", timeout_s=1.5)
    assert not result.passed and result.error == "timed out after 1.5s"
    assert 1.5 <= result.duration_s < 3


def test_fork_bomb_fails_and_leaves_no_process() -> None:
    box = isolation()
    if os.geteuid() == 0 and not box.own_uid:
        pytest.skip("as root without setpriv, RLIMIT_NPROC cannot stop a fork bomb: not run here")
    result = run_python("import os\nwhile True:\n    os.fork()", "", timeout_s=5)
    assert not result.passed
    assert result.duration_s < 6
    # (the autouse fixture checks with ps that nothing is left)


def test_background_processes_do_not_survive() -> None:
    grouped, escaped = (f"{random.randint(100, 999)}.{random.randint(10**5, 10**6)}" for _ in range(2))
    code = (
        "import subprocess\n"
        f"subprocess.Popen(['sleep', '{grouped}'])\n"
        f"subprocess.Popen(['setsid', 'sleep', '{escaped}'])  # leaves the process group\n"
    )
    assert run_python(code, "assert True").passed
    table = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert f"sleep {grouped}" not in table
    if isolation().pid_namespace:  # a process that left the process group dies with the pid namespace
        assert f"sleep {escaped}" not in table


def test_memory_hog_fails() -> None:
    result = run_python("x = bytearray(1024 * 1024 * 1024)", "", memory_mb=256)
    assert not result.passed and "MemoryError" in result.error


def test_network_is_unavailable() -> None:
    code = "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)"
    result = run_python(code, "")
    assert not result.passed and "network access is disabled" in result.error
    assert run_python("import socket\na, b = socket.socketpair()\na.send(b'x')", "assert b.recv(1) == b'x'").passed
    if isolation().network_namespace:  # below the guard: no interface to route through
        raw = "import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('1.1.1.1', 53))"
        result = run_python(raw, "")
        assert not result.passed and "unreachable" in result.error


def test_runs_in_a_temporary_directory_that_is_removed() -> None:
    result = run_python("import os\nopen('out.txt', 'w').write('x')\nprint(os.getcwd())", "")
    assert result.passed
    workdir = Path(result.stdout.strip())
    assert workdir.name == "work" and workdir.parent.name.startswith("fmstack-sbx-")
    assert workdir.parent.parent == Path(tempfile.gettempdir())
    assert not workdir.parent.exists()


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (1, 1, 1, 1.0),
        (10, 0, 1, 0.0),
        (10, 5, 1, 0.5),  # pass@1 is the fraction correct
        (200, 10, 1, 0.05),
        (10, 1, 5, 0.5),  # 1 - C(9,5)/C(10,5) = 1 - 126/252
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (4, 2, 3, 1.0),  # fewer than k wrong samples: some draw always contains a correct one
        (200, 10, 100, 0.9992289739372822),  # the Codex paper's numerically stable product form gives the same
    ],
)
def test_pass_at_k_estimator(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-9)


def test_pass_at_k_estimator_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_functional_metric() -> None:
    metric = get_metric("functional", {"timeout_s": 5, "threshold": 1})
    case = Case(id="c", tests=ADD_TESTS)
    good = metric.score(case, Output(text=f"```python\n{ADD}```"), CTX)
    assert (good.value, good.passed) == (1.0, True)
    bad = metric.score(case, Output(text="def add(a, b):\n    return 0"), CTX)
    assert (bad.value, bad.passed) == (0.0, False) and "assert add(1, 2) == 3" in bad.reason
    missing = metric.score(Case(id="c"), Output(text=ADD), CTX)
    assert missing.value is None and missing.error == "case has no tests"


def test_pass_at_k_metric_over_samples() -> None:
    metric = get_metric("pass_at_k", {"k": 2, "n": 4, "timeout_s": 5})
    assert (metric.samples, metric_label(metric)) == (4, "pass@2")
    wrong = "def add(a, b):\n    return a * b"
    output = Output(text=ADD, samples=[ADD, wrong, wrong, wrong])
    result = metric.score(Case(id="c", tests=ADD_TESTS), output, CTX)
    assert result.value == pytest.approx(pass_at_k(4, 1, 2)) == pytest.approx(0.5)
    assert result.reason.startswith("1/4 samples passed; sample 1:")
    too_few = metric.score(Case(id="c", tests=ADD_TESTS), Output(text=ADD, samples=[ADD]), CTX)
    assert too_few.value is None and "at least 2 samples" in too_few.error
    with pytest.raises(ValueError, match="at least k"):
        get_metric("pass_at_k", {"k": 3, "n": 2})
