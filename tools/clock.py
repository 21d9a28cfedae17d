"""The `current_time` tool: the current date and time in an IANA time zone (via zoneinfo)."""

from __future__ import annotations

import difflib
import functools
import re
import zoneinfo
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import timezone as fixed_offset

from agent.tool import Tool, ToolRetry, tool

__all__ = ["current_time", "make_current_time"]

# Not strftime("%A"): that follows the process locale.
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@functools.lru_cache(maxsize=1)
def _zone_names() -> dict[str, str]:
    """Map lower-cased zone names to their canonical spelling (slow: ~40 ms, errors only)."""
    return {name.lower(): name for name in zoneinfo.available_timezones()}


_FIXED_OFFSET = re.compile(r"^(?:UTC|GMT|Z)?\s*([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)


def _load_zone(name: str) -> tuple[tzinfo, str]:
    """Return the zone for an IANA name (case-insensitive) or a fixed offset like "UTC+8"."""
    key = name.strip().replace(" ", "_")
    try:
        return zoneinfo.ZoneInfo(key), key
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass
    m = _FIXED_OFFSET.match(name.strip())
    if m and int(m.group(2)) <= 14 and int(m.group(3) or 0) < 60:
        # Models often say "UTC+8"; the IANA spelling (Etc/GMT-8) inverts the sign.
        delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3) or 0))
        delta = -delta if m.group(1) == "-" else delta
        return fixed_offset(delta), "UTC" + _offset_text(delta)
    names = _zone_names()
    canonical = names.get(key.lower())
    if canonical is not None:
        return zoneinfo.ZoneInfo(canonical), canonical
    close = difflib.get_close_matches(key.lower(), names, n=3, cutoff=0.6)
    hint = (
        "did you mean " + ", ".join(repr(names[c]) for c in close) + "?"
        if close
        else "use an IANA name such as 'Europe/Berlin', 'America/New_York', 'Asia/Shanghai' or "
        "'UTC', or an offset such as 'UTC+8'"
    )
    raise ToolRetry(f"unknown time zone {name!r}; {hint}")


def _twelve_hour(moment: datetime) -> str:
    """Return the time of day as "2:05 AM": a small model misreads the hour of an ISO time."""
    return f"{(moment.hour + 11) % 12 + 1}:{moment.minute:02d} {'AM' if moment.hour < 12 else 'PM'}"


def _offset_text(delta: timedelta | None) -> str:
    minutes = int(delta.total_seconds() // 60) if delta is not None else 0
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"


def make_current_time(now: Callable[[], datetime] | None = None) -> Tool:
    """Build a `current_time` tool.

    Args:
        now: Returns the current time as an aware datetime; defaults to the system clock.
            Tests pass a fixed instant.

    Returns:
        The tool.
    """
    clock = now or (lambda: datetime.now(UTC))

    @tool(name="current_time")
    def current_time(timezone: str = "UTC") -> dict[str, str]:
        """Get the current date and time in a time zone.

        Args:
            timezone: An IANA time zone name, e.g. "Europe/Berlin", "America/New_York",
                "Asia/Shanghai" or "UTC", or a fixed offset such as "UTC+8".
        """
        zone, zone_name = _load_zone(timezone)
        local = clock().astimezone(zone).replace(microsecond=0)
        return {
            "time": local.isoformat(),
            "time_12h": _twelve_hour(local),
            "weekday": _WEEKDAYS[local.weekday()],
            "timezone": zone_name,
            "utc_offset": _offset_text(local.utcoffset()),
            "abbreviation": local.tzname() or "",
        }

    return current_time


current_time = make_current_time()
