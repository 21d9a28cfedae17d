"""System prompts from Jinja2 templates: sandboxed, strict about undefined variables.

Templates come by name (the ones shipped in `prompts/`), by file path, or as a string. They are
rendered at every turn with the tools, the search mode, the current date, time and zone, the
locale and the user's variables, so time-dependent text stays current in long conversations.
"""

from __future__ import annotations

import contextlib
import locale as _locale
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from agent.errors import PromptRenderError, UserError

if TYPE_CHECKING:
    from agent.tool import Tool

__all__ = ["Template", "shipped_templates", "templates_dir"]

_UNDEFINED = re.compile(r"'([^']+)' is undefined")


def templates_dir() -> Path:
    """Return the folder of shipped templates (inside the wheel, or `prompts/` in a checkout)."""
    here = Path(__file__).parent
    packaged = here / "_templates"
    return packaged if packaged.is_dir() else here.parent / "prompts"


def shipped_templates() -> list[str]:
    """Return the names of the shipped templates."""
    return sorted(p.stem for p in templates_dir().glob("*.j2"))


MAX_OUTPUT_CHARS = 200_000
"""The longest system prompt a template may render."""
MAX_RENDER_SECONDS = 2.0
"""How long one render may take."""


class _RenderLimit(Exception):
    """A render went past a bound; the message says which."""


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, plus bounds on what `**` and `*` may build.

    Intercepting the operators also stops Jinja from folding them at compile time, where
    `{{ 10**(10**10) }}` would hang inside `Template(...)` itself.
    """

    intercepted_binops = frozenset({"**", "*"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
                if right * abs(left).bit_length() > 4096:
                    raise _RenderLimit(f"{left} ** {right} is too large a number")
            elif isinstance(right, float) and right > 1024:
                raise _RenderLimit(f"{left} ** {right} is too large a number")
            return left**right
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and _is_int(times)
                    and len(seq) * times > MAX_OUTPUT_CHARS
                ):
                    raise _RenderLimit(
                        f"repeating a value {times} times is longer than "
                        f"{MAX_OUTPUT_CHARS:,} characters"
                    )
            return left * right
        return super().call_binop(context, operator, left, right)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _environment(search_path: list[str]) -> ImmutableSandboxedEnvironment:
    return _BoundedEnvironment(
        loader=jinja2.FileSystemLoader(search_path),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )


@contextlib.contextmanager
def _deadline(seconds: float, env: jinja2.Environment) -> Iterator[None]:
    """Stop the template code running on this thread once `seconds` have passed.

    A loop that writes nothing calls nothing a sandbox could check, so template frames are
    traced (only theirs: other frames get no local tracer) and checked every 1,000 lines.
    """
    end = time.monotonic() + seconds
    previous = sys.gettrace()
    lines = 0

    def local(frame: Any, event: str, arg: Any) -> Any:
        nonlocal lines
        lines += 1
        if lines % 1000 == 0 and time.monotonic() > end:
            raise _RenderLimit(f"rendering took longer than {seconds:g} s")
        return local

    def on_call(frame: Any, event: str, arg: Any) -> Any:
        # Jinja runs a template's code with its environment as a global.
        return local if frame.f_globals.get("environment") is env else None

    sys.settrace(on_call)
    try:
        yield
    finally:
        sys.settrace(previous)


def _error_line(exc: BaseException, filename: str | None) -> int | None:
    line = getattr(exc, "lineno", None)
    if line:
        return int(line)
    tb = exc.__traceback__
    found = None
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename in (filename, "<template>") or code.co_filename.endswith(".j2"):
            found = tb.tb_lineno
        tb = tb.tb_next
    return found


class Template:
    """A system-prompt template and its variables.

    Args:
        source: The template text (give this, `name` or `path`).
        name: A shipped template's name ("default", "weather_bot", "search_bot").
        path: A template file.
        variables: The user's variables, available in the template by name.
        timezone: The IANA zone for `date`, `time` and `weekday` (default: `TZ`, else UTC).
        locale: The user's locale, e.g. "en_US" (default: the system's).

    Raises:
        PromptRenderError: For a syntax error, naming the template and the line.
        UserError: For an unknown template name or a missing file.

    Example:
        ```python
        Template(name="weather_bot", variables={"units": "metric"})
        ```
    """

    def __init__(
        self,
        source: str | None = None,
        *,
        name: str | None = None,
        path: str | Path | None = None,
        variables: dict[str, Any] | None = None,
        timezone: str | None = None,
        locale: str | None = None,
    ) -> None:
        if sum(x is not None for x in (source, name, path)) != 1:
            raise UserError("Template needs exactly one of source, name= or path=")
        self.variables = dict(variables or {})
        self.timezone = timezone or os.environ.get("TZ") or "UTC"
        try:
            self._zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise UserError(
                f"unknown time zone {self.timezone!r}: use an IANA name such as 'Europe/Berlin'"
            ) from None
        self.locale = locale or _locale.getlocale()[0] or "en_US"
        search = [str(templates_dir())]
        if name is not None:
            if name not in shipped_templates():
                raise UserError(
                    f"no shipped template named {name!r}; choose one of "
                    f"{', '.join(shipped_templates())}, or give a file path"
                )
            self.label = f"{name}.j2"
            load: Any = lambda env: env.get_template(f"{name}.j2")  # noqa: E731
        elif path is not None:
            file = Path(path)
            if not file.is_file():
                raise UserError(f"template file {str(file)!r} does not exist")
            self.label = str(file)
            search.insert(0, str(file.parent.resolve()))
            load = lambda env: env.get_template(file.name)  # noqa: E731
        else:
            assert source is not None
            self.label = "<string>"
            load = lambda env: env.from_string(source)  # noqa: E731
        self._env = _environment(search)
        try:
            self._template: jinja2.Template = load(self._env)
        except jinja2.TemplateSyntaxError as exc:
            raise PromptRenderError(
                f"template {self.label} has a syntax error on line {exc.lineno}: {exc.message}",
                template=self.label,
                line=exc.lineno,
            ) from None
        except UnicodeDecodeError as exc:
            raise PromptRenderError(
                f"template {self.label} is not UTF-8 text (byte {exc.start}): save it as UTF-8",
                template=self.label,
            ) from None
        except (RecursionError, MemoryError, _RenderLimit) as exc:
            raise PromptRenderError(
                f"template {self.label} could not be compiled: {_describe(exc)}",
                template=self.label,
            ) from None

    @classmethod
    def load(cls, name_or_path: str, **kwargs: Any) -> Template:
        """Load a shipped template by name, or a template file by path."""
        if name_or_path in shipped_templates():
            return cls(name=name_or_path, **kwargs)
        if os.sep in name_or_path or name_or_path.endswith((".j2", ".jinja", ".txt", ".md")):
            return cls(path=name_or_path, **kwargs)
        raise UserError(
            f"no shipped template named {name_or_path!r}; choose one of "
            f"{', '.join(shipped_templates())}, or give a file path"
        )

    def context(self, **extra: Any) -> dict[str, Any]:
        """Return the variables a render sees: time, zone, locale, user variables, extras."""
        now = datetime.now(self._zone)
        ctx: dict[str, Any] = {
            "now": now,
            "date": now.date().isoformat(),
            "time": now.strftime("%H:%M"),
            "weekday": now.strftime("%A"),
            "timezone": self.timezone,
            "locale": self.locale,
            "tools": [],
            "search_mode": "off",
            "python_version": sys.version.split()[0],
        }
        ctx.update(extra)
        ctx.update(self.variables)
        return ctx

    def render(self, **extra: Any) -> str:
        """Render with the current time and the given extra variables.

        Raises:
            PromptRenderError: Naming the template, the line and the undefined variable.
        """
        return self._render_checked(self.context(**extra))

    def _render_checked(self, context: dict[str, Any]) -> str:
        try:
            return self._render(context)
        except jinja2.UndefinedError as exc:
            m = _UNDEFINED.search(str(exc))
            variable = m.group(1) if m else None
            line = _error_line(exc, self._template.filename)
            where = f" on line {line}" if line else ""
            if variable is None:  # a missing key or attribute, not a variable
                raise PromptRenderError(
                    f"template {self.label}{where} failed to render: {exc}",
                    template=self.label,
                    line=line,
                ) from None
            raise PromptRenderError(
                f"template {self.label}{where} uses undefined variable {variable!r}; "
                f"pass it with variables={{{variable!r}: ...}} (CLI: --var {variable}=...)",
                template=self.label,
                line=line,
                variable=variable,
            ) from None
        except jinja2.TemplateError as exc:
            line = _error_line(exc, self._template.filename)
            raise PromptRenderError(
                f"template {self.label} failed to render: {exc}",
                template=self.label,
                line=line,
            ) from None
        except (
            _RenderLimit, RecursionError, MemoryError, OverflowError, ArithmeticError,
            TypeError, ValueError, LookupError, UnicodeError,
        ) as exc:  # fmt: skip
            line = _error_line(exc, self._template.filename)
            where = f" on line {line}" if line else ""
            raise PromptRenderError(
                f"template {self.label}{where} failed to render: {_describe(exc)}",
                template=self.label,
                line=line,
            ) from None

    def _render(self, context: dict[str, Any]) -> str:
        """Render within MAX_RENDER_SECONDS and MAX_OUTPUT_CHARS."""
        parts: list[str] = []
        size = 0
        with _deadline(MAX_RENDER_SECONDS, self._env):
            for part in self._template.generate(context):
                size += len(part)
                if size > MAX_OUTPUT_CHARS:
                    raise _RenderLimit(f"the output is longer than {MAX_OUTPUT_CHARS:,} characters")
                parts.append(part)
        return "".join(parts).strip()

    def render_system(
        self,
        *,
        tools: Iterable[Tool],
        search_mode: str,
        model: str,
        variables: Mapping[str, Any] | None = None,
    ) -> str:
        """Render for an agent's turn: its tools, search mode, model and the run's variables."""
        offered = [{"name": t.name, "description": t.description} for t in tools]
        context = self.context(tools=offered, search_mode=search_mode, model=model)
        for key, value in (variables or {}).items():
            if key not in ("tools", "search_mode", "model"):
                context[key] = value  # the run's variables over the template's own
        return self._render_checked(context)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "it recurses too deeply (a macro calling itself?)"
    if isinstance(exc, MemoryError):
        return "it needs more memory than there is"
    if isinstance(exc, OverflowError):
        return f"a number or range is too large ({exc})"
    return str(exc) or type(exc).__name__
