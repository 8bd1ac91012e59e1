"""The same jobs on a real Spark cluster: a standalone cluster on loopback, and spark-submit's command line.

``surveil cluster up`` starts a Spark standalone master and its workers from the pyspark distribution's own
classes (``bin/spark-class``: no other Spark install), each a detached process with its log and pid file
under ``<state_dir>/spark-cluster/``; ``down`` stops them. :func:`spark_submit_command` is the command line
that runs one of ``jobs/`` on any master (this one, or an existing standalone, YARN or Kubernetes cluster):
Delta and the Kafka connector as packages, the Python that has the library for the driver and executors.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from surveillance.config import Settings, resolve_local_path
from surveillance.spark import KAFKA_CONNECTOR, TOKEN_PROVIDER, TOKEN_PROVIDER_VERSION, ensure_maven_artifact
from surveillance.spark import jar_cache as spark_jar_cache

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
JOBS = ("stream", "backfill", "maintain", "compare_models")


class ClusterError(RuntimeError):
    """The local cluster could not start, or a job could not be submitted: the message says why."""


@dataclass
class ClusterStatus:
    running: bool
    master_url: str
    web_url: str
    workers_alive: int = 0
    cores: int = 0
    memory_mb: int = 0
    pids: dict[str, int] = field(default_factory=dict)
    log_dir: str = ""


def spark_home() -> Path:
    """The pyspark distribution: its ``bin/spark-class``, ``bin/spark-submit`` and ``jars/``."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def delta_package() -> str:
    """Delta's Maven coordinates for this pyspark and delta-spark, as ``configure_spark_with_delta_pip`` names
    them (``io.delta:delta-spark_<spark major.minor>_2.13:<delta>``)."""
    spark_minor = ".".join(version("pyspark").split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_2.13:{version('delta-spark')}"


def jobs_dir() -> Path:
    """``jobs/`` of the source checkout (spark-submit needs a file to run)."""
    for candidate in (Path.cwd() / "jobs", Path(__file__).resolve().parents[2] / "jobs"):
        if (candidate / "stream.py").exists():
            return candidate
    raise ClusterError("no jobs/ folder here: run from the project's root (spark-submit needs jobs/<job>.py)")


def spark_submit_command(
    master: str,
    job: str,
    job_args: Sequence[str] = (),
    *,
    python: str = sys.executable,
    executor_memory: str = "1g",
    total_executor_cores: int | None = None,
    driver_memory: str = "2g",
    py_files: Sequence[str] = (),
    conf: dict[str, str] | None = None,
) -> list[str]:
    """``spark-submit`` of ``jobs/<job>.py`` to ``master`` with our packages.

    The driver and every executor run ``python`` (it must have the library and its dependencies on every
    node: the same virtualenv on a loopback cluster, the installed wheel elsewhere; ``py_files`` ships extra
    archives). Maven Central has no 4.1.x build of the Kafka token provider the connector names, so its
    4.0.0 jar (binary compatible) replaces it, as in a local session.
    """
    if job not in JOBS:
        raise ClusterError(f"unknown job {job!r}: choose one of {', '.join(JOBS)}")
    token_jar = ensure_maven_artifact(
        f"{TOKEN_PROVIDER}:{TOKEN_PROVIDER_VERSION}", spark_jar_cache() / "spark-jars"
    )
    settings = {
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": python,
        "spark.executorEnv.PYSPARK_PYTHON": python,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        **(conf or {}),
    }
    command = [
        str(spark_home() / "bin" / "spark-submit"),
        "--master",
        master,
        "--driver-memory",
        driver_memory,
        "--executor-memory",
        executor_memory,
        "--packages",
        f"{delta_package()},{KAFKA_CONNECTOR}",
        "--exclude-packages",
        TOKEN_PROVIDER,
        "--jars",
        str(token_jar),
    ]
    if total_executor_cores:
        command += ["--total-executor-cores", str(total_executor_cores)]
    if py_files:
        command += ["--py-files", ",".join(py_files)]
    for key, value in settings.items():
        command += ["--conf", f"{key}={value}"]
    return [*command, str(jobs_dir() / f"{job}.py"), *job_args]


class LocalSparkCluster:
    """A Spark standalone master and ``workers`` workers on 127.0.0.1, from ``spark.local_cluster``."""

    def __init__(self, settings: Settings) -> None:
        self.options = settings.spark.local_cluster
        self.home = Path(resolve_local_path(settings.state_dir)) / "spark-cluster"
        self.log_dir = self.home / "logs"
        self.master_url = f"spark://127.0.0.1:{self.options.port}"
        self.web_url = f"http://127.0.0.1:{self.options.webui_port}"
        self._started: dict[str, subprocess.Popen] = {}  # daemons this object started, by role

    def up(self, timeout: float = 120) -> ClusterStatus:
        """Start whatever is not running (the master, then the workers) and wait until every worker has
        registered with the master. Idempotent."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        if self._pid("master") is None:
            self._start(
                "master",
                MASTER_CLASS,
                [
                    "--host", "127.0.0.1",
                    "--port", str(self.options.port),
                    "--webui-port", str(self.options.webui_port),
                ],
            )  # fmt: skip
        while self.master_state() is None:
            self._check_alive("master", deadline)
            time.sleep(0.5)
        for n in range(1, self.options.workers + 1):
            role = f"worker-{n}"
            if self._pid(role) is None:
                work_dir = self.home / role
                work_dir.mkdir(parents=True, exist_ok=True)
                self._start(
                    role,
                    WORKER_CLASS,
                    [
                        "--host", "127.0.0.1",
                        "--cores", str(self.options.worker_cores),
                        "--memory", self.options.worker_memory,
                        "--work-dir", str(work_dir),
                        "--webui-port", "0",  # any free port: N workers on one host
                        self.master_url,
                    ],
                )  # fmt: skip
        while (self.master_state() or {}).get("aliveworkers", 0) < self.options.workers:
            for n in range(1, self.options.workers + 1):
                self._check_alive(f"worker-{n}", deadline)
            time.sleep(0.5)
        return self.status()

    def down(self, timeout: float = 30) -> bool:
        """Stop the workers (and the executors they run), then the master. Whether anything ran."""
        roles = [f"worker-{n}" for n in range(self.options.workers, 0, -1)] + ["master"]
        stopped = False
        for role in roles:
            pid = self._pid(role)
            if pid is None:
                continue
            stopped = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            end = time.monotonic() + timeout
            while self._pid(role) is not None and time.monotonic() < end:
                time.sleep(0.2)
            if self._pid(role) is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            (self.home / f"{role}.pid").unlink(missing_ok=True)
        return stopped

    def status(self) -> ClusterStatus:
        state = self.master_state()
        pids = {
            role: pid
            for role in ["master", *(f"worker-{n}" for n in range(1, self.options.workers + 1))]
            if (pid := self._pid(role)) is not None
        }
        return ClusterStatus(
            running=state is not None,
            master_url=self.master_url,
            web_url=self.web_url,
            workers_alive=int((state or {}).get("aliveworkers", 0)),
            cores=int((state or {}).get("cores", 0)),
            memory_mb=int((state or {}).get("memory", 0)),
            pids=pids,
            log_dir=str(self.log_dir),
        )

    def _start(self, role: str, main_class: str, arguments: list[str]) -> None:
        env = {
            **os.environ,
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": "127.0.0.1",
            # Executors' Python: the interpreter that has the library (the same one as the driver here).
            "PYSPARK_PYTHON": sys.executable,
            "SPARK_LOG_DIR": str(self.log_dir),
        }
        # spark-class execs the JVM: the pid is the daemon's own. Its own session, so that a terminal's
        # Ctrl-C (or the end of the command that started it) does not stop the cluster.
        with open(self.log_dir / f"{role}.log", "ab") as log:
            process = subprocess.Popen(
                [str(spark_home() / "bin" / "spark-class"), main_class, *arguments],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.home,
                start_new_session=True,
            )
        (self.home / f"{role}.pid").write_text(f"{process.pid}\n")
        self._started[role] = process

    def _pid(self, role: str) -> int | None:
        """The pid of our live ``role`` daemon, or None."""
        try:
            pid = int((self.home / f"{role}.pid").read_text().strip())
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ValueError, ProcessLookupError, IndexError):
            return None
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap our own child if it has exited
        main_class = MASTER_CLASS if role == "master" else WORKER_CLASS
        ours = main_class.encode() in argv and (role != "master" or str(self.options.port).encode() in argv)
        return pid if ours and state not in ("Z", "X") else None

    def _check_alive(self, role: str, deadline: float) -> None:
        log = self.log_dir / f"{role}.log"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else ""
        started = self._started.get(role)
        # A daemon we started is judged by its process handle: /proc's view of it can be unreadable for a
        # moment while spark-class execs the JVM (a master was taken for dead that way, its log empty).
        running = started.poll() is None if started is not None else self._pid(role) is not None
        if not running:
            code = f" (exit code {started.returncode})" if started is not None else ""
            raise ClusterError(f"the Spark {role} exited during start-up{code}; last lines of {log}:\n{tail}")
        if time.monotonic() > deadline:
            raise ClusterError(
                f"the Spark {role} did not come up in time (left running; `surveil cluster down` stops "
                f"it); last lines of {log}:\n{tail}"
            )

    def master_state(self) -> dict | None:
        """The master's own JSON status (workers, cores, applications), or None if it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.web_url}/json/", timeout=2) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None
