"""The Ray engine of batches: a local Ray on 127.0.0.1 against the scripted server."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent import Agent
from agent.batch import Batch
from agent.cli import main
from agent.errors import AuthenticationError, ConfigError, UserError
from agent.testing import ScriptedServer, error_reply, text_reply, tool_call_reply

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="needs Ray: pip install 'qwenloop[ray]'"
)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def out_rows(path):
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "a partial last line"
    return [json.loads(line) for line in text.splitlines()]


def echo(delay: float = 0.0):
    def reply(request):
        return text_reply(f"echo: {request.json['messages'][-1]['content']}", delay=delay)

    return reply


def factory(url: str, **kw: Any):
    """A function building the agent on each worker; cloudpickle sends it by value."""

    def make() -> Agent:
        return Agent("qwen-plus", base_url=url, api_key="test", **kw)

    return make


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """One local Ray for the module, bound to 127.0.0.1; every engine here joins it."""
    patch = pytest.MonkeyPatch()
    patch.delenv("RAY_ADDRESS", raising=False)
    patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        patch.undo()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s
        s.assert_done()


def ray_batch(url: str, workers: int = 2, **kw: Any) -> Batch:
    from agent.batch_ray import RayEngine

    kw.setdefault("progress", "off")
    return Batch(factory(url), engine=RayEngine(workers=workers), **kw)


@needs_ray
async def test_rows_run_on_the_workers(ray_cluster, server, tmp_path):
    server.respond_with(echo())
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": f"q{i}"} for i in range(12)])
    summary = await ray_batch(server.url, concurrency=3).run(source, tmp_path / "out.jsonl")
    rows = out_rows(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in rows) == list(range(12))
    for row in rows:
        assert set(row) == {"id", "output", "usage", "cost", "turns", "seconds"}
        assert row["output"] == f"echo: q{row['id']}" and row["usage"]["total_tokens"] == 28
    assert (summary.done, summary.failed, summary.total, summary.tokens) == (12, 0, 12, 336)
    assert ray_cluster.is_initialized()  # a Ray the engine did not start stays up


def whoami() -> str:
    """Say which process runs this tool."""
    return str(os.getpid())


@needs_ray
async def test_tools_and_template_variables_travel_to_the_workers(ray_cluster, server, tmp_path):
    from agent import Template
    from agent.batch_ray import RayEngine

    def reply(request):
        last = request.json["messages"][-1]
        if last["role"] == "tool":
            system = request.json["messages"][0]["content"]
            return text_reply(f"{system} pid {last['content']}")
        return tool_call_reply("whoami", {})

    server.respond_with(reply)
    source = write_jsonl(
        tmp_path / "in.jsonl", [{"id": i, "prompt": "?", "n": i} for i in range(8)]
    )
    url = server.url

    def make() -> Agent:  # a Template is built on the worker: it does not pickle
        return Agent(
            "qwen-plus",
            base_url=url,
            api_key="t",
            tools=[whoami],
            instructions=Template("row {{ n }}"),
        )

    batch = Batch(make, engine=RayEngine(workers=2), concurrency=2, progress="off")
    await batch.run(source, tmp_path / "out.jsonl")
    outputs = {r["id"]: r["output"] for r in out_rows(tmp_path / "out.jsonl")}
    pids = {text.rpartition(" ")[2] for text in outputs.values()}
    assert all(outputs[i].startswith(f"row {i} pid ") for i in range(8))
    assert len(pids) == 2 and str(os.getpid()) not in pids  # both workers, not this process


@needs_ray
async def test_resume_skips_the_ids_already_written(ray_cluster, server, tmp_path):
    server.respond_with(echo())
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": f"q{i}"} for i in range(6)])
    out = tmp_path / "out.jsonl"
    done = {"id": 1, "output": "before", "usage": {}, "cost": None, "turns": 1, "seconds": 0}
    out.write_text(json.dumps(done) + "\n" + '{"id": 3, "outp')  # a killed batch's last line
    with pytest.raises(UserError, match="--resume"):
        await ray_batch(server.url).run(source, out)
    summary = await ray_batch(server.url, resume=True).run(source, out)
    rows = out_rows(out)
    assert (rows[0]["id"], rows[0]["output"]) == (1, "before")
    assert sorted(r["id"] for r in rows) == list(range(6))  # never an id twice
    assert (summary.done, summary.skipped) == (5, 1)
    assert sorted(r.json["messages"][-1]["content"] for r in server.requests) == [
        "q0", "q2", "q3", "q4", "q5",
    ]  # fmt: skip


class WindowCounter:
    """Answers after `delay`, recording when each request arrived; 429 first if `refuse`."""

    def __init__(self, delay: float, refuse: float | None = None) -> None:
        self.delay = delay
        self.refuse = refuse
        self.refused_at: float | None = None
        self.arrivals: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, request):
        with self.lock:
            now = time.monotonic()
            if self.refuse is not None and self.refused_at is None:
                self.refused_at = now
                return error_reply(429, "slow down", headers={"retry-after": str(self.refuse)})
            self.arrivals.append(now)
        return text_reply("ok", delay=self.delay)

    def most_in(self, window: float) -> int:
        times = sorted(self.arrivals)
        return max(sum(1 for t in times[i:] if t - start < window) for i, start in enumerate(times))


@needs_ray
async def test_the_rpm_holds_for_all_workers_together(ray_cluster, server, tmp_path):
    counter = WindowCounter(delay=0.05)
    server.respond_with(counter)
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": "q"} for i in range(16)])
    # 2 workers × 4 runs could send 8 requests at once; 600 rpm allows 10 a second, evenly.
    summary = await ray_batch(server.url, concurrency=4, rpm=600).run(source, tmp_path / "o.jsonl")
    assert summary.done == 16
    spread = max(counter.arrivals) - min(counter.arrivals)
    assert spread >= 15 * 0.1 * 0.9
    assert counter.most_in(1.0) <= 11  # 10 a second, plus one for the jitter of the hop


@needs_ray
async def test_a_429_pauses_every_worker_and_is_counted(ray_cluster, server, tmp_path):
    counter = WindowCounter(delay=0.1, refuse=0.5)
    server.respond_with(counter)
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": "q"} for i in range(6)])
    summary = await ray_batch(server.url, concurrency=1).run(source, tmp_path / "o.jsonl")
    assert (summary.done, summary.rate_limited) == (6, 1)
    # Requests already sent come back; no worker sends another until Retry-After has passed.
    assert counter.refused_at is not None
    after = [t - counter.refused_at for t in counter.arrivals]
    assert not [t for t in after if 0.05 < t < 0.45], after


@needs_ray
async def test_an_authentication_error_stops_the_batch(ray_cluster, server, tmp_path):
    server.respond_with(lambda request: error_reply(401, "invalid api key"))
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": "q"} for i in range(20)])
    with pytest.raises(AuthenticationError, match="invalid api key") as caught:
        await ray_batch(server.url, concurrency=1).run(source, tmp_path / "o.jsonl")
    assert caught.value.status_code == 401
    assert len(server.requests) < 20


@needs_ray
def test_cli_engine_ray(ray_cluster, server, tmp_path, capsys, monkeypatch):
    server.respond_with(echo())
    tool_file = tmp_path / "mytools.py"
    tool_file.write_text("def shout(text: str) -> str:\n    return text.upper()\n")
    write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": f"q{i}"} for i in range(5)])
    monkeypatch.chdir(tmp_path)  # a relative --tool path still reaches the workers
    code = main(
        ["batch", "in.jsonl", "--out", "out.jsonl", "--engine", "ray", "--workers", "2",
         "--concurrency", "2", "--rpm", "6000", "--tool", "mytools.py:shout", "--progress",
         "lines", "--base-url", server.url, "--api-key", "k"]
    )  # fmt: skip
    assert code == 0
    assert sorted(r["id"] for r in out_rows(tmp_path / "out.jsonl")) == list(range(5))
    assert server.requests[0].json["tools"][0]["function"]["name"] == "shout"
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "batch: starting 2 workers on a local Ray"
    assert err[-1].startswith("batch: 5 done, 0 failed in ")


def test_cli_ray_options_need_the_ray_engine(tmp_path, capsys):
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "prompt": "q"}])
    args = ["batch", str(source), "--out", str(tmp_path / "o.jsonl"), "--api-key", "k"]
    assert main([*args, "--base-url", "http://127.0.0.1:9/v1", "--ray-address", "auto"]) == 2
    assert "--ray-address needs --engine ray" in capsys.readouterr().err


def test_without_ray_a_one_line_config_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails
    with pytest.raises(ConfigError, match=r"pip install 'qwenloop\[ray\]'"):
        Batch(factory("http://127.0.0.1:9/v1"), engine="ray")
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "prompt": "q"}])
    args = ["batch", str(source), "--out", str(tmp_path / "o.jsonl"), "--engine", "ray"]
    assert main([*args, "--base-url", "http://127.0.0.1:9/v1", "--api-key", "k"]) == 2
    err = capsys.readouterr().err
    assert err == "qwenloop: the ray engine needs Ray: pip install 'qwenloop[ray]'\n"


def test_an_engine_needs_a_factory_not_an_agent():
    agent = Agent("qwen-plus", base_url="http://127.0.0.1:9/v1", api_key="k")
    with pytest.raises(UserError, match="function that builds it"):
        Batch(agent, engine="ray")


@needs_ray
async def test_a_factory_that_does_not_pickle_is_a_usage_error(ray_cluster, tmp_path):
    from agent.batch_ray import RayEngine

    lock = threading.Lock()
    url = "http://127.0.0.1:9/v1"

    def make() -> Agent:
        with lock:
            return Agent("qwen-plus", base_url=url, api_key="k")

    source = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "prompt": "q"}])
    with pytest.raises(UserError, match="inside the factory"):
        await Batch(make, engine=RayEngine(workers=1), progress="off").run(
            source, tmp_path / "o.jsonl"
        )
