"""The Databricks notebooks' shape and the local shim that runs them (cells, widgets, display), no Spark."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from surveillance import cli
from surveillance.config import ConfigError, load_settings
from surveillance.notebook import runner, split_overrides
from surveillance.notebook.explore import summarize_preview
from surveillance.notebook.local import (
    InputWidgetNotDefined,
    LocalDbutils,
    LocalDisplay,
    LocalWidgets,
    WidgetError,
)
from surveillance.notebook.model_runs import split_runs
from surveillance.notebook.runner import (
    NotebookError,
    find_notebook,
    list_notebooks,
    notebook_title,
    run_notebook,
    split_cells,
)
from surveillance.notebook.watch import batch_line
from surveillance.reporting.dashboard import (
    alert_heatmap_figure,
    alert_timeline_figure,
    busiest_symbol,
    candlestick_figure,
)

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
EXPECTED = [
    "01_explore_replay",
    "02_streaming_pipeline",
    "03_data_quality",
    "04_model_comparison",
    "05_surveillance_dashboard",
]
WIDGET_CALL = re.compile(r"dbutils\.widgets\.(text|dropdown|combobox|multiselect)\(\s*\"([^\"]+)\"")


def notebook(*cells: str) -> str:
    """A notebook in Databricks source format from cell texts."""
    return "# Databricks notebook source\n" + "\n\n# COMMAND ----------\n\n".join(cells) + "\n"


# --- the notebooks themselves -------------------------------------------------------------------------------


def test_the_five_notebooks_exist() -> None:
    assert [path.stem for path in sorted(NOTEBOOKS.glob("*.py"))] == EXPECTED
    assert [path.stem for path in list_notebooks(NOTEBOOKS)] == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_is_thin_databricks_source(name: str) -> None:
    path = NOTEBOOKS / f"{name}.py"
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "# Databricks notebook source"
    cells = split_cells(text, name=name)

    header = cells[0]
    assert header.kind == "markdown" and header.magic == "%md"
    assert notebook_title(path).startswith(name[:2])
    assert "**Parameters**" in header.source

    widgets = dict((widget, kind) for kind, widget in WIDGET_CALL.findall(text))
    assert widgets.get("env") == "dropdown"
    assert widgets.get("overrides") == "text"
    assert 'dbutils.widgets.dropdown("env", "local", ["local", "dev", "prod"]' in text
    # Every parameter is documented in the header, and every widget read is one the notebook defines.
    for widget in widgets:
        assert f"`{widget}`" in header.source, f"{name}: widget {widget} missing from the header"
    for read in re.findall(r"dbutils\.widgets\.get\(\"([^\"]+)\"\)", text):
        assert read in widgets, f"{name}: reads undefined widget {read}"
    assert 'load_settings(env=env, overrides=split_overrides(dbutils.widgets.get("overrides")))' in text
    assert "assert " in text

    assert "%run" not in text and "sys.path" not in text
    assert '.format("delta")' not in text, "tables are read with surveillance.lakehouse.read_table"
    assert all(cell.kind in ("python", "markdown") for cell in cells)
    for cell in cells:
        if cell.kind == "python":
            compile("\n" * (cell.line - 1) + cell.source, str(path), "exec")


# --- the cell splitter --------------------------------------------------------------------------------------


def test_split_cells_numbers_cells_and_keeps_file_lines() -> None:
    text = notebook(
        "# MAGIC %md\n# MAGIC # Title\n# MAGIC Some text",
        "x = 1\ny = x + 1",
        "# DBTITLE 1,Install\n# MAGIC %pip install something",
        "# MAGIC %sql\n# MAGIC SELECT 1",
    )
    cells = split_cells(text)
    assert [(cell.number, cell.kind) for cell in cells] == [
        (1, "markdown"),
        (2, "python"),
        (3, "pip"),
        (4, "magic"),
    ]
    lines = text.splitlines()
    assert lines[cells[1].line - 1] == "x = 1"
    assert cells[0].source == "%md\n# Title\nSome text"
    assert cells[1].first_line == "x = 1"
    assert cells[3].magic == "%sql"


def test_split_cells_refuses_what_is_not_a_databricks_notebook() -> None:
    with pytest.raises(NotebookError, match="first line must be"):
        split_cells("print(1)\n", name="plain.py")
    with pytest.raises(NotebookError, match=r"cell 1 .*mixes"):
        split_cells(notebook("# MAGIC %md\nprint(1)"))


def test_split_cells_skips_empty_cells() -> None:
    text = "# Databricks notebook source\n\n# COMMAND ----------\n\nx = 1\n\n# COMMAND ----------\n\n"
    assert [(cell.number, cell.source) for cell in split_cells(text)] == [(1, "x = 1")]


# --- widgets ------------------------------------------------------------------------------------------------


def test_widgets_defaults_and_parameters() -> None:
    widgets = LocalWidgets({"env": "dev", "symbols": "3"})
    widgets.dropdown("env", "local", ["local", "dev", "prod"], "Environment")
    widgets.text("symbols", "8")
    widgets.text("overrides", "")
    widgets.combobox("symbol", "ACME", ["ACME", "BOLT"])
    widgets.multiselect("rules", "price_jump", ["price_jump", "volume_spike"])
    assert widgets.get("env") == "dev"
    assert widgets.get("symbols") == "3"
    assert widgets.get("overrides") == ""
    assert widgets.get("symbol") == "ACME"
    assert widgets.getAll() == {
        "env": "dev",
        "symbols": "3",
        "overrides": "",
        "symbol": "ACME",
        "rules": "price_jump",
    }
    assert widgets.unknown_parameters() == []
    widgets.remove("symbol")
    with pytest.raises(InputWidgetNotDefined):
        widgets.get("symbol")
    widgets.removeAll()
    assert widgets.getAll() == {}


def test_reading_an_undefined_widget_raises_like_databricks() -> None:
    widgets = LocalWidgets()
    widgets.text("overrides", "")
    with pytest.raises(
        InputWidgetNotDefined, match=r"No input widget named 'overide' .*did you mean 'overrides'"
    ):
        widgets.get("overide")


def test_widget_choices_are_enforced() -> None:
    with pytest.raises(WidgetError, match="default value 'qa'"):
        LocalWidgets().dropdown("env", "qa", ["local", "dev", "prod"])
    with pytest.raises(WidgetError, match=r"parameter 'prd' .*did you mean 'prod'"):
        LocalWidgets({"env": "prd"}).dropdown("env", "local", ["local", "dev", "prod"])
    with pytest.raises(WidgetError, match="parameter 'b'"):
        LocalWidgets({"rules": "a,b"}).multiselect("rules", "a", ["a", "c"])
    combobox = LocalWidgets({"symbol": "ZZZ"})
    combobox.combobox("symbol", "ACME", ["ACME"])  # a combobox takes any value
    assert combobox.get("symbol") == "ZZZ"


def test_unknown_parameters_are_reported() -> None:
    widgets = LocalWidgets({"env": "local", "simbol": "ACME"})
    widgets.dropdown("env", "local", ["local", "dev", "prod"])
    widgets.text("symbol", "")
    assert widgets.unknown_parameters() == ["simbol"]


def test_dbutils_has_widgets_only() -> None:
    dbutils = LocalDbutils(LocalWidgets())
    with pytest.raises(AttributeError, match=r"dbutils\.fs is not available outside Databricks"):
        dbutils.fs.ls("/")


# --- overrides ----------------------------------------------------------------------------------------------


def test_split_overrides() -> None:
    text = "state_dir=/tmp/x\n\n  kafka.topics.quotes=q1 ; stream.max_offsets_per_trigger=5000\n# a comment\n"
    assert split_overrides(text) == [
        "state_dir=/tmp/x",
        "kafka.topics.quotes=q1",
        "stream.max_offsets_per_trigger=5000",
    ]
    assert split_overrides("") == []
    settings = load_settings(env="local", overrides=split_overrides(text))
    assert settings.kafka.topics.quotes == "q1" and settings.stream.max_offsets_per_trigger == 5000
    with pytest.raises(ConfigError, match="expected key=value, got 'oops'"):
        split_overrides("a=1; oops")


# --- the runner ---------------------------------------------------------------------------------------------


class FakeSpark:
    """Stands in for the session: these notebooks never touch it."""

    stopped = False

    def stop(self) -> None:
        self.stopped = True


def write_notebook(tmp_path: Path, *cells: str, name: str = "07_small.py") -> Path:
    path = tmp_path / name
    path.write_text(notebook(*cells), encoding="utf-8")
    return path


WIDGET_CELL = 'dbutils.widgets.text("overrides", "")\ndbutils.widgets.text("symbol", "ACME")'


def test_run_notebook_shares_one_namespace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_notebook(
        tmp_path,
        "# MAGIC %md\n# MAGIC # Small",
        WIDGET_CELL,
        'symbol = dbutils.widgets.get("symbol")\nassert spark is not None',
        "# MAGIC %pip install nothing",
        "result = symbol * 2",
    )
    run = run_notebook(path, {"symbol": "BOLT"}, out_dir=tmp_path / "out", spark=FakeSpark())
    assert run.namespace["result"] == "BOLTBOLT"
    assert run.cells_run == 3
    out = capsys.readouterr().out
    assert "skipped '%pip install nothing'" in out
    assert "[07_small · cell 3/5] symbol = dbutils.widgets.get" in out


def test_unknown_parameter_stops_the_run_after_the_widgets(tmp_path: Path) -> None:
    path = write_notebook(tmp_path, WIDGET_CELL, "side_effect = True")
    with pytest.raises(
        NotebookError, match=r"no widget takes: 'simbol' \(did you mean 'symbol'\?\)"
    ) as error:
        run_notebook(path, {"simbol": "BOLT"}, out_dir=tmp_path / "out", spark=FakeSpark())
    assert "symbol" in str(error.value)


def test_a_parameter_for_a_notebook_without_widgets_is_an_error(tmp_path: Path) -> None:
    path = write_notebook(tmp_path, "x = 1")
    with pytest.raises(NotebookError, match="no widget takes: 'x'"):
        run_notebook(path, {"x": "1"}, out_dir=tmp_path / "out", spark=FakeSpark())


def test_cell_error_names_notebook_cell_and_first_line(tmp_path: Path) -> None:
    path = write_notebook(tmp_path, "# MAGIC %md\n# MAGIC # T", "x = 1", "\n\ny = x + 1\nz = 1 / 0")
    with pytest.raises(NotebookError) as error:
        run_notebook(path, out_dir=tmp_path / "out", spark=FakeSpark())
    message = str(error.value)
    assert str(path) in message and "cell 3" in message and "'y = x + 1'" in message
    assert "ZeroDivisionError" in message
    assert isinstance(error.value.__cause__, ZeroDivisionError)
    # The traceback points at the notebook file's own line.
    frames = []
    traceback = error.value.__cause__.__traceback__
    while traceback is not None:
        frames.append((traceback.tb_frame.f_code.co_filename, traceback.tb_lineno))
        traceback = traceback.tb_next
    assert (str(path), path.read_text().splitlines().index("z = 1 / 0") + 1) in frames


def test_syntax_error_names_the_cell(tmp_path: Path) -> None:
    path = write_notebook(tmp_path, "x = 1", "y = (")
    with pytest.raises(NotebookError, match=r"cell 2 \(line 6: 'y = \('\) failed: SyntaxError"):
        run_notebook(path, out_dir=tmp_path / "out", spark=FakeSpark())


def test_unsupported_magic_is_refused_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = write_notebook(tmp_path, f"open({str(marker)!r}, 'w').close()", "# MAGIC %run ./helpers")
    with pytest.raises(NotebookError, match=r"cell 2 .*%run runs only on Databricks"):
        run_notebook(path, out_dir=tmp_path / "out", spark=FakeSpark())
    assert not marker.exists()


def test_display_writes_figures_and_prints_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "09_stale.html").write_text("old")
    (out / "notes.txt").write_text("keep")
    before = pio.renderers.default
    path = write_notebook(
        tmp_path,
        "import pandas as pd\nimport plotly.graph_objects as go",
        "go.Figure(layout={'title': {'text': 'Alerts by rule & symbol'}}).show()",
        "display(go.Figure())\ndisplayHTML('<b>hello</b>')",
        "display(pd.DataFrame({'rule': ['price_jump'] * 25, 'n': range(25)}))",
    )
    run = run_notebook(path, out_dir=out, spark=FakeSpark())
    assert [file.name for file in run.files] == [
        "01_alerts_by_rule_symbol.html",
        "02_figure.html",
        "03_html.html",
    ]
    assert sorted(file.name for file in out.iterdir()) == [
        "01_alerts_by_rule_symbol.html",
        "02_figure.html",
        "03_html.html",
        "notes.txt",
        "plotly.min.js",
    ]
    assert 'src="plotly.min.js"' in run.files[0].read_text()
    assert "<b>hello</b>" in run.files[2].read_text()
    printed = capsys.readouterr().out
    assert f"[display] wrote {out / '01_alerts_by_rule_symbol.html'}" in printed
    assert "price_jump" in printed and "(first 20 of 25 rows)" in printed
    assert pio.renderers.default == before


def test_display_of_a_spark_like_frame_shows_its_first_rows(capsys: pytest.CaptureFixture[str]) -> None:
    class Frame:
        def __init__(self, rows: int) -> None:
            self.rows = rows

        def limit(self, n: int) -> Frame:
            return Frame(min(n, self.rows))

        def toPandas(self) -> pd.DataFrame:
            return pd.DataFrame({"n": range(self.rows)})

    shown = LocalDisplay(Path("unused"), rows=5)
    shown.display(Frame(100))
    assert capsys.readouterr().out.rstrip().endswith("(first 5 rows)")
    shown.display(Frame(3))
    assert "first" not in capsys.readouterr().out


def test_find_notebook_by_number_stem_or_path(tmp_path: Path) -> None:
    one = write_notebook(tmp_path, "x = 1", name="01_first.py")
    two = write_notebook(tmp_path, "x = 2", name="02_second.py")
    (tmp_path / "helper.py").write_text("x = 3\n")
    assert list_notebooks(tmp_path) == [one, two]
    assert find_notebook("01", tmp_path) == one
    assert find_notebook("02_second", tmp_path) == two
    assert find_notebook(str(two)) == two
    with pytest.raises(NotebookError, match="did you mean '02_second'"):
        find_notebook("02_secnd", tmp_path)
    with pytest.raises(NotebookError, match="no notebook file"):
        find_notebook(str(tmp_path / "missing.py"))


def test_cli_passes_params_env_and_set_to_the_notebook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pyspark.sql import SparkSession

    session = FakeSpark()
    monkeypatch.setattr(runner, "_spark_for", lambda parameters, app_name: session)
    # As from a fresh `surveil` process: no session yet, so the run owns (and stops) the one it starts.
    monkeypatch.setattr(SparkSession, "getActiveSession", staticmethod(lambda: None))
    path = write_notebook(
        tmp_path,
        'dbutils.widgets.dropdown("env", "local", ["local", "dev", "prod"])\n'
        'dbutils.widgets.text("overrides", "")\ndbutils.widgets.text("symbol", "")',
        'print("seen", dbutils.widgets.get("env"), repr(dbutils.widgets.get("overrides")), '
        'dbutils.widgets.get("symbol"))',
    )
    args = ["--env", "dev", "notebook", "run", str(path), "--param", "symbol=ACME"]
    args += ["--param", "overrides=a.b=1", "--set", "c.d=2", "--out", str(tmp_path / "out")]
    assert cli.main(args) == 0
    assert "seen dev 'a.b=1\\nc.d=2' ACME" in capsys.readouterr().out
    assert session.stopped

    assert cli.main(["notebook", "run", str(path), "--param", "simbol=ACME"]) == 1
    assert "no widget takes: 'simbol' (did you mean 'symbol'?)" in capsys.readouterr().err


def test_cli_lists_the_notebooks(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(NOTEBOOKS.parent)
    assert cli.main(["notebook", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == EXPECTED


# --- the pure pieces the notebooks call ---------------------------------------------------------------------


def alerts_frame() -> pd.DataFrame:
    rows: list[dict[str, Any]] = [
        {"symbol": "ACME", "rule": "price_jump", "severity": "high", "minute": 1, "price": 10.0},
        {"symbol": "ACME", "rule": "model", "severity": "low", "minute": 2, "price": 10.5},
        {"symbol": "BOLT", "rule": "volume_spike", "severity": "medium", "minute": 3, "price": 20.0},
        {"symbol": "BOLT", "rule": "price_jump", "severity": "high", "minute": 4, "price": 21.0},
    ]
    frame = pd.DataFrame(rows)
    frame["event_time"] = pd.Timestamp("2026-11-20 14:30") + pd.to_timedelta(frame.pop("minute"), unit="min")
    return frame.assign(
        alert_id=[f"a{i}" for i in range(len(frame))],
        confidence="high",
        event_id=[f"e{i}" for i in range(len(frame))],
        score=0.1,
        threshold=0.05,
    )


def test_busiest_symbol_breaks_ties_by_name() -> None:
    alerts = alerts_frame()
    assert busiest_symbol(alerts) == "ACME"
    assert busiest_symbol(alerts[alerts.symbol == "BOLT"]) == "BOLT"
    assert busiest_symbol(alerts.iloc[0:0]) is None


def test_candlestick_marks_the_chosen_symbols_alerts() -> None:
    bars = pd.DataFrame(
        {
            "symbol": "ACME",
            "bar_start": pd.date_range("2026-11-20 14:30", periods=3, freq="min"),
            "open": [10.0, 10.2, 10.4],
            "high": [10.3, 10.6, 10.5],
            "low": [9.9, 10.1, 10.2],
            "close": [10.2, 10.4, 10.3],
            "volume": [100, 200, 150],
        }
    )
    fig = candlestick_figure(bars, alerts_frame(), "ACME")
    kinds = [trace.type for trace in fig.data]
    assert kinds == ["candlestick", "bar", "scatter", "scatter"]
    markers = {trace.name: trace for trace in fig.data if trace.type == "scatter"}
    assert set(markers) == {"model", "price_jump"}
    assert list(markers["price_jump"].y) == [10.0]
    assert "2 alerts" in fig.layout.title.text


def test_alert_timeline_and_heatmap() -> None:
    alerts = alerts_frame()
    timeline = alert_timeline_figure(alerts)
    assert [trace.name for trace in timeline.data] == ["high", "medium", "low"]
    heatmap = alert_heatmap_figure(alerts).data[0]
    assert list(heatmap.x) == ["ACME", "BOLT"]
    assert list(heatmap.y) == ["model", "price_jump", "volume_spike"]
    assert heatmap.z.tolist() == [[1, 0], [1, 1], [0, 1]]
    empty = alerts.iloc[0:0]
    assert isinstance(alert_heatmap_figure(empty), go.Figure)
    assert alert_timeline_figure(empty).data == ()
    # The alerts of one episode count once (no episode: an alert of its own).
    assert "4 alerts in 4 episodes" in alert_timeline_figure(alerts).layout.title.text
    grouped = alerts.assign(episode_id=["ep1", "ep1", "ep2", None])
    assert "4 alerts in 3 episodes" in alert_timeline_figure(grouped).layout.title.text


def test_summarize_preview() -> None:
    minute = pd.Timestamp("2026-11-20 14:30")
    counts = pd.DataFrame(
        {
            "symbol": ["ACME", "ACME", "BOLT", "ACME", "(no symbol)"],
            "event_minute": [minute, minute + pd.Timedelta("1min"), minute, pd.NaT, pd.NaT],
            "reject_reason": [None, None, None, "price_not_number", "invalid_json"],
            "count": [5, 7, 3, 1, 2],
        }
    )
    preview = summarize_preview(counts)
    assert (preview.messages, preview.valid) == (18, 15)
    by_symbol = preview.by_symbol.set_index("symbol")
    assert by_symbol.loc["ACME"].tolist() == [12, 1]
    assert by_symbol.loc["(no symbol)"].tolist() == [0, 2]
    assert preview.by_minute["messages"].sum() == 15
    assert preview.reasons.to_dict("records") == [
        {"reason": "invalid_json", "records": 2},
        {"reason": "price_not_number", "records": 1},
    ]


def test_batch_line() -> None:
    progress = {"batchId": 3, "numInputRows": 5000, "durationMs": {"triggerExecution": 12500}}
    assert batch_line(progress) == "batch 3: 5,000 records in 12.5 s (400 records/s)"


def test_split_runs_keeps_the_latest_comparisons_detectors() -> None:
    runs = pd.DataFrame(
        {
            "run_id": ["p2", "c2a", "c2b", "p1", "c1"],
            "start_time": pd.to_datetime([5, 6, 7, 1, 2], unit="s"),
            "tags.mlflow.parentRunId": [None, "p2", "p2", None, "p1"],
            "tags.detector": [None, "fixed_jump", "gradient_boosting", None, "fixed_jump"],
            "tags.best_detector": ["gradient_boosting", None, None, "fixed_jump", None],
            "metrics.f1": [None, 0.25, 0.97, None, 0.2],
        }
    )
    split = split_runs(runs)
    assert split.latest_run_id == "p2"
    assert split.comparisons["run_id"].tolist() == ["p2", "p1"]
    assert split.detectors["detector"].tolist() == ["gradient_boosting", "fixed_jump"]
    assert split.detectors["precision"].isna().all()  # never logged: shown empty
    assert split_runs(pd.DataFrame()).latest_run_id is None
