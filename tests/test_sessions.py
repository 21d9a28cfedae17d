"""Sessions: conversations kept in SQLite across runs and processes, whole turns only, one run at a time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest

from agent import Agent, RunEndEvent, tool
from agent.errors import SessionBusyError, SessionError
from agent.sessions import Session, SQLiteSession, default_sessions_path
from agent.testing import (
    error_reply,
    stream_text_reply,
    stream_tool_calls_reply,
    text_reply,
    tool_call_reply,
    tool_calls_reply,
)

TOOLS = '''
import os
import time
from pathlib import Path


def quick() -> str:
    """Answer at once."""
    return "quick result"


def block() -> str:
    """Wait a long time."""
    Path(os.environ["QWENLOOP_TEST_STARTED"]).write_text(str(os.getpid()))
    time.sleep(120)
    return "never"
'''


def rows(path):
    """The stored messages as (session, turn, message), straight from the file."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        found = db.execute("SELECT session_id, turn, message FROM messages ORDER BY id").fetchall()
    return [(s, t, json.loads(m)) for s, t, m in found]


def lock_rows(path):
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT session_id, pid FROM locks").fetchall()


def non_system(messages):
    return [m for m in messages if m["role"] != "system"]


def brief(messages):
    return [(m["role"], m.get("content")) for m in non_system(messages)]


def assert_whole_turns(messages):
    """Every assistant tool call is followed by its result, and no result lacks its call."""
    open_calls: set[str] = set()
    for m in messages:
        if m["role"] == "tool":
            assert m["tool_call_id"] in open_calls, f"a tool result without its call: {m}"
            open_calls.discard(m["tool_call_id"])
        else:
            assert not open_calls, f"tool calls without results: {open_calls}"
            open_calls = {c["id"] for c in m.get("tool_calls") or []}
    assert not open_calls, f"tool calls without results at the end: {open_calls}"


def cli_env(server, store, **extra):
    return {
        **os.environ,
        "PYTHONPATH": os.getcwd(),
        "QWENLOOP_BASE_URL": server.url,
        "QWENLOOP_API_KEY": "k",
        "QWENLOOP_SESSIONS": str(store),
        **extra,
    }


def run_cli(args, env, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def child(args, env):
    """A `qwenloop` process, killed and reaped however the test ends."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


async def wait_for_file(path, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the child ended early ({proc.returncode}): {err.decode()}")
        if time.monotonic() > deadline:
            pytest.fail("the child's tool never started")
        await asyncio.sleep(0.05)


async def test_a_conversation_continues_across_runs_and_into_a_second_process(
    openai_server, make_agent, tmp_path
):
    store = tmp_path / "sessions.db"
    session = SQLiteSession(store, "chat")
    assert isinstance(session, Session)
    openai_server.script(text_reply("Hello Ada."), text_reply("Ada."), text_reply("Still Ada."))
    agent = make_agent()
    await agent.run("My name is Ada.", session=session)
    result = await agent.run("What is my name?", session=SQLiteSession(store, "chat"))
    assert result.output == "Ada."
    second = openai_server.requests[1].json["messages"]
    assert brief(second) == [
        ("user", "My name is Ada."),
        ("assistant", "Hello Ada."),
        ("user", "What is my name?"),
    ]
    proc = await asyncio.to_thread(
        run_cli, ["run", "And now?", "--session", "chat"], cli_env(openai_server, store)
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Still Ada."
    third = openai_server.requests[2].json["messages"]
    assert brief(third)[:4] == [*brief(second), ("assistant", "Ada.")]
    assert brief(third)[4:] == [("user", "And now?")]
    stored = await session.load()
    assert brief(stored) == [*brief(third), ("assistant", "Still Ada.")]
    assert [t for _, t, _ in rows(store)] == [1, 1, 2, 2, 3, 3]
    assert lock_rows(store) == []


async def test_kill_9_mid_tool_leaves_whole_turns_and_the_lock_is_taken_over(
    openai_server, make_agent, tmp_path
):
    store = tmp_path / "sessions.db"
    tools = tmp_path / "slow.py"
    tools.write_text(TOOLS)
    started = tmp_path / "started"
    openai_server.script(
        text_reply("hi"),  # run 1, in this process
        tool_call_reply("quick", {}),  # run 2, in the child: turn 1 completes
        tool_call_reply("block", {}),  # turn 2: its tool never returns
    )
    agent = make_agent()
    await agent.run("hello", session=SQLiteSession(store, "chat"))
    env = cli_env(openai_server, store, QWENLOOP_TEST_STARTED=str(started))
    args = ["run", "go on", "--session", "chat", "--tool", f"{tools}:quick"]
    with child([*args, "--tool", f"{tools}:block"], env) as proc:
        await wait_for_file(started, proc)
        # Across processes: the child holds the session, so this run is refused at once.
        with pytest.raises(SessionBusyError, match=rf"'chat'.*process {proc.pid}\b"):
            await agent.run("me too", session=SQLiteSession(store, "chat"))
        with pytest.raises(SessionBusyError):
            SQLiteSession.delete(store, "chat")
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 30)
    assert proc.returncode == -signal.SIGKILL
    assert lock_rows(store) == [("chat", proc.pid)]  # left behind by the killed run
    stored = await SQLiteSession(store, "chat").load()
    assert_whole_turns(stored)
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant", "tool"]
    assert stored[3]["tool_calls"][0]["function"]["name"] == "quick"
    assert stored[4]["content"] == "quick result"
    # The dead run's lock is stale: the next run takes it and sees the last complete turn.
    openai_server.script(text_reply("back"))
    result = await agent.run("still there?", session=SQLiteSession(store, "chat"))
    assert result.output == "back"
    sent = brief(openai_server.requests[-1].json["messages"])
    assert sent == [*brief(stored), ("user", "still there?")]
    assert lock_rows(store) == []


async def test_a_second_run_in_the_same_process_is_refused_not_interleaved(
    openai_server, make_agent, tmp_path
):
    store = tmp_path / "sessions.db"
    started, release = asyncio.Event(), asyncio.Event()

    @tool
    async def wait() -> str:
        """Wait until released."""
        started.set()
        await release.wait()
        return "released"

    openai_server.script(tool_call_reply("wait", {}), text_reply("done"))
    agent = make_agent(wait)
    session = SQLiteSession(store, "chat")
    first = asyncio.create_task(agent.run("one", session=session))
    await asyncio.wait_for(started.wait(), 30)
    with pytest.raises(SessionBusyError, match=rf"'chat'.*this process \({os.getpid()}\)"):
        await agent.run("two", session=SQLiteSession(store, "chat"))
    with pytest.raises(SessionBusyError):
        await agent.run("two", session=session)  # the same object is no way round it
    with pytest.raises(SessionBusyError):
        async for _ in agent.stream("two", session=session):
            pass
    with pytest.raises(SessionBusyError):
        await SQLiteSession(store, "chat").append([{"role": "user", "content": "sneaked in"}])
    await SQLiteSession(store, "other").append([{"role": "user", "content": "elsewhere"}])
    release.set()
    assert (await first).output == "done"
    assert len(openai_server.requests) == 2  # the refused runs sent nothing
    assert brief(await session.load()) == [
        ("user", "one"),
        ("assistant", None),
        ("tool", "released"),
        ("assistant", "done"),
    ]
    openai_server.script(text_reply("free again"))
    assert (await agent.run("three", session=session)).output == "free again"


async def test_a_second_process_is_refused_while_a_run_holds_the_session(openai_server, tmp_path):
    store = tmp_path / "sessions.db"
    session = SQLiteSession(store, "chat")
    async with session.lock():
        proc = await asyncio.to_thread(
            run_cli, ["run", "hi", "--session", "chat"], cli_env(openai_server, store)
        )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "'chat' is in use" in proc.stderr and f"process {os.getpid()}" in proc.stderr
    assert openai_server.requests == []
    assert lock_rows(store) == []


async def test_a_tool_call_and_its_results_are_committed_as_one_turn(
    openai_server, make_agent, tmp_path
):
    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    store = tmp_path / "sessions.db"
    openai_server.script(
        tool_calls_reply([("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4})]),
        text_reply("3 and 7."),
    )
    result = await make_agent(add).run("Add.", session=SQLiteSession(store, "s"))
    stored = rows(store)
    assert [(t, m["role"]) for _, t, m in stored] == [
        (1, "user"),
        (1, "assistant"),
        (1, "tool"),
        (1, "tool"),
        (2, "assistant"),
    ]
    calls = stored[1][2]["tool_calls"]
    assert [m["tool_call_id"] for _, _, m in stored[2:4]] == [c["id"] for c in calls]
    assert [m for _, _, m in stored] == non_system(result.messages)


async def test_a_failed_run_keeps_its_completed_turns_and_frees_the_session(
    openai_server, make_agent, tmp_path
):
    @tool
    def echo(text: str) -> str:
        """Echo the text."""
        return text

    store = tmp_path / "sessions.db"
    openai_server.script(
        tool_call_reply("echo", {"text": "x"}), error_reply(400, "bad request", type="invalid")
    )
    agent = make_agent(echo)
    session = SQLiteSession(store, "s")
    with pytest.raises(Exception, match="bad request"):
        await agent.run("go", session=session)
    assert [m["role"] for m in await session.load()] == ["user", "assistant", "tool"]
    assert lock_rows(store) == []


async def test_stream_with_a_session_stores_what_run_would(openai_server, make_agent, tmp_path):
    @tool
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    store = tmp_path / "sessions.db"
    openai_server.script(
        stream_tool_calls_reply([("shout", {"text": "a"})]), stream_text_reply("A it is.")
    )
    session = SQLiteSession(store, "s")
    events = [e async for e in make_agent(shout).stream("go", session=session)]
    assert isinstance(events[-1], RunEndEvent)
    assert await session.load() == non_system(events[-1].result.messages)
    assert [t for _, t, _ in rows(store)] == [1, 1, 1, 2]


def test_run_sync_with_a_session(openai_server, tmp_path):
    store = tmp_path / "sessions.db"
    openai_server.script(text_reply("one"), text_reply("two"))
    agent = Agent("qwen-plus", base_url=openai_server.url, api_key="k")
    agent.run_sync("first", session=SQLiteSession(store, "s"))
    assert agent.run_sync("second", session=SQLiteSession(store, "s")).output == "two"
    assert brief(openai_server.requests[1].json["messages"]) == [
        ("user", "first"),
        ("assistant", "one"),
        ("user", "second"),
    ]
    infos = SQLiteSession.list_sessions(store)
    assert [(i.id, i.messages) for i in infos] == [("s", 4)]


async def test_messages_round_trip_exactly(tmp_path):
    session = SQLiteSession(tmp_path / "s.db", "会话 ✓")
    turn = [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "你好, naïve café 🙂",
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "先想一想\n",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"x": 1.5}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "\u0000 nul and \t tab"},
    ]
    await session.append(turn)
    await session.append([{"role": "assistant", "content": "ok", "n": 0.1, "big": 2**62}])
    loaded = await session.load()
    assert loaded == [*turn, {"role": "assistant", "content": "ok", "n": 0.1, "big": 2**62}]
    assert [i.id for i in SQLiteSession.list_sessions(tmp_path / "s.db")] == ["会话 ✓"]
    await session.clear()
    assert await session.load() == []
    assert SQLiteSession.list_sessions(tmp_path / "s.db") == []


async def test_a_turn_that_cannot_be_stored_is_not_stored_at_all(tmp_path):
    session = SQLiteSession(tmp_path / "s.db", "s", max_message_bytes=1000)
    await session.append([{"role": "user", "content": "kept"}])
    with pytest.raises(SessionError, match="over the limit of 1000"):
        await session.append(
            [{"role": "assistant", "content": "ok"}, {"role": "tool", "content": "x" * 2000}]
        )
    with pytest.raises(SessionError, match="cannot be stored as JSON"):
        await session.append(
            [{"role": "assistant", "content": "ok"}, {"role": "tool", "content": {1, 2}}]
        )
    with pytest.raises(SessionError, match="cannot be stored as JSON"):
        await session.append([{"role": "assistant", "content": float("nan")}])
    assert await session.load() == [{"role": "user", "content": "kept"}]


async def test_a_broken_store_is_a_session_error_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, not at all" * 100)
    with pytest.raises(SessionError, match=r"garbage\.db"):
        await SQLiteSession(garbage, "s").load()
    with pytest.raises(SessionError, match=r"garbage\.db"):
        async with SQLiteSession(garbage, "s").lock():
            pass
    with pytest.raises(SessionError, match=r"garbage\.db"):
        SQLiteSession.list_sessions(garbage)

    foreign = tmp_path / "foreign.db"
    with contextlib.closing(sqlite3.connect(foreign)) as db:
        db.execute("CREATE TABLE accounts (id INTEGER)")
    with pytest.raises(SessionError, match="not qwenloop's"):
        await SQLiteSession(foreign, "s").load()

    store = tmp_path / "s.db"
    session = SQLiteSession(store, "s")
    await session.append([{"role": "user", "content": "fine"}])
    with contextlib.closing(sqlite3.connect(store)) as db, db:
        db.execute("INSERT INTO messages (session_id, turn, message) VALUES ('s', 2, '{not json')")
    with pytest.raises(SessionError, match="corrupt"):
        await session.load()
    with contextlib.closing(sqlite3.connect(store)) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(SessionError, match="newer"):
        await session.load()


async def test_which_lock_rows_are_stale(tmp_path):
    store = tmp_path / "s.db"
    session = SQLiteSession(store, "s")
    await session.append([{"role": "user", "content": "x"}])
    sleeper = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(60)"
    )
    gone = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await asyncio.wait_for(gone.wait(), 30)
    try:
        from agent.sessions import _HOST, _identity

        def holder(pid, host=_HOST, identity=""):
            with contextlib.closing(sqlite3.connect(store)) as db, db:
                db.execute(
                    "INSERT OR REPLACE INTO locks VALUES ('s', ?, ?, ?, ?, ?)",
                    (uuid.uuid4().hex, pid, host, identity, time.time()),
                )

        holder(sleeper.pid, identity=_identity(sleeper.pid) or "")
        with pytest.raises(SessionBusyError, match=rf"process {sleeper.pid} on"):
            async with session.lock():
                pass
        stale = [
            (gone.pid, _HOST, ""),  # the process is gone
            (os.getpid(), _HOST, ""),  # ours, but no run here holds that token
            (sleeper.pid, "another-host", ""),  # a copied file
        ]
        if sys.platform == "linux":
            stale.append((sleeper.pid, _HOST, "old-boot/1"))  # a reused pid
        for pid, host, identity in stale:
            holder(pid, host, identity)
            async with session.lock():
                assert lock_rows(store) == [("s", os.getpid())]
            assert lock_rows(store) == []
    finally:
        sleeper.kill()
        await asyncio.wait_for(sleeper.wait(), 30)


async def test_a_run_cancelled_while_taking_the_lock_leaves_it_free(tmp_path, monkeypatch):
    store = tmp_path / "s.db"
    session = SQLiteSession(store, "s")
    await session.append([{"role": "user", "content": "x"}])
    abandoned = asyncio.Event()
    abandon = session._abandon

    def spy(token: str) -> None:
        abandon(token)
        abandoned.set()

    monkeypatch.setattr(session, "_abandon", spy)

    async def hold() -> None:
        async with session.lock():
            pytest.fail("the lock was taken although the task was cancelled")

    with contextlib.closing(sqlite3.connect(store, isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")  # the lock's transaction waits behind this one
        task = asyncio.create_task(hold())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        writer.rollback()
    await asyncio.wait_for(abandoned.wait(), 30)  # the thread took the lock, then gave it up
    for _ in range(600):
        if not lock_rows(store):
            break
        await asyncio.sleep(0.05)
    assert lock_rows(store) == []
    async with session.lock():
        pass


def test_the_default_store_follows_xdg_and_the_override(monkeypatch, tmp_path):
    monkeypatch.delenv("QWENLOOP_SESSIONS", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    if sys.platform not in ("win32", "darwin"):
        assert default_sessions_path() == tmp_path / "data" / "qwenloop" / "sessions.db"
        monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
        monkeypatch.setenv("HOME", str(tmp_path))
        assert default_sessions_path() == tmp_path / ".local/share/qwenloop/sessions.db"
    monkeypatch.setenv("QWENLOOP_SESSIONS", str(tmp_path / "mine.db"))
    assert default_sessions_path() == tmp_path / "mine.db"
