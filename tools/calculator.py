"""The `calculator` tool: safe arithmetic on a whitelisted subset of Python expressions.

The expression is parsed with `ast` and walked by hand; nothing is ever passed to `eval`. Every
integer result is bounded in size before it is computed, so no input can hang the process.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from typing import Any

from agent.tool import ToolRetry, tool

__all__ = ["CalculatorError", "calculator", "evaluate", "format_number"]

MAX_EXPRESSION_CHARS = 1000
MAX_NODES = 300
MAX_INT_BITS = 14_000
"""About 4200 decimal digits: below Python's 4300-digit str() limit, and cheap to multiply."""
MAX_FACTORIAL = 1000
MAX_ROUND_DIGITS = 1000

Number = int | float


class CalculatorError(ToolRetry):
    """The expression cannot be evaluated; the message says why."""


_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf}


def _factorial(n: Number) -> int:
    if isinstance(n, float):
        if not n.is_integer():
            raise CalculatorError(f"factorial() needs a whole number, got {n!r}")
        n = int(n)
    if n < 0:
        raise CalculatorError("factorial() is not defined for negative numbers")
    if n > MAX_FACTORIAL:
        raise CalculatorError(f"factorial() is limited to n <= {MAX_FACTORIAL}, got {n}")
    return math.factorial(n)


def _round(x: Number, ndigits: Number | None = None) -> Number:
    if ndigits is None:
        return round(x)
    if not isinstance(ndigits, int):
        raise CalculatorError("round()'s second argument must be a whole number")
    if abs(ndigits) > MAX_ROUND_DIGITS:
        raise CalculatorError(f"round() takes at most {MAX_ROUND_DIGITS} digits")
    return round(x, ndigits)


def _log(x: Number, base: Number | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


def _minmax(fn: Callable[..., Number]) -> Callable[..., Number]:
    def call(*args: Number) -> Number:
        if len(args) < 2:
            raise CalculatorError(f"{fn.__name__}() needs at least two numbers")
        return fn(*args)

    return call


# name -> (function, min args, max args or None for any number)
_FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int | None]] = {
    "sqrt": (math.sqrt, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
    "asin": (math.asin, 1, 1),
    "acos": (math.acos, 1, 1),
    "atan": (math.atan, 1, 1),
    "atan2": (math.atan2, 2, 2),
    "sinh": (math.sinh, 1, 1),
    "cosh": (math.cosh, 1, 1),
    "tanh": (math.tanh, 1, 1),
    "log": (_log, 1, 2),
    "ln": (math.log, 1, 1),
    "log10": (math.log10, 1, 1),
    "log2": (math.log2, 1, 1),
    "exp": (math.exp, 1, 1),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "trunc": (math.trunc, 1, 1),
    "fabs": (math.fabs, 1, 1),
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "factorial": (_factorial, 1, 1),
    "hypot": (math.hypot, 1, None),
    "degrees": (math.degrees, 1, 1),
    "radians": (math.radians, 1, 1),
    "min": (_minmax(min), 2, None),
    "max": (_minmax(max), 2, None),
}

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_SYMBOLS = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}

_ALLOWED = (
    "numbers, + - * / // % **, parentheses, the constants pi, e, tau, inf and the functions "
    + ", ".join(sorted(_FUNCTIONS))
)

_REFUSED_NODES: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.Lambda: "lambdas",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.Compare: "comparisons",
    ast.BoolOp: "and/or",
    ast.IfExp: "conditional expressions",
    ast.NamedExpr: "assignment",
    ast.Tuple: "tuples",
    ast.List: "lists",
    ast.Set: "sets",
    ast.Dict: "dicts",
    ast.JoinedStr: "strings",
    ast.Starred: "*-unpacking",
    ast.Await: "await",
}


def _too_big() -> CalculatorError:
    return CalculatorError(
        f"the result would be too large (over {MAX_INT_BITS} bits, about 4200 digits)"
    )


def _check_number(value: Any) -> Number:
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, complex):
            raise CalculatorError("the result is a complex number, which is not supported")
        raise CalculatorError(f"unexpected value {value!r}")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise _too_big()
    return value


def _int_pow_bits(base: int, exp: int) -> float:
    """Estimate the bit length of base ** exp for ints with exp > 0 and |base| > 1."""
    return exp * math.log2(abs(base))


def _binop(op: ast.operator, left: Number, right: Number) -> Number:
    if isinstance(left, int) and isinstance(right, int):
        if isinstance(op, ast.Pow) and right > 0 and abs(left) > 1:
            if _int_pow_bits(left, right) > MAX_INT_BITS:
                raise _too_big()
        elif isinstance(op, ast.Mult) and left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            # Both non-zero (implied by the bit lengths), so the product has at least
            # left_bits + right_bits - 1 bits.
            raise _too_big()
    fn = _BINOPS[type(op)]
    return _check_number(fn(left, right))


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float | complex):
            raise CalculatorError(f"{value!r} is not a number; only {_ALLOWED} are allowed")
        return _check_number(value)
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand)
        if isinstance(node.op, ast.USub):
            return -operand
        if isinstance(node.op, ast.UAdd):
            return +operand
        raise CalculatorError("only unary + and - are allowed")
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            raise CalculatorError(f"operator not allowed; only {_ALLOWED} are allowed")
        left = _eval(node.left)
        right = _eval(node.right)
        try:
            return _binop(node.op, left, right)
        except ZeroDivisionError as exc:
            raise CalculatorError(f"division by zero ({exc})") from exc
        except OverflowError as exc:
            sym = _SYMBOLS.get(type(node.op), "?")
            raise CalculatorError(f"the result of {sym} is too large ({exc})") from exc
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if node.id in _FUNCTIONS:
            raise CalculatorError(f"{node.id} is a function: call it, e.g. {node.id}(2)")
        raise CalculatorError(f"unknown name {node.id!r}; allowed are {_ALLOWED}")
    if isinstance(node, ast.Call):
        return _call(node)
    what = _REFUSED_NODES.get(type(node), type(node).__name__)
    raise CalculatorError(f"{what} not allowed; only {_ALLOWED} are allowed")


def _call(node: ast.Call) -> Number:
    if not isinstance(node.func, ast.Name):
        what = _REFUSED_NODES.get(type(node.func), "calling this")
        raise CalculatorError(f"{what} not allowed; only {_ALLOWED} are allowed")
    name = node.func.id
    if name not in _FUNCTIONS:
        raise CalculatorError(f"function {name!r} is not allowed; allowed are {_ALLOWED}")
    if node.keywords:
        raise CalculatorError(f"{name}() takes no keyword arguments")
    fn, lo, hi = _FUNCTIONS[name]
    if len(node.args) < lo or (hi is not None and len(node.args) > hi):
        want = f"{lo}" if lo == hi else f"{lo} or more" if hi is None else f"{lo} to {hi}"
        raise CalculatorError(f"{name}() takes {want} arguments, got {len(node.args)}")
    args = [_eval(a) for a in node.args]
    try:
        return _check_number(fn(*args))
    except CalculatorError:
        raise
    except ZeroDivisionError as exc:
        raise CalculatorError(f"division by zero in {name}() ({exc})") from exc
    except OverflowError as exc:
        raise CalculatorError(f"the result of {name}() is too large ({exc})") from exc
    except (ValueError, TypeError) as exc:
        raise CalculatorError(f"{name}() cannot take these arguments ({exc})") from exc


def _parse(text: str) -> ast.Expression:
    return ast.parse(text, mode="eval")


_PERCENT = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*%(?!\s*[\w.(])")


def evaluate(expression: str) -> Number:
    """Evaluate an arithmetic expression and return the exact Python number.

    A "%" is Python's remainder wherever Python reads it so; in an expression Python cannot
    read, a "%" with no operand after it is a percent sign ("15% * 2480" is 0.15 * 2480).

    Args:
        expression: E.g. "2 * (3 + 4) ** 2" or "sqrt(2) / 2".

    Returns:
        An int or float, equal to what Python itself would compute for the same expression.

    Raises:
        CalculatorError: For anything outside the whitelist, invalid syntax, division by zero,
            domain errors, or results too large to compute quickly.
    """
    text = expression.strip()
    if not text:
        raise CalculatorError("the expression is empty")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    # "^" is XOR in Python, but people (and models) mean a power.
    text = text.replace("^", "**")
    try:
        tree = _parse(text)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        # Not Python: a "%" with no operand after it is a percent sign ("15% * 2480").
        try:
            tree = _parse(_PERCENT.sub(r"(\1/100)", text))
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            msg = getattr(exc, "msg", None) or str(exc)
            raise CalculatorError(f"not a valid expression: {msg}") from exc
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_NODES:
        raise CalculatorError(f"the expression is too complex ({nodes} parts, limit {MAX_NODES})")
    try:
        return _eval(tree)
    except RecursionError as exc:  # pragma: no cover - MAX_NODES keeps the tree shallow
        raise CalculatorError("the expression is nested too deeply") from exc


def format_number(value: Number) -> str:
    """Format a result for the model.

    Integers are printed exactly. Floats are printed with up to 15 significant digits, which
    hides binary rounding noise (0.1 + 0.2 gives "0.3", not "0.30000000000000004"); a float that
    is a whole number loses its ".0" ("4/2" gives "2"). Very large or small floats use
    exponent notation ("1e+100").

    Args:
        value: An int or float.
    """
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = format(value, ".15g")
    return "0" if text == "-0" else text


@tool(timeout=5)
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly: use it for every calculation and conversion.

    Supports + - * / // % ** (or ^), percentages (N% is N/100), parentheses, pi, e, tau, and
    the functions sqrt, sin, cos, tan, asin, acos, atan, atan2, sinh, cosh, tanh, log (natural,
    or log(x, base)), ln, log10, log2, exp, floor, ceil, trunc, abs, fabs, round, factorial,
    hypot, degrees, radians, min, max. Angles are in radians. Integers are exact; decimals show
    up to 15 significant digits.

    Args:
        expression: The expression to evaluate.
    """
    return format_number(evaluate(expression))
