"""The Ray engine of `Batch`: rows run on a Ray cluster, input, output and progress stay here.

Workers are async Ray actors, each building the agent from a picklable factory and running
`concurrency` rows at once; one limiter actor paces every worker's requests (rate limits are
per account, so they hold cluster-wide). Needs `pip install 'qwenloop[ray]'`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.batch import BatchRunner, Row, run_row
from agent.errors import ConfigError, UserError

if TYPE_CHECKING:
    from agent.agent import Agent
    from agent.batch import Batch
    from agent.ratelimit import RateLimiterStats

__all__ = ["RayEngine"]

_INSTALL = "the ray engine needs Ray: pip install 'qwenloop[ray]'"
# Tickets of admitted requests whose reply the limiter has not heard of yet; a request that
# ended without `used` or `rate_limited` (a dropped connection) leaves one behind, so cap them.
_MAX_TICKETS = 100_000
# Seconds to wait for every worker to build its agent: longer means the cluster cannot place
# them (too few CPUs) or a worker cannot import the factory's code.
_START_TIMEOUT = 120.0


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(_INSTALL) from None
    return ray


class RayEngine:
    """Run a batch's rows on Ray: `Batch(make_agent, engine=RayEngine(workers=4))`.

    The driver (this process) reads the input, skips the ids already in the output, writes
    every finished row and shows the progress, exactly as the local engine does; `workers`
    actors run the rows, `concurrency` each (the batch's). The batch's rpm and tpm (or those
    of the factory's agent's `RateLimiter`) are enforced by one limiter actor for all of them.

    Each worker calls the batch's agent factory, which Ray pickles with cloudpickle: a function
    defined in `__main__` travels by value, one in a module needs that module on the workers.
    The workers need the endpoint's API key too: pass it to `Agent(api_key=...)` in the
    factory, or set its variable on every node; and qwenloop itself installed on every node.
    A `Template` does not pickle: build it inside the factory.

    Args:
        address: The cluster to join (`ray.init(address=...)`, e.g. "ray://head:10001" or
            "auto"); None starts a local Ray for the batch, bound to 127.0.0.1, and stops it
            after. A Ray already initialised in this process is used as it is.
        workers: Worker actors to start.
        worker_cpus: Logical CPUs each worker reserves (Ray's `num_cpus`); runs mostly wait on
            the network, so a fraction also works.
        num_cpus: The CPUs of a local Ray (default: the machine's, or enough for the workers).

    Raises:
        ConfigError: Ray is not installed.
        UserError: `workers` below 1, or `worker_cpus` negative.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        workers: int = 2,
        worker_cpus: float = 1.0,
        num_cpus: int | None = None,
    ) -> None:
        _ray()  # fail here, not once the input is read
        if workers < 1:
            raise UserError(f"workers must be at least 1, got {workers}")
        if not (math.isfinite(worker_cpus) and worker_cpus >= 0):
            raise UserError(f"worker_cpus must be a number of CPUs, got {worker_cpus}")
        self.address = address
        self.workers = workers
        self.worker_cpus = worker_cpus
        self.num_cpus = num_cpus

    def __repr__(self) -> str:
        return f"RayEngine(address={self.address!r}, workers={self.workers})"

    def __str__(self) -> str:
        where = f"Ray at {self.address}" if self.address else "a local Ray"
        return f"{self.workers} worker{'' if self.workers == 1 else 's'} on {where}"

    @contextlib.asynccontextmanager
    async def start(self, batch: Batch) -> AsyncIterator[BatchRunner]:
        """Start Ray if needed, then the limiter and the workers; stop them all after.

        Raises:
            UserError: The batch was given a built agent, not a factory, or rate limits for
                the embedded model; a worker could not build its agent.
        """
        factory = batch.agent_factory
        if factory is None:
            raise UserError("the ray engine needs a function that builds the agent, not an Agent")
        limits = _limits(batch)
        ray = _ray()
        started = self._init(ray)
        actors: list[Any] = []
        try:
            limiter = None
            if limits is not None:
                slots = self.workers * batch.concurrency
                limiter = _actor(ray, _Limiter, max_concurrency=max(1000, 2 * slots), num_cpus=0)
                limiter = limiter.remote(limits)
                actors.append(limiter)
            options = {
                "max_concurrency": batch.concurrency + 2,  # and `close`, `ready`
                "num_cpus": self.worker_cpus,
                "scheduling_strategy": "SPREAD",
            }
            try:
                workers = [
                    _actor(ray, _Worker, **options).remote(factory, limiter)
                    for _ in range(self.workers)
                ]
            except (TypeError, AttributeError, ValueError) as exc:  # what pickling raises
                raise UserError(
                    f"Ray could not send the agent factory to its workers ({exc}): build the "
                    "agent, and the clients or locks it holds, inside the factory"
                ) from exc
            actors += workers
            await _ready(workers)
            runner = _RayRunner(workers, limiter, batch.concurrency)
            try:
                yield runner
            finally:
                await _close(workers)
        finally:
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor)
            if started:
                ray.shutdown()

    def _init(self, ray: Any) -> bool:
        """Connect to Ray, or start a local one; whether this call started it."""
        if ray.is_initialized():
            return False
        options: dict[str, Any] = {"log_to_driver": False}
        if self.address is None:
            cpus = self.num_cpus or max(
                os.cpu_count() or 1, math.ceil(self.workers * self.worker_cpus)
            )
            options.update(
                address="local", num_cpus=cpus, include_dashboard=False,
                _node_ip_address="127.0.0.1",
            )  # fmt: skip
        else:
            options["address"] = self.address
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or "a local Ray"
            raise UserError(f"could not start or reach {where}: {exc}") from exc
        return True


@dataclass(frozen=True, slots=True)
class _Limits:
    rpm: float | None
    tpm: float | None
    burst: float = 1.0
    headroom: float = 0.97


def _limits(batch: Batch) -> _Limits | None:
    """The limits to enforce cluster-wide: the batch's, else its agent's own limiter's.

    Without either, a limiter still pauses every worker after a 429, as the local engine's.
    """
    from agent.ratelimit import RateLimiter

    agent = batch.agent
    if not hasattr(agent.model, "gate"):  # the embedded model: nothing to pace
        if batch.rpm or batch.tpm:
            raise UserError(f"the {agent.provider} backend takes no rate limits")
        return None
    own = agent.rate_limiter
    if not (batch.rpm or batch.tpm) and isinstance(own, RateLimiter):
        return _Limits(own.rpm, own.tpm, own.burst, own.headroom)
    return _Limits(batch.rpm, batch.tpm)


def _actor(ray: Any, cls: type, **options: Any) -> Any:
    return ray.remote(cls).options(**options)


async def _ready(workers: list[Any]) -> None:
    """Wait until every worker has built its agent; raise what stopped one."""
    try:
        async with asyncio.timeout(_START_TIMEOUT):
            failures = await asyncio.gather(*(w.ready.remote() for w in workers))
    except TimeoutError:
        raise UserError(
            f"the Ray workers did not start within {_START_TIMEOUT:g} s: does the cluster have "
            "the CPUs they ask for (worker_cpus)?"
        ) from None
    except Exception as exc:  # Ray's own errors: the cause comes last, after a traceback
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise UserError(f"a Ray worker could not start: {lines[-1] if lines else exc!r}") from exc
    for failure in failures:
        if failure is not None:
            raise failure.rebuild()


async def _close(workers: list[Any]) -> None:
    """Let every worker close its agent's connections (best effort: they are killed next)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            await asyncio.gather(*(w.close.remote() for w in workers), return_exceptions=True)


@dataclass(frozen=True, slots=True)
class _Fatal:
    """An error that stops the batch, as sent back from a worker.

    Our errors take keyword-only arguments, which pickling exceptions does not preserve: send
    the class, the message and the attributes, and rebuild the exception from them.
    """

    cls: type[BaseException]
    message: str
    state: dict[str, Any]

    @classmethod
    def of(cls, exc: BaseException) -> _Fatal:
        return cls(type(exc), str(exc), dict(vars(exc)))

    def rebuild(self) -> BaseException:
        exc = self.cls.__new__(self.cls)
        BaseException.__init__(exc, self.message)
        vars(exc).update(self.state)
        return exc


@dataclass
class _RayRunner:
    """Rows go to the worker with the fewest in flight; the batch caps the total at `slots`."""

    workers: list[Any]
    limiter: Any
    concurrency: int

    def __post_init__(self) -> None:
        self.slots = len(self.workers) * self.concurrency
        self._in_flight = [0] * len(self.workers)

    async def run(self, row: Row) -> dict[str, Any]:
        index = min(range(len(self.workers)), key=self._in_flight.__getitem__)
        self._in_flight[index] += 1
        try:
            result: dict[str, Any] | _Fatal = await self.workers[index].run.remote(row)
        finally:
            self._in_flight[index] -= 1
        if isinstance(result, _Fatal):
            raise result.rebuild()
        return result

    async def rate_limited(self) -> int:
        if self.limiter is None:
            return 0
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                stats: RateLimiterStats = await self.limiter.stats.remote()
                return stats.rate_limited
        return 0


class _Worker:
    """A Ray actor running rows on an agent of its own, paced by the shared limiter."""

    def __init__(self, factory: Callable[[], Agent], limiter: Any) -> None:
        self.factory = factory
        self.limiter = limiter
        self.agent: Agent | None = None

    async def ready(self) -> _Fatal | None:
        try:
            agent = self.factory()
            if self.limiter is not None:
                agent.rate_limiter = _RemoteGate(self.limiter)
        except Exception as exc:
            return _Fatal.of(exc if isinstance(exc, UserError) else UserError(str(exc)))
        self.agent = agent
        return None

    async def run(self, row: Row) -> dict[str, Any] | _Fatal:
        assert self.agent is not None, "ready() first"
        try:
            return await run_row(self.agent, row)
        except Exception as exc:  # run_row keeps row failures: what escapes it ends the batch
            return _Fatal.of(exc)

    async def close(self) -> None:
        if self.agent is not None:
            await self.agent.aclose()


class _Limiter:
    """A Ray actor holding the one `RateLimiter` every worker's requests go through.

    `RateLimiter` tells which request a `used` or `rate_limited` call is about from the calling
    task's context; here each call is a task of its own, so `acquire` hands out a ticket that
    keeps the context it was admitted in, and the later calls run in that context.
    """

    def __init__(self, limits: _Limits) -> None:
        from agent.ratelimit import RateLimiter

        self.limiter = RateLimiter(
            limits.rpm, limits.tpm, burst=limits.burst, headroom=limits.headroom
        )
        self.tickets: OrderedDict[int, contextvars.Context] = OrderedDict()
        self.issued = 0

    async def acquire(self, tokens: int) -> int:
        await self.limiter.acquire(tokens)
        self.issued += 1
        self.tickets[self.issued] = contextvars.copy_context()
        while len(self.tickets) > _MAX_TICKETS:
            self.tickets.popitem(last=False)
        return self.issued

    def _context(self, ticket: int | None) -> contextvars.Context:
        context = self.tickets.pop(ticket, None) if ticket is not None else None
        return context if context is not None else contextvars.Context()

    async def used(self, ticket: int | None, tokens: int) -> None:
        self._context(ticket).run(self.limiter.used, tokens)

    async def rate_limited(self, ticket: int | None, retry_after: float | None) -> None:
        self._context(ticket).run(self.limiter.rate_limited, retry_after)

    async def stats(self) -> RateLimiterStats:
        return self.limiter.stats()


# The ticket of the request this task was last admitted with, as `agent.ratelimit` keeps it.
_ticket: contextvars.ContextVar[tuple[_RemoteGate, int] | None] = contextvars.ContextVar(
    "qwenloop_ray_ticket", default=None
)


class _RemoteGate:
    """A worker's `RequestGate`: waits on the limiter actor; reports to it without waiting."""

    def __init__(self, limiter: Any) -> None:
        self.limiter = limiter

    async def acquire(self, tokens: int) -> None:
        ticket: int = await self.limiter.acquire.remote(tokens)
        _ticket.set((self, ticket))

    def _take(self) -> int | None:
        held = _ticket.get()
        if held is None or held[0] is not self:
            return None
        _ticket.set(None)
        return held[1]

    def rate_limited(self, retry_after: float | None) -> None:
        self.limiter.rate_limited.remote(self._take(), retry_after)

    def used(self, tokens: int) -> None:
        self.limiter.used.remote(self._take(), tokens)
