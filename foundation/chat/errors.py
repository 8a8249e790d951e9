"""Typed errors of the chat package: bad conversations, bad completions, bad token ids."""

from __future__ import annotations


class ChatFormatError(ValueError):
    """Base class for every error raised by foundation.chat on bad input."""


class MessageFormatError(ChatFormatError):
    """A message list cannot be rendered (unknown role, wrong field type, missing content...)."""


class UnknownModeError(ChatFormatError):
    """A mode string is not one of non-think, think-high, think-max."""


class UnknownTokenError(ChatFormatError):
    """A token id is outside the tokenizer's vocabulary."""


class SessionStateError(ChatFormatError):
    """An incremental session was driven out of order (e.g. two turns with no reply between)."""


class DSMLParseError(ChatFormatError):
    """A completion is malformed: broken DSML tool-call markup or a stray special token.

    Attributes:
        unparsed_text: the raw completion text from the first character that was not emitted
            as reasoning or content text (it includes the raw text of a tool-call block), so a
            caller can fall back to showing it instead of losing it.
    """

    def __init__(self, message: str, unparsed_text: str = "") -> None:
        super().__init__(message)
        self.unparsed_text = unparsed_text
