"""A calculator tool: arithmetic expressions evaluated from their syntax tree, never `eval`: numbers, + - * / // % **,
parentheses and a few math functions and constants. Every integer it would build is bounded before it is built: a
power's or a product's size is known from its operands' bit lengths, so `(9**9999)**9999` is refused at once rather
than computed for minutes (a big-integer operation does not let go of the interpreter lock)."""

from __future__ import annotations

import ast
import math
import operator

MAX_EXPRESSION = 500
MAX_EXPONENT = 10_000
# Every integer result fits in this many bits (~3,900 decimal digits, so it also prints: Python refuses to convert
# integers of more than 4,300 digits to text).
MAX_INT_BITS = 13_000
MAX_FACTORIAL = 1000
MAX_ROUND_DIGITS = 4000
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {name: getattr(math, name) for name in ("sqrt", "exp", "log", "log10", "log2", "sin", "cos", "tan",
                                                     "asin", "acos", "atan", "floor", "ceil", "factorial")}
_FUNCTIONS.update(abs=abs, round=round, min=min, max=max)
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression, e.g. "2 * (3 + 4) ** 2" or "sqrt(2) / 3"."""
    if len(expression) > MAX_EXPRESSION:
        raise ValueError(f"expression longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {exc.msg}") from None
    value = _evaluate(tree.body)
    return repr(value) if isinstance(value, float) else str(value)


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return _bounded(node.value)
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        if isinstance(node.op, ast.Mult) and isinstance(left, int) and isinstance(right, int):
            _check_bits(left.bit_length() + right.bit_length())
        return _bounded(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS \
            and not node.keywords:
        args = [_evaluate(a) for a in node.args]
        if node.func.id == "factorial" and args and args[0] > MAX_FACTORIAL:
            raise ValueError(f"factorial of more than {MAX_FACTORIAL}")
        if node.func.id == "round" and len(args) > 1 and abs(args[1]) > MAX_ROUND_DIGITS:
            raise ValueError(f"round to more than {MAX_ROUND_DIGITS} digits")  # round(1, -n) computes 10 ** n
        return _bounded(_FUNCTIONS[node.func.id](*args))
    raise ValueError(f"unsupported in an arithmetic expression: {ast.unparse(node)[:40]!r}")


def _check_power(base: int | float, exponent: int | float) -> None:
    if abs(exponent) > MAX_EXPONENT:
        raise ValueError(f"exponent {exponent} is larger than {MAX_EXPONENT}")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        _check_bits((abs(base).bit_length() - 1) * exponent + 1)  # at least this many bits


def _check_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise ValueError(f"the result is too large (over {MAX_INT_BITS} bits)")


def _bounded(value):
    """Integers past the bound (a sum of two bounded ones can be one bit longer) are refused as they appear."""
    if isinstance(value, int):
        _check_bits(value.bit_length())
    return value
