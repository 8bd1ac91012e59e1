"""The Databricks Asset Bundle (databricks.yml + bundles.yml), checked offline: no workspace, no Spark.

The files are validated against the bundle JSON Schema (tests/fixtures), then everything they name is
checked against the repository: files, the wheel's entry point, the CLI arguments of every task, the
bundle variables and the configuration keys the tasks set.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import re
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from surveillance.cli import build_parser
from surveillance.config import ConfigError, load_settings
from surveillance.lakehouse import table_locations
from surveillance.notebook import split_overrides
from surveillance.pipeline.backfill import event_range

ROOT = Path(__file__).resolve().parents[2]
BUNDLE_FILE = ROOT / "databricks.yml"
RESOURCES_FILE = ROOT / "bundles.yml"
SCHEMA_FILE = ROOT / "tests" / "fixtures" / "databricks-bundle.schema.json"
CONF = ROOT / "conf"
TARGETS = {"dev": "development", "prod": "production"}
# What only a workspace or the person deploying knows, faked to resolve references offline.
FAKE_USER = "someone@example.com"
FAKE_KAFKA = "broker-1.example.com:9093,broker-2.example.com:9093"
FAKE_SERVICE_PRINCIPAL = "6f0c7a3e-0000-4000-8000-000000000000"
# Variables without a default, passed with --var on deployment (the README says so).
SET_BY_USER = {"kafka_bootstrap": FAKE_KAFKA, "service_principal": FAKE_SERVICE_PRINCIPAL}
REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.\-\[\]]+)\}")
JOB_PARAMETER = re.compile(r"\{\{\s*job\.parameters\.([A-Za-z0-9_.\-]+)\s*\}\}")
# The schema's patterns are Go (RE2) regexes; Python's re has no \p{..}. Inside a class first.
UNICODE_CLASSES = (("[\\p{L}\\p{N}]", "[^\\W_]"), ("\\p{L}", "[^\\W\\d_]"), ("\\p{N}", "\\d"))


def _python_pattern(pattern: str) -> str:
    """A schema pattern rewritten for Python's re (letters and digits as \\w-based classes)."""
    for unicode_class, python_class in UNICODE_CLASSES:
        pattern = pattern.replace(unicode_class, python_class)
    if "\\p{" in pattern:
        raise ValueError(f"unconverted Unicode class in schema pattern {pattern!r}")
    re.compile(pattern)
    return pattern


def _rewrite_patterns(node: Any) -> Any:
    """A copy of a schema with every string ``pattern`` keyword made Python-compatible."""
    if isinstance(node, dict):
        return {
            key: _python_pattern(value)
            if key == "pattern" and isinstance(value, str)
            else _rewrite_patterns(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_patterns(item) for item in node]
    return node


@cache
def _schema() -> dict[str, Any]:
    return _rewrite_patterns(json.loads(SCHEMA_FILE.read_text()))


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(_schema())


def _schema_errors(document: dict[str, Any]) -> list[str]:
    """One line per schema violation: where, and the most specific reason."""
    errors = sorted(_validator().iter_errors(document), key=lambda error: error.json_path)
    lines = []
    for error in errors:
        specific = best_match([error])
        lines.append(f"{specific.json_path}: {specific.message[:300]}")
    return lines


@cache
def _load(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict), f"{path.name}: the top level must be a mapping"
    return loaded


def _bundle() -> dict[str, Any]:
    return _load(BUNDLE_FILE)


def _resources() -> dict[str, Any]:
    return _load(RESOURCES_FILE)


def _jobs() -> dict[str, dict[str, Any]]:
    return _resources()["resources"]["jobs"]


def _tasks() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for job_key, job in _jobs().items():
        for task in job.get("tasks", []):
            yield job_key, job, task


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield node


def _references(node: Any, prefix: str) -> set[str]:
    """Names after ``prefix.`` in every ``${prefix.name}`` of a document."""
    found = set()
    for text in _strings(node):
        for reference in REFERENCE.findall(text):
            if reference.startswith(prefix + "."):
                found.add(reference[len(prefix) + 1 :].split(".")[0].split("[")[0])
    return found


def _target_values(target: str) -> dict[str, str]:
    """``{reference: value}`` as the CLI would resolve them for ``target``, workspace facts faked."""
    bundle = _bundle()
    assigned = bundle["targets"][target].get("variables") or {}
    values = {"bundle.target": target, "bundle.name": bundle["bundle"]["name"]}
    for name, spec in bundle["variables"].items():
        value = assigned.get(name, spec.get("default", SET_BY_USER.get(name)))
        assert value is not None, f"variable {name} has no value for target {target}"
        values[f"var.{name}"] = str(value)
    workspace = bundle["targets"][target].get("workspace") or {}
    root_path = workspace.get("root_path", f"/Workspace/Users/{FAKE_USER}/.bundle/${{bundle.name}}/{target}")
    values["workspace.root_path"] = root_path
    values["workspace.file_path"] = f"{root_path}/files"
    values["workspace.current_user.userName"] = FAKE_USER
    return values


def _resolve(text: str, values: dict[str, str]) -> str:
    """``text`` with every ``${...}`` replaced, references inside values included."""
    for _ in range(10):
        resolved = REFERENCE.sub(lambda match: values[match.group(1)], text)
        if resolved == text:
            return resolved
        text = resolved
    raise AssertionError(f"references do not resolve: {text!r}")


def _job_parameters(job: dict[str, Any]) -> dict[str, str]:
    return {parameter["name"]: parameter["default"] for parameter in job.get("parameters", [])}


def _job_file_prefix(path: Path) -> list[str]:
    """The arguments a jobs/*.py entry point puts before its own, read from ``main([..., *sys.argv[1:]])``."""
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "main"):
            continue
        if not (node.args and isinstance(node.args[0], ast.List) and node.args[0].elts):
            continue
        *fixed, rest = node.args[0].elts
        if isinstance(rest, ast.Starred) and ast.unparse(rest.value) == "sys.argv[1:]":
            words = [item.value for item in fixed if isinstance(item, ast.Constant)]
            assert len(words) == len(fixed) and all(isinstance(word, str) for word in words), path
            return words
    raise AssertionError(f"{path}: no main([..., *sys.argv[1:]]) call")


def _task_argv(task: dict[str, Any]) -> list[str] | None:
    """The ``surveil`` arguments a wheel or script task runs with (unresolved), or None for other tasks."""
    if "python_wheel_task" in task:
        return list(task["python_wheel_task"].get("parameters", []))
    if "spark_python_task" in task:
        script = task["spark_python_task"]
        return [
            *_job_file_prefix(RESOURCES_FILE.parent / script["python_file"]),
            *script.get("parameters", []),
        ]
    return None


def _parse(argv: list[str]) -> argparse.Namespace:
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"surveil {' '.join(argv)}: rejected by the CLI (exit {exc.code})") from None


def _cluster(job: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    if "new_cluster" in task:
        return task["new_cluster"]
    clusters = {cluster["job_cluster_key"]: cluster for cluster in job.get("job_clusters", [])}
    assert task.get("job_cluster_key") in clusters, f"task {task['task_key']}: no cluster of its job"
    return clusters[task["job_cluster_key"]]["new_cluster"]


def _resolved_argv(target: str, job: dict[str, Any], task: dict[str, Any]) -> list[str] | None:
    """A task's ``surveil`` arguments on ``target``, job parameters at their defaults."""
    argv = _task_argv(task)
    if argv is None:
        return None
    values, defaults = _target_values(target), _job_parameters(job)

    def resolve(item: str) -> str:
        return JOB_PARAMETER.sub(lambda match: defaults[match.group(1)], _resolve(item, values))

    return [resolve(item) for item in argv]


def _settings_inputs(target: str, job: dict[str, Any], task: dict[str, Any]) -> tuple[str, list[str]]:
    """The environment name and the ``key=value`` overrides a task loads its configuration with."""
    if "notebook_task" in task:
        values = _target_values(target)
        widgets = task["notebook_task"]["base_parameters"]
        return _resolve(widgets["env"], values), split_overrides(_resolve(widgets["overrides"], values))
    argv = _resolved_argv(target, job, task)
    assert argv is not None, f"task {task['task_key']}: neither a wheel, script nor notebook task"
    args = _parse(argv)
    return args.env_after or args.env, [*(args.set or []), *(args.set_after or [])]


TASKS = [(job_key, task["task_key"]) for job_key, _, task in _tasks()]


def _task(job_key: str, task_key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    job = _jobs()[job_key]
    return job, next(task for task in job["tasks"] if task["task_key"] == task_key)


@pytest.mark.parametrize("path", [BUNDLE_FILE, RESOURCES_FILE], ids=lambda path: path.name)
def test_bundle_files_match_the_schema(path: Path) -> None:
    """Each bundle file is a valid configuration root under the Databricks CLI's JSON Schema."""
    errors = _schema_errors(_load(path))
    assert not errors, f"{path.name}:\n" + "\n".join(errors)


def _mutate(change: str) -> dict[str, Any]:
    document = copy.deepcopy(_resources())
    job = document["resources"]["jobs"]["nightly_backfill"]
    if change == "unknown job key":
        job["max_concurent_runs"] = 1
    elif change == "text for an integer":
        job["max_concurrent_runs"] = "one"
    elif change == "schedule without timezone":
        del job["schedule"]["timezone_id"]
    elif change == "unknown pause status":
        job["schedule"]["pause_status"] = "STOPPED"
    elif change == "task without task_key":
        del job["tasks"][0]["task_key"]
    elif change == "unknown task type":
        job["tasks"][0]["spark_python_tsk"] = job["tasks"][0].pop("spark_python_task")
    return document


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("unknown job key", "'max_concurent_runs' was unexpected"),
        ("text for an integer", "max_concurrent_runs: 'one' is not valid"),
        ("schedule without timezone", "'timezone_id' is a required property"),
        ("unknown pause status", "pause_status: 'STOPPED' is not valid"),
        ("task without task_key", "'task_key' is a required property"),
        ("unknown task type", "'spark_python_tsk' was unexpected"),
    ],
)
def test_schema_rejects_broken_documents(change: str, named: str) -> None:
    """The validation has teeth: a typo, a wrong type or a missing required field fails it, by name."""
    errors = _schema_errors(_mutate(change))
    assert errors, f"the schema accepted a document with {change}"
    assert any(named in error for error in errors), errors


def test_schema_accepts_interpolations_where_values_are_typed() -> None:
    """The rewritten patterns still match ``${var.x}`` where the schema wants an integer or an enum."""
    document = copy.deepcopy(_resources())
    job = document["resources"]["jobs"]["nightly_backfill"]
    job["max_concurrent_runs"] = "${var.max_runs}"
    job["schedule"]["pause_status"] = "${var.pause_status}"
    assert not _schema_errors(document)
    job["max_concurrent_runs"] = "${bundle.no such thing}"
    assert _schema_errors(document)


def test_top_level_keys_are_known() -> None:
    """Top-level keys are the schema's own (its root accepts any extra); bundles.yml has resources only."""
    known = set(_schema()["properties"])
    assert set(_bundle()) <= known, set(_bundle()) - known
    assert set(_resources()) == {"resources"}


def test_root_includes_the_resources_file() -> None:
    """databricks.yml is the root and includes bundles.yml; every include matches a file."""
    includes = _bundle()["include"]
    assert RESOURCES_FILE.name in includes
    for pattern in includes:
        assert sorted(BUNDLE_FILE.parent.glob(pattern)), f"include {pattern!r} matches no file"
    assert "include" not in _resources(), "only the root's include is applied"


def test_targets_dev_and_prod() -> None:
    """dev (development, the default) and prod (production, one fixed root path and a run_as) exist."""
    targets = _bundle()["targets"]
    assert {name: target.get("mode") for name, target in targets.items()} == TARGETS
    assert [name for name, target in targets.items() if target.get("default")] == ["dev"]
    prod = targets["prod"]
    assert prod["workspace"]["root_path"].startswith("/Workspace/")
    assert prod["run_as"], "production mode needs run_as or a fixed root_path; this target has both"
    assert "host" not in (prod.get("workspace") or {}), "the host comes from the CLI profile"


def test_variables_are_declared_described_and_assigned() -> None:
    """Every ``${var.x}`` is declared with a description; each variable has a value for every target."""
    variables = _bundle()["variables"]
    used = _references(_bundle(), "var") | _references(_resources(), "var")
    assert used <= set(variables), f"undeclared: {sorted(used - set(variables))}"
    assert set(variables) <= used, f"declared, never used: {sorted(set(variables) - used)}"
    for name, spec in variables.items():
        assert spec.get("description"), f"variable {name} has no description"
    for target_name, target in _bundle()["targets"].items():
        assigned = target.get("variables") or {}
        assert set(assigned) <= set(variables), (
            f"{target_name} assigns undeclared {set(assigned) - set(variables)}"
        )
        for name, spec in variables.items():
            assert "default" in spec or name in assigned or name in SET_BY_USER, (
                f"variable {name} has no value for target {target_name}"
            )


def test_wheel_artifact_and_libraries() -> None:
    """The wheel is built from the project (pyproject.toml) into dist/, and every task installs it."""
    artifacts = _bundle()["artifacts"]
    wheels = [artifact for artifact in artifacts.values() if artifact.get("type") == "whl"]
    assert len(wheels) == 1
    project = (BUNDLE_FILE.parent / wheels[0]["path"]).resolve()
    assert (project / "pyproject.toml").exists()
    assert "-w dist" in wheels[0]["build"]
    for job_key, _, task in _tasks():
        globs = [library["whl"] for library in task.get("libraries", []) if "whl" in library]
        assert globs, f"{job_key}.{task['task_key']}: no wheel library"
        for pattern in globs:
            assert (RESOURCES_FILE.parent / pattern).resolve().parent == project / "dist", pattern
            assert pattern.endswith(".whl")


def test_task_files_exist() -> None:
    """Every notebook and Python file a task names exists, relative to bundles.yml; notebooks are source."""
    for job_key, _, task in _tasks():
        if "notebook_task" in task:
            notebook = RESOURCES_FILE.parent / task["notebook_task"]["notebook_path"]
            assert notebook.exists(), f"{job_key}: {notebook} does not exist"
            first_line = notebook.read_text().splitlines()[0]
            assert first_line == "# Databricks notebook source", f"{notebook} is not a source notebook"
        if "spark_python_task" in task:
            script = RESOURCES_FILE.parent / task["spark_python_task"]["python_file"]
            assert script.exists(), f"{job_key}: {script} does not exist"


def test_wheel_entry_points_exist() -> None:
    """A wheel task's package is this project and its entry point one of its [project.scripts]."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for _, _, task in _tasks():
        if "python_wheel_task" in task:
            wheel_task = task["python_wheel_task"]
            assert wheel_task["package_name"] == project["name"] == "surveillance"
            assert wheel_task["entry_point"] in project["scripts"], f"no script {wheel_task['entry_point']}"
            assert project["scripts"][wheel_task["entry_point"]] == "surveillance.cli:main"


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize(("job_key", "task_key"), TASKS)
def test_task_configuration_loads(target: str, job_key: str, task_key: str) -> None:
    """Each task's CLI arguments parse and its --env and --set assignments load as valid configuration."""
    job, task = _task(job_key, task_key)
    env, overrides = _settings_inputs(target, job, task)
    assert env == target, f"{job_key}.{task_key} runs with --env {env} on target {target}"
    values = _target_values(target)
    environ = {
        name: _resolve(value, values)
        for name, value in _cluster(job, task)["spark_env_vars"].items()
        if name != "SURVEIL_CONF_DIR"
    }
    try:
        settings = load_settings(env=env, overrides=overrides, environ=environ, directory=CONF)
    except ConfigError as exc:
        raise AssertionError(f"{job_key}.{task_key} on {target}: {exc}") from None
    namespace = f"{values['var.catalog']}.{values['var.schema']}"
    assert settings.kafka.bootstrap_servers == FAKE_KAFKA
    assert all(location.startswith(f"{namespace}.") for location in table_locations(settings).values())
    assert settings.models.registered_name == f"{namespace}.market_anomaly"


def test_task_commands() -> None:
    """The stream runs `surveil stream`, the backfill `backfill`, the comparison its notebook, training."""
    commands = {}
    for job_key, job, task in _tasks():
        argv = _resolved_argv("dev", job, task)
        if argv is not None:
            commands[job_key] = _parse(argv).command
    assert commands == {
        "quotes_stream": "stream",
        "nightly_backfill": "backfill",
        "nightly_maintenance": "maintain",
        "daily_report": "report",
        "daily_drift": "drift",
    }
    assert _job_file_prefix(ROOT / "jobs" / "compare_models.py") == ["models", "compare"]
    (comparison,) = _jobs()["model_comparison"]["tasks"]
    notebook = comparison["notebook_task"]
    assert notebook["notebook_path"].endswith("04_model_comparison.py")
    assert notebook["base_parameters"]["run_comparison"] == "yes", "the job trains, not only shows"


def test_streaming_job_is_continuous_and_single() -> None:
    """The stream is a continuous job with at most one run, and its checkpoint comes from the variable."""
    job = _jobs()["quotes_stream"]
    assert "pause_status" in job["continuous"]
    assert job["max_concurrent_runs"] == 1
    assert "schedule" not in job and "trigger" not in job, "continuous excludes schedule and trigger"
    (task,) = job["tasks"]
    assert "stream.checkpoint_dir=${var.checkpoint_root}/quotes_to_lakehouse" in _task_argv(task)


def test_backfill_job_is_scheduled_with_parameters() -> None:
    """The backfill has a Quartz cron schedule and from_date / to_date job parameters that its task uses."""
    job = _jobs()["nightly_backfill"]
    fields = job["schedule"]["quartz_cron_expression"].split()
    assert len(fields) in (6, 7), "Quartz cron: seconds minutes hours day-of-month month day-of-week [year]"
    assert "?" in (fields[3], fields[5]), "Quartz needs ? in day-of-month or day-of-week"
    assert job["schedule"]["timezone_id"]
    parameters = _job_parameters(job)
    assert set(parameters) == {"from_date", "to_date"}
    event_range(parameters["from_date"], parameters["to_date"])  # the CLI's own parsing: raises if invalid
    (task,) = job["tasks"]
    argv = _task_argv(task) or []
    used = {name for item in argv for name in JOB_PARAMETER.findall(item)}
    assert used == set(parameters)
    assert argv[argv.index("--from") + 1] == "{{job.parameters.from_date}}"
    assert argv[argv.index("--to") + 1] == "{{job.parameters.to_date}}"


def test_job_names_carry_the_target() -> None:
    """Every job's name contains ${bundle.target}, so dev and prod copies never clash."""
    for job_key, job in _jobs().items():
        assert "${bundle.target}" in job["name"], job_key


def test_clusters_give_the_library_its_config_and_secrets() -> None:
    """Each task's cluster points SURVEIL_CONF_DIR at the synced conf/ and sets what conf/<env>.yml reads."""
    needed = set()
    for env in TARGETS:
        overlay = yaml.safe_load((CONF / f"{env}.yml").read_text())
        needed |= {name for text in _strings(overlay) for name in re.findall(r"\$\{([A-Za-z_]\w*)\}", text)}
        needed |= {overlay["kafka"]["sasl_username_env"], overlay["kafka"]["sasl_password_env"]}
    assert needed == {"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"}
    for job_key, job, task in _tasks():
        env_vars = _cluster(job, task)["spark_env_vars"]
        assert env_vars["SURVEIL_CONF_DIR"] == "${workspace.file_path}/conf", job_key
        assert needed <= set(env_vars), f"{job_key}: missing {needed - set(env_vars)}"
        for secret in ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):  # from the scope, never inline
            assert re.fullmatch(r"\{\{secrets/\$\{var\.secret_scope\}/[\w.-]+\}\}", env_vars[secret])
    excluded = (_bundle().get("sync") or {}).get("exclude") or []
    assert not any(pattern.strip("/").startswith("conf") for pattern in excluded), "conf/ must be synced"


def test_daily_report_job_writes_yesterday_as_pdf_and_csv() -> None:
    """The daily report: a Quartz schedule, a day parameter the CLI accepts, PDF and CSV into a folder."""
    from surveillance.reporting.run import day_range

    job = _jobs()["daily_report"]
    assert len(job["schedule"]["quartz_cron_expression"].split()) in (6, 7) and job["schedule"]["timezone_id"]
    parameters = _job_parameters(job)
    assert set(parameters) == {"day"}
    day_range(parameters["day"])  # the CLI's own parsing: raises if invalid
    formats = set()
    for task in job["tasks"]:
        argv = _task_argv(task) or []
        assert argv[argv.index("--day") + 1] == "{{job.parameters.day}}"
        assert argv[argv.index("--out") + 1].endswith("/"), "a folder: each day's files keep their own names"
        formats.add(argv[argv.index("--format") + 1])
    assert formats == {"pdf", "csv"}
