"""`qwenloop chat`: a conversation in the terminal, with slash commands and approval prompts.

`ChatApp` reads a message (prompt_toolkit on a terminal, plain lines from a pipe), runs one turn
with `Agent.stream` and shows it with rich: text as it arrives, re-rendered as Markdown when the
answer is complete, reasoning dimmed, one line per tool call. Needs `qwenloop[chat]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.text import Text

from agent.agent import Agent
from agent.errors import AgentError
from agent.events import (
    AgentEvent,
    ApprovalRequiredEvent,
    LoopGuardEvent,
    ReasoningDeltaEvent,
    RunEndEvent,
    TextDeltaEvent,
    ToolCallFinishedEvent,
    TurnEndEvent,
)
from agent.messages import Interruption, RunResult, Usage
from agent.sessions import Session
from agent.toolsets import registry_for_run

__all__ = ["AgentFactory", "ChatApp", "chat", "default_history_path"]

AgentFactory = Callable[[str | None, str | None], Agent]
"""Builds the chat's agent from (model, system prompt); None keeps the configured one."""

InputFn = Callable[[str], str | Awaitable[str]]
"""Reads one line after showing a prompt, like `input`; EOFError ends the chat."""

_Reader = Callable[[str], Awaitable[str]]

HELP = """\
/help           this list
/tools          the tools the model may call
/model [NAME]   switch to another model (without NAME: show the current one)
/system [TEXT]  replace the system prompt (without TEXT: show the override)
/reset          forget the conversation (and clear the session)
/save FILE      write the conversation to FILE as JSON messages
/cost           tokens and cost in CNY so far
/exit           leave (as does Ctrl-D)

Enter sends. Esc then Enter, or a line ending in \\, starts a new line; a message
starting with // is sent with one / (it is not a command).
Ctrl-C cancels the answer being written (the conversation stays as it was before the
question) or clears the line being typed; Ctrl-D on an empty line leaves."""

_PROMPT = "> "
_MORE = "… "


def default_history_path() -> Path:
    """Return where typed lines are kept: `$QWENLOOP_CHAT_HISTORY`, else the state directory.

    The state directory is `$XDG_STATE_HOME/qwenloop` (default `~/.local/state/qwenloop`);
    the file is `chat_history` in it.
    """
    override = os.environ.get("QWENLOOP_CHAT_HISTORY")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME", "")
    # The XDG spec says to ignore a relative path.
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "qwenloop" / "chat_history"


class _TurnCancelled(Exception):
    """Ctrl-C at an approval question: end the turn as a Ctrl-C during the answer would."""


class ChatApp:
    """A chat with one agent at a time; `await ChatApp(...).run()` returns the exit code.

    The conversation lives in memory, or in `session` when one is given (so it continues in
    the next chat with the same session). A turn that fails or is cancelled leaves the
    conversation as it was before the question.

    Args:
        agent_factory: Builds the agent from (model, system prompt); called once at the start
            with (None, None), again by /model and /system.
        session: Where the conversation is kept between chats.
        console: Where output goes (default: standard output).
        input_fn: Reads a line after showing a prompt, like `input` (sync or async); EOFError
            leaves, KeyboardInterrupt discards the line. Default: prompt_toolkit with line
            editing and history on a terminal, plain lines when standard input is not one.
        history_file: Typed lines, kept across chats (default: `default_history_path()`).
    """

    def __init__(
        self,
        agent_factory: AgentFactory,
        *,
        session: Session | None = None,
        console: Console | None = None,
        input_fn: InputFn | None = None,
        history_file: Path | None = None,
    ) -> None:
        self.agent_factory = agent_factory
        self.session = session
        self.console = console or Console(highlight=False)
        self.history: list[dict[str, Any]] = []
        self.model: str | None = None
        self.system: str | None = None
        self.usage = Usage()
        self.cost = 0.0
        self.unpriced_turns = 0
        self._agent: Agent | None = None
        self._read, self._ask = _inputs(input_fn, history_file)

    @property
    def agent(self) -> Agent:
        """The agent in use (built by `run`)."""
        if self._agent is None:
            self._agent = self.agent_factory(self.model, self.system)
        return self._agent

    async def run(self) -> int:
        """Chat until /exit or Ctrl-D; return the exit code (0).

        Raises:
            AgentError: The first agent could not be built (later failures are shown).
        """
        agent = self.agent
        try:
            await self._greet(agent)
            while True:
                try:
                    text = await self._read_message()
                except KeyboardInterrupt:
                    continue  # the line is discarded; prompt_toolkit already cleared it
                except EOFError:
                    break
                if not text.strip():
                    continue
                if text.startswith("/") and not text.startswith("//"):
                    if not await self.command(text):
                        break
                    continue
                await self.turn(text.removeprefix("/"))
        finally:
            if self._agent is not None:
                await self._agent.aclose()
        return 0

    async def _greet(self, agent: Agent) -> None:
        said = f"qwenloop chat with {agent.model.model_name}: /help for commands, Ctrl-D to leave"
        self.console.print(Text(said, style="dim"))
        if self.session is not None:
            earlier = len(await self.session.load())
            name = getattr(self.session, "session_id", "")
            note = f"session {name}: {earlier} earlier messages" if earlier else f"session {name}"
            self.console.print(Text(note, style="dim"))

    async def _read_message(self) -> str:
        text = await self._read(_PROMPT)
        # A trailing backslash continues on the next line (the prompt_toolkit editor does this
        # itself on Enter; plain input needs it here).
        while text.endswith("\\"):
            text = text[:-1] + "\n" + await self._read(_MORE)
        return text

    # -- commands ---------------------------------------------------------------------------

    async def command(self, line: str) -> bool:
        """Carry out a slash command; return False when the chat should end."""
        name, _, rest = line.strip().partition(" ")
        arg = rest.strip()
        if name in ("/exit", "/quit"):
            return False
        handlers: dict[str, Callable[[str], Awaitable[None]]] = {
            "/help": self._help,
            "/tools": self._tools,
            "/model": self._model,
            "/system": self._system,
            "/reset": self._reset,
            "/save": self._save,
            "/cost": self._cost,
        }
        handler = handlers.get(name)
        if handler is None:
            self._note(f"unknown command {name}; /help lists them (start with // to send a /)")
        else:
            await handler(arg)
        return True

    async def _help(self, _: str) -> None:
        self.console.print(Text(HELP))

    async def _tools(self, _: str) -> None:
        try:
            registry = await registry_for_run(self.agent.tools, self.agent.toolsets)
        except AgentError as exc:
            self._error(exc)
            return
        if not len(registry):
            self._note("no tools: pass --tools or --tool")
        for t in registry:
            summary = t.description.splitlines()[0] if t.description else ""
            asks = " (asks first)" if t.needs_approval else ""
            line = Text.assemble((t.name, "bold"), f"{asks}  {summary}")
            line.no_wrap, line.overflow = True, "ellipsis"
            self.console.print(line)

    async def _model(self, name: str) -> None:
        if not name:
            self._note(f"model: {self.agent.model.model_name}")
            return
        if await self._rebuild(name, self.system):
            self._note(f"model: {self.agent.model.model_name}")

    async def _system(self, text: str) -> None:
        if not text:
            self._note(f"system prompt: {self.system or 'as configured'}")
            return
        if await self._rebuild(self.model, text):
            self._note("system prompt replaced")

    async def _rebuild(self, model: str | None, system: str | None) -> bool:
        try:
            agent = self.agent_factory(model, system)
        except AgentError as exc:
            self._error(exc)
            return False
        old, self._agent = self._agent, agent
        self.model, self.system = model, system
        if old is not None:
            await old.aclose()
        return True

    async def _reset(self, _: str) -> None:
        self.history = []
        try:
            if self.session is not None:
                await self.session.clear()
        except AgentError as exc:
            self._error(exc)
            return
        self._note("conversation cleared")

    async def _save(self, file: str) -> None:
        if not file:
            self._note("/save FILE: name the file")
            return
        try:
            messages = await self.conversation()
            path = await asyncio.to_thread(_write_json, file, messages)
        except (AgentError, OSError) as exc:
            self._error(exc)
            return
        self._note(f"saved {len(messages)} messages to {path}")

    async def _cost(self, _: str) -> None:
        u = self.usage
        line = (
            f"{u.total_tokens} tokens ({u.prompt_tokens} in, {u.completion_tokens} out) "
            f"in {u.requests} requests; {self.cost:.6f} CNY"
        )
        if self.unpriced_turns:
            line += f" (and {self.unpriced_turns} requests to a model with no known price)"
        self._note(line)

    async def conversation(self) -> list[dict[str, Any]]:
        """Return the conversation so far, as OpenAI-format messages without the system prompt."""
        if self.session is not None:
            return await self.session.load()
        return list(self.history)

    # -- one turn ---------------------------------------------------------------------------

    async def turn(self, text: str) -> None:
        """Answer one message; Ctrl-C (SIGINT) cancels it and restores the conversation."""
        before = await self.session.load() if self.session is not None else None
        task = asyncio.create_task(self._converse(text))
        try:
            with _sigint_cancels(task):
                await asyncio.wait([task])
        finally:
            task.cancel()  # only if the chat itself was cancelled while waiting
        failure = None if task.cancelled() else task.exception()
        if task.cancelled() or isinstance(failure, _TurnCancelled):
            self.console.print(Text("(cancelled)", style="yellow"))
        elif isinstance(failure, AgentError):
            self._error(failure)
        elif failure is not None:
            raise failure
        else:
            self.console.print()
            return
        if before is not None and self.session is not None:
            await _restore(self.session, before)

    async def _converse(self, text: str) -> None:
        agent = self.agent
        screen = _Reply(self.console)
        session = self.session
        try:
            history = None if session is not None else self.history
            events = agent.stream(text, history=history, session=session)
            result = await self._show(events, screen)
            while result.interruptions and result.state is not None:
                approve, reject = await self._decide(result.interruptions)
                events = agent.resume_stream(
                    result.state, approve=approve, reject=reject, session=session
                )
                result = await self._show(events, screen)
        except BaseException:
            screen.close(markdown=False)
            raise
        screen.close()
        if session is None:
            self.history = [m for m in result.messages if m.get("role") != "system"]

    async def _show(self, events: Any, screen: _Reply) -> RunResult:
        result: RunResult | None = None
        try:
            async for event in events:
                result = self._on_event(event, screen) or result
        finally:
            await events.aclose()
        assert result is not None
        return result

    def _on_event(self, event: AgentEvent, screen: _Reply) -> RunResult | None:
        if isinstance(event, TextDeltaEvent):
            screen.add_text(event.delta)
        elif isinstance(event, ReasoningDeltaEvent):
            screen.add_reasoning(event.delta)
        elif isinstance(event, ToolCallFinishedEvent):
            rec = event.record
            shown = f"error: {rec.error}" if rec.error else (rec.skipped or rec.result or "")
            screen.line(_tool_line(rec.name, rec.arguments, shown, error=bool(rec.error)))
        elif isinstance(event, ApprovalRequiredEvent):
            screen.line(_tool_line(event.name, event.arguments, "waits for your approval"))
        elif isinstance(event, LoopGuardEvent):
            screen.line(_tool_line(event.name, event.arguments, "repeated; not run again"))
        elif isinstance(event, TurnEndEvent):
            self.usage.add(event.usage)
            if event.cost is None:
                self.unpriced_turns += 1
            else:
                self.cost += event.cost
        elif isinstance(event, RunEndEvent):
            return event.result
        return None

    async def _decide(self, waiting: list[Interruption]) -> tuple[list[str], dict[str, str]]:
        approve: list[str] = []
        reject: dict[str, str] = {}
        for call in waiting:
            arguments = _short(json.dumps(call.arguments, ensure_ascii=False), 200)
            try:
                answer = await self._ask(f"Run {call.name}({arguments})? [y/N] ")
            except KeyboardInterrupt:
                # Raised out of a task, KeyboardInterrupt would stop the event loop.
                raise _TurnCancelled from None
            except EOFError:
                answer = ""
            if answer.strip().lower() in ("y", "yes"):
                approve.append(call.id)
            else:
                reject[call.id] = "the user said no"
        return approve, reject

    def _note(self, text: str) -> None:
        self.console.print(Text(text, style="dim"))

    def _error(self, exc: BaseException) -> None:
        self.console.print(Text(f"error: {exc}", style="red"))


async def chat(
    agent_factory: AgentFactory,
    *,
    session: Session | None = None,
    console: Console | None = None,
    input_fn: InputFn | None = None,
    history_file: Path | None = None,
) -> int:
    """Chat in the terminal until /exit or Ctrl-D; see `ChatApp` for the arguments."""
    app = ChatApp(
        agent_factory,
        session=session,
        console=console,
        input_fn=input_fn,
        history_file=history_file,
    )
    return await app.run()


class _Reply:
    """One answer on screen: reasoning (dimmed) and text stream into a live region.

    When the answer is complete, the text is re-rendered as Markdown in the same place.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live: Live | None = None
        self._reasoning = ""
        self._text = ""

    def add_text(self, delta: str) -> None:
        self._text += delta
        self._update()

    def add_reasoning(self, delta: str) -> None:
        self._reasoning += delta
        self._update()

    def line(self, text: Text) -> None:
        """Print a line of its own (a tool call) after what streamed so far."""
        self.close()
        self.console.print(text)

    def close(self, *, markdown: bool = True) -> None:
        """Leave the streamed part on screen in its final form and start afresh."""
        if self._live is not None:
            self._live.update(self._render(markdown=markdown))
            self._live.stop()
            self._live = None
        self._reasoning = self._text = ""

    def _render(self, *, markdown: bool) -> RenderableType:
        parts: list[RenderableType] = []
        if self._reasoning.strip():
            parts.append(Text(self._reasoning.strip(), style="dim italic"))
        if self._text.strip():
            parts.append(Markdown(self._text) if markdown else Text(self._text))
        return Group(*parts)

    def _update(self) -> None:
        if self._live is None:
            self._live = Live(
                self._render(markdown=False),
                console=self.console,
                refresh_per_second=12,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        else:
            self._live.update(self._render(markdown=False))


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tool_line(name: str, arguments: Any, outcome: str, *, error: bool = False) -> Text:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    line = Text.assemble(
        ("⚙ ", "cyan"),
        (name, "bold cyan"),
        f"({_short(args, 300)}) → ",
        (_short(outcome, 500), "red" if error else ""),
    )
    line.no_wrap, line.overflow = True, "ellipsis"
    return line


def _write_json(file: str, messages: list[dict[str, Any]]) -> Path:
    path = Path(file).expanduser()
    path.write_text(json.dumps(messages, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path


async def _restore(session: Session, messages: list[dict[str, Any]]) -> None:
    """Put the session back as it was: a cancelled or failed turn may have kept a part."""
    if await session.load() != messages:
        await session.clear()
        await session.append(messages)


@contextlib.contextmanager
def _sigint_cancels(task: asyncio.Task[None]) -> Iterator[None]:
    """While the body runs, Ctrl-C (SIGINT) cancels `task` instead of raising KeyboardInterrupt."""
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGINT)
    try:
        loop.add_signal_handler(signal.SIGINT, task.cancel)
    except (NotImplementedError, RuntimeError, ValueError):
        # Windows, or not the main thread: Ctrl-C stays KeyboardInterrupt.
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        signal.signal(signal.SIGINT, previous)  # asyncio.run's own handler, for the prompt


def _inputs(input_fn: InputFn | None, history_file: Path | None) -> tuple[_Reader, _Reader]:
    """The message reader and the approval asker."""
    if input_fn is not None:
        given = input_fn

        async def call(prompt: str) -> str:
            answer = given(prompt)
            return await answer if inspect.isawaitable(answer) else answer

        return call, call
    if sys.stdin is None or not sys.stdin.isatty():
        return _piped, _piped_question
    return _terminal(history_file or default_history_path())


async def _piped(prompt: str) -> str:
    line: str = await asyncio.to_thread(sys.stdin.readline)
    if not line:
        raise EOFError
    return line.removesuffix("\n")


async def _piped_question(prompt: str) -> str:
    sys.stdout.write(prompt)  # unlike the "> " prompt, the question is worth keeping in a log
    sys.stdout.flush()
    return await _piped(prompt)


def _terminal(history_file: Path) -> tuple[_Reader, _Reader]:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

    keys = KeyBindings()

    @keys.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    @keys.add("enter")
    def _send(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        if buffer.document.is_cursor_at_the_end and buffer.text.endswith("\\"):
            buffer.delete_before_cursor()
            buffer.insert_text("\n")
        else:
            buffer.validate_and_handle()

    history_file.parent.mkdir(parents=True, exist_ok=True)
    messages: PromptSession[str] = PromptSession(
        history=FileHistory(str(history_file)),
        key_bindings=keys,
        prompt_continuation=_MORE,
    )
    questions: PromptSession[str] = PromptSession()

    async def read(prompt: str) -> str:
        text: str = await messages.prompt_async(prompt)
        return text

    async def ask(prompt: str) -> str:
        answer: str = await questions.prompt_async(prompt)
        return answer

    return read, ask
