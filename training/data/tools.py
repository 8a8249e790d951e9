"""The tools the synthetic agent knows (OpenAI function schemas) and what they return."""

from __future__ import annotations

import ast
import operator


def _tool(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required, "additionalProperties": False}}}


# The agent runtime's own built-ins (agent_runtime/tools/builtins.py), word for word, so the model is trained on the
# tool block the platform's agent sessions render (tests/training/test_data.py compares them).
CALCULATOR = _tool("calculator", 'Evaluate an arithmetic expression, e.g. "2 * (3 + 4) ** 2" or "sqrt(2) / 3".',
                   {"expression": {"type": "string"}}, ["expression"])
REMEMBER = _tool("remember", "Store a value under a key, replacing what was there.",
                 {"key": {"type": "string"}, "value": {"type": "string"}}, ["key", "value"])
RECALL = _tool("recall", "The value stored under a key.", {"key": {"type": "string"}}, ["key"])
WEATHER = _tool("weather", "Current weather of a city.", {"city": {"type": "string"}}, ["city"])
ALL_TOOLS = (CALCULATOR, REMEMBER, RECALL, WEATHER)

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def calculate(expression: str) -> str:
    """What the agent runtime's calculator returns for these expressions: Python's int and float arithmetic (a
    division gives a float), a float written as `repr` writes it."""
    def value(node: ast.AST) -> int | float:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        raise ValueError(f"not arithmetic: {expression!r}")

    result = value(ast.parse(expression, mode="eval"))
    return repr(result) if isinstance(result, float) else str(result)
