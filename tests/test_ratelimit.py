"""RateLimiter: even spacing, FIFO, token charging, 429 pauses and AIMD; then over real HTTP."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from typing import Any

import pytest

from agent import Agent, UserError
from agent.models.base import RequestGate
from agent.ratelimit import RateLimiter
from agent.testing import RecordedRequest, Reply, error_reply, stream_text_reply, text_reply


class FakeTime:
    """A clock that only moves when the limiter sleeps: only the first in line ever sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def limiter(t: FakeTime, rpm: float | None = None, tpm: float | None = None, **kw: Any):
    kw.setdefault("headroom", 1.0)
    return RateLimiter(rpm, tpm, clock=t.clock, sleep=t.sleep, **kw)


async def admitted_at(lim: RateLimiter, t: FakeTime, *tokens: int) -> list[float]:
    """Acquire concurrently, in order; return when each was let through."""
    times: list[float] = []

    async def one(n: int) -> None:
        await lim.acquire(n)
        times.append(t.now)

    await asyncio.gather(*(one(n) for n in tokens))
    return times


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        math.isclose(x, y, abs_tol=1e-9) for x, y in zip(a, b, strict=True)
    )


# --- pacing ---------------------------------------------------------------------------------


async def test_requests_are_spaced_evenly_not_in_bursts():
    t = FakeTime()
    lim = limiter(t, rpm=600)  # one every 0.1 s
    assert close(await admitted_at(lim, t, *[0] * 5), [0.0, 0.1, 0.2, 0.3, 0.4])
    t.now = 10.0  # idle: the next one goes at once, the one after it waits its interval
    assert close(await admitted_at(lim, t, 0, 0), [10.0, 10.1])


async def test_headroom_lowers_the_rate_and_burst_lets_a_few_go_at_once():
    t = FakeTime()
    lim = RateLimiter(600, clock=t.clock, sleep=t.sleep)  # default headroom 0.97
    times = await admitted_at(lim, t, 0, 0)
    assert close(times, [0.0, 60 / (600 * 0.97)])
    t2 = FakeTime()
    bursty = limiter(t2, rpm=600, burst=3)
    assert close(await admitted_at(bursty, t2, *[0] * 5), [0.0, 0.0, 0.0, 0.1, 0.2])


async def test_waiters_are_served_first_come_first_served():
    t = FakeTime()
    lim = limiter(t, rpm=60)
    order: list[str] = []

    async def one(name: str) -> None:
        await lim.acquire(0)
        order.append(name)

    first = [asyncio.create_task(one(f"a{i}")) for i in range(4)]
    await asyncio.sleep(0)
    doomed = asyncio.create_task(one("cancelled"))
    late = [asyncio.create_task(one(f"b{i}")) for i in range(3)]
    await asyncio.sleep(0)
    doomed.cancel()
    await asyncio.gather(*first, *late)
    assert order == ["a0", "a1", "a2", "a3", "b0", "b1", "b2"]
    assert close(t.sleeps, [1.0] * 6)  # one sleeper at a time: no herd, no wasted slot
    assert lim.stats().admitted == 7 and lim.stats().waiting == 0


def test_one_limiter_serves_successive_event_loops():
    lim = RateLimiter(rpm=60_000)

    async def contend() -> None:
        await asyncio.gather(*(lim.acquire(0) for _ in range(3)))

    asyncio.run(contend())
    asyncio.run(contend())  # run_sync makes a new loop per call
    assert lim.stats().admitted == 6


# --- tokens ---------------------------------------------------------------------------------


async def test_tokens_are_charged_the_estimate_and_corrected_by_usage():
    t = FakeTime()
    lim = limiter(t, tpm=6000)  # 100 tokens/s; the bucket holds 3 s = 300
    assert await admitted_at(lim, t, 300, 100) == [0.0, 1.0]  # the second waits for 100 tokens

    t = FakeTime()
    lim = limiter(t, tpm=6000)
    await lim.acquire(300)
    lim.used(100)  # the reply used less: 200 refunded
    assert await admitted_at(lim, t, 200) == [0.0]

    t = FakeTime()
    lim = limiter(t, tpm=6000)
    await lim.acquire(100)
    lim.used(400)  # the reply used more: 300 more charged, so the bucket is 100 in debt
    assert await admitted_at(lim, t, 100) == [2.0]


async def test_usage_without_an_acquire_in_the_task_is_charged_whole():
    t = FakeTime()
    lim = limiter(t, tpm=6000)
    lim.used(300)
    assert await admitted_at(lim, t, 100) == [1.0]


async def test_a_request_larger_than_the_bucket_goes_alone_once_it_is_full():
    t = FakeTime()
    lim = limiter(t, tpm=6000)  # bucket of 300
    # 100 at once; 1000 waits only until the bucket is full again (1 s), not forever; then the
    # debt it leaves (700 tokens = 7 s, plus 1 s for its own 100) holds the next one back.
    assert await admitted_at(lim, t, 100, 1000, 100) == [0.0, 1.0, 9.0]


async def test_requests_and_tokens_limits_both_hold():
    t = FakeTime()
    lim = limiter(t, rpm=600, tpm=6000)
    assert close(await admitted_at(lim, t, 0, 0, 250, 100), [0.0, 0.1, 0.2, 0.7])


# --- 429s -----------------------------------------------------------------------------------


async def test_429_pauses_for_retry_after_and_slows_down():
    t = FakeTime()
    lim = limiter(t, rpm=600)
    await lim.acquire(0)
    t.now = 0.05
    lim.rate_limited(2.0)
    stats = lim.stats()
    assert stats.rate_limited == 1 and stats.paused_for == pytest.approx(2.0)
    assert stats.rpm == pytest.approx(480)  # x0.8
    times = await admitted_at(lim, t, 0, 0)
    assert close(times, [2.05, 2.05 + 60 / 480])


async def test_a_slowdown_reaches_requests_already_waiting():
    t = FakeTime()
    lim = limiter(t, rpm=60)
    times: list[float] = []

    async def one() -> None:
        await lim.acquire(0)
        times.append(t.now)

    async def refused() -> None:
        await lim.acquire(0)
        await asyncio.sleep(0)  # the next caller is now asleep until its slot at 1.0
        lim.rate_limited(5.0)

    await asyncio.gather(refused(), one(), one())
    # The 429 came at 1.0: the first in line looks again and waits out the pause.
    assert close(times, [6.0, 6.0 + 60 / 48])


async def test_429_without_retry_after_backs_off_exponentially_then_resets():
    t = FakeTime()
    lim = limiter(t, rpm=6000)
    pauses = []
    for _ in range(4):
        await lim.acquire(0)
        lim.rate_limited(None)
        pauses.append(lim.stats().paused_for)
        t.now += lim.stats().paused_for
    assert pauses == [1.0, 2.0, 4.0, 8.0]
    t.now += 10.0  # a quiet spell
    await lim.acquire(0)
    lim.rate_limited(None)
    assert lim.stats().paused_for == 1.0


async def test_429s_for_requests_sent_before_the_slowdown_count_once():
    t = FakeTime()
    lim = limiter(t, rpm=600, burst=5)
    sent = asyncio.Event()
    admitted = 0

    async def refused(retry_after: float | None) -> None:
        nonlocal admitted
        await lim.acquire(0)
        admitted += 1
        if admitted == 4:
            sent.set()
        await sent.wait()
        lim.rate_limited(retry_after)

    await asyncio.gather(refused(None), refused(None), refused(3.0), refused(None))
    stats = lim.stats()
    assert stats.rate_limited == 4
    assert stats.rpm == pytest.approx(480)  # one decrease, not four
    assert stats.paused_for == 3.0  # the longest pause asked for
    await lim.acquire(0)  # after the pause, at 3.0
    lim.rate_limited(None)  # sent after the slowdown: slows down again, pause doubled
    assert lim.stats().rpm == pytest.approx(384)
    assert lim.stats().paused_for == 2.0


async def test_rate_recovers_additively_after_a_quiet_spell():
    t = FakeTime()
    lim = limiter(t, rpm=600)
    await lim.acquire(0)
    lim.rate_limited(0.0)
    assert lim.stats().rpm == pytest.approx(480)
    t.now = 10.0
    assert lim.stats().rpm == pytest.approx(480)  # still quiet-waiting
    t.now = 15.0
    assert lim.stats().rpm == pytest.approx(540)  # +2 % of 600 per second
    t.now = 60.0
    assert lim.stats().rpm == pytest.approx(600)  # capped at the configured rate
    t.now = 15.0
    assert await admitted_at(lim, t, 0, 0) == pytest.approx([15.0, 15.0 + 60 / 540])


# --- construction ---------------------------------------------------------------------------


def test_for_tier_uses_the_catalogue():
    free = RateLimiter.for_tier("free")
    assert (free.rpm, free.tpm) == (60, 60_000)
    assert RateLimiter.for_tier("paid", burst=2).burst == 2
    with pytest.raises(UserError, match="free, paid"):
        RateLimiter.for_tier("gold")


@pytest.mark.parametrize(
    "kw",
    [{"rpm": 0}, {"rpm": -5}, {"rpm": math.nan}, {"tpm": math.inf}, {"rpm": "60"},
     {"rpm": True}, {"burst": 0.5}, {"headroom": 0}, {"headroom": 1.5}],
)  # fmt: skip
def test_arguments_must_be_positive_finite_numbers(kw: dict[str, Any]):
    with pytest.raises(UserError):
        RateLimiter(**kw)


def test_the_limiter_is_a_request_gate():
    assert isinstance(RateLimiter(60), RequestGate)


# --- the backend calls the gate ---------------------------------------------------------------


class RecordingGate:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def acquire(self, tokens: int) -> None:
        self.calls.append(("acquire", tokens))

    def rate_limited(self, retry_after: float | None) -> None:
        self.calls.append(("rate_limited", retry_after))

    def used(self, tokens: int) -> None:
        self.calls.append(("used", tokens))


async def test_backend_calls_the_gate_on_every_attempt(openai_server, make_agent):
    gate = RecordingGate()
    agent = make_agent(rate_limiter=gate, settings={"max_tokens": 1000})
    openai_server.script(
        error_reply(429, "slow down", headers={"Retry-After": "0"}), text_reply("hi")
    )
    assert (await agent.run("hello")).output == "hi"
    (_, estimate), refused, (_, again), used = gate.calls
    body = len(openai_server.requests[0].body)
    assert body // 3 + 1000 - 50 < estimate <= body // 3 + 1000 + 50
    assert refused == ("rate_limited", 0.0) and again == estimate and used == ("used", 28)

    gate.calls.clear()
    openai_server.script(stream_text_reply("streamed", usage=(20, 7)))
    events = [e async for e in agent.stream("hello")]
    assert events and [name for name, _ in gate.calls] == ["acquire", "used"]
    assert gate.calls[1] == ("used", 27)


async def test_an_agent_without_a_gate_sends_as_before(openai_server, make_agent):
    agent = make_agent()
    assert agent.rate_limiter is None
    openai_server.script(text_reply("hi"))
    assert (await agent.run("hello")).output == "hi"
    agent.rate_limiter = limiter_ = RateLimiter(600)
    assert agent.rate_limiter is limiter_


# --- over real HTTP: a server that counts requests per window -------------------------------


class WindowedResponder:
    """Answer at most `limit` requests in any `window` seconds, 429 beyond (not counted)."""

    def __init__(self, limit: int, window: float, retry_after: str) -> None:
        self.limit, self.window = limit, window
        self.accepted: deque[float] = deque()
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        self.refusal = error_reply(
            429, "requests rate limit exceeded", type="limit_requests",
            headers={"Retry-After": retry_after},
        )  # fmt: skip
        self.answer = text_reply("ok")

    def __call__(self, request: RecordedRequest) -> Reply:
        now = time.monotonic()
        with self.lock:
            while self.accepted and self.accepted[0] <= now - self.window:
                self.accepted.popleft()
            if len(self.accepted) >= self.limit:
                self.statuses.append(429)
                return self.refusal
            self.accepted.append(now)
            self.statuses.append(200)
            return self.answer


async def warm_up(server: Any, agents: list[Agent]) -> None:
    """Send each agent's first request, outside the count: a fresh client's first request
    takes 0.1 to 0.3 s longer (lazy imports, a new pool), which would bunch it with the next."""
    server.script(*[text_reply("warm") for _ in agents])
    await asyncio.gather(*(agent.run("warm up") for agent in agents))


async def run_all(agents: list[Agent], runs: int) -> list[str]:
    results = await asyncio.gather(*(agents[i % len(agents)].run("go") for i in range(runs)))
    return [r.output for r in results]


async def test_shared_limiter_keeps_concurrent_runs_under_the_server_limit(
    openai_server, make_agent
):
    server = WindowedResponder(limit=5, window=0.5, retry_after="0.5")  # 600 per minute
    openai_server.respond_with(server)
    shared = RateLimiter(rpm=500)  # about 0.12 s apart: 4 or 5 in any 0.5 s
    agents = [make_agent(rate_limiter=shared, retries=0) for _ in range(3)]
    await warm_up(openai_server, agents)
    started = time.monotonic()
    assert await run_all(agents, 16) == ["ok"] * 16
    elapsed = time.monotonic() - started
    assert server.statuses == [200] * 16
    assert elapsed >= 15 * 60 / (500 * 0.97) - 0.01  # spread out, not sent at once
    assert shared.stats().admitted == 16 + 3 and shared.stats().rate_limited == 0


async def test_shared_limiter_slows_down_when_the_server_refuses(openai_server, make_agent):
    server = WindowedResponder(limit=5, window=0.5, retry_after="0.3")  # 600 per minute
    openai_server.respond_with(server)
    shared = RateLimiter(rpm=1000)  # too high: each 429 takes 20 % off, 3 bring it below 600
    agents = [make_agent(rate_limiter=shared, retries=6) for _ in range(3)]
    await warm_up(openai_server, agents)
    assert await run_all(agents, 24) == ["ok"] * 24
    refused = server.statuses.count(429)
    assert 1 <= refused <= 4 and refused == shared.stats().rate_limited
    assert shared.stats().rpm is not None and shared.stats().rpm < 600
    assert server.statuses[-8:] == [200] * 8  # settled below the limit
