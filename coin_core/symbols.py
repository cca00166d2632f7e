"""Symbols: normalisation, strict validation and file-safe slugs.

A symbol is ccxt's unified ``BASE/QUOTE`` (``BTC/USDT``). Nothing outside this module builds a
path or a page from symbol text without going through :func:`parse_symbol` or :func:`slug`.
"""

from __future__ import annotations

import re
from typing import Iterable

from .errors import ConfigError

__all__ = ["SYMBOL_PATTERN", "printable_ascii", "parse_symbol", "parse_symbols", "slug", "unslug", "check_listed"]

SYMBOL_PATTERN = re.compile(r"[A-Z0-9]{2,15}/[A-Z0-9]{2,10}")
_SLUG_PATTERN = re.compile(r"[A-Z0-9]{2,15}-[A-Z0-9]{2,10}")
# The raw text, before any case mapping: str.upper() maps 'ſ' (long s) to 'S', 'ı' to 'I' and
# 'ﬀ' to 'FF', so validating after upper() would accept text that is not the symbol it becomes.
_RAW_SYMBOL = re.compile(r"[ \t]*[A-Za-z0-9]{2,15}/[A-Za-z0-9]{2,10}[ \t]*")


def printable_ascii(text: str) -> bool:
    """True when ``text`` is printable ASCII only (space included, no control character)."""
    return all(" " <= c <= "~" for c in text)


def parse_symbol(text: str) -> str:
    """Validate the raw text (ASCII only, spaces/tabs around), then upper-case; errors name the entry."""
    raw = str(text)
    value = raw.strip(" \t").upper()
    if not _RAW_SYMBOL.fullmatch(raw) or not SYMBOL_PATTERN.fullmatch(value):
        raise ConfigError(
            f"invalid symbol {raw[:40]!r}: expected BASE/QUOTE with 2-15 and 2-10 letters or digits, "
            "e.g. BTC/USDT"
        )
    return value


def parse_symbols(items: str | Iterable[str], name: str = "TARGET_SYMBOLS") -> list[str]:
    """Parse a comma-separated string or a list; de-duplicate keeping the first occurrence."""
    raw = items.split(",") if isinstance(items, str) else list(items)
    entries = [item for item in raw if not isinstance(item, str) or item.strip(" \t")]
    if not entries:
        raise ConfigError(f"{name} is empty: name at least one symbol, e.g. BTC/USDT")
    return list(dict.fromkeys(parse_symbol(item) for item in entries))


def slug(symbol: str) -> str:
    """File-safe form of a validated symbol: ``BTC/USDT`` -> ``BTC-USDT``."""
    return parse_symbol(symbol).replace("/", "-")


def unslug(text: str) -> str:
    """Inverse of :func:`slug`, validating the slug first."""
    if not _SLUG_PATTERN.fullmatch(text):
        raise ConfigError(f"invalid symbol slug {text!r}: expected e.g. BTC-USDT")
    return text.replace("-", "/")


def check_listed(symbols: Iterable[str], markets: Iterable[str], exchange_id: str) -> None:
    """Raise naming every symbol the exchange does not list."""
    known = set(markets)
    missing = [s for s in symbols if s not in known]
    if missing:
        raise ConfigError(f"symbol(s) not listed on {exchange_id}: {', '.join(missing)}")
