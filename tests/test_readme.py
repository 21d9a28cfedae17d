"""Every Python block in the README runs, against a scripted stand-in for DashScope."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.testing import (
    ScriptedServer,
    stream_text_reply,
    stream_tool_calls_reply,
    text_reply,
    tool_call_reply,
)

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
SAMPLES = {"string": "Hangzhou", "integer": 3, "number": 1.5, "boolean": True}


def respond(request):
    body = request.json
    stream = bool(body.get("stream"))
    if body.get("response_format"):
        text = '{"name": "Shanghai", "population": 24870000}'
        return stream_text_reply(text) if stream else text_reply(text)
    if body.get("tools") and body["messages"][-1]["role"] == "user":
        fn = body["tools"][0]["function"]
        props = fn["parameters"].get("properties", {})
        args = {
            k: SAMPLES.get(props[k].get("type"), "x") for k in fn["parameters"].get("required", [])
        }
        if stream:
            return stream_tool_calls_reply([(fn["name"], args)])
        return tool_call_reply(fn["name"], args)
    return stream_text_reply("It is sunny.") if stream else text_reply("It is sunny.")


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)  # blocks may write files (a session's database)
    with ScriptedServer() as server:
        server.respond_with(respond)
        monkeypatch.setenv("QWENLOOP_BASE_URL", server.url)
        monkeypatch.setenv("DASHSCOPE_API_KEY", "test")
        exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {"__name__": "readme"})
        assert server.failures == []
    out = capsys.readouterr().out
    if "print(" in BLOCKS[index]:
        assert out.strip(), "the block printed nothing"
