"""current_time with a fixed clock: zones, offsets, DST, and unknown zones."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from agent.tool import Tool, ToolRetry
from tools.clock import current_time, make_current_time

SUMMER = datetime(2025, 7, 14, 12, 30, 15, 999_999, tzinfo=UTC)  # a Monday
WINTER = datetime(2025, 1, 15, 23, 30, tzinfo=UTC)  # a Wednesday


def clock_at(instant: datetime) -> Tool:
    return make_current_time(lambda: instant)


async def call(t: Tool, **args: Any) -> Any:
    return await t.invoke(t.validate(args))


async def test_default_is_utc() -> None:
    assert await call(clock_at(SUMMER)) == {
        "time": "2025-07-14T12:30:15+00:00",
        "time_12h": "12:30 PM",
        "weekday": "Monday",
        "timezone": "UTC",
        "utc_offset": "+00:00",
        "abbreviation": "UTC",
    }


async def test_summer_time_in_berlin() -> None:
    out = await call(clock_at(SUMMER), timezone="Europe/Berlin")
    assert out["time"] == "2025-07-14T14:30:15+02:00"
    assert (out["utc_offset"], out["abbreviation"]) == ("+02:00", "CEST")


async def test_winter_crosses_midnight_and_weekday() -> None:
    out = await call(clock_at(WINTER), timezone="Asia/Shanghai")
    assert out["time"] == "2025-01-16T07:30:00+08:00"
    assert out["weekday"] == "Thursday"
    out = await call(clock_at(WINTER), timezone="America/New_York")
    assert (out["time"], out["utc_offset"], out["abbreviation"]) == (
        "2025-01-15T18:30:00-05:00",
        "-05:00",
        "EST",
    )


async def test_the_time_of_day_on_a_twelve_hour_clock() -> None:
    async def twelve_hour(hour: int, minute: int) -> str:
        moment = datetime(2025, 1, 15, hour, minute, tzinfo=UTC)
        return str((await call(clock_at(moment)))["time_12h"])

    assert [await twelve_hour(h, m) for h, m in ((0, 5), (2, 19), (11, 59), (12, 0), (23, 30))] == [
        "12:05 AM",
        "2:19 AM",
        "11:59 AM",
        "12:00 PM",
        "11:30 PM",
    ]
    # New York in winter is 5 hours behind: 18:30 there.
    assert (await call(clock_at(WINTER), timezone="America/New_York"))["time_12h"] == "6:30 PM"


async def test_half_hour_and_negative_offsets() -> None:
    assert (await call(clock_at(WINTER), timezone="Asia/Kolkata"))["utc_offset"] == "+05:30"
    assert (await call(clock_at(WINTER), timezone="America/St_Johns"))["utc_offset"] == "-03:30"


async def test_case_and_spaces_are_forgiven() -> None:
    out = await call(clock_at(SUMMER), timezone="america/new york")
    assert out["timezone"] == "America/New_York"


async def test_clock_in_another_offset_is_converted() -> None:
    instant = datetime(2025, 7, 14, 8, 0, tzinfo=timezone(timedelta(hours=-4)))
    out = await call(clock_at(instant), timezone="UTC")
    assert out["time"] == "2025-07-14T12:00:00+00:00"


@pytest.mark.parametrize(
    ("zone", "time", "name"),
    [
        ("UTC+8", "2025-01-16T07:30:00+08:00", "UTC+08:00"),
        ("GMT-3", "2025-01-15T20:30:00-03:00", "UTC-03:00"),
        ("+05:30", "2025-01-16T05:00:00+05:30", "UTC+05:30"),
        ("utc-0930", "2025-01-15T14:00:00-09:30", "UTC-09:30"),
    ],
)
async def test_fixed_offsets(zone: str, time: str, name: str) -> None:
    out = await call(clock_at(WINTER), timezone=zone)
    assert (out["time"], out["timezone"], out["utc_offset"]) == (time, name, name[3:])


@pytest.mark.parametrize(
    "zone", ["UTC+15", "UTC+5:75", "Mars/Olympus_Mons", "Berlin", "", "../../etc/passwd", "/etc"]
)
async def test_unknown_zone_names_the_zone_and_suggests(zone: str) -> None:
    with pytest.raises(ToolRetry, match=re.escape(f"unknown time zone {zone!r}")) as info:
        await call(clock_at(SUMMER), timezone=zone)
    assert "Europe/Berlin" in str(info.value) or "did you mean" in str(info.value)


async def test_close_misspelling_gets_a_suggestion() -> None:
    with pytest.raises(ToolRetry, match="did you mean 'Europe/Berlin'"):
        await call(clock_at(SUMMER), timezone="Europe/Berln")


async def test_real_clock_is_close_to_now() -> None:
    out = await call(current_time, timezone="UTC")
    got = datetime.fromisoformat(out["time"])
    assert abs(got - datetime.now(UTC)) < timedelta(seconds=5)
