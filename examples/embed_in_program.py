"""An agent inside an ordinary program: answer a CSV of questions concurrently, write a CSV.

Run it against DashScope:

    DASHSCOPE_API_KEY=... python examples/embed_in_program.py examples/questions.csv
    DASHSCOPE_API_KEY=... python examples/embed_in_program.py questions.csv -o answers.csv -j 8

The questions are the first column of the input (a `question` header is skipped). One Agent
answers them all, at most `-j` at a time, with the calculator and current_time built-ins; the
output has the columns question, answer, tool_calls and tokens, in the input's order. Progress
goes to stderr (a tqdm bar when tqdm is installed). Any other endpoint works through
QWENLOOP_PROVIDER, QWENLOOP_BASE_URL, QWENLOOP_API_KEY and QWENLOOP_MODEL.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
from typing import Any, TextIO

from agent import Agent, AgentError, RunResult

INSTRUCTIONS = (
    "Answer in one short sentence. Use the calculator for any arithmetic and current_time "
    "for dates and times; never guess either."
)
COLUMNS = ["question", "answer", "tool_calls", "tokens"]


def read_questions(path: str) -> list[str]:
    """Return the first column of a CSV file, skipping blank rows and a `question` header."""
    with open(path, newline="", encoding="utf-8") as f:
        questions = [row[0].strip() for row in csv.reader(f) if row and row[0].strip()]
    if questions and questions[0].lower() == "question":
        questions = questions[1:]
    return questions


class Progress:
    """Count finished questions on stderr: a tqdm bar if tqdm is installed, else a counter."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        try:
            from tqdm import tqdm  # type: ignore[import-untyped]
        except ImportError:
            self.bar: Any = None
        else:
            self.bar = tqdm(total=total, unit="question", file=sys.stderr)

    def advance(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update()
        else:
            print(f"\r{self.done}/{self.total} answered", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            print(file=sys.stderr)


def to_row(question: str, result: RunResult) -> dict[str, Any]:
    calls = "; ".join(
        f"{c.name}({json.dumps(c.arguments, ensure_ascii=False)})" for c in result.tool_calls
    )
    return {
        "question": question,
        "answer": result.output,
        "tool_calls": calls,
        "tokens": result.usage.total_tokens,
    }


async def answer_all(questions: list[str], concurrency: int) -> list[dict[str, Any]]:
    """Answer every question with one agent, at most `concurrency` at once, in input order."""
    limit = asyncio.Semaphore(concurrency)
    progress = Progress(len(questions))

    async with Agent(
        provider=os.environ.get("QWENLOOP_PROVIDER", "dashscope"),
        tools=["calculator", "current_time"],
        instructions=INSTRUCTIONS,
    ) as agent:

        async def answer(question: str) -> dict[str, Any]:
            async with limit:
                try:
                    result = await agent.run(question)
                except AgentError as exc:
                    # One failed question should not cost the answers to all the others.
                    row = to_row(question, exc.result or RunResult())
                    row["answer"] = f"error: {exc}"
                else:
                    row = to_row(question, result)
            progress.advance()
            return row

        try:
            return await asyncio.gather(*(answer(q) for q in questions))
        finally:
            progress.close()


def write_rows(f: TextIO, rows: list[dict[str, Any]]) -> None:
    writer = csv.DictWriter(f, COLUMNS)
    writer.writeheader()
    writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Answer a CSV of questions with an agent.")
    parser.add_argument("questions", help="CSV file; the first column holds the questions")
    parser.add_argument("-o", "--output", help="where to write the answers (default: stdout)")
    parser.add_argument("-j", "--concurrency", type=int, default=4, help="questions at once")
    args = parser.parse_args(argv)

    questions = read_questions(args.questions)
    try:
        rows = asyncio.run(answer_all(questions, max(1, args.concurrency)))
    except AgentError as exc:  # e.g. no API key: nothing could be answered
        print(f"error: {exc}", file=sys.stderr)
        return 1

    if args.output:
        with open(args.output, "w", newline="", encoding="utf-8") as f:
            write_rows(f, rows)
    else:
        write_rows(sys.stdout, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
