"""The edges where data leaves a micro-batch: idempotent Delta writes and the alerts Kafka topic."""
