"""A bounded soak: many runs in flight for a while; memory, file descriptors and connections.

Usage: python bench/soak.py [--in-flight 200] [--seconds 60] [--max-connections N]

Two-turn tool runs (one call, then an answer) against the scripted server in its own process,
`--in-flight` at a time, until `--seconds` have passed; then the agent is closed. Printed: this
process's RSS at the start, after the first and the last tenth of the time (flat is good), open
file descriptors before, during and after `aclose()` (back to the start is good), and TCP
connections the server saw opened per request (0 is perfect reuse, 1 is a new connection each).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import time
from typing import Any

from agent import Agent, tool


def serve(port_queue: Any, stop: Any, stats_queue: Any) -> None:
    """Child process: a tool call for a user turn, an answer after a tool result."""
    from agent.testing import ScriptedServer, text_reply, tool_call_reply

    call = tool_call_reply("echo", {"text": "x"}, id="call_1")
    final = text_reply("done")

    with ScriptedServer() as server:
        server.respond_with(lambda r: call if r.json["messages"][-1]["role"] == "user" else final)
        port_queue.put(server.url)
        stop.wait()
        stats_queue.put((server.connections_opened, len(server.requests)))


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@tool
def echo(text: str) -> str:
    """Echo the text."""
    return text


async def soak(url: str, in_flight: int, seconds: float, max_connections: int) -> dict[str, Any]:
    agent = Agent(
        "qwen-plus", base_url=url, api_key="k", tools=[echo], max_connections=max_connections
    )
    figures: dict[str, Any] = {"fds_start": open_fds(), "rss_start": rss_mb()}
    end = time.monotonic() + seconds
    runs = 0
    errors = 0

    async def worker() -> None:
        nonlocal runs, errors
        while time.monotonic() < end:
            try:
                await agent.run("go")
            except Exception:
                errors += 1
            runs += 1

    async def sample() -> None:
        await asyncio.sleep(seconds / 10)
        figures["rss_early"] = rss_mb()
        await asyncio.sleep(seconds * 8 / 10)
        figures["rss_late"] = rss_mb()
        figures["fds_busy"] = open_fds()

    await asyncio.gather(sample(), *(worker() for _ in range(in_flight)))
    await agent.aclose()
    figures.update(runs=runs, errors=errors, fds_after=open_fds(), rss_end=rss_mb())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-connections", type=int, default=None)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    port_queue, stats_queue, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=serve, args=(port_queue, stop, stats_queue), daemon=True)
    proc.start()
    try:
        url = port_queue.get(timeout=30)
        limit = args.max_connections or args.in_flight
        started = time.monotonic()
        figures = asyncio.run(soak(url, args.in_flight, args.seconds, limit))
        elapsed = time.monotonic() - started
    finally:
        stop.set()
    opened, requests = stats_queue.get(timeout=30)
    proc.join(timeout=10)
    print(
        f"{figures['runs']} runs ({figures['errors']} errors) in {elapsed:.0f} s, "
        f"{args.in_flight} in flight, max_connections {limit}: {requests} requests"
    )
    print(
        f"RSS MB      start {figures['rss_start']:.0f}, after 10% {figures['rss_early']:.0f}, "
        f"after 90% {figures['rss_late']:.0f}, after aclose {figures['rss_end']:.0f}"
    )
    print(
        f"open fds    start {figures['fds_start']}, busy {figures['fds_busy']}, "
        f"after aclose {figures['fds_after']}"
    )
    print(
        f"connections {opened} opened for {requests} requests "
        f"({opened / max(requests, 1):.3f} per request)"
    )


if __name__ == "__main__":
    main()
