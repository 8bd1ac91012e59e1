"""Real public market data as quotes in our contract, for an optional evaluation of detectors on real markets.

The data are *not* part of the project (a clone has none): raw files copied unmodified from public GitHub
repositories into a directory beside the checkout, ``../shared/realdata`` (:data:`DEFAULT_REAL_DATA`), each
folder with a PROVENANCE.md (repository, commit, licence). Never copy them into the repository; every
function here takes the directory as an argument and :func:`find_real_data` says whether it is there.

Symbols
-------
One symbol per (source, instrument), all matching the contract's ``^[A-Z][A-Z0-9.]{0,9}$``; a prefix keeps
the same pair on different venues apart:

=================  ===============================================  ==============  ===========  ====
source folder      file(s) under the folder                         symbol          granularity  book
=================  ===============================================  ==============  ===========  ====
lean               Data/equity/usa/minute/<ticker>/*.zip            <TICKER>        1m bars      yes
                     (aapl, spy, aig, bac, ibm)                     AAPL, SPY, ...
lean               Data/future/cme/minute/es/*.zip, front contract  ESZ13           1m bars      yes
                     (root + CME month code + 2-digit year)
lean               Data/crypto/coinbase/minute/btcusd/*.zip         CB.BTCUSD       1m bars      yes
lean               Data/crypto/coinbase/minute/ethusd/*.zip         CB.ETHUSD       1m bars      yes
lean               Data/forex/oanda/minute/eurusd/*_quote.zip       EURUSD          1m bars      yes
binanceus_2023-03  data/binance/raw/BTCUSD_1m_*.csv.gz              BN.BTCUSD       1m bars      no
binanceus_2023-03  data/binance/raw/BTCUSDT_1m_*.csv.gz             BN.BTCUSDT      1m bars      no
binanceus_2023-03  data/binance/raw/BTCUSDC_1m_*.csv.gz             BN.BTCUSDC      1m bars      no
pyalgotrade        testcases/data/bitstampUSD.csv                   BS.BTCUSD       trades       no
yfinance           tests/data/ASAI-L-1h-bad-unit.csv                ASAI.L          1h bars      no
                     (the real bad print, not the -fixed copy)
yfinance           tests/data/EA-15m-no-bad-divs.csv                EA              15m bars     no
=================  ===============================================  ==============  ===========  ====

Equity tickers and futures roots follow the rule shown; crypto, forex, Binance.US, Bitstamp and Yahoo
files are looked up in the explicit tables below (:data:`LEAN_CRYPTO_SYMBOLS` and the rest). Files or
folders not covered are ignored, and a folder that is absent simply contributes nothing.

Conversion rules
----------------
A quote is ``event_id, symbol, event_time (UTC), price > 0, volume (int64 >= 0), bid, ask (NaN when the
source has none), source (the top folder)``.

- **Bar time.** Every bar becomes one quote stamped at the bar's *end* (open + bar length): the close is
  what was known then. A minute bar opening 09:30 ET is the quote of 09:31 ET.
- **Lean minute bars** (zip files holding CSVs without a header; ``Data/*/readme.md``). Times are
  milliseconds since midnight of the date in the file name: America/New_York wall clock for US equities
  (04:00-20:00 ET, so never inside a DST switch), UTC for futures, crypto and forex. Equity prices are
  deci-cents (divided by 10,000); the others are plain prices. Price = trade bar close, volume = trade bar
  volume; bid / ask = the close of the quote bar of the same minute, NaN when there is none (a trade-only
  minute) or when a side is empty or 0 in the file. A quote-only minute of an instrument that trades is
  skipped (no trade, so no price) and counted in ``skipped``. Forex has quote bars only: price = mid of
  bid close and ask close, volume 0. Coinbase volumes are fractional coins: volume = round(coins * 1000),
  i.e. milli-BTC / milli-ETH. ES zips hold one CSV per contract; only the front contract is used, the
  nearest expiry among the day's CSVs (the ``_201312`` files, December 2013, in the sample). Missing
  minutes are not forward-filled: LEAN omits bars that did not change, and we emit only what the files
  hold. A bar with bid >= ask is kept as it is (real: locked bid == ask closes, mostly SPY and BAC,
  and four crossed ES quote bars, all in quote-only minutes); the pipeline flags crossed quotes itself.
- **Binance.US klines** (``open_time,open,high,low,close,volume``, UTC open times): one quote per minute,
  price = close, volume = round(BTC * 1000) (milli-BTC: the contract needs an integer), no bid / ask,
  time = open_time + 60 s. Zero-volume minutes are kept: they are real (BTCUSDC's stale feed).
- **Bitstamp trades** (``unix_seconds,price,amount``, no header): one quote per trade, volume =
  round(amount * 1000) (milli-BTC), no bid / ask. The file repeats many trades exactly (same second,
  price and amount); each is kept as a trade of its own.
- **Fractional volumes** (Coinbase, Binance.US, Bitstamp) are rounded to the nearest integer but a
  positive amount never becomes 0: it gets 1, so volume 0 still means nothing traded (BTCUSDC's 12,971
  zero-volume minutes stay exactly those; plain rounding would add 190 minutes of under 0.0005 BTC).
- **Yahoo bars** (``Datetime`` with its UTC offset, ``Open,High,Low,Close,...,Volume``): one quote per
  bar, price = Close, volume = Volume (missing -> 0), time = bar open + 1 h or 15 min. Rows with a missing
  or non-positive Close are skipped and counted in ``skipped``.
- **Any source**: a record without a positive finite price is skipped and counted.
- **Strictly increasing times.** Times are kept to the millisecond (the contract's precision). Within a
  symbol, records that share a time (several Bitstamp trades in one second) are spread 1 ms apart in file
  order: the second gets +1 ms, the third +2 ms, and so on. In general each time is raised to at least
  1 ms after its predecessor's (a group of over 1,000 same-second trades would push on into the next
  second); no other record moves.
- **event_id** is ``<symbol>-<UTC time as YYYYMMDDTHHMMSS.fffZ>``: deterministic, unique (times are strictly
  increasing within a symbol, symbols unique) and unchanged when other files are added.

Two things to know before streaming these quotes through the pipeline: the contract's serialiser keeps
prices to 4 decimals (OANDA's EURUSD is quoted to 5, so bid / ask and the mid lose their last digit once
written as contract JSON), and the times are historical (2011-2026), so silver's event-lag expectations
see every quote as stale unless the replay shifts them to the present.

:func:`large_moves` lists the obvious ground truth: quotes more than 5 % away from the previous quote of
their symbol (the AAPL 7:1 split, the ASAI.L 100x unit error, Bitstamp's off-market prints, ...). Files
are joined as they are: CB.BTCUSD jumps from 2017-09-04 to 2017-12-17 (+334 % across a gap of three
months), which is a real move but no anomaly.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from surveillance.ingestion.contract import QUOTE_FIELDS

# ../shared/realdata beside the project's root (src/surveillance/models/ -> the checkout -> its parent).
# Meaningful in a source checkout only; an installed wheel has no such neighbour, so find_real_data()
# then returns None unless SURVEIL_REAL_DATA points at the data.
DEFAULT_REAL_DATA: Path = Path(__file__).resolve().parents[3].parent / "shared" / "realdata"
REAL_DATA_ENV = "SURVEIL_REAL_DATA"

# The contract's fields (event_id, symbol, event_time, price, volume, bid, ask), then where each came from.
QUOTE_COLUMNS: tuple[str, ...] = (*QUOTE_FIELDS, "source")
SOURCE_COLUMNS: tuple[str, ...] = (
    "symbol",
    "source",
    "files",
    "granularity",
    "has_book",
    "quotes",
    "skipped",
    "first",
    "last",
)
SYMBOL_PATTERN = re.compile(r"^[A-Z][A-Z0-9.]{0,9}$")

LEAN_CRYPTO_SYMBOLS: dict[tuple[str, str], str] = {
    ("coinbase", "btcusd"): "CB.BTCUSD",
    ("coinbase", "ethusd"): "CB.ETHUSD",
}
LEAN_FOREX_SYMBOLS: dict[tuple[str, str], str] = {("oanda", "eurusd"): "EURUSD"}
BINANCE_SYMBOLS: dict[str, str] = {"BTCUSD": "BN.BTCUSD", "BTCUSDT": "BN.BTCUSDT", "BTCUSDC": "BN.BTCUSDC"}
BITSTAMP_FILES: dict[str, str] = {"testcases/data/bitstampUSD.csv": "BS.BTCUSD"}
# file -> (symbol, bar length, granularity)
YAHOO_FILES: dict[str, tuple[str, pd.Timedelta, str]] = {
    "tests/data/ASAI-L-1h-bad-unit.csv": ("ASAI.L", pd.Timedelta(hours=1), "1h bars"),
    "tests/data/EA-15m-no-bad-divs.csv": ("EA", pd.Timedelta(minutes=15), "15m bars"),
}

CME_MONTH_CODES = "FGHJKMNQUVXZ"
MINUTE = pd.Timedelta(minutes=1)
ONE_MS_NS = 1_000_000
MILLI_UNITS = 1000  # fractional coins -> integer milli-coins
EQUITY_PRICE_SCALE = 10_000  # LEAN equity prices are deci-cents
LEAN_TRADE_NAMES = ("ms", "open", "high", "low", "close", "volume")
# Quote bars: bid OHLC and size, then ask OHLC and size; only the closes ("bid", "ask") are used.
LEAN_QUOTE_NAMES = (
    *("ms", "bid_open", "bid_high", "bid_low", "bid", "bid_size"),
    *("ask_open", "ask_high", "ask_low", "ask", "ask_size"),
)
LEAN_DATE = re.compile(r"^(\d{8})_(trade|quote)\.zip$")
CONTRACT_SUFFIX = re.compile(r"_(\d{6})\.csv$")


@dataclass
class RealQuotes:
    """Quotes of every real instrument found, and one row per symbol saying where they came from.

    ``quotes``: :data:`QUOTE_COLUMNS`, sorted by symbol then event_time (strictly increasing per symbol).
    ``sources``: :data:`SOURCE_COLUMNS`; ``files`` are paths relative to the data directory, ``skipped``
    counts the source records that gave no quote (quote-only minutes, missing or non-positive prices).
    """

    quotes: pd.DataFrame
    sources: pd.DataFrame


@dataclass
class _Instrument:
    """One symbol's converted records, in file order, before the common finishing steps."""

    symbol: str
    source: str
    granularity: str
    files: list[Path] = field(default_factory=list)
    frames: list[pd.DataFrame] = field(default_factory=list)  # event_time, price, volume, bid, ask
    skipped: int = 0

    def add(self, frame: pd.DataFrame) -> None:
        """Keep the rows with a positive finite price; count the others as skipped."""
        valid = np.isfinite(frame["price"].to_numpy(float)) & (frame["price"].to_numpy(float) > 0)
        self.skipped += int((~valid).sum())
        self.frames.append(frame.loc[valid, ["event_time", "price", "volume", "bid", "ask"]])


def find_real_data(root: Path | None = None) -> Path | None:
    """The real-data directory: ``root`` if given, else $SURVEIL_REAL_DATA if set, else
    :data:`DEFAULT_REAL_DATA`; None when that directory does not exist (a clone has none).

    The environment variable comes before the default so that it can point elsewhere even when the
    default exists.
    """
    if root is None:
        from_env = os.environ.get(REAL_DATA_ENV)
        root = Path(from_env) if from_env else DEFAULT_REAL_DATA
    root = Path(root).expanduser()
    return root if root.is_dir() else None


def load_real_quotes(root: Path) -> RealQuotes:
    """Every instrument of the module docstring's table found under ``root``, as contract quotes."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no real-data directory at {root}")
    instruments = [
        *_lean_instruments(root),
        *_binance_instruments(root),
        *_bitstamp_instruments(root),
        *_yahoo_instruments(root),
    ]
    instruments = [item for item in instruments if item.files]
    if not instruments:
        raise FileNotFoundError(f"none of the known real-data files is under {root}")
    seen: dict[str, str] = {}
    for item in instruments:
        if not SYMBOL_PATTERN.match(item.symbol):
            raise ValueError(f"symbol {item.symbol!r} does not match {SYMBOL_PATTERN.pattern}")
        if item.symbol in seen:
            raise ValueError(f"symbol {item.symbol!r} given to two instruments ({seen[item.symbol]})")
        seen[item.symbol] = item.source
    quotes = _finish(instruments)
    return RealQuotes(quotes=quotes, sources=_sources(instruments, quotes, root))


def large_moves(quotes: pd.DataFrame, threshold: float = 0.05) -> pd.DataFrame:
    """Quotes whose price moved more than ``threshold`` (absolute simple return) from the previous quote of
    their symbol, in tick order (event_time, then event_id).

    Columns: symbol, event_id, event_time, previous_price, price, ret (price / previous_price - 1). The
    previous quote may be days earlier (overnight, weekends, the gaps between sample files).
    """
    ordered = quotes.sort_values(["symbol", "event_time", "event_id"], kind="mergesort")
    previous = ordered.groupby("symbol", sort=False)["price"].shift()
    ret = ordered["price"] / previous - 1.0
    moves = ordered.assign(previous_price=previous, ret=ret).loc[ret.abs() > threshold]
    columns = ["symbol", "event_id", "event_time", "previous_price", "price", "ret"]
    return moves[columns].reset_index(drop=True)


# --- Lean -------------------------------------------------------------------------------------------


def _lean_instruments(root: Path) -> Iterator[_Instrument]:
    data = root / "lean" / "Data"
    for folder in sorted((data / "equity" / "usa" / "minute").glob("*/")):
        yield _lean_bars(folder, folder.name.upper(), "America/New_York", price_scale=EQUITY_PRICE_SCALE)
    for folder in sorted((data / "future").glob("*/minute/*/")):
        yield from _lean_futures(folder)
    for folder in sorted((data / "crypto").glob("*/minute/*/")):
        symbol = LEAN_CRYPTO_SYMBOLS.get((folder.parts[-3], folder.name))
        if symbol:
            yield _lean_bars(folder, symbol, "UTC", volume_scale=MILLI_UNITS)
    for folder in sorted((data / "forex").glob("*/minute/*/")):
        symbol = LEAN_FOREX_SYMBOLS.get((folder.parts[-3], folder.name))
        if symbol:
            yield _lean_bars(folder, symbol, "UTC", quotes_only=True)


def _lean_days(folder: Path) -> dict[str, dict[str, Path]]:
    """{YYYYMMDD: {"trade": zip, "quote": zip}} for the folder's daily zips, by date."""
    days: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.glob("*.zip")):
        match = LEAN_DATE.match(path.name)
        if match:
            days.setdefault(match.group(1), {})[match.group(2)] = path
    return dict(sorted(days.items()))


def _read_lean_csv(path: Path, names: tuple[str, ...], member: str | None = None) -> pd.DataFrame:
    """One CSV of a LEAN zip (the only one, or ``member``); prices and sizes as floats."""
    with zipfile.ZipFile(path) as archive:
        if member is None:
            csvs = [name for name in archive.namelist() if name.endswith(".csv")]
            if len(csvs) != 1:
                raise ValueError(f"{path} holds {len(csvs)} CSV files, expected one")
            member = csvs[0]
        with archive.open(member) as handle:
            frame = pd.read_csv(handle, header=None, names=list(names), dtype=float)
    frame["ms"] = frame["ms"].astype(np.int64)
    return frame


def _lean_times(date: str, ms: pd.Series, timezone: str) -> pd.Series:
    """Bar end times in UTC: open = ``date`` + ``ms`` on the data's wall clock, plus one minute."""
    opens = pd.Timestamp(date) + pd.to_timedelta(ms.to_numpy(), unit="ms")
    opens = opens.tz_localize(timezone).tz_convert("UTC")
    return pd.Series(opens + MINUTE, index=ms.index)


def _lean_day(
    date: str,
    trades: pd.DataFrame | None,
    book: pd.DataFrame | None,
    timezone: str,
    price_scale: float,
    volume_scale: float,
) -> tuple[pd.DataFrame, int]:
    """One day of one instrument: trade-priced minutes with the same minute's quote bar; the number of
    quote-only minutes skipped."""
    if trades is None:
        return _empty_records(), (0 if book is None else len(book))
    merged = trades[["ms", "close", "volume"]]
    if book is not None:
        merged = merged.merge(book[["ms", "bid", "ask"]], on="ms", how="left")
        skipped = int((~book["ms"].isin(trades["ms"])).sum())
    else:
        merged = merged.assign(bid=np.nan, ask=np.nan)
        skipped = 0
    records = pd.DataFrame(
        {
            "event_time": _lean_times(date, merged["ms"], timezone),
            "price": merged["close"] / price_scale,
            "volume": _whole(merged["volume"] * volume_scale),
            "bid": _side(merged["bid"]) / price_scale,
            "ask": _side(merged["ask"]) / price_scale,
        }
    )
    return records, skipped


def _lean_bars(
    folder: Path,
    symbol: str,
    timezone: str,
    price_scale: float = 1.0,
    volume_scale: float = 1.0,
    quotes_only: bool = False,
) -> _Instrument:
    """A LEAN minute folder with one CSV per zip (equities, crypto, forex)."""
    item = _Instrument(symbol, "lean", "1m bars")
    for date, files in _lean_days(folder).items():
        book = _read_lean_csv(files["quote"], LEAN_QUOTE_NAMES) if "quote" in files else None
        item.files.extend(files.values())
        if quotes_only:
            if book is not None:
                item.add(_mid_quotes(date, book, timezone, price_scale))
            continue
        trades = _read_lean_csv(files["trade"], LEAN_TRADE_NAMES) if "trade" in files else None
        records, skipped = _lean_day(date, trades, book, timezone, price_scale, volume_scale)
        item.skipped += skipped
        item.add(records)
    return item


def _mid_quotes(date: str, book: pd.DataFrame, timezone: str, price_scale: float) -> pd.DataFrame:
    """Quote-only instruments (forex): price = mid of the closing bid and ask, volume 0."""
    bid, ask = _side(book["bid"]) / price_scale, _side(book["ask"]) / price_scale
    return pd.DataFrame(
        {
            "event_time": _lean_times(date, book["ms"], timezone),
            "price": (bid + ask) / 2,  # NaN when a side is missing: then skipped by _Instrument.add
            "volume": np.zeros(len(book), dtype=np.int64),
            "bid": bid,
            "ask": ask,
        }
    )


def _lean_futures(folder: Path) -> Iterator[_Instrument]:
    """A LEAN futures folder: each zip holds one CSV per contract; each day uses its front contract (the
    nearest expiry), and each contract is its own symbol (a roll inside the data gives two symbols)."""
    by_symbol: dict[str, _Instrument] = {}
    for date, files in _lean_days(folder).items():
        members: dict[str, dict[str, str]] = {}  # expiry YYYYMM -> tick type -> CSV name
        for kind, path in files.items():
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    match = CONTRACT_SUFFIX.search(name)
                    if match:
                        members.setdefault(match.group(1), {})[kind] = name
        if not members:
            continue
        expiry = min(members)
        symbol = f"{folder.name.upper()}{CME_MONTH_CODES[int(expiry[4:]) - 1]}{expiry[2:4]}"
        item = by_symbol.setdefault(symbol, _Instrument(symbol, "lean", "1m bars"))
        item.files.extend(files.values())
        front = members[expiry]
        trades = (
            _read_lean_csv(files["trade"], LEAN_TRADE_NAMES, front["trade"]) if "trade" in front else None
        )
        book = _read_lean_csv(files["quote"], LEAN_QUOTE_NAMES, front["quote"]) if "quote" in front else None
        records, skipped = _lean_day(date, trades, book, "UTC", price_scale=1.0, volume_scale=1.0)
        item.skipped += skipped
        item.add(records)
    yield from by_symbol.values()


# --- Binance.US, Bitstamp, Yahoo ----------------------------------------------------------------------


def _binance_instruments(root: Path) -> Iterator[_Instrument]:
    for path in sorted(root.glob("binanceus*/data/binance/raw/*_1m_*.csv.gz")):
        symbol = BINANCE_SYMBOLS.get(path.name.split("_")[0])
        if symbol is None:
            continue
        item = _Instrument(symbol, path.relative_to(root).parts[0], "1m bars", files=[path])
        bars = pd.read_csv(path, usecols=["open_time", "close", "volume"])
        opens = pd.to_datetime(bars["open_time"], utc=True, format="ISO8601")
        item.add(_without_book(opens + MINUTE, bars["close"], _whole(bars["volume"] * MILLI_UNITS)))
        yield item


def _without_book(event_time: pd.Series, price: pd.Series, volume: pd.Series) -> pd.DataFrame:
    """Records of a source with trades or bars but no bid and ask."""
    return pd.DataFrame(
        {
            "event_time": event_time,
            "price": price.astype(float),
            "volume": volume,
            "bid": np.nan,
            "ask": np.nan,
        }
    )


def _bitstamp_instruments(root: Path) -> Iterator[_Instrument]:
    for relative, symbol in BITSTAMP_FILES.items():
        path = root / "pyalgotrade" / relative
        if not path.is_file():
            continue
        item = _Instrument(symbol, "pyalgotrade", "trades", files=[path])
        trades = pd.read_csv(path, header=None, names=["seconds", "price", "amount"])
        times = pd.to_datetime(trades["seconds"], unit="s", utc=True)
        item.add(_without_book(times, trades["price"], _whole(trades["amount"] * MILLI_UNITS)))
        yield item


def _yahoo_instruments(root: Path) -> Iterator[_Instrument]:
    for relative, (symbol, bar_length, granularity) in YAHOO_FILES.items():
        path = root / "yfinance" / relative
        if not path.is_file():
            continue
        item = _Instrument(symbol, "yfinance", granularity, files=[path])
        bars = pd.read_csv(path, usecols=["Datetime", "Close", "Volume"])
        opens = pd.to_datetime(bars["Datetime"], utc=True, format="ISO8601")
        item.add(
            pd.DataFrame(
                {
                    "event_time": opens + bar_length,
                    "price": pd.to_numeric(bars["Close"], errors="coerce"),
                    "volume": _whole(pd.to_numeric(bars["Volume"], errors="coerce")),
                    "bid": np.nan,
                    "ask": np.nan,
                }
            )
        )
        yield item


# --- common steps -------------------------------------------------------------------------------------


def _whole(amount: pd.Series) -> pd.Series:
    """The contract's integer volume: the nearest integer, but at least 1 for any positive amount, so that
    0 keeps meaning "nothing traded"; missing or negative -> 0."""
    amount = amount.fillna(0)
    return amount.round().clip(lower=1).where(amount > 0, 0).astype(np.int64)


def _side(price: pd.Series) -> pd.Series:
    """A quote side as given, NaN when the file has none (empty, or LEAN's 0 for a missing side)."""
    return price.where(price > 0)


def _empty_records() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_time": pd.Series(dtype="datetime64[ns, UTC]"),
            "price": pd.Series(dtype=float),
            "volume": pd.Series(dtype=np.int64),
            "bid": pd.Series(dtype=float),
            "ask": pd.Series(dtype=float),
        }
    )


def _finish(instruments: list[_Instrument]) -> pd.DataFrame:
    """One frame: symbols and sources attached, sorted, times made strictly increasing, ids given."""
    parts = [
        frame.assign(symbol=item.symbol, source=item.source)
        for item in instruments
        for frame in item.frames
        if len(frame)
    ]
    quotes = pd.concat(parts, ignore_index=True) if parts else _empty_records().assign(symbol="", source="")
    quotes["event_time"] = quotes["event_time"].astype("datetime64[ns, UTC]").dt.floor("ms")
    # Stable: records sharing a time keep their file order, which the 1 ms spreading below follows.
    quotes = quotes.sort_values(["symbol", "event_time"], kind="mergesort", ignore_index=True)
    quotes["event_time"] = _strictly_increasing(quotes["symbol"], quotes["event_time"])
    stamp = quotes["event_time"].dt.strftime("%Y%m%dT%H%M%S.")
    millis = (quotes["event_time"].dt.microsecond // 1000).astype(str).str.zfill(3)
    quotes["event_id"] = quotes["symbol"] + "-" + stamp + millis + "Z"
    quotes["price"] = quotes["price"].astype(float)
    quotes["volume"] = quotes["volume"].astype(np.int64)
    quotes[["bid", "ask"]] = quotes[["bid", "ask"]].astype(float)
    return quotes[list(QUOTE_COLUMNS)]


def _strictly_increasing(symbols: pd.Series, times: pd.Series) -> pd.Series:
    """Each time raised to at least 1 ms after the previous one of its symbol (rows sorted by symbol, time).

    With k the row's position in its symbol, t'_k = max(t_k, t'_(k-1) + 1 ms) = max_(j<=k)(t_j - j ms) + k ms,
    a running maximum: records sharing a time end up 1 ms apart in their order, the others do not move.
    """
    nanos = times.astype("int64")  # ns since the epoch (times are tz-aware UTC)
    position = symbols.groupby(symbols, sort=False).cumcount().astype(np.int64) * ONE_MS_NS
    raised = (nanos - position).groupby(symbols, sort=False).cummax() + position
    return pd.to_datetime(raised, utc=True)


def _sources(instruments: list[_Instrument], quotes: pd.DataFrame, root: Path) -> pd.DataFrame:
    by_symbol = quotes.groupby("symbol")
    counts = by_symbol.size()
    first, last = by_symbol["event_time"].min(), by_symbol["event_time"].max()
    has_book = (by_symbol["bid"].count() + by_symbol["ask"].count()) > 0
    rows = []
    for item in sorted(instruments, key=lambda item: item.symbol):
        rows.append(
            {
                "symbol": item.symbol,
                "source": item.source,
                "files": ", ".join(str(path.relative_to(root)) for path in item.files),
                "granularity": item.granularity,
                "has_book": bool(has_book.get(item.symbol, False)),
                "quotes": int(counts.get(item.symbol, 0)),
                "skipped": item.skipped,
                "first": first.get(item.symbol, pd.NaT),
                "last": last.get(item.symbol, pd.NaT),
            }
        )
    return pd.DataFrame(rows, columns=list(SOURCE_COLUMNS))
