"""When the US stock market trades, by the clock: a fallback for providers without a status service.

Sessions in New York time, weekdays only: pre-market 04:00-09:30, regular 09:30-16:00, after-hours
16:00-20:00. Exchange holidays are not known here; a provider that can ask its own service (Polygon's
market status) does so, and an idle feed on a holiday costs nothing but a quiet connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
SESSIONS = (
    ("pre-market", time(4, 0), time(9, 30)),
    ("regular", time(9, 30), time(16, 0)),
    ("after-hours", time(16, 0), time(20, 0)),
)


@dataclass(frozen=True)
class MarketState:
    """Open or not, the session's name, and (when closed) the next opening in UTC."""

    is_open: bool
    session: str
    next_open: datetime | None = None


def us_equity_state(now: datetime, extended_hours: bool = True) -> MarketState:
    """The US stock market's state at ``now`` (aware); ``extended_hours`` counts pre- and after-hours."""
    local = now.astimezone(NEW_YORK)
    sessions = SESSIONS if extended_hours else SESSIONS[1:2]
    if local.weekday() < 5:
        for name, start, end in sessions:
            if start <= local.time() < end:
                return MarketState(True, name)
    first_start = sessions[0][1]
    day = local.date()
    if local.weekday() < 5 and local.time() < first_start:
        opening_day = day
    else:
        opening_day = day + timedelta(days=1)
        while opening_day.weekday() >= 5:
            opening_day += timedelta(days=1)
    opening = datetime.combine(opening_day, first_start, tzinfo=NEW_YORK)
    return MarketState(False, "closed", opening.astimezone(UTC))
