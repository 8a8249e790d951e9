"""A calculator tool: arithmetic expressions evaluated from their syntax tree, never `eval`: numbers, + - * / // % **,
parentheses and a few math functions and constants; huge powers and long inputs are refused."""

from __future__ import annotations

import ast
import math
import operator

MAX_EXPRESSION = 500
MAX_EXPONENT = 10_000
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
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"exponent {right} is larger than {MAX_EXPONENT}")
        if isinstance(node.op, ast.Mult) and max(_digits(left), _digits(right)) > MAX_EXPONENT:
            raise ValueError("operands too large")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS \
            and not node.keywords:
        args = [_evaluate(a) for a in node.args]
        if node.func.id == "factorial" and args and args[0] > 1000:
            raise ValueError("factorial of more than 1000")
        return _FUNCTIONS[node.func.id](*args)
    raise ValueError(f"unsupported in an arithmetic expression: {ast.unparse(node)[:40]!r}")


def _digits(value: int | float) -> int:
    return len(str(int(abs(value)))) if isinstance(value, int) else 0
