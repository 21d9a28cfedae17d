"""Batch rate limiting: concurrent runs sharing one RateLimiter against a server that counts.

The server (the scripted server from `agent.testing`, in its own process) allows at most 30
requests in any sliding 3 s window, i.e. 600 per minute counted over a few seconds as providers
do, and answers 429 with `Retry-After: 1` beyond it (refused requests do not count). 50 runs
stay in flight (single-turn text replies) for a fixed time, first through one
`RateLimiter(rpm=600)`, then, as the baseline, with no limiter (only the concurrency); with
`--rounds N` the two alternate N times, in that order, the server's window emptied in between.

Goal: at least 90 % of the allowed rate sustained, at most 1 % of requests answered 429.

    python bench/batch_rate.py            # 60 s per mode
    python bench/batch_rate.py --quick    # 20 s per mode
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing as mp
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from agent import Agent, ModelError
from agent.ratelimit import RateLimiter

LIMIT = 30
WINDOW = 3.0
ALLOWED_RPM = LIMIT * 60 / WINDOW


def serve(conn: Any, limit: int, window: float) -> None:
    """Child process: answer at most `limit` requests in any `window` s, 429 beyond; count."""
    from agent.testing import ScriptedServer, error_reply, text_reply

    accepted: deque[float] = deque()
    counts = {"ok": 0, "refused": 0}
    lock = threading.Lock()
    answer = text_reply("ok")
    refusal = error_reply(
        429, "requests rate limit exceeded", type="limit_requests", headers={"Retry-After": "1"}
    )

    def respond(request: Any) -> Any:
        now = time.monotonic()
        with lock:
            while accepted and accepted[0] <= now - window:
                accepted.popleft()
            if len(accepted) >= limit:
                counts["refused"] += 1
                return refusal
            accepted.append(now)
            counts["ok"] += 1
            return answer

    with ScriptedServer() as server:
        server.respond_with(respond)
        conn.send(server.url)
        while (command := conn.recv()) != "stop":
            with lock:
                conn.send(dict(counts))
                if command == "reset":
                    counts.update(ok=0, refused=0)


class Server:
    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=serve, args=(child, LIMIT, WINDOW), daemon=True)
        self.lock = threading.Lock()

    def __enter__(self) -> Server:
        self.proc.start()
        self.url = str(self.conn.recv())
        return self

    def ask(self, command: str) -> dict[str, int]:
        with self.lock:
            self.conn.send(command)
            counts: dict[str, int] = self.conn.recv()
            return counts

    def __exit__(self, *exc: object) -> None:
        self.conn.send("stop")
        self.proc.join(timeout=10)


@dataclass
class Outcome:
    ok: int
    refused: int
    seconds: float
    runs: int
    failed: int
    limiter: str

    @property
    def rate(self) -> float:
        return self.ok * 60 / self.seconds / ALLOWED_RPM

    @property
    def refused_share(self) -> float:
        return self.refused / max(1, self.ok + self.refused)


async def drive(
    server: Server, limiter: RateLimiter | None, seconds: float, in_flight: int
) -> Outcome:
    agent = Agent(
        "qwen-plus",
        base_url=server.url,
        api_key="bench",
        rate_limiter=limiter,
        max_connections=in_flight,
    )
    await agent.run("warm up")  # the client's first request is slow: keep it out of the count
    runs = failed = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal runs, failed
        while time.monotonic() < deadline:
            try:
                await agent.run("go")
                runs += 1
            except ModelError:  # 429 after the retries
                failed += 1

    await asyncio.to_thread(server.ask, "reset")
    started = time.monotonic()
    workers = [asyncio.create_task(worker()) for _ in range(in_flight)]
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    counts = await asyncio.to_thread(server.ask, "report")
    elapsed = time.monotonic() - started
    for task in workers:
        task.cancel()
    for task in workers:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await agent.aclose()
    stats = "" if limiter is None else str(limiter.stats())
    return Outcome(counts["ok"], counts["refused"], elapsed, runs, failed, stats)


def show(name: str, r: Outcome) -> None:
    print(
        f"{name:<22} {r.ok * 60 / r.seconds:6.0f} admitted/min = {r.rate:6.1%} of "
        f"{ALLOWED_RPM:.0f}; 429s {r.refused:5d} of {r.ok + r.refused:5d} = {r.refused_share:6.2%};"
        f" runs {r.runs} done, {r.failed} failed"
    )
    if r.limiter:
        print(f"{'':<22} {r.limiter}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20 s per mode instead of 60")
    parser.add_argument("--seconds", type=float, help="seconds per mode")
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--rpm", type=float, default=ALLOWED_RPM, help="the limiter's rpm")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    logging.getLogger("qwenloop").setLevel(logging.ERROR)  # one warning per 429 otherwise
    seconds = args.seconds or (20.0 if args.quick else 60.0)
    print(
        f"server: at most {LIMIT} requests in any {WINDOW:g} s ({ALLOWED_RPM:.0f}/min), 429 with "
        f"Retry-After: 1 beyond; {args.in_flight} runs in flight, {seconds:g} s per mode"
    )
    results: dict[str, list[Outcome]] = {"limiter": [], "baseline": []}
    with Server() as server:
        for i in range(args.rounds):
            if i:
                time.sleep(WINDOW + 0.5)  # let the server's window empty
            limiter = RateLimiter(rpm=args.rpm)
            r = asyncio.run(drive(server, limiter, seconds, args.in_flight))
            results["limiter"].append(r)
            show(f"RateLimiter(rpm={args.rpm:g})", r)
            if args.no_baseline:
                continue
            time.sleep(WINDOW + 0.5)
            r = asyncio.run(drive(server, None, seconds, args.in_flight))
            results["baseline"].append(r)
            show("no limiter (baseline)", r)
    limited = results["limiter"]
    worst_rate = min(r.rate for r in limited)
    worst_refused = max(r.refused_share for r in limited)
    verdict = "MET" if worst_rate >= 0.9 and worst_refused <= 0.01 else "NOT MET"
    print(
        f"goal >= 90 % of the allowed rate and <= 1 % 429s: {verdict} "
        f"(worst round: {worst_rate:.1%}, {worst_refused:.2%} 429s)"
    )


if __name__ == "__main__":
    main()
