"""Per-sequence streaming state of the engine, kept apart from the model's modules (what sessions persist)."""

from model_worker.state.layout import PAGE_ENTRIES, StateLayout
from model_worker.state.sequence_state import LayerState, SequenceState, SharedState, StateSnapshot

__all__ = ["PAGE_ENTRIES", "LayerState", "SequenceState", "SharedState", "StateLayout", "StateSnapshot"]
