"""An alert's case: the actions an analyst may take and the status each leads to.

The status is never stored on the alert. It is derived by replaying the alert's actions, in the order
they were recorded, through :func:`apply_action`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

OPEN, ACKNOWLEDGED, ASSIGNED, ESCALATED, CLOSED = "open", "acknowledged", "assigned", "escalated", "closed"
STATUSES = (OPEN, ACKNOWLEDGED, ASSIGNED, ESCALATED, CLOSED)
ACTIONS = ("acknowledge", "assign", "escalate", "close", "reopen")
# A decision a reviewer must be able to read later needs its reason.
NOTE_REQUIRED = frozenset({"escalate", "close", "reopen"})


class TransitionError(ValueError):
    """An action the alert's current status does not allow (the API answers 409 with this reason)."""


@dataclass(frozen=True)
class CaseState:
    status: str = OPEN
    assignee: str | None = None


def apply_action(state: CaseState, action: str, assignee: str | None = None) -> CaseState:
    """The state after ``action``; raises TransitionError, with the reason, when it is not allowed.

    - acknowledge: an open or assigned alert is being looked at;
    - assign: to someone else than the current assignee, on any alert not closed (an escalated alert
      stays escalated, with its new assignee);
    - escalate: once, on an alert not closed;
    - close: any alert not closed;
    - reopen: only a closed alert, which becomes open again (its assignee kept).
    """
    status = state.status
    if action == "acknowledge":
        if status not in (OPEN, ASSIGNED):
            raise TransitionError(f"cannot acknowledge an alert that is {status}")
        return CaseState(ACKNOWLEDGED, state.assignee)
    if action == "assign":
        if not assignee:
            raise TransitionError("assign needs an assignee")
        if status == CLOSED:
            raise TransitionError("cannot assign a closed alert: reopen it first")
        if assignee == state.assignee:
            raise TransitionError(f"the alert is already assigned to {assignee}")
        return CaseState(ESCALATED if status == ESCALATED else ASSIGNED, assignee)
    if action == "escalate":
        if status in (ESCALATED, CLOSED):
            raise TransitionError(f"cannot escalate an alert that is {status}")
        return CaseState(ESCALATED, state.assignee)
    if action == "close":
        if status == CLOSED:
            raise TransitionError("the alert is already closed")
        return CaseState(CLOSED, state.assignee)
    if action == "reopen":
        if status != CLOSED:
            raise TransitionError(f"only a closed alert can be reopened; this one is {status}")
        return CaseState(OPEN, state.assignee)
    raise TransitionError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")


def allowed_actions(state: CaseState) -> list[str]:
    """The actions :func:`apply_action` would accept now (assign counted when anyone new could be named)."""
    allowed = []
    for action in ACTIONS:
        try:
            apply_action(state, action, assignee="\x00someone else")
        except TransitionError:
            continue
        allowed.append(action)
    return allowed


def replay(actions: Iterable[tuple[str, str | None]]) -> CaseState:
    """The state after (action, assignee) pairs in recorded order; a recorded action that would not be
    allowed (two API processes racing) is kept in the history but changes nothing."""
    state = CaseState()
    for action, assignee in actions:
        try:
            state = apply_action(state, action, assignee)
        except TransitionError:
            continue
    return state
