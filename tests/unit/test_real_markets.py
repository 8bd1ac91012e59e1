"""Converters of real public market data into contract quotes.

Tiny files in each format, laid out as in ``../shared/realdata`` and written to a temp dir, so that these
tests run in any clone (which has no real data); one last test reads the real data when it is there.
"""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from surveillance.models.real_markets import (
    DEFAULT_REAL_DATA,
    QUOTE_COLUMNS,
    REAL_DATA_ENV,
    SYMBOL_PATTERN,
    RealQuotes,
    find_real_data,
    large_moves,
    load_real_quotes,
)

LEAN = Path("lean/Data")


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def write_zip(path: Path, members: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def build_real_data(root: Path) -> None:
    """One small instance of every format, in the real directory layout."""
    equity = root / LEAN / "equity/usa/minute"
    # 2014-06-06 is in EDT (UTC-4). Deci-cents. 09:30 ET: trade + quote; 09:31: trade only; 09:32: quote only.
    write_zip(
        equity / "aapl/20140606_trade.zip",
        {
            "20140606_aapl_minute_trade.csv": "34200000,6455000,6458000,6454000,6456500,1000\n"
            "34260000,6456500,6457000,6456000,6457000,200\n"
        },
    )
    write_zip(
        equity / "aapl/20140606_quote.zip",
        {
            "20140606_aapl_minute_quote.csv": "34200000,10000,6457000,10000,6456900,100,"
            "6457500,6457500,6457000,6457100,300\n"
            "34320000,6456000,6456000,6456000,6456000,100,6457000,6457000,6457000,6457000,100\n"
        },
    )
    # The 7:1 split: 645.70 on Friday, 92.42 at Monday's 04:00 ET pre-market open.
    write_zip(
        equity / "aapl/20140609_trade.zip",
        {"20140609_aapl_minute_trade.csv": "14400000,924200,924200,924200,924200,500\n"},
    )
    write_zip(
        equity / "aapl/20140609_quote.zip",
        {
            "20140609_aapl_minute_quote.csv": "14400000,924000,924000,924000,924000,1,"
            "924600,924600,924600,924600,1"
        },
    )
    # 2013-11-04 is in EST (UTC-5); no quote file that day.
    write_zip(
        equity / "ibm/20131104_trade.zip",
        {"20131104_ibm_minute_trade.csv": "34200000,1790000,1790000,1790000,1791000,300\n"},
    )
    # Futures: one CSV per contract, the front (201312) and the next (201403).
    es = root / LEAN / "future/cme/minute/es"
    write_zip(
        es / "20131008_trade.zip",
        {
            "20131008_es_minute_trade_201403.csv": "0,1660,1660,1660,1660.25,7\n",
            "20131008_es_minute_trade_201312.csv": "0,1667.5,1667.75,1667.25,1667.5,48\n"
            "60000,1667.5,1668,1667.25,1667.75,203\n",
        },
    )
    write_zip(
        es / "20131008_quote.zip",
        {
            "20131008_es_minute_quote_201312.csv": "0,1667.5,1667.5,1667.25,1667.25,31,"
            "1667.75,1667.75,1667.5,1667.5,24\n",
            "20131008_es_minute_quote_201403.csv": "0,1660,1660,1660,1660,1,1660.5,1660.5,1660.5,1660.5,1\n",
        },
    )
    # Crypto: UTC, fractional coin volumes; the second minute has no quote bar.
    btc = root / LEAN / "crypto/coinbase/minute/btcusd"
    write_zip(
        btc / "20170903_trade.zip",
        {
            "20170903_btcusd_minute_trade.csv": "0,4642.39,4652.71,4642.39,4652.69,6.63487803\n"
            "60000,4652.68,4654.99,4645.28,4654.33,0.0001\n"
        },
    )
    write_zip(
        btc / "20170903_quote.zip",
        {
            "20170903_btcusd_minute_quote.csv": "0,4642.42,4642.42,4642.42,4652.6,0.14,"
            "4649.95,4649.95,4649.95,4652.7,0.4\n"
        },
    )
    # Forex: quote bars only.
    write_zip(
        root / LEAN / "forex/oanda/minute/eurusd/20140508_quote.zip",
        {
            "20140508_eurusd_minute_quote.csv": "45960000,1.39862,1.39928,1.39850,1.39869,0,"
            "1.39879,1.39948,1.39870,1.39883,0"
        },
    )
    raw = root / "binanceus_2023-03/data/binance/raw/BTCUSDC_1m_20230301_20230321.csv.gz"
    raw.parent.mkdir(parents=True)
    with gzip.open(raw, "wt") as handle:
        handle.write(
            "open_time,open,high,low,close,volume\n"
            "2023-03-01 00:00:00+00:00,23143.82,23152.65,23140.02,23152.65,0.26395\n"
            "2023-03-01 00:01:00+00:00,23152.65,23152.65,23152.65,23152.65,0.0\n"
        )
    # Bitstamp: two trades in the second 1315922024, then an off-market print.
    write_text(
        root / "pyalgotrade/testcases/data/bitstampUSD.csv",
        "1315922016,5.800000000000,1.000000000000\n"
        "1315922024,5.830000000000,3.000000000000\n"
        "1315922024,5.900000000000,0.000400000000\n"
        "1315922029,15.000000000000,2.000000000000\n",
    )
    header = "Datetime,Open,High,Low,Close,Adj Close,Volume,Dividends,Stock Splits\n"
    write_text(
        root / "yfinance/tests/data/ASAI-L-1h-bad-unit.csv",
        header + "2024-10-24 15:00:00+01:00,61.5,61.5,61.5,61.5,61.5,3977,0,0\n"
        "2024-10-24 16:00:00+01:00,58.5,61.5,0.600000023841858,0.600000023841858,0.6,0,0,0\n"
        "2024-10-25 09:00:00+01:00,58.07,58.07,58.07,,58.07,984,0,0\n"
        "2024-10-25 10:00:00+01:00,58,58,58,0,58,0,0,0\n"
        "2024-10-29 15:00:00+00:00,65,65,64.25,64.25,64.25,,0,0\n",
    )
    write_text(
        root / "yfinance/tests/data/EA-15m-no-bad-divs.csv",
        header + "2026-05-26 04:00:00-04:00,170.0712,200.8117,170.0712,199.85,199.66,0,0,0\n",
    )


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> RealQuotes:
    root = tmp_path_factory.mktemp("realdata")
    build_real_data(root)
    return load_real_quotes(root)


def rows(real: RealQuotes, symbol: str) -> pd.DataFrame:
    return real.quotes[real.quotes["symbol"] == symbol].reset_index(drop=True)


def source_row(real: RealQuotes, symbol: str) -> pd.Series:
    return real.sources.set_index("symbol").loc[symbol]


def test_lean_equity_deci_cents_new_york_times_and_book(real: RealQuotes) -> None:
    aapl = rows(real, "AAPL")
    # Bar end in UTC: 09:30 EDT opens 13:30Z and closes 13:31Z; 04:00 EDT -> 08:01Z. The quote-only minute
    # 09:32 is skipped.
    assert list(aapl["event_time"]) == [
        utc("2014-06-06 13:31"),
        utc("2014-06-06 13:32"),
        utc("2014-06-09 08:01"),
    ]
    assert aapl["price"].tolist() == pytest.approx([645.65, 645.70, 92.42])
    assert aapl["volume"].tolist() == [1000, 200, 500]
    # The quote bar's closes, not its opens (the 09:30 bid opened at a stub 1.00).
    assert aapl.loc[0, ["bid", "ask"]].tolist() == pytest.approx([645.69, 645.71])
    assert aapl.loc[1, ["bid", "ask"]].isna().all()  # a trade-only minute
    assert source_row(real, "AAPL")["skipped"] == 1
    # EST after the November switch: 09:30 EST = 14:30Z.
    ibm = rows(real, "IBM")
    assert ibm["event_time"].tolist() == [utc("2013-11-04 14:31")]
    assert ibm["price"].tolist() == [179.1]
    assert ibm[["bid", "ask"]].isna().all().all()


def test_futures_use_the_front_contract_only(real: RealQuotes) -> None:
    es = rows(real, "ESZ13")
    assert not real.quotes["symbol"].str.startswith("ESH").any()
    assert es["event_time"].tolist() == [utc("2013-10-08 00:01"), utc("2013-10-08 00:02")]
    assert es["price"].tolist() == [1667.5, 1667.75]  # the 201312 CSV, not 201403's 1660.25
    assert es["volume"].tolist() == [48, 203]
    assert es.loc[0, ["bid", "ask"]].tolist() == [1667.25, 1667.5]
    assert es.loc[1, ["bid", "ask"]].isna().all()
    assert "es/20131008_trade.zip" in source_row(real, "ESZ13")["files"]


def test_crypto_milli_coin_volumes_and_forex_mid(real: RealQuotes) -> None:
    btc = rows(real, "CB.BTCUSD")
    assert btc["event_time"].tolist() == [utc("2017-09-03 00:01"), utc("2017-09-03 00:02")]
    assert btc["price"].tolist() == [4652.69, 4654.33]
    # 6.635 BTC -> 6635 milli-BTC; a positive 0.0001 BTC does not become "nothing traded".
    assert btc["volume"].tolist() == [6635, 1]
    assert btc.loc[0, ["bid", "ask"]].tolist() == [4652.6, 4652.7]
    assert btc.loc[1, ["bid", "ask"]].isna().all()

    eurusd = rows(real, "EURUSD")
    assert eurusd["event_time"].tolist() == [utc("2014-05-08 12:47")]  # UTC, 12:46 bar + 1 minute
    assert eurusd["price"].tolist() == pytest.approx([(1.39869 + 1.39883) / 2])
    assert eurusd["volume"].tolist() == [0]
    assert eurusd.loc[0, ["bid", "ask"]].tolist() == [1.39869, 1.39883]


def test_binance_klines(real: RealQuotes) -> None:
    usdc = rows(real, "BN.BTCUSDC")
    assert usdc["event_time"].tolist() == [utc("2023-03-01 00:01"), utc("2023-03-01 00:02")]
    assert usdc["price"].tolist() == [23152.65, 23152.65]
    assert usdc["volume"].tolist() == [264, 0]  # milli-BTC; the zero-volume minute is kept
    assert usdc[["bid", "ask"]].isna().all().all()
    assert usdc["source"].unique().tolist() == ["binanceus_2023-03"]


def test_bitstamp_trades_in_one_second_are_one_ms_apart(real: RealQuotes) -> None:
    trades = rows(real, "BS.BTCUSD")
    second = pd.Timestamp(1315922024, unit="s", tz="UTC")
    assert trades["event_time"].tolist() == [
        pd.Timestamp(1315922016, unit="s", tz="UTC"),
        second,
        second + pd.Timedelta(milliseconds=1),  # file order kept
        pd.Timestamp(1315922029, unit="s", tz="UTC"),
    ]
    assert trades["price"].tolist() == [5.8, 5.83, 5.9, 15.0]
    assert trades["volume"].tolist() == [1000, 3000, 1, 2000]
    assert trades["event_id"].iloc[2] == "BS.BTCUSD-20110913T135344.001Z"
    assert trades[["bid", "ask"]].isna().all().all()


def test_yahoo_bar_end_times_and_skipped_closes(real: RealQuotes) -> None:
    asai = rows(real, "ASAI.L")
    # 16:00 BST opens 15:00Z, closes 16:00Z; the GMT bar after the clocks went back opens 15:00Z.
    assert asai["event_time"].tolist() == [
        utc("2024-10-24 15:00"),
        utc("2024-10-24 16:00"),
        utc("2024-10-29 16:00"),
    ]
    assert asai["price"].tolist() == pytest.approx([61.5, 0.6, 64.25])
    assert asai["volume"].tolist() == [3977, 0, 0]  # a missing volume is 0
    assert source_row(real, "ASAI.L")["skipped"] == 2  # the empty and the zero Close
    assert rows(real, "EA")["event_time"].tolist() == [utc("2026-05-26 08:15")]  # 04:00 EDT + 15 min


def test_quotes_meet_the_contract(real: RealQuotes) -> None:
    quotes = real.quotes
    assert tuple(quotes.columns) == QUOTE_COLUMNS
    assert str(quotes["event_time"].dtype) == "datetime64[ns, UTC]"
    assert quotes["volume"].dtype == np.int64
    assert quotes["price"].dtype == quotes["bid"].dtype == quotes["ask"].dtype == np.float64
    assert (quotes["price"] > 0).all() and (quotes["volume"] >= 0).all()
    assert quotes["symbol"].map(lambda symbol: bool(SYMBOL_PATTERN.match(symbol))).all()
    assert quotes["event_id"].is_unique
    assert (quotes["event_id"].str.rsplit("-", n=1).str[0] == quotes["symbol"]).all()
    assert quotes.equals(quotes.sort_values(["symbol", "event_time"], kind="mergesort"))
    steps = quotes.groupby("symbol")["event_time"].diff().dropna()
    assert (steps > pd.Timedelta(0)).all()

    sources = real.sources.set_index("symbol")
    assert sorted(sources.index) == sorted(quotes["symbol"].unique())
    assert set(sources["source"]) == {"lean", "binanceus_2023-03", "pyalgotrade", "yfinance"}
    assert sources.loc["AAPL", "granularity"] == "1m bars" and sources.loc["AAPL", "has_book"]
    assert sources.loc["BS.BTCUSD", "granularity"] == "trades" and not sources.loc["BS.BTCUSD", "has_book"]
    assert sources.loc["EA", "granularity"] == "15m bars"
    assert sources.loc["ASAI.L", "granularity"] == "1h bars"
    assert (sources["quotes"] == quotes.groupby("symbol").size()).all()
    assert sources.loc["AAPL", "first"] == utc("2014-06-06 13:31")
    assert sources.loc["AAPL", "last"] == utc("2014-06-09 08:01")


def test_large_moves_find_the_split_and_the_bad_prints(real: RealQuotes) -> None:
    moves = large_moves(real.quotes)
    assert list(moves.columns) == ["symbol", "event_id", "event_time", "previous_price", "price", "ret"]
    split = moves[moves["symbol"] == "AAPL"]
    assert split["event_id"].tolist() == ["AAPL-20140609T080100.000Z"]
    assert split["ret"].iloc[0] == pytest.approx(92.42 / 645.70 - 1)  # about -6/7
    assert moves[moves["symbol"] == "ASAI.L"]["price"].tolist() == pytest.approx([0.6, 64.25])
    assert moves[moves["symbol"] == "BS.BTCUSD"]["price"].tolist() == [15.0]
    assert len(large_moves(real.quotes, threshold=10.0)) == 1  # only the recovery from 0.60 (+10,608 %)


def test_large_moves_follow_tick_order_per_symbol() -> None:
    quotes = pd.DataFrame(
        {
            "symbol": ["B", "A", "A", "A", "B"],
            "event_id": ["B-2", "A-3", "A-1", "A-2", "B-1"],
            "event_time": [utc("2024-01-01 00:02"), *[utc("2024-01-01 00:01")] * 3, utc("2024-01-01 00:01")],
            "price": [700.0, 10.0, 10.0, 10.4, 100.0],
        }
    )
    moves = large_moves(quotes, threshold=0.03)
    # A: 10.0 (A-1) -> 10.4 (A-2) +4 %, -> 10.0 (A-3) -3.8 %; B: 100 -> 700; nothing across symbols.
    assert moves["event_id"].tolist() == ["A-2", "A-3", "B-2"]
    assert moves["previous_price"].tolist() == [10.0, 10.4, 100.0]
    assert moves["ret"].tolist() == pytest.approx([0.04, 10.0 / 10.4 - 1, 6.0])


def test_partial_or_missing_data(tmp_path: Path) -> None:
    write_text(
        tmp_path / "pyalgotrade/testcases/data/bitstampUSD.csv",
        "1315922016,5.8,1.0\n1315922016,0,1.0\n",  # a zero price is no quote
    )
    partial = load_real_quotes(tmp_path)
    assert partial.quotes["symbol"].unique().tolist() == ["BS.BTCUSD"]
    assert partial.sources["skipped"].tolist() == [1]
    with pytest.raises(FileNotFoundError):
        load_real_quotes(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        load_real_quotes(tmp_path / "empty")


def test_find_real_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_real_data(tmp_path) == tmp_path
    assert find_real_data(tmp_path / "absent") is None
    monkeypatch.setenv(REAL_DATA_ENV, str(tmp_path))
    assert find_real_data() == tmp_path
    monkeypatch.delenv(REAL_DATA_ENV)
    assert find_real_data() == (DEFAULT_REAL_DATA if DEFAULT_REAL_DATA.is_dir() else None)
    assert DEFAULT_REAL_DATA.parts[-2:] == ("shared", "realdata")


@pytest.mark.skipif(
    find_real_data() is None, reason="no real market data beside the checkout (../shared/realdata)"
)
def test_the_real_data() -> None:
    root = find_real_data()
    assert root is not None
    real = load_real_quotes(root)
    assert set(real.sources["source"]) == {"lean", "binanceus_2023-03", "pyalgotrade", "yfinance"}
    assert {"AAPL", "SPY", "ESZ13", "CB.BTCUSD", "EURUSD", "BN.BTCUSDC", "BS.BTCUSD", "ASAI.L", "EA"} <= set(
        real.sources["symbol"]
    )
    assert 100_000 <= len(real.quotes) <= 200_000
    assert real.quotes["event_id"].is_unique
    assert (real.quotes.groupby("symbol")["event_time"].diff().dropna() > pd.Timedelta(0)).all()

    moves = large_moves(real.quotes).set_index("event_id")
    split = moves.loc["AAPL-20140609T080100.000Z"]  # 645.70 at Friday's 20:00 ET -> 92.42 at Monday 04:01
    assert split["previous_price"] == pytest.approx(645.70)
    assert split["price"] == pytest.approx(92.42)
    unit_error = moves.loc["ASAI.L-20241024T160000.000Z"]  # the 16:00 BST bar closing at 0.60, not 60
    assert unit_error["price"] == pytest.approx(0.6)
    assert (moves["symbol"] == "BS.BTCUSD").sum() >= 100  # a thin early market with off-market prints
