"""A real local Kafka broker (KRaft, from Maven Central jars) and small admin helpers."""
