"""Client-side rate limiting shared by many runs: requests and tokens per minute, spread evenly.

`RateLimiter` implements the `RequestGate` a backend calls around every HTTP attempt; give one
instance to every agent that spends the same account's limits (`Agent(rate_limiter=...)`).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agent.catalog import RATE_LIMIT_TIERS
from agent.errors import UserError

__all__ = ["RateLimiter", "RateLimiterStats"]

# Multiplicative decrease: a 429 lowers the rate to 80 % of what it was. Gentle enough that one
# refusal caused by a neighbour's burst costs little; five in a row still halve and more.
_DECREASE = 0.8
# The rate never falls below 5 % of the configured one: pauses, not a crawl, handle outages.
_MIN_FACTOR = 0.05
# Seconds without a 429 before the rate climbs back: longer than the few seconds providers count
# requests over, so the window that refused us has emptied first.
_QUIET = 10.0
# Additive increase once quiet: 2 % of the configured rate per second (80 % to 100 % in 10 s).
_INCREASE = 0.02
# A 429 with no Retry-After pauses 1 s, doubling with each further decrease up to 60 s; the
# pause starts from 1 s again after a quiet period. 60 s also caps a Retry-After we honour.
_FIRST_PAUSE = 1.0
_MAX_PAUSE = 60.0
# Without a ticket telling when the refused request was admitted, 429s less than this apart
# count as one event (the requests already in flight when the first came back).
_COOLDOWN = 1.0
# The token bucket holds this many seconds of the token rate (times `burst`): providers count
# tokens over a few seconds too, and a minute's worth at once would be refused.
_TOKEN_WINDOW = 3.0
# A caller the event loop wakes late keeps its slot's place in the schedule, up to this many
# seconds late: on a busy loop a few ms per request would otherwise come off the rate. A longer
# stall is not made up for with a burst. Far below the 3 % headroom of any window over 1 s.
_CATCH_UP = 0.02


@dataclass(frozen=True, slots=True)
class RateLimiterStats:
    """A snapshot of a limiter, for progress displays.

    Attributes:
        admitted: Requests let through so far.
        rate_limited: 429 answers reported so far.
        rpm: The requests per minute now allowed (after headroom and slow-downs), or None.
        tpm: The tokens per minute now allowed, or None.
        waiting: Callers waiting for their turn.
        paused_for: Seconds until requests may go out again after a 429 (0 when not paused).
    """

    admitted: int
    rate_limited: int
    rpm: float | None
    tpm: float | None
    waiting: int
    paused_for: float


@dataclass(frozen=True, slots=True)
class _Ticket:
    """The last request this task was admitted with: what it was charged, and when."""

    limiter: RateLimiter
    tokens: int
    admitted_at: float


# A backend calls `acquire`, then `used` or `rate_limited`, from one task: the ticket tells
# those calls which request they are about, without changing the `RequestGate` protocol.
_ticket: contextvars.ContextVar[_Ticket | None] = contextvars.ContextVar(
    "qwenloop_ratelimit_ticket", default=None
)


def _rate(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


class RateLimiter:
    """Paces requests to requests-per-minute and tokens-per-minute limits, evenly, for many runs.

    Requests are spaced evenly rather than sent in bursts, because providers count over windows
    of a few seconds (virtual scheduling, as in GCRA): each request takes the next slot, one
    interval of `60 / (rpm * headroom)` seconds after the previous one. Callers are served
    first come, first served; only the first in line sleeps on a timer, the others wait their
    turn behind it, so nobody wakes for nothing and a slow-down applies at once to every
    request not yet sent.

    Tokens per minute work as a bucket refilled continuously, holding `burst` × 3 seconds of
    the rate: a request is charged its estimate when admitted and corrected by `used` once the
    reply's usage is known (the difference charged or refunded). A request estimated at more
    than the whole bucket would wait forever in a strict bucket; here it goes alone once the
    bucket is full and leaves it in debt, which later requests wait out.

    When the provider answers 429 anyway (another client shares the account, or the limits were
    wrong), `rate_limited` pauses every request not yet sent until `Retry-After` has passed (or
    1 s, doubling with each further 429 up to 60 s, when the provider gave none), and lowers the
    rate to 80 % of what it was. Several 429s for requests sent before that slow-down count as
    one. After 10 s without a 429 the rate climbs back by 2 % of the configured rate per second,
    up to it (additive increase, multiplicative decrease).

    The limiter is per process and is used from one thread: it may serve several event loops
    in turn (e.g. successive `run_sync` calls), but not at once. To share limits between
    processes, run one limiter where they can all reach it (e.g. in an actor) and forward calls.

    Args:
        rpm: Requests per minute allowed, or None for no request limit.
        tpm: Tokens per minute allowed (prompt plus completion), or None for no token limit.
        burst: How many requests may go out at once after an idle spell (1: none; every
            request waits its interval); also scales the token bucket.
        headroom: The fraction of the limits to use (0.97 leaves 3 % for clock drift and
            network jitter, so requests arriving unevenly do not exceed a window).
        clock: Returns the time in seconds (monotonic); for tests.
        sleep: Waits a number of seconds; for tests, with `clock`.

    Raises:
        UserError: If an argument is not a positive finite number, `burst` is below 1 or
            `headroom` above 1.
    """

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        burst: float = 1.0,
        headroom: float = 0.97,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.rpm = _rate("rpm", rpm)
        self.tpm = _rate("tpm", tpm)
        burst_ = _rate("burst", burst)
        headroom_ = _rate("headroom", headroom)
        if burst_ is None or burst_ < 1:
            raise UserError(f"burst must be at least 1, got {burst!r}")
        if headroom_ is None or headroom_ > 1:
            raise UserError(f"headroom must be in (0, 1], got {headroom!r}")
        self.burst = burst_
        self.headroom = headroom_
        self._clock = clock
        self._sleep = sleep
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]
        self._locks = weakref.WeakKeyDictionary()
        start = clock()
        self._next_request = start  # when the request schedule is next free (its TAT)
        self._next_token = start  # when the token bucket will be full again
        self._paused_until = start
        self._factor = 1.0  # fraction of the configured rate in force at `_last_429`
        self._last_429 = -math.inf
        self._decreased_at = -math.inf
        self._pause = _FIRST_PAUSE
        self._admitted = 0
        self._refused = 0
        self._waiting = 0

    @classmethod
    def for_tier(cls, name: str, *, burst: float = 1.0, headroom: float = 0.97) -> RateLimiter:
        """Build a limiter for one of the catalogue's DashScope tiers ("free" or "paid").

        Raises:
            UserError: If no tier has that name.
        """
        tier = RATE_LIMIT_TIERS.get(name)
        if tier is None:
            known = ", ".join(sorted(RATE_LIMIT_TIERS))
            raise UserError(f"no rate-limit tier named {name!r}; the tiers are: {known}")
        return cls(tier.rpm, tier.tpm, burst=burst, headroom=headroom)

    def __repr__(self) -> str:
        return f"RateLimiter(rpm={self.rpm}, tpm={self.tpm}, burst={self.burst:g})"

    def _factor_at(self, now: float) -> float:
        """The fraction of the configured rate allowed at `now`, climbing back after quiet."""
        climbed = _INCREASE * max(0.0, now - self._last_429 - _QUIET)
        return min(1.0, self._factor + climbed)

    def _ready_at(self, tokens: int, now: float) -> float:
        """When a request of `tokens` tokens may go out, given the requests before it."""
        factor = self._factor_at(now)
        ready = max(now, self._paused_until)
        if self.rpm is not None:
            interval = 60.0 / (self.rpm * self.headroom * factor)
            ready = max(ready, self._next_request - (self.burst - 1) * interval)
        if self.tpm is not None:
            per_second = self.tpm * self.headroom * factor / 60.0
            capacity = self.burst * _TOKEN_WINDOW  # seconds of refill the bucket holds
            # Enough tokens for this request, or the bucket full for one larger than it.
            cost = min(tokens / per_second, capacity)
            ready = max(ready, self._next_token + cost - capacity)
        return ready

    def _admit(self, tokens: int, at: float, now: float) -> None:
        """Let a request through at `now`, as of its slot `at` (see `_CATCH_UP`)."""
        factor = self._factor_at(now)
        if self.rpm is not None:
            interval = 60.0 / (self.rpm * self.headroom * factor)
            self._next_request = max(self._next_request, at) + interval
        if self.tpm is not None:
            per_second = self.tpm * self.headroom * factor / 60.0
            self._next_token = max(self._next_token, at) + tokens / per_second
        self._admitted += 1
        _ticket.set(_Ticket(self, tokens, now))

    def _lock(self) -> asyncio.Lock:
        # An asyncio.Lock belongs to the loop it first waited in; `run_sync` makes a new loop
        # per call, so each loop gets its own (the schedule itself is shared).
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    async def acquire(self, tokens: int) -> None:
        """Wait until a request estimated at `tokens` tokens may go out, then let it through.

        Callers go in the order they called; a pause or slow-down reported while one waits
        applies to it too.
        """
        tokens = max(0, int(tokens))
        self._waiting += 1
        try:
            async with self._lock():
                slot = None
                while True:
                    now = self._clock()
                    ready = self._ready_at(tokens, now)
                    if ready <= now:
                        break
                    slot = ready
                    # Woken, the first in line looks again: a 429 may have moved its slot.
                    await self._sleep(ready - now)
                self._admit(tokens, now if slot is None else max(slot, now - _CATCH_UP), now)
        finally:
            self._waiting -= 1

    def used(self, tokens: int) -> None:
        """Correct the charge of this task's last request to the `tokens` its reply consumed.

        Without an `acquire` in this task to correct, `tokens` are charged as they are.
        """
        ticket = _ticket.get()
        charged = 0
        if ticket is not None and ticket.limiter is self:
            charged = ticket.tokens
            _ticket.set(None)
        self._charge(max(0, int(tokens)) - charged)

    def _charge(self, tokens: int) -> None:
        if self.tpm is None or not tokens:
            return
        now = self._clock()
        per_second = self.tpm * self.headroom * self._factor_at(now) / 60.0
        self._next_token += tokens / per_second

    def rate_limited(self, retry_after: float | None) -> None:
        """The provider refused a request (429): pause, and lower the rate (see the class doc).

        Args:
            retry_after: The seconds the provider asked us to wait (`Retry-After`), if it did.
        """
        now = self._clock()
        self._refused += 1
        ticket = _ticket.get()
        if ticket is not None and ticket.limiter is self:
            _ticket.set(None)
            self._charge(-ticket.tokens)  # refused: the tokens were not spent
            stale = ticket.admitted_at <= self._decreased_at
        else:
            stale = now - self._decreased_at < _COOLDOWN
        if now - self._last_429 >= _QUIET:
            self._pause = _FIRST_PAUSE
        self._factor = self._factor_at(now)  # keep what was recovered so far
        self._last_429 = now
        pause = 0.0
        if retry_after is not None and math.isfinite(retry_after):
            pause = min(max(retry_after, 0.0), _MAX_PAUSE)
        elif not stale:
            pause = self._pause
            self._pause = min(self._pause * 2, _MAX_PAUSE)
        self._paused_until = max(self._paused_until, now + pause)
        if not stale:
            # A request sent before the last slow-down says nothing about the new rate.
            self._factor = max(self._factor * _DECREASE, _MIN_FACTOR)
            self._decreased_at = now

    def stats(self) -> RateLimiterStats:
        """Return the requests admitted, the 429s seen and the rates now in force."""
        now = self._clock()
        factor = self._factor_at(now)
        return RateLimiterStats(
            admitted=self._admitted,
            rate_limited=self._refused,
            rpm=None if self.rpm is None else self.rpm * self.headroom * factor,
            tpm=None if self.tpm is None else self.tpm * self.headroom * factor,
            waiting=self._waiting,
            paused_for=max(0.0, self._paused_until - now),
        )
