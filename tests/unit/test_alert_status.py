"""An alert's case: every action from every status, and replaying a recorded history."""

from __future__ import annotations

import pytest

from surveillance.serving.alert_status import (
    ACTIONS,
    STATUSES,
    CaseState,
    TransitionError,
    allowed_actions,
    apply_action,
    replay,
)

# (status, action) -> status after, or None where the action is refused.
EXPECTED = {
    ("open", "acknowledge"): "acknowledged",
    ("open", "assign"): "assigned",
    ("open", "escalate"): "escalated",
    ("open", "close"): "closed",
    ("open", "reopen"): None,
    ("acknowledged", "acknowledge"): None,
    ("acknowledged", "assign"): "assigned",
    ("acknowledged", "escalate"): "escalated",
    ("acknowledged", "close"): "closed",
    ("acknowledged", "reopen"): None,
    ("assigned", "acknowledge"): "acknowledged",
    ("assigned", "assign"): "assigned",
    ("assigned", "escalate"): "escalated",
    ("assigned", "close"): "closed",
    ("assigned", "reopen"): None,
    ("escalated", "acknowledge"): None,
    ("escalated", "assign"): "escalated",
    ("escalated", "escalate"): None,
    ("escalated", "close"): "closed",
    ("escalated", "reopen"): None,
    ("closed", "acknowledge"): None,
    ("closed", "assign"): None,
    ("closed", "escalate"): None,
    ("closed", "close"): None,
    ("closed", "reopen"): "open",
}


def test_every_status_and_action() -> None:
    assert set(EXPECTED) == {(s, a) for s in STATUSES for a in ACTIONS}
    for (status, action), after in EXPECTED.items():
        state = CaseState(status, "amy")
        if after is None:
            with pytest.raises(TransitionError) as refused:
                apply_action(state, action, assignee="bob")
            assert str(refused.value)  # the 409's reason
            assert action not in allowed_actions(state)
        else:
            assert apply_action(state, action, assignee="bob").status == after
            assert action in allowed_actions(state)


def test_assignment_rules() -> None:
    with pytest.raises(TransitionError, match="needs an assignee"):
        apply_action(CaseState(), "assign")
    with pytest.raises(TransitionError, match="already assigned to amy"):
        apply_action(CaseState("assigned", "amy"), "assign", "amy")
    assert apply_action(CaseState("assigned", "amy"), "assign", "bob") == CaseState("assigned", "bob")
    # The assignee stays through a close and a reopen.
    assert apply_action(CaseState("closed", "amy"), "reopen") == CaseState("open", "amy")
    with pytest.raises(TransitionError, match="already closed"):
        apply_action(CaseState("closed"), "close")


def test_replay_skips_what_two_writers_raced_into_the_log() -> None:
    history = [("acknowledge", None), ("close", None), ("close", None), ("reopen", None), ("assign", "bob")]
    assert replay(history) == CaseState("assigned", "bob")
    assert replay([]) == CaseState("open", None)
