"""Our symbology, and each built-in provider's mapping to it.

A symbol in our contract is one of (capitals and digits throughout; nothing else is accepted):

- a listed security: ``ROOT`` (1-12 characters), optionally ``.CLASS`` for a share class (``BRK.B``), then
  optionally ``:MIC`` for a listing outside the US consolidated tape, by the venue's ISO 10383 market
  identifier code (``VOD:XLON``, ``7203:XTKS``);
- a future: a contract month as its root, month code and two-digit year (``ESZ25``, a plain ``ROOT``), or a
  continuous front month as ``ROOT1!`` (``ES1!``), each optionally with ``:MIC``;
- an index: ``^ROOT`` (``^GSPC``);
- a currency or crypto pair: ``BASE-QUOTE`` (``EUR-USD``, ``BTC-USD``).

``SYMBOL_REGEX`` is that grammar; the default silver suite's ``symbol_in_universe`` uses it, so whatever a
built-in provider produces is accepted, and a symbol no provider maps (``acme inc``) lands in quarantine.
"""

from __future__ import annotations

import re

# Java (Spark's RLIKE, through Great Expectations) and Python read this pattern alike.
SYMBOL_REGEX = (
    r"^(\^?[A-Z0-9]{1,12}([.][A-Z0-9]{1,4}|[1-9]!)?(:[A-Z0-9]{4})?|[A-Z0-9]{2,10}-[A-Z0-9]{2,10})(?![\s\S])"
)
_SYMBOL = re.compile(SYMBOL_REGEX)


class SymbolError(ValueError):
    """A provider's symbol that cannot be mapped to ours (or back): the message says why and what works."""


def is_our_symbol(symbol: str) -> bool:
    """Whether ``symbol`` is spelled in our symbology."""
    return _SYMBOL.match(symbol) is not None


def _checked(ours: str, theirs: str, provider: str) -> str:
    if not is_our_symbol(ours):
        raise SymbolError(f"{provider} symbol {theirs!r} maps to {ours!r}, which is not in our symbology")
    return ours


# Yahoo's exchange suffixes (https://help.yahoo.com/kb/SLN2310.html) and the venues' ISO 10383 MICs.
YAHOO_SUFFIX_TO_MIC: dict[str, str] = {
    "L": "XLON",
    "IL": "XLON",
    "TO": "XTSE",
    "V": "XTSX",
    "NE": "NEOE",
    "DE": "XETR",
    "F": "XFRA",
    "PA": "XPAR",
    "AS": "XAMS",
    "BR": "XBRU",
    "LS": "XLIS",
    "MI": "XMIL",
    "MC": "XMAD",
    "SW": "XSWX",
    "VI": "XWBO",
    "ST": "XSTO",
    "CO": "XCSE",
    "HE": "XHEL",
    "OL": "XOSL",
    "IR": "XDUB",
    "T": "XTKS",
    "HK": "XHKG",
    "SS": "XSHG",
    "SZ": "XSHE",
    "KS": "XKRX",
    "TW": "XTAI",
    "SI": "XSES",
    "AX": "XASX",
    "NZ": "XNZE",
    "NS": "XNSE",
    "BO": "XBOM",
    "SA": "BVMF",
    "MX": "XMEX",
    "JO": "XJSE",
    # Futures exchanges, for contract months such as ESZ25.CME.
    "CME": "XCME",
    "CBT": "XCBT",
    "NYM": "XNYM",
    "CMX": "XCEC",
    "NYB": "IFUS",
}
MIC_TO_YAHOO_SUFFIX: dict[str, str] = {}
for _suffix, _mic in YAHOO_SUFFIX_TO_MIC.items():
    MIC_TO_YAHOO_SUFFIX.setdefault(_mic, _suffix)  # the first suffix listed is the venue's main one

# Yahoo's quote currencies for FX pairs written as ``EURUSD=X`` (6 letters) or ``JPY=X`` (USD/JPY).
_YAHOO_FX = re.compile(r"^(?P<base>[A-Z]{3})(?P<quote>[A-Z]{3})=X$")
_YAHOO_USD_FX = re.compile(r"^(?P<quote>[A-Z]{3})=X$")
_YAHOO_CONTINUOUS_FUTURE = re.compile(r"^(?P<root>[A-Z0-9]{1,8})=F$")
_YAHOO_PAIR = re.compile(r"^(?P<base>[A-Z0-9]{2,10})-(?P<quote>[A-Z]{3,4})$")
_YAHOO_LISTING = re.compile(
    r"^(?P<index>\^)?(?P<root>[A-Z0-9]{1,12})(-(?P<cls>[A-Z0-9]{1,4}))?([.](?P<suffix>[A-Z]{1,3}))?$"
)
# Yahoo writes share classes with a hyphen (BRK-B, BF-A) and crypto pairs too (BTC-USD): a hyphenated name
# whose second part is a currency of these is a pair; anything else after the hyphen is a share class.
FIAT_CURRENCIES = frozenset(
    {
        "USD",
        "EUR",
        "GBP",
        "JPY",
        "CHF",
        "CAD",
        "AUD",
        "NZD",
        "SEK",
        "NOK",
        "DKK",
        "HKD",
        "SGD",
        "CNY",
        "INR",
        "MXN",
        "ZAR",
        "KRW",
        "BRL",
    }
)
_PAIR_QUOTES = FIAT_CURRENCIES | {"USDT", "USDC", "BTC", "ETH"}


def yahoo_to_ours(symbol: str) -> str:
    """Yahoo Finance's spelling to ours: ``BTC-USD`` -> ``BTC-USD``, ``EURUSD=X`` -> ``EUR-USD``, ``JPY=X``
    -> ``USD-JPY``, ``ES=F`` -> ``ES1!``, ``ESZ25.CME`` -> ``ESZ25:XCME``, ``BRK-B`` -> ``BRK.B``, ``VOD.L``
    -> ``VOD:XLON``, ``^GSPC`` -> ``^GSPC``. SymbolError for anything else (an unknown venue suffix too)."""
    text = symbol.strip().upper()
    if match := _YAHOO_FX.match(text):
        return _checked(f"{match['base']}-{match['quote']}", symbol, "Yahoo")
    if match := _YAHOO_USD_FX.match(text):
        return _checked(f"USD-{match['quote']}", symbol, "Yahoo")
    if match := _YAHOO_CONTINUOUS_FUTURE.match(text):
        return _checked(f"{match['root']}1!", symbol, "Yahoo")
    if (match := _YAHOO_PAIR.match(text)) and match["quote"] in _PAIR_QUOTES:
        return _checked(f"{match['base']}-{match['quote']}", symbol, "Yahoo")
    if match := _YAHOO_LISTING.match(text):
        ours = f"{match['index'] or ''}{match['root']}"
        if match["cls"]:
            ours += f".{match['cls']}"
        if match["suffix"]:
            mic = YAHOO_SUFFIX_TO_MIC.get(match["suffix"])
            if mic is None:
                known = ", ".join(f".{s}" for s in sorted(YAHOO_SUFFIX_TO_MIC))
                raise SymbolError(
                    f"Yahoo symbol {symbol!r}: unknown exchange suffix .{match['suffix']} (we map {known})"
                )
            ours += f":{mic}"
        return _checked(ours, symbol, "Yahoo")
    raise SymbolError(
        f"Yahoo symbol {symbol!r} is not one we map (tickers such as AAPL, BRK-B, VOD.L, ^GSPC; pairs such "
        "as BTC-USD or EURUSD=X; futures such as ES=F or ESZ25.CME)"
    )


def ours_to_yahoo(symbol: str) -> str:
    """Ours back to Yahoo's spelling (the inverse of :func:`yahoo_to_ours` for what it produces)."""
    if not is_our_symbol(symbol):
        raise SymbolError(f"{symbol!r} is not in our symbology")
    root, _, mic = symbol.partition(":")
    if "-" in root:
        base, quote = root.split("-")
        if base == "USD" and quote in FIAT_CURRENCIES:
            return f"{quote}=X"
        if base in FIAT_CURRENCIES and quote in FIAT_CURRENCIES:
            return f"{base}{quote}=X"
        return root  # a crypto pair: Yahoo writes BTC-USD too
    if root.endswith("!"):
        return f"{root[:-2]}=F"
    yahoo = root.replace(".", "-")
    if mic:
        suffix = MIC_TO_YAHOO_SUFFIX.get(mic)
        if suffix is None:
            raise SymbolError(f"{symbol!r}: Yahoo has no suffix we know for venue {mic}")
        yahoo += f".{suffix}"
    return yahoo


# Polygon.io's stocks tickers follow the consolidated tape: capitals, share classes after a dot (BRK.B),
# and a lower-case "p" before a preferred issue's series (BACpB): ours spells that .P<series> (BAC.PB), so
# a class of ours starting with P is a preferred issue on the way back.
_POLYGON_TICKER = re.compile(r"^(?P<root>[A-Z0-9]{1,12})(?P<rest>(\.[A-Z0-9]{1,4})|(p[A-Z0-9]{0,3}))?$")


def polygon_to_ours(ticker: str) -> str:
    """Polygon.io's stocks ticker to ours: ``AAPL`` and ``BRK.B`` as they are, a preferred issue ``BACpB``
    as ``BAC.PB``. SymbolError for anything else (options, indices and FX have other feeds)."""
    match = _POLYGON_TICKER.match(ticker.strip())
    if match is None:
        raise SymbolError(
            f"Polygon ticker {ticker!r} is not a stocks ticker we map (AAPL, BRK.B, a preferred: BACpB)"
        )
    rest = match["rest"] or ""
    if rest.startswith("p"):
        rest = ".P" + rest[1:]
    return _checked(match["root"] + rest, ticker, "Polygon")


def ours_to_polygon(symbol: str) -> str:
    """Ours back to Polygon's spelling (the inverse of :func:`polygon_to_ours`)."""
    if not is_our_symbol(symbol) or ":" in symbol or "-" in symbol or symbol.startswith("^") or "!" in symbol:
        raise SymbolError(f"{symbol!r} is not a US stocks ticker Polygon's stocks feed carries")
    root, dot, cls = symbol.partition(".")
    if dot and cls.startswith("P"):  # ours spells a preferred issue .P<series>
        return f"{root}p{cls[1:]}"
    return symbol
