"""A weather bot: the get_weather/get_forecast built-ins and the shipped `weather_bot` template.

Run it against DashScope:

    DASHSCOPE_API_KEY=... python examples/weather_bot.py "Will it rain in Paris this week?"

Any other endpoint works through QWENLOOP_PROVIDER, QWENLOOP_BASE_URL, QWENLOOP_API_KEY and
QWENLOOP_MODEL. The weather comes from Open-Meteo (free, no key); point the tools at another
Open-Meteo-compatible server with QWENLOOP_OPEN_METEO_GEOCODING_URL and
QWENLOOP_OPEN_METEO_FORECAST_URL.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from agent import Agent, AgentError, Template, Tool
from tools.weather import FORECAST_URL, GEOCODING_URL, make_weather_tools

DEFAULT_QUESTION = "What's the weather in Berlin?"


def weather_tools() -> tuple[Tool, Tool]:
    """Return get_weather and get_forecast, talking to the Open-Meteo URLs the environment names."""
    return make_weather_tools(
        geocoding_url=os.environ.get("QWENLOOP_OPEN_METEO_GEOCODING_URL", GEOCODING_URL),
        forecast_url=os.environ.get("QWENLOOP_OPEN_METEO_FORECAST_URL", FORECAST_URL),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Ask a weather question.")
    parser.add_argument("question", nargs="*", help=f"default: {DEFAULT_QUESTION!r}")
    parser.add_argument("--units", choices=["metric", "imperial"], default="metric")
    args = parser.parse_args(argv)
    question = " ".join(args.question) or DEFAULT_QUESTION

    try:
        agent = Agent(
            provider=os.environ.get("QWENLOOP_PROVIDER", "dashscope"),
            tools=weather_tools(),
            instructions=Template(name="weather_bot", variables={"units": args.units}),
        )
        result = agent.run_sync(question)
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    for call in result.tool_calls:
        arguments = json.dumps(call.arguments, ensure_ascii=False)
        outcome = f"error: {call.error}" if call.error is not None else call.result
        print(f"[tool] {call.name} {arguments} -> {outcome}")
    print(result.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
