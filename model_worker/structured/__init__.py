"""Structured output: tool_choice and response_format enforced by constrained decoding (llguidance grammars over
DeepSeek-V4's DSML tool-call markup and JSON schemas). The supported schema subset is in docs/structured-output.md."""

from model_worker.structured.constraint import ConstraintViolation, GrammarCompiler, OutputConstraint
from model_worker.structured.reply_grammar import TOOL_CHOICES, ReplySpec, reply_grammar
from model_worker.structured.values import UnsupportedSchema

__all__ = ["TOOL_CHOICES", "ConstraintViolation", "GrammarCompiler", "OutputConstraint", "ReplySpec",
           "UnsupportedSchema", "reply_grammar"]
