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

from agent import Agent, AgentError, RunResult, ToolCallRecord, tool
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


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return {"a": "1", "b": "2"}[key]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--fail", type=float, default=0.20, help="share answered 429/5xx")
    parser.add_argument("--cut", type=float, default=0.05, help="share cut short")
    parser.add_argument("--deadline", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


class Faults:
    """Answers each request well, with a 429/5xx, or cut short, drawn from a seeded generator."""

    statuses = (429, 500, 502, 503, 504)

    def __init__(self, fail: float, cut: float, seed: int) -> None:
        self.fail = fail
        self.cut = cut
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.injected: collections.Counter[str] = collections.Counter()

    def answer(self, request: RecordedRequest) -> Reply:
        body = request.json
        stream = bool(body.get("stream"))
        turn = 2 if body["messages"][-1]["role"] == "tool" else 1
        with self.lock:
            draw = self.rng.random()
            status = self.rng.choice(self.statuses)
        if draw < self.fail:
            self.injected[str(status)] += 1
            headers = {"retry-after": "0"} if status == 429 else None
            return error_reply(status, "injected fault", headers=headers)
        if draw < self.fail + self.cut:
            self.injected["cut"] += 1
            return cut_reply(good(turn, stream))
        return good(turn, stream)


async def run_one(agent: Agent, index: int) -> RunResult | None:
    if index % 2 == 0:
        return await agent.run(f"run {index}: look up a and b")
    result: RunResult | None = None
    async for event in agent.stream(f"run {index}: look up a and b"):
        result = getattr(event, "result", result)
    return result


class Tally:
    """How each run ended, and how often each of its tool calls ran."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.problems: list[str] = []
        self.runs_by_id: collections.Counter[str] = collections.Counter()

    async def one(self, agent: Agent, index: int, sem: asyncio.Semaphore) -> None:
        async with sem:
            records = await self.outcome(agent, index)
            for record in records or []:
                self.runs_by_id[f"{index}:{record.id}"] += 1

    async def outcome(self, agent: Agent, index: int) -> list[ToolCallRecord] | None:
        """Run once; count how it ended; return its tool calls, or None if the run is lost."""
        try:
            coro_result = await asyncio.wait_for(run_one(agent, index), self.deadline)
            self.outcomes["completed"] += 1
            return coro_result.tool_calls if coro_result else []
        except AgentError as exc:
            self.outcomes[f"typed error: {type(exc).__name__}"] += 1
            if exc.result is None:
                self.problem(
                    "LOST (no .result)", f"run {index}: {type(exc).__name__} without .result"
                )
                return None
            return exc.result.tool_calls
        except TimeoutError:
            self.problem("HANG", f"run {index}: no end within {self.deadline:g} s")
        except Exception as exc:  # what the issue calls a crash
            self.problem("CRASH", f"run {index}: {type(exc).__name__}: {exc}")
        return None

    def problem(self, outcome: str, detail: str) -> None:
        self.outcomes[outcome] += 1
        self.problems.append(detail)

    def duplicates(self) -> int:
        return sum(1 for count in self.runs_by_id.values() if count > 1)


async def drive(server: ScriptedServer, args: argparse.Namespace, tally: Tally) -> float:
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
    tasks = [asyncio.ensure_future(tally.one(agent, i, sem)) for i in range(args.runs)]
    await asyncio.gather(*tasks)
    await agent.aclose()
    return time.perf_counter() - started


def report(
    args: argparse.Namespace, seconds: float, requests: int, faults: Faults, tally: Tally
) -> None:
    print(
        f"{args.runs} runs, {args.concurrency} in flight, {seconds:.1f} s; "
        f"{requests} requests ({requests / args.runs:.2f} per run, 2 without faults)"
    )
    print("faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(faults.injected.items())))
    for name, count in sorted(tally.outcomes.items()):
        print(f"  {name:<40} {count}")
    for name in ("CRASH", "LOST (no .result)", "HANG"):
        if name not in tally.outcomes:
            print(f"  {name:<40} 0")
    print(f"  {'tool calls run twice':<40} {tally.duplicates()}")
    for problem in tally.problems[:10]:
        print("  !", problem)


def main() -> None:
    args = parse_args()
    faults = Faults(args.fail, args.cut, args.seed)
    tally = Tally(args.deadline)
    with ScriptedServer() as server:
        server.respond_with(faults.answer)
        seconds = asyncio.run(drive(server, args, tally))
        requests = len(server.requests)
    report(args, seconds, requests, faults, tally)


if __name__ == "__main__":
    main()
