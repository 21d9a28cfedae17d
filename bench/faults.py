"""Runs under network faults: every run must end in a result or a typed error carrying the run.

Usage: python bench/faults.py [--runs 1000] [--concurrency 50] [--fail 0.20] [--cut 0.05]

A two-turn tool conversation (two parallel tool calls, then an answer) against the scripted
OpenAI-compatible server on 127.0.0.1, half the runs streamed. Each request is answered with a
429 or a 5xx (`--fail`), cut short mid-body or mid-stream (`--cut`), or well; faults are drawn
from a seeded generator. Printed: completed runs, typed errors (by class), crashes (any other
exception), lost runs (an error without the run so far, or tools that ran for nothing), hangs
(no end within `--deadline` seconds), tool calls run twice, and requests per run (retries).
Goal: 0 crashes, 0 lost, 0 hangs, 0 duplicates.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import threading
import time

from agent import Agent, AgentError, RunResult, tool
from agent.models.openai import OpenAIChatModel, RetryPolicy
from agent.testing import (
    RecordedRequest,
    Reply,
    ScriptedServer,
    cut_reply,
    error_reply,
    stream_text_reply,
    stream_tool_calls_reply,
    text_reply,
    tool_calls_reply,
)

CALLS = [("lookup", {"key": "a"}), ("lookup", {"key": "b"})]


def good(turn: int, stream: bool) -> Reply:
    if turn == 1:
        return stream_tool_calls_reply(CALLS) if stream else tool_calls_reply(CALLS)
    return stream_text_reply("a=1, b=2") if stream else text_reply("a=1, b=2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--fail", type=float, default=0.20, help="share answered 429/5xx")
    parser.add_argument("--cut", type=float, default=0.05, help="share cut short")
    parser.add_argument("--deadline", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    lock = threading.Lock()
    faults: collections.Counter[str] = collections.Counter()
    statuses = [429, 500, 502, 503, 504]

    def answer(request: RecordedRequest) -> Reply:
        body = request.json
        stream = bool(body.get("stream"))
        turn = 2 if body["messages"][-1]["role"] == "tool" else 1
        with lock:
            draw = rng.random()
            status = rng.choice(statuses)
        if draw < args.fail:
            faults[str(status)] += 1
            headers = {"retry-after": "0"} if status == 429 else None
            return error_reply(status, "injected fault", headers=headers)
        if draw < args.fail + args.cut:
            faults["cut"] += 1
            return cut_reply(good(turn, stream))
        return good(turn, stream)

    runs_by_id: collections.Counter[str] = collections.Counter()

    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        return {"a": "1", "b": "2"}[key]

    outcomes: collections.Counter[str] = collections.Counter()
    problems: list[str] = []

    async def run_one(agent: Agent, index: int) -> RunResult | None:
        if index % 2 == 0:
            return await agent.run(f"run {index}: look up a and b")
        result: RunResult | None = None
        async for event in agent.stream(f"run {index}: look up a and b"):
            result = getattr(event, "result", result)
        return result

    async def one(agent: Agent, index: int, sem: asyncio.Semaphore) -> None:
        async with sem:
            try:
                coro_result = await asyncio.wait_for(run_one(agent, index), args.deadline)
                outcomes["completed"] += 1
                records = coro_result.tool_calls if coro_result else []
            except AgentError as exc:
                outcomes[f"typed error: {type(exc).__name__}"] += 1
                if exc.result is None:
                    outcomes["LOST (no .result)"] += 1
                    problems.append(f"run {index}: {type(exc).__name__} without .result")
                    return
                records = exc.result.tool_calls
            except TimeoutError:
                outcomes["HANG"] += 1
                problems.append(f"run {index}: no end within {args.deadline:g} s")
                return
            except Exception as exc:  # what the issue calls a crash
                outcomes["CRASH"] += 1
                problems.append(f"run {index}: {type(exc).__name__}: {exc}")
                return
            for record in records:
                runs_by_id[f"{index}:{record.id}"] += 1

    async def drive(server: ScriptedServer) -> float:
        model = OpenAIChatModel(
            "qwen-plus",
            base_url=server.url,
            api_key="k",
            retry=RetryPolicy(max_retries=3, base_delay=0.05, max_delay=0.5),
            timeout=10,
        )
        agent = Agent(chat_model=model, tools=[lookup], max_turns=4)
        sem = asyncio.Semaphore(args.concurrency)
        started = time.perf_counter()
        tasks = [asyncio.ensure_future(one(agent, i, sem)) for i in range(args.runs)]
        await asyncio.gather(*tasks)
        await agent.aclose()
        return time.perf_counter() - started

    with ScriptedServer() as server:
        server.respond_with(answer)
        seconds = asyncio.run(drive(server))
        requests = len(server.requests)

    duplicates = sum(1 for count in runs_by_id.values() if count > 1)
    print(
        f"{args.runs} runs, {args.concurrency} in flight, {seconds:.1f} s; "
        f"{requests} requests ({requests / args.runs:.2f} per run, 2 without faults)"
    )
    print("faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(faults.items())))
    for name, count in sorted(outcomes.items()):
        print(f"  {name:<40} {count}")
    for name in ("CRASH", "LOST (no .result)", "HANG"):
        if name not in outcomes:
            print(f"  {name:<40} 0")
    print(f"  {'tool calls run twice':<40} {duplicates}")
    for problem in problems[:10]:
        print("  !", problem)


if __name__ == "__main__":
    main()
