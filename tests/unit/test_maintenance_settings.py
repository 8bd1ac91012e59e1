"""``lakehouse.maintenance``: VACUUM's retention is safe unless explicitly not, and the properties it sets."""

from __future__ import annotations

import pytest

from surveillance.config import ConfigError, load_settings
from surveillance.maintenance import DELETED_FILE_RETENTION, LOG_RETENTION, retention_properties


def test_the_defaults_compact_only_tables_the_stream_appends_to() -> None:
    maintenance = load_settings().lakehouse.maintenance
    assert "gold_bars_1m" not in maintenance.optimize  # MERGEd by the stream: a compaction could conflict
    assert {"bronze_quotes", "silver_quotes", "alerts"} <= set(maintenance.optimize)
    assert maintenance.vacuum_retention == "7 days" and not maintenance.allow_short_vacuum_retention


def test_a_retention_under_seven_days_is_refused_unless_allowed() -> None:
    with pytest.raises(ConfigError, match="under 7 days"):
        load_settings(overrides=["lakehouse.maintenance.vacuum_retention=1 hour"])
    allowed = load_settings(
        overrides=[
            "lakehouse.maintenance.vacuum_retention=0 hours",
            "lakehouse.maintenance.allow_short_vacuum_retention=true",
        ]
    )
    assert allowed.lakehouse.maintenance.vacuum_retention == "0 hours"


def test_a_log_kept_shorter_than_vacuum_is_refused() -> None:
    with pytest.raises(ConfigError, match="log_retention is shorter than vacuum_retention"):
        load_settings(
            overrides=[
                "lakehouse.maintenance.log_retention=8 days",
                "lakehouse.maintenance.vacuum_retention=9 days",
            ]
        )


def test_the_table_properties_are_delta_intervals_in_seconds() -> None:
    settings = load_settings(overrides=["lakehouse.maintenance.log_retention=30 days"])
    assert retention_properties(settings) == {
        LOG_RETENTION: "interval 2592000 seconds",
        DELETED_FILE_RETENTION: "interval 604800 seconds",
    }
