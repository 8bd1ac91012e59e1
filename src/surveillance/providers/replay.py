"""The file replay as a provider: a JSONL or CSV file's records, optionally paced, into the quotes topic.

JSONL lines go out byte for byte, CSV rows as contract JSON, exactly as `surveil replay` sends them
(:mod:`surveillance.ingestion.replay`); the provider ends when the file does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from surveillance.config import Settings
from surveillance.ingestion.replay import RateLimiter, file_format, file_records
from surveillance.providers.base import Feed, FeedRecord, ProviderError


class ReplayProvider:
    """Every record of ``ingest.replay.file`` (or ``options['file']``), then done."""

    name = "replay"

    def __init__(self, settings: Settings, symbols: Sequence[str], options: Mapping[str, Any]) -> None:
        chosen = options.get("file") or settings.ingest.replay.file
        if not chosen:
            raise ProviderError("the replay provider needs a file: --file PATH (or ingest.replay.file)")
        self.path = Path(chosen)
        self.kind = file_format(self.path)
        if not self.path.is_file():
            raise ProviderError(f"no such file to replay: {self.path}")
        self.rate = options.get("rate") or settings.ingest.replay.rate
        self.symbols = {symbol.strip() for symbol in symbols if symbol.strip()}

    def run(self, feed: Feed) -> None:
        limiter = RateLimiter(self.rate)
        blank = skipped = 0
        with self.path.open("rb") as handle:
            for value, key in file_records(handle, self.kind):
                if value is None:
                    blank += 1
                    continue
                feed.received()
                if self.symbols and (key or b"").decode("utf-8", "replace") not in self.symbols:
                    skipped += 1  # not asked for (--symbols filters a file by its records' keys)
                    continue
                limiter.wait()
                feed.publish(FeedRecord(key=key, value=value))
        feed.say(
            f"{self.path} replayed ({blank} blank line(s) skipped"
            + (f", {skipped} record(s) of other symbols left out)" if self.symbols else ")")
        )


def factory(settings: Settings, symbols: Sequence[str], options: Mapping[str, Any]) -> ReplayProvider:
    """The entry point: ``surveil ingest --provider replay --file quotes.jsonl [--rate 500]``."""
    return ReplayProvider(settings, symbols, options)
