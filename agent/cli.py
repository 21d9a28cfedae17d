"""The `qwenloop` command line: run, batch, chat, serve, sessions, tools, models, mcp-serve.

No logic here that the API lacks.

Exit codes: 0 success, 1 a failed run (or batch rows), 2 a usage mistake (one line on stderr
naming the fix).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from agent.agent import Agent
from agent.errors import AgentError, UserError
from agent.events import (
    AgentEvent,
    LoopGuardEvent,
    RunEndEvent,
    TextDeltaEvent,
    ToolCallFinishedEvent,
)
from agent.messages import Interruption, RunResult
from agent.models.profile import Price
from agent.providers import PROVIDERS
from agent.secrets import scrub_surrogates
from agent.sessions import Session
from agent.tool import Tool
from agent.tool_plugins import load_tool_file

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"qwenloop: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qwenloop", description="Run a tool-calling Qwen agent.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run the agent on a prompt")
    run.add_argument("prompt", help="the user's prompt; - reads it from standard input")
    _agent_arguments(run)
    run.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH_OR_URL",
        help="an image to send with the prompt (repeatable; qwen-vl models)",
    )
    run.add_argument(
        "--video",
        action="append",
        default=[],
        metavar="URL_OR_FRAME",
        help="a video URL, or repeat for a list of frame images",
    )
    run.add_argument("--stream", action="store_true", help="print text as it arrives")
    approval = run.add_mutually_exclusive_group()
    approval.add_argument(
        "--approve-all", action="store_true", help="run every tool call that needs approval"
    )
    approval.add_argument(
        "--deny-all", action="store_true", help="refuse every tool call that needs approval"
    )
    run.add_argument("--json", action="store_true", help="print the result as one JSON object")
    run.add_argument(
        "--session",
        metavar="NAME",
        help="continue the named conversation and keep this run in it (see `qwenloop sessions`)",
    )
    _batch_parser(sub)
    _chat_parser(sub)
    _serve_parser(sub)
    _sessions_parser(sub)
    tools_cmd = sub.add_parser("tools", help="list the built-in tools and their schemas")
    tools_cmd.add_argument("--json", action="store_true")
    _mcp_arguments(tools_cmd)
    serve_cmd = sub.add_parser(
        "mcp-serve",
        help="serve tools to other MCP clients",
        description="Serve built-in and your own tools as an MCP server, over stdio (the "
        "default) or Streamable HTTP at http://127.0.0.1:PORT/mcp.",
    )
    serve_cmd.add_argument("--tools", default="", help="built-in tools by name, comma-separated")
    serve_cmd.add_argument(
        "--tool",
        action="append",
        default=[],
        metavar="FILE.py:FUNCTION",
        help="a Python function to serve as a tool (repeatable)",
    )
    serve_cmd.add_argument("--http", action="store_true", help="serve Streamable HTTP, not stdio")
    serve_cmd.add_argument("--port", type=int, default=8000, help="the HTTP port (default 8000)")
    models_cmd = sub.add_parser("models", help="list the model catalogue")
    models_cmd.add_argument("--json", action="store_true")
    return parser


def _batch_parser(sub: Any) -> None:
    cmd = sub.add_parser(
        "batch",
        help="run the agent on every row of a JSONL or CSV file",
        description="Run the agent on every row of INPUT (.jsonl or .csv; each row an id, a "
        "prompt and, for --system-template, variables) and append one JSON line per row to "
        "--out as it finishes. Exit 0 when every row succeeded, 1 when some failed or were "
        "malformed, 2 for a usage mistake.",
    )
    cmd.add_argument("input", help="the rows: a .jsonl or .csv file")
    cmd.add_argument("--out", required=True, metavar="OUT.jsonl", help="the results, one a line")
    cmd.add_argument(
        "--resume", action="store_true", help="skip the ids already in --out and append the rest"
    )
    cmd.add_argument(
        "--strict", action="store_true", help="stop before running anything at a malformed row"
    )
    cmd.add_argument(
        "--concurrency", type=int, default=8, help="runs in flight (default 8; per Ray worker)"
    )
    cmd.add_argument("--rpm", type=int, help="requests per minute, shared by all runs")
    cmd.add_argument("--tpm", type=int, help="tokens per minute, shared by all runs")
    cmd.add_argument(
        "--tier", choices=["free", "paid"], help="DashScope's rate limits for this account tier"
    )
    cmd.add_argument(
        "--progress",
        choices=["auto", "bar", "lines", "off"],
        default="auto",
        help="a bar on a terminal, else a line every --progress-interval seconds (default auto)",
    )
    cmd.add_argument("--progress-interval", type=float, default=10.0, metavar="SECONDS")
    cmd.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="where the rows run: this process, or Ray workers (needs qwenloop[ray])",
    )
    cmd.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="the Ray cluster to join (e.g. ray://head:10001, auto); default: a local Ray",
    )
    cmd.add_argument("--workers", type=int, help="Ray workers, --concurrency runs each (default 2)")
    _agent_arguments(cmd)


def _chat_parser(sub: Any) -> None:
    cmd = sub.add_parser(
        "chat",
        help="chat with the agent in the terminal",
        description="Chat with the agent: answers stream in and show as Markdown, tool calls "
        "one line each; tools that need approval ask y/N. /help lists the commands. Typed "
        "lines are kept in $QWENLOOP_CHAT_HISTORY, else $XDG_STATE_HOME/qwenloop/chat_history "
        "(default ~/.local/state/qwenloop/chat_history). Needs qwenloop[chat].",
    )
    _agent_arguments(cmd)
    cmd.add_argument(
        "--session",
        metavar="NAME",
        help="continue the named conversation and keep this chat in it (see `qwenloop sessions`)",
    )


def _serve_parser(sub: Any) -> None:
    cmd = sub.add_parser(
        "serve",
        help="serve the agent over an OpenAI-compatible HTTP API, with a chat page",
        description="Serve the agent at http://HOST:PORT/v1/chat/completions (streamed or not; "
        "its tools run on this machine) and /v1/models, with a chat page at /. Listening beyond "
        "loopback needs a key clients send as a bearer token: $QWENLOOP_SERVE_API_KEY or "
        "--serve-api-key. --api-key stays the model provider's key, as for `run`.",
    )
    cmd.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    cmd.add_argument("--port", type=int, default=8000, help="the TCP port (default 8000)")
    cmd.add_argument(
        "--serve-api-key",
        metavar="KEY",
        help="the key clients must send (default: $QWENLOOP_SERVE_API_KEY, which stays out of "
        "`ps`); required beyond loopback",
    )
    cmd.add_argument(
        "--max-concurrency", type=int, default=16, help="runs in flight at once (default 16)"
    )
    cmd.add_argument(
        "--max-body-bytes", type=int, default=1_000_000, help="the largest request body accepted"
    )
    cmd.add_argument("--name", help="the model name clients see (default qwenloop)")
    _agent_arguments(cmd)


def _agent_arguments(cmd: argparse.ArgumentParser) -> None:
    """The options that configure the agent, shared by `run`, `batch`, `chat` and `serve`."""
    cmd.add_argument("--provider", choices=[p for p in PROVIDERS if p != "custom"])
    cmd.add_argument("--base-url", help="any OpenAI-compatible base URL")
    cmd.add_argument("--api-key", help="the API key (default: the provider's variable)")
    cmd.add_argument("--model", help="the model name")
    cmd.add_argument("--model-path", help="a GGUF file for --provider local")
    cmd.add_argument(
        "--tool",
        action="append",
        default=[],
        metavar="FILE.py:FUNCTION",
        help="a Python function to offer as a tool (repeatable)",
    )
    cmd.add_argument("--tools", default="", help="built-in tools by name, comma-separated")
    _mcp_arguments(cmd)
    cmd.add_argument("--system", help="the system prompt text")
    cmd.add_argument("--system-template", metavar="NAME_OR_PATH", help="a Jinja2 system template")
    cmd.add_argument(
        "--var", action="append", default=[], metavar="KEY=VALUE", help="a template variable"
    )
    cmd.add_argument("--search", choices=["server", "local", "auto", "off"], default="off")
    cmd.add_argument(
        "--search-fetch", action="store_true", help="with local search, also offer fetch_url"
    )
    cmd.add_argument("--max-turns", type=int, default=10)
    cmd.add_argument("--temperature", type=float)
    cmd.add_argument("--seed", type=int)
    cmd.add_argument("--max-tokens", type=int)
    cmd.add_argument(
        "--thinking",
        action=argparse.BooleanOptionalAction,
        help="turn the model's reasoning on or off (default: the model's own default)",
    )
    cmd.add_argument("--thinking-budget", type=int, help="at most this many reasoning tokens")
    cmd.add_argument(
        "--price",
        metavar="INPUT:OUTPUT",
        help="the model's price in CNY per 1M tokens, for --max-cost on a model qwenloop "
        "cannot price",
    )
    cmd.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="an HTTP header for every request (repeatable)",
    )
    cmd.add_argument(
        "--translate", metavar="SOURCE:TARGET", help="qwen-mt: languages, e.g. Chinese:English"
    )
    cmd.add_argument("--max-total-tokens", type=int, help="stop a run past this many tokens")
    cmd.add_argument("--max-cost", type=float, help="stop a run past this cost in CNY")


def _mcp_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--mcp",
        action="append",
        default=[],
        metavar='"COMMAND ARGS"',
        help="an MCP server to start and offer the tools of, e.g. "
        '"python -m mcp_server_time" (repeatable)',
    )
    cmd.add_argument(
        "--mcp-url",
        action="append",
        default=[],
        metavar="URL",
        help="a Streamable HTTP MCP server's endpoint (repeatable)",
    )


def _mcp_servers(args: argparse.Namespace) -> list[Any]:
    if not args.mcp and not args.mcp_url:
        return []
    import shlex

    from agent.mcp import MCPServerHTTP, MCPServerStdio

    servers: list[Any] = []
    for line in args.mcp:
        argv = shlex.split(line)
        if not argv:
            raise UserError(
                '--mcp: give the server\'s command line, e.g. "python -m mcp_server_time"'
            )
        servers.append(MCPServerStdio(argv[0], argv[1:]))
    servers += [MCPServerHTTP(url) for url in args.mcp_url]
    return servers


async def _mcp_tools(servers: list[Any]) -> list[Tool]:
    tools: list[Tool] = []
    try:
        for server in servers:
            tools += await server.list_tools()
    finally:
        for server in servers:
            await server.aclose()
    return tools


def _sessions_parser(sub: Any) -> None:
    cmd = sub.add_parser(
        "sessions",
        help="list, show or delete stored conversations",
        description="Stored conversations, in $QWENLOOP_SESSIONS or "
        "$XDG_DATA_HOME/qwenloop/sessions.db (default ~/.local/share/qwenloop/sessions.db).",
    )
    actions = cmd.add_subparsers(dest="action", parser_class=_Parser)
    listing = actions.add_parser("list", help="one line per session (the default)")
    listing.add_argument("--json", action="store_true")
    show = actions.add_parser("show", help="print a session's conversation, one line a message")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print the stored messages as JSON")
    delete = actions.add_parser("delete", help="delete a session")
    delete.add_argument("name")


def _variables(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--var {pair!r}: write it as KEY=VALUE")
        out[key] = value
    return out


def _build_agent(args: argparse.Namespace) -> Agent:
    tools: list[Any] = [load_tool_file(s) for s in args.tool]
    tools += [n.strip() for n in args.tools.split(",") if n.strip()]
    tools += _mcp_servers(args)
    instructions: Any = args.system
    if args.system_template:
        from agent.prompts import Template

        extra = {"instructions": args.system} if args.system else {}
        instructions = Template.load(
            args.system_template, variables={**extra, **_variables(args.var)}
        )
    elif args.var:
        raise UserError("--var needs --system-template")
    settings = {
        k: v
        for k, v in (
            ("temperature", args.temperature),
            ("seed", args.seed),
            ("max_tokens", args.max_tokens),
            ("enable_thinking", args.thinking),
            ("thinking_budget", args.thinking_budget),
        )
        if v is not None
    }
    if args.translate:
        source, sep, target = args.translate.partition(":")
        if not sep:
            raise UserError("--translate: write it as SOURCE:TARGET, e.g. Chinese:English")
        from agent.translation import translation_options

        settings["translation_options"] = translation_options(source, target)
    return Agent(
        args.model,
        provider=args.provider,
        base_url=args.base_url,
        api_key=args.api_key,
        tools=tools,
        instructions=instructions,
        settings=settings,
        max_turns=args.max_turns,
        search=args.search,
        search_fetch=args.search_fetch,
        model_path=args.model_path,
        max_total_tokens=args.max_total_tokens,
        max_cost=args.max_cost,
        price=_price(args.price),
        headers=_headers(args.header),
    )


def _price(spec: str | None) -> Price | None:
    if spec is None:
        return None
    given, sep, output = spec.partition(":")
    try:
        if not sep:
            raise ValueError
        return Price(float(given), float(output))
    except ValueError:
        message = f"--price {spec!r}: write it as INPUT:OUTPUT in CNY per 1M tokens"
        raise UserError(message) from None


def _headers(specs: Sequence[str]) -> dict[str, str] | None:
    headers = {}
    for spec in specs:
        name, sep, value = spec.partition(":")
        if not sep or not name.strip():
            raise UserError(f"--header {spec!r}: write it as NAME:VALUE")
        headers[name.strip()] = value.strip()
    return headers or None


def _check_agent_args(args: argparse.Namespace) -> None:
    """Refuse numbers that would switch a limit off."""
    if args.max_turns < 1:
        raise UserError("--max-turns must be at least 1")
    for flag, value in (("--max-cost", args.max_cost), ("--temperature", args.temperature)):
        if value is not None and not math.isfinite(value):
            raise UserError(f"{flag} must be a finite number, got {value}")
    if args.max_cost is not None and args.max_cost < 0:
        raise UserError(f"--max-cost must not be negative, got {args.max_cost}")


def _check_prompt(args: argparse.Namespace) -> None:
    """Read `-` as standard input; refuse an empty prompt."""
    if args.prompt == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise UserError("run -: pipe the prompt into standard input")
        args.prompt = sys.stdin.read()
    args.prompt = scrub_surrogates(args.prompt)
    if not args.prompt.strip():
        raise UserError("the prompt is empty")


def _short(text: str | None, limit: int = 200) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _media(args: argparse.Namespace) -> dict[str, Any]:
    video: Any = None
    if len(args.video) == 1:
        video = args.video[0]
    elif args.video:
        video = args.video
    return {"images": args.image, "video": video}


def _session(args: argparse.Namespace) -> Session | None:
    if args.session is None:
        return None
    if not args.session.strip():
        raise UserError("--session: give the session a name")
    from agent.sessions import SQLiteSession, default_sessions_path

    return SQLiteSession(default_sessions_path(), args.session)


async def _run(agent: Agent, args: argparse.Namespace) -> RunResult:
    try:
        session = _session(args)
        media = _media(args)
        if args.stream:
            result = await _print_stream(agent.stream(args.prompt, session=session, **media), args)
        else:
            result = await agent.run(args.prompt, session=session, **media)
        while result.interruptions and (state := result.state) is not None:
            approve, reject = await _decide(result.interruptions, args)
            if args.stream:
                events = agent.resume_stream(state, approve=approve, reject=reject, session=session)
                result = await _print_stream(events, args)
            else:
                result = await agent.resume(state, approve=approve, reject=reject, session=session)
        return result
    finally:
        await agent.aclose()


async def _print_stream(events: AsyncIterator[AgentEvent], args: argparse.Namespace) -> RunResult:
    result: RunResult | None = None
    out = sys.stdout
    async for event in events:
        if isinstance(event, TextDeltaEvent) and not args.json:
            out.write(event.delta)
            out.flush()
        elif isinstance(event, ToolCallFinishedEvent) and not args.json:
            rec = event.record
            shown = f"error: {rec.error}" if rec.error else rec.result
            arguments = json.dumps(rec.arguments, ensure_ascii=False)
            out.write(f"[tool] {rec.name}({arguments}) -> {_short(shown)}\n")
        elif isinstance(event, LoopGuardEvent) and not args.json:
            out.write(f"[guard] {event.name} repeated; asking for an answer without tools\n")
        elif isinstance(event, RunEndEvent):
            result = event.result
    assert result is not None
    if not args.json and not result.interruptions:
        out.write("\n")
    return result


async def _decide(
    waiting: list[Interruption], args: argparse.Namespace
) -> tuple[list[str], dict[str, str]]:
    """Ask on the terminal whether each waiting call may run, or follow --approve/deny-all."""
    ids = [call.id for call in waiting]
    if args.approve_all:
        return ids, {}
    if args.deny_all:
        return [], {i: "the user denied it (--deny-all)" for i in ids}
    names = ", ".join(call.name for call in waiting)
    if sys.stdin is None or not sys.stdin.isatty():
        raise UserError(
            f"{names} needs approval and there is no terminal to ask on: "
            "pass --approve-all or --deny-all"
        )
    approve: list[str] = []
    reject: dict[str, str] = {}
    for call in waiting:
        arguments = _short(json.dumps(call.arguments, ensure_ascii=False))
        answer = await asyncio.to_thread(input, f"Run {call.name}({arguments})? [y/N] ")
        if answer.strip().lower() in ("y", "yes"):
            approve.append(call.id)
        else:
            reject[call.id] = "the user said no"
    return approve, reject


def _serve(args: argparse.Namespace) -> int:
    from agent.serve import serve

    serve(
        _build_agent(args),
        host=args.host,
        port=args.port,
        api_key=args.serve_api_key,
        max_body_bytes=args.max_body_bytes,
        max_concurrency=args.max_concurrency,
        model_name=args.name,
    )
    return 0


def _batch(args: argparse.Namespace) -> int:
    from agent.batch import Batch, BatchEngine

    agent: Agent | Callable[[], Agent]
    engine: BatchEngine | None = None
    if args.engine == "ray":
        from agent.batch_ray import RayEngine

        engine = RayEngine(args.ray_address, workers=2 if args.workers is None else args.workers)
        # Each worker rebuilds the agent from the arguments: files by absolute path, since a
        # worker's directory need not be this one.
        agent = functools.partial(_build_agent, _absolute_paths(args))
    elif args.ray_address is not None or args.workers is not None:
        flag = "--ray-address" if args.ray_address is not None else "--workers"
        raise UserError(f"{flag} needs --engine ray")
    else:
        agent = _build_agent(args)
    batch = Batch(
        agent,
        engine=engine or "local",
        concurrency=args.concurrency,
        rpm=args.rpm,
        tpm=args.tpm,
        tier=args.tier,
        resume=args.resume,
        strict=args.strict,
        progress=args.progress,
        progress_interval=args.progress_interval,
    )

    async def main() -> int:
        try:
            summary = await batch.run(args.input, args.out)
        finally:
            await batch.agent.aclose()
        return 0 if summary.ok else 1

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        print(
            f"qwenloop: interrupted; the rows finished so far are in {args.out}: "
            "run again with --resume to do the rest",
            file=sys.stderr,
        )
        return 130


def _absolute_paths(args: argparse.Namespace) -> argparse.Namespace:
    """The arguments with the files they name (tools, template, weights) as absolute paths."""

    def absolute(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path and Path(path).is_file() else path

    tools = []
    for spec in args.tool:
        file, sep, name = spec.rpartition(":")
        tools.append(f"{absolute(file)}{sep}{name}" if sep and file else spec)
    return argparse.Namespace(
        **{
            **vars(args),
            "tool": tools,
            "system_template": absolute(args.system_template),
            "model_path": absolute(args.model_path),
        }
    )


def _chat(args: argparse.Namespace) -> int:
    """Chat with the agent `run` would build; /model and /system rebuild it with an override."""
    try:
        from agent.chat import chat
    except ModuleNotFoundError as exc:
        raise UserError(f"qwenloop chat needs {exc.name}: pip install 'qwenloop[chat]'") from None
    session = _session(args)

    def build(model: str | None, system: str | None) -> Agent:
        override = {
            "model": model or args.model,
            "system": args.system if system is None else system,
        }
        return _build_agent(argparse.Namespace(**{**vars(args), **override}))

    return asyncio.run(chat(build, session=session))


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, dict):
                parts.append(f"[{part.get('type', 'part')}]")
            else:
                parts.append(str(part))
        return " ".join(parts)
    return json.dumps(content, ensure_ascii=False)


def _message_line(message: dict[str, Any], names: dict[str, str]) -> str:
    """One line for `sessions show`: role, text and a summary of the tool calls."""
    role = str(message.get("role"))
    shown = [_content_text(message.get("content"))]
    for call in message.get("tool_calls") or []:
        if not isinstance(call, dict):
            continue
        function = call.get("function") or {}
        name = str(function.get("name"))
        names[str(call.get("id"))] = name
        shown.append(f"[calls {name}({_short(str(function.get('arguments') or ''), 120)})]")
    if role == "tool":
        role = f"tool {names.get(str(message.get('tool_call_id')), '?')}"
    return f"{role}: {_short(' '.join(s for s in shown if s), 500)}"


def _sessions(args: argparse.Namespace) -> int:
    from agent.sessions import SQLiteSession, default_sessions_path

    path = default_sessions_path()
    action = args.action or "list"
    as_json = getattr(args, "json", False)
    if action == "list":
        infos = SQLiteSession.list_sessions(path)
        if as_json:
            rows = [
                {"name": i.id, "messages": i.messages, "updated": _when(i.updated)} for i in infos
            ]
            print(json.dumps(rows, ensure_ascii=False, indent=2))
        elif not infos:
            print(f"qwenloop: no sessions in {path}", file=sys.stderr)
        width = max((len(i.id) for i in infos), default=0)
        for info in [] if as_json else infos:
            print(f"{info.id:{width}}  {info.messages:>5} messages  updated {_when(info.updated)}")
        return 0
    if action == "delete":
        if not SQLiteSession.delete(path, args.name):
            print(f"qwenloop: no session named {args.name!r} in {path}", file=sys.stderr)
            return 1
        print(f"deleted session {args.name!r}")
        return 0
    if all(info.id != args.name for info in SQLiteSession.list_sessions(path)):
        print(f"qwenloop: no session named {args.name!r} in {path}", file=sys.stderr)
        return 1
    messages = asyncio.run(SQLiteSession(path, args.name).load())
    if as_json:
        print(json.dumps(messages, ensure_ascii=False, indent=2))
        return 0
    names: dict[str, str] = {}
    for message in messages:
        print(_message_line(message, names))
    return 0


def _print_tools(as_json: bool, servers: list[Any]) -> None:
    from agent.tool_plugins import available_tools, load_tool

    if servers:  # only the servers' tools
        installed = {t.name: t for t in asyncio.run(_mcp_tools(servers))}
    else:
        installed = {name: load_tool(name) for name in available_tools()}
    if as_json:
        print(json.dumps([t.openai_schema() for t in installed.values()], indent=2))
        return
    for name, t in installed.items():
        print(f"{name}: {t.description.splitlines()[0] if t.description else ''}")
        print(f"  parameters: {json.dumps(t.parameters, ensure_ascii=False)}")


def _print_models(as_json: bool) -> None:
    from agent import catalog

    models = catalog.all_models()
    if as_json:
        rows = [
            {
                "name": m.name,
                "family": m.family,
                "context_tokens": m.context_tokens,
                "max_output_tokens": m.max_output_tokens,
                "input_price_cny_per_1m": m.input_price,
                "output_price_cny_per_1m": m.output_price,
                "thinking": m.thinking,
                "price_tiers": [dataclasses.asdict(t) for t in m.price_tiers],
                "tools": m.supports_tools,
                "images": m.supports_images,
                "video": m.supports_video,
                "search": m.supports_search,
            }
            for m in models
        ]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return

    def num(v: float | int | None) -> str:
        if v is None:
            return "-"
        return str(v) if isinstance(v, int) else f"{v:g}"

    header = (
        f"{'model':34} {'family':18} {'context':>9} {'output':>7} {'in/1M':>7} {'out/1M':>7}"
        f" {'thinking':9} features"
    )
    print(header)
    for m in models:
        feats = ",".join(
            f
            for f, on in (
                ("tools", m.supports_tools),
                ("images", m.supports_images),
                ("video", m.supports_video),
                ("search", m.supports_search),
            )
            if on
        )
        print(
            f"{m.name:34} {m.family:18} {num(m.context_tokens):>9} {num(m.max_output_tokens):>7}"
            f" {num(m.input_price):>7} {num(m.output_price):>7} {m.thinking:9} {feats}"
        )
    print("prices in CNY per 1M tokens, for the smallest prompts; `--json` has every tier")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`qwenloop run ... | head`): stop quietly, as `cat` would.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 141


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "tools":
            _print_tools(args.json, _mcp_servers(args))
            return 0
        if args.command == "models":
            _print_models(args.json)
            return 0
        if args.command == "sessions":
            return _sessions(args)
        if args.command == "mcp-serve":
            from agent.mcp_serve import run_mcp_serve

            return run_mcp_serve(
                args.tools, args.tool, args.http, args.port, load_file_tool=load_tool_file
            )
        _check_agent_args(args)
        if args.command == "batch":
            return _batch(args)
        if args.command == "chat":
            return _chat(args)
        if args.command == "serve":
            return _serve(args)
        _check_prompt(args)
        agent = _build_agent(args)
        result = asyncio.run(_run(agent, args))
    except UserError as exc:
        print(f"qwenloop: {exc}", file=sys.stderr)
        return 2
    except AgentError as exc:
        print(f"qwenloop: {exc}", file=sys.stderr)
        if args.command == "run" and args.json and exc.result is not None:
            payload = exc.result.to_json_dict()
            payload["error"] = str(exc)
            print(json.dumps(payload, ensure_ascii=False))
        return 1
    except KeyboardInterrupt:
        print("qwenloop: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result.to_json_dict(), ensure_ascii=False))
    elif not args.stream:
        print(result.output)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
