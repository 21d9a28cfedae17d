"""get_weather / get_forecast against a local server replaying recorded Open-Meteo shapes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest

from agent.tool import Tool, ToolRetry
from tests.httpfixture import LocalHTTPServer, RecordedRequest, Response
from tools.weather import describe_weather_code, make_weather_tools

FIXTURES = Path(__file__).parent / "fixtures" / "open_meteo"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def json_reply(name: str, status: int = 200) -> Response:
    return status, {"Content-Type": "application/json; charset=utf-8"}, fixture(name)


def geocode(req: RecordedRequest) -> Response:
    name = req.query.get("name", [""])[0]
    known = {"Berlin": "geocoding_berlin.json", "New York": "geocoding_new_york.json"}
    return json_reply(known.get(name, "geocoding_not_found.json"))


def forecast(req: RecordedRequest) -> Response:
    imperial = req.query.get("temperature_unit") == ["fahrenheit"]
    if "daily" in req.query:
        return json_reply("forecast_daily_metric.json")
    return json_reply(
        "forecast_current_imperial.json" if imperial else "forecast_current_metric.json"
    )


@pytest.fixture
def server() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer() as s:
        s.route("/v1/search", handler=geocode)
        s.route("/v1/forecast", handler=forecast)
        yield s


def tools_for(server: LocalHTTPServer, **kw: Any) -> tuple[Tool, Tool]:
    return make_weather_tools(
        geocoding_url=server.url("/v1/search"), forecast_url=server.url("/v1/forecast"), **kw
    )


async def call(t: Tool, **args: Any) -> Any:
    return await t.invoke(t.validate(args))


async def test_current_weather_metric(server: LocalHTTPServer) -> None:
    get_weather, _ = tools_for(server)
    out = await call(get_weather, city="Berlin")
    assert out == {
        "location": "Berlin, Land Berlin, Germany",
        "time": "2025-02-01T17:15",
        "timezone": "Europe/Berlin",
        "conditions": "partly cloudy",
        "temperature": "3.1°C",
        "feels_like": "-0.4°C",
        "humidity": "87%",
        "wind": "4.9 km/h",
    }
    geo, fc = server.requests
    assert geo.path == "/v1/search"
    assert geo.query == {
        "name": ["Berlin"],
        "count": ["1"],
        "language": ["en"],
        "format": ["json"],
    }
    assert fc.query["latitude"] == ["52.52437"]
    assert fc.query["longitude"] == ["13.41053"]
    assert fc.query["timezone"] == ["auto"]
    assert fc.query["current"] == [
        "temperature_2m,relative_humidity_2m,apparent_temperature,weather_code,wind_speed_10m"
    ]
    assert "temperature_unit" not in fc.query
    assert "daily" not in fc.query


async def test_current_weather_imperial_sends_units_and_names_mph(
    server: LocalHTTPServer,
) -> None:
    get_weather, _ = tools_for(server)
    out = await call(get_weather, city="New York", units="imperial")
    fc = server.requests[1]
    assert fc.query["temperature_unit"] == ["fahrenheit"]
    assert fc.query["wind_speed_unit"] == ["mph"]
    assert fc.query["precipitation_unit"] == ["inch"]
    assert out["location"] == "New York, United States"  # admin1 == name is not repeated
    assert out["temperature"] == "64.5°F"
    assert out["wind"] == "6.6 mph"  # Open-Meteo spells it "mp/h"
    assert out["conditions"] == "overcast"


async def test_forecast_days_and_daily_fields(server: LocalHTTPServer) -> None:
    _, get_forecast = tools_for(server)
    out = await call(get_forecast, city="Berlin", days=2)
    fc = server.requests[1]
    assert fc.query["forecast_days"] == ["2"]
    assert fc.query["daily"] == [
        "weather_code,temperature_2m_max,temperature_2m_min,precipitation_sum"
    ]
    assert out == {
        "location": "Berlin, Land Berlin, Germany",
        "timezone": "Europe/Berlin",
        "days": [
            {
                "date": "2025-02-01",
                "conditions": "overcast",
                "high": "5.2°C",
                "low": "-1.3°C",
                "precipitation": "0 mm",
            },
            {
                "date": "2025-02-02",
                "conditions": "slight rain",
                "high": "7°C",
                "low": "1.8°C",
                "precipitation": "2.3 mm",
            },
        ],
    }


async def test_forecast_default_is_three_days(server: LocalHTTPServer) -> None:
    _, get_forecast = tools_for(server)
    out = await call(get_forecast, city="Berlin")
    assert server.requests[1].query["forecast_days"] == ["3"]
    assert [d["conditions"] for d in out["days"]] == ["overcast", "slight rain", "thunderstorm"]


@pytest.mark.parametrize("days", [0, 17, -1])
def test_forecast_days_out_of_range_is_a_validation_error(days: int) -> None:
    _, get_forecast = make_weather_tools()
    with pytest.raises(pydantic.ValidationError):
        get_forecast.validate({"city": "Berlin", "days": days})


def test_units_are_validated() -> None:
    get_weather, _ = make_weather_tools()
    with pytest.raises(pydantic.ValidationError):
        get_weather.validate({"city": "Berlin", "units": "kelvin"})


async def test_unknown_city_names_the_city(server: LocalHTTPServer) -> None:
    get_weather, get_forecast = tools_for(server)
    for t in (get_weather, get_forecast):
        with pytest.raises(ToolRetry, match="unknown city 'Atlantis'"):
            await call(t, city="Atlantis")
    assert server.paths() == ["/v1/search", "/v1/search"]  # no forecast request was made


async def test_http_500_is_a_clear_error(server: LocalHTTPServer) -> None:
    server.route("/v1/forecast", status=500, body=b"<html>Internal Server Error</html>")
    get_weather, _ = tools_for(server)
    with pytest.raises(ToolRetry, match=r"weather service answered HTTP 500; try again later"):
        await call(get_weather, city="Berlin")


async def test_open_meteo_error_reason_is_passed_on(server: LocalHTTPServer) -> None:
    server.route("/v1/forecast", handler=lambda _r: json_reply("forecast_error_400.json", 400))
    _, get_forecast = tools_for(server)
    with pytest.raises(ToolRetry, match=r"HTTP 400: Cannot initialize TemperatureUnit"):
        await call(get_forecast, city="Berlin")


async def test_geocoding_timeout_is_a_clear_error_and_fast(server: LocalHTTPServer) -> None:
    server.route("/v1/search", json={"results": []}, delay=5.0)
    get_weather, _ = tools_for(server, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(ToolRetry, match=r"did not answer within 0.2 s"):
        await call(get_weather, city="Berlin")
    assert time.monotonic() - started < 2


async def test_connection_refused_is_a_clear_error() -> None:
    with LocalHTTPServer() as s:
        dead = s.url("/v1/search")
    get_weather, _ = make_weather_tools(geocoding_url=dead, forecast_url=dead, timeout=2)
    with pytest.raises(ToolRetry, match="could not connect to the weather service"):
        await call(get_weather, city="Berlin")


async def test_non_json_reply_is_a_clear_error(server: LocalHTTPServer) -> None:
    server.route("/v1/forecast", body=b"not json")
    get_weather, _ = tools_for(server)
    with pytest.raises(ToolRetry, match="not a JSON object"):
        await call(get_weather, city="Berlin")


async def test_injected_client_is_used_and_left_open(server: LocalHTTPServer) -> None:
    seen: list[str] = []

    async def log(request: httpx.Request) -> None:
        seen.append(request.url.path)

    async with httpx.AsyncClient(event_hooks={"request": [log]}) as client:
        get_weather, _ = tools_for(server, client=client)
        await call(get_weather, city="Berlin")
        assert not client.is_closed
    assert seen == ["/v1/search", "/v1/forecast"]


async def test_query_in_endpoint_url_is_kept(server: LocalHTTPServer) -> None:
    get_weather, _ = make_weather_tools(
        geocoding_url=server.url("/v1/search?apikey=K"),
        forecast_url=server.url("/v1/forecast?apikey=K"),
    )
    await call(get_weather, city="Berlin")
    assert [r.query["apikey"] for r in server.requests] == [["K"], ["K"]]
    assert server.requests[0].query["name"] == ["Berlin"]


def test_weather_codes() -> None:
    assert describe_weather_code(0) == "clear sky"
    assert describe_weather_code(61.0) == "slight rain"
    assert describe_weather_code(99) == "thunderstorm with heavy hail"
    assert describe_weather_code(42) == "unknown (WMO code 42)"
    assert describe_weather_code(None) == "unknown"


def test_fixtures_are_valid_json() -> None:
    for path in FIXTURES.glob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))


def test_schemas_describe_parameters() -> None:
    get_weather, get_forecast = make_weather_tools()
    fs = get_forecast.openai_schema()["function"]
    assert fs["name"] == "get_forecast"
    assert fs["parameters"]["properties"]["days"]["minimum"] == 1
    assert fs["parameters"]["properties"]["days"]["maximum"] == 16
    assert fs["parameters"]["required"] == ["city"]
    assert get_weather.parameters["properties"]["units"]["enum"] == ["metric", "imperial"]
