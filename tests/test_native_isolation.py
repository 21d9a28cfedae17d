"""The native-isolation plugin (tests/native_isolation.py), for real: pytest runs in a subprocess.

Each test writes a small test file into a pytester directory and runs pytest on it in a
subprocess with ``-p tests.native_isolation``, so a crash of the child running the
``local_model`` tests can be observed from outside, as the parent pytest process would see it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.native_isolation import CHILD_ENV, MAX_CHILDREN, TIMEOUT_ENV

pytest_plugins = ["pytester"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]

INI = """
[pytest]
markers =
    local_model: runs the embedded local model
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""

# Appends "<kind> <pid>" to pids.txt in the pytester directory (the working directory of both
# the parent and the child).
RECORD_PID = """
import os

def record(kind):
    with open("pids.txt", "a") as f:
        f.write(f"{kind} {os.getpid()}\\n")
"""


@pytest.fixture
def isolated(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Run pytest in a subprocess on the pytester directory with the plugin loaded."""
    pytester.makeini(INI)
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    )
    monkeypatch.delenv(CHILD_ENV, raising=False)
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    monkeypatch.setenv("COLUMNS", "500")  # long enough for the summary lines not to be cut
    # Only the plugins these tests need, in the parent and (inherited) in the child: importing
    # hypothesis's plugin alone would double the time each pytest process takes.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")

    def run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess(
            "-p", "pytest_asyncio.plugin", "-p", "tests.native_isolation", "-rA", *args
        )

    return run


def pids(pytester: pytest.Pytester) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for line in (pytester.path / "pids.txt").read_text().splitlines():
        kind, pid = line.split()
        found.setdefault(kind, set()).add(int(pid))
    return found


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_native_crash_fails_only_that_test_and_the_rest_still_runs(pytester, isolated):
    pytester.makepyfile(
        recorder=RECORD_PID,
        test_crash="""
        import signal

        import pytest

        from recorder import record

        def test_normal():
            record("normal")

        @pytest.mark.local_model
        def test_local_passes():
            record("first")

        @pytest.mark.local_model
        def test_local_crashes():
            signal.raise_signal(signal.SIGILL)

        @pytest.mark.local_model
        def test_local_after_the_crash():
            record("after")

        @pytest.mark.local_model
        def test_local_skipped():
            pytest.skip("no model here")

        @pytest.mark.local_model
        @pytest.mark.skip(reason="skipped by marker")
        def test_local_skipped_by_marker():
            pass
        """,
    )
    result = isolated()

    # The pytest process itself survived and reported everything: exit code 1 (tests failed).
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=3, failed=1, skipped=2)
    assert "Fatal Python error" not in result.stderr.str()
    result.stdout.fnmatch_lines(
        [
            "PASSED test_crash.py::test_normal",
            "PASSED test_crash.py::test_local_passes",
            "PASSED test_crash.py::test_local_after_the_crash",
            "SKIPPED [[]1[]] test_crash.py:*: no model here",
            "SKIPPED [[]1[]] test_crash.py:*: skipped by marker",
            "FAILED test_crash.py::test_local_crashes - The test process running the local model "
            "(pid *) died with SIGILL (Illegal instruction) while running this test; native code "
            "crashed*",
        ],
        consecutive=True,
    )
    # The failure quotes the child's stderr: faulthandler's report of the crash.
    result.stdout.fnmatch_lines(
        [
            "Its stderr, from faulthandler's report on:",
            "    Fatal Python error: Illegal instruction",
            '*File "*test_crash.py", line * in test_local_crashes',
        ]
    )
    # The test after the crash ran in a second child, neither in the first nor in pytest itself.
    found = pids(pytester)
    assert len({*found["normal"], *found["first"], *found["after"]}) == 3


def test_a_failing_local_model_test_is_an_ordinary_failure(pytester, isolated):
    pytester.makepyfile(
        test_fails="""
        import pytest

        @pytest.mark.local_model
        def test_local_fails():
            answer = 41
            print("captured in the child")
            assert answer == 42, "the model got it wrong"
        """
    )
    result = isolated()

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*def test_local_fails():*",
            "E       AssertionError: the model got it wrong",
            "E       assert 41 == 42",
            "*Captured stdout call*",
            "captured in the child",
            "FAILED test_fails.py::test_local_fails - AssertionError: the model got it wrong*",
        ]
    )
    assert "test process" not in result.stdout.str()


def test_local_model_tests_share_one_child_process(pytester, isolated):
    pytester.makepyfile(
        recorder=RECORD_PID,
        test_one="""
        import pytest

        from recorder import record

        def test_normal():
            record("normal")

        @pytest.mark.local_model
        def test_local_one():
            record("local")
        """,
        test_two="""
        import asyncio

        import pytest

        from recorder import record

        pytestmark = pytest.mark.local_model

        @pytest.fixture(scope="module")
        def model():
            return "loaded once"

        @pytest.mark.parametrize("n", [1, 2])
        def test_local_parametrized(model, n):
            record("local")

        async def test_local_async(model):  # pytest-asyncio's auto mode works in the child
            await asyncio.sleep(0)
            record("local")
        """,
    )
    result = isolated()

    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=5)
    found = pids(pytester)
    assert len(found["local"]) == 1
    assert found["local"] != found["normal"]


def test_no_isolate_native_runs_local_model_tests_in_the_pytest_process(pytester, isolated):
    pytester.makepyfile(
        recorder=RECORD_PID,
        test_inline="""
        import pytest

        from recorder import record

        def test_normal():
            record("normal")

        @pytest.mark.local_model
        def test_local():
            record("local")
        """,
    )
    result = isolated("--no-isolate-native")

    result.assert_outcomes(passed=2)
    found = pids(pytester)
    assert found["local"] == found["normal"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_after_too_many_crashes_the_remaining_tests_fail_without_running(pytester, isolated):
    pytester.makepyfile(
        test_crashes="""
        import signal

        import pytest

        pytestmark = pytest.mark.local_model

        @pytest.mark.parametrize("n", range(4))
        def test_crashes(n):
            signal.raise_signal(signal.SIGSEGV)

        def test_never_reached():
            pass
        """
    )
    result = isolated("-p", "no:faulthandler")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # MAX_CHILDREN crashes, each costing one test; the rest are not run: errors at setup.
    result.assert_outcomes(failed=MAX_CHILDREN, errors=5 - MAX_CHILDREN)
    crashes = [line for line in result.outlines if line.startswith("The test process running")]
    assert len(crashes) == MAX_CHILDREN
    assert all(
        "died with SIGSEGV (Segmentation fault) while running this test" in c for c in crashes
    )
    result.stdout.fnmatch_lines(
        [
            "ERROR test_crashes.py::test_crashes[[]3[]] - Not run: the test process running the "
            "local model ended abnormally 3 times*",
            "ERROR test_crashes.py::test_never_reached - Not run:*",
        ]
    )
    result.stdout.fnmatch_lines(
        ["*The last time, it died with SIGSEGV*(call of test_crashes.py::test_crashes[[]2[]])*"]
    )


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_hanging_child_is_killed_on_timeout(pytester, isolated, monkeypatch):
    monkeypatch.setenv(TIMEOUT_ENV, "4")  # room for the child to start on a loaded machine
    pytester.makepyfile(
        test_hangs="""
        import time

        import pytest

        @pytest.mark.local_model
        def test_hangs():
            time.sleep(60)
        """
    )
    result = isolated()

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    # (On a slow machine the timeout may strike before the test starts: don't insist on "while
    # running this test".)
    result.stdout.fnmatch_lines(
        [
            "FAILED test_hangs.py::test_hangs - The test process running the local model (pid *) "
            "was killed after the 4 s timeout (QWENLOOP_ISOLATION_TIMEOUT)*"
        ]
    )
