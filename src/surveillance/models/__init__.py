"""Anomaly models: features, detectors, evaluation, MLflow comparison and registry, stream scoring."""
