"""The file replay as a provider: a JSONL or CSV file's records, optionally paced, into the quotes topic.

JSONL lines go out byte for byte, CSV rows as contract JSON, exactly as `surveil replay` sends them
(:mod:`surveillance.ingestion.replay`); the provider ends when the file does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from surveillance.config import Settings, resolve_local_path
from surveillance.ingestion.replay import RateLimiter, file_format, file_records
from surveillance.providers.base import Feed, FeedRecord, FeedStopped, ProviderError


class ReplayProvider:
    """Every record of ``ingest.replay.file`` (or ``options['file']``), then done."""

    name = "replay"

    def __init__(self, settings: Settings, symbols: Sequence[str], options: Mapping[str, Any]) -> None:
        chosen = options.get("file") or settings.ingest.replay.file
        if not chosen:
            raise ProviderError("the replay provider needs a file: --file PATH (or ingest.replay.file)")
        self.path = Path(chosen)
        try:
            self.kind = file_format(self.path)
        except ValueError as exc:
            raise ProviderError(str(exc)) from None
        if not self.path.is_file():
            raise ProviderError(f"no such file to replay: {self.path}")
        self.rate = options.get("rate") or settings.ingest.replay.rate
        self.symbols = {symbol.strip() for symbol in symbols if symbol.strip()}
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.not_sent = (
            Path(resolve_local_path(settings.state_dir))
            / "ingest"
            / f"{self.path.stem}.not-sent.{stamp}.jsonl"
        )

    def run(self, feed: Feed) -> None:
        limiter = RateLimiter(self.rate)
        blank = skipped = 0
        with self.path.open("rb") as handle:
            records = file_records(handle, self.kind)
            for number, (value, key) in enumerate(records, start=1):
                if value is None:
                    blank += 1
                    continue
                feed.received()
                if self.symbols and (key or b"").decode("utf-8", "replace") not in self.symbols:
                    skipped += 1  # not asked for (--symbols filters a file by its records' keys)
                    continue
                limiter.wait()
                try:
                    feed.publish(FeedRecord(key=key, value=value))
                except FeedStopped:
                    self._keep_the_rest(value, records, number, feed)
                    raise
        feed.say(
            f"{self.path} replayed ({blank} blank line(s) skipped"
            + (f", {skipped} record(s) of other symbols left out)" if self.symbols else ")")
        )

    def _keep_the_rest(
        self, value: bytes, records: Iterator[tuple[bytes | None, bytes | None]], number: int, feed: Feed
    ) -> None:
        """A stop: this record and the rest of the file go to a file `surveil replay` sends as it is."""
        self.not_sent.parent.mkdir(parents=True, exist_ok=True)
        with self.not_sent.open("wb") as out:
            out.write(value + b"\n")
            for rest, key in records:
                if rest is not None and (
                    not self.symbols or (key or b"").decode("utf-8", "replace") in self.symbols
                ):
                    out.write(rest + b"\n")
        feed.say(f"stopped at record {number} of {self.path}: it and the rest are in {self.not_sent}")


def factory(settings: Settings, symbols: Sequence[str], options: Mapping[str, Any]) -> ReplayProvider:
    """The entry point: ``surveil ingest --provider replay --file quotes.jsonl [--rate 500]``."""
    return ReplayProvider(settings, symbols, options)
