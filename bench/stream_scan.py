"""Streaming scan cost: `StreamScanner` against the floor of merely collecting the pieces.

A streamed reply passes through `agent.textcalls.StreamScanner` piece by piece so that tool-call
markup never reaches the user. This measures what that costs for replies of 50, 200 and 800 KB
fed in 5-character pieces ("auto" mode, one tool on offer), in three shapes:

    prose     prose with braces, brackets, inline code and HTML-ish tags, nothing held back
    call      the same prose, then a `<tool_call>` block at the end
    unclosed  a `<tool_call>` block that never closes (held back to the end)

The baseline is the floor: appending the same pieces to a list and joining them. Runs of the
scanner and the baseline are interleaved and medians reported, so the ratio holds on a noisy
shared machine even when absolute times do not. Cost per KB that stays flat as the reply grows
means linear time; the old scanner's grew with the reply (quadratic).

    python bench/stream_scan.py                  # 50, 200 and 800 KB, 5 repetitions
    python bench/stream_scan.py --sizes 50,200 --reps 3 --piece 20
"""

from __future__ import annotations

import argparse
import statistics
import time

from agent.textcalls import StreamScanner, parse_tool_calls

SENTENCE = "The weather in Paris is fine, {see} [this] and `code` <b>bold</b>. "
CALL = '\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def reply(shape: str, kb: int) -> str:
    """Return a reply of about `kb` KB in the given shape."""
    size = kb * 1000
    if shape == "unclosed":
        return "<tool_call>\n" + "x" * size
    prose = SENTENCE * (size // len(SENTENCE))
    return prose + CALL if shape == "call" else prose


def pieces_of(text: str, piece: int) -> list[str]:
    return [text[index : index + piece] for index in range(0, len(text), piece)]


def scan(pieces: list[str]) -> float:
    """Feed the pieces to a scanner and take the new content after each; return seconds."""
    scanner = StreamScanner(["get_weather"], mode="auto")
    started = time.perf_counter()
    for piece in pieces:
        scanner.feed(piece)
        scanner.take_content()
    return time.perf_counter() - started


def floor(pieces: list[str]) -> float:
    """Collect the pieces and join them, as any consumer must; return seconds."""
    started = time.perf_counter()
    collected: list[str] = []
    for piece in pieces:
        collected.append(piece)
    "".join(collected)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,200,800", help="reply sizes in KB")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (medians reported)")
    parser.add_argument("--piece", type=int, default=5, help="characters per piece")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"{args.piece}-character pieces, median of {args.reps} interleaved runs")
    print(f"{'shape':9} {'KB':>5} {'scanner ms':>11} {'µs/KB':>8} {'floor ms':>9} {'ratio':>6}")
    for shape in ("prose", "call", "unclosed"):
        for kb in sizes:
            text = reply(shape, kb)
            pieces = pieces_of(text, args.piece)
            scanned, floors = [], []
            for _ in range(args.reps):
                scanned.append(scan(pieces))
                floors.append(floor(pieces))
            ms, floor_ms = statistics.median(scanned) * 1e3, statistics.median(floors) * 1e3
            per_kb = ms * 1e3 / (len(text) / 1000)
            print(f"{shape:9} {kb:5} {ms:11.1f} {per_kb:8.1f} {floor_ms:9.1f} {ms / floor_ms:6.1f}")
    text = reply("prose", max(sizes))
    started = time.perf_counter()
    parse_tool_calls(text, ["get_weather"], mode="auto")
    took = (time.perf_counter() - started) * 1e3
    print(f"parse_tool_calls on {max(sizes)} KB of prose (once per reply): {took:.1f} ms")


if __name__ == "__main__":
    main()
