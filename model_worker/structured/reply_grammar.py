"""The grammar of one reply, in llguidance's Lark dialect: optional reasoning, then free content, a JSON answer or a
DSML tool-call block, exactly as the official encoder renders an assistant message:

    reasoning </think> content \\n\\n<｜DSML｜tool_calls>\\n<｜DSML｜invoke name="f">\\n
    <｜DSML｜parameter name="p" string="true|false">value</｜DSML｜parameter>\\n ... </｜DSML｜invoke>\\n
    </｜DSML｜tool_calls> EOS

`｜DSML｜` and `</think>` are single tokens, special to the grammar (every added token is): text terminals never match
one, so free text can neither open a tool block nor end reasoning except through the grammar. A text terminal that is
followed by a special token ends with the text right before it ("\\n\\n<", "</"), and no separator is a prefix of
another allowed at the same point (the lexer is greedy: it would take "\\n<" as the start of "\\n</"). EOS is
implicit: the matcher allows it whenever the grammar may end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from foundation.chat.protocol import DSML_ID, THINK_END_ID
from model_worker.structured.values import NO_DSML, UnsupportedSchema, json_value, lit, raw_string_terminal

TOOL_CHOICES = ("auto", "none", "required")


@dataclass(frozen=True)
class ReplySpec:
    """What a reply must look like.

    Attributes:
        thinking: the reply opens inside reasoning (the prompt ends with `<think>`).
        tools: function schemas ({"name", "parameters", ...}) the reply may call.
        tool_choice: "auto", "none", "required" or the name of the one tool to call.
        response_format: a JSON schema the content must match (unless the reply calls tools).
        one_call: at most one call in the reply (OpenAI's parallel_tool_calls false).
    """

    thinking: bool = False
    tools: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    tool_choice: str = "auto"
    response_format: Mapping[str, Any] | None = None
    one_call: bool = False

    @property
    def constrained(self) -> bool:
        """False when nothing is to be enforced: free text with no tools and no format."""
        return self.tool_choice != "auto" or bool(self.tools) or self.response_format is not None


def reply_grammar(spec: ReplySpec) -> str:
    """Lark text for `spec`; raises UnsupportedSchema for a choice or schema that cannot be enforced."""
    rules = _Rules()
    by_name = {_tool_name(t, i): t for i, t in enumerate(spec.tools)}
    choice = spec.tool_choice
    if choice not in TOOL_CHOICES and choice not in by_name:
        raise UnsupportedSchema(f"tool_choice: no tool named {choice!r} (tools: {', '.join(by_name) or 'none'})")
    if choice == "required" and not by_name:
        raise UnsupportedSchema("tool_choice 'required' needs at least one tool")
    forced = choice not in ("auto", "none")
    branches = []
    if not forced:
        if spec.response_format is not None:
            branches.append(rules.add("answer", json_value(spec.response_format, spec.response_format)))
        else:
            branches.append("TEXT")
    if choice != "none" and by_name:
        calls = [by_name[choice]] if choice in by_name else list(by_name.values())
        invokes = " | ".join(_invoke(rules, i, tool) for i, tool in enumerate(calls))
        rules.define("invoke", invokes)
        # One named call, or one call when parallel calls are off; otherwise one or more. The block follows the
        # content after a blank line. Each call ends with its own newline: a separator "\\n" beside a closing "\\n</"
        # would make the lexer take "\\n<" as the start of the longer one.
        repeat = "" if choice in by_name or spec.one_call else "+"
        rules.define("tool_block", f'dsml "tool_calls>\\n" (invoke "\\n"){repeat} "</" dsml "tool_calls>"')
        opening = "TEXT_BEFORE_TOOLS" if choice == "auto" and spec.response_format is None else '"\\n\\n<"'
        branches.append(f"{opening} tool_block")
    reasoning = f"REASONING <[{THINK_END_ID}]> " if spec.thinking else ""
    head = [
        f"start: {reasoning}content",
        f"content: {' | '.join(branches)}",
        f"dsml: <[{DSML_ID}]>",
        "REASONING: /(?s:.*)/",
        NO_DSML,
        "TEXT: NO_DSML",
        'TEXT_BEFORE_TOOLS: NO_DSML "\\n\\n<"',
    ]
    return "\n".join(head + rules.lines) + "\n"


class _Rules:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._count = 0

    def define(self, name: str, body: str) -> str:
        self.lines.append(f"{name}: {body}")
        return name

    def add(self, name: str, body: str, terminal: bool = False) -> str:
        """Define `body` under a new name made from `name` (upper case for a terminal) and return that name."""
        self._count += 1
        unique = f"{name}_{self._count}"
        return self.define(unique.upper() if terminal else unique, body)


def _tool_name(tool: Mapping[str, Any], index: int) -> str:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise UnsupportedSchema(f"tools[{index}]: a tool needs a name")
    return name


def _invoke(rules: _Rules, index: int, tool: Mapping[str, Any]) -> str:
    name = tool["name"]
    schema = tool.get("parameters") or {}
    if not isinstance(schema, Mapping):
        raise UnsupportedSchema(f"tool {name!r}: parameters must be a JSON schema object")
    if schema.get("type", "object") != "object":
        raise UnsupportedSchema(f"tool {name!r}: parameters must be an object schema (DSML passes named arguments)")
    properties = schema.get("properties")
    if properties is not None and not isinstance(properties, Mapping):
        raise UnsupportedSchema(f"tool {name!r}: properties must be an object")
    required = schema.get("required") or []
    if not isinstance(required, list) or not all(isinstance(key, str) for key in required):
        raise UnsupportedSchema(f"tool {name!r}: required must be a list of parameter names")
    if properties is not None or required or schema.get("additionalProperties") is False:
        # Declared order, then required names without a schema (any value); optional parameters may be left out,
        # undeclared ones are never generated (so `properties: {}` is a tool that takes no arguments).
        named = {**(properties or {}), **{key: {} for key in required if key not in (properties or {})}}
        params = " ".join(_parameter(rules, name, key, sub, schema) + ("" if key in required else "?")
                          for key, sub in named.items())
    else:
        params = _parameter(rules, name, None, {}, schema) + "*"
    header = lit(f'invoke name="{name}">\n')
    return rules.add("call", f'"<" dsml {header} {params} "</" dsml "invoke>"')


def _parameter(rules: _Rules, tool: str, key: str | None, schema: Any, root: Mapping[str, Any]) -> str:
    """One `<｜DSML｜parameter ...>value</｜DSML｜parameter>\\n`; `key` None means any name (free-form arguments)."""
    if not isinstance(schema, (Mapping, bool)):
        raise UnsupportedSchema(f"tool {tool!r}, parameter {key!r}: the schema must be an object")
    where = f"tool {tool!r}, parameter {key!r}"
    if key is None:
        name = rules.add("name", '/[^"<>\\n]{1,64}/', terminal=True)
        opening = f'"<" dsml "parameter name=\\"" {name} "\\" string=\\""'
    else:
        opening = '"<" dsml ' + lit(f'parameter name="{key}" string="')
    values = []
    raw = raw_string_terminal(schema, where)
    if raw is not None:
        values.append(f'"true\\">" {rules.add("raw", raw, terminal=True)}')
    json_body = json_value(schema, root, where=where, strings=raw is None)
    if json_body is not None:
        values.append(f'"false\\">" {rules.add("json", json_body)} "</"')
    if not values:
        raise UnsupportedSchema(f"{where}: the schema admits no value")
    return rules.add("param", f'{opening} ({" | ".join(values)}) dsml "parameter>\\n"')
