"""`with_structured_output` on the worker's constrained decoding: the reply's content matches a JSON schema
(`json_schema`, the default; `json_mode`: any JSON object), or the reply is exactly one call of the schema as a tool
(`function_calling`). Either way the worker's grammar enforces the shape, whatever the weights; only a reply cut
off by max_tokens can fail to parse."""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

Method = Literal["json_schema", "function_calling", "json_mode"]
METHODS = ("json_schema", "function_calling", "json_mode")


def _is_pydantic(schema: Any) -> bool:
    return isinstance(schema, type) and is_basemodel_subclass(schema)


def structured_output(model: BaseChatModel, schema: dict[str, Any] | type, method: Method,
                      include_raw: bool) -> Runnable:
    """The model bound to produce `schema`, piped into its parser (with `include_raw`: {raw, parsed,
    parsing_error})."""
    if method not in METHODS:
        raise ValueError(f"method: one of {', '.join(METHODS)}, not {method!r}")
    # What LangChain's callbacks record as the requested format (its tracing and the standard tests read it).
    traced = {"ls_structured_output_format": {"kwargs": {"method": method}, "schema": schema}}
    if method == "function_calling":
        name = convert_to_openai_tool(schema)["function"]["name"]
        bound = model.bind_tools([schema], tool_choice=name, **traced)
        parser: Runnable = (PydanticToolsParser(tools=[schema], first_tool_only=True) if _is_pydantic(schema)
                            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True))
    else:
        response_format = convert_to_json_schema(schema) if method == "json_schema" else {"type": "object"}
        bound = model.bind(response_format=response_format, **traced)
        parser = PydanticOutputParser(pydantic_object=schema) if _is_pydantic(schema) else JsonOutputParser()
    if not include_raw:
        return bound | parser
    parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=bound) | parsed.with_fallbacks([unparsed], exception_key="parsing_error")
