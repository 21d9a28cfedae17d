"""The command line: output shapes and exit codes (0 ok, 1 failed run, 2 usage mistake)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap

import pytest

from agent.cli import main
from agent.testing import (
    error_reply,
    stream_text_reply,
    stream_tool_calls_reply,
    text_reply,
    tool_call_reply,
)


def write_tool(tmp_path):
    path = tmp_path / "mytools.py"
    path.write_text(
        textwrap.dedent(
            '''
            def shout(text: str) -> str:
                """Upper-case the text."""
                return text.upper()
            '''
        )
    )
    return path


def test_json_output_shape(openai_server, tmp_path, capsys):
    openai_server.script(tool_call_reply("shout", {"text": "hi"}), text_reply("HI it is."))
    code = main(
        [
            "run",
            "say hi",
            "--base-url",
            openai_server.url,
            "--api-key",
            "k",
            "--tool",
            f"{write_tool(tmp_path)}:shout",
            "--json",
            "--system",
            "Be loud.",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"output", "messages", "usage", "tool_calls", "turns", "cost"}
    assert out["output"] == "HI it is." and out["turns"] == 2
    assert out["tool_calls"][0] == {
        "id": out["tool_calls"][0]["id"],
        "name": "shout",
        "arguments": {"text": "hi"},
        "result": "HI",
        "error": None,
    }
    assert openai_server.requests[0].json["messages"][0] == {
        "role": "system",
        "content": "Be loud.",
    }


def test_stream_prints_text_and_tool_lines(openai_server, tmp_path, capsys):
    openai_server.script(
        stream_tool_calls_reply([("shout", {"text": "a"})]), stream_text_reply("done now")
    )
    code = main(
        [
            "run",
            "go",
            "--base-url",
            openai_server.url,
            "--tool",
            f"{write_tool(tmp_path)}:shout",
            "--stream",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert '[tool] shout({"text": "a"}) -> A' in out
    assert out.rstrip().endswith("done now")


def test_usage_mistakes_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    monkeypatch.delenv("QWENLOOP_API_KEY", raising=False)
    cases = [
        (["run", "x", "--provider", "dashscope"], "set DASHSCOPE_API_KEY"),
        (["run", "x", "--provider", "nope"], "invalid choice"),
        (
            ["run", "x", "--base-url", "http://127.0.0.1:9/v1", "--tool", "missing.py:f"],
            "does not exist",
        ),
        (
            [
                "run",
                "x",
                "--base-url",
                "http://127.0.0.1:9/v1",
                "--tool",
                f"{write_tool(tmp_path)}:nothere",
            ],
            "has no function 'nothere'",
        ),
        (
            ["run", "x", "--base-url", "http://127.0.0.1:9/v1", "--tool", "nocolon"],
            "FILE.py:FUNCTION",
        ),
        (
            ["run", "x", "--base-url", "http://127.0.0.1:9/v1", "--tools", "teleport"],
            "no built-in tool",
        ),
        (["run", "x", "--base-url", "http://127.0.0.1:9/v1", "--temperature", "9"], "temperature"),
        (["frobnicate"], "invalid choice"),
    ]
    for argv, expected in cases:
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert expected in err, (argv, err)
        assert err.count("\n") == 1, (argv, err)


def test_failed_run_exits_1_and_keeps_the_conversation(openai_server, capsys):
    openai_server.script(error_reply(400, "bad things"))
    code = main(["run", "keep me", "--base-url", openai_server.url, "--json"])
    assert code == 1
    captured = capsys.readouterr()
    assert "bad things" in captured.err
    payload = json.loads(captured.out)
    assert payload["messages"] == [{"role": "user", "content": "keep me"}]
    assert "bad things" in payload["error"]


def test_tools_and_models_listings(capsys):
    assert main(["tools", "--json"]) == 0
    names = [t["function"]["name"] for t in json.loads(capsys.readouterr().out)]
    assert {"web_search", "get_weather", "calculator", "current_time", "fetch_url"} <= set(names)
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert "qwen-max" in table and "CNY per 1M" in table


def test_console_script_runs_as_a_process(openai_server):
    openai_server.script(text_reply("pong"))
    env = {**os.environ, "QWENLOOP_BASE_URL": openai_server.url, "QWENLOOP_API_KEY": "k"}
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "run", "ping"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "pong"
    assert openai_server.requests[0].headers["authorization"] == "Bearer k"


def test_image_translate_and_budget_flags(openai_server, tmp_path, capsys):
    from tests.test_qwen_api import PNG_1PX

    image = tmp_path / "a.png"
    image.write_bytes(PNG_1PX)
    openai_server.script(text_reply("a pixel"), text_reply("Hello"))
    assert (
        main(
            [
                "run",
                "what?",
                "--base-url",
                openai_server.url,
                "--model",
                "qwen-vl-max",
                "--image",
                str(image),
            ]
        )
        == 0
    )
    content = openai_server.requests[0].json["messages"][-1]["content"]
    assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert (
        main(
            [
                "run",
                "你好",
                "--base-url",
                openai_server.url,
                "--model",
                "qwen-mt-plus",
                "--translate",
                "中文:English",
            ]
        )
        == 0
    )
    assert openai_server.requests[1].json["translation_options"] == {
        "source_lang": "Chinese",
        "target_lang": "English",
    }
    assert main(["run", "x", "--base-url", openai_server.url, "--translate", "Chinese:Elvish"]) == 2
    assert "Elvish" in capsys.readouterr().err


def test_a_tool_file_with_a_dataclass_under_future_annotations(openai_server, tmp_path, capsys):
    path = tmp_path / "dc_tools.py"
    path.write_text(
        textwrap.dedent(
            '''
            from __future__ import annotations
            from dataclasses import dataclass

            @dataclass
            class Point:
                x: int
                y: int

            def norm1(x: int, y: int) -> int:
                """Manhattan norm."""
                p = Point(x, y)
                return abs(p.x) + abs(p.y)
            '''
        )
    )
    openai_server.script(tool_call_reply("norm1", {"x": 3, "y": -4}), text_reply("7"))
    code = main(["run", "q", "--base-url", openai_server.url, "--api-key", "k",
                 "--tool", f"{path}:norm1"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert openai_server.requests[1].json["messages"][-1]["content"] == "7"


def test_a_tool_file_that_exits_at_import_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "exits.py"
    path.write_text("import sys\nsys.exit(0)\n")
    code = main(["run", "q", "--base-url", "http://127.0.0.1:9/v1", "--tool", f"{path}:f"])
    err = capsys.readouterr().err
    assert code == 2
    assert "called sys.exit(0)" in err and len(err.strip().splitlines()) == 1


def test_numbers_that_would_switch_a_limit_off_are_refused(capsys):
    for flag, value in (("--max-cost", "nan"), ("--max-cost", "inf"), ("--temperature", "nan")):
        code = main(["run", "q", "--base-url", "http://127.0.0.1:9/v1", flag, value])
        assert code == 2, (flag, value)
        assert "must be a finite number" in capsys.readouterr().err


def test_run_dash_reads_the_prompt_from_standard_input(openai_server):
    openai_server.script(text_reply("piped"))
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "-", "--base-url", openai_server.url,
         "--api-key", "k"],
        input="What is piped in?", capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "piped"
    assert openai_server.requests[0].json["messages"][-1]["content"] == "What is piped in?"


def test_a_prompt_with_bytes_that_are_not_utf8(openai_server, capsys):
    """A shell passes undecodable bytes as surrogate escapes; they are sent as U+FFFD."""
    openai_server.script(text_reply("ok"), text_reply("ok"))
    prompt = "caf\udce9 au lait"
    assert main(["run", prompt, "--base-url", openai_server.url, "--api-key", "k"]) == 0
    assert openai_server.requests[0].json["messages"][-1]["content"] == "caf\ufffd au lait"

    from agent import Agent

    agent = Agent(base_url=openai_server.url, api_key="k")
    assert agent.run_sync("lone \ud800 surrogate").output == "ok"
    assert openai_server.requests[1].json["messages"][-1]["content"] == "lone \ufffd surrogate"


def test_the_key_never_shows_in_a_repr(openai_server):
    from agent import Agent

    key = "sk-abcdefghijklmnopqrstuvwxyz0123"
    agent = Agent(base_url=openai_server.url, api_key=key)
    assert key not in repr(agent.endpoint)
    assert "sk-…0123" in repr(agent.endpoint)


def test_a_reader_that_goes_away_ends_the_cli_quietly(openai_server):
    openai_server.script(text_reply("x" * 200_000))
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "long", "--base-url", openai_server.url,
         "--api-key", "k"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(10) == b"x" * 10
    proc.stdout.close()  # like `| head -c 10`
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and err == ""


def cli(argv):
    """Run the CLI in-process; argparse's own errors become their exit code."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_run_session_then_sessions_list_show_and_delete(
    openai_server, tmp_path, capsys, monkeypatch
):
    store = tmp_path / "data" / "sessions.db"
    monkeypatch.setenv("QWENLOOP_SESSIONS", str(store))
    openai_server.script(
        tool_call_reply("shout", {"text": "hi"}), text_reply("HI it is."), text_reply("Again.")
    )
    tool_spec = f"{write_tool(tmp_path)}:shout"
    base = ["--base-url", openai_server.url, "--api-key", "k", "--tool", tool_spec]
    assert cli(["run", "say hi", "--session", "chat", *base]) == 0
    assert cli(["run", "once more\nplease", "--session", "chat", "--stream", *base]) == 0
    sent = [m for m in openai_server.requests[2].json["messages"] if m["role"] != "system"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "assistant", "user"]
    capsys.readouterr()

    for argv in (["sessions"], ["sessions", "list"]):
        assert cli(argv) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 1 and lines[0].startswith("chat      6 messages  updated 20")
    assert cli(["sessions", "list", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["name"] == "chat" and row["messages"] == 6

    assert cli(["sessions", "show", "chat"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "user: say hi",
        'assistant: [calls shout({"text": "hi"})]',
        "tool shout: HI",
        "assistant: HI it is.",
        "user: once more please",
        "assistant: Again.",
    ]
    assert cli(["sessions", "show", "chat", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown[4] == {"role": "user", "content": "once more\nplease"}

    assert cli(["sessions", "delete", "chat"]) == 0
    assert "deleted session 'chat'" in capsys.readouterr().out
    for argv in (["sessions", "show", "chat"], ["sessions", "delete", "chat"]):
        assert cli(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no session named 'chat'" in err and str(store) in err
    assert cli(["sessions"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no sessions in" in captured.err


def test_sessions_mistakes_and_a_broken_store(tmp_path, capsys, monkeypatch):
    store = tmp_path / "sessions.db"
    monkeypatch.setenv("QWENLOOP_SESSIONS", str(store))
    usage = [
        (["sessions", "show"], "name"),
        (["sessions", "frob"], "invalid choice"),
        (["run", "x", "--base-url", "http://127.0.0.1:9/v1", "--session", " "], "--session"),
    ]
    for argv, expected in usage:
        assert cli(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, (argv, err)
    assert cli(["sessions", "show", "nothing"]) == 1  # no store yet: nothing to show
    assert not store.exists()
    capsys.readouterr()

    store.write_bytes(b"not a database" * 200)
    for argv in (
        ["sessions"],
        ["sessions", "show", "x"],
        ["sessions", "delete", "x"],
        ["run", "x", "--base-url", "http://127.0.0.1:9/v1", "--session", "x"],
    ):
        assert cli(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(store) in err and "Traceback" not in err, err


def write_approval_tool(tmp_path):
    path = tmp_path / "banktools.py"
    path.write_text(
        textwrap.dedent(
            '''
            from agent import tool

            @tool(needs_approval=True)
            def transfer(to: str, amount: int) -> str:
                """Move money."""
                return f"moved {amount} to {to}"
            '''
        )
    )
    return f"{path}:transfer"


def approval_run(openai_server, spec, *flags):
    return main(
        [
            "run",
            "pay bob",
            "--base-url",
            openai_server.url,
            "--api-key",
            "k",
            "--tool",
            spec,
            *flags,
        ]
    )


def test_a_call_that_needs_approval_without_a_terminal(openai_server, tmp_path, capsys):
    spec = write_approval_tool(tmp_path)
    openai_server.script(tool_call_reply("transfer", {"to": "bob", "amount": 5}))
    assert approval_run(openai_server, spec) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "transfer needs approval" in err and "--approve-all or --deny-all" in err
    assert len(openai_server.requests) == 1


def test_approve_all_and_deny_all(openai_server, tmp_path, capsys):
    spec = write_approval_tool(tmp_path)
    openai_server.script(
        tool_call_reply("transfer", {"to": "bob", "amount": 5}),
        text_reply("Moved 5 to bob."),
        tool_call_reply("transfer", {"to": "bob", "amount": 5}),
        text_reply("I was not allowed to."),
    )
    assert approval_run(openai_server, spec, "--approve-all", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tool_calls"][0]["result"] == "moved 5 to bob"
    assert approval_run(openai_server, spec, "--deny-all", "--stream") == 0
    assert "I was not allowed to." in capsys.readouterr().out
    assert openai_server.requests[3].json["messages"][-1]["content"] == (
        "Error: the user rejected this call: the user denied it (--deny-all)"
    )
    with pytest.raises(SystemExit) as info:
        approval_run(openai_server, spec, "--deny-all", "--approve-all")
    assert info.value.code == 2


def test_the_terminal_is_asked(openai_server, tmp_path, capsys, monkeypatch):
    spec = write_approval_tool(tmp_path)
    openai_server.script(
        tool_call_reply("transfer", {"to": "bob", "amount": 5}), text_reply("Done.")
    )

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
    asked: list[str] = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "y")
    assert approval_run(openai_server, spec) == 0
    assert asked == ['Run transfer({"to": "bob", "amount": 5})? [y/N] ']
    assert "Done." in capsys.readouterr().out


def test_serve_answers_an_openai_client_and_stops_on_ctrl_c(openai_server):
    import queue
    import signal
    import threading

    import openai

    openai_server.script(tool_call_reply("calculator", {"expression": "6*7"}), text_reply("42."))
    env = {**os.environ, "QWENLOOP_SERVE_API_KEY": "cli-key-0123456789"}
    command = [sys.executable, "-m", "agent", "serve", "--port", "0", "--base-url"]
    command += [openai_server.url, "--api-key", "test", "--tools", "calculator", "--name", "calc"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    try:
        banner = lines.get(timeout=60)
        url = next(word for word in banner.split() if word.startswith("http://"))
        client = openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key="cli-key-0123456789")
        assert [m.id for m in client.models.list()] == ["calc"]
        reply = client.chat.completions.create(
            model="calc", messages=[{"role": "user", "content": "6*7?"}]
        )
        assert reply.choices[0].message.content == "42."
        client.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
