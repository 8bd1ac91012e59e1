"""Anomaly detection on silver quotes: windowed rules (and, later, a registered model)."""
