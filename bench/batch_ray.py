"""Batches on Ray: runs per second with 1, 2 and 4 workers when each model call takes 200 ms.

The same rows (single-turn text replies from the scripted server of `agent.testing`, each
answered after 200 ms) run through `Batch(engine=RayEngine(workers=N))` on one local Ray,
`--concurrency` runs in flight per worker; the local engine runs them too, as a baseline, at
the concurrency of one worker and at that of the most workers.

Two rates per run: "wall" counts from `Batch.run` to its end (Ray start-up of the workers
included); "steady" counts from the first request the server received to its last answer.

    python bench/batch_ray.py                 # 480 rows, 8 runs per worker, 1/2/4 workers
    python bench/batch_ray.py --quick         # 160 rows
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agent import Agent
from agent.batch import Batch
from agent.batch_ray import RayEngine
from agent.testing import ScriptedServer, text_reply

DELAY = 0.2


class Clock:
    """Answers every request after DELAY; notes when the first came and the last was answered."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.first = self.last = 0.0
        self.count = 0

    def __call__(self, request: Any) -> Any:
        now = time.monotonic()
        with self.lock:
            self.first = self.first or now
            self.last = max(self.last, now + DELAY)
            self.count += 1
        return text_reply("ok", delay=DELAY)

    def reset(self) -> None:
        with self.lock:
            self.first = self.last = 0.0
            self.count = 0


def factory(url: str) -> Any:
    def make() -> Agent:
        return Agent("qwen-plus", base_url=url, api_key="bench")

    return make


def one(
    clock: Clock, url: str, source: Path, workers: int | None, concurrency: int
) -> dict[str, Any]:
    clock.reset()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out.jsonl"
        if workers is None:
            batch = Batch(factory(url)(), concurrency=concurrency, progress="off")
        else:
            engine = RayEngine(workers=workers)
            batch = Batch(factory(url), engine=engine, concurrency=concurrency, progress="off")
        summary = batch.run_sync(source, out)
    assert summary.ok and summary.done == clock.count, summary.describe()
    steady = clock.count / (clock.last - clock.first)
    return {
        "engine": "local" if workers is None else f"ray × {workers}",
        "in_flight": concurrency * (workers or 1),
        "rows": summary.done,
        "wall_s": summary.seconds,
        "wall_rps": summary.runs_per_second,
        "steady_rps": steady,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=480)
    parser.add_argument("--concurrency", type=int, default=8, help="runs in flight per worker")
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--quick", action="store_true", help="160 rows")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()
    rows = 160 if args.quick else args.rows
    counts = [int(n) for n in args.workers.split(",")]
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.pop("RAY_ADDRESS", None)
    import ray

    ray.init(
        address="local",
        num_cpus=max(counts),
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    results = []
    try:
        with ScriptedServer() as server, tempfile.TemporaryDirectory() as folder:
            clock = Clock()
            server.respond_with(clock)
            source = Path(folder) / "in.jsonl"
            source.write_text(
                "".join(json.dumps({"id": i, "prompt": f"row {i}"}) + "\n" for i in range(rows))
            )
            plan: list[tuple[int | None, int]] = [(None, args.concurrency)]
            plan += [(n, args.concurrency) for n in counts]
            plan.append((None, args.concurrency * max(counts)))
            for workers, concurrency in plan:
                results.append(one(clock, server.url, source, workers, concurrency))
                r = results[-1]
                print(f"  {r['engine']:10} {r['in_flight']:3} in flight: {r['steady_rps']:.1f}/s")
    finally:
        ray.shutdown()
    print_table(results, rows, args.concurrency, counts)
    if args.json:
        print(json.dumps(results, indent=2))


def print_table(
    results: list[dict[str, Any]], rows: int, concurrency: int, counts: list[int]
) -> None:
    cores = os.cpu_count()
    print(f"\n{rows} rows, each model call {DELAY * 1000:.0f} ms, {concurrency} runs per worker")
    print(f"on {cores} cores; wall includes starting the workers\n")
    print(f"{'engine':10} {'in flight':>9} {'wall s':>7} {'wall runs/s':>11} {'steady runs/s':>13}")
    for r in results:
        print(
            f"{r['engine']:10} {r['in_flight']:>9} {r['wall_s']:>7.2f} {r['wall_rps']:>11.1f}"
            f" {r['steady_rps']:>13.1f}"
        )
    ray_rows = {int(r["engine"].split()[-1]): r for r in results if r["engine"] != "local"}
    base = ray_rows.get(1) or ray_rows[min(ray_rows)]
    print("\nspeed-up over 1 worker (steady, wall):")
    for n in counts:
        r = ray_rows[n]
        ideal = n / int(base["engine"].split()[-1])
        print(
            f"  {n} workers: {r['steady_rps'] / base['steady_rps']:.2f}x steady,"
            f" {r['wall_rps'] / base['wall_rps']:.2f}x wall (ideal {ideal:.0f}x)"
        )


if __name__ == "__main__":
    main()
