"""The `get_weather` and `get_forecast` tools, backed by Open-Meteo (free, no API key).

A city name is resolved with Open-Meteo's geocoding API, then its forecast API is asked for
current conditions or a daily forecast. WMO weather codes are turned into words.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from agent.tool import Tool, ToolRetry, tool
from tools._http import describe_http_error, new_client

if TYPE_CHECKING:
    import httpx

__all__ = [
    "FORECAST_URL",
    "GEOCODING_URL",
    "describe_weather_code",
    "get_forecast",
    "get_weather",
    "make_weather_tools",
]

GEOCODING_URL = "https://geocoding-api.open-meteo.com/v1/search"
FORECAST_URL = "https://api.open-meteo.com/v1/forecast"

CURRENT_VARIABLES = (
    "temperature_2m,relative_humidity_2m,apparent_temperature,weather_code,wind_speed_10m"
)
DAILY_VARIABLES = "weather_code,temperature_2m_max,temperature_2m_min,precipitation_sum"

# WMO code table 4677 as Open-Meteo uses it (https://open-meteo.com/en/docs, "WMO Weather
# interpretation codes").
WMO_CODES: dict[int, str] = {
    0: "clear sky",
    1: "mainly clear",
    2: "partly cloudy",
    3: "overcast",
    45: "fog",
    48: "depositing rime fog",
    51: "light drizzle",
    53: "moderate drizzle",
    55: "dense drizzle",
    56: "light freezing drizzle",
    57: "dense freezing drizzle",
    61: "slight rain",
    63: "moderate rain",
    65: "heavy rain",
    66: "light freezing rain",
    67: "heavy freezing rain",
    71: "slight snowfall",
    73: "moderate snowfall",
    75: "heavy snowfall",
    77: "snow grains",
    80: "slight rain showers",
    81: "moderate rain showers",
    82: "violent rain showers",
    85: "slight snow showers",
    86: "heavy snow showers",
    95: "thunderstorm",
    96: "thunderstorm with slight hail",
    99: "thunderstorm with heavy hail",
}

# Open-Meteo spells mph "mp/h"; anything not listed is shown as the API sent it.
_UNIT_SPELLING = {"mp/h": "mph"}
_DEFAULT_UNITS = {
    "metric": {"temp": "°C", "wind": "km/h", "precip": "mm"},
    "imperial": {"temp": "°F", "wind": "mph", "precip": "inch"},
}


def describe_weather_code(code: Any) -> str:
    """Return the words for a WMO weather code, e.g. 61 -> "slight rain".

    Args:
        code: The code as Open-Meteo sent it (int, float or None).
    """
    if code is None:
        return "unknown"
    try:
        n = int(code)
    except (TypeError, ValueError):
        return f"unknown (code {code!r})"
    return WMO_CODES.get(n, f"unknown (WMO code {n})")


def _with_unit(value: Any, unit: str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    unit = _UNIT_SPELLING.get(unit or "", unit or "")
    if not unit:
        return str(value)
    if unit.startswith("°") or unit == "%":
        return f"{value}{unit}"
    return f"{value} {unit}"


def _place_label(place: dict[str, Any]) -> str:
    parts: list[str] = []
    for key in ("name", "admin1", "country"):
        part = place.get(key)
        if isinstance(part, str) and part and part not in parts:
            parts.append(part)
    return ", ".join(parts)


def _unit_params(units: str) -> dict[str, str]:
    if units == "imperial":
        return {
            "temperature_unit": "fahrenheit",
            "wind_speed_unit": "mph",
            "precipitation_unit": "inch",
        }
    return {}


class _OpenMeteo:
    """Asks Open-Meteo-compatible endpoints for a city's coordinates, then its weather."""

    service = "the weather service"

    def __init__(
        self,
        geocoding_url: str,
        forecast_url: str,
        client: httpx.AsyncClient | None,
        timeout: float,
    ) -> None:
        self.geocoding_url = geocoding_url
        self.forecast_url = forecast_url
        self.client = client
        self.timeout = timeout

    async def fetch(self, city: str, params: dict[str, Any]) -> dict[str, Any]:
        """Return the forecast reply for `city`, with the geocoded place under "_place"."""
        if self.client is not None:
            return await self.lookup(self.client, city, params)
        async with new_client(self.timeout) as c:
            return await self.lookup(c, city, params)

    async def lookup(
        self, c: httpx.AsyncClient, city: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Geocode `city`, then ask the forecast endpoint for `params` at its coordinates."""
        found = await self.get_json(
            c, self.geocoding_url, {"name": city, "count": 1, "language": "en", "format": "json"}
        )
        # Open-Meteo leaves out "results" entirely when nothing matches.
        results = found.get("results") or []
        if not results or not isinstance(results[0], dict):
            raise ToolRetry(
                f"unknown city {city!r}: no place of that name was found; check the spelling "
                "or give just the city name, e.g. 'Paris'"
            )
        place = results[0]
        try:
            lat, lon = float(place["latitude"]), float(place["longitude"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ToolRetry(f"the geocoding service sent no coordinates for {city!r}") from exc
        forecast = await self.get_json(
            c,
            self.forecast_url,
            {"latitude": lat, "longitude": lon, "timezone": "auto", **params},
        )
        forecast["_place"] = place
        return forecast

    async def get_json(
        self, c: httpx.AsyncClient, url: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """GET `url` with `params` merged into its query; return the JSON object it answers."""
        import httpx

        service = self.service
        try:
            # Merge rather than pass params=: httpx would drop a query already in the URL
            # (e.g. the apikey of Open-Meteo's commercial endpoints).
            response = await c.get(httpx.URL(url).copy_merge_params(params), timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise ToolRetry(describe_http_error(exc, service, self.timeout)) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            # Open-Meteo explains refusals as {"error": true, "reason": "..."}.
            reason = body.get("reason") if isinstance(body, dict) else None
            detail = f": {reason}" if reason else "; try again later"
            raise ToolRetry(f"{service} answered HTTP {response.status_code}{detail}")
        if not isinstance(body, dict):
            raise ToolRetry(f"{service} sent a reply that is not a JSON object")
        return body


def _current_report(data: dict[str, Any], units: str) -> dict[str, Any]:
    """Turn a forecast reply with current conditions into `get_weather`'s result."""
    current = data.get("current")
    if not isinstance(current, dict):
        raise ToolRetry("the weather service sent no current conditions; try again later")
    cu = data.get("current_units") or {}
    defaults = _DEFAULT_UNITS[units]
    out: dict[str, Any] = {
        "location": _place_label(data["_place"]),
        "time": current.get("time"),
        "timezone": data.get("timezone"),
        "conditions": describe_weather_code(current.get("weather_code")),
        "temperature": _with_unit(
            current.get("temperature_2m"), cu.get("temperature_2m", defaults["temp"])
        ),
        "feels_like": _with_unit(
            current.get("apparent_temperature"),
            cu.get("apparent_temperature", defaults["temp"]),
        ),
        "humidity": _with_unit(
            current.get("relative_humidity_2m"), cu.get("relative_humidity_2m", "%")
        ),
        "wind": _with_unit(
            current.get("wind_speed_10m"), cu.get("wind_speed_10m", defaults["wind"])
        ),
    }
    return {k: v for k, v in out.items() if v is not None}


def _column(daily: dict[str, Any], name: str) -> list[Any]:
    values = daily.get(name)
    return values if isinstance(values, list) else []


def _at(values: list[Any], i: int) -> Any:
    return values[i] if i < len(values) else None


def _forecast_report(data: dict[str, Any], days: int, units: str) -> dict[str, Any]:
    """Turn a forecast reply with daily values into `get_forecast`'s result."""
    daily = data.get("daily")
    if not isinstance(daily, dict) or not isinstance(daily.get("time"), list):
        raise ToolRetry("the weather service sent no daily forecast; try again later")
    du = data.get("daily_units") or {}
    defaults = _DEFAULT_UNITS[units]
    codes, highs = _column(daily, "weather_code"), _column(daily, "temperature_2m_max")
    lows, rain = _column(daily, "temperature_2m_min"), _column(daily, "precipitation_sum")
    forecast = []
    for i, date in enumerate(daily["time"][:days]):
        day = {
            "date": date,
            "conditions": describe_weather_code(_at(codes, i)),
            "high": _with_unit(_at(highs, i), du.get("temperature_2m_max", defaults["temp"])),
            "low": _with_unit(_at(lows, i), du.get("temperature_2m_min", defaults["temp"])),
            "precipitation": _with_unit(
                _at(rain, i), du.get("precipitation_sum", defaults["precip"])
            ),
        }
        forecast.append({k: v for k, v in day.items() if v is not None})
    return {
        "location": _place_label(data["_place"]),
        "timezone": data.get("timezone"),
        "days": forecast,
    }


def make_weather_tools(
    geocoding_url: str = GEOCODING_URL,
    forecast_url: str = FORECAST_URL,
    client: httpx.AsyncClient | None = None,
    timeout: float = 10.0,
) -> tuple[Tool, Tool]:
    """Build the `get_weather` and `get_forecast` tools around Open-Meteo-compatible endpoints.

    Args:
        geocoding_url: The geocoding search endpoint.
        forecast_url: The forecast endpoint.
        client: An httpx client to send requests with; the caller keeps ownership. By default
            each call opens and closes its own client.
        timeout: Seconds each request may take.

    Returns:
        `(get_weather, get_forecast)`.
    """
    api = _OpenMeteo(geocoding_url, forecast_url, client, timeout)

    @tool(name="get_weather", timeout=3 * timeout)
    async def get_weather(
        city: Annotated[str, Field(min_length=1, max_length=200)],
        units: Literal["metric", "imperial"] = "metric",
    ) -> dict[str, Any]:
        """Get the current weather in a city: conditions, temperature, humidity and wind.

        Args:
            city: The city name, e.g. "Berlin" or "San Francisco".
            units: "metric" (°C, km/h) or "imperial" (°F, mph).
        """
        data = await api.fetch(city, {"current": CURRENT_VARIABLES, **_unit_params(units)})
        return _current_report(data, units)

    @tool(name="get_forecast", timeout=3 * timeout)
    async def get_forecast(
        city: Annotated[str, Field(min_length=1, max_length=200)],
        days: Annotated[int, Field(ge=1, le=16)] = 3,
        units: Literal["metric", "imperial"] = "metric",
    ) -> dict[str, Any]:
        """Get the daily weather forecast for a city: conditions, high, low and precipitation.

        Args:
            city: The city name, e.g. "Berlin" or "San Francisco".
            days: How many days, starting today (1-16).
            units: "metric" (°C, mm) or "imperial" (°F, inch).
        """
        data = await api.fetch(
            city, {"daily": DAILY_VARIABLES, "forecast_days": days, **_unit_params(units)}
        )
        return _forecast_report(data, days, units)

    return get_weather, get_forecast


get_weather, get_forecast = make_weather_tools()
