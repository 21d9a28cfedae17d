"""The built-in tools package: names, lookup, offline set and schemas."""

from __future__ import annotations

import json

import pytest

import tools
from agent.errors import UserError
from agent.tool import Tool, ToolRegistry
from tools import BUILTIN_TOOLS, OFFLINE_TOOLS, get_builtin

NAMES = {"web_search", "get_weather", "get_forecast", "calculator", "current_time", "fetch_url"}


def test_builtin_names_match_tool_names() -> None:
    assert set(BUILTIN_TOOLS) == NAMES
    for name, t in BUILTIN_TOOLS.items():
        assert isinstance(t, Tool)
        assert t.name == name
        assert getattr(tools, name) is t


def test_get_builtin() -> None:
    assert get_builtin("calculator") is tools.calculator


def test_unknown_builtin_lists_the_available_ones() -> None:
    with pytest.raises(UserError, match="no built-in tool named 'calculater'") as info:
        get_builtin("calculater")
    for name in NAMES:
        assert name in str(info.value)


def test_offline_tools() -> None:
    assert sorted(OFFLINE_TOOLS) == ["calculator", "current_time"]
    assert OFFLINE_TOOLS.issubset(BUILTIN_TOOLS)


def test_all_register_together_with_described_schemas() -> None:
    registry = ToolRegistry(BUILTIN_TOOLS.values())
    assert registry.names == list(BUILTIN_TOOLS)
    for schema in registry.schemas():
        fn = schema["function"]
        assert fn["description"], fn["name"]
        for prop, spec in fn["parameters"]["properties"].items():
            assert spec.get("description"), (fn["name"], prop)
        json.dumps(schema)  # sendable as is


async def test_offline_tools_run_without_network() -> None:
    calc = get_builtin("calculator")
    assert await calc.invoke(calc.validate({"expression": "6 * 7"})) == "42"
    clock = get_builtin("current_time")
    out = await clock.invoke(clock.validate({"timezone": "Europe/Berlin"}))
    assert out["timezone"] == "Europe/Berlin"
