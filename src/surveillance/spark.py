"""The SparkSession: Delta and the Kafka connector on a laptop, whatever the cluster provides elsewhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from surveillance.config import Settings

SPARK_VERSION = "4.1.3"
KAFKA_CONNECTOR = f"org.apache.spark:spark-sql-kafka-0-10_2.13:{SPARK_VERSION}"
# Maven Central as reachable here has no spark-token-provider-kafka for any 4.1.x release, which the
# connector's pom names. Its 4.0.0 build is binary compatible (checked by the integration tests): we
# exclude the missing one from Ivy's resolution and put that jar on the classpath instead.
TOKEN_PROVIDER = "org.apache.spark:spark-token-provider-kafka-0-10_2.13"
TOKEN_PROVIDER_VERSION = "4.0.0"


def jar_cache() -> Path:
    """Where jars fetched by the project live: outside the repository, so later runs reuse them."""
    return Path(os.environ.get("SURVEIL_JAR_CACHE", Path.home() / ".cache" / "surveillance"))


def ensure_maven_artifact(coordinates: str, dest: Path) -> Path:
    """Download one jar (group:artifact:version) from Maven Central into ``dest`` unless present."""
    _group, artifact, version = coordinates.split(":")
    jar = dest / f"{artifact}-{version}.jar"
    if jar.exists():
        return jar
    if shutil.which("mvn") is None:
        raise RuntimeError(f"Maven (mvn) is needed to fetch {coordinates}; install it or place {jar} by hand")
    dest.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mvn", "-q", "-B", "dependency:copy", f"-Dartifact={coordinates}", f"-DoutputDirectory={dest}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not jar.exists():
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise RuntimeError(f"could not fetch {coordinates} from Maven Central:\n{tail}")
    return jar


ROCKSDB_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"


def scheduler_pools_file(settings: Settings) -> Path:
    """The FAIR scheduler's pools (detection weighted over lakehouse), written under the state dir."""
    from surveillance.config import resolve_local_path

    path = Path(resolve_local_path(settings.state_dir)) / "spark" / "fairscheduler.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    weight = settings.detection.pool_weight
    path.write_text(
        '<?xml version="1.0"?>\n<allocations>\n'
        f'  <pool name="detection"><schedulingMode>FIFO</schedulingMode><weight>{weight}</weight>'
        "<minShare>1</minShare></pool>\n"
        '  <pool name="lakehouse"><schedulingMode>FIFO</schedulingMode><weight>1</weight>'
        "<minShare>0</minShare></pool>\n"
        "</allocations>\n"
    )
    return path


# The driver JVM's class-data archive (JDK AppCDS): the classes a stream's start loads (Spark SQL, Delta,
# the Kafka source, the state store), parsed and verified once by `surveil setup` and mapped by every later
# start. Measured here: the detection query's start-up falls from ~27 s to ~20 s. The JVM checks the archive
# against its own build and class path and ignores one that does not match (-Xshare:auto).
CLASS_ARCHIVE = "spark-driver.jsa"


def class_archive() -> Path:
    return jar_cache() / CLASS_ARCHIVE


def _class_archive_key() -> str:
    from importlib.metadata import version

    java = shutil.which("java") or os.environ.get("JAVA_HOME", "")
    return json.dumps(
        {"java": os.path.realpath(java), "pyspark": version("pyspark"), "delta": version("delta-spark")}
    )


def class_archive_is_current() -> bool:
    """Whether the class-data archive exists and was made by this Java, PySpark and Delta."""
    stamp = class_archive().with_suffix(".json")
    return class_archive().exists() and stamp.exists() and stamp.read_text() == _class_archive_key()


def _driver_java_options(configured: str | None, archive_out: Path | None = None) -> str:
    """The driver's JVM options: the configured ones, after the class-data archive's (mapped if current,
    or written at exit to ``archive_out``); the archive's own log lines are off either way."""
    cds = "-Xlog:cds=off -Xlog:cds+dynamic=off"
    if archive_out is not None:
        cds = f"-XX:ArchiveClassesAtExit={archive_out} {cds}"
    elif class_archive_is_current():
        cds = f"-XX:SharedArchiveFile={class_archive()} -Xshare:auto {cds}"
    else:
        cds = ""
    return " ".join(part for part in (cds, configured or "") if part)


def build_class_archive(settings: Settings) -> Path:
    """Write the driver's class-data archive: a child process starts Spark, runs what a stream's start
    runs (Delta create/append/MERGE/read, a Kafka source planned, a stateful pandas stream into Delta by
    foreachBatch) and exits; its JVM dumps every class it loaded."""
    target = class_archive()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    env = {**os.environ, "SURVEIL_CLASS_ARCHIVE_OUT": str(partial)}
    done = subprocess.run(
        [sys.executable, "-m", "surveillance.warmup", settings.to_json()],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not partial.exists():
        raise RuntimeError(f"could not write the class-data archive:\n{done.stderr[-3000:]}")
    partial.replace(target)
    target.with_suffix(".json").write_text(_class_archive_key())
    return target


def running_on_cluster() -> bool:
    # Databricks and spark-submit start the JVM themselves (with their own jars / --packages); pyspark
    # then connects to it through PYSPARK_GATEWAY_PORT instead of launching one.
    return "DATABRICKS_RUNTIME_VERSION" in os.environ or "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(settings: Settings, app_name: str | None = None) -> SparkSession:
    """The active session if there is one (Databricks, spark-submit), else a local one with Delta + Kafka."""
    active = SparkSession.getActiveSession()
    if active is not None:
        # Event dates, partitions and bars are UTC days: the one session setting the library relies on.
        active.conf.set("spark.sql.session.timeZone", "UTC")
        return active
    builder = SparkSession.builder.appName(app_name or settings.spark.app_name)
    spark_conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.spark.shuffle_partitions),
        "spark.ui.enabled": str(settings.spark.ui_enabled).lower(),
        "spark.driver.memory": settings.spark.driver_memory,
        "spark.ui.showConsoleProgress": "false",
        # Delta rebuilds table snapshots with 50 tasks by default: on a few cores that overhead dominates
        # small micro-batches. A cluster overrides this through spark.conf.
        "spark.databricks.delta.snapshotPartitions": str(settings.spark.shuffle_partitions),
        # The .crc checksum written after each commit is an optional integrity aid that costs an extra
        # pass per commit; micro-batches commit several times each.
        "spark.databricks.delta.writeChecksumFile.enabled": "false",
        "spark.sql.streaming.stopGracefullyOnShutdown": "true",
        # Two queries share the cores: the detection query's short jobs start as soon as a core frees
        # (FAIR pools, the detection pool weighted higher) instead of queueing behind lakehouse jobs.
        "spark.scheduler.mode": "FAIR",
        "spark.scheduler.allocation.file": str(scheduler_pools_file(settings)),
        # The detection query's per-symbol state: RocksDB, committing a changelog rather than a snapshot.
        "spark.sql.streaming.stateStore.providerClass": ROCKSDB_PROVIDER,
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        # The parse + routing projection is one large expression tree; inferring constraints from it
        # before the stateful operator exhausted a 2 GB driver while planning (measured here). Filters are
        # written explicitly, so inferred ones gain nothing.
        "spark.sql.constraintPropagation.enabled": "false",
    }
    spark_conf.update(settings.spark.conf)
    if settings.spark.class_archive and not running_on_cluster():
        archive_out = os.environ.get("SURVEIL_CLASS_ARCHIVE_OUT")
        options = _driver_java_options(
            spark_conf.get("spark.driver.extraJavaOptions"), Path(archive_out) if archive_out else None
        )
        if options:
            spark_conf["spark.driver.extraJavaOptions"] = options
    if settings.spark.master and not running_on_cluster():
        # Under spark-submit the master is the one given to it (--master), never a configured one.
        builder = builder.master(settings.spark.master)
    for key, value in spark_conf.items():
        builder = builder.config(key, value)
    if not running_on_cluster():
        from delta import configure_spark_with_delta_pip

        # Python workers (model features and scoring) must run this interpreter, which has the library and
        # its dependencies; left alone, Spark would start whatever `python3` is first on the PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

        token_jar = ensure_maven_artifact(
            f"{TOKEN_PROVIDER}:{TOKEN_PROVIDER_VERSION}", jar_cache() / "spark-jars"
        )
        builder = builder.config("spark.jars.excludes", TOKEN_PROVIDER).config("spark.jars", str(token_jar))
        builder = configure_spark_with_delta_pip(builder, extra_packages=[KAFKA_CONNECTOR])
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.spark.log_level)
    return spark
