"""The agent store's typed errors (each maps to a gRPC status in agent_runtime/service/server.py)."""


class AgentSessionNotFound(LookupError):
    """No such agent session for this tenant (NOT_FOUND)."""


class AgentSessionExists(ValueError):
    """An agent session with this ID exists (ALREADY_EXISTS)."""


class NotDecidable(ValueError):
    """The call does not wait for approval (FAILED_PRECONDITION)."""


class ToolCallNotFound(LookupError):
    """No such tool call in this agent session (NOT_FOUND)."""


class TurnNotFound(LookupError):
    """No such turn for this tenant (NOT_FOUND)."""


class TurnActive(RuntimeError):
    """The session already runs a turn (FAILED_PRECONDITION)."""


class TurnExists(ValueError):
    """The tenant has a turn with this ID (ALREADY_EXISTS; a retried start attaches to it instead)."""
