"""Data quality: Great Expectations suites run inside the stream, their row outcomes and history."""
