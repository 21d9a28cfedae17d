"""Run the tests marked ``local_model`` in a child pytest process, so a native crash fails only them.

The local model runs llama.cpp, native code. On some machines its first decode executes an
instruction the CPU does not allow and the process dies with SIGILL, which no Python code can
catch: run in the pytest process, it would take the whole session down with it and report nothing.

So this plugin, loaded from ``tests/conftest.py``, takes over ``pytest_runtest_protocol`` for every
item marked ``local_model``:

* When the first such item is reached, ONE child ``python -m pytest`` is started for all of the
  session's (selected) ``local_model`` items, in collection order (they share a 1.1 GB model, which
  a process per test would load again and again). The child runs them normally: the environment
  variable ``QWENLOOP_ISOLATED_CHILD`` tells this plugin, loaded there too, not to isolate again,
  and makes it write every ``TestReport`` as a JSON line to a file (flushed line by line).
* For each item the parent waits for its reports in that file, rebuilds them as ``TestReport`` and
  logs them through the usual hooks, so the terminal, ``-ra``, junitxml, ``--lf`` and exit status
  treat them like any other test. The child runs ahead; its output goes to files, not the terminal.
* If the child dies (a signal, an unexpected exit, or the ``QWENLOOP_ISOLATION_TIMEOUT`` timeout,
  1800 s by default), the test it was running fails with a message naming the signal and quoting
  the end of the child's stderr (faulthandler's traceback); the tests it never reached go to a new
  child. At most ``MAX_CHILDREN`` children are started per session; after that the remaining
  ``local_model`` tests fail without running.

``--no-isolate-native`` runs the tests in the pytest process as usual (to debug them, say).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

MARKER = "local_model"
CHILD_ENV = "QWENLOOP_ISOLATED_CHILD"
"""Set in the child's environment: the plugin there runs tests normally and reports them."""
REPORTS_ENV = "QWENLOOP_ISOLATION_REPORTS"
"""Set in the child's environment: the file the child appends its JSON-line reports to."""
TIMEOUT_ENV = "QWENLOOP_ISOLATION_TIMEOUT"
DEFAULT_TIMEOUT = 1800.0
MAX_CHILDREN = 3
STDERR_TAIL_LINES = 30
ABORT_GRACE = 5.0  # seconds a timed-out child has to print its traceback before it is killed
FINISH_GRACE = 10.0  # seconds a child that has reported all its tests has to exit by itself
POLL_INTERVAL = 0.05
GUARD = "agent/models/cpu_guard.py"

Phase = Literal["setup", "call", "teardown"]


# ---------------------------------------------------------------------------------------------
# Hooks of the plugin module itself: pick the parent or the child role.
# ---------------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--no-isolate-native``."""
    parser.getgroup("qwenloop").addoption(
        "--no-isolate-native",
        action="store_true",
        default=False,
        help=f"run tests marked {MARKER} in the pytest process instead of a child process",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the child's reporter or the parent's runner, as the environment says."""
    if os.environ.get(CHILD_ENV):
        _disable_core_dumps()
        reports = os.environ.get(REPORTS_ENV)
        if reports:
            config.pluginmanager.register(_ChildReporter(config, reports), "native-isolation-child")
        return
    # getoption with a default: if this plugin was registered late (from a conftest that was not
    # an initial one), its option was never parsed.
    if config.getoption("no_isolate_native", False):
        return
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        timeout = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        raise pytest.UsageError(f"{TIMEOUT_ENV} must be a number of seconds, not {raw!r}") from None
    config.pluginmanager.register(_IsolationRunner(config, timeout), "native-isolation-runner")


def item_key(item: pytest.Item) -> str:
    """Name an item the same way in the parent and the child, and select it on a command line.

    Node ids are relative to the rootdir or to the initial paths, which may differ between the
    parent's and the child's command lines; the test file's absolute path does not.

    Args:
        item: A collected test item.

    Returns:
        ``/abs/path/test_file.py::Class::test_name[param]``, usable as a pytest argument.
    """
    _, sep, names = item.nodeid.partition("::")
    return f"{item.path}::{names}" if sep else str(item.path)


def _disable_core_dumps() -> None:
    # A crashing child holding a 1.1 GB model would otherwise write a core file that size.
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    with contextlib.suppress(ValueError, OSError):
        _, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))


# ---------------------------------------------------------------------------------------------
# The child: report every TestReport as a JSON line.
# ---------------------------------------------------------------------------------------------


class _ChildReporter:
    """Writes ``start`` and ``report`` events as JSON lines, flushed one by one.

    A ``start`` line before each item lets the parent tell which test was running when the
    process died, even if it died before the setup report was written.
    """

    def __init__(self, config: pytest.Config, path: str) -> None:
        self._config = config
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in unconfigure
        self._keys: dict[str, str] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._keys = {item.nodeid: item_key(item) for item in session.items}

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self._write({"event": "start", "key": self._keys.get(nodeid, nodeid)})

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # The same serialization pytest-xdist uses: it keeps the structured traceback, the
        # captured output sections, skip locations and xfail information.
        data = self._config.hook.pytest_report_to_serializable(config=self._config, report=report)
        key = self._keys.get(report.nodeid, report.nodeid)
        self._write({"event": "report", "key": key, "report": data})

    def pytest_unconfigure(self) -> None:
        self._file.close()

    def _write(self, event: dict[str, Any]) -> None:
        # default=str: user_properties may hold objects JSON cannot encode.
        self._file.write(json.dumps(event, default=str) + "\n")
        self._file.flush()


# ---------------------------------------------------------------------------------------------
# The parent: one child per batch of items, its reports replayed as the items come up.
# ---------------------------------------------------------------------------------------------


class _Child:
    """One child pytest process running a batch of items, and what it has reported so far."""

    def __init__(
        self, config: pytest.Config, items: list[pytest.Item], workdir: Path, timeout: float
    ) -> None:
        self.items = items
        self.keys = [item_key(item) for item in items]
        self.pending = set(self.keys)  # keys whose reports the parent has not taken yet
        self.timeout = timeout
        workdir.mkdir(parents=True)
        self.reports_path = workdir / "reports.jsonl"
        self.stdout_path = workdir / "stdout.txt"
        self.stderr_path = workdir / "stderr.txt"
        self.reports_path.touch()
        self.started: list[str] = []  # keys in the order the child started them
        self.reports: dict[str, dict[str, dict[str, Any]]] = {}  # key -> when -> serialized
        self.timed_out = False
        self._offset = 0
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                _child_command(config, self.keys),
                cwd=config.invocation_params.dir,
                env=_child_env(self.reports_path),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        self._deadline = time.monotonic() + timeout

    def finished(self, key: str) -> bool:
        """Whether the child has reported the item's teardown (its last report)."""
        return "teardown" in self.reports.get(key, {})

    def wait_for(self, key: str) -> bool:
        """Wait until the item is finished or the child has ended.

        Returns:
            True if the item's reports are all in, False if the child ended (or was killed on
            timeout) without finishing it.
        """
        while True:
            self._read()
            if self.finished(key):
                return True
            if self.proc.poll() is not None:
                self._read()  # whatever it wrote just before exiting
                return self.finished(key)
            if time.monotonic() > self._deadline:
                self.timed_out = True
                self.stop(dump_traceback=True)
                self._read()
                return self.finished(key)
            time.sleep(POLL_INTERVAL)

    def stop(self, wait: float = 0.0, dump_traceback: bool = False) -> None:
        """Kill the child if it is still running and reap it.

        Args:
            wait: Seconds to let it exit by itself first (it has reported all its tests and
                is only winding down, say).
            dump_traceback: Send SIGABRT before killing it: faulthandler then prints where
                every thread of the child is (which shows where a hung test hangs).
        """
        if self.proc.poll() is None and wait > 0:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait)
        if self.proc.poll() is None and dump_traceback and hasattr(signal, "SIGABRT"):
            self.proc.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(ABORT_GRACE)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def running(self) -> str | None:
        """The key of the item the child had started but not finished, if any."""
        for key in reversed(self.started):
            if not self.finished(key):
                return key
        return None

    def output_excerpt(self) -> str:
        """What the child wrote last: faulthandler's crash report, or its last lines.

        faulthandler prints the innermost frame first, so after a crash the useful lines are at
        the start of its report ("Fatal Python error: ..."), not at the end of stderr.
        """
        for path, name in ((self.stderr_path, "stderr"), (self.stdout_path, "stdout")):
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - 256 * 1024))
                lines = f.read().decode("utf-8", "replace").splitlines()
            fatal = [i for i, line in enumerate(lines) if line.startswith("Fatal Python error")]
            if fatal:
                excerpt = lines[fatal[-1] : fatal[-1] + STDERR_TAIL_LINES]
                title = f"Its {name}, from faulthandler's report on"
            else:
                excerpt = lines[-STDERR_TAIL_LINES:]
                title = f"Last lines of its {name}"
            if any(line.strip() for line in excerpt):
                return f"{title}:\n" + "\n".join("    " + line for line in excerpt)
        return "It wrote nothing to stderr or stdout."

    def _read(self) -> None:
        # Only complete lines: a crash may cut the last one short.
        with open(self.reports_path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        for line in chunk[:end].splitlines():
            event = json.loads(line)
            if event["event"] == "start":
                self.started.append(event["key"])
            else:
                self.reports.setdefault(event["key"], {})[event["report"]["when"]] = event["report"]


def _child_command(config: pytest.Config, keys: list[str]) -> list[str]:
    command = [sys.executable, "-m", "pytest", *keys, "-q", "--rootdir", str(config.rootpath)]
    if config.inipath is not None:
        command += ["-c", str(config.inipath)]
    # This plugin (as the child's reporter), and the parent's own -p plugins.
    plugins = [__name__, "no:cacheprovider"]
    plugins += [p for p in config.option.plugins or () if p not in plugins]
    for plugin in plugins:
        command += ["-p", plugin]
    for override in config.option.override_ini or ():
        command += ["-o", override]
    for warning in config.option.pythonwarnings or ():
        command += ["-W", warning]
    # Undo any -m/-k in the ini's addopts: the parent has selected the items already.
    command += ["-m", "", "-k", "", f"--tb={config.option.tbstyle}"]
    return command


def _child_env(reports_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env[CHILD_ENV] = "1"
    env[REPORTS_ENV] = str(reports_path)
    # Make this module importable in the child whatever its working directory: prepend the
    # directory its top-level package lives in (/work/main for tests.native_isolation).
    root = Path(__file__).absolute().parents[__name__.count(".")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    return env


class _IsolationRunner:
    """The parent's side: runs ``local_model`` items through children and replays their reports."""

    def __init__(self, config: pytest.Config, timeout: float) -> None:
        self._config = config
        self._timeout = timeout
        self._planned = False
        self._unassigned: list[pytest.Item] = []  # items no child has been given yet
        self._decided: dict[str, list[pytest.TestReport]] = {}  # reports made without asking
        # Children still to be reaped. Normally at most one; a second only if an item comes up
        # again (a rerun plugin) while the first still has tests to report.
        self._live: list[_Child] = []
        self._children = 0  # children started in this session
        self._last_failure = ""  # why the last child ended early, for the crash-limit message
        self._tmp: Path | None = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> bool | None:
        if item.get_closest_marker(MARKER) is None:
            return None
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        for report in self._reports_for(item):
            item.ihook.pytest_runtest_logreport(report=report)
        teardown = self._parent_teardown(item, nextitem)
        if teardown is not None:
            item.ihook.pytest_runtest_logreport(report=teardown)
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def pytest_sessionfinish(self) -> None:
        # A child may still be running items the parent will never ask for (-x, Ctrl-C): kill
        # it. One that has reported everything is only winding down: let it finish.
        for child in self._live:
            child.stop(wait=0 if child.pending else FINISH_GRACE)
        self._live.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _reports_for(self, item: pytest.Item) -> list[pytest.TestReport]:
        key = item_key(item)
        if not self._planned:
            # The first local_model item: the whole batch, as selected, in collection order.
            self._planned = True
            self._unassigned = [i for i in item.session.items if i.get_closest_marker(MARKER)]
        while True:
            if key in self._decided:
                return self._decided.pop(key)
            child = next((c for c in self._live if key in c.pending), None)
            if child is not None:
                if child.wait_for(key):
                    child.pending.discard(key)  # taken: a rerun of the item gets a new child
                    return [self._rebuild(item, data) for data in _phases(child.reports[key])]
                self._child_ended(child)
                continue
            # Not given to any child yet (or run before, with a rerun plugin): a new child.
            if all(i is not item for i in self._unassigned):
                self._unassigned.insert(0, item)
            if self._children >= MAX_CHILDREN:
                for other in self._unassigned:
                    self._decided[item_key(other)] = _failed(other, "setup", self._limit_message())
                self._unassigned = []
                continue
            self._start_child()

    def _start_child(self) -> None:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="qwenloop-native-isolation-"))
        for old in [c for c in self._live if not c.pending]:
            old.stop(wait=FINISH_GRACE)  # all its tests reported: it is only winding down
            self._live.remove(old)
        self._children += 1
        items, self._unassigned = self._unassigned, []
        workdir = self._tmp / f"child-{self._children}"
        self._live.append(_Child(self._config, items, workdir, self._timeout))

    def _child_ended(self, child: _Child) -> None:
        """Settle every item of a child that ended before reporting them all."""
        child.stop()
        self._live.remove(child)
        victim = child.running()
        unreached: list[pytest.Item] = []
        for item, key in zip(child.items, child.keys, strict=True):
            if key not in child.pending:
                continue
            if child.finished(key):
                # Finished but not yet replayed (the child runs ahead): keep its reports.
                reports = _phases(child.reports[key])
                self._decided[key] = [self._rebuild(item, data) for data in reports]
            elif victim is None or key == victim:
                # The test it was running, or if none had started, the first one it owed.
                victim = key
                self._decided[key] = self._crash_reports(child, item, key)
            else:
                unreached.append(item)
        # The tests it never reached go to a new child; keep collection order.
        self._unassigned = unreached + self._unassigned
        child.pending.clear()

    def _crash_reports(self, child: _Child, item: pytest.Item, key: str) -> list[pytest.TestReport]:
        """The reports for the item that was running when the child died."""
        done = child.reports.get(key, {})
        if not child.started:
            phase: Phase = "setup"
            where = "before running any test (while starting up or collecting)"
        elif key not in child.started:
            phase, where = "setup", "before this test started"
        elif "setup" not in done:
            phase, where = "setup", "during this test's setup"
        elif done["setup"]["outcome"] == "passed" and "call" not in done:
            phase, where = "call", "while running this test"
        else:
            phase, where = "teardown", "during this test's teardown"

        rc = child.proc.returncode
        if child.timed_out:
            what = f"was killed after the {child.timeout:g} s timeout ({TIMEOUT_ENV})"
            how = f"{what} {where}; it hung or was far too slow."
        elif rc < 0 and -rc == getattr(signal, "SIGKILL", None):
            what = f"died with {_signal_text(-rc)}"
            how = f"{what} {where}; something killed it (the out-of-memory killer, say)."
        elif rc < 0:
            what = f"died with {_signal_text(-rc)}"
            how = f"{what} {where}; native code crashed (see the guard in {GUARD})."
        else:
            what = f"exited with code {rc}"
            how = f"{what} {where} without reporting the test's result."
        paragraph = f"The test process running the local model (pid {child.proc.pid}) {how}"
        self._last_failure = f"it {what} ({phase} of {item.nodeid})."
        text = f"{paragraph}\n\n{child.output_excerpt()}"
        # What the child did report (a passed setup, say), then the failure of the phase it died in.
        return [self._rebuild(item, data) for data in _phases(done)] + _failed(item, phase, text)

    def _limit_message(self) -> str:
        return (
            f"Not run: the test process running the local model ended abnormally "
            f"{self._children} times in this session ({MAX_CHILDREN} processes at most), so the "
            f"remaining local-model tests were not started. The last time, "
            f"{self._last_failure or 'see the failures above.'}"
        )

    def _rebuild(self, item: pytest.Item, data: dict[str, Any]) -> pytest.TestReport:
        report = self._config.hook.pytest_report_from_serializable(config=self._config, data=data)
        # Name it after the parent's item, whatever the child's node id looked like.
        report.nodeid, report.location = item.nodeid, item.location
        if report.skipped and isinstance(report.longrepr, list):
            report.longrepr = tuple(report.longrepr)  # JSON made the (path, lineno, reason) a list
        return report

    def _parent_teardown(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> pytest.TestReport | None:
        """Tear down the parent's fixtures that the next item does not need, as pytest would.

        The child set up and tore down everything the item used, but the parent's setup state
        still holds the scopes (module, class, ...) of the tests before it; without this the next
        test in another module would find them not torn down. Returns a report only on error.
        """
        if item.session.shouldfail or item.session.shouldstop:
            nextitem = None  # as pytest's runtestprotocol does
        # _setupstate is private, but it is what pytest's own pytest_runtest_teardown calls.
        call = pytest.CallInfo.from_call(
            lambda: item.session._setupstate.teardown_exact(nextitem),
            when="teardown",
            reraise=(pytest.exit.Exception, KeyboardInterrupt),
        )
        if call.excinfo is None:
            return None
        report: pytest.TestReport = item.ihook.pytest_runtest_makereport(item=item, call=call)
        return report


def _phases(reports: dict[str, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for when in ("setup", "call", "teardown"):
        if when in reports:
            yield reports[when]


def _signal_text(signum: int) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
    description = signal.strsignal(signum)
    return f"{name} ({description})" if description else name


def _report(
    item: pytest.Item, when: Phase, outcome: Literal["passed", "failed"], longrepr: str | None
) -> pytest.TestReport:
    now = time.time()
    return pytest.TestReport(
        nodeid=item.nodeid,
        location=item.location,
        keywords=dict.fromkeys(item.keywords, 1),
        outcome=outcome,
        longrepr=longrepr,
        when=when,
        start=now,
        stop=now,
    )


def _failed(item: pytest.Item, when: Phase, text: str) -> list[pytest.TestReport]:
    reports = [_report(item, when, "failed", text)]
    if when != "teardown":
        reports.append(_report(item, "teardown", "passed", None))
    return reports
