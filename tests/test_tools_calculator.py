"""The calculator: results, refusals, and a property test against Python's own arithmetic."""

from __future__ import annotations

import math
import re
import time
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.tool import ToolRetry
from tools.calculator import (
    _CONSTANTS,
    _FUNCTIONS,
    CalculatorError,
    calculator,
    evaluate,
    format_number,
)


async def calc(expression: str) -> Any:
    return await calculator.invoke(calculator.validate({"expression": expression}))


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("2 ** 10", "1024"),
        ("2 ^ 10", "1024"),
        ("-3 ** 2", "-9"),
        ("7 // 2", "3"),
        ("-7 // 2", "-4"),
        ("7 % 3", "1"),
        ("7 / 2", "3.5"),
        ("4 / 2", "2"),
        ("0.1 + 0.2", "0.3"),
        ("1 / 3", "0.333333333333333"),
        ("2 ** 100", "1267650600228229401496703205376"),
        ("factorial(20)", "2432902008176640000"),
        ("sqrt(16)", "4"),
        ("sqrt(2)", "1.4142135623731"),
        ("round(pi, 3)", "3.142"),
        ("round(2.5)", "2"),
        ("log(e)", "1"),
        ("log(8, 2)", "3"),
        ("log10(1000)", "3"),
        ("floor(-2.5) + ceil(2.1)", "0"),
        ("abs(-5) + fabs(-1.5)", "6.5"),
        ("hypot(3, 4)", "5"),
        ("degrees(pi)", "180"),
        ("sin(radians(30))", "0.5"),
        ("max(1, 5, 3) - min(4, 2)", "3"),
        ("1e300 * 1e300", "inf"),
        ("-inf", "-inf"),
        ("1e100", "1e+100"),
        ("  12  ", "12"),
    ],
)
async def test_results(expression: str, expected: str) -> None:
    assert await calc(expression) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os')", "function '__import__' is not allowed"),
        ("().__class__", "attribute access not allowed"),
        ("(1).__class__", "attribute access not allowed"),
        ("a", "unknown name 'a'"),
        ("os.system('ls')", "attribute access"),
        ("open('/etc/passwd')", "function 'open' is not allowed"),
        ("[x for x in range(9)]", "comprehensions not allowed"),
        ("lambda: 1", "lambdas not allowed"),
        ("(1, 2)", "tuples not allowed"),
        ("[1][0]", "not allowed"),
        ("'a' * 3", "is not a number"),
        ("1 < 2", "comparisons not allowed"),
        ("1 if 1 else 2", "conditional expressions not allowed"),
        ("True + 1", "is not a number"),
        ("1j * 2", "complex"),
        ("(-8) ** (1/3)", "complex"),
        ("sqrt", "is a function: call it"),
        ("sqrt(x=4)", "no keyword arguments"),
        ("sqrt(1, 2)", "takes 1 arguments, got 2"),
        ("max(3)", "takes 2 or more arguments"),
        ("1 / 0", "division by zero"),
        ("1 // 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("sqrt(-1)", "sqrt() cannot take these arguments"),
        ("log(0)", "log() cannot take these arguments"),
        ("exp(1000)", "too large"),
        ("10.0 ** 400", "too large"),
        ("factorial(-1)", "negative"),
        ("factorial(2.5)", "whole number"),
        ("factorial(10**6)", "limited to n <= 1000"),
        ("round(1.5, 10**6)", "at most 1000 digits"),
        ("1 +", "not a valid expression"),
        ("", "empty"),
        ("x = 1", "not a valid expression"),
        ("1" * 1001, "longer than 1000 characters"),
        ("+".join(["1"] * 200), "too complex"),
        ("(" * 300 + "1" + ")" * 300, "not a valid expression"),
    ],
)
async def test_refusals(expression: str, message: str) -> None:
    with pytest.raises(CalculatorError, match=re.escape(message)):
        await calc(expression)


@pytest.mark.parametrize(
    "expression",
    [
        "2**10**10",
        "9**9**9",
        "10**100000",
        "(10**4000) * (10**4000)",
        "factorial(1000) * factorial(1000)",
        "2 ** (2 ** 100)",
        "(-3) ** 99999",
    ],
)
async def test_huge_results_are_refused_quickly(expression: str) -> None:
    started = time.perf_counter()
    with pytest.raises(CalculatorError, match="too large"):
        await calc(expression)
    assert time.perf_counter() - started < 0.5


async def test_large_but_allowed_results_are_exact() -> None:
    assert await calc("2 ** 13000") == str(2**13000)
    assert await calc("factorial(1000)") == str(math.factorial(1000))
    assert await calc("1 ** (10 ** 100)") == "1"
    assert await calc("(-1) ** (10 ** 100 + 1)") == "-1"


def test_calculator_error_is_a_tool_retry() -> None:
    assert issubclass(CalculatorError, ToolRetry)


def test_format_number() -> None:
    assert format_number(3) == "3"
    assert format_number(2.0) == "2"
    assert format_number(-0.0) == "0"
    assert format_number(1e-7) == "1e-07"
    assert format_number(float("nan")) == "nan"
    assert format_number(10**30) == "1" + "0" * 30


def test_schema() -> None:
    fn = calculator.openai_schema()["function"]
    assert fn["name"] == "calculator"
    assert fn["parameters"]["required"] == ["expression"]
    assert "sqrt" in fn["description"]


# --- property test: same answer as Python, or the tool's own error, and never slow ----------

_SAFE_FUNCS = ["sqrt", "abs", "floor", "ceil", "sin", "cos", "exp", "log", "round", "factorial"]

_numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=0, max_value=12),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from(["pi", "e", "tau"]),
).map(lambda v: v if isinstance(v, str) else repr(v))


def _extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(children, st.sampled_from(["+", "-", "*", "/", "//", "%", "**"]), children)
    return st.one_of(
        binary.map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        children.map(lambda c: f"-{c}"),
        st.tuples(st.sampled_from(_SAFE_FUNCS), children).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(st.sampled_from(["min", "max", "hypot"]), children, children).map(
            lambda t: f"{t[0]}({t[1]}, {t[2]})"
        ),
    )


expressions = st.recursive(_numbers, _extend, max_leaves=12)

# Python evaluates with the very same functions, so any difference is the evaluator's fault.
_NAMESPACE: dict[str, Any] = {name: spec[0] for name, spec in _FUNCTIONS.items()}
_NAMESPACE.update(_CONSTANTS)


def _same(a: float, b: float) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b and type(a) is type(b)


@settings(max_examples=400, deadline=timedelta(milliseconds=500))
@given(expressions)
def test_matches_python_or_refuses(expression: str) -> None:
    started = time.perf_counter()
    try:
        ours = evaluate(expression)
    except CalculatorError:
        # Refused: Python itself might hang on it, so it is not evaluated here.
        return
    finally:
        assert time.perf_counter() - started < 0.5
    # What the evaluator accepted is bounded, so Python's eval of it is quick too.
    theirs = eval(expression, {"__builtins__": {}}, dict(_NAMESPACE))
    assert _same(ours, theirs), (expression, ours, theirs)
    assert calculator(expression) == format_number(ours)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("15% * 2480 + 17", "389"),
        ("2480 * 15%", "372"),
        ("(7%) * 12500", "875"),
        ("5%", "0.05"),
        ("15 % 4", "3"),  # an operand follows: a remainder, as in Python
        ("10 %(3)", "1"),
    ],
)
def test_a_percent_sign_without_an_operand_after_it_is_a_percentage(
    expression: str, expected: str
) -> None:
    assert format_number(evaluate(expression)) == expected
