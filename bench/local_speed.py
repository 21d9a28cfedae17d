"""Measure the embedded local model on this machine: load, prompt and generation speed, TTFT.

Usage: python bench/local_speed.py [--reps 3] [--threads N] [--prompt-tokens 512] [--gen-tokens 64]

Figures are medians over the repetitions. Prompt processing and generation are timed on
llama.cpp directly; time to first token (TTFT) goes through LocalChatModel.stream, cold (KV cache
cleared) and warm (the same conversation prefix already evaluated, as on an agent's next turn).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time
from typing import Any

from agent.models.base import ModelRequest, ResponseMeta
from agent.models.local import LocalChatModel
from tools import get_builtin

# The built-in tools the demo offers, with their real schemas.
TOOLS = [get_builtin(name).openai_schema() for name in ("calculator", "current_time")]


def rss_mb() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def raw_speeds(llama: Any, prompt_tokens: int, gen_tokens: int) -> tuple[float, float]:
    """Return (prompt tokens/s, generated tokens/s) from a cold cache."""
    text = "The quick brown fox jumps over the lazy dog while the cat watches. " * 200
    tokens = llama.tokenize(text.encode(), add_bos=False, special=False)[:prompt_tokens]
    llama.reset()
    started = time.perf_counter()
    llama.eval(tokens)
    prompt_speed = len(tokens) / (time.perf_counter() - started)
    generated = 0
    started = time.perf_counter()
    for _token in llama.generate([], temp=0.0, reset=False):
        generated += 1
        if generated >= gen_tokens:
            break
    gen_speed = generated / (time.perf_counter() - started)
    return prompt_speed, gen_speed


async def first_token(
    model: LocalChatModel, request: ModelRequest, *, cold: bool
) -> tuple[float, float, int]:
    """Return (seconds to the first chunk with content, total seconds, completion tokens)."""
    if cold:
        model._llama.reset()  # a bench may reach inside: drop the KV cache
    started = time.perf_counter()
    ttft = 0.0
    tokens = 0
    async for chunk in model.stream(request, ResponseMeta()):
        if not ttft and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            ttft = time.perf_counter() - started
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    return ttft, time.perf_counter() - started, tokens


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--gen-tokens", type=int, default=64)
    args = parser.parse_args()

    model = LocalChatModel(n_ctx=4096, n_threads=args.threads)
    await model.load()
    llama = model._llama
    print(f"model     {model.model_path}")
    print(f"threads   {llama.n_threads if hasattr(llama, 'n_threads') else args.threads}")
    print(f"load      {model.load_seconds:.2f} s, RSS after load {rss_mb():.0f} MB")
    print(f"loadavg   {os.getloadavg()[0]:.2f} (other work on the machine slows every figure)")

    prompt_speeds, gen_speeds = [], []
    for _ in range(args.reps):
        prompt_speed, gen_speed = await asyncio.to_thread(
            raw_speeds, llama, args.prompt_tokens, args.gen_tokens
        )
        prompt_speeds.append(prompt_speed)
        gen_speeds.append(gen_speed)

    chat = ModelRequest(
        model="local",
        messages=[{"role": "user", "content": "Name three prime numbers, briefly."}],
        params={"temperature": 0, "max_tokens": 32},
    )
    agent_turn = ModelRequest(
        model="local",
        messages=[{"role": "user", "content": "How many seconds are in a week?"}],
        tools=TOOLS,
        params={"temperature": 0, "max_tokens": 64},
    )
    cold, warm, turns = [], [], []
    for _ in range(args.reps):
        cold.append((await first_token(model, chat, cold=True))[0])
        warm.append((await first_token(model, chat, cold=False))[0])
        turns.append((await first_token(model, agent_turn, cold=True))[1])
    rendered_tokens = (await model.complete(agent_turn)).body["usage"]["prompt_tokens"]
    print(f"peak RSS  {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    await model.aclose()

    rows = [
        (
            f"prompt processing ({args.prompt_tokens} tok)",
            statistics.median(prompt_speeds),
            "tok/s",
        ),
        (f"generation ({args.gen_tokens} tok)", statistics.median(gen_speeds), "tok/s"),
        ("TTFT, short chat, cold cache", statistics.median(cold), "s"),
        ("TTFT, short chat, warm cache", statistics.median(warm), "s"),
        (f"tool-call turn, cold ({rendered_tokens} prompt tok)", statistics.median(turns), "s"),
    ]
    print(f"\n{'measure (median of ' + str(args.reps) + ')':<44} {'value':>9}  unit")
    for name, value, unit in rows:
        print(f"{name:<44} {value:>9.2f}  {unit}")


if __name__ == "__main__":
    asyncio.run(main())
