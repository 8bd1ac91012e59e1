"""The ``alert_actions`` Delta table: what analysts did to alerts, appended with delta-rs, never updated.

Every API process keeps the table's rows in memory (they are few: one per human action) and reads only
the files committed since it last looked. An action is checked against the alert's state and appended
under one lock per process, after catching up with what other processes appended.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from surveillance.serving.alert_status import CaseState, apply_action, replay

US = pa.timestamp("us", tz="UTC")
# The column order and types of surveillance.lakehouse.ALERT_ACTIONS (a unit test compares them).
ACTIONS_SCHEMA = pa.schema(
    [
        ("action_id", pa.string()),
        ("alert_id", pa.string()),
        ("action", pa.string()),
        ("status_before", pa.string()),
        ("status_after", pa.string()),
        ("assignee", pa.string()),
        ("note", pa.string()),
        ("actor", pa.string()),
        ("role", pa.string()),
        ("acted_at", US),
        ("alert_symbol", pa.string()),
        ("alert_event_time", US),
    ]
)


@dataclass(frozen=True)
class ActionRecord:
    action_id: str
    alert_id: str
    action: str
    status_before: str
    status_after: str
    assignee: str | None
    note: str
    actor: str
    role: str
    acted_at: datetime
    alert_symbol: str | None
    alert_event_time: datetime | None


class ActionLog:
    """The alert_actions table at ``location`` (a path or URI delta-rs opens), followed incrementally."""

    def __init__(self, location: str, storage_options: dict[str, str] | None = None) -> None:
        self.location = location
        self.storage_options = storage_options
        self._lock = threading.Lock()
        self._files_read: set[str] = set()
        # alert_id → its actions, oldest first. A list is replaced, never changed in place: readers on
        # other threads see the old history or the new one, never one being sorted.
        self._by_alert: dict[str, list[ActionRecord]] = {}
        self._action_ids: set[str] = set()
        self._version: int | None = None

    # Reading -------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the files committed since the last look (another API process may have appended)."""
        with self._lock:
            self._catch_up()

    def _catch_up(self) -> None:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            table = DeltaTable(self.location, storage_options=self.storage_options)
        except TableNotFoundError:
            return
        if table.version() == self._version:
            return
        dataset = table.to_pyarrow_dataset()
        for fragment in dataset.get_fragments():
            if fragment.path in self._files_read:
                continue
            for row in fragment.to_table(schema=ACTIONS_SCHEMA).to_pylist():
                self._remember(ActionRecord(**row))
            self._files_read.add(fragment.path)
        self._version = table.version()

    def _remember(self, record: ActionRecord) -> None:
        if record.action_id in self._action_ids:
            return
        self._action_ids.add(record.action_id)
        history = [*self._by_alert.get(record.alert_id, ()), record]
        self._by_alert[record.alert_id] = sorted(history, key=lambda r: (r.acted_at, r.action_id))

    def history(self, alert_id: str) -> list[ActionRecord]:
        """The alert's actions, oldest first."""
        return list(self._by_alert.get(alert_id, ()))

    def state(self, alert_id: str) -> CaseState:
        """The alert's current status and assignee, replayed from its actions."""
        return replay((r.action, r.assignee) for r in self._by_alert.get(alert_id, ()))

    def states(self) -> dict[str, CaseState]:
        """Every alert with at least one action: its current state."""
        return {alert_id: self.state(alert_id) for alert_id in list(self._by_alert)}

    # Writing -------------------------------------------------------------------------------------

    def record(
        self,
        alert_id: str,
        action: str,
        note: str,
        actor: str,
        role: str,
        assignee: str | None = None,
        alert_symbol: str | None = None,
        alert_event_time: datetime | None = None,
    ) -> tuple[ActionRecord, CaseState]:
        """Check the action against the alert's state, append it, and return it with the new state.

        Raises surveillance.serving.alert_status.TransitionError when the state does not allow it.
        """
        from deltalake import write_deltalake

        with self._lock:
            self._catch_up()
            before = self.state(alert_id)
            after = apply_action(before, action, assignee)
            entry = ActionRecord(
                action_id=uuid.uuid4().hex,
                alert_id=alert_id,
                action=action,
                status_before=before.status,
                status_after=after.status,
                assignee=assignee if action == "assign" else after.assignee,
                note=note,
                actor=actor,
                role=role,
                acted_at=_after_last(datetime.now(UTC), self._by_alert.get(alert_id)),
                alert_symbol=alert_symbol,
                alert_event_time=alert_event_time,
            )
            write_deltalake(
                self.location,
                pa.Table.from_pylist([asdict(entry)], schema=ACTIONS_SCHEMA),
                mode="append",
                storage_options=self.storage_options,
            )
            # Known now; the catch-up also reads what other processes appended meanwhile.
            self._remember(entry)
            self._catch_up()
            return entry, after


def _after_last(now: datetime, history: list[ActionRecord] | None) -> datetime:
    # Two actions in one microsecond (or a clock step back) keep their order of recording.
    if history and history[-1].acted_at >= now:
        return history[-1].acted_at + timedelta(microseconds=1)
    return now
