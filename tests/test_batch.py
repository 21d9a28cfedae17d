"""Batches: input rows, durable output and resume, failures, rate limits, progress, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from agent import Template
from agent.batch import BadRow, Batch, OutputFile, Row, read_rows, run_row
from agent.cli import main
from agent.errors import UserError
from agent.testing import error_reply, text_reply

ROW_KEYS = {"id", "output", "usage", "cost", "turns", "seconds"}


def echo(delay: float = 0.0, fail: str | None = None):
    """A reply function: answers "echo: PROMPT", or a 400 for the prompt `fail`."""

    def reply(request):
        prompt = request.json["messages"][-1]["content"]
        if prompt == fail:
            return error_reply(400, "this prompt is refused", delay=delay)
        return text_reply(f"echo: {prompt}", delay=delay)

    return reply


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def out_rows(path):
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "a partial last line"
    return [json.loads(line) for line in text.splitlines()]


def cli(server, *args):
    return main(["batch", *map(str, args), "--base-url", server.url, "--api-key", "k"])


async def test_jsonl_rows_give_output_rows(openai_server, make_agent, tmp_path):
    openai_server.respond_with(echo())
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": f"q{i}"} for i in range(5)])
    summary = await Batch(make_agent(), progress="off").run(source, tmp_path / "out.jsonl")
    rows = out_rows(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in rows) == [0, 1, 2, 3, 4]
    for row in rows:
        assert set(row) == ROW_KEYS
        assert row["output"] == f"echo: q{row['id']}"
        assert row["usage"]["total_tokens"] == 28 and row["turns"] == 1
        assert row["cost"] > 0 and row["seconds"] >= 0
    assert (summary.done, summary.failed, summary.total, summary.tokens) == (5, 0, 5, 140)
    assert summary.ok and summary.cost == pytest.approx(sum(r["cost"] for r in rows))


async def test_csv_columns_are_template_variables(openai_server, make_agent, tmp_path):
    openai_server.respond_with(echo())
    source = tmp_path / "in.csv"
    source.write_text('id,prompt,name\na,"hello,\nthere",Ann\nb,hi,Bob\n', encoding="utf-8")
    agent = make_agent(
        instructions=Template("Talk to {{ name }} ({{ team }}).", variables={"team": "x"})
    )
    await Batch(agent, progress="off").run(source, tmp_path / "out.jsonl")
    systems = {
        r.json["messages"][-1]["content"]: r.json["messages"][0]["content"]
        for r in openai_server.requests
    }
    assert systems == {"hello,\nthere": "Talk to Ann (x).", "hi": "Talk to Bob (x)."}
    assert agent.instructions.variables == {"team": "x"}  # the agent itself is unchanged
    assert {r["id"] for r in out_rows(tmp_path / "out.jsonl")} == {"a", "b"}


def test_csv_line_numbers_count_multiline_records(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text('id,prompt\na,"two\nlines"\nb\nc,ok\n\nd,,\n')
    items = list(read_rows(source))
    assert items[0] == Row(2, "a", "two\nlines", {})
    assert items[1] == BadRow(4, "1 fields, the header has 2")
    assert items[2] == Row(5, "c", "ok", {})
    assert items[3] == BadRow(7, "3 fields, the header has 2")


async def test_a_failed_row_records_the_error_type(openai_server, make_agent, tmp_path):
    openai_server.respond_with(echo(fail="bad"))
    source = write_jsonl(
        tmp_path / "in.jsonl", [{"id": "x", "prompt": "bad"}, {"id": "y", "prompt": "ok"}]
    )
    summary = await Batch(make_agent(retries=0), progress="off").run(source, tmp_path / "o.jsonl")
    rows = {r["id"]: r for r in out_rows(tmp_path / "o.jsonl")}
    assert rows["x"]["error"]["type"] == "BadRequestError"
    assert "this prompt is refused" in rows["x"]["error"]["message"]
    assert rows["x"]["output"] is None and set(rows["x"]) == ROW_KEYS | {"error"}
    assert rows["y"]["output"] == "echo: ok" and "error" not in rows["y"]
    assert (summary.done, summary.failed, summary.ok) == (1, 1, False)


def test_cli_exit_codes_and_summary(openai_server, tmp_path, capsys):
    openai_server.respond_with(echo(fail="bad"))
    good = write_jsonl(tmp_path / "good.jsonl", [{"id": 1, "prompt": "a"}])
    assert cli(openai_server, good, "--out", tmp_path / "g.jsonl") == 0
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout stays free: the results are in --out
    assert "batch: 1 done, 0 failed" in captured.err
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": 1, "prompt": "bad"}])
    assert cli(openai_server, bad, "--out", tmp_path / "b.jsonl", "--max-turns", "2") == 1
    assert "0 done, 1 failed" in capsys.readouterr().err


def test_bad_rows_are_reported_with_line_numbers_and_skipped(openai_server, tmp_path, capsys):
    openai_server.respond_with(echo())
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"id": 1, "prompt": "a"}\n{"id": 2, "prompt": \n{"id": 3}\n\n[1, 2]\n'
        '{"id": 4, "prompt": ""}\n{"id": true, "prompt": "b"}\n{"id": 5, "prompt": "c"}\n'
    )
    code = cli(openai_server, source, "--out", tmp_path / "o.jsonl", "--progress", "lines")
    assert code == 1  # not every row ran
    err = capsys.readouterr().err
    for line, why in [(2, "not valid JSON"), (3, "no prompt"), (5, "not a JSON object"),
                      (6, "the prompt is empty"), (7, "the id must be a string or an integer")]:  # fmt: skip
        assert f"line {line}: {why}" in err
    assert "5 bad rows" in err
    assert sorted(r["id"] for r in out_rows(tmp_path / "o.jsonl")) == [1, 5]


def test_strict_stops_before_running_anything(openai_server, tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "prompt": "a"}\n{"id": 2}\n')
    assert cli(openai_server, source, "--out", tmp_path / "o.jsonl", "--strict") == 2
    assert "line 2: no prompt" in capsys.readouterr().err
    assert openai_server.requests == [] and not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize(
    ("name", "text", "lacking"),
    [
        ("in.csv", "id,question\n1,hi\n", "'prompt'"),
        ("in.jsonl", '{"key": 1, "prompt": "hi"}\n', "'id'"),
        ("in.csv", "", "empty"),
    ],
)
def test_a_missing_column_is_a_usage_error(openai_server, tmp_path, capsys, name, text, lacking):
    (tmp_path / name).write_text(text)
    assert cli(openai_server, tmp_path / name, "--out", tmp_path / "o.jsonl") == 2
    err = capsys.readouterr().err
    assert lacking in err and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("in.jsonl", '{"id": 1, "prompt": "a"}\n{"id": "1", "prompt": "b"}\n', "repeats line 1"),
        ("in.txt", "", "name it .jsonl"),
        ("missing.jsonl", None, "does not exist"),
    ],
)
def test_unusable_input_is_a_usage_error(openai_server, tmp_path, capsys, name, text, says):
    if text is not None:
        (tmp_path / name).write_text(text)
    assert cli(openai_server, tmp_path / name, "--out", tmp_path / "o.jsonl") == 2
    assert says in capsys.readouterr().err


def test_an_output_with_rows_needs_resume(openai_server, tmp_path, capsys):
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "prompt": "a"}])
    out = tmp_path / "o.jsonl"
    out.write_text('{"id": 1, "output": "x"}\n')
    assert cli(openai_server, source, "--out", out) == 2
    assert "holds 1 rows: pass --resume" in capsys.readouterr().err
    out.write_text("some notes of mine\n")
    assert cli(openai_server, source, "--out", out, "--resume") == 2
    assert "line 1 is not a batch output row" in capsys.readouterr().err
    assert out.read_text() == "some notes of mine\n"


def test_resume_skips_done_ids_and_cuts_a_partial_line(openai_server, tmp_path, capsys):
    openai_server.respond_with(echo())
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": f"q{i}"} for i in range(4)])
    out = tmp_path / "o.jsonl"
    out.write_text('{"id": 0, "output": "old"}\n{"id": 2, "output": "old"}\n{"id": 3, "outp')
    assert cli(openai_server, source, "--out", out, "--resume") == 0
    asked = sorted(r.json["messages"][-1]["content"] for r in openai_server.requests)
    assert asked == ["q1", "q3"]
    rows = out_rows(out)
    assert sorted(r["id"] for r in rows) == [0, 1, 2, 3]
    assert "2 skipped" in capsys.readouterr().err


def test_the_output_never_holds_an_id_twice(tmp_path):
    with OutputFile(tmp_path / "o.jsonl") as out:
        out.append([{"id": "a"}])
        with pytest.raises(ValueError, match="already in"):
            out.append([{"id": "a"}])
        with pytest.raises(UserError, match="another batch is writing"):
            OutputFile(tmp_path / "o.jsonl", resume=True)
    assert out_rows(tmp_path / "o.jsonl") == [{"id": "a"}]


def test_kill_9_mid_batch_then_resume_finishes(openai_server, tmp_path):
    openai_server.respond_with(echo(delay=0.05))
    ids = [f"r{i}" for i in range(80)]
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": i} for i in ids])
    out = tmp_path / "o.jsonl"
    env = {**os.environ, "QWENLOOP_BASE_URL": openai_server.url, "QWENLOOP_API_KEY": "k"}
    argv = [sys.executable, "-m", "agent", "batch", str(source), "--out", str(out)]
    proc = subprocess.Popen(
        [*argv, "--concurrency", "4", "--progress", "lines"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            not out.exists() or out.read_text().count("\n") < 10
        ):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    first = out.read_text().splitlines(keepends=True)
    assert 10 <= len(first) < len(ids)
    openai_server.respond_with(echo())
    done = subprocess.run(
        [*argv, "--resume"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    rows = out_rows(out)
    assert sorted(r["id"] for r in rows) == sorted(ids)  # every id, exactly once
    complete = sum(1 for line in first if line.endswith("\n"))
    assert f"{complete} skipped" in done.stderr


def test_progress_lines_without_a_terminal(openai_server, tmp_path, capsys):
    openai_server.respond_with(echo(delay=0.05))
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": str(i)} for i in range(20)])
    code = cli(openai_server, source, "--out", tmp_path / "o.jsonl", "--concurrency", "2",
               "--progress-interval", "0.1")  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "batch: 20 rows to run"
    ticks = [line for line in err if "runs/s, ETA" in line]
    assert ticks and all(line.startswith("batch: ") and "tokens" in line for line in ticks)
    assert err[-1].startswith("batch: 20 done, 0 failed in ")


async def test_a_thousand_rows_with_bounded_concurrency(openai_server, make_agent, tmp_path):
    openai_server.respond_with(echo(delay=0.002))
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": str(i)} for i in range(1000)])
    batch = Batch(make_agent(), concurrency=16, progress="off")
    summary = await batch.run(source, tmp_path / "o.jsonl")
    assert summary.done == 1000
    assert len({r["id"] for r in out_rows(tmp_path / "o.jsonl")}) == 1000
    # A request in flight holds a connection of its own: never more than the concurrency.
    assert openai_server.connections_opened <= 16


async def test_a_429_slows_the_batch_and_is_counted(openai_server, make_agent, tmp_path):
    openai_server.script(error_reply(429, "slow down", headers={"retry-after": "0.3"}))
    openai_server.respond_with(echo())
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": str(i)} for i in range(3)])
    agent = make_agent()
    start = time.monotonic()
    summary = await Batch(agent, concurrency=1, progress="off").run(source, tmp_path / "o.jsonl")
    assert time.monotonic() - start >= 0.3
    assert (summary.done, summary.rate_limited) == (3, 1)
    assert agent.rate_limiter is None  # the batch's limiter is gone with the batch


async def test_rpm_paces_every_run(openai_server, make_agent, tmp_path):
    openai_server.respond_with(echo())
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": str(i)} for i in range(5)])
    start = time.monotonic()
    await Batch(make_agent(), concurrency=5, rpm=600, progress="off").run(
        source, tmp_path / "o.jsonl"
    )
    assert time.monotonic() - start >= 0.35  # five requests, 0.1 s apart


async def test_an_authentication_error_stops_the_batch(openai_server, make_agent, tmp_path):
    from agent.errors import AuthenticationError

    openai_server.respond_with(lambda request: error_reply(401, "bad key"))
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": str(i)} for i in range(50)])
    with pytest.raises(AuthenticationError):
        await Batch(make_agent(), concurrency=2, progress="off").run(source, tmp_path / "o.jsonl")
    assert out_rows(tmp_path / "o.jsonl") == []  # nothing recorded: --resume retries them all
    assert len(openai_server.requests) <= 4


async def test_run_row_is_reusable_alone(openai_server, make_agent):
    openai_server.script(text_reply("hi"))
    row = await run_row(make_agent(), Row(1, "a", "hello", {}))
    assert row["id"] == "a" and row["output"] == "hi" and set(row) == ROW_KEYS


def test_run_sync(openai_server, tmp_path):
    from agent import Agent

    openai_server.respond_with(echo())
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "prompt": "a"}])
    agent = Agent("qwen-plus", base_url=openai_server.url, api_key="k")
    summary = Batch(agent, progress="off").run_sync(source, tmp_path / "o.jsonl")
    assert summary.done == 1 and out_rows(tmp_path / "o.jsonl")[0]["output"] == "echo: a"


def test_a_progress_bar_goes_to_stderr(openai_server, tmp_path, capsys):
    openai_server.respond_with(echo())
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": str(i)} for i in range(3)])
    assert cli(openai_server, source, "--out", tmp_path / "o.jsonl", "--progress", "bar") == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "3/3" in captured.err and "batch: 3 done, 0 failed" in captured.err


def test_the_output_may_not_be_the_input(openai_server, tmp_path, capsys):
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "prompt": "a"}])
    assert cli(openai_server, source, "--out", source, "--resume") == 2
    assert "is the input" in capsys.readouterr().err


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_keeps_finished_rows_and_says_resume(openai_server, tmp_path):
    openai_server.respond_with(echo(delay=0.05))
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": str(i)} for i in range(200)])
    out = tmp_path / "o.jsonl"
    env = {**os.environ, "QWENLOOP_BASE_URL": openai_server.url, "QWENLOOP_API_KEY": "k"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "batch", str(source), "--out", str(out)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as in a terminal: a suite run as a background job (`make test &`) ignores
        # SIGINT, the child would inherit that and finish the whole batch.
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not out.exists() or out.stat().st_size == 0):
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "run again with --resume" in stderr and "Traceback" not in stderr
    assert stdout == "" and 0 < len(out_rows(out)) < 200
