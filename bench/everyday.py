"""Everyday questions on the embedded local model, through the whole agent, as a user asks them.

Usage:

    python bench/everyday.py                       # all questions, the agent's defaults
    python bench/everyday.py --json /tmp/day.json  # every run's record as well
    python bench/everyday.py --only time,two-city  # some categories

Each question goes to `Agent(provider="local", tools=["calculator", "current_time"])` with
nothing else set, which is what `qwenloop run --provider local --tools calculator,current_time`
and the offline demo use, and runs to its end (tool calls, then the answer). A question counts
as right when:

- the tool was used when it should be: the expected tool was called (as often as the question
  needs: two cities, two calls), or no tool at all for a question that needs none;
- and the answer is right: every expected number appears in the output (within a tolerance for
  unit conversions); each city's current local time appears (HH:MM, 24-hour or with AM/PM, within
  the minutes the run took, plus one either side); the weekday or date of that city today; or
  the expected word for a question that needs no tool.

Reported per category: right / n, and the median seconds per model turn over all turns (from
the agent's on_model_request to on_model_response hooks), with the mean seconds per question.
The weights load once, before the first question. The script only uses the public API, so it
runs unchanged against an older checkout (`PYTHONPATH=/path/to/old/checkout`) for a before/after
comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent import Agent, AgentError, RunHooks


@dataclass(frozen=True, slots=True)
class Question:
    category: str
    text: str
    tool: str | None  # the tool that should be used, None when none should
    calls: int = 1  # how many calls of it at least
    numbers: tuple[float, ...] = ()
    tolerance: float = 1e-6  # relative, for numbers
    zones: tuple[str, ...] = ()  # current local time in each
    weekday: str | None = None  # the zone whose weekday today is the answer
    date: str | None = None  # the zone whose date today is the answer
    words: tuple[str, ...] = ()  # for questions that need no tool (any one of them)


QUESTIONS = [
    Question("arithmetic", "What is 1234*5678?", "calculator", numbers=(7006652,)),
    Question("arithmetic", "What is 17 * 23?", "calculator", numbers=(391,)),
    Question("arithmetic", "What is 15% of 2480, plus 17?", "calculator", numbers=(389,)),
    Question("arithmetic", "What is the square root of 1764?", "calculator", numbers=(42,)),
    Question("arithmetic", "What is 2 to the power of 20?", "calculator", numbers=(1048576,)),
    Question("arithmetic", "What is 7% of 12,500?", "calculator", numbers=(875,)),
    Question(
        "arithmetic",
        "A bill of 287.40 is split evenly between 6 people. How much does each pay?",
        "calculator",
        numbers=(47.9,),
    ),
    Question("units", "How many seconds are there in 3.5 days?", "calculator", numbers=(302400,)),
    Question("units", "How many minutes are there in a week?", "calculator", numbers=(10080,)),
    Question(
        "units",
        "How many kilometres are 26.2 miles?",
        "calculator",
        numbers=(42.1648,),
        tolerance=0.005,
    ),
    Question("units", "What is 98.6 degrees Fahrenheit in Celsius?", "calculator", numbers=(37,)),
    Question(
        "units", "How many grams are 3.5 pounds?", "calculator", numbers=(1587.57,), tolerance=0.005
    ),
    Question("time", "What time is it in Tokyo right now?", "current_time", zones=("Asia/Tokyo",)),
    Question(
        "time", "What time is it in London right now?", "current_time", zones=("Europe/London",)
    ),
    Question(
        "time",
        "What day of the week is it in Sydney right now?",
        "current_time",
        weekday="Australia/Sydney",
    ),
    Question("time", "What is today's date in New York?", "current_time", date="America/New_York"),
    Question(
        "two-city",
        "What time is it in New York and in London right now?",
        "current_time",
        calls=2,
        zones=("America/New_York", "Europe/London"),
    ),
    Question(
        "two-city",
        "What time is it in Paris and in Shanghai right now?",
        "current_time",
        calls=2,
        zones=("Europe/Paris", "Asia/Shanghai"),
    ),
    Question(
        "two-city",
        "What time is it in Berlin and in Sydney right now?",
        "current_time",
        calls=2,
        zones=("Europe/Berlin", "Australia/Sydney"),
    ),
    Question(
        "two-city", "What is 12*12, and what is 25*4?", "calculator", calls=1, numbers=(144, 100)
    ),
    Question("no tool", "What is the capital of France?", None, words=("paris",)),
    Question("no tool", "Who wrote Romeo and Juliet?", None, words=("shakespeare",)),
    Question("no tool", "Translate 'thank you' into French.", None, words=("merci",)),
    Question(
        "no tool", "What colour do you get by mixing blue and yellow?", None, words=("green",)
    ),
    Question("no tool", "Say hello in Spanish.", None, words=("hola",)),
]
CATEGORIES = tuple(dict.fromkeys(q.category for q in QUESTIONS))
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)


# -- checking --------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?")
# A time of day, also inside an ISO timestamp ("2026-11-30T02:16:17+00:00").
_CLOCK = re.compile(r"(?<!\d)(\d{1,2}):(\d{2})(?::\d{2})?\s*([AaPp]\.?[Mm]\.?)?")


def numbers_in(text: str) -> list[float]:
    found = []
    for match in _NUMBER.finditer(text):
        raw = match.group().replace(",", "")
        try:
            found.append(float(raw))
        except ValueError:
            continue
    return found


def has_number(text: str, want: float, tolerance: float) -> bool:
    return any(abs(got - want) <= max(abs(want) * tolerance, 1e-9) for got in numbers_in(text))


def clock_minutes(text: str) -> list[set[int]]:
    """Each time of day in the text as the minutes after midnight it may mean."""
    out = []
    for hour_s, minute_s, half in _CLOCK.findall(text):
        hour, minute = int(hour_s), int(minute_s)
        if hour > 23 or minute > 59:
            continue
        if half:
            hour = hour % 12 + (12 if half[0].lower() == "p" else 0)
            out.append({hour * 60 + minute})
        elif hour <= 12:  # "3:05" may be either half of the day
            out.append({(hour % 12) * 60 + minute, (hour % 12 + 12) * 60 + minute})
        else:
            out.append({hour * 60 + minute})
    return out


def shows_time(text: str, zone: str, started: datetime, ended: datetime) -> bool:
    allowed = set()
    moment = started - timedelta(minutes=1)
    while moment <= ended + timedelta(minutes=1):
        local = moment.astimezone(ZoneInfo(zone))
        allowed.add(local.hour * 60 + local.minute)
        moment += timedelta(minutes=1)
    return any(options & allowed for options in clock_minutes(text))


def shows_date(text: str, zone: str, moment: datetime) -> bool:
    local = moment.astimezone(ZoneInfo(zone)).date()
    lower = text.lower()
    if local.isoformat() in text or local.strftime("%m/%d/%Y") in text:
        return True
    return MONTHS[local.month - 1] in lower and re.search(rf"\b{local.day}(st|nd|rd|th)?\b", lower)


def verdict(question: Question, record: Record, started: datetime, ended: datetime) -> str:
    """Return "" when the run is right, else why not."""
    if record.error:
        return f"error: {record.error}"
    used = [call["name"] for call in record.calls]
    output = record.output
    if question.tool is None:
        if used:
            return f"called {', '.join(used)} for a question that needs no tool"
        if not any(word in output.lower() for word in question.words):
            return f"answer lacks {' or '.join(question.words)}"
        return ""
    if used.count(question.tool) < question.calls:
        return f"{question.tool} called {used.count(question.tool)} times, wanted {question.calls}"
    for number in question.numbers:
        if not has_number(output, number, question.tolerance):
            return f"answer lacks {number:g}"
    for zone in question.zones:
        if not shows_time(output, zone, started, ended):
            return f"answer lacks the time in {zone}"
    if question.weekday is not None:
        day = WEEKDAYS[ended.astimezone(ZoneInfo(question.weekday)).weekday()]
        if day not in output.lower():
            return f"answer lacks {day}"
    if question.date is not None and not shows_date(output, question.date, ended):
        return "answer lacks the date"
    return ""


# -- running ---------------------------------------------------------------------------------


class TurnTimer(RunHooks):
    """Times each model turn, request to assembled reply."""

    def __init__(self) -> None:
        self.turns: list[float] = []
        self._started: float | None = None

    def on_model_request(self, ctx: Any, request: Any) -> None:
        self._started = time.perf_counter()

    def on_model_response(self, ctx: Any, reply: Any) -> None:
        if self._started is not None:
            self.turns.append(time.perf_counter() - self._started)
            self._started = None


@dataclass(slots=True)
class Record:
    category: str
    question: str
    output: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    turns: list[float] = field(default_factory=list)
    seconds: float = 0.0
    reason: str = ""
    started: str = ""  # UTC, ISO: the time questions are checked against this run's minutes
    ended: str = ""


async def ask(agent: Agent, timer: TurnTimer, question: Question) -> Record:
    record = Record(question.category, question.text)
    timer.turns = []
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    try:
        result = await agent.run(question.text)
    except AgentError as exc:
        record.error = f"{type(exc).__name__}: {exc}"[:300]
        result = exc.result
    record.seconds = time.perf_counter() - started
    if result is not None:
        record.output = result.output
        record.calls = [{"name": c.name, "arguments": c.arguments} for c in result.tool_calls]
    record.turns = list(timer.turns)
    ended_at = datetime.now(UTC)
    record.started, record.ended = started_at.isoformat(), ended_at.isoformat()
    record.reason = verdict(question, record, started_at, ended_at)
    return record


def table(records: list[Record]) -> str:
    header = f"{'category':<12} {'right':>7} {'median s/turn':>14} {'mean s/question':>16}"
    lines = [header, "-" * len(header)]
    for category in (*CATEGORIES, "all"):
        rows = [r for r in records if category in ("all", r.category)]
        if not rows:
            continue
        right = sum(not r.reason for r in rows)
        turns = [t for r in rows for t in r.turns]
        median = statistics.median(turns) if turns else float("nan")
        mean = statistics.fmean(r.seconds for r in rows)
        lines.append(f"{category:<12} {f'{right}/{len(rows)}':>7} {median:>14.2f} {mean:>16.2f}")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", default="", help=f"categories, from {','.join(CATEGORIES)}")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT")
    args = parser.parse_args()
    wanted = {c.strip() for c in args.only.split(",") if c.strip()}
    unknown = wanted - set(CATEGORIES)
    if unknown:
        raise SystemExit(f"unknown categories {sorted(unknown)}; from {', '.join(CATEGORIES)}")
    questions = [q for q in QUESTIONS if not wanted or q.category in wanted]

    import agent as agent_package

    timer = TurnTimer()
    bot = Agent(provider="local", tools=["calculator", "current_time"], hooks=[timer])
    print(f"qwenloop from {Path(agent_package.__file__).parent}", file=sys.stderr)
    records: list[Record] = []
    try:
        await bot.model.load()  # type: ignore[attr-defined]
        for index, question in enumerate(questions, 1):
            record = await ask(bot, timer, question)
            records.append(record)
            mark = "right" if not record.reason else f"WRONG ({record.reason})"
            print(
                f"[{index}/{len(questions)}] {question.text!r}: {mark} {record.seconds:.1f}s "
                f"calls={[c['name'] for c in record.calls]} output={record.output[:120]!r}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        await bot.aclose()
    print(table(records))
    if args.json is not None:
        args.json.write_text(
            json.dumps([asdict(r) for r in records], ensure_ascii=False, indent=1, default=str),
            encoding="utf-8",
        )


if __name__ == "__main__":
    asyncio.run(main())
