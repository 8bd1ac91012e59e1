"""``surveil api``: resolve where the tables are, load the keys, and serve the app with uvicorn."""

from __future__ import annotations

from surveillance.config import ConfigError, Settings
from surveillance.locations import is_table_name, table_locations


def serving_locations(settings: Settings) -> dict[str, str]:
    """Every table's location as delta-rs opens it: a path or an object-store URI.

    Tables named catalog.schema.table (Unity Catalog, a metastore) need their storage path in
    serving.table_paths: delta-rs reads storage, not a catalog.
    """
    locations = table_locations(settings)
    resolved, missing = {}, []
    for name, location in locations.items():
        path = settings.serving.table_paths.get(name, location)
        if is_table_name(path):
            missing.append(f"{name} ({location})")
        resolved[name] = path
    needed = {"alerts", "silver_quotes", "gold_bars_1m", "dq_results", "stream_progress", "alert_actions"}
    missing = [m for m in missing if m.split(" ")[0] in needed]
    if missing:
        raise ConfigError(
            "the API reads tables by storage path; give serving.table_paths for: "
            + ", ".join(missing)
            + " (e.g. --set serving.table_paths.alerts=s3://bucket/lakehouse/alerts; "
            "DESCRIBE DETAIL <table> shows a table's location)"
        )
    return resolved


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Run the API until interrupted."""
    import uvicorn

    from surveillance.serving.app import create_app
    from surveillance.serving.auth import ApiKeys

    keys = ApiKeys(settings.serving.api_keys_env, settings.serving.api_keys_file_env)
    app = create_app(settings, serving_locations(settings), keys)
    uvicorn.run(
        app,
        host=host or settings.serving.host,
        port=port or settings.serving.port,
        log_level="info",
        # Request lines carry paths and queries, never the key (a header).
        access_log=True,
    )
