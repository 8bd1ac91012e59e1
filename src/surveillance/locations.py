"""Where the lakehouse's tables live: a Delta path or a catalog table name per logical table.

Spark-free, so the API (which reads the tables with delta-rs) resolves the same locations as the jobs.
"""

from __future__ import annotations

import re

from surveillance.config import ConfigError, Settings, resolve_local_path

# Every table of surveillance.lakehouse.TABLES, in its order (checked there).
TABLE_NAMES = (
    "bronze_quotes",
    "silver_quotes",
    "quarantine_quotes",
    "gold_bars_1m",
    "alerts",
    "stream_progress",
    "dq_results",
    "backfill_runs",
    "alert_actions",
    "drift_results",
)

# A metastore / Unity Catalog name: one to three plain identifiers.
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*){0,2}$")


def table_locations(settings: Settings) -> dict[str, str]:
    """{logical name: location} for every table: a Delta path, or a table name when lakehouse.schema is set.

    Per-table overrides in lakehouse.tables win; a value with a "/" is a path, anything else a table name.
    """
    lakehouse = settings.lakehouse
    unknown = set(lakehouse.tables) - set(TABLE_NAMES)
    if unknown:
        known = sorted(TABLE_NAMES)
        raise ConfigError(f"lakehouse.tables names unknown tables {sorted(unknown)}; known: {known}")
    if lakehouse.schema_name:
        prefix = ".".join(part for part in (lakehouse.catalog, lakehouse.schema_name) if part)
        defaults = {name: f"{prefix}.{name}" for name in TABLE_NAMES}
    else:
        root = resolve_local_path(lakehouse.root).rstrip("/")
        defaults = {name: f"{root}/{name}" for name in TABLE_NAMES}
    locations = {}
    for name in TABLE_NAMES:
        override = lakehouse.tables.get(name)
        if override is None:
            locations[name] = defaults[name]
        else:
            locations[name] = override if is_table_name(override) else resolve_local_path(override)
    for name, location in locations.items():
        if is_table_name(location) and not _TABLE_NAME.match(location):
            raise ConfigError(f"table {name}: {location!r} is neither a path nor a catalog.schema.table name")
    return locations


def is_table_name(location: str) -> bool:
    """Whether a location is a table name (catalog.schema.table) rather than a path (paths have a "/")."""
    return "/" not in location
