"""LangChain / LangGraph on the model worker's gRPC API (the `langchain` extra): `ChatDeepSeekV4`, a chat model with
streaming, tools and structured output by constrained decoding, the reasoning modes, and worker sessions kept per
LangGraph thread."""

from integrations.langchain.chat_model import ChatDeepSeekV4
from integrations.langchain.convert import UnsupportedContent

__all__ = ["ChatDeepSeekV4", "UnsupportedContent"]
