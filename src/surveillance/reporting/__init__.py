"""Summaries and plotly reports over the lakehouse tables."""
