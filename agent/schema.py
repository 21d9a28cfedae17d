"""Function signature + Google-style docstring → a pydantic arguments model and a JSON schema.

Everything that can be wrong with a tool's signature is found here, at declaration time, with a
message naming the function and the parameter.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model
from pydantic.errors import PydanticSchemaGenerationError, PydanticUserError

from agent.errors import UserError

__all__ = ["FunctionSchema", "function_schema", "parse_docstring"]

_SECTION = re.compile(
    r"^\s*(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Examples?|Notes?|Attributes)\s*:\s*$"
)
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")


class FunctionSchema:
    """The outcome of inspecting a function: its description, arguments model and JSON schema."""

    __slots__ = ("args_model", "description", "parameters")

    def __init__(self, description: str, args_model: type[BaseModel], parameters: dict[str, Any]):
        self.description = description
        self.args_model = args_model
        self.parameters = parameters


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its description and its `Args:` descriptions.

    Args:
        doc: The docstring, or None.

    Returns:
        The text before the first section, and a map of parameter name to description.
    """
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    arg_indent: int | None = None
    for line in lines:
        m = _SECTION.match(line)
        if m:
            section = m.group(1).lower()
            current, arg_indent = None, None
            continue
        if section is None:
            summary.append(line)
            continue
        if section not in ("args", "arguments", "parameters"):
            continue
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        am = _ARG_LINE.match(line)
        if am and (arg_indent is None or indent <= arg_indent):
            arg_indent = indent
            current = am.group(1).lstrip("*")
            args[current] = am.group(3).strip()
        elif current is not None:
            args[current] = (args[current] + " " + line.strip()).strip()
    description = "\n".join(summary).strip()
    return description, args


def _strip_titles(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {}
        for k, v in schema.items():
            if k == "title" and isinstance(v, str):
                continue
            if k == "properties" and isinstance(v, dict):
                out[k] = {name: _strip_titles(prop) for name, prop in v.items()}
            else:
                out[k] = _strip_titles(v)
        return out
    if isinstance(schema, list):
        return [_strip_titles(s) for s in schema]
    return schema


def _make_strict(schema: Any) -> Any:
    """Apply OpenAI strict-mode rules: closed objects, every property required."""
    if isinstance(schema, dict):
        out = {k: _make_strict(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out:
            out["additionalProperties"] = False
            out["required"] = list(out["properties"])
        return out
    if isinstance(schema, list):
        return [_make_strict(s) for s in schema]
    return schema


def function_schema(
    fn: Callable[..., Any], *, name: str, description: str | None = None, strict: bool = False
) -> FunctionSchema:
    """Inspect `fn` and build its arguments model and JSON schema.

    Args:
        fn: A plain function or coroutine function.
        name: The tool name, used in error messages and as the model's title.
        description: Overrides the docstring's description.
        strict: Produce an OpenAI strict-mode schema.

    Returns:
        The function's schema.

    Raises:
        UserError: For `*args`/`**kwargs`, a missing annotation or a type pydantic cannot
            describe; the message names the function and the parameter.
    """
    qual = getattr(fn, "__qualname__", name)
    doc_description, arg_docs = parse_docstring(fn.__doc__)
    try:
        hints = get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise UserError(
            f"tool {qual!r}: cannot resolve its type annotations ({exc}); "
            "import the types the signature names at module level"
        ) from exc
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(fn).parameters.items():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            star = "*" if param.kind is inspect.Parameter.VAR_POSITIONAL else "**"
            raise UserError(
                f"tool {qual!r}: parameter {star}{pname} is not supported; "
                "declare each argument the model may pass as a named, annotated parameter"
            )
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise UserError(
                f"tool {qual!r}: parameter {pname!r} is positional-only; "
                "tools are called with keyword arguments, remove the '/'"
            )
        if pname not in hints:
            raise UserError(
                f"tool {qual!r}: parameter {pname!r} has no type annotation; "
                f"annotate it, e.g. `{pname}: str`"
            )
        annotation = hints[pname]
        try:
            TypeAdapter(annotation).json_schema()
        except (PydanticSchemaGenerationError, PydanticUserError, TypeError) as exc:
            raise UserError(
                f"tool {qual!r}: parameter {pname!r} has type {annotation!r}, which cannot be "
                "described as JSON; use str, int, float, bool, list, dict, Literal, Enum, "
                "Optional or a pydantic model"
            ) from exc
        default = ... if param.default is inspect.Parameter.empty else param.default
        doc = arg_docs.get(pname)
        if doc:
            fields[pname] = (annotation, Field(default, description=doc))
        else:
            fields[pname] = (annotation, default)
    model_name = re.sub(r"\W", "_", name) + "_args"
    try:
        args_model = create_model(
            model_name, __config__=ConfigDict(extra="forbid" if strict else "ignore"), **fields
        )
        parameters = _strip_titles(args_model.model_json_schema())
    except (PydanticSchemaGenerationError, PydanticUserError, TypeError) as exc:
        raise UserError(f"tool {qual!r}: cannot build an arguments model: {exc}") from exc
    parameters.setdefault("properties", {})
    parameters["type"] = "object"
    if strict:
        parameters = _make_strict(parameters)
    text = description if description is not None else doc_description
    return FunctionSchema(text, args_model, parameters)
