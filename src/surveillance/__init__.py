"""Real-time market surveillance lakehouse: Kafka -> Spark Structured Streaming -> Delta -> alerts."""

from surveillance.python_worker import skip_rescans_of_spark_archives

__version__ = "0.1.0"

# Spark's Python workers import this package before running our functions: see python_worker.
skip_rescans_of_spark_archives()
