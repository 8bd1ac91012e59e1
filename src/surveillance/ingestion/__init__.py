"""Ingestion: the quote contract, a synthetic quote generator and a file-to-Kafka replayer."""
