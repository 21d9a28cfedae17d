"""`qwenloop chat`: ChatApp driven by scripted lines, and the real thing in a tmux terminal."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console

from agent import Agent, TextDeltaEvent, cli, tool
from agent.chat import ChatApp, default_history_path
from agent.sessions import SQLiteSession
from agent.testing import (
    ScriptedServer,
    error_reply,
    stream_text_reply,
    stream_tool_calls_reply,
    text_reply,
)

ROOT = Path(__file__).resolve().parent.parent


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool(needs_approval=True)
def delete_file(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


class Chat:
    """A ChatApp reading scripted lines and writing to a string; `built` records the factory."""

    def __init__(self, server: ScriptedServer, lines: list[str], **kw: object) -> None:
        self.lines = list(lines)
        self.prompts: list[str] = []
        self.built: list[tuple[str | None, str | None]] = []
        self.out = io.StringIO()
        console = Console(file=self.out, width=100, color_system=None, highlight=False)
        self.app = ChatApp(self.build, console=console, input_fn=self.read, **kw)
        self.server = server

    def build(self, model: str | None, system: str | None) -> Agent:
        self.built.append((model, system))
        return Agent(
            model or "qwen-plus",
            base_url=self.server.url,
            api_key="test",
            tools=[add, delete_file],
            instructions=system,
            retries=0,
        )

    def read(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.lines:
            raise EOFError
        line = self.lines.pop(0)
        if line == "<Ctrl-C>":
            raise KeyboardInterrupt
        return line

    async def run(self) -> str:
        assert await self.app.run() == 0
        return self.out.getvalue()


def roles_and_texts(request) -> list[tuple[str, str]]:
    return [(m["role"], m.get("content") or "") for m in request.json["messages"]]


async def test_a_streamed_answer_is_rendered_as_markdown_and_the_conversation_goes_on(
    openai_server,
):
    openai_server.script(
        stream_text_reply("Hello **world**:\n\n- one\n- two\n"),
        stream_text_reply("Still here."),
    )
    out = await Chat(openai_server, ["hi", "and then?"]).run()
    assert "Hello world:" in out and "**" not in out  # rendered, not raw Markdown
    assert "• one" in out and "Still here." in out
    assert out.count("Hello world") == 1  # streamed text replaced, not printed twice
    assert roles_and_texts(openai_server.requests[1]) == [
        ("user", "hi"),
        ("assistant", "Hello **world**:\n\n- one\n- two"),
        ("user", "and then?"),
    ]


async def test_tool_calls_show_one_line_each_and_reasoning_shows(openai_server):
    openai_server.script(
        stream_tool_calls_reply([("add", {"a": 2, "b": 3})]),
        stream_text_reply("It is 5.", reasoning="Adding two numbers."),
    )
    out = await Chat(openai_server, ["2+3?"]).run()
    assert '⚙ add({"a": 2, "b": 3}) → 5\n' in out
    assert "Adding two numbers." in out and "It is 5." in out


async def test_help_tools_and_unknown_commands(openai_server):
    out = await Chat(openai_server, ["/help", "/tools", "/nope", "/exit", "never read"]).run()
    assert "/model [NAME]" in out and "Esc then Enter" in out
    assert "add  Add two numbers." in out
    assert "delete_file (asks first)  Delete a file." in out
    assert "unknown command /nope" in out
    assert not openai_server.requests


async def test_a_double_slash_sends_a_message_starting_with_a_slash(openai_server):
    openai_server.script(text_reply("A path."))
    await Chat(openai_server, ["//etc/hosts?"]).run()
    assert openai_server.requests[0].json["messages"][-1]["content"] == "/etc/hosts?"


async def test_model_and_system_rebuild_the_agent_and_keep_the_conversation(openai_server):
    openai_server.script(text_reply("One."), text_reply("Two."))
    chat = Chat(
        openai_server, ["first", "/model qwen-max", "/system Be brief.", "/model", "second"]
    )
    out = await chat.run()
    assert chat.built == [(None, None), ("qwen-max", None), ("qwen-max", "Be brief.")]
    assert "model: qwen-max" in out and "system prompt replaced" in out
    second = openai_server.requests[1].json
    assert second["model"] == "qwen-max"
    assert second["messages"][0] == {"role": "system", "content": "Be brief."}
    assert [m["content"] for m in second["messages"][1:]] == ["first", "One.", "second"]


async def test_cost_sums_the_tokens_and_cny_of_every_request(openai_server):
    openai_server.script(
        stream_tool_calls_reply([("add", {"a": 1, "b": 1})], usage=(30, 10)),
        stream_text_reply("2.", usage=(40, 5)),
        stream_text_reply("Yes.", usage=(50, 3)),
        text_reply("priced", usage=(120, 18)),  # the same tokens in one run, for the price
    )
    chat = Chat(openai_server, ["1+1?", "sure?", "/cost"])
    out = await chat.run()
    async with Agent("qwen-plus", base_url=openai_server.url, api_key="test") as agent:
        expected = (await agent.run("x")).cost
    assert expected
    assert "138 tokens (120 in, 18 out) in 3 requests" in out
    assert f"{expected:.6f} CNY" in out


async def test_save_writes_the_conversation_as_json(openai_server, tmp_path):
    openai_server.script(text_reply("Saved soon."))
    file = tmp_path / "chat.json"
    out = await Chat(openai_server, ["keep this", f"/save {file}", "/save"]).run()
    assert json.loads(file.read_text()) == [
        {"role": "user", "content": "keep this"},
        {"role": "assistant", "content": "Saved soon."},
    ]
    assert f"saved 2 messages to {file}" in out and "/save FILE: name the file" in out


async def test_a_session_continues_next_time_and_reset_clears_it(openai_server, tmp_path):
    store = tmp_path / "sessions.db"
    openai_server.script(text_reply("Noted."), text_reply("You said: remember."), text_reply("?"))
    await Chat(openai_server, ["remember"], session=SQLiteSession(store, "s")).run()
    session = SQLiteSession(store, "s")
    out = await Chat(openai_server, ["what did I say?", "/reset", "again"], session=session).run()
    assert "session s: 2 earlier messages" in out and "conversation cleared" in out
    assert [m["content"] for m in openai_server.requests[1].json["messages"]] == [
        "remember",
        "Noted.",
        "what did I say?",
    ]
    assert [m["content"] for m in openai_server.requests[2].json["messages"]] == ["again"]
    assert len(await session.load()) == 2


@pytest.mark.parametrize(("answer", "ran"), [("y", True), ("n", False), ("", False)])
async def test_a_tool_that_needs_approval_asks_yes_or_no(openai_server, answer, ran):
    openai_server.script(
        stream_tool_calls_reply([("delete_file", {"path": "a.txt"})]),
        stream_text_reply("Done."),
    )
    chat = Chat(openai_server, ["delete a.txt", answer])
    out = await chat.run()
    assert chat.prompts[1] == 'Run delete_file({"path": "a.txt"})? [y/N] '
    assert "waits for your approval" in out and "Done." in out
    tool_message = openai_server.requests[1].json["messages"][-1]
    assert tool_message["role"] == "tool"
    assert ("deleted a.txt" in tool_message["content"]) is ran
    assert ("→ deleted a.txt" in out) is ran


async def test_ctrl_c_at_the_prompt_drops_the_line_and_ctrl_d_leaves(openai_server):
    openai_server.script(text_reply("Hi."))
    chat = Chat(openai_server, ["<Ctrl-C>", "", "hello"])
    out = await chat.run()
    assert chat.prompts == ["> ", "> ", "> ", "> "]  # the last read met EOF: the chat ended
    assert len(openai_server.requests) == 1 and "Hi." in out


async def test_a_line_ending_in_a_backslash_continues(openai_server):
    openai_server.script(text_reply("Two lines."))
    chat = Chat(openai_server, ["one\\", "two"])
    await chat.run()
    assert chat.prompts[:2] == ["> ", "… "]
    assert openai_server.requests[0].json["messages"][-1]["content"] == "one\ntwo"


async def test_a_failed_turn_is_shown_and_leaves_the_conversation_as_before(openai_server):
    openai_server.script(text_reply("First."), error_reply(400, "bad thing"), text_reply("Ok."))
    out = await Chat(openai_server, ["one", "two", "three"]).run()
    assert "error:" in out and "bad thing" in out
    assert [m["content"] for m in openai_server.requests[2].json["messages"]] == [
        "one",
        "First.",
        "three",
    ]


async def test_sigint_cancels_the_turn_and_restores_the_session(openai_server, tmp_path):
    # The tool turn is stored in the session before the answer streams; Ctrl-C (a real
    # SIGINT to this process) during the answer puts the session back as it was.
    words = " ".join(f"w{i}" for i in range(40))
    openai_server.script(
        text_reply("Earlier."),
        stream_tool_calls_reply([("add", {"a": 1, "b": 2})]),
        stream_text_reply(words, chunk_delay=0.1),
        text_reply("After."),
    )
    session = SQLiteSession(tmp_path / "s.db", "s")
    chat = Chat(openai_server, ["earlier", "slow", "after"], session=session)
    loop = asyncio.get_running_loop()
    original = chat.app._on_event

    def on_event(event, screen):  # the first streamed word sends the SIGINT
        if isinstance(event, TextDeltaEvent) and event.delta.strip() == "w0":
            loop.call_later(0.2, os.kill, os.getpid(), signal.SIGINT)
        return original(event, screen)

    chat.app._on_event = on_event
    handler = signal.getsignal(signal.SIGINT)
    out = await chat.run()
    assert "(cancelled)" in out and "w0" in out and "w39" not in out
    assert [m["content"] for m in openai_server.requests[3].json["messages"]] == [
        "earlier",
        "Earlier.",
        "after",
    ]
    assert [m["content"] for m in await session.load()] == [
        "earlier",
        "Earlier.",
        "after",
        "After.",
    ]
    assert signal.getsignal(signal.SIGINT) is handler


def test_the_history_file_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("QWENLOOP_CHAT_HISTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_history_path() == tmp_path / "qwenloop" / "chat_history"
    monkeypatch.setenv("XDG_STATE_HOME", "relative")
    assert default_history_path() == Path.home() / ".local/state/qwenloop/chat_history"
    monkeypatch.setenv("QWENLOOP_CHAT_HISTORY", str(tmp_path / "h"))
    assert default_history_path() == tmp_path / "h"


def test_piped_input_needs_no_terminal(openai_server, tmp_path):
    openai_server.script(
        stream_tool_calls_reply([("delete_file", {"path": "x"})]),
        stream_text_reply("Gone."),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tests.chat_launcher"],
        input="delete x\ny\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **launcher_env(openai_server, tmp_path)},
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Run delete_file" in proc.stdout and "→ deleted x" in proc.stdout
    assert "Gone." in proc.stdout
    assert not (tmp_path / "history").exists()  # no prompt_toolkit, no history file


needs_chat_command = pytest.mark.skipif(
    not hasattr(cli, "_chat"), reason="agent/cli.py has no `chat` command yet"
)


@needs_chat_command
def test_the_chat_command_builds_the_agent_run_would(openai_server, monkeypatch, capsys):
    openai_server.script(text_reply("Four."), text_reply("Still four."))
    lines = "2+2?\n/model qwen-max\n/system Short.\nsure?\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    code = cli.main(
        ["chat", "--base-url", openai_server.url, "--api-key", "test", "--model", "qwen-plus",
         "--tools", "calculator", "--system", "Be exact.", "--temperature", "0.5"]
    )  # fmt: skip
    assert code == 0
    assert "Still four." in capsys.readouterr().out
    first, second = (r.json for r in openai_server.requests)
    assert (first["model"], first["temperature"]) == ("qwen-plus", 0.5)
    assert first["messages"][0] == {"role": "system", "content": "Be exact."}
    assert first["tools"][0]["function"]["name"] == "calculator"
    assert (second["model"], second["temperature"]) == ("qwen-max", 0.5)
    assert [m["content"] for m in second["messages"]] == ["Short.", "2+2?", "Four.", "sure?"]


@needs_chat_command
def test_chat_usage_mistakes_exit_2_with_one_line(capsys):
    assert cli.main(["chat", "--max-turns", "0"]) == 2
    url = "http://127.0.0.1:9/v1"
    assert cli.main(["chat", "--base-url", url, "--api-key", "test", "--var", "a=b"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "qwenloop: --max-turns must be at least 1",
        "qwenloop: --var needs --system-template",
    ]


# -- a real terminal -----------------------------------------------------------------------

TMUX = shutil.which("tmux")
needs_tmux = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


def launcher_env(server: ScriptedServer, tmp_path: Path) -> dict[str, str]:
    return {"QWENLOOP_TEST_URL": server.url, "QWENLOOP_CHAT_HISTORY": str(tmp_path / "history")}


class Terminal:
    """A tmux server of our own (its own socket): start the chat, type, read the screen."""

    def __init__(self, tmp_path: Path) -> None:
        # A socket of our own (short: socket paths are limited to about 100 bytes).
        self.socket = Path(tempfile.gettempdir()) / f"qwenloop-tmux-{uuid.uuid4().hex[:8]}"
        self.conf = tmp_path / "tmux.conf"
        self.conf.write_text("set -g remain-on-exit on\nset -g history-limit 1000\n")
        self.count = 0
        self.name = ""

    def tmux(self, *args: str) -> str:
        argv = [TMUX or "tmux", "-S", str(self.socket), "-f", str(self.conf), *args]
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=10).stdout

    def start(self, env: dict[str, str]) -> None:
        self.count += 1
        self.name = f"chat{self.count}"
        assigned = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        command = f"cd {shlex.quote(str(ROOT))} && exec env {assigned} {shlex.quote(sys.executable)} -m tests.chat_launcher"
        self.tmux("new-session", "-d", "-s", self.name, "-x", "120", "-y", "40", command)
        self.wait_for(lambda s: "/help for commands" in s and s.rstrip().endswith(">"))

    def send(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.name, *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", self.name, "-l", text)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def dead(self) -> bool:
        return self.tmux("display-message", "-p", "-t", self.name, "#{pane_dead}").strip() == "1"

    def wait_for(self, ready: Callable[[str], bool] | str, timeout: float = 10.0) -> str:
        check = (lambda s: ready in s) if isinstance(ready, str) else ready
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if check(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting; the screen:\n{screen}")
            time.sleep(0.05)

    def wait_exit(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.dead():
            if time.monotonic() > deadline:
                raise AssertionError(f"the chat did not exit; the screen:\n{self.screen()}")
            time.sleep(0.05)

    def close(self) -> None:
        subprocess.run([TMUX or "tmux", "-S", str(self.socket), "kill-server"], capture_output=True)
        self.socket.unlink(missing_ok=True)


@pytest.fixture
def terminal(tmp_path) -> Iterator[Terminal]:
    term = Terminal(tmp_path)
    try:
        yield term
    finally:
        term.close()


def prompt_after(text: str) -> Callable[[str], bool]:
    """The screen shows `text`, and a fresh prompt waits below it."""

    return lambda screen: text in screen and screen.rstrip().endswith("\n>")


@needs_tmux
def test_terminal_streams_markdown_and_shows_tool_lines(openai_server, tmp_path, terminal):
    openai_server.script(
        stream_text_reply("# Plan\n\nA **bold** step:\n\n1. first\n2. second\n"),
        stream_tool_calls_reply([("add", {"a": 2, "b": 3})]),
        stream_text_reply("The sum is 5."),
    )
    terminal.start(launcher_env(openai_server, tmp_path))
    terminal.type("make a plan")
    terminal.send("Enter")
    screen = terminal.wait_for(prompt_after("2 second"))
    assert "A bold step:" in screen and "**" not in screen and "# Plan" not in screen
    terminal.type("add 2 and 3")
    terminal.send("Enter")
    screen = terminal.wait_for(prompt_after("The sum is 5."))
    assert '⚙ add({"a": 2, "b": 3}) → 5' in screen


@needs_tmux
def test_terminal_ctrl_c_cancels_a_streamed_answer_and_keeps_the_conversation(
    openai_server, tmp_path, terminal
):
    words = " ".join(f"word{i}" for i in range(50))
    openai_server.script(
        stream_text_reply("First answer."),
        stream_text_reply(words, chunk_delay=0.2),
        stream_text_reply("Next answer."),
    )
    terminal.start(launcher_env(openai_server, tmp_path))
    terminal.type("first")
    terminal.send("Enter")
    terminal.wait_for(prompt_after("First answer."))
    terminal.type("go slowly")
    terminal.send("Enter")
    terminal.wait_for("word2")
    terminal.send("C-c")
    screen = terminal.wait_for(prompt_after("(cancelled)"), timeout=5)
    assert "word49" not in screen
    terminal.type("next")
    terminal.send("Enter")
    terminal.wait_for(prompt_after("Next answer."))
    assert [m["content"] for m in openai_server.requests[2].json["messages"]] == [
        "first",
        "First answer.",
        "next",
    ]
    assert not terminal.dead()


@needs_tmux
def test_terminal_approval_asks_yes_or_no(openai_server, tmp_path, terminal):
    openai_server.script(
        stream_tool_calls_reply([("delete_file", {"path": "a.txt"})]),
        stream_text_reply("Deleted."),
    )
    terminal.start(launcher_env(openai_server, tmp_path))
    terminal.type("delete a.txt")
    terminal.send("Enter")
    terminal.wait_for('Run delete_file({"path": "a.txt"})? [y/N]')
    terminal.type("y")
    terminal.send("Enter")
    screen = terminal.wait_for(prompt_after("Deleted."))
    assert "→ deleted a.txt" in screen


@needs_tmux
def test_terminal_ctrl_d_leaves_and_history_survives_a_restart(openai_server, tmp_path, terminal):
    openai_server.script(text_reply("Remembered."))
    env = launcher_env(openai_server, tmp_path)
    terminal.start(env)
    terminal.type("a line worth recalling")
    terminal.send("Enter")
    terminal.wait_for(prompt_after("Remembered."))
    terminal.send("C-d")
    terminal.wait_exit()
    terminal.start(env)
    terminal.send("Up")
    terminal.wait_for(lambda s: s.rstrip().endswith("> a line worth recalling"), timeout=5)
