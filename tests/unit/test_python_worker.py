"""Spark's own archives are not re-read before every task on Python 3.11 (see surveillance.python_worker)."""

from __future__ import annotations

import sys
import zipfile
import zipimport
from pathlib import Path

import pytest

import surveillance  # noqa: F401  (installs the fix, as a Spark worker importing us does)
from surveillance.python_worker import is_spark_archive


def test_which_archives_are_sparks() -> None:
    assert is_spark_archive("/opt/spark/python/lib/pyspark.zip")
    assert is_spark_archive("/opt/spark/python/lib/py4j-0.10.9.9-src.zip")
    assert is_spark_archive("/tmp/spark-1/userFiles-2/io.delta_delta-spark_2.13-4.4.0.jar")
    assert not is_spark_archive("/work/libs/our_udfs.zip")
    assert not is_spark_archive("/usr/lib/python311.zip")


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12 re-reads lazily: nothing to skip")
def test_a_jar_is_not_re_read_and_a_user_zip_is(tmp_path: Path) -> None:
    def archive(name: str) -> zipimport.zipimporter:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as zipped:
            zipped.writestr("first.py", "")
        importer = zipimport.zipimporter(str(path))
        with zipfile.ZipFile(path, "a") as zipped:
            zipped.writestr("second.py", "")
        importer.invalidate_caches()
        return importer

    assert archive("package.jar").find_spec("second") is None  # the directory read at first stays
    assert archive("user.zip").find_spec("second") is not None
