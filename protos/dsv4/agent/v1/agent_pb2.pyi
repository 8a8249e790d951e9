from protos.dsv4.worker.v1 import worker_pb2 as _worker_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateSessionRequest(_message.Message):
    __slots__ = ("session_id", "system_prompt", "tools", "think_max", "mcp_servers")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    THINK_MAX_FIELD_NUMBER: _ClassVar[int]
    MCP_SERVERS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    system_prompt: str
    tools: _containers.RepeatedScalarFieldContainer[str]
    think_max: bool
    mcp_servers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_id: _Optional[str] = ..., system_prompt: _Optional[str] = ..., tools: _Optional[_Iterable[str]] = ..., think_max: _Optional[bool] = ..., mcp_servers: _Optional[_Iterable[str]] = ...) -> None: ...

class AgentSession(_message.Message):
    __slots__ = ("session_id", "system_prompt", "tools", "think_max", "steps", "entries", "worker_session_id", "worker_commit", "parent_session_id", "active_turn_id", "created_at", "updated_at", "mcp_servers")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    THINK_MAX_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    WORKER_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_COMMIT_FIELD_NUMBER: _ClassVar[int]
    PARENT_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_TURN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    MCP_SERVERS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    system_prompt: str
    tools: _containers.RepeatedCompositeFieldContainer[_worker_pb2.Tool]
    think_max: bool
    steps: int
    entries: int
    worker_session_id: str
    worker_commit: int
    parent_session_id: str
    active_turn_id: str
    created_at: int
    updated_at: int
    mcp_servers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_id: _Optional[str] = ..., system_prompt: _Optional[str] = ..., tools: _Optional[_Iterable[_Union[_worker_pb2.Tool, _Mapping]]] = ..., think_max: _Optional[bool] = ..., steps: _Optional[int] = ..., entries: _Optional[int] = ..., worker_session_id: _Optional[str] = ..., worker_commit: _Optional[int] = ..., parent_session_id: _Optional[str] = ..., active_turn_id: _Optional[str] = ..., created_at: _Optional[int] = ..., updated_at: _Optional[int] = ..., mcp_servers: _Optional[_Iterable[str]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("limit", "after")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    limit: int
    after: str
    def __init__(self, limit: _Optional[int] = ..., after: _Optional[str] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions", "has_more")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[AgentSession]
    has_more: bool
    def __init__(self, sessions: _Optional[_Iterable[_Union[AgentSession, _Mapping]]] = ..., has_more: _Optional[bool] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class DeleteSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ForkSessionRequest(_message.Message):
    __slots__ = ("session_id", "step", "new_session_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    NEW_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    step: int
    new_session_id: str
    def __init__(self, session_id: _Optional[str] = ..., step: _Optional[int] = ..., new_session_id: _Optional[str] = ...) -> None: ...

class GetTranscriptRequest(_message.Message):
    __slots__ = ("session_id", "before", "limit")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    before: int
    limit: int
    def __init__(self, session_id: _Optional[str] = ..., before: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class TranscriptEntry(_message.Message):
    __slots__ = ("seq", "step", "kind", "content", "reasoning", "tool_call_id", "tool_name", "arguments_json", "call_status", "is_error", "created_at")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    CALL_STATUS_FIELD_NUMBER: _ClassVar[int]
    IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    step: int
    kind: str
    content: str
    reasoning: str
    tool_call_id: str
    tool_name: str
    arguments_json: str
    call_status: str
    is_error: bool
    created_at: int
    def __init__(self, seq: _Optional[int] = ..., step: _Optional[int] = ..., kind: _Optional[str] = ..., content: _Optional[str] = ..., reasoning: _Optional[str] = ..., tool_call_id: _Optional[str] = ..., tool_name: _Optional[str] = ..., arguments_json: _Optional[str] = ..., call_status: _Optional[str] = ..., is_error: _Optional[bool] = ..., created_at: _Optional[int] = ...) -> None: ...

class Transcript(_message.Message):
    __slots__ = ("entries", "next_before")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[TranscriptEntry]
    next_before: int
    def __init__(self, entries: _Optional[_Iterable[_Union[TranscriptEntry, _Mapping]]] = ..., next_before: _Optional[int] = ...) -> None: ...

class TurnLimits(_message.Message):
    __slots__ = ("max_steps", "max_completion_tokens", "max_seconds")
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    max_steps: int
    max_completion_tokens: int
    max_seconds: float
    def __init__(self, max_steps: _Optional[int] = ..., max_completion_tokens: _Optional[int] = ..., max_seconds: _Optional[float] = ...) -> None: ...

class RunTurnRequest(_message.Message):
    __slots__ = ("session_id", "messages", "mode", "difficulty", "limits", "sampling", "first_tool_choice", "turn_id", "webhook_url")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    DIFFICULTY_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    FIRST_TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    messages: _containers.RepeatedCompositeFieldContainer[_worker_pb2.ChatMessage]
    mode: _worker_pb2.ReasoningMode
    difficulty: str
    limits: TurnLimits
    sampling: _worker_pb2.SamplingParams
    first_tool_choice: str
    turn_id: str
    webhook_url: str
    def __init__(self, session_id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_worker_pb2.ChatMessage, _Mapping]]] = ..., mode: _Optional[_Union[_worker_pb2.ReasoningMode, str]] = ..., difficulty: _Optional[str] = ..., limits: _Optional[_Union[TurnLimits, _Mapping]] = ..., sampling: _Optional[_Union[_worker_pb2.SamplingParams, _Mapping]] = ..., first_tool_choice: _Optional[str] = ..., turn_id: _Optional[str] = ..., webhook_url: _Optional[str] = ...) -> None: ...

class AttachRequest(_message.Message):
    __slots__ = ("turn_id", "after_seq")
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    after_seq: int
    def __init__(self, turn_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class GetTurnRequest(_message.Message):
    __slots__ = ("turn_id",)
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    def __init__(self, turn_id: _Optional[str] = ...) -> None: ...

class ListTurnsRequest(_message.Message):
    __slots__ = ("session_id", "limit")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    limit: int
    def __init__(self, session_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListTurnsResponse(_message.Message):
    __slots__ = ("turns",)
    TURNS_FIELD_NUMBER: _ClassVar[int]
    turns: _containers.RepeatedCompositeFieldContainer[Turn]
    def __init__(self, turns: _Optional[_Iterable[_Union[Turn, _Mapping]]] = ...) -> None: ...

class DecideToolCallRequest(_message.Message):
    __slots__ = ("session_id", "tool_call_id", "approve")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    tool_call_id: str
    approve: bool
    def __init__(self, session_id: _Optional[str] = ..., tool_call_id: _Optional[str] = ..., approve: _Optional[bool] = ...) -> None: ...

class CancelTurnRequest(_message.Message):
    __slots__ = ("turn_id",)
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    def __init__(self, turn_id: _Optional[str] = ...) -> None: ...

class Turn(_message.Message):
    __slots__ = ("turn_id", "session_id", "status", "mode", "mode_reason", "via_job", "stop_reason", "content", "usage", "error", "next_seq", "created_at", "ended_at")
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MODE_REASON_FIELD_NUMBER: _ClassVar[int]
    VIA_JOB_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    session_id: str
    status: str
    mode: str
    mode_reason: str
    via_job: bool
    stop_reason: str
    content: str
    usage: _worker_pb2.Usage
    error: str
    next_seq: int
    created_at: int
    ended_at: int
    def __init__(self, turn_id: _Optional[str] = ..., session_id: _Optional[str] = ..., status: _Optional[str] = ..., mode: _Optional[str] = ..., mode_reason: _Optional[str] = ..., via_job: _Optional[bool] = ..., stop_reason: _Optional[str] = ..., content: _Optional[str] = ..., usage: _Optional[_Union[_worker_pb2.Usage, _Mapping]] = ..., error: _Optional[str] = ..., next_seq: _Optional[int] = ..., created_at: _Optional[int] = ..., ended_at: _Optional[int] = ...) -> None: ...

class TurnEvent(_message.Message):
    __slots__ = ("turn_id", "seq", "mode_chosen", "job_status", "step_started", "text_delta", "tool_started", "approval_requested", "tool_finished", "compacted", "turn_done", "turn_failed")
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    MODE_CHOSEN_FIELD_NUMBER: _ClassVar[int]
    JOB_STATUS_FIELD_NUMBER: _ClassVar[int]
    STEP_STARTED_FIELD_NUMBER: _ClassVar[int]
    TEXT_DELTA_FIELD_NUMBER: _ClassVar[int]
    TOOL_STARTED_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    TOOL_FINISHED_FIELD_NUMBER: _ClassVar[int]
    COMPACTED_FIELD_NUMBER: _ClassVar[int]
    TURN_DONE_FIELD_NUMBER: _ClassVar[int]
    TURN_FAILED_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    seq: int
    mode_chosen: ModeChosen
    job_status: JobStatus
    step_started: StepStarted
    text_delta: TextDelta
    tool_started: ToolStarted
    approval_requested: ApprovalRequested
    tool_finished: ToolFinished
    compacted: Compacted
    turn_done: TurnDone
    turn_failed: TurnFailed
    def __init__(self, turn_id: _Optional[str] = ..., seq: _Optional[int] = ..., mode_chosen: _Optional[_Union[ModeChosen, _Mapping]] = ..., job_status: _Optional[_Union[JobStatus, _Mapping]] = ..., step_started: _Optional[_Union[StepStarted, _Mapping]] = ..., text_delta: _Optional[_Union[TextDelta, _Mapping]] = ..., tool_started: _Optional[_Union[ToolStarted, _Mapping]] = ..., approval_requested: _Optional[_Union[ApprovalRequested, _Mapping]] = ..., tool_finished: _Optional[_Union[ToolFinished, _Mapping]] = ..., compacted: _Optional[_Union[Compacted, _Mapping]] = ..., turn_done: _Optional[_Union[TurnDone, _Mapping]] = ..., turn_failed: _Optional[_Union[TurnFailed, _Mapping]] = ...) -> None: ...

class ModeChosen(_message.Message):
    __slots__ = ("mode", "reason", "via_job")
    MODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    VIA_JOB_FIELD_NUMBER: _ClassVar[int]
    mode: str
    reason: str
    via_job: bool
    def __init__(self, mode: _Optional[str] = ..., reason: _Optional[str] = ..., via_job: _Optional[bool] = ...) -> None: ...

class JobStatus(_message.Message):
    __slots__ = ("batch_id", "status", "tokens")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    status: str
    tokens: int
    def __init__(self, batch_id: _Optional[str] = ..., status: _Optional[str] = ..., tokens: _Optional[int] = ...) -> None: ...

class StepStarted(_message.Message):
    __slots__ = ("step", "mode")
    STEP_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    step: int
    mode: str
    def __init__(self, step: _Optional[int] = ..., mode: _Optional[str] = ...) -> None: ...

class TextDelta(_message.Message):
    __slots__ = ("text", "reasoning")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    text: str
    reasoning: bool
    def __init__(self, text: _Optional[str] = ..., reasoning: _Optional[bool] = ...) -> None: ...

class ToolStarted(_message.Message):
    __slots__ = ("call_id", "name", "arguments_json")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    name: str
    arguments_json: str
    def __init__(self, call_id: _Optional[str] = ..., name: _Optional[str] = ..., arguments_json: _Optional[str] = ...) -> None: ...

class ApprovalRequested(_message.Message):
    __slots__ = ("call_id", "name", "arguments_json")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    name: str
    arguments_json: str
    def __init__(self, call_id: _Optional[str] = ..., name: _Optional[str] = ..., arguments_json: _Optional[str] = ...) -> None: ...

class ToolFinished(_message.Message):
    __slots__ = ("call_id", "name", "content", "is_error", "status")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    name: str
    content: str
    is_error: bool
    status: str
    def __init__(self, call_id: _Optional[str] = ..., name: _Optional[str] = ..., content: _Optional[str] = ..., is_error: _Optional[bool] = ..., status: _Optional[str] = ...) -> None: ...

class Compacted(_message.Message):
    __slots__ = ("policy", "tokens_before", "tokens_after", "worker_session_id")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_BEFORE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_AFTER_FIELD_NUMBER: _ClassVar[int]
    WORKER_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    policy: str
    tokens_before: int
    tokens_after: int
    worker_session_id: str
    def __init__(self, policy: _Optional[str] = ..., tokens_before: _Optional[int] = ..., tokens_after: _Optional[int] = ..., worker_session_id: _Optional[str] = ...) -> None: ...

class TurnDone(_message.Message):
    __slots__ = ("reason", "content", "reasoning", "steps", "usage")
    REASON_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    reason: str
    content: str
    reasoning: str
    steps: int
    usage: _worker_pb2.Usage
    def __init__(self, reason: _Optional[str] = ..., content: _Optional[str] = ..., reasoning: _Optional[str] = ..., steps: _Optional[int] = ..., usage: _Optional[_Union[_worker_pb2.Usage, _Mapping]] = ...) -> None: ...

class TurnFailed(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
