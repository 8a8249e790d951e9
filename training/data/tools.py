"""The tools the synthetic agent knows (OpenAI function schemas) and what they return."""

from __future__ import annotations

import ast
import operator
from fractions import Fraction


def _tool(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required, "additionalProperties": False}}}


CALCULATOR = _tool("calculator", "Evaluate an arithmetic expression exactly (+, -, *, / and parentheses).",
                   {"expression": {"type": "string"}}, ["expression"])
REMEMBER = _tool("remember", "Store a value under a key for later in this session.",
                 {"key": {"type": "string"}, "value": {"type": "string"}}, ["key", "value"])
RECALL = _tool("recall", "Return the value stored under a key.", {"key": {"type": "string"}}, ["key"])
WEATHER = _tool("weather", "Current weather of a city.", {"city": {"type": "string"}}, ["city"])
ALL_TOOLS = (CALCULATOR, REMEMBER, RECALL, WEATHER)

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def calculate(expression: str) -> str:
    """The calculator's result: exact rational arithmetic, printed as an integer or a decimal of up to 6 places."""
    def value(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        raise ValueError(f"not arithmetic: {expression!r}")

    result = value(ast.parse(expression, mode="eval"))
    if result.denominator == 1:
        return str(result.numerator)
    return f"{float(result):.6f}".rstrip("0").rstrip(".")
