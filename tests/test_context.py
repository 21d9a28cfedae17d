"""Context limits: the token estimate, the fitting of a conversation, and a long history over HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import HookError, UserError, tool
from agent.context import (
    DEFAULT_CONTEXT_TOKENS,
    IMAGE_TOKENS,
    VIDEO_TOKENS,
    ContextFitter,
    estimate_tokens,
    make_fitter,
    message_tokens,
    text_tokens,
)
from agent.models.profile import ModelProfile
from agent.settings import ModelSettings
from agent.testing import text_reply, tool_call_reply

Msg = dict[str, Any]


def system(text: str = "You are helpful.") -> Msg:
    return {"role": "system", "content": text}


def user(text: str) -> Msg:
    return {"role": "user", "content": text}


def answer(text: str) -> Msg:
    return {"role": "assistant", "content": text}


def calls(*ids: str, args: str = "{}") -> Msg:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": i, "type": "function", "function": {"name": "lookup", "arguments": args}}
            for i in ids
        ],
    }


def result(call_id: str, text: str = "ok") -> Msg:
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def fit(messages: list[Msg], budget: int, processor: Any = None) -> tuple[list[Msg], int]:
    fitter = ContextFitter(budget, 0, processor=processor)
    fitter.budget = budget  # exact, for the arithmetic of these tests
    return asyncio.run(fitter(messages))


def orphans(messages: list[Msg]) -> list[Msg]:
    """Tool messages not in the run of results right after the call that asked for them."""
    found: list[Msg] = []
    ids: set[Any] = set()
    for m in messages:
        if m["role"] == "tool":
            if m.get("tool_call_id") not in ids:
                found.append(m)
            continue
        ids = {c["id"] for c in m.get("tool_calls") or []}
    return found


def unanswered(messages: list[Msg]) -> list[Msg]:
    """Assistant messages with a tool call whose result does not follow."""
    missing = []
    for i, m in enumerate(messages):
        wanted = {c["id"] for c in m.get("tool_calls") or []}
        j = i + 1
        while j < len(messages) and messages[j]["role"] == "tool":
            wanted.discard(messages[j]["tool_call_id"])
            j += 1
        if wanted:
            missing.append(m)
    return missing


# --- the estimate ---


def test_cjk_counts_a_token_a_character_and_ascii_a_token_per_three() -> None:
    assert text_tokens("") == 0
    assert text_tokens("中文" * 100) == 200
    assert text_tokens("こんにちは") == 5
    assert text_tokens("한국어") == 3
    assert text_tokens("a" * 300) == 100
    assert text_tokens("1234567890") == 10  # Qwen splits numbers into digits
    assert text_tokens("中文 abc") == 2 + 2  # two ideographs, then 4 bytes at 3 a token
    assert text_tokens("中" * 300) > 2.5 * text_tokens("a" * 300)


def test_estimate_errs_high_on_ordinary_text() -> None:
    # Qwen's tokenizer takes about 4 characters a token of English and 1.4 of Chinese.
    prose = "The quick brown fox jumps over the lazy dog while the cat watches. " * 50
    assert text_tokens(prose) >= len(prose) / 3.2
    chinese = "今天天气很好，我们去公园散步吧。" * 50
    assert text_tokens(chinese) >= len(chinese)


def test_message_counts_framing_tool_call_arguments_and_reasoning() -> None:
    small = message_tokens(calls("c1", args="{}"))
    big = message_tokens(calls("c1", args=json.dumps({"q": "x" * 3000})))
    assert big - small >= 1000
    thinking = {"role": "assistant", "content": "hi", "reasoning_content": "r" * 300}
    assert message_tokens(thinking) >= message_tokens(answer("hi")) + 100
    assert message_tokens({"role": "user", "content": ""}) > 0  # framing alone


def test_images_and_videos_count_a_fixed_cost_not_their_url() -> None:
    data_url = "data:image/png;base64," + "A" * 1_000_000
    message = {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": data_url}},
            {"type": "text", "text": "what is this?"},
        ],
    }
    text_only = message_tokens(user("what is this?"))
    assert message_tokens(message) == text_only + IMAGE_TOKENS
    video = {"role": "user", "content": [{"type": "video_url", "video_url": {"url": "https://v"}}]}
    assert message_tokens(video) == message_tokens(user("")) + VIDEO_TOKENS
    frames = {"role": "user", "content": [{"type": "video", "video": ["a", "b", "c"]}]}
    assert message_tokens(frames) == message_tokens(user("")) + 3 * IMAGE_TOKENS


def test_estimate_is_fast_on_a_long_cjk_history() -> None:
    import time

    history = [user("中文内容" * 25_000), answer("好" * 100_000)] * 3  # 600,000 characters
    started = time.perf_counter()
    total = estimate_tokens(history)
    assert total >= 600_000
    assert time.perf_counter() - started < 0.5  # a few ms in practice; generous for slow CI


# --- the budget ---


def profile(context: int | None = None, output: int | None = None) -> ModelProfile:
    return ModelProfile("test", "m", context_tokens=context, max_output_tokens=output)


def test_budget_from_the_profile() -> None:
    fitter = make_fitter(profile(128_000, 8_000), ModelSettings(), None, None)
    assert (fitter.window, fitter.reply_tokens) == (128_000, 8_000)
    assert fitter.budget == 128_000 - 8_000 - 2_560  # 2% margin


def test_reply_room_is_capped_at_a_quarter_of_the_window() -> None:
    fitter = make_fitter(profile(16_000, 32_000), ModelSettings(), None, None)
    assert fitter.reply_tokens == 4_000


def test_budget_from_the_settings() -> None:
    fitter = make_fitter(profile(128_000, 8_000), ModelSettings(max_tokens=2_000), None, None)
    assert fitter.reply_tokens == 2_000
    both = ModelSettings(max_tokens=2_000, max_completion_tokens=30_000)
    assert make_fitter(profile(128_000, 8_000), both, None, None).reply_tokens == 30_000
    # A reply bound near the window leaves the messages a quarter of it, not nothing.
    huge = make_fitter(profile(32_000), ModelSettings(max_tokens=32_000), None, None)
    assert huge.budget == 8_000


def test_budget_from_the_override_and_the_default() -> None:
    fitter = make_fitter(profile(128_000, 8_000), ModelSettings(), 4_000, None)
    assert (fitter.window, fitter.reply_tokens, fitter.budget) == (4_000, 1_000, 4_000 - 1_000 - 80)
    unknown = make_fitter(profile(), ModelSettings(), None, None)
    assert unknown.window == DEFAULT_CONTEXT_TOKENS
    assert unknown.reply_tokens == 8_192
    reserved = make_fitter(profile(), ModelSettings(), None, None, reserve_tokens=1_000)
    assert reserved.budget == unknown.budget - 1_000
    with pytest.raises(UserError, match="context_tokens"):
        make_fitter(profile(), ModelSettings(), 0, None)


# --- fitting ---


def conversation(rounds: int, size: int = 300) -> list[Msg]:
    """System, then rounds of: user, a tool call, its result, an answer."""
    messages = [system()]
    for r in range(rounds):
        messages += [
            user(f"question {r} " + "q" * size),
            calls(f"c{r}"),
            result(f"c{r}", "r" * size),
            answer(f"answer {r} " + "a" * size),
        ]
    return messages


def test_a_conversation_that_fits_goes_as_it_is() -> None:
    messages = conversation(3)
    sent, trimmed = fit(messages, 10_000)
    assert sent is messages
    assert trimmed == 0


def test_oldest_turns_go_first_system_and_latest_user_stay() -> None:
    messages = [*conversation(10), user("the latest question")]
    sent, trimmed = fit(messages, estimate_tokens(messages) // 3)
    assert sent[0] == messages[0]
    assert sent[-1] == messages[-1]
    assert trimmed == len(messages) - len(sent) > 0
    assert sent[1:] == messages[len(messages) - len(sent) + 1 :]  # a suffix: the oldest went
    assert sent[1]["role"] == "user"
    assert estimate_tokens(sent) <= estimate_tokens(messages) // 3


def test_a_tool_call_and_its_results_go_together() -> None:
    messages = [
        system(),
        user("old"),
        calls("a", "b"),
        result("a", "x" * 3000),
        result("b", "y" * 3000),
        user("new"),
    ]
    # Room for the second result but not both: the whole call goes, then the old user too.
    room = estimate_tokens([messages[0], messages[5]]) + message_tokens(messages[4]) + 10
    sent, trimmed = fit(messages, room)
    assert sent == [messages[0], messages[5]]
    assert trimmed == 4


def test_history_after_trimming_starts_with_a_user_message() -> None:
    messages = [system(), user("u" * 900), answer("a" * 900), answer("b" * 30), user("now")]
    room = estimate_tokens([messages[0], messages[3], messages[4]]) + 1
    sent, _ = fit(messages, room)
    assert sent == [messages[0], messages[4]]  # the lone answer cannot lead the history


def test_the_current_turn_stays_whole_even_over_budget() -> None:
    messages = [
        system(),
        user("old"),
        answer("old answer"),
        user("now"),
        calls("c1"),
        result("c1", "z" * 30_000),
    ]
    sent, trimmed = fit(messages, 100)
    assert sent == [messages[0], *messages[3:]]
    assert trimmed == 2


def test_orphan_tool_messages_go_even_when_everything_fits() -> None:
    messages = [system(), result("ghost"), user("hi"), calls("c1"), result("c1"), result("c9")]
    sent, trimmed = fit(messages, 100_000)
    assert sent == [messages[0], messages[2], messages[3], messages[4]]
    assert trimmed == 2


def test_an_earlier_call_missing_a_result_goes_but_the_current_one_stays() -> None:
    messages = [system(), user("a"), calls("x", "y"), result("x"), user("b"), calls("z")]
    sent, trimmed = fit(messages, 100_000)
    assert sent == [messages[0], messages[1], messages[4], messages[5]]
    assert trimmed == 2


def test_without_a_system_message_or_a_user_message() -> None:
    no_system = [user("a" * 3000), answer("b"), user("c")]
    sent, _ = fit(no_system, 50)
    assert sent == [no_system[2]]
    only_answers = [answer("a" * 3000), answer("b")]
    sent, trimmed = fit(only_answers, 10)
    assert (sent, trimmed) == ([only_answers[1]], 1)
    assert fit([], 10) == ([], 0)


# --- the history processor ---


def summarise(messages: list[Msg], budget: int) -> list[Msg]:
    summary = user(f"Summary of {len(messages) - 2} earlier messages, within {budget} tokens.")
    return [messages[0], summary, messages[-1]]


def test_a_sync_processor_replaces_what_does_not_fit() -> None:
    messages = [*conversation(10), user("latest")]
    sent, trimmed = fit(messages, 500, processor=summarise)
    assert [m["role"] for m in sent] == ["system", "user", "user"]
    assert sent[1]["content"] == "Summary of 40 earlier messages, within 500 tokens."
    assert sent[0] is messages[0] and sent[2] is messages[-1]
    assert trimmed == len(messages) - 2


def test_an_async_processor_is_awaited_and_not_called_when_it_fits() -> None:
    seen: list[int] = []

    async def processor(messages: list[Msg], budget: int) -> list[Msg]:
        await asyncio.sleep(0)
        seen.append(budget)
        return [messages[0], messages[-1]]

    short = conversation(1)
    assert fit(short, 10_000, processor=processor) == (short, 0)
    assert seen == []
    messages = [*conversation(10), user("latest")]
    sent, trimmed = fit(messages, 500, processor=processor)
    assert sent == [messages[0], messages[-1]]
    assert (seen, trimmed) == ([500], len(messages) - 2)


def test_what_the_processor_returns_is_trimmed_if_still_too_long() -> None:
    messages = [*conversation(10), user("latest")]
    sent, trimmed = fit(messages, 600, processor=lambda m, budget: [*m[:-1], result("x"), m[-1]])
    assert estimate_tokens(sent) <= 600
    assert sent[0] is messages[0] and sent[-1] is messages[-1]
    assert not orphans(sent)
    assert trimmed == len(messages) - len(sent)


def test_processor_failures_are_hook_errors_and_bad_returns_user_errors() -> None:
    messages = [*conversation(10), user("latest")]

    def broken(messages: list[Msg], budget: int) -> list[Msg]:
        raise RuntimeError("summariser down")

    with pytest.raises(HookError, match="summariser down") as caught:
        fit(messages, 500, processor=broken)
    assert isinstance(caught.value.__cause__, RuntimeError)

    def refuses(messages: list[Msg], budget: int) -> list[Msg]:
        raise UserError("my own misuse")

    with pytest.raises(UserError, match="my own misuse"):
        fit(messages, 500, processor=refuses)
    for bad in ([], "text", [{"content": "no role"}], None):
        with pytest.raises(UserError, match="history_processor"):
            fit(messages, 500, processor=lambda m, budget, bad=bad: bad)


# --- the invariants, over random conversations ---


@st.composite
def conversations(draw: st.DrawFn) -> list[Msg]:
    messages: list[Msg] = [system("s" * draw(st.integers(0, 300)))] if draw(st.booleans()) else []
    ids = iter(range(10_000))
    for _ in range(draw(st.integers(0, 25))):
        size = draw(st.integers(0, 1_500))
        kind = draw(st.sampled_from(["user", "answer", "calls", "orphan"]))
        if kind == "user":
            messages.append(user("u" * size))
        elif kind == "answer":
            messages.append(answer("a" * size))
        elif kind == "orphan":
            messages.append(result(f"ghost{next(ids)}"))
        else:
            call_ids = [f"c{next(ids)}" for _ in range(draw(st.integers(1, 3)))]
            messages.append(calls(*call_ids))
            answered = draw(st.integers(0, len(call_ids))) if draw(st.booleans()) else len(call_ids)
            messages += [result(i, "r" * size) for i in call_ids[:answered]]
    return messages


@settings(max_examples=200, deadline=None)
@given(conversations(), st.integers(0, 4_000))
def test_no_orphans_and_the_essentials_kept_whatever_the_conversation(
    messages: list[Msg], budget: int
) -> None:
    sent, trimmed = fit(messages, budget)
    assert trimmed == len(messages) - len(sent)
    assert not orphans(sent)
    # A subsequence of the input, in order.
    position = iter(range(len(messages)))
    assert all(any(messages[i] is m for i in position) for m in sent)
    if messages and messages[0]["role"] == "system":
        assert sent[0] is messages[0]
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if users:
        latest = users[-1]
        current = [m for m in messages[latest:] if m not in orphans(messages[latest:])]
        assert sent[len(sent) - len(current) :] == current
        head = 1 if sent[0]["role"] == "system" else 0
        cleaned, _ = fit(messages, 10**9)  # orphans out, nothing left out for room
        assert sent[head]["role"] == "user" or sent == cleaned
        # Calls missing results may stay only in the turn in progress.
        assert all(any(m is c for c in current) for m in unanswered(sent))
        earlier = sent[: len(sent) - len(current)]
        if estimate_tokens(sent) > budget:
            assert [m["role"] for m in earlier] in ([], ["system"])


# --- over HTTP ---


@tool
def lookup(q: str) -> str:
    """Look something up.

    Args:
        q: What to look up.
    """
    return f"found {q}"


def long_history(characters: int) -> list[Msg]:
    """Rounds of user question, tool call, tool result, answer: 10,000 characters a round."""
    history: list[Msg] = []
    for r in range(characters // 10_000):
        history += [
            user(f"question {r}: " + "q" * 2_000),
            calls(f"old{r}", args=json.dumps({"q": f"topic {r}"})),
            result(f"old{r}", "r" * 6_000),
            answer(f"answer {r}: " + "a" * 2_000),
        ]
    return history


async def test_a_long_history_is_fitted_to_a_small_window_over_http(openai_server, make_agent):
    openai_server.script(tool_call_reply("lookup", {"q": "now"}), text_reply("Done."))
    agent = make_agent(lookup, context_tokens=4_000, instructions="You look things up.")
    history = long_history(300_000)
    assert sum(len(m["content"] or "") for m in history) >= 300_000

    result = await agent.run("What did we find?", history=history)

    budget = make_fitter(agent.profile, agent.settings, 4_000, None).budget
    assert result.output == "Done."
    assert result.trimmed > 0
    # Every message stays in the result: the history, the question, the call, its result, the answer.
    assert len(result.messages) == 1 + len(history) + 4
    assert result.messages[1 : 1 + len(history)] == history
    for request in openai_server.requests:
        sent = request.json["messages"]
        assert estimate_tokens(sent) <= budget
        assert not orphans(sent) and not unanswered(sent)
        assert sent[0]["role"] == "system"
        assert sent[1]["role"] == "user"
        assert {"role": "user", "content": "What did we find?"} in sent
    first, second = (r.json["messages"] for r in openai_server.requests)
    assert first[-1] == {"role": "user", "content": "What did we find?"}
    assert [m["role"] for m in second[-3:]] == ["user", "assistant", "tool"]
    assert len(first) < len(history)  # the oldest turns were left out


@pytest.mark.parametrize(
    "message",
    [
        "hello",  # not a dict
        {"content": "no role"},
        {"role": "assistant", "content": None, "tool_calls": 5},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "a", "function": "f"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": ["a"], "function": {}}]},
        {"role": "tool", "tool_call_id": ["a"], "content": "1"},
        {"role": "user", "content": "x", "tool_calls": ["x" * 100_000]},
    ],
)
async def test_a_malformed_history_message_is_a_user_error_before_any_request(
    openai_server, make_agent, message
):
    agent = make_agent()
    with pytest.raises(UserError) as caught:
        await agent.run("Go on.", history=[{"role": "user", "content": "Hi"}, message])
    assert len(str(caught.value)) < 500  # a huge message is not repeated whole
    with pytest.raises(UserError):
        agent.run_sync([message])
    assert openai_server.requests == []
