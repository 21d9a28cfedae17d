"""Loop overhead: qwenloop against a minimal loop written directly on the openai SDK.

The same task for both: the model asks for K parallel calls to a tool that sleeps T ms, then
answers. The model is the scripted server from `agent.testing`, run in its own process so it does
not share the client's GIL. Runs of the two loops are interleaved and medians reported, so the
ratio holds on a noisy shared machine even when absolute times do not.

    python bench/loop_overhead.py            # all scenarios
    python bench/loop_overhead.py --quick    # fewer repetitions
    python bench/loop_overhead.py --profile  # pyinstrument profile of qwenloop at T = 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import time
from typing import Any

import openai

from agent import Agent, tool

K_DEFAULT = 4


def serve(port_queue: Any, stop: Any, k: int, t_ms: int) -> None:
    """Child process: a scripted server answering tool calls, then a final answer."""
    from agent.testing import ScriptedServer, text_reply, tool_calls_reply

    calls = tool_calls_reply([("sleep_ms", {"ms": t_ms, "i": i}) for i in range(k)])
    final = text_reply("All done.")

    def respond(request: Any) -> Any:
        last = request.json["messages"][-1]
        return calls if last["role"] == "user" else final

    with ScriptedServer() as server:
        server.respond_with(respond)
        port_queue.put(server.url)
        stop.wait()


class Server:
    def __init__(self, k: int, t_ms: int) -> None:
        ctx = mp.get_context("spawn")
        self.queue = ctx.Queue()
        self.stop = ctx.Event()
        self.proc = ctx.Process(target=serve, args=(self.queue, self.stop, k, t_ms), daemon=True)

    def __enter__(self) -> str:
        self.proc.start()
        return str(self.queue.get(timeout=30))

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.proc.join(timeout=10)


@tool
async def sleep_ms(ms: int, i: int) -> str:
    """Sleep for ms milliseconds."""
    if ms:
        await asyncio.sleep(ms / 1000)
    return f"slept {ms} ms ({i})"


@tool(name="sleep_ms")
def sleep_ms_sync(ms: int, i: int) -> str:
    """Sleep for ms milliseconds (blocking)."""
    if ms:
        time.sleep(ms / 1000)
    return f"slept {ms} ms ({i})"


TOOLS_SCHEMA = [sleep_ms.openai_schema()]


class HandLoop:
    """The baseline: the smallest correct loop one would write on the SDK."""

    def __init__(self, url: str, sync_tools: bool) -> None:
        self.client = openai.AsyncOpenAI(base_url=url, api_key="bench", max_retries=0)
        self.sync_tools = sync_tools

    async def run(self, prompt: str) -> str:
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
        while True:
            resp = await self.client.chat.completions.create(
                model="qwen-plus",
                messages=messages,  # type: ignore[arg-type]
                tools=TOOLS_SCHEMA,  # type: ignore[arg-type]
            )
            msg = resp.choices[0].message
            if not msg.tool_calls:
                return msg.content or ""
            messages.append(msg.model_dump(exclude_none=True))

            async def call(tc: Any) -> str:
                args = json.loads(tc.function.arguments)
                if self.sync_tools:
                    return await asyncio.to_thread(sleep_ms_sync.fn, **args)
                return await sleep_ms.fn(**args)

            results = await asyncio.gather(*(call(tc) for tc in msg.tool_calls))
            for tc, result in zip(msg.tool_calls, results, strict=True):
                messages.append({"role": "tool", "tool_call_id": tc.id, "content": result})

    async def aclose(self) -> None:
        await self.client.close()


def make_agent(url: str, sync_tools: bool) -> Agent:
    return Agent(
        "qwen-plus",
        base_url=url,
        api_key="bench",
        tools=[sleep_ms_sync if sync_tools else sleep_ms],
        retries=0,
    )


async def latency(url: str, reps: int, sync_tools: bool = False) -> dict[str, float]:
    agent = make_agent(url, sync_tools)
    hand = HandLoop(url, sync_tools)
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(5):  # warm up connections and imports
        await agent.run("go")
        await hand.run("go")
    for _ in range(reps):
        t0 = time.perf_counter()
        await agent.run("go")
        t1 = time.perf_counter()
        await hand.run("go")
        t2 = time.perf_counter()
        ours.append(t1 - t0)
        theirs.append(t2 - t1)
    await agent.aclose()
    await hand.aclose()
    return {
        "qwenloop_ms": statistics.median(ours) * 1e3,
        "hand_ms": statistics.median(theirs) * 1e3,
    }


async def round_trip(url: str, reps: int) -> float:
    client = openai.AsyncOpenAI(base_url=url, api_key="bench", max_retries=0)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        await client.chat.completions.create(
            model="qwen-plus", messages=[{"role": "assistant", "content": "x"}]
        )
        times.append(time.perf_counter() - t0)
    await client.close()
    return statistics.median(times) * 1e3


async def throughput(url: str, in_flight: int, total: int, sync_tools: bool) -> dict[str, float]:
    async def drive(run: Any) -> float:
        sem = asyncio.Semaphore(in_flight)

        async def one() -> None:
            async with sem:
                await run("go")

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total)))
        return total / (time.perf_counter() - t0)

    agent = make_agent(url, sync_tools)
    hand = HandLoop(url, sync_tools)
    await drive(agent.run)  # warm-up
    await drive(hand.run)
    ours, theirs = [], []
    for _ in range(2):
        ours.append(await drive(agent.run))
        theirs.append(await drive(hand.run))
    await agent.aclose()
    await hand.aclose()
    return {"qwenloop_rps": max(ours), "hand_rps": max(theirs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--profile-all", action="store_true")
    args = parser.parse_args()
    reps = 40 if args.quick else 150

    if args.profile:
        from pyinstrument import Profiler

        with Server(K_DEFAULT, 0) as url:
            agent = make_agent(url, False)

            async def many() -> None:
                for _ in range(300):
                    await agent.run("go")
                await agent.aclose()

            profiler = Profiler(interval=0.0005)
            profiler.start()
            asyncio.run(many())
            profiler.stop()
            print(profiler.output_text(unicode=False, color=False, show_all=args.profile_all))
        return

    print(f"K = {K_DEFAULT} parallel tool calls, then a final answer; medians, interleaved runs")
    with Server(K_DEFAULT, 0) as url:
        r = asyncio.run(latency(url, reps))
        print(
            f"T = 0 ms   async tools: qwenloop {r['qwenloop_ms']:.2f} ms, hand loop "
            f"{r['hand_ms']:.2f} ms, ratio {r['qwenloop_ms'] / r['hand_ms']:.2f}x"
        )
        r = asyncio.run(latency(url, reps, sync_tools=True))
        print(
            f"T = 0 ms   sync tools:  qwenloop {r['qwenloop_ms']:.2f} ms, hand loop "
            f"{r['hand_ms']:.2f} ms, ratio {r['qwenloop_ms'] / r['hand_ms']:.2f}x"
        )
        for in_flight, sync_tools in ((50, False), (200, False), (50, True), (200, True)):
            total = in_flight * (2 if args.quick else 4)
            r = asyncio.run(throughput(url, in_flight, total, sync_tools))
            kind = "sync " if sync_tools else "async"
            print(
                f"{in_flight:3d} in flight, {kind} tools: qwenloop {r['qwenloop_rps']:.0f} runs/s,"
                f" hand loop {r['hand_rps']:.0f} runs/s, ratio "
                f"{r['qwenloop_rps'] / r['hand_rps']:.2f}x"
            )
    with Server(K_DEFAULT, 100) as url:
        rtt = asyncio.run(round_trip(url, reps))
        r = asyncio.run(latency(url, max(10, reps // 5)))
        budget = (100 + 2 * rtt) * 1.10
        print(
            f"T = 100 ms async tools: qwenloop {r['qwenloop_ms']:.1f} ms; bound T + 2 round trips"
            f" + 10% = {budget:.1f} ms (round trip {rtt:.2f} ms) -> "
            f"{'within' if r['qwenloop_ms'] <= budget else 'OVER'}"
        )
        for in_flight, sync_tools in ((50, False), (50, True), (200, True)):
            r = asyncio.run(throughput(url, in_flight, in_flight * 2, sync_tools))
            kind = "sync " if sync_tools else "async"
            print(
                f"T = 100 ms {in_flight:3d} in flight, {kind} tools: qwenloop "
                f"{r['qwenloop_rps']:.0f} runs/s, hand loop {r['hand_rps']:.0f} runs/s, ratio "
                f"{r['qwenloop_rps'] / r['hand_rps']:.2f}x"
            )


if __name__ == "__main__":
    main()
