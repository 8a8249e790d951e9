"""DeepSeek-V4 chat layer: tokenizer, prompt encoding, completion parsing, append-only sessions."""

from foundation.chat.encoding import encode_prompt, render_prompt
from foundation.chat.errors import (
    ChatFormatError,
    DSMLParseError,
    MessageFormatError,
    SessionStateError,
    UnknownModeError,
    UnknownTokenError,
)
from foundation.chat.incremental import ChatSession, RenderedPiece, SessionHead, render_session
from foundation.chat.parsing import (
    ContentDelta,
    ParsedCompletion,
    ReasoningDelta,
    StreamingParser,
    ToolCallEvent,
    parse_completion,
)
from foundation.chat.protocol import ChatMode
from foundation.chat.tokenizer import IncrementalDetokenizer, Tokenizer, load_tokenizer

__all__ = [
    "ChatFormatError",
    "ChatMode",
    "ChatSession",
    "ContentDelta",
    "DSMLParseError",
    "IncrementalDetokenizer",
    "MessageFormatError",
    "ParsedCompletion",
    "ReasoningDelta",
    "RenderedPiece",
    "SessionHead",
    "SessionStateError",
    "StreamingParser",
    "Tokenizer",
    "ToolCallEvent",
    "UnknownModeError",
    "UnknownTokenError",
    "encode_prompt",
    "load_tokenizer",
    "parse_completion",
    "render_prompt",
    "render_session",
]
