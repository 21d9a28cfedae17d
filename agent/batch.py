"""Batches: one agent over every row of a JSONL or CSV file, results appended durably to JSONL.

Four parts another engine can reuse: `read_rows` (input), `OutputFile` (durable output and
resume), `run_row` (one row's run as an output row) and `Batch` (concurrency, rate limits,
progress). Rows run in this process by default; a `BatchEngine` (`agent.batch_ray`) runs them
elsewhere while the input, output and progress stay here.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

from agent.errors import AgentError, AuthenticationError, ConfigError, UserError
from agent.messages import RunResult, Usage
from agent.prompts import Template
from agent.secrets import scrub_surrogates

if TYPE_CHECKING:
    from agent.agent import Agent
    from agent.models.base import RequestGate

__all__ = [
    "BadRow", "BadRowError", "Batch", "BatchEngine", "BatchRunner", "BatchSummary", "OutputFile",
    "Row", "read_rows", "run_row",
]  # fmt: skip

ProgressMode = Literal["auto", "bar", "lines", "off"]
# Errors that would fail every row alike: the batch stops instead of recording each row.
_FATAL = (AuthenticationError, ConfigError)
_SHOWN_BAD_ROWS = 20


@dataclass(frozen=True, slots=True)
class Row:
    """One input row.

    Attributes:
        line: Its line number in the input (where the record starts, for CSV).
        id: Its id as given (a string, or an integer in JSONL).
        prompt: The user prompt.
        variables: The other columns: template variables for the system prompt.
    """

    line: int
    id: str | int
    prompt: str
    variables: dict[str, Any]

    @property
    def key(self) -> str:
        """The id as compared for duplicates and resume (1 and "1" are the same id)."""
        return str(self.id)


@dataclass(frozen=True, slots=True)
class BadRow:
    """A malformed input row: its line number and what is wrong with it."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class BadRowError(UserError):
    """A malformed row in a strict batch.

    Attributes:
        path: The input file.
        line: The row's line number.
        reason: What is wrong with it.
    """

    def __init__(self, path: Path, bad: BadRow) -> None:
        super().__init__(f"{path} {bad} (the batch is strict: fix the row, or drop --strict)")
        self.path = path
        self.line = bad.line
        self.reason = bad.reason


def read_rows(path: str | Path, *, strict: bool = False) -> Iterator[Row | BadRow]:
    """Read a batch's input, a `.jsonl` or `.csv` file, row by row.

    Each row needs an `id` and a `prompt`; its other columns are template variables. Blank
    lines are skipped; a malformed row comes out as a `BadRow`.

    Args:
        path: The input file; its extension says the format (`.jsonl`/`.ndjson` or `.csv`).
        strict: Raise `BadRowError` at the first malformed row instead of yielding it.

    Raises:
        UserError: The file is missing or of an unknown format, lacks an `id` or `prompt`
            column (the CSV header, or the first JSONL row), or repeats an id.
        BadRowError: With `strict`, at the first malformed row.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv"):
        raise UserError(f"input {str(file)!r}: name it .jsonl (one JSON object a line) or .csv")
    if not file.is_file():
        raise UserError(f"input file {str(file)!r} does not exist")
    seen: dict[str, int] = {}
    for item in _csv_rows(file) if suffix == ".csv" else _jsonl_rows(file):
        if isinstance(item, Row):
            first = seen.setdefault(item.key, item.line)
            if first != item.line:
                raise UserError(
                    f"{file} line {item.line}: id {item.id!r} repeats line {first}; "
                    "give every row its own id"
                )
        elif strict:
            raise BadRowError(file, item)
        yield item


def _jsonl_rows(file: Path) -> Iterator[Row | BadRow]:
    checked = False
    with file.open("rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                yield BadRow(number, f"not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            except ValueError:  # bytes that are not UTF-8
                yield BadRow(number, "not UTF-8 text")
                continue
            if not isinstance(obj, dict):
                yield BadRow(number, f"not a JSON object but {type(obj).__name__}")
                continue
            if not checked:
                _check_columns(file, f"line {number}'s fields", list(obj))
                checked = True
            variables = {k: v for k, v in obj.items() if k not in ("id", "prompt")}
            yield _row(number, obj.get("id"), obj.get("prompt"), variables)


def _csv_rows(file: Path) -> Iterator[Row | BadRow]:
    with file.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        start = 1
        try:
            header = next(reader, None)
            if header is None:
                raise UserError(f"{file} is empty: the first line must name the columns")
            names = [name.strip() for name in header]
            _check_columns(file, "header", names)
            start = reader.line_num + 1
            for fields in reader:
                line, start = start, reader.line_num + 1
                if not fields:
                    continue
                if len(fields) != len(names):
                    yield BadRow(line, f"{len(fields)} fields, the header has {len(names)}")
                    continue
                values = dict(zip(names, fields, strict=True))
                variables = {k: v for k, v in values.items() if k not in ("id", "prompt")}
                yield _row(line, values["id"], values["prompt"], variables)
        except UnicodeDecodeError:
            raise UserError(f"{file} near line {start} is not UTF-8 text") from None
        except csv.Error as exc:
            raise UserError(f"{file} line {start}: {exc} (JSONL has no such limits)") from None


def _check_columns(file: Path, where: str, names: list[str]) -> None:
    missing = [c for c in ("id", "prompt") if c not in names]
    if missing:
        raise UserError(
            f"{file}: the {where} lack {' and '.join(map(repr, missing))} "
            f"(found {', '.join(map(repr, names)) or 'none'}); every row needs an 'id' and a "
            "'prompt', its other columns are template variables"
        )
    if len(set(names)) != len(names):
        raise UserError(f"{file}: the {where} name a column twice")


def _row(line: int, id: Any, prompt: Any, variables: dict[str, Any]) -> Row | BadRow:
    if id is None:
        return BadRow(line, "no id")
    if isinstance(id, bool) or not isinstance(id, str | int):
        return BadRow(line, f"the id must be a string or an integer, not {type(id).__name__}")
    if isinstance(id, str) and not id.strip():
        return BadRow(line, "the id is empty")
    if prompt is None:
        return BadRow(line, "no prompt")
    if not isinstance(prompt, str):
        return BadRow(line, f"the prompt must be a string, not {type(prompt).__name__}")
    if not prompt.strip():
        return BadRow(line, "the prompt is empty")
    return Row(line, id, scrub_surrogates(prompt), variables)


class OutputFile:
    """A batch's JSONL output: one line per finished row, durable once written, no id twice.

    Opening reads the ids already there (for resume) and cuts a last line a killed batch left
    unfinished. The file is locked against a second batch writing it at the same time.

    Args:
        path: The output file (created if missing).
        resume: Append to a file that already holds rows; without it such a file is refused.

    Raises:
        UserError: The file holds rows and `resume` is off, holds a line that is not an output
            row, or another batch is writing it.
    """

    def __init__(self, path: str | Path, *, resume: bool = False) -> None:
        self.path = Path(path)
        self.ids: set[str] = set()
        self.created = not self.path.exists()
        self._pending: list[bytes] = []
        self._lock = asyncio.Lock()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            _lock_file(self._fd, self.path)
            self._load(resume)
            if self.created:
                _fsync_dir(self.path.parent)
        except BaseException:
            os.close(self._fd)
            raise

    def _load(self, resume: bool) -> None:
        good_end = 0
        with open(self._fd, "rb", closefd=False) as f:
            for number, line in enumerate(f, 1):
                if not line.endswith(b"\n"):
                    break  # a line a killed batch left half written
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if not isinstance(row, dict) or "id" not in row:
                    raise UserError(
                        f"{self.path} line {number} is not a batch output row: choose another --out"
                    )
                self.ids.add(str(row["id"]))
                good_end += len(line)
            size = f.seek(0, os.SEEK_END)
        if size and not resume:
            held = f"holds {len(self.ids)} rows" if self.ids else "is not empty"
            raise UserError(
                f"{self.path} {held}: pass --resume (resume=True) to skip their ids, "
                "or choose another --out"
            )
        if size > good_end:
            os.ftruncate(self._fd, good_end)
            os.fsync(self._fd)

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Write finished rows and flush them to disk before returning.

        Raises:
            ValueError: A row's id is already in the file.
        """
        data = b"".join(self._encode(row) for row in rows)
        self._write(data)

    async def write(self, row: dict[str, Any]) -> None:
        """Write one finished row, durably; rows finishing together share one fsync.

        Raises:
            ValueError: The row's id is already in the file.
        """
        self._pending.append(self._encode(row))
        async with self._lock:
            if not self._pending:
                return  # an earlier writer flushed this row with its own
            data = b"".join(self._pending)
            self._pending.clear()
            await asyncio.to_thread(self._write, data)

    def _encode(self, row: dict[str, Any]) -> bytes:
        key = str(row["id"])
        if key in self.ids:
            raise ValueError(f"id {row['id']!r} is already in {self.path}")
        self.ids.add(key)
        return (json.dumps(row, ensure_ascii=False) + "\n").encode()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)

    def close(self) -> None:
        """Write rows still waiting, then close (and unlock) the file."""
        if self._fd < 0:
            return
        try:
            if self._pending:
                self._write(b"".join(self._pending))
                self._pending.clear()
        finally:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> OutputFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lock_file(fd: int, path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, no check
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        message = f"another batch is writing {path}: wait for it, or choose another --out"
        raise UserError(message) from None


def _fsync_dir(folder: Path) -> None:
    """Make a new file's directory entry durable too."""
    with contextlib.suppress(OSError):  # not every platform opens directories
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


async def run_row(agent: Agent, row: Row) -> dict[str, Any]:
    """Run the agent on one row and return its output row.

    The row's variables join the system template's (when the agent's instructions are a
    `Template`). A run that fails is an output row too, with `error: {type, message}` and the
    usage and turns it spent.

    Returns:
        `{"id", "output", "usage", "cost", "turns", "seconds"}`, plus `"error"` on failure
        (`output` is then None).

    Raises:
        AuthenticationError: The key was refused: every row would fail alike.
        ConfigError: The agent cannot run at all.
    """
    start = time.monotonic()
    result: RunResult | None = None
    error: dict[str, str] | None = None
    try:
        variables = row.variables if isinstance(agent.instructions, Template) else None
        result = await agent.run(row.prompt, variables=variables or None)
        if result.interruptions:
            names = ", ".join(call.name for call in result.interruptions)
            message = f"{names} needs a person's approval, and a batch has no one to ask"
            error = {"type": "ApprovalRequired", "message": message}
    except _FATAL:
        raise
    except AgentError as exc:
        result, error = exc.result, {"type": type(exc).__name__, "message": str(exc)}
    except Exception as exc:  # one row's bug must not end a million-row batch
        error = {"type": type(exc).__name__, "message": str(exc) or repr(exc)}
    usage = result.usage if result is not None else Usage()
    out: dict[str, Any] = {
        "id": row.id,
        "output": result.output if result is not None and error is None else None,
        "usage": usage.model_dump(),
        "cost": result.cost if result is not None else None,
        "turns": result.turns if result is not None else 0,
        "seconds": round(time.monotonic() - start, 3),
    }
    if error is not None:
        out["error"] = error
    return out


@dataclass
class BatchSummary:
    """How a batch went; updated as rows finish.

    Attributes:
        total: Rows this run had to do (the input's valid rows, less those already done).
        done: Rows that succeeded.
        failed: Rows whose run failed (their output row has `error`).
        skipped: Rows already in the output (`resume`).
        bad_rows: Malformed input rows, not run.
        tokens: Tokens spent, failed runs included.
        cost: Cost in CNY where the model's price is known, else None.
        seconds: Wall time.
        rate_limited: 429 answers the rate limiter saw.
        out: The output file.
    """

    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    bad_rows: int = 0
    tokens: int = 0
    cost: float | None = None
    seconds: float = 0.0
    rate_limited: int = 0
    out: str = ""

    @property
    def finished(self) -> int:
        """Rows finished so far, succeeded or failed."""
        return self.done + self.failed

    @property
    def ok(self) -> bool:
        """Every row ran and succeeded."""
        return self.failed == 0 and self.bad_rows == 0

    @property
    def runs_per_second(self) -> float:
        """Finished rows per second of wall time."""
        return self.finished / self.seconds if self.seconds > 0 else 0.0

    def add(self, row: dict[str, Any]) -> None:
        """Count one finished output row."""
        if "error" in row:
            self.failed += 1
        else:
            self.done += 1
        self.tokens += int(row["usage"].get("total_tokens") or 0)
        if row["cost"] is not None:
            self.cost = (self.cost or 0.0) + float(row["cost"])

    def describe(self) -> str:
        """Return the one-paragraph summary printed at the end of a batch."""
        parts = [f"{self.done} done", f"{self.failed} failed"]
        if self.skipped:
            parts.append(f"{self.skipped} skipped (already in {self.out})")
        if self.bad_rows:
            parts.append(f"{self.bad_rows} bad row{'' if self.bad_rows == 1 else 's'}")
        spent = f"{self.tokens:,} tokens, {_cny(self.cost)}"
        limited = f"; {self.rate_limited} rate-limited (429) answers" if self.rate_limited else ""
        return (
            f"batch: {', '.join(parts)} in {_duration(self.seconds)} "
            f"({self.runs_per_second:.1f} runs/s); {spent}{limited}; results in {self.out}"
        )


def _cny(cost: float | None) -> str:
    return "cost unknown" if cost is None else f"¥{cost:,.4f}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class _Reporter(Protocol):
    def start(self, total: int) -> None: ...
    def note(self, text: str) -> None: ...
    def advance(self, summary: BatchSummary) -> None: ...
    def tick(self, summary: BatchSummary) -> None: ...
    def finish(self, summary: BatchSummary) -> None: ...


class _Quiet:
    def start(self, total: int) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def advance(self, summary: BatchSummary) -> None:
        pass

    def tick(self, summary: BatchSummary) -> None:
        pass

    def finish(self, summary: BatchSummary) -> None:
        pass


class _Lines(_Quiet):
    """Plain lines on standard error: one every few seconds, and the summary."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.started = time.monotonic()

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, total: int) -> None:
        self.started = time.monotonic()
        self._print(f"batch: {total} rows to run")

    def note(self, text: str) -> None:
        self._print(f"batch: {text}")

    def tick(self, summary: BatchSummary) -> None:
        elapsed = time.monotonic() - self.started
        rate = summary.finished / elapsed if elapsed > 0 else 0.0
        left = summary.total - summary.finished
        eta = _duration(left / rate) if rate > 0 else "?"
        self._print(
            f"batch: {summary.finished}/{summary.total} ({summary.failed} failed), "
            f"{rate:.1f} runs/s, ETA {eta}, {summary.tokens:,} tokens, {_cny(summary.cost)}"
        )

    def finish(self, summary: BatchSummary) -> None:
        self._print(summary.describe())


class _Bar(_Quiet):
    """A rich progress bar on standard error (a terminal)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[spent]}"),
            console=self.console,
        )
        self.task = self.progress.add_task("batch", total=None, rate="", spent="")
        self.started = time.monotonic()

    def start(self, total: int) -> None:
        self.started = time.monotonic()
        self.progress.update(self.task, total=total)
        self.progress.start()

    def note(self, text: str) -> None:
        self.console.print(f"batch: {text}", markup=False, highlight=False, soft_wrap=True)

    def advance(self, summary: BatchSummary) -> None:
        elapsed = time.monotonic() - self.started
        rate = summary.finished / elapsed if elapsed > 0 else 0.0
        failed = f", {summary.failed} failed" if summary.failed else ""
        spent = f"{summary.tokens:,} tokens, {_cny(summary.cost)}{failed}"
        self.progress.update(
            self.task, completed=summary.finished, rate=f"{rate:.1f}/s", spent=spent
        )

    def finish(self, summary: BatchSummary) -> None:
        self.progress.stop()
        self.note(summary.describe().removeprefix("batch: "))


class BatchRunner(Protocol):
    """Runs rows for one batch, wherever they run; what `BatchEngine.start` yields.

    Attributes:
        slots: Rows it runs at once; the batch keeps that many in flight.
    """

    slots: int

    async def run(self, row: Row) -> dict[str, Any]:
        """Run one row and return its output row (see `run_row`)."""
        ...

    async def rate_limited(self) -> int:
        """Return the 429 answers its rate limiter saw so far."""
        ...


class BatchEngine(Protocol):
    """Where a batch's rows run; `Batch(engine=...)`. The default runs them in this process."""

    def start(self, batch: Batch) -> AbstractAsyncContextManager[BatchRunner]:
        """Set up for `batch` (its agent factory, concurrency and limits); tear down after."""
        ...


@dataclass
class _LocalRunner:
    """Rows run here, on the batch's own agent."""

    agent: Agent
    gate: RequestGate | None
    slots: int

    async def run(self, row: Row) -> dict[str, Any]:
        return await run_row(self.agent, row)

    async def rate_limited(self) -> int:
        return _rate_limited(self.gate)


def _reporter(mode: ProgressMode) -> _Reporter:
    if mode == "off":
        return _Quiet()
    if mode == "lines":
        return _Lines(sys.stderr)
    terminal = sys.stderr is not None and sys.stderr.isatty()
    if mode == "bar" or terminal:
        try:
            return _Bar()
        except ImportError:
            if mode == "bar":
                message = "a progress bar needs rich: pip install 'qwenloop[batch]'"
                raise UserError(message) from None
    return _Lines(sys.stderr)


class Batch:
    """Run one agent over every row of an input file, with shared rate limits and resume.

    Args:
        agent: The agent; its model, tools, template and settings serve every row. Or a
            function that builds it, which other engines call on each of their workers.
        concurrency: Runs in flight at once (per worker with the "ray" engine).
        rpm: Requests per minute, shared by all runs (overrides the tier's).
        tpm: Tokens per minute, shared by all runs (overrides the tier's).
        tier: A rate-limit tier of the catalogue ("free" or "paid") for rpm and tpm.
        resume: Skip the ids already in the output and append the rest.
        strict: Stop before running anything when a row is malformed.
        progress: "auto" (a bar on a terminal, else plain lines), "bar", "lines" or "off".
        progress_interval: Seconds between two plain progress lines.
        engine: Where the rows run: "local" (this process), "ray" (`agent.batch_ray.RayEngine`
            with its defaults: a local Ray) or an engine object. An engine other than "local"
            needs `agent` to be a function that builds the agent.

    Raises:
        UserError: A number out of range, an unknown tier, progress mode or engine.

    Example:
        ```python
        summary = Batch(agent, concurrency=16, tier="paid").run_sync("in.jsonl", "out.jsonl")
        ```
    """

    def __init__(
        self,
        agent: Agent | Callable[[], Agent],
        *,
        concurrency: int = 8,
        rpm: int | None = None,
        tpm: int | None = None,
        tier: str | None = None,
        resume: bool = False,
        strict: bool = False,
        progress: ProgressMode = "auto",
        progress_interval: float = 10.0,
        engine: Literal["local", "ray"] | BatchEngine = "local",
    ) -> None:
        if concurrency < 1:
            raise UserError(f"concurrency must be at least 1, got {concurrency}")
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value < 1:
                raise UserError(f"{name} must be at least 1, got {value}")
        if progress not in ("auto", "bar", "lines", "off"):
            raise UserError(f"progress must be 'auto', 'bar', 'lines' or 'off', not {progress!r}")
        if tier is not None:
            from agent.catalog import RATE_LIMIT_TIERS

            if tier not in RATE_LIMIT_TIERS:
                raise UserError(f"tier must be one of {', '.join(RATE_LIMIT_TIERS)}, not {tier!r}")
            rpm = rpm or RATE_LIMIT_TIERS[tier].rpm
            tpm = tpm or RATE_LIMIT_TIERS[tier].tpm
        self.engine = _engine(engine, agent)
        # The engine's workers call the factory; this process builds one agent too, to check
        # the rows against (its template) and to close.
        self.agent, self.agent_factory = _build(agent)
        self.concurrency = concurrency
        self.rpm = rpm
        self.tpm = tpm
        self.resume = resume
        self.strict = strict
        self.progress = progress
        self.progress_interval = progress_interval

    async def run(self, input_path: str | Path, out_path: str | Path) -> BatchSummary:
        """Run every row not yet in the output; return the summary.

        1. Read the whole input once: columns, duplicate ids, malformed rows, the count.
        2. Open the output (resume: read its ids, cut a half-written last line).
        3. Keep `concurrency` runs in flight, each paced by the shared rate limiter; write
           each row's result as it finishes.

        Raises:
            UserError: Bad input or output (see `read_rows` and `OutputFile`).
            AuthenticationError: The key was refused; rows finished so far are kept.
        """
        started = time.monotonic()
        summary = BatchSummary(out=str(out_path))
        reporter = _reporter(self.progress)
        # Reading a million rows takes seconds: not on the event loop.
        out = await asyncio.to_thread(self._prepare, input_path, out_path, summary, reporter)
        with out:
            if self.engine is not None:
                reporter.note(f"starting {self.engine}")  # a cluster may take seconds
            async with self._start() as runner:
                reporter.start(summary.total)
                ticker = asyncio.create_task(self._tick(reporter, summary))
                try:
                    await self._run_rows(read_rows(input_path), out, summary, reporter, runner)
                finally:
                    ticker.cancel()
                    summary.seconds = time.monotonic() - started
                    summary.rate_limited = await runner.rate_limited()
                    reporter.finish(summary)
        return summary

    @contextlib.asynccontextmanager
    async def _start(self) -> AsyncIterator[BatchRunner]:
        if self.engine is not None:
            async with self.engine.start(self) as runner:
                yield runner
            return
        with self._limiter() as gate:
            yield _LocalRunner(self.agent, gate, self.concurrency)

    def run_sync(self, input_path: str | Path, out_path: str | Path) -> BatchSummary:
        """`run` from synchronous code; same arguments and summary.

        Raises:
            UserError: When called inside a running event loop (use `await batch.run(...)`).
        """
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop()
            raise UserError("run_sync() was called in a running event loop; await run(...)")

        async def main() -> BatchSummary:
            try:
                return await self.run(input_path, out_path)
            finally:
                close = getattr(self.agent.model, "close_connections", None)
                if close is not None:
                    await close()

        return asyncio.run(main())

    def _prepare(
        self, path: str | Path, out_path: str | Path, summary: BatchSummary, reporter: _Reporter
    ) -> OutputFile:
        """Open the output, then read the input through once (checks, counts, bad rows)."""
        if Path(out_path).resolve() == Path(path).resolve():
            raise UserError(f"the output {str(out_path)!r} is the input: choose another --out")
        out = OutputFile(out_path, resume=self.resume)
        try:
            self._scan(path, out, summary, reporter)
        except BaseException:
            out.close()
            if out.created and not out.ids:  # leave no empty file behind a refused input
                Path(out_path).unlink(missing_ok=True)
            raise
        return out

    def _scan(
        self, path: str | Path, out: OutputFile, summary: BatchSummary, reporter: _Reporter
    ) -> None:
        noted_variables = isinstance(self.agent.instructions, Template)
        for item in read_rows(path, strict=self.strict):
            if isinstance(item, BadRow):
                summary.bad_rows += 1
                if summary.bad_rows <= _SHOWN_BAD_ROWS:
                    reporter.note(f"{path} {item}; skipped")
            elif item.key in out.ids:
                summary.skipped += 1
            else:
                summary.total += 1
                if item.variables and not noted_variables:
                    noted_variables = True
                    names = ", ".join(sorted(item.variables))
                    reporter.note(f"columns {names} are not used: no system template")
        if summary.bad_rows > _SHOWN_BAD_ROWS:
            reporter.note(f"{summary.bad_rows - _SHOWN_BAD_ROWS} more bad rows skipped")

    async def _run_rows(
        self,
        rows: Iterator[Row | BadRow],
        out: OutputFile,
        summary: BatchSummary,
        reporter: _Reporter,
        runner: BatchRunner,
    ) -> None:
        async def one(row: Row) -> None:
            result = await runner.run(row)
            await out.write(result)
            summary.add(result)
            reporter.advance(summary)

        # At most `runner.slots` tasks exist at once, however long the input.
        in_flight: set[asyncio.Task[None]] = set()
        try:
            for item in rows:
                if not isinstance(item, Row) or item.key in out.ids:
                    continue
                while len(in_flight) >= runner.slots:
                    finished, in_flight = await asyncio.wait(
                        in_flight, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in finished:
                        task.result()
                in_flight.add(asyncio.create_task(one(item)))
            for next_done in asyncio.as_completed(in_flight):
                await next_done
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _tick(self, reporter: _Reporter, summary: BatchSummary) -> None:
        while True:
            await asyncio.sleep(self.progress_interval)
            reporter.tick(summary)

    @contextlib.contextmanager
    def _limiter(self) -> Iterator[RequestGate | None]:
        """Pace the agent's requests with one limiter for the batch; restore its own after."""
        agent = self.agent
        if not hasattr(agent.model, "gate"):  # the embedded model: nothing to pace
            if self.rpm or self.tpm:
                raise UserError(f"the {agent.provider} backend takes no rate limits")
            yield None
            return
        previous = agent.rate_limiter
        if previous is not None and not (self.rpm or self.tpm):
            yield previous  # the caller's own limiter, shared with their other agents
            return
        from agent.ratelimit import RateLimiter

        gate: RequestGate = RateLimiter(rpm=self.rpm, tpm=self.tpm)
        agent.rate_limiter = gate
        try:
            yield gate
        finally:
            agent.rate_limiter = previous


def _is_agent(agent: object) -> bool:
    from agent.agent import Agent

    return isinstance(agent, Agent)


def _build(agent: Agent | Callable[[], Agent]) -> tuple[Agent, Callable[[], Agent] | None]:
    """The agent of this process, and the function that builds it (None: given built)."""
    from agent.agent import Agent

    if isinstance(agent, Agent):
        return agent, None
    if not callable(agent):
        raise UserError(f"Batch needs an Agent or a function that builds one, not {agent!r}")
    built = agent()
    if not isinstance(built, Agent):
        raise UserError(f"the agent factory returned {type(built).__name__}, not an Agent")
    return built, agent


def _engine(
    engine: Literal["local", "ray"] | BatchEngine, agent: Agent | Callable[[], Agent]
) -> BatchEngine | None:
    """The engine object for `Batch(engine=...)`: None runs rows in this process."""
    if engine == "local":
        return None
    if engine != "ray" and (
        isinstance(engine, str) or not callable(getattr(engine, "start", None))
    ):
        raise UserError(f"engine must be 'local', 'ray' or an engine object, not {engine!r}")
    if _is_agent(agent):
        raise UserError(
            "an engine other than 'local' builds the agent on each of its workers: pass a "
            "function that builds it, e.g. Batch(make_agent, engine='ray')"
        )
    if engine == "ray":
        from agent.batch_ray import RayEngine

        return RayEngine()
    return engine


def _rate_limited(gate: RequestGate | None) -> int:
    """The 429s a limiter saw (an `agent.ratelimit.RateLimiter` counts them in `stats()`)."""
    stats = getattr(gate, "stats", None)
    return int(getattr(stats(), "rate_limited", 0)) if stats is not None else 0
