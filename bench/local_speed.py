"""qwenloop's local backend against raw llama-cpp-python: same build, same weights, same prompts.

Usage: python bench/local_speed.py [--reps 5] [--threads N]

Both sides load the same GGUF with the same settings, one `Llama` each. Every case runs on both
sides in turn, in alternating order, so load on the machine hits both alike; figures are medians.

- chat, cold: a plain question with an empty KV cache. Time to first token (TTFT; qwenloop: the
  first streamed content chunk), prompt tokens/s (prompt / TTFT) and generation tokens/s.
- tool-call turn, cold: the demo's first turn with the built-in calculator and current_time
  schemas: qwenloop renders, generates and parses the call; raw generates from the same prompt.
- answer turn after the tool call: the agent's second turn, whose prompt extends the first
  turn's. qwenloop keeps the KV cache of the shared prefix ("warm"); "cold" clears it first, as a
  backend without prefix reuse would.

Goal: qwenloop within 10% of raw on every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.models.base import ModelRequest, ResponseMeta
from agent.models.llama_runner import PromptCache, open_llama, require_llama_cpp
from agent.models.local import LocalChatModel
from tools import get_builtin

TOOLS = [get_builtin(name).openai_schema() for name in ("calculator", "current_time")]
SYSTEM = "Use the tools when needed, then answer the user's question with the tool results."
QUESTION = "How many seconds are in a week?"
CHAT = "Write a short paragraph about the history of the number zero."
GEN_TOKENS = 64


class Raw:
    """llama-cpp-python used by hand: tokenize, generate, stop at end-of-generation."""

    def __init__(self, llama_cpp: Any, path: str, threads: int, n_ctx: int) -> None:
        self.llama = open_llama(
            llama_cpp,
            path,
            extra_buffer_types=True,
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            seed=0,
            verbose=False,
        )
        vocab = llama_cpp.llama_model_get_vocab(self.llama.model)
        self.is_eog: Callable[[int], bool] = lambda t: bool(llama_cpp.llama_vocab_is_eog(vocab, t))

    def run(self, prompt: str, max_tokens: int, *, cold: bool) -> dict[str, float]:
        if cold:
            self.llama.reset()
        started = time.perf_counter()
        tokens = self.llama.tokenize(prompt.encode(), add_bos=False, special=True)
        ttft = 0.0
        count = 0
        for token in self.llama.generate(
            tokens, temp=0.0, top_k=20, top_p=0.8, min_p=0.0, repeat_penalty=1.0
        ):
            if self.is_eog(int(token)):
                break
            count += 1
            # The first token with visible text, as a user of the raw library would show it.
            if not ttft and self.llama.detokenize([token]).strip():
                ttft = time.perf_counter() - started
            if count >= max_tokens:
                break
        total = time.perf_counter() - started
        return figures(len(tokens), count, ttft, total)


def figures(prompt: int, completion: int, ttft: float, total: float) -> dict[str, float]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "ttft": ttft,
        "prompt_tps": prompt / ttft if ttft else 0.0,
        "gen_tps": (completion - 1) / (total - ttft) if completion > 1 and total > ttft else 0.0,
        "seconds": total,
    }


async def ours(model: LocalChatModel, request: ModelRequest, *, cold: bool) -> dict[str, float]:
    """Stream one request through the backend; TTFT is the first chunk with text or a call.

    A tool call is sent whole when generation ends (its text is held back), so on a tool-call
    turn TTFT is the whole turn and says nothing about speed: the table shows "-" there.
    """
    if cold:
        model._runner.llama.reset()  # a bench may reach inside: drop the KV cache
    started = time.perf_counter()
    ttft = 0.0
    usage: dict[str, Any] = {}
    async for chunk in model.stream(request, ResponseMeta()):
        if (
            not ttft
            and chunk["choices"]
            and any(chunk["choices"][0]["delta"].get(key) for key in ("content", "tool_calls"))
        ):
            ttft = time.perf_counter() - started
        usage = chunk.get("usage") or usage
    total = time.perf_counter() - started
    result = figures(usage["prompt_tokens"], usage["completion_tokens"], ttft, total)
    result["cached_tokens"] = usage["prompt_tokens_details"]["cached_tokens"]
    return result


def request(messages: list[dict[str, Any]], tools: bool, max_tokens: int) -> ModelRequest:
    return ModelRequest(
        model="local",
        messages=messages,
        tools=TOOLS if tools else None,
        params={
            "temperature": 0,
            "top_k": 20,
            "top_p": 0.8,
            "repeat_penalty": 1.0,
            "max_tokens": max_tokens,
        },
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    threads = args.threads or len(os.sched_getaffinity(0))

    # No disk snapshots in the comparison: "cold" must mean cold. They get their own row.
    model = LocalChatModel(
        n_ctx=4096, n_threads=threads, extra_buffer_types=True, prompt_cache=False
    )
    await model.load()
    raw = Raw(require_llama_cpp(), str(model.model_path), threads, 4096)
    assert model._template is not None
    print(f"model     {model.model_path}")
    print(f"threads   {threads}; load {model.load_seconds:.2f} s")
    print(f"loadavg   {os.getloadavg()[0]:.2f} (other work on the machine slows every figure)")

    # The agent's two turns, as the loop would send them.
    first = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    call_turn = await model.complete(request(first, True, 128))
    message = call_turn.body["choices"][0]["message"]
    assert message.get("tool_calls"), f"the model did not call a tool: {message}"
    call = message["tool_calls"][0]
    second = [*first, message, {"role": "tool", "tool_call_id": call["id"], "content": "604800"}]
    print(f"tool call {call['function']['name']}({call['function']['arguments']})")

    chat = request([{"role": "user", "content": CHAT}], False, GEN_TOKENS)
    cases = {
        "chat, cold": chat,
        "tool-call turn, cold": request(first, True, 128),
        "answer turn, cold cache": request(second, True, 128),
    }
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for rep in range(args.reps):
        for name, req in cases.items():
            prompt = model._template.render(req.messages, req.tools, req.params)
            max_tokens = int(req.params["max_tokens"])
            sides = [
                ("raw", lambda p=prompt, m=max_tokens: asyncio.to_thread(raw.run, p, m, cold=True)),
                ("qwenloop", lambda r=req: ours(model, r, cold=True)),
            ]
            for side, run in sides if rep % 2 == 0 else sides[::-1]:
                results.setdefault((name, side), []).append(await run())
        # The warm answer turn: the tool-call turn just ran, so its prefix is in the KV cache.
        for side in ("raw", "qwenloop"):
            if side == "raw":
                await asyncio.to_thread(
                    raw.run, model._template.render(first, TOOLS, {}), 128, cold=True
                )
                prompt = model._template.render(second, TOOLS, {})
                figures_ = await asyncio.to_thread(raw.run, prompt, 128, cold=False)
            else:
                await ours(model, request(first, True, 128), cold=True)
                figures_ = await ours(model, request(second, True, 128), cold=False)
            results.setdefault(("answer turn, warm cache", side), []).append(figures_)

    # A new process, as the CLI is: the KV cache is empty, but a snapshot of the same prompt's
    # prefix is on disk from an earlier run.
    with tempfile.TemporaryDirectory() as snapshots:
        model._runner.prompt_cache = PromptCache(Path(snapshots))
        await ours(model, request(first, True, 128), cold=True)  # leaves a snapshot
        for _ in range(args.reps):
            figures_ = await ours(model, request(first, True, 128), cold=True)
            results.setdefault(("tool-call turn, disk snapshot", "qwenloop"), []).append(figures_)
        model._runner.prompt_cache = None

    await model.aclose()
    print(f"\nmedians of {args.reps} runs each, interleaved")
    print(
        f"{'case':<26} {'side':<9} {'prompt':>6} {'cached':>6} {'TTFT s':>7} "
        f"{'prompt t/s':>10} {'gen t/s':>8} {'total s':>8}"
    )
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for (name, side), runs in results.items():
        med = {key: statistics.median(run.get(key, 0.0) for run in runs) for key in runs[0]}
        summary.setdefault(name, {})[side] = med
        call_turn = name.startswith("tool-call") and side == "qwenloop"
        ttft, prompt_tps, gen_tps = (
            ("-", "-", "-")
            if call_turn
            else (f"{med['ttft']:.3f}", f"{med['prompt_tps']:.1f}", f"{med['gen_tps']:.1f}")
        )
        print(
            f"{name:<26} {side:<9} {med['prompt_tokens']:>6.0f}"
            f" {med.get('cached_tokens', 0):>6.0f} {ttft:>7}"
            f" {prompt_tps:>10} {gen_tps:>8} {med['seconds']:>8.2f}"
        )
    print("\nqwenloop / raw (1.00 = the same; time: lower is better, speed: higher is better)")
    for name, sides in summary.items():
        if "raw" in sides and "qwenloop" in sides:
            ours_, theirs = sides["qwenloop"], sides["raw"]
            keys = (
                ("seconds",)
                if name.startswith("tool-call")
                else ("ttft", "prompt_tps", "gen_tps", "seconds")
            )
            ratios = {key: ours_[key] / theirs[key] for key in keys if theirs[key]}
            print(f"{name:<26} " + "  ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    warm = summary["answer turn, warm cache"]["qwenloop"]["seconds"]
    cold = summary["answer turn, cold cache"]["qwenloop"]["seconds"]
    print(
        f"\nKV-cache reuse on the answer turn: {cold:.2f} s cold -> {warm:.2f} s warm "
        f"({cold / warm:.2f}x)"
    )
    disk = summary["tool-call turn, disk snapshot"]["qwenloop"]["seconds"]
    fresh = summary["tool-call turn, cold"]["qwenloop"]["seconds"]
    print(
        f"Disk snapshot on a new process's first turn: {fresh:.2f} s cold -> {disk:.2f} s "
        f"({fresh / disk:.2f}x)"
    )


if __name__ == "__main__":
    asyncio.run(main())
