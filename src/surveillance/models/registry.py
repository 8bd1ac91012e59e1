"""Where MLflow lives for this project, and the registered model's versions and champion alias.

By default a SQLite tracking and registry store under the state directory (``<state_dir>/mlflow/mlflow.db``)
with artifacts beside it; ``models.tracking_uri`` (and ``models.registry_uri``) point anywhere MLflow can:
a tracking server, or ``databricks`` / ``databricks-uc`` on a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surveillance.config import ModelSettings, Settings, resolve_local_path

DEFAULT_STORE = "mlflow"  # under state_dir


@dataclass(frozen=True)
class MlflowLocation:
    tracking_uri: str
    registry_uri: str
    artifact_location: str | None
    # The SQLite file behind a local store (None for a server): a stream must not create it just to learn
    # that no model was ever registered.
    sqlite_file: Path | None


def mlflow_location(settings: Settings) -> MlflowLocation:
    """The tracking and registry URIs and the experiment's artifact location from the settings."""
    models: ModelSettings = settings.models
    store = Path(resolve_local_path(settings.state_dir)) / DEFAULT_STORE
    tracking = models.tracking_uri or f"sqlite:///{store / 'mlflow.db'}"
    registry = models.registry_uri or tracking
    artifacts = models.artifact_location
    if artifacts is None and models.tracking_uri is None:
        artifacts = str(store / "artifacts")
    elif artifacts is not None:
        artifacts = resolve_local_path(artifacts)
    sqlite_file = Path(registry.removeprefix("sqlite:///")) if registry.startswith("sqlite:///") else None
    return MlflowLocation(tracking, registry, artifacts, sqlite_file)


def use_mlflow(settings: Settings) -> MlflowLocation:
    """Point this process's MLflow at the configured stores (creating a local store's folder)."""
    import mlflow

    location = mlflow_location(settings)
    if location.sqlite_file is not None:
        location.sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(location.tracking_uri)
    mlflow.set_registry_uri(location.registry_uri)
    return location


def client(settings: Settings) -> Any:
    """An MlflowClient on the configured tracking and registry stores."""
    from mlflow import MlflowClient

    location = mlflow_location(settings)
    return MlflowClient(tracking_uri=location.tracking_uri, registry_uri=location.registry_uri)


def registry_exists(settings: Settings) -> bool:
    """False only for a local SQLite registry file that was never created (nothing registered yet)."""
    sqlite_file = mlflow_location(settings).sqlite_file
    return sqlite_file is None or sqlite_file.exists()


def alias_version(settings: Settings, alias: str | None = None) -> Any | None:
    """The ModelVersion the alias (default: the champion alias) points to, or None if there is none."""
    if not registry_exists(settings):
        return None
    from mlflow.exceptions import MlflowException

    models = settings.models
    try:
        return client(settings).get_model_version_by_alias(
            models.registered_name, alias or models.champion_alias
        )
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def model_versions(settings: Settings) -> list[dict[str, Any]]:
    """Every version of the registered model, newest first: version, aliases, detector, scores, run."""
    if not registry_exists(settings):
        return []
    from mlflow.exceptions import MlflowException

    models = settings.models
    mlflow_client = client(settings)
    try:
        registered = mlflow_client.get_registered_model(models.registered_name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    aliases: dict[str, list[str]] = {}
    for alias, version in (registered.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for version in mlflow_client.search_model_versions(f"name = '{models.registered_name}'"):
        tags = version.tags or {}
        rows.append(
            {
                "version": int(version.version),
                "aliases": sorted(aliases.get(str(version.version), [])),
                "detector": tags.get("detector", ""),
                "metric": tags.get("selection_metric", ""),
                "score": _float(tags.get("test_score")),
                "precision": _float(tags.get("test_precision")),
                "recall": _float(tags.get("test_recall")),
                "f1": _float(tags.get("test_f1")),
                "pr_auc": _float(tags.get("test_pr_auc")),
                "created": version.creation_timestamp,
                "run_id": version.run_id,
            }
        )
    return sorted(rows, key=lambda row: -row["version"])


def _float(text: str | None) -> float | None:
    return None if text in (None, "") else float(text)


def model_uri(settings: Settings, version: int | str) -> str:
    """``models:/<registered name>/<version>``: one fixed version (the alias may move meanwhile)."""
    return f"models:/{settings.models.registered_name}/{version}"
