"""DeepSeek-V4 chat protocol facts: special tokens and their ids, fixed prompt texts, chat modes.

The texts are copied byte for byte from the official `encoding/encoding_dsv4.py` of the V4 preview
release (reference doc §8, §12); tests check every id against the bundled tokenizer.json.
"""

from __future__ import annotations

import enum

from foundation.chat.errors import UnknownModeError

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK_START = "<think>"
THINK_END = "</think>"
DSML = "｜DSML｜"
LATEST_REMINDER = "<｜latest_reminder｜>"

BOS_ID = 0
EOS_ID = 1
PAD_ID = 2
USER_ID = 128803
ASSISTANT_ID = 128804
THINK_START_ID = 128821
THINK_END_ID = 128822
DSML_ID = 128825
LATEST_REMINDER_ID = 128828

# Quick-instruction tasks (a message's `task` field) -> the special token appended after it.
TASK_TOKENS: dict[str, str] = {
    "action": "<｜action｜>",
    "query": "<｜query｜>",
    "authority": "<｜authority｜>",
    "domain": "<｜domain｜>",
    "title": "<｜title｜>",
    "read_url": "<｜read_url｜>",
}
TASK_TOKEN_IDS: dict[str, int] = {
    "action": 128829,
    "query": 128830,
    "authority": 128831,
    "domain": 128832,
    "title": 128836,
    "read_url": 128845,
}

# Every special token string above with its id, for tokenizer cross-checks.
SPECIAL_TOKEN_IDS: dict[str, int] = {
    BOS: BOS_ID,
    EOS: EOS_ID,
    "<｜▁pad▁｜>": PAD_ID,
    USER: USER_ID,
    ASSISTANT: ASSISTANT_ID,
    THINK_START: THINK_START_ID,
    THINK_END: THINK_END_ID,
    DSML: DSML_ID,
    LATEST_REMINDER: LATEST_REMINDER_ID,
    **{TASK_TOKENS[name]: TASK_TOKEN_IDS[name] for name in TASK_TOKENS},
}

TOOL_CALLS_OPEN = f"<{DSML}tool_calls>"
TOOL_CALLS_CLOSE = f"</{DSML}tool_calls>"
INVOKE_OPEN = f"<{DSML}invoke"
INVOKE_CLOSE = f"</{DSML}invoke>"
PARAMETER_OPEN = f"<{DSML}parameter"
PARAMETER_CLOSE = f"</{DSML}parameter>"
# A tool-call block always follows the content after a blank line; the parser keys on this.
TOOL_CALLS_START = f"\n\n<{DSML}tool_calls"

TOOL_RESULT_OPEN = "<tool_result>"
TOOL_RESULT_CLOSE = "</tool_result>"

THINK_MAX_INSTRUCTION = (
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to"
    " resolve the root cause, rigorously stress-testing your logic against all potential paths,"
    " edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step,"
    " considered alternative, and rejected hypothesis to ensure absolutely no assumption is left"
    " unchecked.\n\n"
)

RESPONSE_FORMAT_PREFIX = (
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n"
)

TOOLS_BLOCK_HEAD = f"""## Tools

You have access to a set of tools to help answer the user's question. You can invoke tools by writing a "<{DSML}tool_calls>" block like the following:

<{DSML}tool_calls>
<{DSML}invoke name="$TOOL_NAME">
<{DSML}parameter name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE</{DSML}parameter>
...
</{DSML}invoke>
<{DSML}invoke name="$TOOL_NAME2">
...
</{DSML}invoke>
</{DSML}tool_calls>

String parameters should be specified as is and set `string="true"`. For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set `string="false"`.

If thinking_mode is enabled (triggered by {THINK_START}), you MUST output your complete reasoning inside {THINK_START}...{THINK_END} BEFORE any tool calls or final response.

Otherwise, output directly after {THINK_END} with tool calls or final response.

### Available Tool Schemas

"""  # noqa: E501 (protocol text, kept verbatim so it can be compared line by line)
TOOLS_BLOCK_TAIL = (
    "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke "
    "tool calls.\n"
)


class ChatMode(enum.StrEnum):
    """Serving modes. Non-think = official chat mode; Think High/Max = thinking mode (Max adds the
    fixed instruction right after BOS)."""

    NON_THINK = "non-think"
    THINK_HIGH = "think-high"
    THINK_MAX = "think-max"

    @property
    def thinking(self) -> bool:
        return self is not ChatMode.NON_THINK

    @classmethod
    def parse(cls, value: str | ChatMode) -> ChatMode:
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise UnknownModeError(
                f"unknown chat mode {value!r}; expected one of: {allowed}"
            ) from None
