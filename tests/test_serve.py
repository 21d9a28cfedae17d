"""`qwenloop serve` over real HTTP: uvicorn serving `make_app`, the official openai SDK as the client,
a ScriptedServer as the model; and the chat page driven in headless Chromium over the DevTools
protocol."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import openai
import pytest
import uvicorn

from agent import Agent, tool
from agent.errors import UserError
from agent.serve import KEY_VARIABLE, make_app, serve
from agent.testing import (
    ScriptedServer,
    error_reply,
    stream_text_reply,
    stream_tool_calls_reply,
    text_reply,
    tool_call_reply,
)

TIMEOUT = 20.0
KEY = "serve-key-0123456789"


@contextlib.contextmanager
def served(agent: Agent, **options: Any) -> Iterator[str]:
    """Serve `make_app(agent, **options)` with uvicorn on 127.0.0.1 in a thread; yield its URL.

    The agent is closed on the server's own event loop, where its connections live.
    """
    app = make_app(agent, **options)
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, log_level="warning", ws="none")
    server = uvicorn.Server(config)

    async def main() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            await agent.aclose()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "uvicorn did not stop"


_clients: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def client(url: str, key: str = "unused", **kw: Any) -> openai.OpenAI:
    """An openai SDK client of the served app, closed after the test."""
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", TIMEOUT)
    _clients.append(openai.OpenAI(base_url=url + "/v1", api_key=key, **kw))
    return _clients[-1]


def note_taker() -> tuple[Any, list[str]]:
    notes: list[str] = []

    @tool
    def save_note(text: str) -> str:
        """Save a note for later.

        Args:
            text: What to note.
        """
        notes.append(text)
        return f"saved {text!r}"

    return save_note, notes


class Gate:
    """A tool that waits until the test releases it, and records whether it was cancelled."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.cancelled = threading.Event()
        gate = self

        @tool
        async def wait_for_release() -> str:
            """Wait until released."""
            gate.started.set()
            try:
                # The test's thread releases it: a threading.Event, polled.
                while not gate.release.is_set():  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                gate.cancelled.set()
                raise
            return "released"

        self.tool = wait_for_release


def agent_for(server: ScriptedServer, *tools: Any, **kw: Any) -> Agent:
    kw.setdefault("api_key", "test")
    return Agent("qwen-plus", base_url=server.url, tools=list(tools), retries=0, **kw)


def test_completion_runs_the_agents_tools_on_the_server(openai_server):
    save_note, notes = note_taker()
    openai_server.script(
        tool_call_reply("save_note", {"text": "milk"}, usage=(30, 5)),
        text_reply("Noted: milk.", usage=(40, 4)),
    )
    history = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi! What shall I note?"},
    ]
    with served(agent_for(openai_server, save_note)) as url:
        completion = client(url).chat.completions.create(
            model="whatever-the-client-says",
            messages=[*history, {"role": "user", "content": "Note milk."}],
            temperature=0.2,
        )
    assert completion.object == "chat.completion"
    assert completion.model == "qwenloop"
    assert completion.choices[0].message.content == "Noted: milk."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (70, 9)
    assert notes == ["milk"]  # the tool ran, here on the server
    extra = completion.model_extra["qwenloop"]
    assert extra["turns"] == 2
    assert [(c["name"], c["arguments"], c["result"]) for c in extra["tool_calls"]] == [
        ("save_note", {"text": "milk"}, "saved 'milk'")
    ]
    first, second = openai_server.requests
    sent = [m for m in first.json["messages"] if m["role"] != "system"]
    assert sent == [*history, {"role": "user", "content": "Note milk."}]
    assert first.json["temperature"] == 0.2
    assert first.json["tools"][0]["function"]["name"] == "save_note"
    assert second.json["messages"][-1]["role"] == "tool"


def test_stream_carries_the_answer_and_the_tool_calls(openai_server):
    save_note, notes = note_taker()
    openai_server.script(
        stream_tool_calls_reply([("save_note", {"text": "eggs"})], usage=(30, 5)),
        stream_text_reply("Noted: eggs.", usage=(40, 4)),
    )
    with served(agent_for(openai_server, save_note)) as url:
        stream = client(url).chat.completions.create(
            model="qwenloop",
            messages=[{"role": "user", "content": "Note eggs."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Noted: eggs."
    events = [c.model_extra["qwenloop_event"] for c in chunks if "qwenloop_event" in c.model_extra]
    assert [e["type"] for e in events] == ["tool_call_started", "tool_call_finished"]
    assert events[0]["name"] == "save_note" and events[0]["arguments"] == {"text": "eggs"}
    assert events[1]["result"] == "saved 'eggs'" and events[1]["error"] is None
    assert events[0]["id"] == events[1]["id"]
    assert notes == ["eggs"]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    *_, last = chunks
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (70, 9)
    assert all(r.json["stream"] is True for r in openai_server.requests)


def test_models_lists_the_agent(openai_server):
    with served(agent_for(openai_server)) as url:
        assert [m.id for m in client(url).models.list()] == ["qwenloop"]
    with served(agent_for(openai_server), model_name="note-taker") as url:
        (model,) = client(url).models.list()
    assert (model.id, model.owned_by) == ("note-taker", "qwenloop")


@pytest.mark.parametrize(
    ("request_kw", "param", "code"),
    [
        ({"messages": []}, "messages", None),
        ({"messages": [{"role": "assistant", "content": "Hi"}]}, "messages", None),
        ({"messages": [{"role": "robot", "content": "Hi"}]}, "messages[0]", None),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0]", None),
        (
            {
                "messages": [{"role": "user", "content": "Hi"}],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            },
            "tools",
            "tools_not_supported",
        ),
        (
            {"messages": [{"role": "tool", "tool_call_id": "c1", "content": "42"}]},
            "messages[0]",
            "tools_not_supported",
        ),
        ({"messages": [{"role": "user", "content": "Hi"}], "n": 2}, "n", None),
    ],
)
def test_bad_requests_are_400s_in_openais_shape(openai_server, request_kw, param, code):
    with served(agent_for(openai_server)) as url, pytest.raises(openai.BadRequestError) as caught:
        client(url).chat.completions.create(model="qwenloop", **request_kw)
    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert caught.value.code == code
    assert caught.value.type == "invalid_request_error"
    assert openai_server.requests == []  # nothing reached the model


def test_body_that_is_not_json_or_not_an_object(openai_server):
    with served(agent_for(openai_server)) as url, httpx.Client(base_url=url) as http:
        endpoint = "/v1/chat/completions"
        not_json = http.post(
            endpoint, content=b"{nope", headers={"content-type": "application/json"}
        )
        a_list = http.post(endpoint, json=[{"role": "user", "content": "Hi"}])
        as_text = http.post(endpoint, content=b"{}", headers={"content-type": "text/plain"})
        missing = http.get("/v1/nothing")
        wrong_method = http.get(endpoint)
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]["message"]
    assert a_list.status_code == 400 and "JSON object" in a_list.json()["error"]["message"]
    assert as_text.status_code == 415  # a form or text body a web page could send unasked
    assert missing.status_code == 404 and set(missing.json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
    assert wrong_method.status_code == 405


def test_a_body_over_the_limit_is_refused_with_413(openai_server):
    with served(agent_for(openai_server), max_body_bytes=2_000) as url:
        with pytest.raises(openai.APIStatusError) as caught:
            client(url).chat.completions.create(
                model="qwenloop", messages=[{"role": "user", "content": "x" * 5_000}]
            )
        # A chunked body has no Content-Length: it is counted as it arrives.
        body = json.dumps({"messages": [{"role": "user", "content": "y" * 5_000}]}).encode()
        chunked = httpx.post(
            url + "/v1/chat/completions",
            content=iter([body[:1_000], body[1_000:]]),
            headers={"content-type": "application/json"},
            timeout=TIMEOUT,
        )
    assert caught.value.status_code == 413
    assert caught.value.code == "too_large"
    assert chunked.status_code == 413
    assert openai_server.requests == []


def test_api_key_is_required_when_configured(openai_server):
    openai_server.script(text_reply("Hello."))
    with served(agent_for(openai_server), api_key=KEY) as url:
        with pytest.raises(openai.AuthenticationError) as wrong:
            client(url, key="not-the-key").models.list()
        with pytest.raises(openai.AuthenticationError) as wrong_chat:
            client(url, key="not-the-key").chat.completions.create(
                model="qwenloop", messages=[{"role": "user", "content": "Hi"}]
            )
        missing = httpx.get(url + "/v1/models", timeout=TIMEOUT)
        page = httpx.get(url + "/", timeout=TIMEOUT)  # the page holds no secret
        right = client(url, key=KEY)
        assert [m.id for m in right.models.list()] == ["qwenloop"]
        answer = right.chat.completions.create(
            model="qwenloop", messages=[{"role": "user", "content": "Hi"}]
        )
    assert wrong.value.status_code == 401 and wrong.value.code == "invalid_api_key"
    assert wrong_chat.value.status_code == 401
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["code"] == "missing_api_key"
    assert KEY not in wrong.value.response.text + missing.text
    assert page.status_code == 200 and KEY not in page.text
    assert answer.choices[0].message.content == "Hello."
    assert len(openai_server.requests) == 1


def test_without_a_key_only_loopback_hosts_and_same_origin_are_answered(openai_server):
    with served(agent_for(openai_server)) as url, httpx.Client(base_url=url) as http:
        port = url.rpartition(":")[2]
        rebound = http.get("/v1/models", headers={"host": f"attacker.example:{port}"})
        page = http.get("/", headers={"host": "attacker.example"})
        localhost = http.get("/v1/models", headers={"host": f"localhost:{port}"})
        body = {"messages": []}  # invalid: a 400 shows the request got past the guards
        foreign = http.post(
            "/v1/chat/completions", json=body, headers={"origin": "http://attacker.example"}
        )
        same = http.post("/v1/chat/completions", json=body, headers={"origin": url})
    assert rebound.status_code == 403 and rebound.json()["error"]["code"] == "forbidden_host"
    assert page.status_code == 403
    assert localhost.status_code == 200
    assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "forbidden_origin"
    assert same.status_code == 400


def test_concurrency_limit_answers_429(openai_server):
    gate = Gate()
    openai_server.script(
        stream_tool_calls_reply([("wait_for_release", {})]),
        stream_text_reply("Released."),
        text_reply("Next."),
    )
    with served(agent_for(openai_server, gate.tool), max_concurrency=1) as url:
        stream = client(url).chat.completions.create(
            model="qwenloop", messages=[{"role": "user", "content": "Wait."}], stream=True
        )
        chunks = iter(stream)
        for chunk in chunks:
            if "qwenloop_event" in chunk.model_extra:
                break
        assert gate.started.wait(TIMEOUT)
        with pytest.raises(openai.RateLimitError) as caught:
            client(url).chat.completions.create(
                model="qwenloop", messages=[{"role": "user", "content": "Me too."}]
            )
        gate.release.set()
        rest = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        after = client(url).chat.completions.create(
            model="qwenloop", messages=[{"role": "user", "content": "Now?"}]
        )
    assert caught.value.status_code == 429
    assert caught.value.code == "concurrency_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "1"
    assert rest == "Released."
    assert after.choices[0].message.content == "Next."
    assert not gate.cancelled.is_set()


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_hangs_up_cancels_its_run(openai_server, stream):
    gate = Gate()
    first = stream_tool_calls_reply if stream else tool_calls_reply_
    openai_server.script(first([("wait_for_release", {})]), text_reply("After."))
    with served(agent_for(openai_server, gate.tool), max_concurrency=1) as url:
        if stream:
            response = client(url).chat.completions.create(
                model="qwenloop", messages=[{"role": "user", "content": "Wait."}], stream=True
            )
            for chunk in response:
                if "qwenloop_event" in chunk.model_extra:
                    break
            response.close()  # hang up mid-stream
        else:
            with pytest.raises(openai.APITimeoutError):
                client(url, timeout=1.0).chat.completions.create(
                    model="qwenloop", messages=[{"role": "user", "content": "Wait."}]
                )
        assert gate.started.wait(TIMEOUT)
        assert gate.cancelled.wait(TIMEOUT), "the tool kept running after the client left"
        # The cancelled run's slot is free again: the one allowed run can start.
        after = client(url, max_retries=5).chat.completions.create(
            model="qwenloop", messages=[{"role": "user", "content": "Still there?"}]
        )
    assert after.choices[0].message.content == "After."
    assert len(openai_server.requests) == 2  # the cancelled run asked the model nothing more


def tool_calls_reply_(calls: list[tuple[str, Any]]) -> Any:
    ((name, arguments),) = calls
    return tool_call_reply(name, arguments)


UPSTREAM_KEY = "sk-upstream-secret-0123456789"


@pytest.mark.parametrize("stream", [False, True])
def test_a_failed_run_is_a_typed_error_without_key_or_traceback(openai_server, stream):
    openai_server.script(
        error_reply(401, f"Incorrect API key provided: {UPSTREAM_KEY}", code="invalid_api_key")
    )
    agent = agent_for(openai_server, api_key=UPSTREAM_KEY)
    with served(agent) as url:
        messages = [{"role": "user", "content": "Hi"}]
        with pytest.raises(openai.APIError) as caught:
            response = client(url).chat.completions.create(
                model="qwenloop", messages=messages, stream=stream
            )
            list(response)  # a stream reports the error in its body: the status is already 200
    error = caught.value
    assert error.code == "AuthenticationError"  # the upstream 401 is the server's failure
    assert error.type == "server_error"
    if not stream:
        assert isinstance(error, openai.InternalServerError) and error.status_code == 500
    shown = json.dumps(error.body) + str(error.message)
    assert UPSTREAM_KEY not in shown and "Traceback" not in shown
    assert "Incorrect API key" in shown


def test_serving_beyond_loopback_needs_a_key(openai_server, monkeypatch):
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    agent = agent_for(openai_server)
    with pytest.raises(UserError, match=KEY_VARIABLE):
        serve(agent, host="0.0.0.0", port=0)
    with pytest.raises(UserError, match="empty"):
        make_app(agent, api_key=" ")
    with pytest.raises(UserError, match="at least 1"):
        make_app(agent, max_concurrency=0)


SERVE_SCRIPT = """
import sys
from agent import Agent
from agent.serve import serve
agent = Agent("qwen-plus", base_url=sys.argv[1], api_key="test")
serve(agent, port=0, log_level="warning")
print("stopped", file=sys.stderr)
"""


def test_serve_runs_until_ctrl_c(openai_server):
    """`serve` itself: the key from the environment, a free port, and a clean stop on SIGINT."""
    openai_server.script(text_reply("Served."))
    env = {**os.environ, KEY_VARIABLE: KEY}
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE_SCRIPT, openai_server.url],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True)
    reader.start()
    try:
        banner = lines.get(timeout=TIMEOUT)
        assert banner.startswith("qwenloop: serving at http://127.0.0.1:"), banner
        url = banner.split()[3].rstrip("/")
        with pytest.raises(openai.AuthenticationError):
            client(url).models.list()
        answer = client(url, key=KEY).chat.completions.create(
            model="qwenloop", messages=[{"role": "user", "content": "Hi"}]
        )
        assert answer.choices[0].message.content == "Served."
        proc.send_signal(signal.SIGINT)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(TIMEOUT)
    proc.stderr.close()
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert "stopped\n" in rest and not any("Traceback" in line for line in rest), rest
    assert KEY not in banner + "".join(rest)


# --- the page, in headless Chromium ------------------------------------------------------------


def chromium() -> str:
    """The Chromium executable; the test skips without one (fails with QWENLOOP_REQUIRE_BROWSER)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    reason = "Chromium is not installed (Debian: apt-get install chromium): page not tested"
    if os.environ.get("QWENLOOP_REQUIRE_BROWSER"):  # CI: a missing browser is a failure
        pytest.fail(reason)
    pytest.skip(reason)


class DevTools:
    """The Chrome DevTools Protocol over one page's websocket: calls, and waits on the DOM."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.last_id = 0

    async def call(self, method: str, **params: Any) -> Any:
        self.last_id += 1
        await self.ws.send_json({"id": self.last_id, "method": method, "params": params})
        while True:  # events of domains we did not enable are rare; skip them
            message = await self.ws.receive_json(timeout=TIMEOUT)
            if message.get("id") == self.last_id:
                assert "error" not in message, f"{method}: {message['error']}"
                return message["result"]

    async def eval(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    async def wait_for(self, expression: str) -> Any:
        deadline = time.monotonic() + TIMEOUT
        while not (value := await self.eval(expression)):
            if time.monotonic() > deadline:
                page = await self.eval("document.body.innerText")
                raise AssertionError(f"timed out waiting for {expression}; the page shows:\n{page}")
            await asyncio.sleep(0.05)
        return value


@contextlib.asynccontextmanager
async def headless_chromium(executable: str, tmp_path: Path) -> AsyncIterator[DevTools]:
    profile = tmp_path / "chromium-profile"
    args = [
        executable, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={profile}",
        "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--disable-extensions",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--mute-audio",
    ]  # fmt: skip
    if os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    with (tmp_path / "chromium.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(*args, "about:blank", stdout=log, stderr=log)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + TIMEOUT
        while not port_file.is_file() or not port_file.read_text().strip():
            assert proc.returncode is None, (tmp_path / "chromium.log").read_text()
            assert time.monotonic() < deadline, "Chromium did not open its DevTools port"
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            pages: list[dict[str, Any]] = []
            while not pages:
                assert time.monotonic() < deadline, "Chromium opened no page"
                async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                    pages = [t for t in await response.json() if t["type"] == "page"]
                await asyncio.sleep(0.05)
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield DevTools(ws)
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()


PAGE_STATE = """(() => {
  const texts = (selector) => [...document.querySelectorAll(selector)].map((e) => e.textContent);
  const answers = texts(".assistant");
  if (document.body.dataset.state !== "idle" || answers.length < %d) return null;
  return {answers, tools: texts(".tool"), errors: texts(".error")};
})()"""


async def ask(page: DevTools, question: str, answers: int) -> dict[str, Any]:
    """Type the question in the page's text box, press Send, wait for the answer to finish."""
    await page.eval("document.getElementById('input').focus()")
    await page.call("Input.insertText", text=question)
    await page.eval("document.getElementById('send').click()")
    await page.wait_for("document.body.dataset.state === 'busy'")
    state: dict[str, Any] = await page.wait_for(PAGE_STATE % answers)
    return state


@pytest.mark.parametrize("key", [None, KEY], ids=["loopback", "with-key"])
async def test_page_in_headless_chromium(openai_server, tmp_path, key):
    executable = chromium()
    save_note, notes = note_taker()
    openai_server.script(
        stream_tool_calls_reply([("save_note", {"text": "milk"})]),
        stream_text_reply("Noted: milk.", chunk_delay=0.05),
        stream_text_reply("You asked me to note milk."),
    )
    with served(agent_for(openai_server, save_note), api_key=key, model_name="notes") as url:
        async with headless_chromium(executable, tmp_path) as page:
            await page.call("Page.navigate", url=url + "/")
            if key is not None:  # the page asks for the key, and keeps it for the session
                await page.wait_for("document.getElementById('keyform')?.hidden === false")
                await page.eval("document.getElementById('key').focus()")
                await page.call("Input.insertText", text=key)
                await page.eval("document.querySelector('#keyform button').click()")
            await page.wait_for("document.getElementById('model')?.textContent === 'notes'")
            first = await ask(page, "Please note milk.", 1)
            second = await ask(page, "What did I ask?", 2)
    assert first["errors"] == [] and second["errors"] == []
    assert first["answers"] == ["Noted: milk."]
    assert first["tools"] == ['⚙ save_note({"text":"milk"}) → saved \'milk\'']
    assert second["answers"] == ["Noted: milk.", "You asked me to note milk."]
    assert notes == ["milk"]
    # The page keeps the conversation and sends it whole with the next question.
    sent = [m for m in openai_server.requests[2].json["messages"] if m["role"] != "system"]
    assert sent == [
        {"role": "user", "content": "Please note milk."},
        {"role": "assistant", "content": "Noted: milk."},
        {"role": "user", "content": "What did I ask?"},
    ]
    assert all(r.json["stream"] is True for r in openai_server.requests)
