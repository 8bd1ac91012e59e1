"""The streaming job: Kafka source, checkpoint, and the foreachBatch body that ties the layers together."""
