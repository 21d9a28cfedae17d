"""The example programs, run against the scripted server (and local Open-Meteo / search fakes)."""

from __future__ import annotations

import ast
import csv
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from agent.testing import (
    RecordedRequest,
    Reply,
    ScriptedServer,
    stream_text_reply,
    stream_tool_calls_reply,
    text_reply,
    tool_call_reply,
)
from tests.httpfixture import LocalHTTPServer, Response
from tests.httpfixture import RecordedRequest as HTTPRequest
from tools.web_search import make_web_search

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
OPEN_METEO = Path(__file__).parent / "fixtures" / "open_meteo"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s
        s.assert_done()


def example_env(server: ScriptedServer, **extra: str) -> dict[str, str]:
    """The environment an example subprocess runs in: DashScope's preset, our server's URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWENLOOP_")}
    env.update(
        QWENLOOP_PROVIDER="dashscope",
        QWENLOOP_BASE_URL=server.url,
        DASHSCOPE_API_KEY="test",
        PYTHONIOENCODING="utf-8",
        **extra,
    )
    return env


def run_example(
    name: str, *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- weather_bot.py ---


def open_meteo_reply(req: HTTPRequest, name: str) -> Response:
    return 200, {"Content-Type": "application/json"}, (OPEN_METEO / name).read_bytes()


def test_weather_bot(server: ScriptedServer) -> None:
    server.script(
        tool_call_reply("get_weather", {"city": "Berlin"}),
        text_reply("In Berlin it is 3.1°C and partly cloudy."),
    )
    with LocalHTTPServer() as meteo:
        meteo.route("/v1/search", handler=lambda r: open_meteo_reply(r, "geocoding_berlin.json"))
        meteo.route(
            "/v1/forecast", handler=lambda r: open_meteo_reply(r, "forecast_current_metric.json")
        )
        env = example_env(
            server,
            QWENLOOP_OPEN_METEO_GEOCODING_URL=meteo.url("/v1/search"),
            QWENLOOP_OPEN_METEO_FORECAST_URL=meteo.url("/v1/forecast"),
        )
        proc = run_example("weather_bot.py", env=env)
        meteo_requests = list(meteo.requests)

    lines = proc.stdout.splitlines()
    assert lines[-1] == "In Berlin it is 3.1°C and partly cloudy."
    assert lines[0].startswith('[tool] get_weather {"city": "Berlin"} -> ')
    assert "3.1°C" in lines[0]
    # The tools went to the local Open-Meteo, geocoding first, for the default question's city.
    assert [r.path for r in meteo_requests] == ["/v1/search", "/v1/forecast"]
    assert meteo_requests[0].query["name"] == ["Berlin"]

    first, second = server.requests
    messages = first.json["messages"]
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].startswith("You are a concise weather assistant.")
    assert "Use metric units." in messages[0]["content"]
    assert messages[1] == {"role": "user", "content": "What's the weather in Berlin?"}
    assert [t["function"]["name"] for t in first.json["tools"]] == ["get_weather", "get_forecast"]
    tool_message = second.json["messages"][-1]
    assert tool_message["role"] == "tool"
    assert json.loads(tool_message["content"])["temperature"] == "3.1°C"


# --- search_bot.py ---


SEARCHED: list[str] = []


class FakeDDGS:
    """Stands in for ddgs.DDGS: records queries in SEARCHED, returns two fixed hits."""

    def text(self, query: str, **kw: Any) -> list[dict[str, str]]:
        SEARCHED.append(query)
        return [
            {
                "title": "Qwen3",
                "href": "https://qwenlm.github.io/blog/qwen3/",
                "body": "Qwen3 is out.",
            },
            {"title": "Qwen on HF", "href": "https://huggingface.co/Qwen", "body": "Models."},
        ]

    def news(self, query: str, **kw: Any) -> list[dict[str, str]]:
        return self.text(query, **kw)


@pytest.fixture
def search_bot(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    for name in ("QWENLOOP_MODEL", "QWENLOOP_API_KEY", "QWENLOOP_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QWENLOOP_PROVIDER", "dashscope")
    monkeypatch.setenv("QWENLOOP_BASE_URL", server.url)
    monkeypatch.setenv("DASHSCOPE_API_KEY", "test")
    return load_example("search_bot")


@pytest.mark.parametrize("flag", [[], ["--search", "server"]], ids=["auto", "server"])
def test_search_bot_server_search(server, search_bot, capsys, flag) -> None:
    server.script(
        text_reply(
            "Qwen3 came out in April 2025 [https://qwenlm.github.io/blog/qwen3/].\n\n"
            "Sources:\n- https://qwenlm.github.io/blog/qwen3/"
        )
    )
    assert search_bot.main([*flag, "Which", "Qwen", "is", "newest?"]) == 0
    out = capsys.readouterr().out
    assert "Qwen3 came out in April 2025" in out
    assert "search mode: server" in out
    assert out.endswith("cited:\n  https://qwenlm.github.io/blog/qwen3/\n")

    (request,) = server.requests
    assert request.json["enable_search"] is True
    assert "tools" not in request.json
    system, user = request.json["messages"]
    assert system["content"].startswith("You are a research assistant.")
    assert "Search the web for anything" in system["content"]
    assert user == {"role": "user", "content": "Which Qwen is newest?"}


def test_search_bot_local_search(server, search_bot, capsys) -> None:
    SEARCHED.clear()
    server.script(
        tool_call_reply("web_search", {"query": "newest Qwen model"}),
        text_reply(
            "The newest is Qwen3 [https://qwenlm.github.io/blog/qwen3/]; the weights are on "
            "Hugging Face (https://huggingface.co/Qwen)."
        ),
    )
    tools = [make_web_search(FakeDDGS)]
    assert search_bot.main(["--search", "local", "Which Qwen is newest?"], tools=tools) == 0
    out = capsys.readouterr().out
    assert out.startswith("[searched] newest Qwen model\nThe newest is Qwen3")
    assert "search mode: local" in out
    assert out.endswith(
        "cited:\n  https://qwenlm.github.io/blog/qwen3/\n  https://huggingface.co/Qwen\n"
    )
    assert SEARCHED == ["newest Qwen model"]

    first, second = server.requests
    assert [t["function"]["name"] for t in first.json["tools"]] == ["web_search"]
    assert "enable_search" not in first.json
    assert "Search with web_search" in first.json["messages"][0]["content"]
    hits = json.loads(second.json["messages"][-1]["content"])
    assert [h["url"] for h in hits] == [
        "https://qwenlm.github.io/blog/qwen3/",
        "https://huggingface.co/Qwen",
    ]


def test_cited_urls_strip_punctuation() -> None:
    cited_urls = load_example("search_bot").cited_urls
    text = "See https://a.example/x. Also (https://b.example/y), [https://a.example/x] and none."
    assert cited_urls(text) == ["https://a.example/x", "https://b.example/y"]


# --- embed_in_program.py ---

# Each question's tool call, and how the scripted model answers from the tool's result.
CSV_CALLS = {
    "What is 17 * 23?": ("calculator", {"expression": "17 * 23"}),
    "What is the square root of 2 to six decimal places?": (
        "calculator",
        {"expression": "round(sqrt(2), 6)"},
    ),
    "What time is it in Tokyo right now?": ("current_time", {"timezone": "Asia/Tokyo"}),
    "How many seconds are there in a leap year?": ("calculator", {"expression": "366*24*3600"}),
    "What day of the week is it in New York?": (
        "current_time",
        {"timezone": "America/New_York"},
    ),
}


def csv_model(request: RecordedRequest) -> Reply:
    """Answer by conversation, since concurrent runs reach the server in any order."""
    messages = request.json["messages"]
    last = messages[-1]
    if last["role"] == "user":
        name, args = CSV_CALLS[last["content"]]
        return tool_call_reply(name, args, usage=(30, 10))
    assert last["role"] == "tool"
    return text_reply(f"Tool said: {last['content']}", usage=(50, 5))


def test_embed_in_program(server: ScriptedServer, tmp_path: Path) -> None:
    server.respond_with(csv_model)
    out_path = tmp_path / "answers.csv"
    env = example_env(server)
    proc = run_example(
        "embed_in_program.py", "examples/questions.csv", "-o", str(out_path), "-j", "3", env=env
    )
    assert proc.stdout == ""
    assert "5/5" in proc.stderr  # the progress counter (or tqdm bar) reached the end

    with out_path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["question"] for r in rows] == list(CSV_CALLS)  # input order kept
    by_question = {r["question"]: r for r in rows}
    assert by_question["What is 17 * 23?"]["answer"] == "Tool said: 391"
    assert by_question["What is 17 * 23?"]["tool_calls"] == 'calculator({"expression": "17 * 23"})'
    assert by_question["How many seconds are there in a leap year?"]["answer"] == (
        "Tool said: 31622400"
    )
    assert by_question["What is the square root of 2 to six decimal places?"]["answer"] == (
        "Tool said: 1.414214"
    )
    tokyo = by_question["What time is it in Tokyo right now?"]["answer"]
    assert '"timezone": "Asia/Tokyo"' in tokyo and '"utc_offset": "+09:00"' in tokyo
    assert all(r["tokens"] == "95" for r in rows)  # 40 + 55 tokens over two turns

    assert len(server.requests) == 10
    first_turns = [r.json for r in server.requests if r.json["messages"][-1]["role"] == "user"]
    assert len(first_turns) == 5
    for body in first_turns:
        assert sorted(t["function"]["name"] for t in body["tools"]) == [
            "calculator",
            "current_time",
        ]


def test_embed_in_program_writes_stdout(server: ScriptedServer, tmp_path: Path) -> None:
    server.respond_with(csv_model)
    questions = tmp_path / "q.csv"
    questions.write_text("What is 17 * 23?\n\n", encoding="utf-8")  # no header row
    proc = run_example("embed_in_program.py", str(questions), env=example_env(server))
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert rows == [
        ["question", "answer", "tool_calls", "tokens"],
        ["What is 17 * 23?", "Tool said: 391", 'calculator({"expression": "17 * 23"})', "95"],
    ]


# --- streaming_chat.py ---


def test_streaming_chat_keeps_history(server: ScriptedServer) -> None:
    server.script(
        stream_tool_calls_reply([("calculator", {"expression": "6*7"})]),
        stream_text_reply("6 times 7 is 42."),
        stream_text_reply("Doubled, that is 84."),
    )
    proc = run_example(
        "streaming_chat.py", env=example_env(server), stdin="What is 6 * 7?\n\nAnd doubled?\n"
    )
    assert proc.stdout.splitlines() == [
        "you> What is 6 * 7?",
        '  [tool] calculator {"expression": "6*7"}',
        "  [tool] calculator -> 42",
        "bot> 6 times 7 is 42.",
        "you> And doubled?",
        "bot> Doubled, that is 84.",
    ]

    first, second, third = (r.json for r in server.requests)
    assert all(body["stream"] is True for body in (first, second, third))
    assert first["messages"][0]["role"] == "system"
    # The second message's request carries the whole first exchange, tool call included.
    roles = [m["role"] for m in third["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert third["messages"][1]["content"] == "What is 6 * 7?"
    assert third["messages"][2]["tool_calls"][0]["function"]["name"] == "calculator"
    assert third["messages"][3]["content"] == "42"
    assert third["messages"][4]["content"] == "6 times 7 is 42."
    assert third["messages"][5] == {"role": "user", "content": "And doubled?"}


def test_streaming_chat_quits_on_command(server: ScriptedServer) -> None:
    server.script(stream_text_reply("Hello!"))
    proc = run_example(
        "streaming_chat.py", env=example_env(server), stdin="Hi\n/quit\nnever sent\n"
    )
    assert proc.stdout.splitlines() == ["you> Hi", "bot> Hello!"]
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "name", ["weather_bot", "search_bot", "embed_in_program", "streaming_chat", "assistant_bot"]
)
def test_example_docstring_says_how_to_run(name: str) -> None:
    doc = ast.get_docstring(ast.parse((EXAMPLES / f"{name}.py").read_text(encoding="utf-8")))
    assert doc and re.search(rf"DASHSCOPE_API_KEY=\S+ python examples/{name}\.py", doc)


# --- assistant_bot.py ---


def test_assistant_bot_asks_before_it_books_and_remembers(
    server: ScriptedServer, tmp_path: Path
) -> None:
    db = str(tmp_path / "assistant.db")
    booking = {"room": "Bamboo", "start": "2026-12-01 10:00", "hours": 1}
    server.script(
        tool_call_reply("free_rooms", {"people": 6}),
        tool_call_reply("book_room", booking),
        text_reply("Booked Bamboo at 10:00."),
        tool_call_reply("book_room", {**booking, "room": "Pine"}),
        text_reply("Understood, I did not book Pine."),
    )
    first = run_example(
        "assistant_bot.py",
        "--user",
        "ada",
        "--db",
        db,
        env=example_env(server),
        stdin="Book a room for 6 tomorrow at 10\ny\n",
    )
    assert "[approve?] book_room" in first.stdout
    assert "  [tool] book_room -> booked Bamboo from 2026-12-01 10:00 for 1.0 h" in first.stdout
    assert "bot> Booked Bamboo at 10:00." in first.stdout
    # A new process continues the conversation; a "no" goes back to the model.
    second = run_example(
        "assistant_bot.py",
        "--user",
        "ada",
        "--db",
        db,
        env=example_env(server),
        stdin="Also Pine\nn\n",
    )
    assert "bot> Understood, I did not book Pine." in second.stdout
    fourth = server.requests[3].json["messages"]
    assert [m["role"] for m in fourth] == [
        "system", "user", "assistant", "tool", "assistant", "tool", "assistant", "user"
    ]  # fmt: skip
    last = server.requests[4].json["messages"][-1]
    assert last["content"] == "Error: the user rejected this call: the user declined"
