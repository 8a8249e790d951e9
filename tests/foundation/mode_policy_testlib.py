"""An operator's own reasoning-mode policy, as `load_policy` finds one by name (the tests of foundation/mode_policy.py
and of the agent service's setting)."""

from foundation.mode_policy import NON_THINK, THINK_HIGH, ModeDecision, OperatorLimits, TurnSignals


class ThinkWhenTooled:
    """Think High whenever the turn has a tool, else Non-think; an explicit mode still wins."""

    def choose(self, signals: TurnSignals, limits: OperatorLimits) -> ModeDecision:
        if signals.requested_mode:
            return ModeDecision(signals.requested_mode, "asked for")
        if signals.tool_count:
            return ModeDecision(THINK_HIGH, f"operator policy: {signals.tool_count} tools")
        return ModeDecision(NON_THINK, "operator policy: no tools")


INSTANCE = ThinkWhenTooled()


def make() -> ThinkWhenTooled:
    return ThinkWhenTooled()


NOT_A_POLICY = 42
