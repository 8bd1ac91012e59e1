"""A fix for Spark's Python workers on Python 3.11: each task no longer re-reads pyspark.zip.

Before every task a PySpark worker calls ``importlib.invalidate_caches()``. On Python 3.10 and 3.11 that
makes every ``zipimporter`` re-read its archive's whole directory at once (CPython issue gh-103200, fixed
in 3.12 by re-reading lazily). A worker's path holds Spark's own ``pyspark.zip`` (1,328 entries) and
``py4j-*-src.zip``, its core jar, and every jar of ``spark.jars.packages`` (Delta, the Kafka connector and
their dependencies: Spark adds a package's jars to the Python path in case they carry Python code), each
with an importer per package looked up in it. Measured here with py-spy: ~70 % of a reused worker's time,
~0.5 s per task, every micro-batch, before the first row reaches our function.

Those archives are fetched once per application and never change while a worker runs, so their importers
skip the re-read; any other archive (a user's ``--py-files`` zip) keeps the standard behaviour.
Installed when :mod:`surveillance` is imported, which a worker does before running any of our functions.
"""

from __future__ import annotations

import os
import re
import sys
import zipimport

# Spark's Python sources and py4j as zips; JVM jars (Spark's core jar, the packages' jars).
_SPARK_ARCHIVES = re.compile(r"^(pyspark\.zip|py4j-[0-9.]+-src\.zip|.+\.jar)$")


def is_spark_archive(path: str) -> bool:
    """Whether ``path`` is one of the archives Spark itself puts on its Python workers' path."""
    return _SPARK_ARCHIVES.match(os.path.basename(path)) is not None


def skip_rescans_of_spark_archives() -> None:
    """Make ``invalidate_caches()`` a no-op for importers of Spark's own archives (Python < 3.12 only)."""
    if sys.version_info >= (3, 12) or getattr(zipimport.zipimporter, "_surveil_patched", False):
        return
    standard = zipimport.zipimporter.invalidate_caches

    def invalidate_caches(self: zipimport.zipimporter) -> None:
        if not is_spark_archive(self.archive):
            standard(self)

    zipimport.zipimporter.invalidate_caches = invalidate_caches
    zipimport.zipimporter._surveil_patched = True
