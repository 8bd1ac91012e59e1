"""Real-time market surveillance lakehouse: Kafka -> Spark Structured Streaming -> Delta -> alerts."""

__version__ = "0.1.0"
