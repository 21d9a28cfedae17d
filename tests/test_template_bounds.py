"""A user's template can fail, but never crash or hang the process: every failure is a
PromptRenderError naming the template, and rendering is bounded in time and output size."""

from __future__ import annotations

import time

import pytest

from agent import PromptRenderError, Template
from agent.prompts import MAX_OUTPUT_CHARS, MAX_RENDER_SECONDS


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("{% for i in range(10**6) %}{% endfor %}", "too large"),
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "recurses too deeply"),
        ("{{ 'a' * 10**9 }}", "longer than"),
        ("{{ [1] * 10**9 }}", "longer than"),
        ("{% for i in range(99999) %}{{ 'x' * 99 }}{% endfor %}", "output is longer than"),
        ("{{ 2 ** (10**6) }}", "too large a number"),
        ("{{ 1 / 0 }}", "division by zero"),
        ("{{ {}['missing'] }}", "render"),
    ],
    ids=["range", "recursive macro", "big string", "big list", "long output", "big power",
         "division", "missing key"],
)  # fmt: skip
def test_a_template_that_would_crash_fails_with_a_render_error(source: str, says: str) -> None:
    started = time.monotonic()
    with pytest.raises(PromptRenderError, match=says) as caught:
        Template(source).render()
    assert caught.value.template == "<string>"
    assert time.monotonic() - started < 10


def test_constants_are_not_folded_at_compile_time() -> None:
    """Jinja folds constant expressions when it compiles; 10**(10**10) would hang right there."""
    started = time.monotonic()
    template = Template("{{ 10**(10**10) }}")  # compiles at once
    with pytest.raises(PromptRenderError, match="too large a number"):
        template.render()
    assert time.monotonic() - started < 10


def test_a_loop_that_writes_nothing_still_stops() -> None:
    source = "{% set xs = range(99999) %}{% for i in xs %}{% for j in xs %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(PromptRenderError, match="took longer than"):
        Template(source).render()
    assert time.monotonic() - started < MAX_RENDER_SECONDS + 5


def test_a_template_file_that_is_not_utf8(tmp_path) -> None:
    path = tmp_path / "latin1.j2"
    path.write_bytes("Caf\xe9 {{ date }}".encode("latin-1"))
    with pytest.raises(PromptRenderError, match="not UTF-8") as caught:
        Template(path=path)
    assert caught.value.template == str(path)


def test_an_ordinary_template_is_untouched() -> None:
    text = Template("{{ 'ab' * 3 }} {{ 2 ** 10 }} {{ 1.5 * 2 }} {{ [0] * 2 }}").render()
    assert text == "ababab 1024 3.0 [0, 0]"
    assert len(Template("{{ 'x' * " + str(MAX_OUTPUT_CHARS) + " }}").render()) == MAX_OUTPUT_CHARS
