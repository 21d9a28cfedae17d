"""The command line: output shapes and exit codes (0 ok, 1 failed run, 2 usage mistake)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

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
    assert main(["run", "what?", "--base-url", openai_server.url, "--model", "qwen-vl-max", "--image", str(image)]) == 0
    content = openai_server.requests[0].json["messages"][-1]["content"]
    assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert main(["run", "你好", "--base-url", openai_server.url, "--model", "qwen-mt-plus", "--translate", "中文:English"]) == 0
    assert openai_server.requests[1].json["translation_options"] == {"source_lang": "Chinese", "target_lang": "English"}
    assert main(["run", "x", "--base-url", openai_server.url, "--translate", "Chinese:Elvish"]) == 2
    assert "Elvish" in capsys.readouterr().err
